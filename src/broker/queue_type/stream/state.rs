//! A stream's state without I/O: the chunk index (offsets, times and Bloom filters of runs of
//! messages), its consumers with their cursors and credit, the deliveries they have not
//! settled, and the retention decision. Time is passed in.
//!
//! Invariants:
//! - Offsets are dense from `first` to `next` (exclusive), save for records a damaged segment
//!   lost; chunks cover them in order, each [`CHUNK_SPAN`] offsets at most.
//! - A consumer's unsettled deliveries are at most its prefetch; each delivery id is in
//!   `outstanding` until it is acked, nacked, rejected, or its consumer goes.
//! - Memory per stored message is a chunk entry's share: about a quarter of a byte.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use super::consumer_args::{Filter, OffsetSpec};
use crate::broker::queue::{ChannelLimiter, ClientSink};
use crate::store::SegmentSpan;

/// Messages per chunk of the index.
pub const CHUNK_SPAN: u32 = 256;

/// Bloom filter bytes when the stream does not say (RabbitMQ's default).
pub const DEFAULT_FILTER_BYTES: u8 = 16;

/// The deliveries a consumer may have in its connection's inbox and writer at once (on top of
/// prefetch, which bounds what the client holds).
pub const IN_FLIGHT_WINDOW: u32 = crate::broker::queue::state::IN_FLIGHT_WINDOW;

/// A run of consecutive offsets, with what lets a reader skip it unread.
#[derive(Debug, Clone)]
pub struct Chunk {
    /// Its first offset.
    pub first: u64,
    /// Messages in it.
    pub count: u32,
    /// Write time of its first message, ms since the epoch.
    pub first_ts: u64,
    /// Write time of its last message.
    pub last_ts: u64,
    /// Bloom filter of its messages' filter values (absent until one has a value).
    bloom: Option<Box<[u8]>>,
    /// Whether some message in it has no filter value.
    unfiltered: bool,
}

fn hash(value: &str, seed: u64) -> u64 {
    value.bytes().fold(0xcbf2_9ce4_8422_2325u64 ^ seed, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

impl Chunk {
    fn bits(value: &str, len: usize) -> [usize; 2] {
        let bits = len * 8;
        [
            (hash(value, 0) % bits as u64) as usize,
            (hash(value, 0x9e37_79b9_7f4a_7c15) % bits as u64) as usize,
        ]
    }

    fn add(&mut self, ts: u64, filter_value: Option<&str>, filter_bytes: u8) {
        self.count += 1;
        self.last_ts = self.last_ts.max(ts);
        match filter_value {
            Some(v) => {
                let len = usize::from(filter_bytes.max(1));
                let bloom = self
                    .bloom
                    .get_or_insert_with(|| vec![0u8; len].into_boxed_slice());
                for bit in Self::bits(v, bloom.len()) {
                    if let Some(byte) = bloom.get_mut(bit / 8) {
                        *byte |= 1 << (bit % 8);
                    }
                }
            }
            None => self.unfiltered = true,
        }
    }

    /// Whether a reader with `filter` may find a message it wants here (false positives
    /// possible, false negatives never).
    pub fn may_match(&self, filter: &Filter) -> bool {
        if filter.match_unfiltered && self.unfiltered {
            return true;
        }
        let Some(bloom) = &self.bloom else {
            return false;
        };
        filter.values.iter().any(|v| {
            Self::bits(v, bloom.len()).iter().all(|bit| {
                bloom
                    .get(bit / 8)
                    .is_some_and(|byte| byte & (1 << (bit % 8)) != 0)
            })
        })
    }

    /// One past its last offset.
    pub fn end(&self) -> u64 {
        self.first + u64::from(self.count)
    }
}

/// The offsets a stream holds and the chunks that index them.
#[derive(Debug, Default)]
pub struct StreamIndex {
    first: u64,
    next: u64,
    chunks: VecDeque<Chunk>,
    /// Where the latest batch of publishes began (`last` reads from here).
    last_batch: Option<u64>,
    filter_bytes: u8,
    /// A chunk spans at most this much write time, so whole segments can age out:
    /// [`chunk_time_for`] the stream's max age.
    chunk_ms: u64,
}

/// Write time a chunk spans at most: a quarter of the max age (so age retention is within a
/// quarter of exact), a minute without one. A trickle of messages costs at most one chunk a
/// minute (about 90 KB a day), however slow.
pub fn chunk_time_for(max_age_ms: Option<u64>) -> u64 {
    max_age_ms.map_or(60_000, |age| (age / 4).clamp(10, 60_000))
}

impl StreamIndex {
    /// An empty stream whose chunks' Bloom filters take `filter_bytes`.
    pub fn new(filter_bytes: u8) -> Self {
        Self {
            filter_bytes,
            chunk_ms: chunk_time_for(None),
            ..Self::default()
        }
    }

    /// Bound the write time of chunks made from now on (see [`chunk_time_for`]).
    pub fn set_chunk_ms(&mut self, ms: u64) {
        self.chunk_ms = ms.max(1);
    }

    /// Size the Bloom filters of chunks made from now on.
    pub fn set_filter_bytes(&mut self, bytes: u8) {
        self.filter_bytes = bytes;
    }

    /// The oldest offset kept.
    pub fn first(&self) -> u64 {
        self.first
    }

    /// The offset the next message gets.
    pub fn next(&self) -> u64 {
        self.next
    }

    /// Messages kept.
    pub fn len(&self) -> u64 {
        self.next - self.first
    }

    /// Whether it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Chunks in the index (for tests and figures).
    pub fn chunk_count(&self) -> usize {
        self.chunks.len()
    }

    /// Note the start of a batch of publishes.
    pub fn begin_batch(&mut self) {
        self.last_batch = Some(self.next);
    }

    /// Index a message at `offset` (recovery: offsets may skip what a damaged segment lost;
    /// appends: `offset` is [`StreamIndex::next`]).
    pub fn push(&mut self, offset: u64, ts: u64, filter_value: Option<&str>) {
        if self.chunks.is_empty() && self.next == self.first {
            self.first = offset;
        }
        let fits = self.chunks.back().is_some_and(|c| {
            c.count < CHUNK_SPAN
                && c.end() == offset
                && ts < c.first_ts.saturating_add(self.chunk_ms)
        });
        if !fits {
            self.chunks.push_back(Chunk {
                first: offset,
                count: 0,
                first_ts: ts,
                last_ts: ts,
                bloom: None,
                unfiltered: false,
            });
        }
        if let Some(chunk) = self.chunks.back_mut() {
            chunk.add(ts, filter_value, self.filter_bytes);
        }
        self.next = offset.saturating_add(1);
    }

    /// Start numbering at `offset` (an emptied stream keeps counting where it was).
    pub fn continue_at(&mut self, offset: u64) {
        if self.is_empty() {
            self.first = offset;
            self.next = offset;
        }
    }

    fn chunk_of(&self, offset: u64) -> Option<&Chunk> {
        let i = self.chunks.partition_point(|c| c.first <= offset);
        self.chunks
            .get(i.checked_sub(1)?)
            .filter(|c| offset < c.end())
    }

    /// Where a reader with `filter` at `offset` can skip to without reading: the end of the
    /// chunk holding `offset` when nothing in it can match.
    pub fn skip_unmatched(&self, offset: u64, filter: &Filter) -> Option<u64> {
        let chunk = self.chunk_of(offset)?;
        (!chunk.may_match(filter)).then(|| chunk.end())
    }

    /// The offset a consumer starts at; `now` in ms since the epoch.
    pub fn resolve(&self, spec: OffsetSpec, now: u64) -> u64 {
        let clamp = |o: u64| o.clamp(self.first, self.next);
        match spec {
            OffsetSpec::First => self.first,
            OffsetSpec::Next => self.next,
            OffsetSpec::Last => match self.last_batch {
                Some(at) if at < self.next => clamp(at),
                _ => clamp(self.next.saturating_sub(1)),
            },
            OffsetSpec::Offset(o) if o >= 0 => clamp(o as u64),
            OffsetSpec::Offset(back) => clamp(self.next.saturating_sub(back.unsigned_abs())),
            OffsetSpec::Timestamp(at) => self.start_at_time(at),
            OffsetSpec::Ago(ms) => self.start_at_time(now.saturating_sub(ms)),
        }
    }

    /// The first chunk with a message written at or after `at` (it may begin a little
    /// earlier, as RabbitMQ's does).
    fn start_at_time(&self, at: u64) -> u64 {
        self.chunks
            .iter()
            .find(|c| c.last_ts >= at)
            .map_or(self.next, |c| c.first.max(self.first))
    }

    /// The newest write time among the messages up to `offset` (conservative: a chunk's
    /// newest time counts for all of it).
    fn newest_through(&self, offset: u64) -> u64 {
        let i = self.chunks.partition_point(|c| c.first <= offset);
        self.chunks
            .get(i.saturating_sub(1))
            .map_or(0, |c| c.last_ts)
    }

    /// Retention: the first offset to keep, if whole segments at the front must go for
    /// `max_bytes` or `max_age_ms`; the newest segment always stays.
    pub fn retention_cut(
        &self,
        spans: &[SegmentSpan],
        max_bytes: Option<u64>,
        max_age_ms: Option<u64>,
        now: u64,
    ) -> Option<u64> {
        let mut remaining: u64 = spans.iter().map(|s| s.bytes).sum();
        let mut cut = None;
        for pair in spans.windows(2) {
            let [oldest, following] = pair else {
                break;
            };
            let too_big = max_bytes.is_some_and(|max| remaining > max);
            let too_old = max_age_ms
                .is_some_and(|age| self.newest_through(oldest.last_seq).saturating_add(age) < now);
            if !(too_big || too_old) {
                break;
            }
            remaining = remaining.saturating_sub(oldest.bytes);
            cut = Some(following.first_seq);
        }
        cut
    }

    /// Forget everything below `offset` (its segments are gone).
    pub fn drop_before(&mut self, offset: u64) {
        while self.chunks.front().is_some_and(|c| c.end() <= offset) {
            self.chunks.pop_front();
        }
        if let Some(c) = self.chunks.front_mut() {
            if c.first < offset {
                let cut = (offset - c.first) as u32;
                c.count -= cut.min(c.count);
                c.first = offset;
            }
        }
        self.first = self.first.max(offset).min(self.next);
    }
}

/// A consumer of a stream.
#[derive(Debug)]
pub struct StreamConsumer {
    /// Unique id.
    pub id: u64,
    /// Its channel.
    pub channel: u16,
    /// Its tag.
    pub tag: Arc<str>,
    /// Where its deliveries go.
    pub sink: ClientSink,
    /// Its channel's shared limiter.
    pub limiter: Arc<ChannelLimiter>,
    /// Unsettled deliveries it may hold.
    pub prefetch: u32,
    /// Unsettled deliveries it holds.
    pub unacked: u32,
    /// Deliveries not yet written to its socket.
    pub in_flight: u32,
    /// The next offset it reads.
    pub cursor: u64,
    /// What it reads.
    pub filter: Option<Filter>,
    /// Whether its offset is tracked under its tag.
    pub tracking: bool,
    /// The highest offset it has acked.
    pub acked: Option<u64>,
}

impl StreamConsumer {
    /// Whether it can take a delivery now (before the channel-wide limiter).
    pub fn has_credit(&self) -> bool {
        self.unacked < self.prefetch && self.in_flight < IN_FLIGHT_WINDOW
    }
}

/// A stream's consumers and their unsettled deliveries.
#[derive(Debug, Default)]
pub struct Consumers {
    /// In attach order.
    pub list: Vec<StreamConsumer>,
    /// Delivery id → (consumer id, offset).
    outstanding: HashMap<u64, (u64, u64)>,
    next_delivery: u64,
    /// Where a round of deliveries starts (round robin).
    pub turn: usize,
}

impl Consumers {
    /// Add a consumer.
    pub fn add(&mut self, consumer: StreamConsumer) {
        self.list.push(consumer);
    }

    /// Remove a consumer and forget its unsettled deliveries; returns it.
    pub fn remove(&mut self, id: u64) -> Option<StreamConsumer> {
        let i = self.list.iter().position(|c| c.id == id)?;
        self.outstanding.retain(|_, (owner, _)| *owner != id);
        Some(self.list.remove(i))
    }

    /// Record a delivery of `offset` to consumer `i`; returns its delivery id.
    pub fn delivered(&mut self, i: usize, offset: u64) -> Option<u64> {
        let c = self.list.get_mut(i)?;
        c.unacked += 1;
        c.in_flight += 1;
        c.cursor = offset + 1;
        self.next_delivery += 1;
        self.outstanding.insert(self.next_delivery, (c.id, offset));
        Some(self.next_delivery)
    }

    /// Settle deliveries (any of ack, nack, reject: a stream only returns credit). `acked`
    /// marks them processed for offset tracking. Returns the consumers whose tracked offset
    /// moved.
    pub fn settle(&mut self, ids: &[u64], acked: bool) -> Vec<usize> {
        let mut moved = Vec::new();
        for id in ids {
            let Some((owner, offset)) = self.outstanding.remove(id) else {
                continue;
            };
            let Some(i) = self.list.iter().position(|c| c.id == owner) else {
                continue;
            };
            let c = &mut self.list[i];
            c.unacked = c.unacked.saturating_sub(1);
            if acked && c.tracking && c.acked.is_none_or(|a| a < offset) {
                c.acked = Some(offset);
                if !moved.contains(&i) {
                    moved.push(i);
                }
            }
        }
        moved
    }

    /// Return in-flight credit.
    pub fn credit(&mut self, id: u64, n: u32) {
        if let Some(c) = self.list.iter_mut().find(|c| c.id == id) {
            c.in_flight = c.in_flight.saturating_sub(n);
        }
    }

    /// Unsettled deliveries.
    pub fn unacked(&self) -> usize {
        self.outstanding.len()
    }

    /// Move every cursor below `first` up to it (retention removed what they were to read).
    pub fn clamp_cursors(&mut self, first: u64) {
        for c in &mut self.list {
            c.cursor = c.cursor.max(first);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filled(n: u64, ts: impl Fn(u64) -> u64) -> StreamIndex {
        let mut index = StreamIndex::new(DEFAULT_FILTER_BYTES);
        for o in 0..n {
            index.push(o, ts(o), None);
        }
        index
    }

    #[test]
    fn resolves_offsets_as_rabbitmq_and_lavinmq() {
        let mut index = filled(1000, |o| 1_000 + o);
        assert_eq!(index.resolve(OffsetSpec::First, 0), 0);
        assert_eq!(index.resolve(OffsetSpec::Next, 0), 1000);
        assert_eq!(index.resolve(OffsetSpec::Last, 0), 999);
        index.begin_batch();
        for o in 1000..1010 {
            index.push(o, 2_000 + o, None);
        }
        assert_eq!(index.resolve(OffsetSpec::Last, 0), 1000);
        assert_eq!(index.resolve(OffsetSpec::Offset(5), 0), 5);
        assert_eq!(index.resolve(OffsetSpec::Offset(99_999), 0), 1010);
        assert_eq!(index.resolve(OffsetSpec::Offset(-10), 0), 1000);
        assert_eq!(index.resolve(OffsetSpec::Offset(-100_000), 0), 0);
        // The chunk holding the time: 256-message chunks.
        assert_eq!(index.resolve(OffsetSpec::Timestamp(1_300), 0), 256);
        assert_eq!(index.resolve(OffsetSpec::Timestamp(99_999), 0), 1010);
        assert_eq!(index.resolve(OffsetSpec::Ago(1_000), 2_300), 256);
        assert_eq!(index.chunk_count(), 4);
    }

    #[test]
    fn bloom_filters_skip_chunks_that_cannot_match() {
        let mut index = StreamIndex::new(DEFAULT_FILTER_BYTES);
        for o in 0..512u64 {
            let value = if o < 256 { "ca" } else { "tx" };
            index.push(o, 0, Some(value));
        }
        index.push(512, 0, None);
        let tx = Filter {
            values: vec![Arc::from("tx")],
            match_unfiltered: false,
        };
        assert_eq!(index.skip_unmatched(3, &tx), Some(256));
        assert_eq!(index.skip_unmatched(300, &tx), None);
        assert_eq!(index.skip_unmatched(512, &tx), Some(513));
        let unfiltered = Filter {
            values: vec![],
            match_unfiltered: true,
        };
        assert_eq!(index.skip_unmatched(0, &unfiltered), Some(256));
        assert_eq!(index.skip_unmatched(512, &unfiltered), None);
    }

    #[test]
    fn retention_removes_whole_segments_from_the_front() {
        let index = filled(300, |o| o * 10);
        let spans = [
            SegmentSpan {
                first_seq: 0,
                last_seq: 99,
                bytes: 1000,
            },
            SegmentSpan {
                first_seq: 100,
                last_seq: 199,
                bytes: 1000,
            },
            SegmentSpan {
                first_seq: 200,
                last_seq: 299,
                bytes: 1000,
            },
        ];
        assert_eq!(index.retention_cut(&spans, Some(3000), None, 0), None);
        assert_eq!(index.retention_cut(&spans, Some(2500), None, 0), Some(100));
        assert_eq!(index.retention_cut(&spans, Some(1), None, 0), Some(200));
        // By age: chunk 0 covers offsets 0..256, newest time 2550.
        assert_eq!(index.retention_cut(&spans, None, Some(100), 2_000), None);
        assert_eq!(
            index.retention_cut(&spans, None, Some(100), 2_651),
            Some(200)
        );
        let mut index = index;
        index.drop_before(200);
        assert_eq!((index.first(), index.next(), index.len()), (200, 300, 100));
        assert_eq!(index.resolve(OffsetSpec::First, 0), 200);
        assert_eq!(index.resolve(OffsetSpec::Offset(3), 0), 200);
    }

    #[test]
    fn settling_returns_credit_and_moves_tracked_offsets() {
        let (sink, _rx) = tokio::sync::mpsc::unbounded_channel();
        let mut consumers = Consumers::default();
        for (id, tracking) in [(1, true), (2, false)] {
            consumers.add(StreamConsumer {
                id,
                channel: 1,
                tag: Arc::from("t"),
                sink: sink.clone(),
                limiter: Arc::default(),
                prefetch: 2,
                unacked: 0,
                in_flight: 0,
                cursor: 0,
                filter: None,
                tracking,
                acked: None,
            });
        }
        let a = consumers.delivered(0, 0).unwrap();
        let b = consumers.delivered(0, 1).unwrap();
        let c = consumers.delivered(1, 0).unwrap();
        assert!(!consumers.list[0].has_credit());
        assert_eq!(consumers.unacked(), 3);
        assert_eq!(consumers.settle(&[b], true), vec![0]);
        assert_eq!(consumers.list[0].acked, Some(1));
        // An older ack never moves a tracked offset back; a nack returns credit only.
        assert!(consumers.settle(&[a], true).is_empty());
        assert!(consumers.settle(&[c], false).is_empty());
        assert_eq!(consumers.list[1].unacked, 0);
        assert!(consumers.settle(&[c], true).is_empty(), "settled once");
        consumers.delivered(1, 1);
        assert!(consumers.remove(2).is_some());
        assert_eq!(consumers.unacked(), 0);
    }
}
