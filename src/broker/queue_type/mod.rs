//! The queue-type boundary: every queue is one of an exhaustive set of types, each run by its
//! own actor behind the same [`QueueHandle`] surface (enqueue, settle by delivery id, consume,
//! cancel, credit, get, purge, delete, stats, and whether a publish is answered only after a
//! sync). Callers hold (handle, delivery id) and never look inside; each type owns what its
//! delivery ids mean (a classic queue's message sequence, a stream's per-delivery number that
//! maps to an offset).
//!
//! - [`QueueType::Classic`] and [`QueueType::Quorum`] run on the classic actor (`broker/queue`);
//!   a quorum queue takes its own arguments and rules there (every message stored and synced
//!   before its confirm, delivery limits, refusals of global QoS and conditional deletes).
//! - [`QueueType::Stream`] runs on [`stream`]: an append-only log read at offsets.

pub mod stream;

use std::sync::Weak;

use crate::broker::queue::{self, state::Backlog, QueueConfig, QueueHandle};
use crate::broker::vhost::VHost;

/// A queue's type (`x-queue-type`): which implementation runs it, and which arguments and
/// properties a declare may have, as in RabbitMQ.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum QueueType {
    /// `classic` (the default).
    #[default]
    Classic,
    /// `quorum`.
    Quorum,
    /// `stream`.
    Stream,
}

/// The x-arguments each queue type takes (RabbitMQ 3.10's `capabilities()`).
pub(crate) const CLASSIC_ARGS: &[&str] = &[
    "x-expires",
    "x-message-ttl",
    "x-dead-letter-exchange",
    "x-dead-letter-routing-key",
    "x-max-length",
    "x-max-length-bytes",
    "x-max-priority",
    "x-overflow",
    "x-queue-mode",
    "x-queue-version",
    "x-single-active-consumer",
    "x-queue-type",
    "x-queue-master-locator",
];
pub(crate) const QUORUM_ARGS: &[&str] = &[
    "x-dead-letter-exchange",
    "x-dead-letter-routing-key",
    "x-dead-letter-strategy",
    "x-expires",
    "x-max-length",
    "x-max-length-bytes",
    "x-max-in-memory-length",
    "x-max-in-memory-bytes",
    "x-overflow",
    "x-single-active-consumer",
    "x-queue-type",
    "x-quorum-initial-group-size",
    "x-delivery-limit",
    "x-message-ttl",
    "x-queue-leader-locator",
];
pub(crate) const STREAM_ARGS: &[&str] = &[
    "x-max-length-bytes",
    "x-queue-type",
    "x-max-age",
    "x-stream-max-segment-size-bytes",
    "x-stream-filter-size-bytes",
    "x-initial-cluster-size",
    "x-queue-leader-locator",
];

impl QueueType {
    /// The arguments it takes, in RabbitMQ's order (redeclarations compare them in this
    /// order, those of the existing queue's type only).
    pub fn arguments(self) -> &'static [&'static str] {
        match self {
            QueueType::Classic => CLASSIC_ARGS,
            QueueType::Quorum => QUORUM_ARGS,
            QueueType::Stream => STREAM_ARGS,
        }
    }

    /// Whether this type takes `key`.
    pub fn accepts(self, key: &str) -> bool {
        self.arguments().contains(&key)
    }

    /// The type's name, as `x-queue-type` and the HTTP API's `type` give it.
    pub fn name(self) -> &'static str {
        match self {
            QueueType::Classic => "classic",
            QueueType::Quorum => "quorum",
            QueueType::Stream => "stream",
        }
    }

    /// RabbitMQ's module name for the type, as its errors print it.
    pub fn module(self) -> &'static str {
        match self {
            QueueType::Classic => "rabbit_classic_queue",
            QueueType::Quorum => "rabbit_quorum_queue",
            QueueType::Stream => "rabbit_stream_queue",
        }
    }
}

/// Start the actor for a queue of `config.args.queue_type`, holding what recovery found.
pub fn spawn(config: QueueConfig, vhost: Weak<VHost>, recovered: Recovered) -> QueueHandle {
    match recovered {
        Recovered::Classic(backlog) => queue::spawn(config, vhost, backlog),
        Recovered::Stream(log) => stream::spawn(config, *log),
    }
}

/// What recovery read back for a queue, by type.
#[derive(Debug)]
pub enum Recovered {
    /// A classic or quorum queue's messages.
    Classic(Backlog),
    /// A stream's log.
    Stream(Box<stream::StreamLog>),
}

impl Recovered {
    /// Nothing stored yet (a new queue) of `kind`.
    pub fn empty(kind: QueueType) -> Self {
        match kind {
            QueueType::Classic | QueueType::Quorum => Recovered::Classic(Backlog::new()),
            QueueType::Stream => Recovered::Stream(Box::default()),
        }
    }
}
