//! Routing: from an exchange through exchange-to-exchange bindings and alternate exchanges to
//! the set of queues a message goes to (each once). Runs in the publishing connection's task.

use super::*;

impl VHost {
    /// Route a message: the queues it goes to, deduplicated, following exchange-to-exchange
    /// bindings and alternate exchanges. `keys` holds the routing key plus any CC/BCC keys.
    pub fn route(
        &self,
        exchange: &str,
        keys: &[&str],
        headers: Option<&FieldTable>,
        out: &mut Vec<QueueHandle>,
    ) -> Result<(), AmqpError> {
        let t = self.read();
        let Some(x) = t.exchanges.get(exchange) else {
            return Err(self.no_exchange(exchange));
        };
        if x.internal {
            return Err(AmqpError::access_refused(format!(
                "cannot publish to internal {}",
                self.exchange_resource(exchange)
            )));
        }
        Self::route_graph(&t, x, exchange, keys, headers, out);
        Ok(())
    }

    /// Route a dead-lettered message from a queue: like [`VHost::route`], but a missing
    /// exchange routes nowhere and internal exchanges are allowed (no client is publishing).
    pub fn route_dead_letter(
        &self,
        exchange: &str,
        keys: &[&str],
        headers: Option<&FieldTable>,
        out: &mut Vec<QueueHandle>,
    ) {
        let t = self.read();
        let Some(x) = t.exchanges.get(exchange) else {
            return;
        };
        Self::route_graph(&t, x, exchange, keys, headers, out);
    }

    pub(super) fn route_graph(
        t: &Topology,
        x: &Exchange,
        exchange: &str,
        keys: &[&str],
        headers: Option<&FieldTable>,
        out: &mut Vec<QueueHandle>,
    ) {
        if exchange.is_empty() {
            for key in keys {
                if let Some(record) = t.queues.get(*key) {
                    push_unique(out, &record.handle);
                }
            }
            return;
        }
        // Exchange graphs are small: a vector beats hashing on this per-publish path.
        let mut visited: Vec<&str> = Vec::new();
        let mut next: Option<&Exchange> = Some(x);
        while let Some(x) = next.take() {
            if visited.contains(&x.name.as_str()) {
                break;
            }
            visited.push(x.name.as_str());
            let before = out.len();
            Self::route_from(t, x, keys, headers, &mut visited, out);
            if out.len() == before {
                next = x.alternate_exchange().and_then(|ae| t.exchanges.get(&ae));
            }
        }
    }

    pub(super) fn route_from<'a>(
        t: &'a Topology,
        x: &'a Exchange,
        keys: &[&str],
        headers: Option<&FieldTable>,
        visited: &mut Vec<&'a str>,
        out: &mut Vec<QueueHandle>,
    ) {
        let mut dests: Vec<&Destination> = Vec::new();
        for key in keys {
            x.route(key, headers, &mut dests);
        }
        for dest in dests {
            match dest {
                Destination::Queue(q) => {
                    if let Some(record) = t.queues.get(q) {
                        push_unique(out, &record.handle);
                    }
                }
                Destination::Exchange(name) => {
                    if let Some(inner) = t.exchanges.get(name) {
                        if !visited.contains(&inner.name.as_str()) {
                            visited.push(inner.name.as_str());
                            Self::route_from(t, inner, keys, headers, visited, out);
                        }
                    }
                }
            }
        }
    }
}
