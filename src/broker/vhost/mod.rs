//! A virtual host: its exchanges, queues and bindings, and routing through them.
//!
//! The topology is read-mostly data behind one `std::sync::RwLock`, held only for short
//! synchronous sections and never across `.await` (queue calls happen after the guard is dropped).
//! Routing runs in the publishing connection's task, as RabbitMQ routes in the channel process.
//! Error texts are RabbitMQ 3.x's.

mod exchanges;
mod listing;
mod policies;
mod recover;
mod routing;

use std::collections::HashMap;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard, Weak};

use super::access::AdminError;
use super::commit::Committer;
use super::exchange::{Binding, Destination, Exchange, ExchangeKind};
use super::memory::MemoryPressure;
use super::policy::{self, Policy, PolicyRecord, Target};
use super::queue::args;
use super::queue::state::{Backlog, Entry, Slot, NEVER};
use super::queue::{self, QueueHandle, QueueStats, QueueStorage};
use super::records::{self, RecordReader, RecordWriter};
use crate::protocol::table::{as_i64, display_value, lookup, type_name};
use crate::protocol::{AMQPValue, AmqpError, FieldTable};
use crate::store::{Store, StoreError};

/// A queue's declaration and its actor.
#[derive(Debug, Clone)]
pub struct QueueRecord {
    /// The actor.
    pub handle: QueueHandle,
    /// Survives restarts.
    pub durable: bool,
    /// The owning connection of an exclusive queue.
    pub exclusive_owner: Option<u64>,
    /// Deleted when its last consumer goes.
    pub auto_delete: bool,
    /// Declaration arguments.
    pub arguments: FieldTable,
}

/// A snapshot of an exchange, for management.
#[derive(Debug, Clone)]
pub struct ExchangeInfo {
    /// Name ("" for the default exchange).
    pub name: String,
    /// Type name.
    pub kind: &'static str,
    /// Survives restarts.
    pub durable: bool,
    /// Deleted with its last binding.
    pub auto_delete: bool,
    /// Not publishable by clients.
    pub internal: bool,
    /// Declaration arguments.
    pub arguments: FieldTable,
    /// Messages published to it.
    pub publish_in: u64,
    /// Copies it routed to queues.
    pub publish_out: u64,
}

#[derive(Debug, Default)]
struct Topology {
    exchanges: HashMap<String, Exchange>,
    queues: HashMap<String, QueueRecord>,
}

/// Flags of `exchange.declare`.
#[derive(Debug, Clone, Default)]
pub struct ExchangeDeclare {
    /// Name.
    pub name: String,
    /// Type name.
    pub kind: String,
    /// Only check existence.
    pub passive: bool,
    /// Durable.
    pub durable: bool,
    /// Auto-delete.
    pub auto_delete: bool,
    /// Internal.
    pub internal: bool,
    /// Arguments.
    pub arguments: FieldTable,
}

/// Flags of `queue.declare`.
#[derive(Debug, Clone, Default)]
pub struct QueueDeclare {
    /// Name ("" for a server-named queue).
    pub name: String,
    /// Only check existence.
    pub passive: bool,
    /// Durable.
    pub durable: bool,
    /// Exclusive to the declaring connection.
    pub exclusive: bool,
    /// Auto-delete.
    pub auto_delete: bool,
    /// Arguments.
    pub arguments: FieldTable,
    /// The arguments' keys in the client's order, when it sent them in one (empty: key order).
    pub argument_order: Vec<String>,
}

/// Names of the queues behind direct reply-to consumers.
pub const REPLY_QUEUE_PREFIX: &str = "amq.rabbitmq.reply-to.";

/// One virtual host.
#[derive(Debug)]
pub struct VHost {
    name: String,
    topology: RwLock<Topology>,
    me: Weak<VHost>,
    store: Arc<dyn Store>,
    committer: Committer,
    pressure: MemoryPressure,
    meta: RwLock<super::VhostMeta>,
    policies: RwLock<Vec<Policy>>,
    counters: crate::broker::connections::MessageCounters,
}

fn store_failed(error: StoreError) -> AmqpError {
    tracing::error!(%error, "writing a definition failed");
    AmqpError::internal_error(format!("store failure: {error}"))
}

fn bool_text(b: bool) -> &'static str {
    if b {
        "true"
    } else {
        "false"
    }
}

/// RabbitMQ's equivalence of two argument values: integers of any width are equal when their
/// values are; strings (short, long or byte array) by content; anything else exactly.
fn args_equivalent(a: &AMQPValue, b: &AMQPValue) -> bool {
    let integer = |v: &AMQPValue| match v {
        AMQPValue::Timestamp(_) => None,
        other => as_i64(other),
    };
    let text = |v: &AMQPValue| match v {
        AMQPValue::ShortString(s) => Some(s.as_str().as_bytes().to_vec()),
        AMQPValue::LongString(s) => Some(s.as_bytes().to_vec()),
        AMQPValue::ByteArray(s) => Some(s.as_slice().to_vec()),
        _ => None,
    };
    match (integer(a), integer(b), text(a), text(b)) {
        (Some(x), Some(y), _, _) => x == y,
        (_, _, Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

fn arg_text(value: Option<&AMQPValue>, quote_plain: bool) -> String {
    match value {
        None => "none".to_owned(),
        Some(v) if quote_plain => format!("'{}'", display_value(v)),
        Some(v) => format!(
            "the value '{}' of type '{}'",
            display_value(v),
            type_name(v)
        ),
    }
}

impl VHost {
    /// Message counts of this vhost's channels (and the HTTP API's publishes), ever.
    pub fn counters(&self) -> &crate::broker::connections::MessageCounters {
        &self.counters
    }

    /// A vhost with the standard exchanges, storing durable things in `store`.
    pub fn new(
        name: &str,
        store: Arc<dyn Store>,
        committer: Committer,
        pressure: MemoryPressure,
    ) -> Arc<Self> {
        let vhost = Arc::new_cyclic(|me| Self {
            name: name.to_owned(),
            topology: RwLock::new(Topology::default()),
            me: me.clone(),
            store,
            committer,
            pressure,
            meta: RwLock::new(super::VhostMeta::default()),
            policies: RwLock::new(Vec::new()),
            counters: Default::default(),
        });
        {
            let mut t = vhost.write();
            for (name, kind, internal) in [
                ("", ExchangeKind::Direct, false),
                ("amq.direct", ExchangeKind::Direct, false),
                ("amq.fanout", ExchangeKind::Fanout, false),
                ("amq.topic", ExchangeKind::Topic, false),
                ("amq.headers", ExchangeKind::Headers, false),
                ("amq.match", ExchangeKind::Headers, false),
                ("amq.rabbitmq.trace", ExchangeKind::Topic, true),
            ] {
                t.exchanges.insert(
                    name.to_owned(),
                    Exchange::new(
                        name.to_owned(),
                        kind,
                        true,
                        false,
                        internal,
                        FieldTable::default(),
                    ),
                );
            }
        }
        vhost
    }

    /// The vhost's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Description, tags and limits.
    pub fn meta(&self) -> super::VhostMeta {
        self.meta
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    pub(super) fn set_meta(&self, meta: super::VhostMeta) {
        *self
            .meta
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = meta;
    }

    /// The store key of an entity in this vhost.
    fn key(&self, name: &str) -> String {
        format!("{}\0{}", self.name, name)
    }

    /// A queue's space in the message log (its durable records; a non-durable queue's paged
    /// messages are scratch, counted in the log's totals only).
    pub fn queue_disk(&self, name: &str) -> crate::store::QueueLogStats {
        self.store.queue_stats(&self.key(name))
    }

    /// Where a queue's messages go when not in memory. The scratch key is one no durable queue
    /// can have, unique per queue instance.
    fn storage_for(&self, name: &str, durable: bool) -> QueueStorage {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let scratch_key = format!("\u{1}scratch\0{}\0{}\0{n}", self.name, name);
        QueueStorage {
            store: self.store.clone(),
            committer: self.committer.clone(),
            key: if durable {
                self.key(name)
            } else {
                scratch_key.clone()
            },
            scratch_key,
            durable,
            pressure: self.pressure.clone(),
        }
    }

    fn persist_binding(
        &self,
        t: &Topology,
        source: &str,
        binding: &Binding,
    ) -> Result<(), AmqpError> {
        let durable_source = t.exchanges.get(source).is_some_and(|x| x.durable);
        let durable_destination = match &binding.destination {
            Destination::Queue(q) => t
                .queues
                .get(q)
                .is_some_and(|r| r.durable && r.exclusive_owner.is_none()),
            Destination::Exchange(x) => t.exchanges.get(x).is_some_and(|x| x.durable),
        };
        if durable_source && durable_destination {
            self.store
                .put_definition(
                    "binding",
                    &records::binding_key(&self.name, source, binding),
                    &records::encode_binding(source, binding),
                )
                .map_err(store_failed)?;
        }
        Ok(())
    }

    fn forget_binding(&self, source: &str, binding: &Binding) {
        if let Err(error) = self.store.remove_definition(
            "binding",
            &records::binding_key(&self.name, source, binding),
        ) {
            tracing::error!(%error, "removing a binding definition failed");
        }
    }

    fn read(&self) -> RwLockReadGuard<'_, Topology> {
        self.topology
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, Topology> {
        self.topology
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn exchange_resource(&self, name: &str) -> String {
        format!("exchange '{}' in vhost '{}'", name, self.name)
    }

    fn queue_resource(&self, name: &str) -> String {
        format!("queue '{}' in vhost '{}'", name, self.name)
    }

    fn no_exchange(&self, name: &str) -> AmqpError {
        AmqpError::not_found(format!("no {}", self.exchange_resource(name)))
    }

    fn no_queue(&self, name: &str) -> AmqpError {
        AmqpError::not_found(format!("no {}", self.queue_resource(name)))
    }

    fn locked(&self, name: &str) -> AmqpError {
        AmqpError::resource_locked(format!(
            "cannot obtain exclusive access to locked {}. It could be originally declared on \
             another connection or the exclusive property value does not match that of the \
             original declaration.",
            self.queue_resource(name)
        ))
    }

    /// RabbitMQ's refusal of any operation on the default exchange.
    pub fn default_exchange_refused() -> AmqpError {
        AmqpError::access_refused("operation not permitted on the default exchange")
    }

    fn inequivalent(
        &self,
        resource: &str,
        key: &str,
        received: String,
        current: String,
    ) -> AmqpError {
        AmqpError::precondition_failed(format!(
            "inequivalent arg '{key}' for {resource}: received {received} but current is {current}"
        ))
    }

    fn check_owner(
        &self,
        record: &QueueRecord,
        name: &str,
        connection: u64,
    ) -> Result<(), AmqpError> {
        match record.exclusive_owner {
            Some(owner) if owner != connection => Err(self.locked(name)),
            _ => Ok(()),
        }
    }

    /// `queue.declare`; returns the queue's name and counts.
    pub async fn declare_queue(
        &self,
        d: &QueueDeclare,
        connection: u64,
    ) -> Result<(String, QueueStats), AmqpError> {
        let handle = {
            let mut t = self.write();
            if d.passive {
                let record = t
                    .queues
                    .get(&d.name)
                    .ok_or_else(|| self.no_queue(&d.name))?;
                if !d.name.starts_with(REPLY_QUEUE_PREFIX) {
                    self.check_owner(record, &d.name, connection)?;
                }
                // A passive declare counts as use for x-expires, as in RabbitMQ.
                record.handle.touch();
                record.handle.clone()
            } else if let Some(record) = t.queues.get(&d.name) {
                let resource = self.queue_resource(&d.name);
                self.check_owner(record, &d.name, connection)?;
                if record.exclusive_owner.is_some() != d.exclusive {
                    return Err(self.locked(&d.name));
                }
                let q = |b: bool| format!("'{}'", bool_text(b));
                if record.durable != d.durable {
                    return Err(self.inequivalent(
                        &resource,
                        "durable",
                        q(d.durable),
                        q(record.durable),
                    ));
                }
                if record.auto_delete != d.auto_delete {
                    return Err(self.inequivalent(
                        &resource,
                        "auto_delete",
                        q(d.auto_delete),
                        q(record.auto_delete),
                    ));
                }
                let compared = args::declared_type(&record.arguments).arguments();
                self.check_args(&resource, compared, &record.arguments, &d.arguments)?;
                record.handle.touch();
                record.handle.clone()
            } else {
                // Names are checked (and generated) by the caller, before permissions.
                let name = if d.name.is_empty() {
                    random_name("amq.gen-")
                } else {
                    d.name.clone()
                };
                if let Some(limit) = self.meta().limit("max-queues") {
                    if t.queues.len() as u64 >= limit {
                        return Err(AmqpError::precondition_failed(format!(
                            "cannot declare queue '{name}': queue limit in vhost '{}' ({limit}) is reached",
                            self.name
                        )));
                    }
                }
                let resource = self.queue_resource(&name);
                let args = args::parse(&d.arguments, &resource)?;
                args::check_declare(
                    &d.arguments,
                    &d.argument_order,
                    &args,
                    &resource,
                    (d.durable, d.exclusive, d.auto_delete),
                )?;
                let args = self.with_policy(&name, &args, &d.arguments);
                // Exclusive queues never survive a restart, so they are never stored.
                let stored = d.durable && !d.exclusive;
                if stored {
                    let record = RecordWriter::default()
                        .u8(u8::from(d.auto_delete))
                        .table(&d.arguments)
                        .finish();
                    self.store
                        .put_definition("queue", &self.key(&name), &record)
                        .map_err(store_failed)?;
                }
                let kind = args.queue_type;
                let handle = crate::broker::queue_type::spawn(
                    queue::QueueConfig {
                        name: name.clone(),
                        vhost_name: self.name.clone(),
                        auto_delete: d.auto_delete,
                        args,
                        storage: self.storage_for(&name, stored),
                    },
                    self.me.clone(),
                    crate::broker::queue_type::Recovered::empty(kind),
                );
                t.queues.insert(
                    name,
                    QueueRecord {
                        handle: handle.clone(),
                        durable: d.durable,
                        exclusive_owner: d.exclusive.then_some(connection),
                        auto_delete: d.auto_delete,
                        arguments: d.arguments.clone(),
                    },
                );
                handle
            }
        };
        let stats = handle.stats().await;
        Ok((handle.name().to_owned(), stats))
    }

    /// The queue behind a direct reply-to consumer: server-named under
    /// `amq.rabbitmq.reply-to.`, owned by the connection, gone with its consumer. Replies are
    /// published to it through the default exchange like to any queue.
    pub fn declare_reply_queue(&self, connection: u64) -> QueueHandle {
        let name = random_name(REPLY_QUEUE_PREFIX);
        let handle = queue::spawn(
            queue::QueueConfig {
                name: name.clone(),
                vhost_name: self.name.clone(),
                auto_delete: true,
                args: args::QueueArgs::default(),
                storage: self.storage_for(&name, false),
            },
            self.me.clone(),
            Backlog::new(),
        );
        self.write().queues.insert(
            name,
            QueueRecord {
                handle: handle.clone(),
                durable: false,
                // Owned by the requester's connection (nobody else may consume or delete it);
                // a passive declare from anywhere still succeeds, as in RabbitMQ.
                exclusive_owner: Some(connection),
                auto_delete: true,
                arguments: FieldTable::default(),
            },
        );
        handle
    }

    /// A queue for consume/get/purge, checking exclusivity.
    pub fn queue(&self, name: &str, connection: u64) -> Result<QueueHandle, AmqpError> {
        let t = self.read();
        let record = t.queues.get(name).ok_or_else(|| self.no_queue(name))?;
        self.check_owner(record, name, connection)?;
        Ok(record.handle.clone())
    }

    /// A queue's record, if it exists.
    pub fn queue_record(&self, name: &str) -> Option<QueueRecord> {
        self.read().queues.get(name).cloned()
    }

    /// `queue.delete`; returns the number of ready messages deleted.
    pub async fn delete_queue(
        &self,
        name: &str,
        if_unused: bool,
        if_empty: bool,
        connection: u64,
    ) -> Result<u32, AmqpError> {
        let handle = {
            let t = self.read();
            let Some(record) = t.queues.get(name) else {
                return Ok(0);
            };
            self.check_owner(record, name, connection)?;
            // Quorum queues refuse the conditions (if-unused is looked at first).
            let quorum = args::declared_type(&record.arguments) == args::QueueType::Quorum;
            for (set, flag) in [(if_unused, "if-unused"), (if_empty, "if-empty")] {
                if set && quorum {
                    return Err(AmqpError::not_implemented(format!(
                        "cannot delete {}. queue.delete operations with {flag} flag set are not supported by quorum queues",
                        self.queue_resource(name)
                    )));
                }
            }
            record.handle.clone()
        };
        let count = handle.delete(if_unused, if_empty).await?;
        self.forget_queue(name, handle.id());
        Ok(count)
    }

    /// Remove a queue record (if it is still this instance) and its bindings.
    pub(crate) fn forget_queue(&self, name: &str, id: u64) {
        let mut t = self.write();
        if t.queues.get(name).is_some_and(|r| r.handle.id() == id) {
            if let Some(record) = t.queues.remove(name) {
                if record.handle.stores_persistent() {
                    let key = self.key(name);
                    if let Err(error) = self
                        .store
                        .remove_definition("queue", &key)
                        .and_then(|()| self.store.delete_queue(&key))
                    {
                        tracing::error!(%error, queue = name, "removing a stored queue failed");
                    }
                }
            }
            self.unbind_everywhere(&mut t, &Destination::Queue(name.to_owned()));
        }
    }

    /// Delete every exclusive queue of a closed connection.
    pub async fn delete_exclusive_queues(&self, connection: u64) {
        let owned: Vec<String> = self
            .read()
            .queues
            .iter()
            .filter(|(_, r)| r.exclusive_owner == Some(connection))
            .map(|(n, _)| n.clone())
            .collect();
        for name in owned {
            let _ = self.delete_queue(&name, false, false, connection).await;
        }
    }

    /// `queue.bind` / `queue.unbind` / `exchange.bind` / `exchange.unbind`.
    ///
    /// RabbitMQ's order of checks: the default exchange, then the source, then the destination.
    /// Unbinding something that is not bound succeeds, even when an end is missing.
    pub fn set_binding(
        &self,
        source: &str,
        destination: Destination,
        routing_key: &str,
        arguments: &FieldTable,
        connection: u64,
        bind: bool,
    ) -> Result<(), AmqpError> {
        if source.is_empty() || matches!(&destination, Destination::Exchange(x) if x.is_empty()) {
            return Err(Self::default_exchange_refused());
        }
        let mut t = self.write();
        let binding = Binding {
            destination,
            routing_key: routing_key.to_owned(),
            arguments: arguments.clone(),
        };
        if !bind {
            let bound = t
                .exchanges
                .get(source)
                .is_some_and(|x| x.bindings().contains(&binding));
            if !bound {
                return Ok(());
            }
        }
        let Some(x) = t.exchanges.get(source) else {
            return Err(self.no_exchange(source));
        };
        let headers = x.kind == ExchangeKind::Headers;
        // RabbitMQ's order: source, destination, the binding's arguments, then exclusivity.
        let owner = match &binding.destination {
            Destination::Queue(q) => Some(t.queues.get(q).ok_or_else(|| self.no_queue(q))?),
            Destination::Exchange(x) => {
                if !t.exchanges.contains_key(x) {
                    return Err(self.no_exchange(x));
                }
                None
            }
        };
        if bind && headers {
            validate_x_match(arguments)?;
        }
        if let (Some(record), Destination::Queue(q)) = (owner, &binding.destination) {
            self.check_owner(record, q, connection)?;
        }
        if bind {
            if t.exchanges
                .get(source)
                .is_some_and(|x| !x.bindings().contains(&binding))
            {
                self.persist_binding(&t, source, &binding)?;
            }
            if let Some(x) = t.exchanges.get_mut(source) {
                x.bind(binding);
            }
            return Ok(());
        }
        let Some(x) = t.exchanges.get_mut(source) else {
            return Err(self.no_exchange(source));
        };
        if x.unbind(&binding) {
            let emptied = x.auto_delete && x.bindings().is_empty();
            self.forget_binding(source, &binding);
            if emptied {
                self.remove_exchange(&mut t, source);
            }
        }
        Ok(())
    }

    /// Stop every queue actor (broker shutdown); stored state stays as it is.
    /// Returns the stopped queues' handles, to wait on.
    pub fn close(&self) -> Vec<QueueHandle> {
        let mut t = self.write();
        t.queues
            .drain()
            .map(|(_, record)| {
                record.handle.shutdown();
                record.handle
            })
            .collect()
    }

    /// Whether an exchange exists and is a topic exchange.
    pub fn is_topic(&self, name: &str) -> bool {
        self.read()
            .exchanges
            .get(name)
            .is_some_and(|x| x.kind == ExchangeKind::Topic)
    }

    /// Whether an exchange exists.
    pub fn has_exchange(&self, name: &str) -> bool {
        self.read().exchanges.contains_key(name)
    }

    /// Names of every queue.
    pub fn queue_names(&self) -> Vec<String> {
        self.read().queues.keys().cloned().collect()
    }

    /// Delete everything in this vhost: queues with their messages, exchanges, bindings, and
    /// their stored definitions (the vhost itself is being deleted).
    pub async fn destroy(&self) {
        let policies: Vec<String> = self.policies().into_iter().map(|p| p.name).collect();
        for name in policies {
            let _ = self.clear_policy(&name);
        }
        let queues: Vec<QueueHandle> = self
            .read()
            .queues
            .values()
            .map(|r| r.handle.clone())
            .collect();
        for handle in queues {
            let _ = handle.delete(false, false).await;
            self.forget_queue(handle.name(), handle.id());
        }
        let mut t = self.write();
        let names: Vec<String> = t
            .exchanges
            .keys()
            .filter(|n| !n.is_empty() && !n.starts_with("amq."))
            .cloned()
            .collect();
        for name in names {
            self.remove_exchange(&mut t, &name);
        }
        let amq: Vec<String> = t.exchanges.keys().cloned().collect();
        for name in amq {
            if let Some(x) = t.exchanges.get_mut(&name) {
                for b in x.bindings().to_vec() {
                    self.forget_binding(&name, &b);
                }
            }
        }
    }
}

/// Add a queue to a route unless it is already there (a message reaches a queue once).
fn push_unique(out: &mut Vec<QueueHandle>, handle: &QueueHandle) {
    if !out.iter().any(|h| h.id() == handle.id()) {
        out.push(handle.clone());
    }
}

/// Check a headers binding's `x-match`, with RabbitMQ's texts.
fn validate_x_match(arguments: &FieldTable) -> Result<(), AmqpError> {
    match arguments.inner().get("x-match") {
        None => Ok(()),
        Some(AMQPValue::LongString(s)) => match s.as_bytes() {
            b"all" | b"any" | b"all-with-x" | b"any-with-x" => Ok(()),
            other => Err(AmqpError::precondition_failed(format!(
                "Invalid x-match field value {}; expected all, any, all-with-x, or any-with-x",
                crate::protocol::codec::erlang_binary(other)
            ))),
        },
        Some(other) => Err(AmqpError::precondition_failed(format!(
            "Invalid x-match field type {} (value {}); expected longstr",
            type_name(other),
            display_value(other)
        ))),
    }
}

/// RabbitMQ's reserved prefix rule for client-named queues.
pub fn check_queue_name(name: &str) -> Result<(), AmqpError> {
    if name.starts_with("amq.") {
        return Err(AmqpError::access_refused(format!(
            "queue name '{name}' contains reserved prefix 'amq.*'"
        )));
    }
    Ok(())
}

/// A name with a random 22-character suffix, as RabbitMQ generates for queues and consumer tags.
pub fn random_name(prefix: &str) -> String {
    use std::collections::hash_map::RandomState;
    use std::hash::{BuildHasher, Hasher};
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut name = String::from(prefix);
    let mut bits = 0u64;
    for i in 0..22 {
        if i % 10 == 0 {
            let mut h = RandomState::new().build_hasher();
            h.write_usize(i);
            bits = h.finish();
        }
        name.push(ALPHABET[(bits & 63) as usize] as char);
        bits >>= 6;
    }
    name
}
