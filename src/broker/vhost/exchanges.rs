//! `exchange.declare` and `exchange.delete`, with RabbitMQ's equivalence checks and texts, and
//! the removal of an exchange's bindings wherever they are.

use super::*;

impl VHost {
    /// `exchange.declare`.
    pub fn declare_exchange(&self, d: &ExchangeDeclare) -> Result<(), AmqpError> {
        if d.passive {
            if d.name.is_empty() {
                return Err(Self::default_exchange_refused());
            }
            // A passive declare checks existence only: not even the type is validated.
            return if self.read().exchanges.contains_key(&d.name) {
                Ok(())
            } else {
                Err(self.no_exchange(&d.name))
            };
        }
        let kind = ExchangeKind::parse(&d.kind).ok_or_else(|| {
            let adjective = if d.kind.starts_with("x-") {
                "unknown"
            } else {
                "invalid"
            };
            AmqpError::command_invalid(format!("{adjective} exchange type '{}'", d.kind))
        })?;
        // After the type, as in RabbitMQ: an unknown type is the error even for "".
        if d.name.is_empty() {
            return Err(Self::default_exchange_refused());
        }
        let mut t = self.write();
        match t.exchanges.get(&d.name) {
            Some(x) => {
                let resource = self.exchange_resource(&d.name);
                let q = |s: &str| format!("'{s}'");
                if x.kind != kind {
                    return Err(self.inequivalent(
                        &resource,
                        "type",
                        q(&d.kind),
                        q(x.kind.as_str()),
                    ));
                }
                for (key, received, current) in [
                    ("durable", d.durable, x.durable),
                    ("auto_delete", d.auto_delete, x.auto_delete),
                    ("internal", d.internal, x.internal),
                ] {
                    if received != current {
                        return Err(self.inequivalent(
                            &resource,
                            key,
                            q(bool_text(received)),
                            q(bool_text(current)),
                        ));
                    }
                }
                self.check_args(
                    &resource,
                    &["alternate-exchange"],
                    &x.arguments,
                    &d.arguments,
                )
            }
            None => {
                if d.name.starts_with("amq.") {
                    return Err(AmqpError::access_refused(format!(
                        "exchange name '{}' contains reserved prefix 'amq.*'",
                        d.name
                    )));
                }
                if d.durable {
                    let record = RecordWriter::default()
                        .str(kind.as_str())
                        .u8(u8::from(d.auto_delete))
                        .u8(u8::from(d.internal))
                        .table(&d.arguments)
                        .finish();
                    self.store
                        .put_definition("exchange", &self.key(&d.name), &record)
                        .map_err(store_failed)?;
                }
                let mut x = Exchange::new(
                    d.name.clone(),
                    kind,
                    d.durable,
                    d.auto_delete,
                    d.internal,
                    d.arguments.clone(),
                );
                x.policy_alternate = self.policy_alternate(&d.name);
                t.exchanges.insert(d.name.clone(), x);
                Ok(())
            }
        }
    }

    pub(super) fn check_args(
        &self,
        resource: &str,
        keys: &[&str],
        current: &FieldTable,
        received: &FieldTable,
    ) -> Result<(), AmqpError> {
        for key in keys {
            let (c, r) = (lookup(Some(current), key), lookup(Some(received), key));
            let same = match (c, r) {
                (None, None) => true,
                // RabbitMQ's one exception: a queue declared without a type is a classic one.
                (None, Some(r)) if *key == "x-queue-type" => {
                    crate::protocol::table::as_str(r).is_some_and(|t| t == "classic")
                }
                (Some(c), Some(r)) => args_equivalent(c, r),
                _ => false,
            };
            if !same {
                let both = c.is_some() && r.is_some();
                return Err(self.inequivalent(resource, key, arg_text(r, both), arg_text(c, both)));
            }
        }
        Ok(())
    }

    /// `exchange.delete`.
    pub fn delete_exchange(&self, name: &str, if_unused: bool) -> Result<(), AmqpError> {
        if name.is_empty() {
            return Err(Self::default_exchange_refused());
        }
        if name.starts_with("amq.") {
            return Err(AmqpError::access_refused(format!(
                "deletion of system {} not allowed",
                self.exchange_resource(name)
            )));
        }
        let mut t = self.write();
        let Some(x) = t.exchanges.get(name) else {
            // Deleting what is not there succeeds, as in RabbitMQ.
            return Ok(());
        };
        if if_unused && !x.bindings().is_empty() {
            return Err(AmqpError::precondition_failed(format!(
                "{} in use",
                self.exchange_resource(name)
            )));
        }
        self.remove_exchange(&mut t, name);
        Ok(())
    }

    pub(super) fn remove_exchange(&self, t: &mut Topology, name: &str) {
        self.drop_exchange(t, name);
        self.unbind_everywhere(t, &Destination::Exchange(name.to_owned()));
    }

    /// Remove an exchange and its own bindings (as source), in memory and in the store.
    fn drop_exchange(&self, t: &mut Topology, name: &str) {
        if let Some(x) = t.exchanges.remove(name) {
            if x.durable {
                if let Err(error) = self.store.remove_definition("exchange", &self.key(name)) {
                    tracing::error!(%error, "removing an exchange definition failed");
                }
                for b in x.bindings() {
                    self.forget_binding(name, b);
                }
            }
        }
    }

    /// Remove every binding to `destination`, auto-deleting exchanges left without bindings,
    /// and so on up the graph. Iterative, and linear in the bindings: a client can chain
    /// thousands of auto-delete exchanges, and the recursive cascade that rescanned every
    /// exchange per step overflowed the stack on such a chain.
    pub(super) fn unbind_everywhere(&self, t: &mut Topology, destination: &Destination) {
        let mut emptied = Vec::new();
        for x in t.exchanges.values_mut() {
            if self.unbind_emptied(x, destination) {
                emptied.push(x.name.clone());
            }
        }
        if emptied.is_empty() {
            return;
        }
        // A cascade: find each exchange's sources through an index built once.
        let mut sources: HashMap<String, Vec<String>> = HashMap::new();
        for x in t.exchanges.values() {
            for b in x.bindings() {
                if let Destination::Exchange(d) = &b.destination {
                    sources.entry(d.clone()).or_default().push(x.name.clone());
                }
            }
        }
        while let Some(name) = emptied.pop() {
            self.drop_exchange(t, &name);
            let owners = sources.remove(&name).unwrap_or_default();
            let gone = Destination::Exchange(name);
            for source in owners {
                if let Some(x) = t.exchanges.get_mut(&source) {
                    if self.unbind_emptied(x, &gone) {
                        emptied.push(source);
                    }
                }
            }
        }
    }

    /// Remove `x`'s bindings to `destination`; true when that left an auto-delete exchange
    /// without bindings (so it goes too).
    fn unbind_emptied(&self, x: &mut Exchange, destination: &Destination) -> bool {
        let removed = x.unbind_destination(destination);
        for b in &removed {
            self.forget_binding(&x.name, b);
        }
        !removed.is_empty() && x.auto_delete && x.bindings().is_empty()
    }
}
