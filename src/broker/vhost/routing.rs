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
        let before = out.len();
        Self::route_graph(&t, x, exchange, keys, headers, out);
        x.stats.note(out.len() - before);
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
        let before = out.len();
        Self::route_graph(&t, x, exchange, keys, headers, out);
        x.stats.note(out.len() - before);
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
        let mut visited = Visited::default();
        let mut next: Option<&Exchange> = Some(x);
        while let Some(x) = next.take() {
            if !visited.insert(x.name.as_str()) {
                break;
            }
            let before = out.len();
            Self::route_from(t, x, keys, headers, &mut visited, out);
            if out.len() == before {
                next = x.alternate_exchange().and_then(|ae| t.exchanges.get(&ae));
            }
        }
    }

    /// The queues reachable from `x` through exchange-to-exchange bindings, depth first in
    /// binding order, each exchange visited once. Iterative: a client can chain thousands of
    /// exchanges, and a recursive walk overflowed the stack on such a chain.
    pub(super) fn route_from<'a>(
        t: &'a Topology,
        x: &'a Exchange,
        keys: &[&str],
        headers: Option<&FieldTable>,
        visited: &mut Visited<'a>,
        out: &mut Vec<QueueHandle>,
    ) {
        let destinations = |x: &'a Exchange| {
            let mut dests: Vec<&'a Destination> = Vec::new();
            for key in keys {
                x.route(key, headers, &mut dests);
            }
            dests.into_iter()
        };
        let mut stack = vec![destinations(x)];
        while let Some(dests) = stack.last_mut() {
            let Some(dest) = dests.next() else {
                stack.pop();
                continue;
            };
            match dest {
                Destination::Queue(q) => {
                    if let Some(record) = t.queues.get(q) {
                        push_unique(out, &record.handle);
                    }
                }
                Destination::Exchange(name) => {
                    if let Some(inner) = t.exchanges.get(name) {
                        if visited.insert(inner.name.as_str()) {
                            stack.push(destinations(inner));
                        }
                    }
                }
            }
        }
    }
}

/// Exchanges a routing walk has been through. Most walks see one or two, where a vector beats
/// hashing; past a handful it becomes a set, so a long chain stays linear.
#[derive(Default)]
pub(super) struct Visited<'a> {
    few: Vec<&'a str>,
    many: std::collections::HashSet<&'a str>,
}

impl<'a> Visited<'a> {
    const FEW: usize = 8;

    /// Record `name`; false if it was already there.
    pub(super) fn insert(&mut self, name: &'a str) -> bool {
        if self.few.contains(&name) {
            return false;
        }
        if self.few.len() < Self::FEW {
            self.few.push(name);
            return true;
        }
        self.many.insert(name)
    }
}
