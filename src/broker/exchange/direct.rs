//! Direct exchange: a message goes to every binding whose key equals its routing key.

use std::collections::HashMap;

use super::{Binding, Destination};

#[derive(Debug, Default)]
pub(super) struct DirectRouter {
    by_key: HashMap<String, Vec<Destination>>,
}

impl DirectRouter {
    pub(super) fn add(&mut self, binding: &Binding) {
        let dests = self.by_key.entry(binding.routing_key.clone()).or_default();
        if !dests.contains(&binding.destination) {
            dests.push(binding.destination.clone());
        }
    }

    pub(super) fn remove(&mut self, binding: &Binding) {
        // Bindings differing only in arguments share one entry; `Exchange::unbind` re-adds any
        // twin that remains.
        if let Some(dests) = self.by_key.get_mut(&binding.routing_key) {
            dests.retain(|d| d != &binding.destination);
            if dests.is_empty() {
                self.by_key.remove(&binding.routing_key);
            }
        }
    }

    pub(super) fn route<'a>(&'a self, routing_key: &str, out: &mut Vec<&'a Destination>) {
        if let Some(dests) = self.by_key.get(routing_key) {
            out.extend(dests.iter());
        }
    }
}
