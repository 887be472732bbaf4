//! Queues: one actor task per queue owns its state; everyone else holds a [`QueueHandle`].
//!
//! Two lanes reach the actor: a bounded work lane for publishes (a full lane makes the publishing
//! connection stop reading its socket: TCP backpressure) and an unbounded control lane for acks,
//! credit, consume/cancel and management calls, polled first because those free resources. The
//! actor never awaits another actor; it sends deliveries to connections over unbounded sinks,
//! gated by consumer credit so those sinks stay small.

mod actor;
pub mod args;
pub mod state;

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use super::message::Message;
use crate::protocol::AmqpError;

pub use actor::{
    now_ms, spawn, QueueConfig, QueueStorage, RESIDENT_BYTES, RESIDENT_WINDOW, SCRATCH,
};

/// Capacity of a queue's work lane, in publishes.
pub const WORK_LANE_CAPACITY: usize = 4096;
/// The body bytes a queue's work lane holds at most, in [`LANE_UNIT`]s (8 MiB): thousands of
/// small publishes may wait, but not thousands of large ones (4,096 waiting 16 KB bodies were
/// 64 MB of a broker's memory under a publisher flood).
pub const WORK_LANE_UNITS: u32 = 8 * 1024;
/// Bytes per unit of the lane's byte budget.
pub const LANE_UNIT: usize = 1024;

/// The units of the lane's budget a body takes (at least one, at most all).
fn lane_units(body_len: usize) -> u32 {
    u32::try_from(body_len.div_ceil(LANE_UNIT))
        .unwrap_or(u32::MAX)
        .clamp(1, WORK_LANE_UNITS)
}

/// Events a queue (or the broker) sends to a connection.
#[derive(Debug)]
pub enum ClientEvent {
    /// A message for a consumer.
    Deliver(Delivery),
    /// A publish a queue was waiting on is settled (persistent messages: after the fsync).
    Confirm {
        /// Publishing channel.
        channel: u16,
        /// Publish sequence number on that channel.
        seq: u64,
        /// Stored (ack) or refused (nack).
        ack: bool,
    },
    /// The queue cancelled a consumer (e.g. the queue was deleted).
    ConsumerCancelled {
        /// Channel of the consumer.
        channel: u16,
        /// Its tag.
        consumer_tag: Arc<str>,
    },
}

/// Where a queue sends a connection's events.
pub type ClientSink = mpsc::UnboundedSender<ClientEvent>;

/// Where to send the confirm for one publish.
#[derive(Debug)]
pub enum ConfirmTarget {
    /// A publishing channel under confirms.
    Publisher {
        /// The publishing connection.
        sink: ClientSink,
        /// Its channel.
        channel: u16,
        /// The publish's confirm sequence number.
        seq: u64,
    },
    /// A dead-lettered persistent message whose source still holds its stored copy.
    DeadLetter(Arc<DeadLetterTicket>),
    /// A caller awaiting the answer itself (`tx.commit` waits for every publish and ack of
    /// its transaction to be synced). A target dropped unanswered closes the channel.
    Waiter(mpsc::UnboundedSender<bool>),
}

/// A dead-lettered persistent message on its way to the queues that store it. The source queue
/// keeps its stored copy until every such queue has synced the message, so a crash leaves the
/// message in the source or in the targets, never in neither.
#[derive(Debug)]
pub struct DeadLetterTicket {
    source: QueueHandle,
    seq: u64,
    storing: AtomicU32,
    refused: AtomicBool,
}

impl DeadLetterTicket {
    /// A ticket for `seq` of `source`, answered by `storing` target queues.
    pub fn new(source: QueueHandle, seq: u64, storing: u32) -> Arc<Self> {
        Arc::new(Self {
            source,
            seq,
            storing: AtomicU32::new(storing),
            refused: AtomicBool::new(false),
        })
    }

    pub(crate) fn answer(&self, ack: bool) {
        if !ack {
            self.refused.store(true, Ordering::Release);
        }
        if self.storing.fetch_sub(1, Ordering::AcqRel) == 1 {
            if self.refused.load(Ordering::Acquire) {
                // Some target could not store it: the source's copy comes back on restart.
                tracing::error!(queue = %self.source.name(), seq = self.seq, "a dead-lettered message was not stored by every target; keeping the source copy");
            } else {
                self.source.cast(Control::Forget(self.seq));
            }
        }
    }
}

/// A publish on its way into a queue.
#[derive(Debug)]
pub(crate) struct Publish {
    pub(crate) message: Arc<Message>,
    pub(crate) confirm: Option<ConfirmTarget>,
    /// Its share of the work lane's byte budget, given back when the actor takes it.
    _budget: Option<tokio::sync::OwnedSemaphorePermit>,
}

/// A message on its way to a consumer.
#[derive(Debug)]
pub struct Delivery {
    /// Channel of the consumer.
    pub channel: u16,
    /// Consumer tag.
    pub consumer_tag: Arc<str>,
    /// Consumer id (for credit).
    pub consumer_id: u64,
    /// The queue it came from.
    pub queue: QueueHandle,
    /// Its sequence in that queue (the queue-side identity for ack/requeue).
    pub seq: u64,
    /// The message.
    pub message: Arc<Message>,
    /// Whether it was delivered before.
    pub redelivered: bool,
    /// The consumer does not ack: the queue already forgot it.
    pub no_ack: bool,
}

/// Channel-wide prefetch (`basic.qos global=true`), shared by every consumer on a channel.
#[derive(Debug, Default)]
pub struct ChannelLimiter {
    limit: AtomicU32,
    unacked: AtomicU32,
}

impl ChannelLimiter {
    /// Set the limit (0 = unlimited).
    pub fn set_limit(&self, limit: u32) {
        self.limit.store(limit, Ordering::Release);
    }

    /// The limit (0 = none): set by `basic.qos global=true`.
    pub fn limit(&self) -> u32 {
        self.limit.load(Ordering::Acquire)
    }

    /// Take one unit of credit if there is any.
    pub fn try_acquire(&self) -> bool {
        let limit = self.limit.load(Ordering::Acquire);
        if limit == 0 {
            self.unacked.fetch_add(1, Ordering::AcqRel);
            return true;
        }
        self.unacked
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < limit).then_some(n + 1)
            })
            .is_ok()
    }

    /// Whether the channel is at its limit.
    pub fn is_full(&self) -> bool {
        let limit = self.limit.load(Ordering::Acquire);
        limit != 0 && self.unacked.load(Ordering::Acquire) >= limit
    }

    /// Return `n` units (acked, rejected or requeued deliveries).
    pub fn release(&self, n: u32) {
        let _ = self
            .unacked
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| {
                Some(u.saturating_sub(n))
            });
    }
}

/// What `basic.consume` asks of a queue.
#[derive(Debug)]
pub struct ConsumeRequest {
    /// Unique consumer id.
    pub consumer_id: u64,
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
    /// Exclusive consumer.
    pub exclusive: bool,
    /// `x-priority`.
    pub priority: i32,
    /// The channel's shared limiter.
    pub limiter: Arc<ChannelLimiter>,
    /// Where deliveries go.
    pub sink: ClientSink,
    /// The consumer's arguments, for what a queue type reads itself (a stream's offset and
    /// filter).
    pub arguments: crate::protocol::FieldTable,
}

/// The result of `basic.get`.
#[derive(Debug)]
pub struct GetResult {
    /// Queue-side identity.
    pub seq: u64,
    /// The message.
    pub message: Arc<Message>,
    /// Delivered before.
    pub redelivered: bool,
    /// Ready messages left after this one.
    pub remaining: u32,
    /// Puts the message back unless the caller claims it.
    pub guard: GetGuard,
}

/// A `basic.get` answer's hold on its message. The answer crosses a oneshot channel to a
/// caller that may be gone by then (an HTTP client that hung up, a connection that closed), and
/// a message nobody took must not stay unacknowledged with no owner: dropped unclaimed, the
/// guard returns it to the queue, not marked redelivered.
#[derive(Debug)]
pub struct GetGuard {
    pub(crate) queue: Option<QueueHandle>,
    pub(crate) seq: u64,
}

impl GetGuard {
    /// The caller has the message (and will ack, reject or requeue it itself).
    pub fn claim(mut self) {
        self.queue = None;
    }
}

impl Drop for GetGuard {
    fn drop(&mut self) {
        if let Some(queue) = self.queue.take() {
            queue.release(vec![self.seq]);
        }
    }
}

/// Counts reported by `queue.declare-ok` and management.
#[derive(Debug, Clone, Copy, Default)]
pub struct QueueStats {
    /// Ready messages.
    pub messages: u32,
    /// Delivered, not yet acked.
    pub unacked: u32,
    /// Consumers.
    pub consumers: u32,
}

/// A queue's counts as its actor last left them (after each batch), for management and
/// metrics: reading them never waits on the actor.
#[derive(Debug, Default)]
pub struct QueueGauges {
    /// Ready messages.
    pub ready: AtomicU64,
    /// Body bytes of ready messages.
    pub ready_bytes: AtomicU64,
    /// Delivered, not yet acked.
    pub unacked: AtomicU64,
    /// Consumers.
    pub consumers: AtomicU64,
    /// Messages enqueued, ever.
    pub published: AtomicU64,
    /// Messages delivered to consumers or fetched by `basic.get`, ever.
    pub delivered: AtomicU64,
    /// Deliveries that were redeliveries, ever.
    pub redelivered: AtomicU64,
    /// Deliveries acknowledged, ever.
    pub acked: AtomicU64,
}

impl QueueGauges {
    /// Read one gauge.
    pub fn get(gauge: &AtomicU64) -> u64 {
        gauge.load(Ordering::Relaxed)
    }
}

/// A stream's position as its actor last left it, for management.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamSnapshot {
    /// The oldest offset kept.
    pub first_offset: u64,
    /// The newest offset written, if any.
    pub last_offset: Option<u64>,
    /// Each consumer: (tag, the next offset it reads, the last offset it acked).
    pub consumers: Vec<(Arc<str>, u64, Option<u64>)>,
}

/// Control-lane commands.
#[derive(Debug)]
pub(crate) enum Control {
    Consume(ConsumeRequest, oneshot::Sender<Result<(), AmqpError>>),
    Cancel {
        consumer_id: u64,
        requeue_unacked: bool,
        reply: Option<oneshot::Sender<()>>,
    },
    Ack(Vec<u64>),
    Reject(Vec<u64>),
    Requeue(Vec<u64>),
    Release(Vec<u64>),
    Credit {
        consumer_id: u64,
        n: u32,
    },
    Wake,
    Get {
        no_ack: bool,
        reply: oneshot::Sender<Option<GetResult>>,
    },
    Purge(oneshot::Sender<u32>),
    Delete {
        if_unused: bool,
        if_empty: bool,
        reply: oneshot::Sender<Result<u32, AmqpError>>,
    },
    Stats(oneshot::Sender<QueueStats>),
    /// The queue was redeclared: it is in use (for `x-expires`).
    Touch,
    /// A dead-lettered message from another queue (sent here so that queue never waits).
    Publish(Publish),
    /// Every target stored a message this queue dead-lettered: drop its stored copy.
    Forget(u64),
    /// Answer once everything this queue has written to the store so far is synced.
    Sync(ConfirmTarget),
    /// The broker is stopping: end the actor, keeping stored messages.
    Shutdown,
    /// A policy changed: these are the queue's effective settings now.
    Policy(Box<args::QueueArgs>),
}

impl Control {
    /// Calls whose answer depends on earlier publishes (so they must not overtake them).
    pub(crate) fn observes_publishes(&self) -> bool {
        match self {
            Self::Consume(..)
            | Self::Get { .. }
            | Self::Purge(_)
            | Self::Delete { .. }
            | Self::Stats(_) => true,
            Self::Cancel { .. }
            | Self::Ack(_)
            | Self::Reject(_)
            | Self::Requeue(_)
            | Self::Release(_)
            | Self::Credit { .. }
            | Self::Wake
            | Self::Touch
            | Self::Publish(_)
            | Self::Forget(_)
            | Self::Sync(_)
            | Self::Shutdown
            | Self::Policy(_) => false,
        }
    }
}

#[derive(Debug)]
struct Shared {
    id: u64,
    name: String,
    /// "queue 'q' in vhost '/'", as errors name it.
    resource: String,
    kind: args::QueueType,
    durable: bool,
    /// Every message is stored, persistent or not (quorum queues and streams).
    stores_all: bool,
    /// A length limit with reject-publish overflow: every publish needs the queue's answer.
    refuses_publishes: AtomicBool,
    /// `x-consumer-timeout`.
    consumer_timeout: Option<u64>,
    work: mpsc::Sender<Publish>,
    /// The work lane's byte budget.
    lane_bytes: Arc<tokio::sync::Semaphore>,
    control: mpsc::UnboundedSender<Control>,
    gauges: QueueGauges,
    /// A stream's position (streams only).
    stream: std::sync::Mutex<Option<StreamSnapshot>>,
}

/// A cheap, cloneable door to a queue actor.
#[derive(Debug, Clone)]
pub struct QueueHandle {
    shared: Arc<Shared>,
}

static NEXT_QUEUE_ID: AtomicU64 = AtomicU64::new(1);

/// The receiving ends of a queue's lanes, for the actor that runs it.
pub(crate) struct Lanes {
    pub(crate) work: mpsc::Receiver<Publish>,
    pub(crate) control: mpsc::UnboundedReceiver<Control>,
}

impl QueueHandle {
    /// A handle and the lanes behind it, for a new actor of `kind`.
    pub(crate) fn open(
        name: &str,
        vhost: &str,
        kind: args::QueueType,
        durable: bool,
        args: &args::QueueArgs,
    ) -> (Self, Lanes) {
        let (work_tx, work_rx) = mpsc::channel(WORK_LANE_CAPACITY);
        let (control_tx, control_rx) = mpsc::unbounded_channel();
        let handle = QueueHandle {
            shared: Arc::new(Shared {
                id: NEXT_QUEUE_ID.fetch_add(1, Ordering::Relaxed),
                name: name.to_owned(),
                resource: format!("queue '{name}' in vhost '{vhost}'"),
                kind,
                durable,
                stores_all: durable && kind != args::QueueType::Classic,
                refuses_publishes: AtomicBool::new(args.may_refuse_publishes()),
                consumer_timeout: args.consumer_timeout,
                work: work_tx,
                lane_bytes: Arc::new(tokio::sync::Semaphore::new(WORK_LANE_UNITS as usize)),
                control: control_tx,
                gauges: QueueGauges::default(),
                stream: std::sync::Mutex::new(None),
            }),
        };
        (
            handle,
            Lanes {
                work: work_rx,
                control: control_rx,
            },
        )
    }

    /// The queue's type.
    pub fn kind(&self) -> args::QueueType {
        self.shared.kind
    }

    /// Unique id of this queue instance (a redeclared queue of the same name has another).
    pub fn id(&self) -> u64 {
        self.shared.id
    }

    /// The queue's name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// Whether persistent messages in this queue are stored and survive restarts (durable, not
    /// exclusive).
    pub fn stores_persistent(&self) -> bool {
        self.shared.durable
    }

    /// Whether a publisher under confirms must wait for this queue's answer for `message`:
    /// the queue stores it before confirming, or may refuse it.
    pub fn answers_confirm(&self, message: &Message) -> bool {
        (message.persistent && self.shared.durable)
            || self.shared.stores_all
            || self.shared.refuses_publishes.load(Ordering::Relaxed)
    }

    /// `x-consumer-timeout` of this queue, ms.
    pub fn consumer_timeout(&self) -> Option<u64> {
        self.shared.consumer_timeout
    }

    /// Enqueue without waiting, through the control lane (dead-lettering: a queue never waits
    /// on another queue).
    pub fn publish_nowait(&self, message: Arc<Message>, confirm: Option<ConfirmTarget>) {
        if let Err(mpsc::error::SendError(Control::Publish(Publish {
            confirm: Some(target),
            ..
        }))) = self.shared.control.send(Control::Publish(Publish {
            message,
            confirm,
            _budget: None,
        })) {
            target.reply(true);
        }
    }

    /// Note a redeclaration (resets `x-expires`).
    pub fn touch(&self) {
        self.cast(Control::Touch);
    }

    /// Enqueue a message; waits while the work lane is full (backpressure). With a confirm
    /// target, the queue settles the publish once the message is safe.
    pub async fn publish(&self, message: Arc<Message>, confirm: Option<ConfirmTarget>) {
        let units = lane_units(message.body.len());
        let lane = &self.shared.lane_bytes;
        let budget = match lane.clone().try_acquire_many_owned(units) {
            Ok(permit) => Some(permit),
            Err(tokio::sync::TryAcquireError::NoPermits) => {
                lane.clone().acquire_many_owned(units).await.ok()
            }
            Err(tokio::sync::TryAcquireError::Closed) => None,
        };
        let publish = Publish {
            message,
            confirm,
            _budget: budget,
        };
        let refused = match self.shared.work.try_send(publish) {
            Ok(()) => None,
            Err(mpsc::error::TrySendError::Full(publish)) => {
                self.shared.work.send(publish).await.err().map(|e| e.0)
            }
            Err(mpsc::error::TrySendError::Closed(publish)) => Some(publish),
        };
        // A queue deleted meanwhile: the message is dropped as if unroutable, and acked as such.
        if let Some(Publish {
            confirm: Some(target),
            ..
        }) = refused
        {
            target.reply(true);
        }
    }

    fn cast(&self, control: Control) {
        // A gone actor means a deleted queue: acks and credit for it have nothing left to do.
        let _ = self.shared.control.send(control);
    }

    /// Acknowledge deliveries.
    pub fn ack(&self, seqs: Vec<u64>) {
        self.cast(Control::Ack(seqs));
    }

    /// Reject deliveries without requeue (dropped, or dead-lettered).
    pub fn reject(&self, seqs: Vec<u64>) {
        self.cast(Control::Reject(seqs));
    }

    /// Requeue deliveries at their original positions, marked redelivered.
    pub fn requeue(&self, seqs: Vec<u64>) {
        self.cast(Control::Requeue(seqs));
    }

    /// Return deliveries that never reached the client (not marked redelivered).
    pub fn release(&self, seqs: Vec<u64>) {
        self.cast(Control::Release(seqs));
    }

    /// Answer `target` once everything this queue has stored so far (after the commands sent
    /// before this one, acks included) is on disk.
    pub fn sync(&self, target: ConfirmTarget) {
        self.cast(Control::Sync(target));
    }

    /// Give a consumer `n` more in-flight credit.
    pub fn credit(&self, consumer_id: u64, n: u32) {
        self.cast(Control::Credit { consumer_id, n });
    }

    /// Ask the queue to retry deliveries (channel-wide credit was freed).
    pub fn wake(&self) {
        self.cast(Control::Wake);
    }

    /// Remove a consumer whose channel closed, requeueing everything it held.
    pub fn consumer_gone(&self, consumer_id: u64) {
        self.cast(Control::Cancel {
            consumer_id,
            requeue_unacked: true,
            reply: None,
        });
    }

    /// Cancel a consumer; returns once every delivery it was sent is in its connection's inbox.
    pub async fn cancel(&self, consumer_id: u64) {
        let (tx, rx) = oneshot::channel();
        self.cast(Control::Cancel {
            consumer_id,
            requeue_unacked: false,
            reply: Some(tx),
        });
        let _ = rx.await;
    }

    /// Add a consumer.
    pub async fn consume(&self, request: ConsumeRequest) -> Result<(), AmqpError> {
        let (tx, rx) = oneshot::channel();
        self.cast(Control::Consume(request, tx));
        rx.await.unwrap_or_else(|_| Err(self.gone()))
    }

    /// A stream refuses what only a queue can do, with RabbitMQ's 540.
    fn refuse_for_stream(&self, what: &str) -> Result<(), AmqpError> {
        match self.shared.kind {
            args::QueueType::Stream => Err(AmqpError::not_implemented(format!(
                "{what} not supported by stream queues {}",
                self.shared.resource
            ))),
            args::QueueType::Classic | args::QueueType::Quorum => Ok(()),
        }
    }

    /// Take one message (`basic.get`).
    pub async fn get(&self, no_ack: bool) -> Result<Option<GetResult>, AmqpError> {
        self.refuse_for_stream("basic.get")?;
        let (tx, rx) = oneshot::channel();
        self.cast(Control::Get { no_ack, reply: tx });
        Ok(rx.await.unwrap_or(None))
    }

    /// Remove every ready message; returns how many.
    pub async fn purge(&self) -> Result<u32, AmqpError> {
        self.refuse_for_stream("queue.purge")?;
        let (tx, rx) = oneshot::channel();
        self.cast(Control::Purge(tx));
        Ok(rx.await.unwrap_or(0))
    }

    /// Stop the actor (checking `if_unused`/`if_empty`); returns the ready count it had.
    pub(crate) async fn delete(&self, if_unused: bool, if_empty: bool) -> Result<u32, AmqpError> {
        let (tx, rx) = oneshot::channel();
        self.cast(Control::Delete {
            if_unused,
            if_empty,
            reply: tx,
        });
        rx.await.unwrap_or(Ok(0))
    }

    /// Stop the actor without deleting anything (broker shutdown).
    pub(crate) fn shutdown(&self) {
        self.cast(Control::Shutdown);
    }

    /// Resolves once the actor has stopped.
    pub async fn stopped(&self) {
        self.shared.control.closed().await;
    }

    /// Apply new effective settings (a policy was set or cleared).
    pub fn apply_args(&self, args: args::QueueArgs) {
        // Raised at once, lowered by the actor once it stops refusing: a publish in between
        // is always answered by the queue itself, never acked for it unseen.
        if args.may_refuse_publishes() {
            self.set_refuses_publishes(true);
        }
        self.cast(Control::Policy(Box::new(args)));
    }

    pub(crate) fn set_refuses_publishes(&self, refuses: bool) {
        self.shared
            .refuses_publishes
            .store(refuses, Ordering::Relaxed);
    }

    /// A stream's position as of its actor's last batch (`None` for other types).
    pub fn stream_snapshot(&self) -> Option<StreamSnapshot> {
        self.shared
            .stream
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    pub(crate) fn set_stream_snapshot(&self, snapshot: StreamSnapshot) {
        *self
            .shared
            .stream
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(snapshot);
    }

    /// Counts as of the actor's last batch, without asking it.
    pub fn gauges(&self) -> &QueueGauges {
        &self.shared.gauges
    }

    /// Current counts.
    pub async fn stats(&self) -> QueueStats {
        let (tx, rx) = oneshot::channel();
        self.cast(Control::Stats(tx));
        rx.await.unwrap_or_default()
    }

    fn gone(&self) -> AmqpError {
        AmqpError::not_found(format!("no queue '{}'", self.shared.name))
    }
}
