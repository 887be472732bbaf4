//! Fanout exchange: a message goes to every binding, whatever its routing key.

use super::{Binding, Destination};

#[derive(Debug, Default)]
pub(super) struct FanoutRouter {
    destinations: Vec<Destination>,
}

impl FanoutRouter {
    pub(super) fn add(&mut self, binding: &Binding) {
        if !self.destinations.contains(&binding.destination) {
            self.destinations.push(binding.destination.clone());
        }
    }

    pub(super) fn remove(&mut self, binding: &Binding) {
        self.destinations.retain(|d| d != &binding.destination);
    }

    pub(super) fn route<'a>(&'a self, out: &mut Vec<&'a Destination>) {
        out.extend(self.destinations.iter());
    }
}
