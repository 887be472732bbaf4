//! The queue actor's use of the store: which messages are written on arrival, reading paged
//! messages back (with read-ahead), removing records once settled, delivery-count marks.

use super::*;
use crate::broker::queue::args::QueueType;

impl Actor {
    /// Whether a message in this queue is stored when it arrives (and so must be confirmed only
    /// after the next group commit).
    pub(super) fn stored_on_arrival(&self, message: &Message) -> bool {
        // A quorum queue keeps every message, as RabbitMQ's does, persistent or not.
        self.config.storage.durable
            && (message.persistent || self.config.args.queue_type == QueueType::Quorum)
    }

    /// The store key an entry's record is under, if it has one.
    pub(super) fn record_key(&self, entry: &Entry) -> Option<&str> {
        let storage = &self.config.storage;
        match &entry.message {
            Slot::Paged { scratch: true, .. } => Some(&storage.scratch_key),
            Slot::Paged { scratch: false, .. } => Some(&storage.key),
            Slot::Resident(m) if self.stored_on_arrival(m) => Some(&storage.key),
            Slot::Resident(_) => None,
        }
    }

    /// Drop a non-durable queue's scratch records (the queue is going away).
    pub(super) fn wipe_scratch(&mut self) {
        let storage = &self.config.storage;
        if !self.scratch_registered {
            return;
        }
        if let Err(error) = storage
            .store
            .delete_queue(&storage.scratch_key)
            .and_then(|()| {
                storage
                    .store
                    .remove_definition(SCRATCH, &storage.scratch_key)
            })
        {
            tracing::error!(queue = %self.config.name, %error, "wiping scratch records failed");
        }
        self.scratch_registered = false;
    }

    /// The message of an entry, read back from the store if it was paged out. Paged messages
    /// are read ahead in sequence order, a bounded batch at a time: a draining deep queue costs
    /// one store scan per batch rather than a lookup per message.
    pub(super) fn materialize(&mut self, entry: &Entry) -> Option<Arc<Message>> {
        let scratch = match &entry.message {
            Slot::Resident(m) => return Some(m.clone()),
            Slot::Paged { scratch, .. } => *scratch,
        };
        if let Some(m) = self.read_ahead.take(entry.seq, scratch) {
            return Some(m);
        }
        let key = self.record_key(entry)?.to_owned();
        self.read_ahead.clear();
        self.read_ahead.scratch = scratch;
        let read_ahead = &mut self.read_ahead;
        let result = self.config.storage.store.read_range(
            &key,
            entry.seq,
            entry.seq.saturating_add(READ_AHEAD_MESSAGES),
            &mut |seq, record| {
                if let Some(m) = decode_message(&record) {
                    read_ahead.bytes += m.body.len() as u64;
                    read_ahead.messages.push_back((seq, Arc::new(m)));
                }
                read_ahead.bytes < READ_AHEAD_BYTES
            },
        );
        if let Err(error) = result {
            // What was read before the failure is good: only a message that could not be read
            // is lost, not the batch it was in.
            tracing::error!(queue = %self.config.name, %error, "reading stored messages failed");
        }
        self.read_ahead.take(entry.seq, scratch)
    }

    /// The message to hand out for an entry (`get`: to `basic.get`): with `x-delivery-count`
    /// on a quorum queue's redeliveries and on everything `basic.get` takes from one (0 the
    /// first time: RabbitMQ 3.10 sets it there, not on a first delivery to a consumer), and on
    /// redeliveries from a classic queue with a delivery limit.
    pub(super) fn outgoing(&mut self, entry: &Entry, get: bool) -> Option<Arc<Message>> {
        let message = self.materialize(entry)?;
        if self.config.args.queue_type == QueueType::Quorum && (get || entry.deliveries > 1) {
            let count = i64::from(entry.deliveries.saturating_sub(1));
            let mut out = (*message).clone();
            if let Some(raw) = crate::protocol::headers::with_long_header(
                &message.raw_properties,
                "x-delivery-count",
                count,
            ) {
                out.raw_properties = raw;
            }
            return Some(Arc::new(out));
        }
        if self.config.args.delivery_limit.is_some() && entry.deliveries > 1 {
            let count = i64::from(entry.deliveries - 1);
            return Some(Arc::new(message.with_header(
                "x-delivery-count",
                crate::protocol::AMQPValue::LongLongInt(count),
            )));
        }
        Some(message)
    }

    /// A paged message whose record could not be read back: say so, and let it go.
    pub(super) fn lost(&mut self, entry: &Entry) {
        tracing::error!(queue = %self.config.name, seq = entry.seq, "a stored message could not be read; dropping it");
        self.state.settle(&[entry.seq]);
    }

    /// Forget stored copies of messages that left the queue for good.
    pub(super) fn unstore(&self, entries: &[Entry]) {
        for e in entries {
            let Some(key) = self.record_key(e) else {
                continue;
            };
            if let Err(error) = self.config.storage.store.remove(key, e.seq) {
                tracing::error!(queue = %self.config.name, %error, "removing a stored message failed");
            }
        }
    }

    /// Record a delivery in the store: a no-ack delivery is gone for good. Other deliveries of
    /// stored messages are marked (so a restart brings them back `redelivered`, with their
    /// delivery count) lazily, after [`DELIVERY_MARK_DELAY`]: most are acked before that and
    /// never cost a write.
    pub(super) fn note_delivered(&mut self, entry: &Entry, no_ack: bool) {
        let g = self.handle.gauges();
        g.delivered.fetch_add(1, Ordering::Relaxed);
        if entry.redelivered {
            g.redelivered.fetch_add(1, Ordering::Relaxed);
        }
        let Some(key) = self.record_key(entry) else {
            return;
        };
        if no_ack {
            if let Err(error) = self.config.storage.store.remove(key, entry.seq) {
                tracing::error!(queue = %self.config.name, %error, "recording a delivery failed");
            }
        } else if key == self.config.storage.key && self.config.storage.durable {
            if self.unmarked.is_empty() {
                self.mark_due = Some(Instant::now() + DELIVERY_MARK_DELAY);
            }
            self.unmarked.push(entry.seq);
        }
    }

    /// Write the delivery marks that are due (or all of them, at shutdown), for messages still
    /// in the queue: unacked, or requeued since.
    pub(super) fn write_delivery_marks(&mut self) {
        self.mark_due = None;
        for seq in std::mem::take(&mut self.unmarked) {
            let Some(deliveries) = self.state.deliveries_of(seq) else {
                continue;
            };
            if let Err(error) =
                self.config
                    .storage
                    .store
                    .mark_delivered(&self.config.storage.key, seq, deliveries)
            {
                tracing::error!(queue = %self.config.name, %error, "recording a delivery failed");
            }
        }
    }
}
