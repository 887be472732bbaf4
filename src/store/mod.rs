//! Storage behind two narrow traits that know bytes, not broker types:
//! - [`MetaStore`]: definition records keyed by (kind, name): vhosts, users, exchanges, queues,
//!   bindings, policies. Small and rarely written; sled keeps them.
//! - [`MessageLog`]: message records keyed by (queue, sequence), each with a small index entry
//!   (opaque metadata and a delivery count) that recovery reads back. [`SegmentLog`] keeps them
//!   in append-only segment files.
//!
//! [`Store`] is the pair as the broker sees it. `sync` is the durability point: once it returns,
//! every record appended (and every definition written) before the call is on disk, for
//! backends that have a disk. The in-memory backend keeps both in maps and syncs trivially;
//! [`conformance`] holds the suites every backend passes. [`DataDir`] is a data directory:
//! sled for definitions, the segment log for messages, the lock and the format marker, and
//! the migration of message records written by the sled-only format.

use async_trait::async_trait;
use bytes::Bytes;

pub mod data_dir;
pub mod memory;
pub mod segment_log;
pub mod sled_store;

pub use data_dir::{DataDir, DataDirOptions};
pub use memory::MemoryStore;
pub use segment_log::{LogStats, QueueLogStats, SegmentLog};
pub use sled_store::SledStore;

/// Failures of a storage backend.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// An I/O failure (disk full, failed write or sync).
    #[error("storage I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// The data directory is unusable (corrupt, foreign, or held by another broker).
    #[error("storage unusable: {0}")]
    Unusable(String),
}

/// One stored message's index entry, as recovery sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    /// Sequence within its queue; order of delivery.
    pub seq: u64,
    /// The opaque metadata given to [`Store::append`] (the record itself is read with
    /// [`Store::read`]).
    pub meta: Bytes,
    /// How many times it was handed to a consumer before the broker stopped (0 = never).
    pub deliveries: u32,
}

/// One segment of a queue's log, as retention sees it: whole segments are what an append-only
/// log (a stream) gives back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentSpan {
    /// Sequence of its first record.
    pub first_seq: u64,
    /// Sequence of its last record.
    pub last_seq: u64,
    /// Bytes on disk.
    pub bytes: u64,
}

/// Definition records: what the broker is configured with.
#[async_trait]
pub trait MetaStore: Send + Sync + std::fmt::Debug + 'static {
    /// Store a definition (exchange, queue, binding, vhost, user) under `kind`/`name`.
    fn put_definition(&self, kind: &str, name: &str, record: &[u8]) -> Result<(), StoreError>;
    /// Remove a definition.
    fn remove_definition(&self, kind: &str, name: &str) -> Result<(), StoreError>;
    /// Every definition of a kind, ordered by name.
    fn definitions(&self, kind: &str) -> Result<Vec<(String, Bytes)>, StoreError>;
    /// Make every earlier definition write durable (cheap when there was none).
    async fn sync_definitions(&self) -> Result<(), StoreError>;
}

/// Message records, per queue, in sequence order.
#[async_trait]
pub trait MessageLog: Send + Sync + std::fmt::Debug + 'static {
    /// Append a message record to `queue` at `seq` (seqs increase per queue), with a few bytes
    /// of metadata that recovery gets back.
    fn append(&self, queue: &str, seq: u64, record: &[u8], meta: &[u8]) -> Result<(), StoreError>;
    /// Note that a message has been handed to consumers `deliveries` times (so it comes back
    /// `redelivered`, and a delivery limit survives restarts).
    fn mark_delivered(&self, queue: &str, seq: u64, deliveries: u32) -> Result<(), StoreError>;
    /// Remove a message record (it was acked or dropped).
    fn remove(&self, queue: &str, seq: u64) -> Result<(), StoreError>;
    /// Read one message record back.
    fn read(&self, queue: &str, seq: u64) -> Result<Option<Bytes>, StoreError>;
    /// Visit the records of `queue` with sequence numbers in `from..to`, in order, stopping
    /// when `visit` returns false (read-ahead of a deep queue: one scan instead of a lookup
    /// per message).
    fn read_range(
        &self,
        queue: &str,
        from: u64,
        to: u64,
        visit: &mut dyn FnMut(u64, Bytes) -> bool,
    ) -> Result<(), StoreError>;
    /// Visit the index entry of every message of a queue, in sequence order. `visit` must not
    /// call back into the log (it may run under the queue's lock).
    fn recover(&self, queue: &str, visit: &mut dyn FnMut(StoredMessage)) -> Result<(), StoreError>;

    /// Every index entry of a queue, in sequence order (for tests and small queues).
    fn recover_all(&self, queue: &str) -> Result<Vec<StoredMessage>, StoreError> {
        let mut out = Vec::new();
        self.recover(queue, &mut |m| out.push(m))?;
        Ok(out)
    }
    /// The segments of a queue's log, oldest first (empty when it has none). Backends without
    /// segments answer one span covering every record.
    fn segments(&self, queue: &str) -> Result<Vec<SegmentSpan>, StoreError>;
    /// Drop the records of `queue` below `seq`, a whole segment at a time: a segment goes only
    /// if its last record is below `seq`, and the segment appended to never goes (an
    /// append-only log's retention).
    fn drop_segments_before(&self, queue: &str, seq: u64) -> Result<(), StoreError>;
    /// Roll `queue`'s segments at `bytes` instead of the log's default (a stream's
    /// `x-stream-max-segment-size-bytes`); backends without segments ignore it.
    fn set_segment_bytes(&self, _queue: &str, _bytes: u64) {}
    /// Drop a queue's records.
    fn delete_queue(&self, queue: &str) -> Result<(), StoreError>;
    /// Drop the records of every queue [`MessageLog::recover`] has not been called for since
    /// the log was opened: called once the broker has recovered its queues, it removes what
    /// belongs to no queue (a deletion a crash cut short), so a queue declared later under the
    /// same name never finds old records.
    fn retain_recovered(&self) -> Result<(), StoreError> {
        Ok(())
    }
    /// Make every earlier append durable.
    async fn sync_messages(&self) -> Result<(), StoreError>;
    /// Space and sync figures, for the HTTP API and Prometheus.
    fn stats(&self) -> LogStats {
        LogStats::default()
    }
    /// One queue's space on disk.
    fn queue_stats(&self, _queue: &str) -> QueueLogStats {
        QueueLogStats::default()
    }
}

/// Definitions and messages, as the broker uses them.
#[async_trait]
pub trait Store: MetaStore + MessageLog {
    /// Make every earlier write durable: messages, and definitions if any changed.
    async fn sync(&self) -> Result<(), StoreError> {
        let (messages, definitions) = futures::join!(self.sync_messages(), self.sync_definitions());
        messages.and(definitions)
    }
}

impl<T: MetaStore + MessageLog> Store for T {}

/// The behaviour every backend must show; call from each backend's tests.
#[cfg(test)]
pub(crate) mod conformance {
    use super::*;

    /// The message-log suite.
    pub(crate) async fn run_log(store: &dyn MessageLog) {
        store.append("q", 1, b"one", b"m1").unwrap();
        store.append("q", 2, b"two", b"m2").unwrap();
        store.append("q", 3, b"three", b"m3").unwrap();
        store.append("other", 1, b"x", b"").unwrap();
        store.sync_messages().await.unwrap();
        store.remove("q", 2).unwrap();
        store.mark_delivered("q", 3, 1).unwrap();
        store.mark_delivered("q", 3, 4).unwrap();
        let deliveries: Vec<u32> = store
            .recover_all("q")
            .unwrap()
            .iter()
            .map(|m| m.deliveries)
            .collect();
        assert_eq!(deliveries, vec![0, 4]);
        let seqs: Vec<u64> = store
            .recover_all("q")
            .unwrap()
            .iter()
            .map(|m| m.seq)
            .collect();
        assert_eq!(seqs, vec![1, 3]);
        let metas: Vec<Bytes> = store
            .recover_all("q")
            .unwrap()
            .into_iter()
            .map(|m| m.meta)
            .collect();
        assert_eq!(
            metas,
            vec![Bytes::from_static(b"m1"), Bytes::from_static(b"m3")]
        );
        assert_eq!(store.read("q", 3).unwrap().as_deref(), Some(&b"three"[..]));
        assert_eq!(store.read("q", 2).unwrap(), None);
        let mut ranged = Vec::new();
        store
            .read_range("q", 1, 10, &mut |seq, record| {
                ranged.push((seq, record));
                true
            })
            .unwrap();
        assert_eq!(
            ranged,
            vec![
                (1, Bytes::from_static(b"one")),
                (3, Bytes::from_static(b"three"))
            ]
        );
        store.delete_queue("q").unwrap();
        assert!(store.recover_all("q").unwrap().is_empty());
        assert!(store.segments("q").unwrap().is_empty());
        assert_eq!(store.recover_all("other").unwrap().len(), 1);
        // Numbers from 1 again after a delete: the new records, never the old.
        store.append("q", 1, b"new", b"n1").unwrap();
        assert_eq!(store.read("q", 1).unwrap().as_deref(), Some(&b"new"[..]));
        assert_eq!(store.read("q", 3).unwrap(), None);
        assert_eq!(store.recover_all("q").unwrap().len(), 1);
    }

    /// The append-only suite (streams): numbering from 0, whole-segment retention.
    pub(crate) async fn run_stream(store: &dyn MessageLog) {
        store.set_segment_bytes("s", 4096);
        let record = vec![7u8; 1000];
        for seq in 0..20u64 {
            store.append("s", seq, &record, &seq.to_be_bytes()).unwrap();
        }
        store.sync_messages().await.unwrap();
        let spans = store.segments("s").unwrap();
        assert!(!spans.is_empty());
        assert_eq!(spans.first().map(|s| s.first_seq), Some(0));
        assert_eq!(spans.last().map(|s| s.last_seq), Some(19));
        for pair in spans.windows(2) {
            assert_eq!(pair[0].last_seq + 1, pair[1].first_seq);
        }
        // Nothing below 0; a cut inside a segment keeps that segment.
        store.drop_segments_before("s", 0).unwrap();
        assert_eq!(store.recover_all("s").unwrap().len(), 20);
        store.drop_segments_before("s", 10).unwrap();
        let left = store.recover_all("s").unwrap();
        let first = left.first().map(|m| m.seq).unwrap_or(u64::MAX);
        assert!(first <= 10, "records at or above the cut stay");
        assert_eq!(left.last().map(|m| m.seq), Some(19));
        // Everything below: the newest segment stays.
        store.drop_segments_before("s", u64::MAX).unwrap();
        let left = store.recover_all("s").unwrap();
        assert!(left.last().map(|m| m.seq) == Some(19));
        let mut read = Vec::new();
        store
            .read_range("s", 0, u64::MAX, &mut |seq, r| {
                read.push((seq, r.len()));
                true
            })
            .unwrap();
        assert_eq!(read.len(), left.len());
        assert!(read.iter().all(|(_, len)| *len == 1000));
        store.delete_queue("s").unwrap();
    }

    /// The definitions suite.
    pub(crate) async fn run_meta(store: &dyn MetaStore) {
        store.put_definition("queue", "/\0b", b"B").unwrap();
        store.put_definition("queue", "/\0a", b"A").unwrap();
        store.put_definition("exchange", "/\0a", b"E").unwrap();
        let names: Vec<String> = store
            .definitions("queue")
            .unwrap()
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert_eq!(names, vec!["/\0a".to_owned(), "/\0b".to_owned()]);
        store.remove_definition("queue", "/\0a").unwrap();
        assert_eq!(store.definitions("queue").unwrap().len(), 1);
        assert_eq!(store.definitions("exchange").unwrap().len(), 1);
        store.sync_definitions().await.unwrap();
    }
}
