//! The pure state of one queue: ready messages in order, unacked deliveries, consumers and their
//! credit. No tokio, no clock, no I/O: the actor applies commands and sends what this returns.
//!
//! Invariants: `ready` is sorted by sequence number (a requeued message goes back to its original
//! place); a sequence is either ready, unacked, or gone; a consumer is offered a message only
//! while it has credit (prefetch, channel-wide limit, and in-flight window), round robin.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use super::{ChannelLimiter, ClientSink, ConsumeRequest};
use crate::broker::message::Message;
use crate::protocol::AmqpError;

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

/// A message in the queue.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Position in the queue.
    pub seq: u64,
    /// The message, or where to find it.
    pub message: Slot,
    /// Delivered before.
    pub redelivered: bool,
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
    next_seq: u64,
    ready: VecDeque<Entry>,
    ready_bytes: u64,
    resident_bytes: u64,
    unacked: HashMap<u64, (Entry, Holder)>,
    consumers: Vec<Consumer>,
    next_consumer: usize,
    had_consumer: bool,
}

impl Default for QueueState {
    fn default() -> Self {
        Self::new()
    }
}

impl QueueState {
    /// An empty queue.
    pub fn new() -> Self {
        Self {
            next_seq: 1,
            ready: VecDeque::new(),
            ready_bytes: 0,
            resident_bytes: 0,
            unacked: HashMap::new(),
            consumers: Vec::new(),
            next_consumer: 0,
            had_consumer: false,
        }
    }

    /// A queue holding recovered messages (in sequence order), continuing their numbering.
    pub fn recovered(entries: Vec<Entry>) -> Self {
        let mut state = Self::new();
        if let Some(last) = entries.last() {
            state.next_seq = last.seq + 1;
        }
        state.ready_bytes = entries.iter().map(|e| e.message.body_len()).sum();
        state.resident_bytes = entries.iter().map(|e| e.message.resident_len()).sum();
        state.ready = entries.into();
        state
    }

    /// Ready messages.
    pub fn ready_len(&self) -> u32 {
        self.ready.len() as u32
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

    /// Append a message at the tail.
    pub fn publish(&mut self, message: Arc<Message>) -> u64 {
        self.publish_slot(Slot::Resident(message))
    }

    /// Append a message (resident or paged) at the tail; returns its sequence number.
    pub fn publish_slot(&mut self, message: Slot) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.ready_bytes += message.body_len();
        self.resident_bytes += message.resident_len();
        self.ready.push_back(Entry {
            seq,
            message,
            redelivered: false,
        });
        seq
    }

    /// Add a consumer, enforcing exclusivity (403 as RabbitMQ).
    pub fn add_consumer(
        &mut self,
        consumer: Consumer,
        in_use: impl Fn() -> AmqpError,
    ) -> Result<(), AmqpError> {
        if self.consumers.iter().any(|c| c.exclusive)
            || (consumer.exclusive && !self.consumers.is_empty())
        {
            return Err(in_use());
        }
        self.consumers.push(consumer);
        self.had_consumer = true;
        Ok(())
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

    /// Put deliveries back at their original positions.
    pub fn requeue(&mut self, seqs: &[u64], redelivered: bool) {
        let mut entries: Vec<Entry> = seqs.iter().filter_map(|s| self.take_unacked(*s)).collect();
        entries.sort_by_key(|e| e.seq);
        for mut entry in entries.into_iter().rev() {
            entry.redelivered |= redelivered;
            self.ready_bytes += entry.message.body_len();
            self.resident_bytes += entry.message.resident_len();
            // Usually the front: requeued messages are older than anything still ready.
            let at = self.ready.partition_point(|e| e.seq < entry.seq);
            self.ready.insert(at, entry);
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
        let entry = self.pop_ready()?;
        if !no_ack {
            self.unacked.insert(entry.seq, (entry.clone(), Holder::Get));
        }
        Some((entry, self.ready_len()))
    }

    /// Drop every ready message; returns them.
    pub fn purge(&mut self) -> Vec<Entry> {
        self.ready_bytes = 0;
        self.resident_bytes = 0;
        self.ready.drain(..).collect()
    }

    /// Hand ready messages to consumers with credit, round robin. Returns (consumer index, entry).
    pub fn next_deliveries(&mut self, out: &mut Vec<(usize, Entry)>) {
        while !self.ready.is_empty() && !self.consumers.is_empty() {
            let n = self.consumers.len();
            let mut chosen = None;
            for step in 0..n {
                let i = (self.next_consumer + step) % n;
                let c = &self.consumers[i];
                if c.has_own_credit() && (c.no_ack || c.limiter.try_acquire()) {
                    chosen = Some(i);
                    break;
                }
            }
            let Some(i) = chosen else { break };
            self.next_consumer = (i + 1) % n;
            let Some(entry) = self.pop_ready() else { break };
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
mod tests {
    use super::*;
    use bytes::Bytes;
    use tokio::sync::mpsc;

    fn msg(body: &'static str) -> Arc<Message> {
        Arc::new(Message::new(
            Arc::from(""),
            Arc::from("q"),
            Bytes::from_static(&[0, 0]),
            Bytes::from_static(body.as_bytes()),
            false,
        ))
    }

    fn consumer(id: u64, prefetch: u32, no_ack: bool) -> Consumer {
        let (tx, _rx) = mpsc::unbounded_channel();
        Consumer::from(ConsumeRequest {
            consumer_id: id,
            connection_id: 1,
            channel: 1,
            tag: Arc::from(format!("c{id}")),
            prefetch,
            no_ack,
            exclusive: false,
            limiter: Arc::new(ChannelLimiter::default()),
            sink: tx,
        })
    }

    fn in_use() -> AmqpError {
        AmqpError::access_refused("in exclusive use")
    }

    #[test]
    fn prefetch_limits_deliveries_until_ack() {
        let mut q = QueueState::new();
        for b in ["a", "b", "c"] {
            q.publish(msg(b));
        }
        q.add_consumer(consumer(1, 2, false), in_use).unwrap();
        let mut out = Vec::new();
        q.next_deliveries(&mut out);
        assert_eq!(out.len(), 2);
        assert_eq!(q.ready_len(), 1);
        q.settle(&[out[0].1.seq]);
        out.clear();
        q.next_deliveries(&mut out);
        assert_eq!(out.len(), 1);
        assert!(matches!(&out[0].1.message, Slot::Resident(m) if &m.body[..] == b"c"));
    }

    #[test]
    fn requeue_restores_original_order_and_marks_redelivered() {
        let mut q = QueueState::new();
        for b in ["a", "b", "c"] {
            q.publish(msg(b));
        }
        let (a, _) = q.get(false).unwrap();
        let (b, _) = q.get(false).unwrap();
        q.requeue(&[b.seq, a.seq], true);
        let order: Vec<_> = (0..3).map(|_| q.get(true).unwrap().0).collect();
        assert_eq!(
            order.iter().map(|e| e.seq).collect::<Vec<_>>(),
            vec![a.seq, b.seq, a.seq + 2]
        );
        assert!(order[0].redelivered && order[1].redelivered && !order[2].redelivered);
    }

    #[test]
    fn round_robin_skips_consumers_without_credit() {
        let mut q = QueueState::new();
        q.add_consumer(consumer(1, 1, false), in_use).unwrap();
        q.add_consumer(consumer(2, 0, false), in_use).unwrap();
        for b in ["a", "b", "c", "d"] {
            q.publish(msg(b));
        }
        let mut out = Vec::new();
        q.next_deliveries(&mut out);
        let to: Vec<usize> = out.iter().map(|(i, _)| *i).collect();
        assert_eq!(to, vec![0, 1, 1, 1]);
    }

    #[test]
    fn exclusive_consumer_excludes_others() {
        let mut q = QueueState::new();
        let mut c = consumer(1, 0, false);
        c.exclusive = true;
        q.add_consumer(c, in_use).unwrap();
        assert!(q.add_consumer(consumer(2, 0, false), in_use).is_err());
    }

    #[test]
    fn in_flight_window_bounds_no_ack_consumers() {
        let mut q = QueueState::new();
        q.add_consumer(consumer(1, 0, true), in_use).unwrap();
        for _ in 0..(IN_FLIGHT_WINDOW + 10) {
            q.publish(msg("x"));
        }
        let mut out = Vec::new();
        q.next_deliveries(&mut out);
        assert_eq!(out.len() as u32, IN_FLIGHT_WINDOW);
        q.credit(1, 5);
        out.clear();
        q.next_deliveries(&mut out);
        assert_eq!(out.len(), 5);
        assert_eq!(q.unacked_len(), 0);
    }

    #[test]
    fn channel_limiter_is_shared() {
        let mut q = QueueState::new();
        let limiter = Arc::new(ChannelLimiter::default());
        limiter.set_limit(1);
        let mut a = consumer(1, 0, false);
        a.limiter = limiter.clone();
        let mut b = consumer(2, 0, false);
        b.limiter = limiter.clone();
        q.add_consumer(a, in_use).unwrap();
        q.add_consumer(b, in_use).unwrap();
        q.publish(msg("a"));
        q.publish(msg("b"));
        let mut out = Vec::new();
        q.next_deliveries(&mut out);
        assert_eq!(out.len(), 1);
        limiter.release(1);
        q.next_deliveries(&mut out);
        assert_eq!(out.len(), 2);
    }
}

#[cfg(test)]
mod paging_tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn resident_bytes_count_only_messages_in_memory() {
        let mut q = QueueState::new();
        let m = Arc::new(Message::new(
            Arc::from(""),
            Arc::from("q"),
            Bytes::from_static(&[0, 0]),
            Bytes::from(vec![1u8; 100]),
            true,
        ));
        q.publish(m);
        q.publish_slot(Slot::Paged {
            body_len: 1000,
            scratch: true,
        });
        assert_eq!((q.ready_bytes(), q.resident_bytes()), (1100, 100));
        let (first, _) = q.get(false).unwrap();
        assert_eq!((q.ready_bytes(), q.resident_bytes()), (1000, 0));
        q.requeue(&[first.seq], true);
        assert_eq!((q.ready_bytes(), q.resident_bytes()), (1100, 100));
        q.purge();
        assert_eq!((q.ready_bytes(), q.resident_bytes()), (0, 0));
    }
}
