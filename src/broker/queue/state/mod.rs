//! The pure state of one queue: ready messages in order, unacked deliveries, consumers and their
//! credit. No tokio, no clock, no I/O: the actor applies commands and sends what this returns.
//!
//! Invariants: `ready` is sorted by sequence number (a requeued message goes back to its original
//! place); a sequence is either ready, unacked, or gone; a consumer is offered a message only
//! while it has credit (prefetch, channel-wide limit, and in-flight window), round robin.

use std::collections::HashMap;
use std::sync::Arc;

use super::{ChannelLimiter, ClientSink, ConsumeRequest};
use crate::broker::message::Message;
use crate::protocol::AmqpError;

mod ready;

pub use ready::Backlog;
use ready::Ready;

/// Deliveries a consumer may have on their way to its connection before the connection returns
/// credit. Bounds the memory one consumer can pin, even with no-ack and no prefetch.
pub const IN_FLIGHT_WINDOW: u32 = 2000;

/// Where a queued message's content is.
#[derive(Debug, Clone)]
pub enum Slot {
    /// In memory.
    Resident(Arc<Message>),
    /// Only in the store, read back on delivery: a message deep in a queue.
    Paged {
        /// Body size, for byte accounting.
        body_len: u32,
        /// In the queue's scratch space (a transient message, or any message of a non-durable
        /// queue) rather than among its durable records.
        scratch: bool,
    },
}

impl Slot {
    /// Body size in bytes.
    pub fn body_len(&self) -> u64 {
        match self {
            Self::Resident(m) => m.body.len() as u64,
            Self::Paged { body_len, .. } => u64::from(*body_len),
        }
    }

    /// Bytes this slot holds in memory.
    pub fn resident_len(&self) -> u64 {
        match self {
            Self::Resident(m) => m.body.len() as u64,
            Self::Paged { .. } => 0,
        }
    }
}

/// `expires_at` of a message that never expires.
pub const NEVER: u64 = u64::MAX;

/// A message in the queue.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Position in the queue.
    pub seq: u64,
    /// The message, or where to find it.
    pub message: Slot,
    /// When it expires, in ms since the Unix epoch ([`NEVER`] if it does not).
    pub expires_at: u64,
    /// Times it was handed to a consumer or `basic.get` without being settled.
    pub deliveries: u32,
    /// Priority level (0 in a queue without priorities).
    pub priority: u8,
    /// Delivered before.
    pub redelivered: bool,
}

impl Entry {
    /// A message never delivered.
    pub fn new(seq: u64, message: Slot, expires_at: Option<u64>, priority: u8) -> Self {
        Self {
            seq,
            message,
            expires_at: expires_at.unwrap_or(NEVER),
            deliveries: 0,
            priority,
            redelivered: false,
        }
    }

    /// Expiry, if it has one.
    pub fn expiry(&self) -> Option<u64> {
        (self.expires_at != NEVER).then_some(self.expires_at)
    }
}

/// The parts of a queue's declaration its state acts on.
#[derive(Debug, Clone, Copy, Default)]
pub struct StateConfig {
    /// `x-max-priority`: levels 0..=this (none: one level).
    pub max_priority: Option<u8>,
    /// `x-delivery-limit`: a message returned more often than this dies.
    pub delivery_limit: Option<u64>,
    /// `x-single-active-consumer`.
    pub single_active_consumer: bool,
}

/// A consumer as the queue sees it.
#[derive(Debug)]
pub struct Consumer {
    /// Unique id.
    pub id: u64,
    /// The owning connection.
    pub connection_id: u64,
    /// Channel.
    pub channel: u16,
    /// Tag.
    pub tag: Arc<str>,
    /// Per-consumer prefetch (0 = unlimited).
    pub prefetch: u32,
    /// Auto-ack.
    pub no_ack: bool,
    /// Exclusive.
    pub exclusive: bool,
    /// `x-priority`: higher-priority consumers are served first while they have credit.
    pub priority: i32,
    /// Channel-wide limiter.
    pub limiter: Arc<ChannelLimiter>,
    /// Connection sink.
    pub sink: ClientSink,
    unacked: u32,
    in_flight: u32,
}

impl From<ConsumeRequest> for Consumer {
    /// A consumer with no deliveries yet.
    fn from(req: ConsumeRequest) -> Self {
        Self {
            id: req.consumer_id,
            connection_id: req.connection_id,
            channel: req.channel,
            tag: req.tag,
            prefetch: req.prefetch,
            no_ack: req.no_ack,
            exclusive: req.exclusive,
            priority: req.priority,
            limiter: req.limiter,
            sink: req.sink,
            unacked: 0,
            in_flight: 0,
        }
    }
}

impl Consumer {
    fn has_own_credit(&self) -> bool {
        self.in_flight < IN_FLIGHT_WINDOW
            && (self.no_ack || self.prefetch == 0 || self.unacked < self.prefetch)
    }

    /// Whether it can take a delivery now; takes channel-wide credit if so.
    fn try_take_credit(&self) -> bool {
        self.has_own_credit() && (self.no_ack || self.limiter.try_acquire())
    }
}

/// Who holds an unacked delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Holder {
    Consumer(u64),
    Get,
}

/// One queue's messages and consumers.
#[derive(Debug)]
pub struct QueueState {
    config: StateConfig,
    next_seq: u64,
    ready: Ready,
    ready_bytes: u64,
    resident_bytes: u64,
    unacked: HashMap<u64, (Entry, Holder)>,
    /// Sorted by priority, highest first; arrival order within a priority.
    consumers: Vec<Consumer>,
    next_consumer: usize,
    /// The single active consumer, when the queue has one.
    active: Option<u64>,
    had_consumer: bool,
    /// Messages returned more often than the delivery limit, waiting to be dead-lettered.
    over_delivery_limit: Vec<Entry>,
}

impl Default for QueueState {
    fn default() -> Self {
        Self::new(StateConfig::default())
    }
}

impl QueueState {
    /// An empty queue.
    pub fn new(config: StateConfig) -> Self {
        Self {
            config,
            next_seq: 1,
            ready: Ready::new(config.max_priority),
            ready_bytes: 0,
            resident_bytes: 0,
            unacked: HashMap::new(),
            consumers: Vec::new(),
            next_consumer: 0,
            active: None,
            had_consumer: false,
            over_delivery_limit: Vec::new(),
        }
    }

    /// A queue holding recovered messages, continuing their numbering.
    pub fn recovered(config: StateConfig, backlog: Backlog) -> Self {
        let mut state = Self::new(config);
        let (ready, bytes, resident, last) = Ready::from_backlog(config.max_priority, backlog);
        state.ready = ready;
        state.ready_bytes = bytes;
        state.resident_bytes = resident;
        if let Some(last) = last {
            state.next_seq = last + 1;
        }
        state
    }

    /// Ready messages.
    pub fn ready_len(&self) -> u32 {
        self.ready.len as u32
    }

    /// Body bytes of ready messages.
    pub fn ready_bytes(&self) -> u64 {
        self.ready_bytes
    }

    /// Body bytes of ready messages held in memory.
    pub fn resident_bytes(&self) -> u64 {
        self.resident_bytes
    }

    /// Delivered, unacked messages.
    pub fn unacked_len(&self) -> u32 {
        self.unacked.len() as u32
    }

    /// Consumers.
    pub fn consumers(&self) -> &[Consumer] {
        &self.consumers
    }

    /// Whether the queue ever had a consumer (auto-delete triggers only then).
    pub fn had_consumer(&self) -> bool {
        self.had_consumer
    }

    /// The sequence number the next publish will get.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// The priority level a message with `priority` goes to.
    pub fn level_for(&self, priority: u8) -> u8 {
        match self.config.max_priority {
            Some(max) => priority.min(max),
            None => 0,
        }
    }

    fn push_ready(&mut self, entry: Entry) {
        self.ready_bytes += entry.message.body_len();
        self.resident_bytes += entry.message.resident_len();
        self.ready.push_back(entry);
    }

    /// Append a resident message that never expires, at priority 0.
    pub fn publish(&mut self, message: Arc<Message>) -> u64 {
        self.publish_slot(Slot::Resident(message))
    }

    /// Append a message (resident or paged) that never expires, at priority 0.
    pub fn publish_slot(&mut self, message: Slot) -> u64 {
        self.publish_entry(message, None, 0)
    }

    /// Append a message at the tail of its priority level; returns its sequence number.
    pub fn publish_entry(&mut self, message: Slot, expires_at: Option<u64>, priority: u8) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        let level = self.level_for(priority);
        self.push_ready(Entry::new(seq, message, expires_at, level));
        seq
    }

    /// Whether one more message of `body_len` bytes would take the queue over its limits.
    pub fn would_overflow(
        &self,
        max_length: Option<u64>,
        max_bytes: Option<u64>,
        body_len: u64,
    ) -> bool {
        max_length.is_some_and(|max| u64::from(self.ready_len()) + 1 > max)
            || max_bytes.is_some_and(|max| self.ready_bytes + body_len > max)
    }

    /// Take messages from the head while the queue is over its limits (drop-head overflow).
    pub fn drop_over_limit(
        &mut self,
        max_length: Option<u64>,
        max_bytes: Option<u64>,
        out: &mut Vec<Entry>,
    ) {
        while max_length.is_some_and(|max| u64::from(self.ready_len()) > max)
            || max_bytes.is_some_and(|max| self.ready_bytes > max)
        {
            match self.pop_ready() {
                Some(entry) => out.push(entry),
                None => break,
            }
        }
    }

    /// Take head messages that expire before `bound` (ms). Only heads are looked at, as
    /// RabbitMQ does: a queue's cost does not grow with the number of messages with TTLs.
    pub fn expire(&mut self, bound: u64, out: &mut Vec<Entry>) {
        while let Some(entry) = self.ready.pop_expired(bound) {
            self.ready_bytes -= entry.message.body_len();
            self.resident_bytes -= entry.message.resident_len();
            out.push(entry);
        }
    }

    /// The earliest expiry among head messages.
    pub fn next_expiry(&self) -> Option<u64> {
        self.ready.next_expiry()
    }

    /// How often a message still in the queue (unacked or ready) has been delivered.
    pub fn deliveries_of(&self, seq: u64) -> Option<u32> {
        if let Some((entry, _)) = self.unacked.get(&seq) {
            return Some(entry.deliveries);
        }
        self.ready.deliveries_of(seq)
    }

    /// Change the delivery limit (a policy changed).
    pub fn set_delivery_limit(&mut self, limit: Option<u64>) {
        self.config.delivery_limit = limit;
    }

    /// Messages that went over the delivery limit since the last call.
    pub fn take_over_delivery_limit(&mut self) -> Vec<Entry> {
        std::mem::take(&mut self.over_delivery_limit)
    }

    /// Add a consumer, enforcing exclusivity (403 as RabbitMQ).
    pub fn add_consumer(
        &mut self,
        consumer: Consumer,
        in_use: impl Fn() -> AmqpError,
    ) -> Result<(), AmqpError> {
        // RabbitMQ refuses exclusive consumers on single-active-consumer queues outright.
        if self.consumers.iter().any(|c| c.exclusive)
            || (consumer.exclusive
                && (!self.consumers.is_empty() || self.config.single_active_consumer))
        {
            return Err(in_use());
        }
        let at = self
            .consumers
            .partition_point(|c| c.priority >= consumer.priority);
        if at <= self.next_consumer && self.next_consumer < self.consumers.len() {
            self.next_consumer += 1;
        }
        if self.config.single_active_consumer && self.active.is_none() {
            self.active = Some(consumer.id);
        }
        self.consumers.insert(at, consumer);
        self.had_consumer = true;
        Ok(())
    }

    /// The single active consumer's id, if the queue has single active consumer on.
    pub fn active_consumer(&self) -> Option<u64> {
        self.active
    }

    /// Remove a consumer. On `basic.cancel` its unacked deliveries stay with the channel; when
    /// its channel closes (`requeue_unacked`) they go back, including any still in transit.
    pub fn remove_consumer(&mut self, id: u64, requeue_unacked: bool) -> Option<Consumer> {
        let at = self.consumers.iter().position(|c| c.id == id)?;
        let consumer = self.consumers.remove(at);
        if at < self.next_consumer {
            self.next_consumer -= 1;
        }
        if self.next_consumer >= self.consumers.len() {
            self.next_consumer = 0;
        }
        if self.active == Some(id) {
            // The next in line takes over: the highest priority, earliest arrival.
            self.active = self.consumers.first().map(|c| c.id);
        }
        if requeue_unacked {
            let held: Vec<u64> = self
                .unacked
                .iter()
                .filter(|(_, (_, h))| *h == Holder::Consumer(id))
                .map(|(seq, _)| *seq)
                .collect();
            self.requeue(&held, true);
        }
        Some(consumer)
    }

    fn consumer_mut(&mut self, id: u64) -> Option<&mut Consumer> {
        self.consumers.iter_mut().find(|c| c.id == id)
    }

    fn take_unacked(&mut self, seq: u64) -> Option<Entry> {
        let (entry, holder) = self.unacked.remove(&seq)?;
        if let Holder::Consumer(id) = holder {
            if let Some(c) = self.consumer_mut(id) {
                c.unacked = c.unacked.saturating_sub(1);
            }
        }
        Some(entry)
    }

    /// Settle deliveries for good (ack, or reject without requeue); returns the entries.
    pub fn settle(&mut self, seqs: &[u64]) -> Vec<Entry> {
        seqs.iter().filter_map(|s| self.take_unacked(*s)).collect()
    }

    /// Put deliveries back at their original positions. `redelivered`: they reached the client
    /// (a return, counted against the delivery limit); otherwise they never left the broker.
    pub fn requeue(&mut self, seqs: &[u64], redelivered: bool) {
        let mut entries: Vec<Entry> = seqs.iter().filter_map(|s| self.take_unacked(*s)).collect();
        entries.sort_by_key(|e| e.seq);
        for mut entry in entries.into_iter().rev() {
            if redelivered {
                entry.redelivered = true;
                if self
                    .config
                    .delivery_limit
                    .is_some_and(|limit| u64::from(entry.deliveries) > limit)
                {
                    self.over_delivery_limit.push(entry);
                    continue;
                }
            } else {
                entry.deliveries = entry.deliveries.saturating_sub(1);
            }
            self.ready_bytes += entry.message.body_len();
            self.resident_bytes += entry.message.resident_len();
            self.ready.insert(entry);
        }
    }

    /// Return in-flight credit to a consumer.
    pub fn credit(&mut self, consumer_id: u64, n: u32) {
        if let Some(c) = self.consumer_mut(consumer_id) {
            c.in_flight = c.in_flight.saturating_sub(n);
        }
    }

    fn pop_ready(&mut self) -> Option<Entry> {
        let entry = self.ready.pop_front()?;
        self.ready_bytes -= entry.message.body_len();
        self.resident_bytes -= entry.message.resident_len();
        Some(entry)
    }

    /// `basic.get`: the head message and how many remain.
    pub fn get(&mut self, no_ack: bool) -> Option<(Entry, u32)> {
        let mut entry = self.pop_ready()?;
        entry.deliveries = entry.deliveries.saturating_add(1);
        if !no_ack {
            self.unacked.insert(entry.seq, (entry.clone(), Holder::Get));
        }
        Some((entry, self.ready_len()))
    }

    /// Drop every ready message; returns them in sequence order.
    pub fn purge(&mut self) -> Vec<Entry> {
        self.ready_bytes = 0;
        self.resident_bytes = 0;
        self.ready.drain()
    }

    /// The consumer to serve next: the single active one, or round robin among the highest
    /// priority consumers with credit. Takes channel-wide credit for it.
    fn pick_consumer(&self) -> Option<usize> {
        if self.config.single_active_consumer {
            let i = self
                .consumers
                .iter()
                .position(|c| Some(c.id) == self.active)?;
            return self.consumers[i].try_take_credit().then_some(i);
        }
        let n = self.consumers.len();
        let mut start = 0;
        while start < n {
            let priority = self.consumers[start].priority;
            let end = start
                + self.consumers[start..]
                    .iter()
                    .take_while(|c| c.priority == priority)
                    .count();
            let len = end - start;
            let first = if (start..end).contains(&self.next_consumer) {
                self.next_consumer - start
            } else {
                0
            };
            for step in 0..len {
                let i = start + (first + step) % len;
                if self.consumers[i].try_take_credit() {
                    return Some(i);
                }
            }
            start = end;
        }
        None
    }

    /// Hand ready messages to consumers with credit. Returns (consumer index, entry).
    pub fn next_deliveries(&mut self, out: &mut Vec<(usize, Entry)>) {
        while self.ready.len > 0 && !self.consumers.is_empty() {
            let Some(i) = self.pick_consumer() else { break };
            self.next_consumer = (i + 1) % self.consumers.len();
            let Some(mut entry) = self.pop_ready() else {
                break;
            };
            entry.deliveries = entry.deliveries.saturating_add(1);
            let c = &mut self.consumers[i];
            c.in_flight += 1;
            if !c.no_ack {
                c.unacked += 1;
                let id = c.id;
                self.unacked
                    .insert(entry.seq, (entry.clone(), Holder::Consumer(id)));
            }
            out.push((i, entry));
        }
    }
}

#[cfg(test)]
mod tests;
