//! The queue actor: a thin async shell around [`QueueState`].
//!
//! It drains its lanes in batches (control first), applies each command to the state, then hands
//! out deliveries once per batch. It awaits nothing but its own lanes. Auto-delete and deletion
//! remove the queue from its vhost through a synchronous callback (a short lock, no await).

mod dead_lettering;
mod storage;

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::mpsc;
use tokio::time::Instant;

use super::args::{Overflow, QueueArgs};
use super::state::{Backlog, Consumer, Entry, QueueState, Slot, StateConfig};
use super::{
    ClientEvent, ConfirmTarget, Control, DeadLetterTicket, Delivery, GetGuard, GetResult, Publish,
    QueueHandle, QueueStats,
};
use crate::broker::commit::Committer;
use crate::broker::dead_letter::{self, DeathReason};
use crate::broker::memory::MemoryPressure;
use crate::broker::message::Message;
use crate::broker::records::{decode_message, encode_index, encode_message, RecordMeta};
use crate::broker::vhost::VHost;
use crate::protocol::AmqpError;
use crate::store::Store;

/// Wall-clock milliseconds since the Unix epoch: message expiry survives restarts.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

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
    /// Settings from its `x-` arguments.
    pub args: QueueArgs,
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
    /// Wall-clock ms, read once per batch of commands.
    clock: u64,
    /// Last redeclaration, `basic.get` or consumer departure (for `x-expires`).
    last_used: Instant,
    /// Scratch space for messages leaving the queue.
    dying: Vec<Entry>,
    /// Messages went back to the head in this batch: length limits apply before delivery.
    requeued: bool,
    /// Paged messages read back ahead of delivery.
    read_ahead: ReadAhead,
    /// Stored messages delivered since the last delivery marks were written.
    unmarked: Vec<u64>,
    /// When those marks are due.
    mark_due: Option<Instant>,
}

/// How long a delivery of a stored message may go unrecorded in the store.
const DELIVERY_MARK_DELAY: Duration = Duration::from_secs(1);

/// Messages read ahead from the store, in sequence order; bounded by
/// [`READ_AHEAD_MESSAGES`] and [`READ_AHEAD_BYTES`].
#[derive(Default)]
struct ReadAhead {
    messages: std::collections::VecDeque<(u64, Arc<Message>)>,
    bytes: u64,
    /// Read from the queue's scratch space rather than its durable records.
    scratch: bool,
}

impl ReadAhead {
    /// The message for `seq`, dropping any read-ahead before it (delivered or gone meanwhile).
    fn take(&mut self, seq: u64, scratch: bool) -> Option<Arc<Message>> {
        if scratch != self.scratch {
            return None;
        }
        while let Some((s, m)) = self.messages.front() {
            if *s > seq {
                return None;
            }
            let (s, m) = (*s, m.clone());
            self.bytes -= m.body.len() as u64;
            self.messages.pop_front();
            if s == seq {
                return Some(m);
            }
        }
        None
    }

    fn clear(&mut self) {
        self.messages.clear();
        self.bytes = 0;
    }
}

/// Most messages read ahead at once.
const READ_AHEAD_MESSAGES: u64 = 256;
/// Most body bytes read ahead at once.
const READ_AHEAD_BYTES: u64 = 1024 * 1024;

/// Answer a command the actor will not run because it is stopping. A deleted queue acks the
/// publishes it still had (their messages went with it, as if unroutable); at shutdown nothing is
/// answered, so a dead-lettering queue keeps its stored copy. Dropped reply senders tell their
/// callers the queue is gone.
fn abandon(control: Control, deleted: bool) {
    if let Control::Publish(publish) = control {
        abandon_publish(publish, deleted);
    }
}

fn abandon_publish(publish: Publish, deleted: bool) {
    if let (Some(target), true) = (publish.confirm, deleted) {
        target.reply(true);
    }
}

/// A publish's confirm until it is answered or handed on; dropped unanswered (a panic in
/// `on_publish`), it nacks, as RabbitMQ nacks what a failing queue could not take.
struct Unanswered(Option<ConfirmTarget>);

impl Drop for Unanswered {
    fn drop(&mut self) {
        if let Some(target) = self.0.take() {
            target.reply(false);
        }
    }
}

/// Close both lanes and answer whatever they still hold.
fn close_lanes(
    work: &mut mpsc::Receiver<Publish>,
    control: &mut mpsc::UnboundedReceiver<Control>,
    deleted: bool,
) {
    work.close();
    control.close();
    while let Ok(p) = work.try_recv() {
        abandon_publish(p, deleted);
    }
    while let Ok(c) = control.try_recv() {
        abandon(c, deleted);
    }
}

/// Which lane woke the actor.
enum Woken {
    Control(usize),
    Work(usize),
    Timer,
}

/// Start a queue actor, holding `recovered` messages; returns its handle.
pub fn spawn(config: QueueConfig, vhost: Weak<VHost>, recovered: Backlog) -> QueueHandle {
    let (handle, lanes) = QueueHandle::open(
        &config.name,
        &config.vhost_name,
        config.args.queue_type,
        config.storage.durable,
        &config.args,
    );
    let state_config = StateConfig {
        max_priority: config.args.max_priority,
        delivery_limit: config.args.delivery_limit,
        single_active_consumer: config.args.single_active_consumer,
    };
    let actor = Actor {
        config,
        state: QueueState::recovered(state_config, recovered),
        handle: handle.clone(),
        vhost,
        deliveries: Vec::new(),
        scratch_registered: false,
        clock: now_ms(),
        last_used: Instant::now(),
        dying: Vec::new(),
        requeued: false,
        read_ahead: ReadAhead::default(),
        unmarked: Vec::new(),
        mark_due: None,
    };
    let span = tracing::debug_span!("queue", name = %actor.config.name);
    tokio::spawn(tracing::Instrument::instrument(
        actor.run(lanes.work, lanes.control),
        span,
    ));
    handle
}

enum Flow {
    Continue,
    /// The queue is gone (deleted, auto-deleted, expired): what is still queued for it is
    /// answered as if it had never been routed here.
    Deleted,
    /// The broker is stopping: stored messages stay, nothing is answered.
    Shutdown,
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
            let deadline = self.next_deadline();
            let timer = async move {
                match deadline {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            let woken = tokio::select! {
                biased;
                n = control.recv_many(&mut controls, 64) => Woken::Control(n),
                n = work.recv_many(&mut publishes, 256) => Woken::Work(n),
                () = timer => Woken::Timer,
            };
            self.clock = now_ms();
            match woken {
                Woken::Control(0) | Woken::Work(0) => return,
                Woken::Control(_) => {
                    if controls.iter().any(Control::observes_publishes) {
                        // A call must see every publish its caller made before it: take what the
                        // work lane holds first (control is otherwise polled ahead of work).
                        while let Ok(p) = work.try_recv() {
                            self.contained(|actor| actor.on_publish(p));
                        }
                        // ...and a queue as those publishes left it (expiry, length limits).
                        self.settle_dying();
                    }
                    let mut stop = None;
                    for c in controls.drain(..) {
                        match stop {
                            None => match self
                                .contained(|actor| actor.on_control(c))
                                .unwrap_or(Flow::Continue)
                            {
                                Flow::Continue => {}
                                other => stop = Some(other),
                            },
                            Some(Flow::Deleted) => abandon(c, true),
                            Some(_) => abandon(c, false),
                        }
                    }
                    if let Some(flow) = stop {
                        close_lanes(&mut work, &mut control, matches!(flow, Flow::Deleted));
                        return;
                    }
                }
                Woken::Work(_) => {
                    for p in publishes.drain(..) {
                        self.contained(|actor| actor.on_publish(p));
                    }
                }
                Woken::Timer => {}
            }
            self.settle_dying();
            self.update_gauges();
            if self.mark_due.is_some_and(|due| due <= Instant::now()) {
                self.write_delivery_marks();
            }
            // Checked after every batch: steady publishing does not count as use.
            if self.unused_too_long() {
                tracing::debug!(queue = %self.config.name, "x-expires reached; deleting");
                self.cancel_all_consumers();
                self.wipe_scratch();
                self.auto_delete();
                close_lanes(&mut work, &mut control, true);
                return;
            }
        }
    }

    /// Run one command, containing a panic in it: the queue and every other message in it
    /// stay, and the panicking command is lost as if never sent (its reply sender is dropped,
    /// which its caller sees as a gone queue). One bad command never takes a queue down.
    fn contained<R>(&mut self, command: impl FnOnce(&mut Self) -> R) -> Option<R> {
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| command(self))) {
            Ok(result) => Some(result),
            Err(_) => {
                tracing::error!(queue = %self.config.name, "a queue command panicked; the queue goes on without it");
                None
            }
        }
    }

    fn update_gauges(&self) {
        let g = self.handle.gauges();
        g.ready
            .store(u64::from(self.state.ready_len()), Ordering::Relaxed);
        g.ready_bytes
            .store(self.state.ready_bytes(), Ordering::Relaxed);
        g.unacked
            .store(u64::from(self.state.unacked_len()), Ordering::Relaxed);
        g.consumers
            .store(self.state.consumers().len() as u64, Ordering::Relaxed);
    }

    /// When the actor must wake without a command: the next head expiry, or `x-expires`.
    fn next_deadline(&self) -> Option<Instant> {
        let expiry = self.state.next_expiry().map(|at| {
            Instant::now() + Duration::from_millis(at.saturating_sub(now_ms()).saturating_add(1))
        });
        let unused = match self.config.args.expires {
            Some(ms) if self.state.consumers().is_empty() => {
                Some(self.last_used + Duration::from_millis(ms))
            }
            _ => None,
        };
        [expiry, unused, self.mark_due].into_iter().flatten().min()
    }

    fn unused_too_long(&self) -> bool {
        self.config.args.expires.is_some_and(|ms| {
            self.state.consumers().is_empty()
                && self.last_used.elapsed() >= Duration::from_millis(ms)
        })
    }

    /// After each batch: expire what is due, deliver, then apply limits, in RabbitMQ's order (a
    /// message with TTL 0 reaches a consumer that can take it now; a full queue delivers before
    /// it drops).
    fn settle_dying(&mut self) {
        let mut dying = std::mem::take(&mut self.dying);
        self.state.expire(self.clock, &mut dying);
        self.dead_letter(&mut dying, DeathReason::Expired);
        // A requeued head that takes a drop-head queue over its limit goes before delivery, as
        // in RabbitMQ; new publishes are offered to consumers first.
        let args = &self.config.args;
        if std::mem::take(&mut self.requeued)
            && args.has_length_limit()
            && args.overflow == Overflow::DropHead
        {
            self.state
                .drop_over_limit(args.max_length, args.max_length_bytes, &mut dying);
            self.dead_letter(&mut dying, DeathReason::Maxlen);
        }
        self.dispatch();
        self.state.expire(self.clock + 1, &mut dying);
        self.dead_letter(&mut dying, DeathReason::Expired);
        let args = &self.config.args;
        if args.has_length_limit() && args.overflow == Overflow::DropHead {
            self.state
                .drop_over_limit(args.max_length, args.max_length_bytes, &mut dying);
            self.dead_letter(&mut dying, DeathReason::Maxlen);
        }
        dying.extend(self.state.take_over_delivery_limit());
        self.dead_letter(&mut dying, DeathReason::DeliveryLimit);
        self.dying = dying;
    }

    /// Enqueue. A persistent message in a durable queue is stored first and confirmed after the
    /// next group commit. Deep in the queue, messages (transient ones as scratch) live only in
    /// the log, keeping just their place in memory.
    fn on_publish(
        &mut self,
        Publish {
            message, confirm, ..
        }: Publish,
    ) {
        // Answered on every path below; a panic part-way nacks it as it unwinds, so the
        // publisher is never left waiting for a confirm nobody will send.
        let mut confirm = Unanswered(confirm);
        crate::broker::fault::check(&message.body, crate::broker::fault::PANIC_QUEUE);
        self.handle
            .gauges()
            .published
            .fetch_add(1, Ordering::Relaxed);
        let args = &self.config.args;
        if args.overflow != Overflow::DropHead
            && self.state.would_overflow(
                args.max_length,
                args.max_length_bytes,
                message.body.len() as u64,
            )
        {
            if args.overflow == Overflow::RejectPublishDlx {
                self.dead_letter_message(&message, DeathReason::Maxlen, None);
            }
            if let Some(target) = confirm.0.take() {
                target.refuse();
            }
            return;
        }
        let ttl = match (args.message_ttl, message.expiration) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let expires_at = ttl.map(|ms| self.clock.saturating_add(ms));
        let priority = self.state.level_for(message.priority);
        // Past the resident window every message lives only in the log, transient ones as
        // scratch: a paged message costs its place in the queue and the log's index entry, a
        // resident one its whole struct. Under memory pressure the window shrinks to a
        // sixteenth, so new arrivals stop taking memory sooner.
        let shrink = if self.config.storage.pressure.is_high() {
            4
        } else {
            0
        };
        let deep = self.state.ready_len() >= RESIDENT_WINDOW >> shrink
            || self.state.resident_bytes() >= RESIDENT_BYTES >> shrink;
        let durable = self.stored_on_arrival(&message);
        if !durable && !deep {
            self.state
                .publish_entry(Slot::Resident(message), expires_at, priority);
            if let Some(target) = confirm.0.take() {
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
                    self.state
                        .publish_entry(Slot::Resident(message), expires_at, priority);
                    if let Some(target) = confirm.0.take() {
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
        let meta = RecordMeta {
            expires_at,
            priority,
        };
        if let Err(error) = storage.store.append(
            key,
            seq,
            &encode_message(&message, meta),
            &encode_index(message.body.len() as u32, meta),
        ) {
            tracing::error!(queue = %self.config.name, %error, "storing a message failed");
            if durable {
                // Refused as a whole: not queued, and nacked if the publisher asked for confirms.
                if let Some(target) = confirm.0.take() {
                    target.reply(false);
                }
            } else {
                self.state
                    .publish_entry(Slot::Resident(message), expires_at, priority);
                if let Some(target) = confirm.0.take() {
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
        self.state.publish_entry(slot, expires_at, priority);
        if let Some(target) = confirm.0.take() {
            if durable {
                storage.committer.confirm_after_sync(target);
            } else {
                target.reply(true);
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
            Control::Touch => self.last_used = Instant::now(),
            Control::Publish(p) => self.on_publish(p),
            Control::Forget(seq) => {
                if let Err(error) = self
                    .config
                    .storage
                    .store
                    .remove(&self.config.storage.key, seq)
                {
                    tracing::error!(queue = %self.config.name, %error, "removing a dead-lettered message failed");
                }
            }
            Control::Sync(target) => {
                if self.config.storage.durable {
                    self.config.storage.committer.confirm_after_sync(target);
                } else {
                    target.reply(true);
                }
            }
            Control::Consume(req, reply) => {
                // Quorum queues take no channel-wide prefetch (RabbitMQ's 540).
                if self.config.args.queue_type == super::args::QueueType::Quorum
                    && req.limiter.limit() != 0
                {
                    let _ = reply.send(Err(AmqpError::not_implemented(format!(
                        "queue '{}' in vhost '{}' does not support global qos",
                        self.config.name, self.config.vhost_name
                    ))));
                    return Flow::Continue;
                }
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
                self.requeued |= requeue_unacked;
                self.last_used = Instant::now();
                if let Some(reply) = reply {
                    let _ = reply.send(());
                }
                if self.config.auto_delete
                    && self.state.had_consumer()
                    && self.state.consumers().is_empty()
                {
                    self.wipe_scratch();
                    self.auto_delete();
                    return Flow::Deleted;
                }
            }
            Control::Ack(seqs) => {
                let settled = self.state.settle(&seqs);
                self.handle
                    .gauges()
                    .acked
                    .fetch_add(settled.len() as u64, Ordering::Relaxed);
                self.unstore(&settled);
            }
            Control::Reject(seqs) => {
                let mut rejected = self.state.settle(&seqs);
                self.dead_letter(&mut rejected, DeathReason::Rejected);
            }
            Control::Requeue(seqs) => {
                self.state.requeue(&seqs, true);
                self.requeued = true;
            }
            Control::Release(seqs) => {
                self.state.requeue(&seqs, false);
                self.requeued = true;
            }
            Control::Credit { consumer_id, n } => self.state.credit(consumer_id, n),
            Control::Wake => {}
            Control::Get { no_ack, reply } => {
                self.last_used = Instant::now();
                let mut dying = std::mem::take(&mut self.dying);
                self.state.expire(self.clock + 1, &mut dying);
                self.dead_letter(&mut dying, DeathReason::Expired);
                self.dying = dying;
                let mut result = None;
                while let Some((entry, remaining)) = self.state.get(no_ack) {
                    let Some(message) = self.outgoing(&entry, true) else {
                        self.lost(&entry);
                        continue;
                    };
                    self.note_delivered(&entry, no_ack);
                    // Like RabbitMQ, the count leaves out messages that expired behind this one.
                    let mut dying = std::mem::take(&mut self.dying);
                    self.state.expire(self.clock + 1, &mut dying);
                    self.dead_letter(&mut dying, DeathReason::Expired);
                    self.dying = dying;
                    let remaining = remaining.min(self.state.ready_len());
                    result = Some(GetResult {
                        seq: entry.seq,
                        message,
                        redelivered: entry.redelivered,
                        remaining,
                        guard: GetGuard {
                            queue: (!no_ack).then(|| self.handle.clone()),
                            seq: entry.seq,
                        },
                    });
                    break;
                }
                // Unanswered (the caller went away), the result's guard puts the message back.
                let _ = reply.send(result);
            }
            Control::Purge(reply) => {
                self.read_ahead.clear();
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
                return Flow::Deleted;
            }
            Control::Shutdown => {
                self.write_delivery_marks();
                return Flow::Shutdown;
            }
            Control::Policy(args) => {
                self.state.set_delivery_limit(args.delivery_limit);
                self.handle
                    .set_refuses_publishes(args.may_refuse_publishes());
                self.config.args = *args;
                // Limits that now apply are enforced by this batch's settle_dying.
                self.requeued = true;
            }
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

    fn dispatch(&mut self) {
        let mut deliveries = std::mem::take(&mut self.deliveries);
        self.state.next_deliveries(&mut deliveries);
        for (i, entry) in deliveries.drain(..) {
            let (no_ack, consumer_id) = (
                self.state.consumers()[i].no_ack,
                self.state.consumers()[i].id,
            );
            let Some(message) = self.outgoing(&entry, false) else {
                self.lost(&entry);
                self.state.credit(consumer_id, 1);
                if !no_ack {
                    self.state.consumers()[i].limiter.release(1);
                }
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
