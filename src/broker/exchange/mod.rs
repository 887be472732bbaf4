//! Exchanges: one file per type, each a routing table from binding to destination.
//!
//! An [`Exchange`] owns its bindings (the source of truth, for listing and equivalence) and a
//! type-specific router built from them. Routing returns destinations, which the vhost resolves
//! (exchange-to-exchange bindings are followed there, with a visited set against cycles).

mod direct;
mod fanout;
pub mod headers;
pub mod topic;

use crate::protocol::FieldTable;

/// Where a binding leads.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Destination {
    /// A queue, by name.
    Queue(String),
    /// Another exchange, by name (RabbitMQ's exchange-to-exchange bindings).
    Exchange(String),
}

/// A binding from an exchange to a destination.
#[derive(Debug, Clone, PartialEq)]
pub struct Binding {
    /// Where matching messages go.
    pub destination: Destination,
    /// The binding key.
    pub routing_key: String,
    /// Binding arguments (the headers exchange matches on them).
    pub arguments: FieldTable,
}

/// The exchange types Leveret implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExchangeKind {
    /// Exact routing-key match.
    Direct,
    /// Every binding.
    Fanout,
    /// Dotted-word patterns with `*` and `#`.
    Topic,
    /// Header-table match.
    Headers,
}

impl ExchangeKind {
    /// Parse a type name from `exchange.declare`.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "direct" => Some(Self::Direct),
            "fanout" => Some(Self::Fanout),
            "topic" => Some(Self::Topic),
            "headers" => Some(Self::Headers),
            _ => None,
        }
    }

    /// The type name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Direct => "direct",
            Self::Fanout => "fanout",
            Self::Topic => "topic",
            Self::Headers => "headers",
        }
    }
}

#[derive(Debug)]
enum Router {
    Direct(direct::DirectRouter),
    Fanout(fanout::FanoutRouter),
    Topic(topic::TopicRouter),
    Headers(headers::HeadersRouter),
}

/// An exchange and its bindings.
#[derive(Debug)]
pub struct Exchange {
    /// Name ("" for the default exchange).
    pub name: String,
    /// Type.
    pub kind: ExchangeKind,
    /// Survives restarts.
    pub durable: bool,
    /// Deleted when its last binding (as source) goes.
    pub auto_delete: bool,
    /// Cannot be published to directly.
    pub internal: bool,
    /// Declaration arguments (`alternate-exchange`).
    pub arguments: FieldTable,
    /// The alternate exchange of the policy that applies, if any (the argument wins).
    pub policy_alternate: Option<String>,
    bindings: Vec<Binding>,
    router: Router,
    /// Messages in and copies out, for the HTTP API.
    pub stats: std::sync::Arc<ExchangeStats>,
}

/// An exchange's message counts (RabbitMQ's `publish_in` and `publish_out`).
#[derive(Debug, Default)]
pub struct ExchangeStats {
    /// Messages published to it (by clients, the HTTP API, or dead-lettering).
    pub publish_in: std::sync::atomic::AtomicU64,
    /// Copies it routed to queues.
    pub publish_out: std::sync::atomic::AtomicU64,
}

impl ExchangeStats {
    /// Count one message in, routed to `copies` queues.
    pub fn note(&self, copies: usize) {
        use std::sync::atomic::Ordering::Relaxed;
        self.publish_in.fetch_add(1, Relaxed);
        self.publish_out.fetch_add(copies as u64, Relaxed);
    }

    /// (publish_in, publish_out).
    pub fn get(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        (
            self.publish_in.load(Relaxed),
            self.publish_out.load(Relaxed),
        )
    }
}

impl Exchange {
    /// A new exchange with no bindings.
    pub fn new(
        name: String,
        kind: ExchangeKind,
        durable: bool,
        auto_delete: bool,
        internal: bool,
        arguments: FieldTable,
    ) -> Self {
        let router = match kind {
            ExchangeKind::Direct => Router::Direct(Default::default()),
            ExchangeKind::Fanout => Router::Fanout(Default::default()),
            ExchangeKind::Topic => Router::Topic(Default::default()),
            ExchangeKind::Headers => Router::Headers(Default::default()),
        };
        Self {
            name,
            kind,
            durable,
            auto_delete,
            internal,
            arguments,
            policy_alternate: None,
            bindings: Vec::new(),
            router,
            stats: Default::default(),
        }
    }

    /// The bindings with this exchange as source.
    pub fn bindings(&self) -> &[Binding] {
        &self.bindings
    }

    /// The alternate exchange: the `alternate-exchange` argument, else the policy's.
    pub fn alternate_exchange(&self) -> Option<String> {
        crate::protocol::table::lookup(Some(&self.arguments), "alternate-exchange")
            .and_then(crate::protocol::table::as_str)
            .map(|s| s.into_owned())
            .or_else(|| self.policy_alternate.clone())
    }

    /// Add a binding; false when an identical one exists (binding is idempotent).
    pub fn bind(&mut self, binding: Binding) -> bool {
        if self.bindings.contains(&binding) {
            return false;
        }
        match &mut self.router {
            Router::Direct(r) => r.add(&binding),
            Router::Fanout(r) => r.add(&binding),
            Router::Topic(r) => r.add(&binding),
            Router::Headers(r) => r.add(&binding),
        }
        self.bindings.push(binding);
        true
    }

    /// Remove a binding; false when there was none.
    pub fn unbind(&mut self, binding: &Binding) -> bool {
        let Some(at) = self.bindings.iter().position(|b| b == binding) else {
            return false;
        };
        let removed = self.bindings.remove(at);
        match &mut self.router {
            Router::Direct(r) => r.remove(&removed),
            Router::Fanout(r) => r.remove(&removed),
            Router::Topic(r) => r.remove(&removed),
            Router::Headers(r) => r.remove(&removed),
        }
        // Direct and fanout keep one entry per (key, destination); restore it for a twin binding
        // that differs only in arguments.
        let twins: Vec<Binding> = self
            .bindings
            .iter()
            .filter(|b| {
                b.destination == removed.destination && b.routing_key == removed.routing_key
            })
            .cloned()
            .collect();
        for twin in &twins {
            match &mut self.router {
                Router::Direct(r) => r.add(twin),
                Router::Fanout(r) => r.add(twin),
                Router::Topic(_) | Router::Headers(_) => {}
            }
        }
        true
    }

    /// Remove every binding to `destination`; returns them.
    pub fn unbind_destination(&mut self, destination: &Destination) -> Vec<Binding> {
        let doomed: Vec<Binding> = self
            .bindings
            .iter()
            .filter(|b| &b.destination == destination)
            .cloned()
            .collect();
        for b in &doomed {
            self.unbind(b);
        }
        doomed
    }

    /// Destinations for a message with this routing key and headers.
    pub fn route<'a>(
        &'a self,
        routing_key: &str,
        headers: Option<&FieldTable>,
        out: &mut Vec<&'a Destination>,
    ) {
        match &self.router {
            Router::Direct(r) => r.route(routing_key, out),
            Router::Fanout(r) => r.route(out),
            Router::Topic(r) => r.route(routing_key, out),
            Router::Headers(r) => r.route(headers, out),
        }
    }
}
