//! Listings of a vhost's queues, exchanges and bindings for the management API.

use super::*;

impl VHost {
    /// Every queue's name and record, by name (for management).
    pub fn queues(&self) -> Vec<(String, QueueRecord)> {
        let mut queues: Vec<(String, QueueRecord)> = self
            .read()
            .queues
            .iter()
            .map(|(n, r)| (n.clone(), r.clone()))
            .collect();
        queues.sort_by(|a, b| a.0.cmp(&b.0));
        queues
    }

    /// Every exchange, by name (for management).
    pub fn exchanges(&self) -> Vec<ExchangeInfo> {
        let mut exchanges: Vec<ExchangeInfo> = self
            .read()
            .exchanges
            .values()
            .map(|x| ExchangeInfo {
                name: x.name.clone(),
                kind: x.kind.as_str(),
                durable: x.durable,
                auto_delete: x.auto_delete,
                internal: x.internal,
                arguments: x.arguments.clone(),
                publish_in: x.stats.get().0,
                publish_out: x.stats.get().1,
            })
            .collect();
        exchanges.sort_by(|a, b| a.name.cmp(&b.name));
        exchanges
    }

    /// Every explicit binding as (source, binding), by source (for management). The default
    /// exchange's implicit bindings are not included.
    pub fn bindings(&self) -> Vec<(String, Binding)> {
        let t = self.read();
        let mut all: Vec<(String, Binding)> = t
            .exchanges
            .values()
            .flat_map(|x| x.bindings().iter().map(|b| (x.name.clone(), b.clone())))
            .collect();
        all.sort_by(|a, b| {
            (&a.0, &a.1.destination, &a.1.routing_key).cmp(&(
                &b.0,
                &b.1.destination,
                &b.1.routing_key,
            ))
        });
        all
    }
}
