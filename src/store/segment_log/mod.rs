//! The message log: per queue, a directory of append-only segment files.
//!
//! A segment (`{first seq:020}.seg`) starts with a magic line, then records:
//! `[len u32][crc32c u32][seq u64][flags u8][meta len u16][meta][record]`, `len` counting what
//! follows the checksum, the checksum covering the same bytes. Settlements go to the segment's
//! ack file (`{first seq:020}.ack`), fixed 17-byte entries `[seq u64][kind u8][value u32]
//! [crc32c u32]`: a removal, or a delivery count. Nothing is ever rewritten in place. Beside
//! each segment its summary (`{first seq:020}.idx`, [`summary`]) lists every record's sequence,
//! length and metadata, finished when the segment is sealed.
//!
//! Invariants:
//! - Sequence numbers rise through a queue's records, across its segments; a queue appends only
//!   to its newest segment, opened in this process (a recovered segment is never written again,
//!   so a torn tail is only ever at the end of a file a crash cut short).
//! - A segment is deleted once every record in it is settled; one that is mostly settled is
//!   rewritten with only its live records (same name, so lookups by sequence still find it).
//! - Memory per stored message is a little over two bytes of index ([`index`]); bodies live
//!   in the files (and the page cache).
//! - `sync_messages` makes every append made before it durable: one fdatasync per file written
//!   since the last sync, whatever the number of messages in it (group commit).
//!
//! Recovery indexes a sealed segment from its summary without reading its records (their
//! checksums are checked whenever they are read), and reads in full, checking every checksum,
//! the newest segment and any whose summary does not check out. A torn tail is cut off; a
//! segment read in full that is corrupt before its end is moved to `quarantine/` with a log
//! line, and the queue comes back with everything else.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use async_trait::async_trait;
use bytes::Bytes;

use super::{MessageLog, SegmentSpan, StoreError, StoredMessage};

mod compaction;
mod format;
mod index;
mod recovery;
mod summary;

use format::decode_record;
pub use format::{encode_ack, encode_record, ACK_DELIVERED, ACK_ENTRY, ACK_REMOVED, MAGIC};
use index::{Located, SegmentIndex};
use summary::SummaryWriter;
pub use summary::{encode_summary, SUMMARY_MAGIC};

/// A segment is rewritten when at least this much of it is dead and the dead part is at least
/// three quarters of it.
const COMPACT_MIN_DEAD: u64 = 1 << 20;
/// Reads of neighbouring records are merged up to this many bytes.
const READ_SPAN: u64 = 1 << 20;
/// Default segment size.
pub const DEFAULT_SEGMENT_BYTES: u64 = 8 * 1024 * 1024;
/// Name of the file in a queue's directory that holds the queue's key.
const QUEUE_FILE: &str = "QUEUE";

fn io(e: std::io::Error) -> StoreError {
    StoreError::Io(e)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Space and sync figures of a log.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogStats {
    /// Queues with records on disk.
    pub queues: u64,
    /// Segment files.
    pub segments: u64,
    /// Bytes in segment files.
    pub bytes: u64,
    /// Bytes of segment files held by settled records (what compaction and deletion give back).
    pub reclaimable_bytes: u64,
    /// Syncs run.
    pub syncs: u64,
    /// Files made durable by those syncs (a sync covers every file written since the last).
    pub synced_files: u64,
    /// Time spent in syncs, microseconds.
    pub sync_micros: u64,
    /// Segments moved to `quarantine/` at recovery.
    pub quarantined: u64,
}

/// One queue's space in the log.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueLogStats {
    /// Segment files.
    pub segments: u64,
    /// Bytes in them.
    pub bytes: u64,
    /// Bytes held by settled records.
    pub reclaimable_bytes: u64,
}

#[derive(Debug)]
struct Segment {
    file: Arc<File>,
    file_id: u64,
    size: u64,
    /// Every record appended or recovered, in sequence order; settled ones are marked.
    index: SegmentIndex,
    live: u32,
    live_bytes: u64,
    acks: Option<Arc<File>>,
    /// Delivery counts recorded for records still live.
    marks: HashMap<u64, u32>,
    /// The summary being written, while this is the segment appended to.
    summary: Option<SummaryWriter>,
}

impl Segment {
    fn position(&self, seq: u64) -> Option<usize> {
        self.index.find(seq).map(|(i, _)| i)
    }

    fn dead_bytes(&self) -> u64 {
        self.size
            .saturating_sub(MAGIC.len() as u64)
            .saturating_sub(self.live_bytes)
    }
}

/// One queue's records.
#[derive(Debug)]
struct QueueLog {
    dir: PathBuf,
    /// Loaded from disk (or created in this process).
    loaded: bool,
    segments: BTreeMap<u64, Segment>,
    /// The segment appended to, created in this process.
    active: Option<u64>,
}

/// Files written since the last sync, and directories whose entries changed.
#[derive(Debug, Default)]
struct Unsynced {
    files: HashMap<u64, Arc<File>>,
    dirs: HashSet<PathBuf>,
}

/// The segment-file message log of a data directory.
#[derive(Debug)]
pub struct SegmentLog {
    root: PathBuf,
    segment_bytes: u64,
    queues: Mutex<HashMap<String, Arc<Mutex<QueueLog>>>>,
    /// Queues whose segments roll at their own size (streams).
    segment_sizes: Mutex<HashMap<String, u64>>,
    recovered: Mutex<HashSet<String>>,
    unsynced: Mutex<Unsynced>,
    next_file_id: AtomicU64,
    syncs: AtomicU64,
    synced_files: AtomicU64,
    sync_micros: AtomicU64,
    quarantined: AtomicU64,
    trash_counter: AtomicU64,
}

/// A stable 64-bit hash (FNV-1a) of a queue key, for its directory name.
fn key_hash(key: &str) -> u64 {
    key.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn segment_name(id: u64) -> String {
    format!("{id:020}.seg")
}

fn ack_name(id: u64) -> String {
    format!("{id:020}.ack")
}

fn summary_name(id: u64) -> String {
    format!("{id:020}.idx")
}

/// Add a record to a segment's summary; on failure the summary goes (recovery then reads the
/// segment in full), never the append.
fn summarize(segment: &mut Segment, seq: u64, len: u32, meta: &[u8]) {
    if let Some(mut w) = segment.summary.take() {
        match w.add(seq, len, meta) {
            Ok(()) => segment.summary = Some(w),
            Err(error) => {
                tracing::warn!(%error, "writing a segment summary failed; recovery will read the segment");
                w.discard();
            }
        }
    }
}

/// Finish a sealed segment's summary.
fn seal_summary(segment: &mut Segment) {
    if let Some(w) = segment.summary.take() {
        if let Err(error) = w.finish(segment.size) {
            tracing::warn!(%error, "writing a segment summary failed; recovery will read the segment");
        }
    }
}

fn fsync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io)
}

impl SegmentLog {
    /// Open (or create) the log under `root` with segments of `segment_bytes`. Queue
    /// directories are found now and read when first used.
    pub fn open(root: &Path, segment_bytes: u64) -> Result<Self, StoreError> {
        std::fs::create_dir_all(root).map_err(io)?;
        let log = Self {
            root: root.to_owned(),
            segment_bytes: segment_bytes.clamp(64 * 1024, 1 << 30),
            queues: Mutex::default(),
            segment_sizes: Mutex::default(),
            recovered: Mutex::default(),
            unsynced: Mutex::default(),
            next_file_id: AtomicU64::new(1),
            syncs: AtomicU64::new(0),
            synced_files: AtomicU64::new(0),
            sync_micros: AtomicU64::new(0),
            quarantined: AtomicU64::new(0),
            trash_counter: AtomicU64::new(0),
        };
        let mut queues = HashMap::new();
        for entry in std::fs::read_dir(root).map_err(io)? {
            let entry = entry.map_err(io)?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            let path = entry.path();
            if name.starts_with("trash-") {
                // A deletion that a crash interrupted: finish it.
                std::fs::remove_dir_all(&path).map_err(io)?;
                continue;
            }
            if name == "quarantine" || !path.is_dir() {
                continue;
            }
            match std::fs::read(path.join(QUEUE_FILE)) {
                Ok(key) if !key.is_empty() => {
                    let key = String::from_utf8_lossy(&key).into_owned();
                    queues.insert(
                        key,
                        Arc::new(Mutex::new(QueueLog {
                            dir: path,
                            loaded: false,
                            segments: BTreeMap::new(),
                            active: None,
                        })),
                    );
                }
                // Made, but its key never written: it holds nothing confirmed.
                _ => std::fs::remove_dir_all(&path).map_err(io)?,
            }
        }
        *lock(&log.queues) = queues;
        Ok(log)
    }

    /// The directory the log lives in.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn file_id(&self) -> u64 {
        self.next_file_id.fetch_add(1, Ordering::Relaxed)
    }

    fn dirty(&self, id: u64, file: &Arc<File>) {
        lock(&self.unsynced)
            .files
            .entry(id)
            .or_insert_with(|| file.clone());
    }

    fn dirty_dir(&self, dir: &Path) {
        let mut u = lock(&self.unsynced);
        if !u.dirs.contains(dir) {
            u.dirs.insert(dir.to_owned());
        }
    }

    /// A queue's log, if it has one (`create`: making its directory if not).
    fn queue(&self, key: &str, create: bool) -> Result<Option<Arc<Mutex<QueueLog>>>, StoreError> {
        let mut queues = lock(&self.queues);
        if let Some(q) = queues.get(key) {
            return Ok(Some(q.clone()));
        }
        if !create {
            return Ok(None);
        }
        // Every known queue's directory exists (a deleted one is renamed away first), so a
        // free name is one not on disk.
        let mut hash = key_hash(key);
        let dir = loop {
            let dir = self.root.join(format!("{hash:016x}"));
            if !dir.exists() {
                break dir;
            }
            hash = hash.wrapping_add(1);
        };
        std::fs::create_dir(&dir).map_err(io)?;
        let mut f = File::create(dir.join(QUEUE_FILE)).map_err(io)?;
        f.write_all(key.as_bytes()).map_err(io)?;
        // A queue is made rarely, and its name must be on disk before anything in it counts.
        f.sync_all().map_err(io)?;
        fsync_dir(&dir)?;
        fsync_dir(&self.root)?;
        let q = Arc::new(Mutex::new(QueueLog {
            dir,
            loaded: true,
            segments: BTreeMap::new(),
            active: None,
        }));
        queues.insert(key.to_owned(), q.clone());
        Ok(Some(q))
    }

    fn remove_segment_files(&self, dir: &Path, id: u64) -> Result<(), StoreError> {
        for name in [summary_name(id), segment_name(id), ack_name(id)] {
            match std::fs::remove_file(dir.join(name)) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io(e)),
            }
        }
        // Lazily durable: a segment that comes back after a crash is settled again from its
        // ack file, or redelivered (at least once).
        self.dirty_dir(dir);
        Ok(())
    }

    /// A new segment for appends starting at `seq`.
    fn roll(&self, q: &mut QueueLog, seq: u64) -> Result<(), StoreError> {
        if let Some(old) = q.active.take() {
            if let Some(segment) = q.segments.get_mut(&old) {
                if segment.live == 0 {
                    q.segments.remove(&old);
                    self.remove_segment_files(&q.dir, old)?;
                } else {
                    // Its records reach the disk before any of the next segment's do.
                    segment.file.sync_data().map_err(io)?;
                    seal_summary(segment);
                }
            }
        }
        let path = q.dir.join(segment_name(seq));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(io)?;
        file.write_all_at(MAGIC, 0).map_err(io)?;
        let file = Arc::new(file);
        let file_id = self.file_id();
        self.dirty(file_id, &file);
        self.dirty_dir(&q.dir);
        q.segments.insert(
            seq,
            Segment {
                file,
                file_id,
                size: MAGIC.len() as u64,
                index: SegmentIndex::new(MAGIC.len() as u64),
                live: 0,
                live_bytes: 0,
                acks: None,
                marks: HashMap::new(),
                summary: SummaryWriter::create(&q.dir.join(summary_name(seq)))
                    .inspect_err(|error| tracing::warn!(%error, "starting a segment summary failed; recovery will read the segment"))
                    .ok(),
            },
        );
        q.active = Some(seq);
        Ok(())
    }

    /// The segment that holds `seq`, if any: the newest one starting at or before it.
    fn segment_of(q: &mut QueueLog, seq: u64) -> Option<(u64, &mut Segment)> {
        q.segments
            .range_mut(..=seq)
            .next_back()
            .map(|(id, s)| (*id, s))
    }

    fn write_ack(
        &self,
        dir: &Path,
        id: u64,
        segment: &mut Segment,
        entry: [u8; ACK_ENTRY],
    ) -> Result<(), StoreError> {
        let acks = match &segment.acks {
            Some(f) => f.clone(),
            None => {
                let f = OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(dir.join(ack_name(id)))
                    .map_err(io)?;
                let f = Arc::new(f);
                segment.acks = Some(f.clone());
                self.dirty_dir(dir);
                f
            }
        };
        (&*acks).write_all(&entry).map_err(io)
    }

    /// Make everything appended so far durable, on this thread (start-up and migration).
    pub fn sync_now(&self) -> Result<(), StoreError> {
        let batch = std::mem::take(&mut *lock(&self.unsynced));
        let started = Instant::now();
        sync_batch(&batch)?;
        self.note_sync(batch.files.len() as u64, started);
        Ok(())
    }

    fn note_sync(&self, files: u64, started: Instant) {
        self.syncs.fetch_add(1, Ordering::Relaxed);
        self.synced_files.fetch_add(files, Ordering::Relaxed);
        self.sync_micros
            .fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
    }

    /// Every queue's figures, summed.
    fn totals(&self) -> LogStats {
        let queues: Vec<_> = lock(&self.queues).values().cloned().collect();
        let mut stats = LogStats {
            queues: queues.len() as u64,
            ..LogStats::default()
        };
        for q in queues {
            let q = queue_totals(&lock(&q));
            stats.segments += q.segments;
            stats.bytes += q.bytes;
            stats.reclaimable_bytes += q.reclaimable_bytes;
        }
        stats
    }
}

fn queue_totals(q: &QueueLog) -> QueueLogStats {
    let mut stats = QueueLogStats::default();
    for s in q.segments.values() {
        stats.segments += 1;
        stats.bytes += s.size;
        stats.reclaimable_bytes += s.dead_bytes();
    }
    stats
}

/// fdatasync every file of a batch, then fsync its directories.
fn sync_batch(batch: &Unsynced) -> Result<(), StoreError> {
    for file in batch.files.values() {
        file.sync_data().map_err(io)?;
    }
    for dir in &batch.dirs {
        match File::open(dir) {
            Ok(d) => d.sync_all().map_err(io)?,
            // A queue deleted since: nothing in it needs to last.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(e)),
        }
    }
    Ok(())
}

#[async_trait]
impl MessageLog for SegmentLog {
    fn append(&self, queue: &str, seq: u64, record: &[u8], meta: &[u8]) -> Result<(), StoreError> {
        let bytes = encode_record(seq, record, meta)?;
        let q = self
            .queue(queue, true)?
            .ok_or_else(|| StoreError::Unusable("queue log vanished".to_owned()))?;
        let mut q = lock(&q);
        self.load(&mut q, &mut |_| {})?;
        if let Some((_, last)) = q.segments.iter().next_back() {
            if last.index.last_seq().is_some_and(|last| last >= seq) {
                return Err(StoreError::Io(std::io::Error::other(format!(
                    "append of sequence {seq} out of order"
                ))));
            }
        }
        let limit = lock(&self.segment_sizes)
            .get(queue)
            .copied()
            .unwrap_or(self.segment_bytes);
        let full = match q.active.and_then(|id| q.segments.get(&id)) {
            Some(s) => s.size >= limit,
            None => true,
        };
        if full {
            self.roll(&mut q, seq)?;
        }
        let Some(id) = q.active else {
            return Err(StoreError::Unusable("no active segment".to_owned()));
        };
        let Some(segment) = q.segments.get_mut(&id) else {
            return Err(StoreError::Unusable("no active segment".to_owned()));
        };
        if let Err(e) = segment.file.write_all_at(&bytes, segment.size) {
            // A write cut short (a full disk) leaves no half record behind: once the segment
            // is no longer the newest, recovery would take one for corruption.
            let _ = segment.file.set_len(segment.size);
            return Err(io(e));
        }
        segment.index.push(seq, bytes.len() as u32);
        summarize(segment, seq, bytes.len() as u32, meta);
        segment.size += bytes.len() as u64;
        segment.live += 1;
        segment.live_bytes += bytes.len() as u64;
        let (file_id, file) = (segment.file_id, segment.file.clone());
        drop(q);
        self.dirty(file_id, &file);
        Ok(())
    }

    fn mark_delivered(&self, queue: &str, seq: u64, deliveries: u32) -> Result<(), StoreError> {
        let Some(q) = self.queue(queue, false)? else {
            return Ok(());
        };
        let mut q = lock(&q);
        self.load(&mut q, &mut |_| {})?;
        let dir = q.dir.clone();
        let Some((id, segment)) = Self::segment_of(&mut q, seq) else {
            return Ok(());
        };
        if segment.position(seq).is_none() {
            return Ok(());
        }
        segment.marks.insert(seq, deliveries);
        self.write_ack(
            &dir,
            id,
            segment,
            encode_ack(seq, ACK_DELIVERED, deliveries),
        )
    }

    fn remove(&self, queue: &str, seq: u64) -> Result<(), StoreError> {
        let Some(q) = self.queue(queue, false)? else {
            return Ok(());
        };
        let mut q = lock(&q);
        self.load(&mut q, &mut |_| {})?;
        let dir = q.dir.clone();
        let active = q.active;
        let Some((id, segment)) = Self::segment_of(&mut q, seq) else {
            return Ok(());
        };
        let Some(i) = segment.position(seq) else {
            return Ok(());
        };
        let Some(len) = segment.index.settle(i) else {
            return Ok(());
        };
        segment.live = segment.live.saturating_sub(1);
        segment.live_bytes = segment.live_bytes.saturating_sub(u64::from(len));
        segment.marks.remove(&seq);
        let is_active = active == Some(id);
        if segment.live == 0 && !is_active {
            q.segments.remove(&id);
            return self.remove_segment_files(&dir, id);
        }
        if segment.live == 0 && segment.size >= COMPACT_MIN_DEAD {
            // The segment being appended to is all settled: start it over rather than leave a
            // drained, idle queue holding up to a segment of dead bytes. (Small ones stay: a
            // queue that empties after every message would truncate on every ack.)
            return Self::reset(segment);
        }
        self.write_ack(&dir, id, segment, encode_ack(seq, ACK_REMOVED, 0))?;
        let dead = segment.dead_bytes();
        if !is_active && dead >= COMPACT_MIN_DEAD && dead >= segment.size / 4 * 3 {
            self.compact(&dir, id, segment)?;
        }
        Ok(())
    }

    fn read(&self, queue: &str, seq: u64) -> Result<Option<Bytes>, StoreError> {
        let mut found = None;
        self.read_range(queue, seq, seq.saturating_add(1), &mut |_, record| {
            found = Some(record);
            false
        })?;
        Ok(found)
    }

    fn read_range(
        &self,
        queue: &str,
        from: u64,
        to: u64,
        visit: &mut dyn FnMut(u64, Bytes) -> bool,
    ) -> Result<(), StoreError> {
        let Some(q) = self.queue(queue, false)? else {
            return Ok(());
        };
        let mut q = lock(&q);
        self.load(&mut q, &mut |_| {})?;
        let start = q
            .segments
            .range(..=from)
            .next_back()
            .map_or(from, |(id, _)| *id);
        for segment in q.segments.range(start..to).map(|(_, s)| s) {
            let wanted: Vec<Located> = segment
                .index
                .live_from(from)
                .take_while(|e| e.seq < to)
                .collect();
            let mut i = 0;
            while let Some(head) = wanted.get(i) {
                // Neighbouring records in one read, up to a bound.
                let span_start = head.offset;
                let mut span_end = span_start + u64::from(head.len);
                let mut j = i + 1;
                while let Some(next) = wanted.get(j) {
                    let end = next.offset + u64::from(next.len);
                    if next.offset != span_end || end - span_start > READ_SPAN {
                        break;
                    }
                    span_end = end;
                    j += 1;
                }
                let mut buf = vec![0u8; (span_end - span_start) as usize];
                segment
                    .file
                    .read_exact_at(&mut buf, span_start)
                    .map_err(io)?;
                let buf = Bytes::from(buf);
                for e in wanted.get(i..j).unwrap_or_default() {
                    let at = (e.offset - span_start) as usize;
                    let bytes = buf.slice(at..at + e.len as usize);
                    let Some(d) = decode_record(&bytes).filter(|d| d.seq == e.seq) else {
                        return Err(StoreError::Io(std::io::Error::other(format!(
                            "message {} of a segment failed its checksum",
                            e.seq
                        ))));
                    };
                    if !visit(e.seq, bytes.slice(d.record)) {
                        return Ok(());
                    }
                }
                i = j;
            }
        }
        Ok(())
    }

    fn recover(&self, queue: &str, visit: &mut dyn FnMut(StoredMessage)) -> Result<(), StoreError> {
        lock(&self.recovered).insert(queue.to_owned());
        let Some(q) = self.queue(queue, false)? else {
            return Ok(());
        };
        let mut q = lock(&q);
        if !q.loaded {
            return self.load(&mut q, visit);
        }
        // Already read: the metadata comes from the records' headers.
        for segment in q.segments.values() {
            for e in segment.index.live_from(0) {
                let mut buf = vec![0u8; e.len as usize];
                segment.file.read_exact_at(&mut buf, e.offset).map_err(io)?;
                if let Some(d) = decode_record(&buf) {
                    visit(StoredMessage {
                        seq: e.seq,
                        meta: Bytes::copy_from_slice(buf.get(d.meta).unwrap_or_default()),
                        deliveries: segment.marks.get(&e.seq).copied().unwrap_or(0),
                    });
                }
            }
        }
        Ok(())
    }

    fn segments(&self, queue: &str) -> Result<Vec<SegmentSpan>, StoreError> {
        let Some(q) = self.queue(queue, false)? else {
            return Ok(Vec::new());
        };
        let mut q = lock(&q);
        self.load(&mut q, &mut |_| {})?;
        Ok(q.segments
            .iter()
            .filter_map(|(id, s)| {
                Some(SegmentSpan {
                    first_seq: s.index.live_from(0).next().map_or(*id, |e| e.seq),
                    last_seq: s.index.last_seq()?,
                    bytes: s.size,
                })
            })
            .collect())
    }

    fn drop_segments_before(&self, queue: &str, seq: u64) -> Result<(), StoreError> {
        let Some(q) = self.queue(queue, false)? else {
            return Ok(());
        };
        let mut q = lock(&q);
        self.load(&mut q, &mut |_| {})?;
        let newest = q.segments.keys().next_back().copied();
        let doomed: Vec<u64> = q
            .segments
            .iter()
            .take_while(|(id, s)| {
                Some(**id) != q.active
                    && Some(**id) != newest
                    && s.index.last_seq().is_none_or(|last| last < seq)
            })
            .map(|(id, _)| *id)
            .collect();
        let dir = q.dir.clone();
        for id in doomed {
            q.segments.remove(&id);
            self.remove_segment_files(&dir, id)?;
        }
        Ok(())
    }

    fn set_segment_bytes(&self, queue: &str, bytes: u64) {
        lock(&self.segment_sizes).insert(queue.to_owned(), bytes.clamp(4096, 1 << 30));
    }

    fn delete_queue(&self, queue: &str) -> Result<(), StoreError> {
        lock(&self.segment_sizes).remove(queue);
        let Some(q) = lock(&self.queues).remove(queue) else {
            return Ok(());
        };
        let dir = lock(&q).dir.clone();
        // Renamed first, durably: a crash part-way through the removal must never bring the
        // records back under a queue declared later with the same name.
        let n = self.trash_counter.fetch_add(1, Ordering::Relaxed);
        let trash = self.root.join(format!(
            "trash-{}-{n}",
            dir.file_name().unwrap_or_default().to_string_lossy()
        ));
        match std::fs::rename(&dir, &trash) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io(e)),
        }
        fsync_dir(&self.root)?;
        std::fs::remove_dir_all(&trash).map_err(io)
    }

    fn retain_recovered(&self) -> Result<(), StoreError> {
        let recovered = lock(&self.recovered).clone();
        let orphans: Vec<String> = lock(&self.queues)
            .keys()
            .filter(|k| !recovered.contains(*k))
            .cloned()
            .collect();
        for key in orphans {
            tracing::info!(queue = %key, "removing stored messages of a queue that no longer exists");
            self.delete_queue(&key)?;
        }
        Ok(())
    }

    async fn sync_messages(&self) -> Result<(), StoreError> {
        let batch = std::mem::take(&mut *lock(&self.unsynced));
        if batch.files.is_empty() && batch.dirs.is_empty() {
            return Ok(());
        }
        let started = Instant::now();
        let files = batch.files.len() as u64;
        tokio::task::spawn_blocking(move || sync_batch(&batch))
            .await
            .map_err(|e| StoreError::Io(std::io::Error::other(e)))??;
        self.note_sync(files, started);
        Ok(())
    }

    fn queue_stats(&self, queue: &str) -> QueueLogStats {
        let q = lock(&self.queues).get(queue).cloned();
        q.map(|q| queue_totals(&lock(&q))).unwrap_or_default()
    }

    fn stats(&self) -> LogStats {
        LogStats {
            syncs: self.syncs.load(Ordering::Relaxed),
            synced_files: self.synced_files.load(Ordering::Relaxed),
            sync_micros: self.sync_micros.load(Ordering::Relaxed),
            quarantined: self.quarantined.load(Ordering::Relaxed),
            ..self.totals()
        }
    }
}

#[cfg(test)]
mod tests;
