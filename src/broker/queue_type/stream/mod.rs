//! Streams (`x-queue-type: stream`): an append-only log that every consumer reads at its own
//! offset, over AMQP 0-9-1 as RabbitMQ serves it.
//!
//! A thin async shell around [`state`]: the actor appends each publish to the message log at
//! the next offset (every message, persistent or not, confirmed after the group commit), keeps
//! the newest messages in memory so consumers at the tail never read the disk, and reads a
//! bounded batch from the log for a consumer behind it. A round of deliveries gives each
//! consumer a bounded share, so one replaying from `first` never holds up those at the tail.
//! Settling a delivery only returns credit: nothing is removed or requeued. Retention drops
//! whole segments from the front, by size and age, and never the newest.
//!
//! Beyond RabbitMQ: the broker tracks the offset of a consumer that names its own tag (or asks
//! with `x-stream-automatic-offset-tracking`), as LavinMQ does, in the metadata store; negative
//! offsets count back from the end; headers are stored as they arrived (RabbitMQ drops array
//! and table values).

pub mod consumer_args;
pub mod state;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use self::state::{Consumers, StreamConsumer, StreamIndex, DEFAULT_FILTER_BYTES};
use crate::broker::message::Message;
use crate::broker::queue::{
    now_ms, ClientEvent, ConfirmTarget, Control, Delivery, Lanes, Publish, QueueConfig,
    QueueHandle, QueueStats,
};
use crate::broker::records::{decode_message, encode_message, RecordMeta};
use crate::protocol::headers::{string_header, with_long_header};
use crate::protocol::AmqpError;
use crate::store::{Store, StoreError};

/// The header a publisher sets for filtering.
pub const FILTER_VALUE: &str = "x-stream-filter-value";
/// The header every delivery carries.
pub const OFFSET_HEADER: &str = "x-stream-offset";
/// Definition kind under which tracked consumer offsets are kept.
pub const OFFSETS: &str = "stream-offset";

/// Newest messages kept in memory for consumers at the tail.
const TAIL_MESSAGES: usize = 1024;
/// ...and at most this many body bytes of them.
const TAIL_BYTES: u64 = 4 * 1024 * 1024;
/// One read from the log for a consumer behind the tail: at most this many messages...
const READ_MESSAGES: usize = 128;
/// ...or bytes.
const READ_BYTES: u64 = 512 * 1024;
/// Deliveries (or skipped messages) one consumer gets per round before the next consumer's
/// turn.
const ROUND_SHARE: u32 = 128;
/// How often retention is checked at most, and how often without publishes while a max age
/// is set.
const RETENTION_EVERY: Duration = Duration::from_secs(1);
const AGE_CHECK_EVERY: Duration = Duration::from_secs(10);
/// How long a tracked offset may go unsaved.
const TRACK_DELAY: Duration = Duration::from_secs(1);
/// Tracked consumer tags kept per stream; the least recently moved goes first.
const MAX_TRACKED: usize = 4096;

/// What recovery read back of a stream: its index.
#[derive(Debug, Default)]
pub struct StreamLog {
    index: StreamIndex,
}

impl StreamLog {
    /// Messages kept.
    pub fn len(&self) -> u64 {
        self.index.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }
}

/// A stored message's index entry: write time, then its filter value.
fn encode_meta(ts: u64, filter: Option<&str>) -> Vec<u8> {
    let mut meta = Vec::with_capacity(8 + filter.map_or(0, str::len));
    meta.extend_from_slice(&ts.to_be_bytes());
    if let Some(f) = filter {
        meta.extend_from_slice(f.as_bytes());
    }
    meta
}

fn decode_meta(meta: &[u8]) -> (u64, Option<&str>) {
    let ts = meta
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u64::from_be_bytes);
    let filter = meta
        .get(8..)
        .filter(|f| !f.is_empty())
        .and_then(|f| std::str::from_utf8(f).ok());
    (ts, filter)
}

/// Read a stream's index back from the log (`max_age`: its retention age, which sets how much
/// time a chunk may span).
pub fn recover(
    store: &dyn Store,
    key: &str,
    max_age: Option<u64>,
) -> Result<StreamLog, StoreError> {
    let mut index = StreamIndex::new(DEFAULT_FILTER_BYTES);
    index.set_chunk_ms(state::chunk_time_for(max_age));
    store.recover(key, &mut |stored| {
        let (ts, filter) = decode_meta(&stored.meta);
        index.push(stored.seq, ts, filter);
    })?;
    Ok(StreamLog { index })
}

/// What reading a consumer's next message found.
enum Fetched {
    Message(u64, Arc<Message>),
    /// Nothing is stored below this offset from the cursor on (a gap, or an unreadable
    /// record).
    Skip(u64),
    End,
}

struct Actor {
    config: QueueConfig,
    resource: String,
    handle: QueueHandle,
    index: StreamIndex,
    /// The newest messages, from offset `tail_first` on.
    tail: VecDeque<Arc<Message>>,
    tail_first: u64,
    tail_bytes: u64,
    consumers: Consumers,
    /// Per consumer: messages read ahead from the log.
    buffers: HashMap<u64, VecDeque<(u64, Arc<Message>)>>,
    /// Tracked offsets (tag → next offset to read), loaded at the first tracked consume.
    tracked: Option<HashMap<Arc<str>, (u64, u64)>>,
    dirty: HashSet<Arc<str>>,
    save_due: Option<Instant>,
    /// Moves of tracked offsets, for evicting the least recent.
    moves: u64,
    retention_checked: Option<Instant>,
    clock: u64,
}

enum Flow {
    Continue,
    Deleted,
    Shutdown,
}

/// Start a stream's actor over what recovery found.
pub fn spawn(config: QueueConfig, recovered: StreamLog) -> QueueHandle {
    let (handle, lanes) = QueueHandle::open(
        &config.name,
        &config.vhost_name,
        config.args.queue_type,
        config.storage.durable,
        &config.args,
    );
    if let Some(bytes) = config.args.stream_segment_bytes.filter(|b| *b > 0) {
        config
            .storage
            .store
            .set_segment_bytes(&config.storage.key, bytes);
    }
    let mut index = recovered.index;
    index.set_filter_bytes(
        config
            .args
            .stream_filter_bytes
            .unwrap_or(DEFAULT_FILTER_BYTES),
    );
    index.set_chunk_ms(state::chunk_time_for(config.args.max_age));
    let resource = format!("queue '{}' in vhost '{}'", config.name, config.vhost_name);
    let tail_first = index.next();
    let actor = Actor {
        config,
        resource,
        handle: handle.clone(),
        index,
        tail: VecDeque::new(),
        tail_first,
        tail_bytes: 0,
        consumers: Consumers::default(),
        buffers: HashMap::new(),
        tracked: None,
        dirty: HashSet::new(),
        save_due: None,
        moves: 0,
        retention_checked: None,
        clock: now_ms(),
    };
    let span = tracing::debug_span!("stream", name = %actor.config.name);
    tokio::spawn(tracing::Instrument::instrument(actor.run(lanes), span));
    handle
}

/// A publish's confirm until it is answered; dropped unanswered (a panic), it nacks.
struct Unanswered(Option<ConfirmTarget>);

impl Drop for Unanswered {
    fn drop(&mut self) {
        if let Some(target) = self.0.take() {
            target.reply(false);
        }
    }
}

fn abandon(control: Control, deleted: bool) {
    if let Control::Publish(p) = control {
        abandon_publish(p, deleted);
    }
}

fn abandon_publish(publish: Publish, deleted: bool) {
    if let (Some(target), true) = (publish.confirm, deleted) {
        target.reply(true);
    }
}

impl Actor {
    async fn run(mut self, mut lanes: Lanes) {
        self.update_gauges();
        let mut controls = Vec::with_capacity(64);
        let mut publishes = Vec::with_capacity(256);
        let mut more = false;
        loop {
            let deadline = self.next_deadline();
            let timer = async move {
                match deadline {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            enum Woken {
                Control(usize),
                Work(usize),
                Timer,
                More,
            }
            let woken = tokio::select! {
                biased;
                n = lanes.control.recv_many(&mut controls, 64) => Woken::Control(n),
                n = lanes.work.recv_many(&mut publishes, 256) => Woken::Work(n),
                () = timer => Woken::Timer,
                () = std::future::ready(()), if more => Woken::More,
            };
            self.clock = now_ms();
            match woken {
                Woken::Control(0) | Woken::Work(0) => return,
                Woken::Control(_) => {
                    if controls.iter().any(Control::observes_publishes) {
                        self.index.begin_batch();
                        while let Ok(p) = lanes.work.try_recv() {
                            self.contained(|a| a.on_publish(p));
                        }
                    }
                    let mut stop = None;
                    for c in controls.drain(..) {
                        match stop {
                            None => match self
                                .contained(|a| a.on_control(c))
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
                        let deleted = matches!(flow, Flow::Deleted);
                        lanes.work.close();
                        lanes.control.close();
                        while let Ok(p) = lanes.work.try_recv() {
                            abandon_publish(p, deleted);
                        }
                        while let Ok(c) = lanes.control.try_recv() {
                            abandon(c, deleted);
                        }
                        return;
                    }
                }
                Woken::Work(_) => {
                    self.index.begin_batch();
                    for p in publishes.drain(..) {
                        self.contained(|a| a.on_publish(p));
                    }
                }
                Woken::Timer | Woken::More => {}
            }
            self.check_retention(false);
            more = self.contained(Self::dispatch).unwrap_or(false);
            if self.save_due.is_some_and(|due| due <= Instant::now()) {
                self.save_offsets();
            }
            self.update_gauges();
        }
    }

    /// Run one command, containing a panic in it (see the classic actor).
    fn contained<R>(&mut self, command: impl FnOnce(&mut Self) -> R) -> Option<R> {
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| command(self))) {
            Ok(result) => Some(result),
            Err(_) => {
                tracing::error!(stream = %self.config.name, "a stream command panicked; the stream goes on without it");
                None
            }
        }
    }

    fn store(&self) -> &dyn Store {
        &*self.config.storage.store
    }

    fn key(&self) -> &str {
        &self.config.storage.key
    }

    fn next_deadline(&self) -> Option<Instant> {
        let age = self
            .config
            .args
            .max_age
            .map(|_| self.retention_checked.unwrap_or_else(Instant::now) + AGE_CHECK_EVERY);
        [self.save_due, age].into_iter().flatten().min()
    }

    fn update_gauges(&self) {
        let g = self.handle.gauges();
        g.ready.store(self.index.len(), Ordering::Relaxed);
        g.unacked
            .store(self.consumers.unacked() as u64, Ordering::Relaxed);
        g.consumers
            .store(self.consumers.list.len() as u64, Ordering::Relaxed);
        self.handle
            .set_stream_snapshot(crate::broker::queue::StreamSnapshot {
                first_offset: self.index.first(),
                last_offset: self
                    .index
                    .next()
                    .checked_sub(1)
                    .filter(|_| !self.index.is_empty()),
                consumers: self
                    .consumers
                    .list
                    .iter()
                    .map(|c| (c.tag.clone(), c.cursor, c.acked))
                    .collect(),
            });
    }

    fn on_publish(
        &mut self,
        Publish {
            message, confirm, ..
        }: Publish,
    ) {
        let mut confirm = Unanswered(confirm);
        crate::broker::fault::check(&message.body, crate::broker::fault::PANIC_QUEUE);
        self.handle
            .gauges()
            .published
            .fetch_add(1, Ordering::Relaxed);
        let offset = self.index.next();
        let filter = string_header(&message.raw_properties, FILTER_VALUE);
        let record = encode_message(&message, RecordMeta::default());
        let meta = encode_meta(self.clock, filter.as_deref());
        if let Err(error) = self.store().append(self.key(), offset, &record, &meta) {
            tracing::error!(stream = %self.config.name, %error, "appending to a stream failed");
            if let Some(target) = confirm.0.take() {
                target.reply(false);
            }
            return;
        }
        self.index.push(offset, self.clock, filter.as_deref());
        if self.tail.is_empty() {
            self.tail_first = offset;
        }
        self.tail_bytes += message.body.len() as u64;
        self.tail.push_back(message);
        while self.tail.len() > TAIL_MESSAGES || self.tail_bytes > TAIL_BYTES {
            let Some(old) = self.tail.pop_front() else {
                break;
            };
            self.tail_bytes -= old.body.len() as u64;
            self.tail_first += 1;
        }
        if let Some(target) = confirm.0.take() {
            self.config.storage.committer.confirm_after_sync(target);
        }
    }

    /// Drop whole segments from the front while the stream is over its size or age (at most
    /// once a second unless `now`).
    fn check_retention(&mut self, now: bool) {
        let args = &self.config.args;
        let (max_bytes, max_age) = (args.max_length_bytes, args.max_age);
        if max_bytes.is_none() && max_age.is_none() {
            return;
        }
        if !now
            && self
                .retention_checked
                .is_some_and(|at| at.elapsed() < RETENTION_EVERY)
        {
            return;
        }
        self.retention_checked = Some(Instant::now());
        let spans = match self.store().segments(self.key()) {
            Ok(spans) => spans,
            Err(error) => {
                tracing::error!(stream = %self.config.name, %error, "reading a stream's segments failed");
                return;
            }
        };
        let Some(cut) = self
            .index
            .retention_cut(&spans, max_bytes, max_age, self.clock)
        else {
            self.note_bytes(spans.iter().map(|s| s.bytes).sum());
            return;
        };
        if let Err(error) = self.store().drop_segments_before(self.key(), cut) {
            tracing::error!(stream = %self.config.name, %error, "removing a stream's old segments failed");
            return;
        }
        self.index.drop_before(cut);
        self.consumers.clamp_cursors(self.index.first());
        while !self.tail.is_empty() && self.tail_first < self.index.first() {
            if let Some(old) = self.tail.pop_front() {
                self.tail_bytes -= old.body.len() as u64;
            }
            self.tail_first += 1;
        }
        let kept = spans
            .iter()
            .filter(|s| s.first_seq >= cut)
            .map(|s| s.bytes)
            .sum();
        self.note_bytes(kept);
    }

    fn note_bytes(&self, bytes: u64) {
        self.handle
            .gauges()
            .ready_bytes
            .store(bytes, Ordering::Relaxed);
    }

    /// The message at consumer `i`'s cursor, from the tail, its read-ahead, or the log.
    fn fetch(&mut self, i: usize) -> Fetched {
        let Some(c) = self.consumers.list.get(i) else {
            return Fetched::End;
        };
        let (id, cursor) = (c.id, c.cursor);
        if cursor >= self.index.next() {
            return Fetched::End;
        }
        if !self.tail.is_empty() && cursor >= self.tail_first {
            return match self.tail.get((cursor - self.tail_first) as usize) {
                Some(m) => Fetched::Message(cursor, m.clone()),
                None => Fetched::End,
            };
        }
        let buffer = self.buffers.entry(id).or_default();
        while buffer.front().is_some_and(|(o, _)| *o < cursor) {
            buffer.pop_front();
        }
        if let Some((o, m)) = buffer.front() {
            return Fetched::Message(*o, m.clone());
        }
        let to = if self.tail.is_empty() {
            self.index.next()
        } else {
            self.tail_first
        };
        let (mut count, mut bytes) = (0usize, 0u64);
        let mut read: VecDeque<(u64, Arc<Message>)> = VecDeque::new();
        let result =
            self.config
                .storage
                .store
                .read_range(self.key(), cursor, to, &mut |offset, record| {
                    bytes += record.len() as u64;
                    count += 1;
                    if let Some(m) = decode_message(&record) {
                        read.push_back((offset, Arc::new(m)));
                    }
                    count < READ_MESSAGES && bytes < READ_BYTES
                });
        if let Err(error) = &result {
            tracing::error!(stream = %self.config.name, %error, offset = cursor, "reading a stream failed; skipping past it");
        }
        let buffer = self.buffers.entry(id).or_default();
        *buffer = read;
        match buffer.front() {
            Some((o, m)) => Fetched::Message(*o, m.clone()),
            // Nothing readable before the next good record: skip one unreadable record, or
            // the whole gap when the read found nothing at all.
            None if result.is_err() => Fetched::Skip(cursor + 1),
            None => Fetched::Skip(to),
        }
    }

    /// Hand messages to consumers with credit, a bounded share each per round; returns
    /// whether some consumer has more to read now.
    fn dispatch(&mut self) -> bool {
        let n = self.consumers.list.len();
        if n == 0 {
            return false;
        }
        let mut more = false;
        for k in 0..n {
            let i = (self.consumers.turn + k) % n;
            let mut share = ROUND_SHARE;
            while let Some(c) = self.consumers.list.get(i) {
                if !c.has_credit() || c.cursor >= self.index.next() {
                    break;
                }
                if share == 0 {
                    more = true;
                    break;
                }
                share -= 1;
                if let Some(to) = c
                    .filter
                    .as_ref()
                    .and_then(|f| self.index.skip_unmatched(c.cursor, f))
                {
                    self.consumers.list[i].cursor = to;
                    continue;
                }
                let (offset, message) = match self.fetch(i) {
                    Fetched::End => break,
                    Fetched::Skip(to) => {
                        self.consumers.list[i].cursor = to;
                        continue;
                    }
                    Fetched::Message(offset, message) => (offset, message),
                };
                let c = &self.consumers.list[i];
                if let Some(filter) = &c.filter {
                    let value = string_header(&message.raw_properties, FILTER_VALUE);
                    if !filter.matches(value.as_deref()) {
                        self.consumers.list[i].cursor = offset + 1;
                        continue;
                    }
                }
                // Channel-wide credit, should global QoS be set after the consume.
                if !c.limiter.try_acquire() {
                    break;
                }
                let (channel, tag, consumer_id, sink) =
                    (c.channel, c.tag.clone(), c.id, c.sink.clone());
                let Some(delivery_id) = self.consumers.delivered(i, offset) else {
                    break;
                };
                let mut out = (*message).clone();
                if let Some(raw) = with_long_header(
                    &message.raw_properties,
                    OFFSET_HEADER,
                    i64::try_from(offset).unwrap_or(i64::MAX),
                ) {
                    out.raw_properties = raw;
                }
                let gauges = self.handle.gauges();
                gauges.delivered.fetch_add(1, Ordering::Relaxed);
                let _ = sink.send(ClientEvent::Deliver(Delivery {
                    channel,
                    consumer_tag: tag,
                    consumer_id,
                    queue: self.handle.clone(),
                    seq: delivery_id,
                    message: Arc::new(out),
                    redelivered: false,
                    no_ack: false,
                }));
            }
        }
        self.consumers.turn = (self.consumers.turn + 1) % n;
        more
    }

    fn tracked(&mut self) -> &mut HashMap<Arc<str>, (u64, u64)> {
        if self.tracked.is_none() {
            let prefix = format!("{}\0", self.key());
            let mut map = HashMap::new();
            match self.store().definitions(OFFSETS) {
                Ok(all) => {
                    for (name, value) in all {
                        let Some(tag) = name.strip_prefix(&prefix) else {
                            continue;
                        };
                        if let Some(next) = value
                            .get(..8)
                            .and_then(|b| b.try_into().ok())
                            .map(u64::from_be_bytes)
                        {
                            map.insert(Arc::from(tag), (next, 0));
                        }
                    }
                }
                Err(error) => {
                    tracing::error!(stream = %self.config.name, %error, "reading tracked offsets failed")
                }
            }
            self.tracked = Some(map);
        }
        self.tracked.get_or_insert_with(HashMap::new)
    }

    fn offset_key(&self, tag: &str) -> String {
        format!("{}\0{tag}", self.key())
    }

    /// Note that consumer `i` has processed up to its acked offset.
    fn track(&mut self, i: usize) {
        let Some(c) = self.consumers.list.get(i) else {
            return;
        };
        let (Some(acked), tag) = (c.acked, c.tag.clone()) else {
            return;
        };
        self.moves += 1;
        let moves = self.moves;
        let tracked = self.tracked();
        tracked.insert(tag.clone(), (acked + 1, moves));
        if tracked.len() > MAX_TRACKED {
            if let Some(oldest) = tracked
                .iter()
                .min_by_key(|(_, (_, at))| *at)
                .map(|(t, _)| t.clone())
            {
                tracked.remove(&oldest);
                let key = self.offset_key(&oldest);
                self.dirty.remove(&oldest);
                if let Err(error) = self.store().remove_definition(OFFSETS, &key) {
                    tracing::error!(stream = %self.config.name, %error, "forgetting a tracked offset failed");
                }
            }
        }
        self.dirty.insert(tag);
        self.save_due
            .get_or_insert_with(|| Instant::now() + TRACK_DELAY);
    }

    fn save_offsets(&mut self) {
        self.save_due = None;
        let dirty: Vec<Arc<str>> = self.dirty.drain().collect();
        for tag in dirty {
            let Some((next, _)) = self.tracked.as_ref().and_then(|t| t.get(&tag)).copied() else {
                continue;
            };
            let key = self.offset_key(&tag);
            if let Err(error) = self
                .store()
                .put_definition(OFFSETS, &key, &next.to_be_bytes())
            {
                tracing::error!(stream = %self.config.name, %error, "saving a tracked offset failed");
            }
        }
    }

    fn forget_offsets(&mut self) {
        let tags: Vec<Arc<str>> = self.tracked().keys().cloned().collect();
        for tag in tags {
            let key = self.offset_key(&tag);
            if let Err(error) = self.store().remove_definition(OFFSETS, &key) {
                tracing::error!(stream = %self.config.name, %error, "forgetting a tracked offset failed");
            }
        }
        self.dirty.clear();
        self.save_due = None;
    }

    fn on_consume(&mut self, req: crate::broker::queue::ConsumeRequest) -> Result<(), AmqpError> {
        let args = consumer_args::parse(
            &req.arguments,
            &req.tag,
            (req.prefetch, req.no_ack, req.limiter.limit() != 0),
            &self.resource,
        )?;
        let stored = if args.tracking && (!args.offset_given || args.tracking_asked) {
            self.tracked().get(&req.tag).map(|(next, _)| *next)
        } else {
            None
        };
        // A tracked consumer seen for the first time starts where it asked (null: first).
        let cursor = match stored {
            Some(next) => next.clamp(self.index.first(), self.index.next()),
            None => self.index.resolve(args.offset, self.clock),
        };
        self.consumers.add(StreamConsumer {
            id: req.consumer_id,
            channel: req.channel,
            tag: req.tag,
            sink: req.sink,
            limiter: req.limiter,
            prefetch: req.prefetch,
            unacked: 0,
            in_flight: 0,
            cursor,
            filter: args.filter,
            tracking: args.tracking,
            acked: None,
        });
        Ok(())
    }

    fn cancel_all_consumers(&mut self) {
        for c in &self.consumers.list {
            let _ = c.sink.send(ClientEvent::ConsumerCancelled {
                channel: c.channel,
                consumer_tag: c.tag.clone(),
            });
        }
    }

    fn on_control(&mut self, control: Control) -> Flow {
        match control {
            Control::Consume(req, reply) => {
                let _ = reply.send(self.on_consume(req));
            }
            Control::Cancel {
                consumer_id, reply, ..
            } => {
                self.consumers.remove(consumer_id);
                self.buffers.remove(&consumer_id);
                if !self.dirty.is_empty() {
                    self.save_offsets();
                }
                if let Some(reply) = reply {
                    let _ = reply.send(());
                }
            }
            Control::Ack(ids) => {
                let acked = ids.len() as u64;
                for i in self.consumers.settle(&ids, true) {
                    self.track(i);
                }
                self.handle
                    .gauges()
                    .acked
                    .fetch_add(acked, Ordering::Relaxed);
            }
            Control::Reject(ids) | Control::Requeue(ids) | Control::Release(ids) => {
                self.consumers.settle(&ids, false);
            }
            Control::Credit { consumer_id, n } => self.consumers.credit(consumer_id, n),
            Control::Wake | Control::Touch | Control::Forget(_) => {}
            // Refused before they get here (RabbitMQ's 540s); answered as empty regardless.
            Control::Get { reply, .. } => {
                let _ = reply.send(None);
            }
            Control::Purge(reply) => {
                let _ = reply.send(0);
            }
            Control::Publish(p) => self.on_publish(p),
            Control::Sync(target) => self.config.storage.committer.confirm_after_sync(target),
            Control::Delete {
                if_unused,
                if_empty,
                reply,
            } => {
                if if_unused && !self.consumers.list.is_empty() {
                    let _ = reply.send(Err(AmqpError::precondition_failed(format!(
                        "{} in use",
                        self.resource
                    ))));
                    return Flow::Continue;
                }
                if if_empty && !self.index.is_empty() {
                    let _ = reply.send(Err(AmqpError::precondition_failed(format!(
                        "{} not empty",
                        self.resource
                    ))));
                    return Flow::Continue;
                }
                self.cancel_all_consumers();
                self.forget_offsets();
                let count = u32::try_from(self.index.len()).unwrap_or(u32::MAX);
                let _ = reply.send(Ok(count));
                return Flow::Deleted;
            }
            Control::Stats(reply) => {
                let _ = reply.send(QueueStats {
                    messages: u32::try_from(self.index.len()).unwrap_or(u32::MAX),
                    unacked: self.consumers.unacked() as u32,
                    consumers: self.consumers.list.len() as u32,
                });
            }
            Control::Shutdown => {
                self.save_offsets();
                return Flow::Shutdown;
            }
            Control::Policy(args) => {
                if let Some(bytes) = args.stream_segment_bytes.filter(|b| *b > 0) {
                    self.store().set_segment_bytes(self.key(), bytes);
                }
                self.index.set_chunk_ms(state::chunk_time_for(args.max_age));
                self.config.args = *args;
                self.check_retention(true);
            }
        }
        Flow::Continue
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_entries_round_trip() {
        let meta = encode_meta(1234, Some("ca"));
        assert_eq!(decode_meta(&meta), (1234, Some("ca")));
        assert_eq!(decode_meta(&encode_meta(5, None)), (5, None));
        assert_eq!(decode_meta(b"abc"), (0, None));
    }
}
