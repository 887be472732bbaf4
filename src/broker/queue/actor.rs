//! The queue actor: a thin async shell around [`QueueState`].
//!
//! It drains its lanes in batches (control first), applies each command to the state, then hands
//! out deliveries once per batch. It awaits nothing but its own lanes. Auto-delete and deletion
//! remove the queue from its vhost through a synchronous callback (a short lock, no await).

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};

use tokio::sync::mpsc;

use super::state::{Consumer, Entry, QueueState, Slot};
use super::{
    ClientEvent, Control, Delivery, GetResult, Publish, QueueHandle, QueueStats, Shared,
    NEXT_QUEUE_ID, WORK_LANE_CAPACITY,
};
use crate::broker::commit::Committer;
use crate::broker::memory::MemoryPressure;
use crate::broker::message::Message;
use crate::broker::records::{decode_message, encode_message};
use crate::broker::vhost::VHost;
use crate::protocol::AmqpError;
use crate::store::Store;

/// Where a queue keeps messages it does not hold in memory.
#[derive(Debug, Clone)]
pub struct QueueStorage {
    /// The store.
    pub store: Arc<dyn Store>,
    /// The store's group committer.
    pub committer: Committer,
    /// This queue's durable records (persistent messages of a durable queue).
    pub key: String,
    /// Scratch space for paged-out messages that must not survive a restart; registered as a
    /// `scratch` definition so the next start wipes it.
    pub scratch_key: String,
    /// Durable (and not exclusive): persistent messages are stored on arrival and survive
    /// restarts.
    pub durable: bool,
    /// Whether transient messages deep in a queue should be paged out now.
    pub pressure: MemoryPressure,
}

/// Definition kind under which scratch keys are registered (so a restart can wipe them).
pub const SCRATCH: &str = "scratch";

/// Ready messages kept in memory at the head of a durable queue; persistent messages behind them
/// live only in the store until delivered. Bounds a deep queue's memory to its index.
pub const RESIDENT_WINDOW: u32 = 1024;

/// The same window in body bytes, so large bodies (64 KB) do not make it 64 MB per queue.
pub const RESIDENT_BYTES: u64 = 4 * 1024 * 1024;

/// Settings a queue actor needs from its declaration.
#[derive(Debug, Clone)]
pub struct QueueConfig {
    /// Queue name.
    pub name: String,
    /// Owning vhost's name (for error texts).
    pub vhost_name: String,
    /// Delete when the last consumer goes.
    pub auto_delete: bool,
    /// Where messages go that are not held in memory.
    pub storage: QueueStorage,
}

struct Actor {
    config: QueueConfig,
    state: QueueState,
    handle: QueueHandle,
    vhost: Weak<VHost>,
    deliveries: Vec<(usize, Entry)>,
    /// Whether this (non-durable) queue's scratch key is registered for wiping.
    scratch_registered: bool,
}

/// Start a queue actor, holding `recovered` messages; returns its handle.
pub fn spawn(config: QueueConfig, vhost: Weak<VHost>, recovered: Vec<Entry>) -> QueueHandle {
    let (work_tx, work_rx) = mpsc::channel(WORK_LANE_CAPACITY);
    let (control_tx, control_rx) = mpsc::unbounded_channel();
    let handle = QueueHandle {
        shared: Arc::new(Shared {
            id: NEXT_QUEUE_ID.fetch_add(1, Ordering::Relaxed),
            name: config.name.clone(),
            durable: config.storage.durable,
            work: work_tx,
            control: control_tx,
        }),
    };
    let actor = Actor {
        config,
        state: QueueState::recovered(recovered),
        handle: handle.clone(),
        vhost,
        deliveries: Vec::new(),
        scratch_registered: false,
    };
    let span = tracing::debug_span!("queue", name = %actor.config.name);
    tokio::spawn(tracing::Instrument::instrument(
        actor.run(work_rx, control_rx),
        span,
    ));
    handle
}

enum Flow {
    Continue,
    Stop,
}

impl Actor {
    async fn run(
        mut self,
        mut work: mpsc::Receiver<Publish>,
        mut control: mpsc::UnboundedReceiver<Control>,
    ) {
        let mut controls = Vec::with_capacity(64);
        let mut publishes = Vec::with_capacity(256);
        loop {
            tokio::select! {
                biased;
                n = control.recv_many(&mut controls, 64) => {
                    if n == 0 {
                        return;
                    }
                    if controls.iter().any(Control::observes_publishes) {
                        // A call must see every publish its caller made before it: take what the
                        // work lane holds first (control is otherwise polled ahead of work).
                        while let Ok(p) = work.try_recv() {
                            self.on_publish(p);
                        }
                    }
                    for c in controls.drain(..) {
                        if let Flow::Stop = self.on_control(c) {
                            return;
                        }
                    }
                }
                n = work.recv_many(&mut publishes, 256) => {
                    if n == 0 {
                        return;
                    }
                    for p in publishes.drain(..) {
                        self.on_publish(p);
                    }
                }
            }
            self.dispatch();
        }
    }

    /// Whether a message in this queue is stored when it arrives (and so must be confirmed only
    /// after the next group commit).
    fn stored_on_arrival(&self, message: &Message) -> bool {
        self.config.storage.durable && message.persistent
    }

    /// The store key an entry's record is under, if it has one.
    fn record_key(&self, entry: &Entry) -> Option<&str> {
        let storage = &self.config.storage;
        match &entry.message {
            Slot::Paged { scratch: true, .. } => Some(&storage.scratch_key),
            Slot::Paged { scratch: false, .. } => Some(&storage.key),
            Slot::Resident(m) if self.stored_on_arrival(m) => Some(&storage.key),
            Slot::Resident(_) => None,
        }
    }

    /// Enqueue. A persistent message in a durable queue is stored first and confirmed after the
    /// next group commit. Deep in the queue, persistent messages (and, under memory pressure,
    /// transient ones, as scratch) live only in the store, keeping just their place in memory.
    fn on_publish(&mut self, Publish { message, confirm }: Publish) {
        let deep = self.state.ready_len() >= RESIDENT_WINDOW
            || self.state.resident_bytes() >= RESIDENT_BYTES;
        let durable = self.stored_on_arrival(&message);
        // Transient messages are paged only under memory pressure: for small messages the store
        // costs more than keeping them.
        let deep = deep && (durable || self.config.storage.pressure.is_high());
        if !durable && !deep {
            self.state.publish(message);
            if let Some(target) = confirm {
                target.reply(true);
            }
            return;
        }
        let storage = &self.config.storage;
        if !durable && !self.scratch_registered {
            // Registered before the first record, so a crash cannot leave unregistered scratch.
            match storage
                .store
                .put_definition(SCRATCH, &storage.scratch_key, &[])
            {
                Ok(()) => self.scratch_registered = true,
                Err(error) => {
                    tracing::error!(queue = %self.config.name, %error, "registering scratch space failed; keeping the message in memory");
                    self.state.publish(message);
                    if let Some(target) = confirm {
                        target.reply(true);
                    }
                    return;
                }
            }
        }
        let seq = self.state.next_seq();
        let key = if durable {
            &storage.key
        } else {
            &storage.scratch_key
        };
        if let Err(error) = storage.store.append(key, seq, &encode_message(&message)) {
            tracing::error!(queue = %self.config.name, %error, "storing a message failed");
            if durable {
                // Refused as a whole: not queued, and nacked if the publisher asked for confirms.
                if let Some(target) = confirm {
                    target.reply(false);
                }
            } else {
                self.state.publish(message);
                if let Some(target) = confirm {
                    target.reply(true);
                }
            }
            return;
        }
        let slot = if deep {
            Slot::Paged {
                body_len: message.body.len() as u32,
                scratch: !durable,
            }
        } else {
            Slot::Resident(message)
        };
        self.state.publish_slot(slot);
        if let Some(target) = confirm {
            if durable {
                storage.committer.confirm_after_sync(target);
            } else {
                target.reply(true);
            }
        }
    }

    /// Drop a non-durable queue's scratch records (the queue is going away).
    fn wipe_scratch(&mut self) {
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

    /// The message of an entry, read back from the store if it was paged out.
    fn materialize(&self, entry: &Entry) -> Option<Arc<Message>> {
        match &entry.message {
            Slot::Resident(m) => Some(m.clone()),
            Slot::Paged { .. } => {
                let key = self.record_key(entry)?;
                match self.config.storage.store.read(key, entry.seq) {
                    Ok(Some(record)) => decode_message(&record).map(Arc::new),
                    Ok(None) => None,
                    Err(error) => {
                        tracing::error!(queue = %self.config.name, %error, "reading a stored message failed");
                        None
                    }
                }
            }
        }
    }

    /// A paged message whose record could not be read back: say so, and let it go.
    fn lost(&mut self, entry: &Entry) {
        tracing::error!(queue = %self.config.name, seq = entry.seq, "a stored message could not be read; dropping it");
        self.state.settle(&[entry.seq]);
    }

    /// Forget stored copies of messages that left the queue for good.
    fn unstore(&self, entries: &[Entry]) {
        for e in entries {
            let Some(key) = self.record_key(e) else {
                continue;
            };
            if let Err(error) = self.config.storage.store.remove(key, e.seq) {
                tracing::error!(queue = %self.config.name, %error, "removing a stored message failed");
            }
        }
    }

    fn in_use_error(&self) -> AmqpError {
        AmqpError::access_refused(format!(
            "queue '{}' in vhost '{}' in exclusive use",
            self.config.name, self.config.vhost_name
        ))
    }

    fn on_control(&mut self, control: Control) -> Flow {
        match control {
            Control::Consume(req, reply) => {
                let consumer = Consumer::from(req);
                let in_use = self.in_use_error();
                let _ = reply.send(self.state.add_consumer(consumer, || in_use.clone()));
            }
            Control::Cancel {
                consumer_id,
                requeue_unacked,
                reply,
            } => {
                self.state.remove_consumer(consumer_id, requeue_unacked);
                if let Some(reply) = reply {
                    let _ = reply.send(());
                }
                if self.config.auto_delete
                    && self.state.had_consumer()
                    && self.state.consumers().is_empty()
                {
                    self.wipe_scratch();
                    self.auto_delete();
                    return Flow::Stop;
                }
            }
            Control::Ack(seqs) | Control::Reject(seqs) => {
                let settled = self.state.settle(&seqs);
                self.unstore(&settled);
            }
            Control::Requeue(seqs) => self.state.requeue(&seqs, true),
            Control::Release(seqs) => self.state.requeue(&seqs, false),
            Control::Credit { consumer_id, n } => self.state.credit(consumer_id, n),
            Control::Wake => {}
            Control::Get { no_ack, reply } => {
                let mut result = None;
                while let Some((entry, remaining)) = self.state.get(no_ack) {
                    let Some(message) = self.materialize(&entry) else {
                        self.lost(&entry);
                        continue;
                    };
                    self.note_delivered(&entry, no_ack);
                    result = Some(GetResult {
                        seq: entry.seq,
                        message,
                        redelivered: entry.redelivered,
                        remaining,
                    });
                    break;
                }
                let _ = reply.send(result);
            }
            Control::Purge(reply) => {
                let purged = self.state.purge();
                self.unstore(&purged);
                let _ = reply.send(purged.len() as u32);
            }
            Control::Delete {
                if_unused,
                if_empty,
                reply,
            } => {
                if if_unused && !self.state.consumers().is_empty() {
                    let _ = reply.send(Err(AmqpError::precondition_failed(format!(
                        "queue '{}' in vhost '{}' in use",
                        self.config.name, self.config.vhost_name
                    ))));
                    return Flow::Continue;
                }
                if if_empty && self.state.ready_len() > 0 {
                    let _ = reply.send(Err(AmqpError::precondition_failed(format!(
                        "queue '{}' in vhost '{}' not empty",
                        self.config.name, self.config.vhost_name
                    ))));
                    return Flow::Continue;
                }
                let count = self.state.ready_len();
                self.cancel_all_consumers();
                self.wipe_scratch();
                let _ = reply.send(Ok(count));
                return Flow::Stop;
            }
            Control::Shutdown => return Flow::Stop,
            Control::Stats(reply) => {
                let _ = reply.send(QueueStats {
                    messages: self.state.ready_len(),
                    unacked: self.state.unacked_len(),
                    consumers: self.state.consumers().len() as u32,
                });
            }
        }
        Flow::Continue
    }

    fn cancel_all_consumers(&mut self) {
        for c in self.state.consumers() {
            let _ = c.sink.send(ClientEvent::ConsumerCancelled {
                channel: c.channel,
                consumer_tag: c.tag.clone(),
            });
        }
    }

    fn auto_delete(&mut self) {
        if let Some(vhost) = self.vhost.upgrade() {
            vhost.forget_queue(&self.config.name, self.handle.id());
        }
    }

    /// Record a delivery in the store: a no-ack delivery is gone for good; a first delivery
    /// makes a restart bring the message back `redelivered`.
    fn note_delivered(&self, entry: &Entry, no_ack: bool) {
        let Some(key) = self.record_key(entry) else {
            return;
        };
        let store = &self.config.storage.store;
        let result = if no_ack {
            store.remove(key, entry.seq)
        } else if key == self.config.storage.key
            && self.config.storage.durable
            && !entry.redelivered
        {
            store.mark_delivered(key, entry.seq)
        } else {
            Ok(())
        };
        if let Err(error) = result {
            tracing::error!(queue = %self.config.name, %error, "recording a delivery failed");
        }
    }

    fn dispatch(&mut self) {
        let mut deliveries = std::mem::take(&mut self.deliveries);
        self.state.next_deliveries(&mut deliveries);
        for (i, entry) in deliveries.drain(..) {
            let (no_ack, consumer_id) = (
                self.state.consumers()[i].no_ack,
                self.state.consumers()[i].id,
            );
            let Some(message) = self.materialize(&entry) else {
                self.lost(&entry);
                self.state.credit(consumer_id, 1);
                continue;
            };
            self.note_delivered(&entry, no_ack);
            let c = &self.state.consumers()[i];
            let delivery = Delivery {
                channel: c.channel,
                consumer_tag: c.tag.clone(),
                consumer_id: c.id,
                queue: self.handle.clone(),
                seq: entry.seq,
                message,
                redelivered: entry.redelivered,
                no_ack: c.no_ack,
            };
            // A closed sink means the connection is gone; its cleanup requeues what it held.
            let _ = c.sink.send(ClientEvent::Deliver(delivery));
        }
        self.deliveries = deliveries;
    }
}
