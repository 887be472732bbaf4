//! A data directory: definitions in sled (`sled/`), messages in the segment log (`messages/`),
//! a lock that keeps a second broker out, and a format marker (`FORMAT`).
//!
//! Formats:
//! - `leveret-3`: this layout.
//! - `leveret-sled-2`: messages in sled too. Migrated on first open, message by message: every
//!   queue's records are copied into the log (a queue half-copied by an interrupted migration is
//!   copied again from the start), the log is synced, the marker is switched, and only then are
//!   the sled records removed. A crash at any point loses nothing and repeats at most the copy.
//!
//! Definitions are synced only when one changed since the last sync: the group commit of
//! message confirms then costs the log's fdatasyncs alone, while a queue declared just before a
//! confirmed publish is still on disk when the confirm goes out.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;

use super::segment_log::{LogStats, QueueLogStats, SegmentLog};
use super::sled_store::{self, SledStore};
use super::{MessageLog, MetaStore, SegmentSpan, StoreError, StoredMessage};

/// Written to `FORMAT`.
pub const FORMAT: &str = "leveret-3";

/// How a data directory is opened.
#[derive(Debug, Clone, Copy)]
pub struct DataDirOptions {
    /// sled's background flush, milliseconds.
    pub flush_interval_ms: u64,
    /// Size at which the log starts a new segment, bytes.
    pub segment_bytes: u64,
}

impl Default for DataDirOptions {
    fn default() -> Self {
        Self {
            flush_interval_ms: 500,
            segment_bytes: super::segment_log::DEFAULT_SEGMENT_BYTES,
        }
    }
}

/// Definitions and messages of one directory.
#[derive(Debug)]
pub struct DataDir {
    meta: SledStore,
    log: SegmentLog,
    /// A definition was written since the last sync.
    meta_dirty: AtomicBool,
    dir: PathBuf,
}

fn io(e: std::io::Error) -> StoreError {
    StoreError::Io(e)
}

/// Create `dir` if need be and take its lock, which keeps a second broker out for as long as
/// the returned file is open.
pub(super) fn lock_dir(dir: &Path) -> Result<File, StoreError> {
    std::fs::create_dir_all(dir).map_err(io)?;
    let lock_path = dir.join("LOCK");
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(io)?;
    if lock.try_lock().is_err() {
        return Err(StoreError::Unusable(format!(
            "data directory {} is in use by another Leveret process (lock on {})",
            dir.display(),
            lock_path.display()
        )));
    }
    Ok(lock)
}

/// A directory with no format marker is taken only if it holds nothing but the lock (and a
/// marker being written).
pub(super) fn refuse_foreign(dir: &Path) -> Result<(), StoreError> {
    let foreign = std::fs::read_dir(dir)
        .map_err(io)?
        .filter_map(Result::ok)
        .any(|e| e.file_name() != "LOCK" && e.file_name() != "FORMAT.tmp");
    if foreign {
        return Err(StoreError::Unusable(format!(
            "{} is not a Leveret data directory (no FORMAT marker) and is not empty",
            dir.display()
        )));
    }
    Ok(())
}

/// Write the format marker durably (a temporary file renamed over it, then the directory).
pub(super) fn write_marker(dir: &Path, format: &str) -> Result<(), StoreError> {
    let tmp = dir.join("FORMAT.tmp");
    let mut f = File::create(&tmp).map_err(io)?;
    f.write_all(format.as_bytes()).map_err(io)?;
    f.sync_all().map_err(io)?;
    std::fs::rename(&tmp, dir.join("FORMAT")).map_err(io)?;
    File::open(dir).and_then(|d| d.sync_all()).map_err(io)
}

impl DataDir {
    /// Open (or create) the data directory `dir` with default options.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        Self::open_with(dir, DataDirOptions::default())
    }

    /// Open (or create) the data directory `dir`, migrating an older format.
    pub fn open_with(dir: &Path, options: DataDirOptions) -> Result<Self, StoreError> {
        let lock = lock_dir(dir)?;
        let found = match std::fs::read_to_string(dir.join("FORMAT")) {
            Ok(found) => Some(found.trim().to_owned()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(io(e)),
        };
        let legacy = match found.as_deref() {
            Some(FORMAT) => false,
            Some(sled_store::FORMAT) => true,
            Some(other) => {
                return Err(StoreError::Unusable(format!(
                    "data directory {} has format '{other}', this Leveret reads '{FORMAT}' \
                     (and migrates '{}')",
                    dir.display(),
                    sled_store::FORMAT
                )))
            }
            None => {
                refuse_foreign(dir)?;
                write_marker(dir, FORMAT)?;
                false
            }
        };
        let meta = SledStore::open_db(dir, options.flush_interval_ms, Arc::new(lock))?;
        let log = SegmentLog::open(&dir.join("messages"), options.segment_bytes)?;
        let data = Self {
            meta,
            log,
            meta_dirty: AtomicBool::new(false),
            dir: dir.to_owned(),
        };
        if legacy {
            data.migrate()?;
            write_marker(dir, FORMAT)?;
        }
        // Records a migration had copied but not yet removed when it stopped.
        let leftovers = data.meta.legacy_queues()?;
        if !leftovers.is_empty() {
            for queue in &leftovers {
                data.meta.delete_queue(queue)?;
            }
            data.meta.sync_blocking()?;
            tracing::info!(
                queues = leftovers.len(),
                "removed message records the migration had copied"
            );
        }
        Ok(data)
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Copy every message record sled holds into the log, then sync the log.
    fn migrate(&self) -> Result<(), StoreError> {
        let queues = self.meta.legacy_queues()?;
        if queues.is_empty() {
            return Ok(());
        }
        tracing::info!(
            queues = queues.len(),
            "migrating stored messages from {} to the segment log",
            sled_store::FORMAT
        );
        let mut total = 0u64;
        for queue in &queues {
            // Half-copied by an interrupted migration: start this queue again.
            self.log.delete_queue(queue)?;
            let entries = self.meta.recover_all(queue)?;
            let mut copied = 0u64;
            for entry in &entries {
                let Some(record) = self.meta.read(queue, entry.seq)? else {
                    tracing::error!(queue = %queue, seq = entry.seq, "a stored message has no record; skipped");
                    continue;
                };
                self.log.append(queue, entry.seq, &record, &entry.meta)?;
                if entry.deliveries > 0 {
                    self.log
                        .mark_delivered(queue, entry.seq, entry.deliveries)?;
                }
                copied += 1;
                total += 1;
                if total.is_multiple_of(100_000) {
                    tracing::info!(messages = total, "migration in progress");
                }
            }
            tracing::info!(queue = %queue, messages = copied, "migrated a queue's messages");
        }
        self.log.sync_now()?;
        tracing::info!(messages = total, "migration complete");
        Ok(())
    }
}

#[async_trait]
impl MetaStore for DataDir {
    fn put_definition(&self, kind: &str, name: &str, record: &[u8]) -> Result<(), StoreError> {
        self.meta_dirty.store(true, Ordering::Release);
        self.meta.put_definition(kind, name, record)
    }

    fn remove_definition(&self, kind: &str, name: &str) -> Result<(), StoreError> {
        self.meta_dirty.store(true, Ordering::Release);
        self.meta.remove_definition(kind, name)
    }

    fn definitions(&self, kind: &str) -> Result<Vec<(String, Bytes)>, StoreError> {
        self.meta.definitions(kind)
    }

    async fn sync_definitions(&self) -> Result<(), StoreError> {
        if !self.meta_dirty.swap(false, Ordering::AcqRel) {
            return Ok(());
        }
        let result = self.meta.sync_all().await;
        if result.is_err() {
            self.meta_dirty.store(true, Ordering::Release);
        }
        result
    }
}

#[async_trait]
impl MessageLog for DataDir {
    fn append(&self, queue: &str, seq: u64, record: &[u8], meta: &[u8]) -> Result<(), StoreError> {
        self.log.append(queue, seq, record, meta)
    }

    fn mark_delivered(&self, queue: &str, seq: u64, deliveries: u32) -> Result<(), StoreError> {
        self.log.mark_delivered(queue, seq, deliveries)
    }

    fn remove(&self, queue: &str, seq: u64) -> Result<(), StoreError> {
        self.log.remove(queue, seq)
    }

    fn read(&self, queue: &str, seq: u64) -> Result<Option<Bytes>, StoreError> {
        self.log.read(queue, seq)
    }

    fn read_range(
        &self,
        queue: &str,
        from: u64,
        to: u64,
        visit: &mut dyn FnMut(u64, Bytes) -> bool,
    ) -> Result<(), StoreError> {
        self.log.read_range(queue, from, to, visit)
    }

    fn recover(&self, queue: &str, visit: &mut dyn FnMut(StoredMessage)) -> Result<(), StoreError> {
        self.log.recover(queue, visit)
    }

    fn segments(&self, queue: &str) -> Result<Vec<SegmentSpan>, StoreError> {
        self.log.segments(queue)
    }

    fn drop_segments_before(&self, queue: &str, seq: u64) -> Result<(), StoreError> {
        self.log.drop_segments_before(queue, seq)
    }

    fn set_segment_bytes(&self, queue: &str, bytes: u64) {
        self.log.set_segment_bytes(queue, bytes);
    }

    fn delete_queue(&self, queue: &str) -> Result<(), StoreError> {
        self.log.delete_queue(queue)
    }

    fn retain_recovered(&self) -> Result<(), StoreError> {
        self.log.retain_recovered()
    }

    async fn sync_messages(&self) -> Result<(), StoreError> {
        self.log.sync_messages().await
    }

    fn stats(&self) -> LogStats {
        self.log.stats()
    }

    fn queue_stats(&self, queue: &str) -> QueueLogStats {
        self.log.queue_stats(queue)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    #[tokio::test]
    async fn passes_both_conformance_suites() {
        let dir = tempfile::tempdir().unwrap();
        let data = DataDir::open(dir.path()).unwrap();
        crate::store::conformance::run_log(&data).await;
        crate::store::conformance::run_stream(&data).await;
        crate::store::conformance::run_meta(&data).await;
    }

    #[tokio::test]
    async fn a_sled_only_directory_is_migrated_with_nothing_lost() {
        let dir = tempfile::tempdir().unwrap();
        {
            let old = SledStore::open(dir.path()).unwrap();
            old.put_definition("queue", "/\0q", b"Q").unwrap();
            for seq in 1..=500u64 {
                let body = vec![seq as u8; (seq as usize % 7) * 3000];
                old.append("/\0q", seq, &body, &seq.to_be_bytes()).unwrap();
            }
            old.remove("/\0q", 4).unwrap();
            old.mark_delivered("/\0q", 5, 2).unwrap();
            old.append("/\0other", 9, b"x", b"").unwrap();
            old.sync_all().await.unwrap();
        }
        let data = DataDir::open(dir.path()).unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.path().join("FORMAT")).unwrap(),
            FORMAT
        );
        let recovered = data.recover_all("/\0q").unwrap();
        assert_eq!(recovered.len(), 499);
        assert!(recovered.iter().all(|m| m.seq != 4));
        let five = recovered.iter().find(|m| m.seq == 5).unwrap();
        assert_eq!(five.deliveries, 2);
        for m in &recovered {
            let body = data.read("/\0q", m.seq).unwrap().unwrap();
            assert_eq!(body, vec![m.seq as u8; (m.seq as usize % 7) * 3000]);
            assert_eq!(&m.meta[..], &m.seq.to_be_bytes());
        }
        assert_eq!(data.recover_all("/\0other").unwrap().len(), 1);
        // sled no longer holds messages; the definitions stayed.
        assert!(data.meta.legacy_queues().unwrap().is_empty());
        assert_eq!(data.definitions("queue").unwrap().len(), 1);
        drop(data);
        // Opened again: nothing to migrate, everything still there.
        let data = DataDir::open(dir.path()).unwrap();
        assert_eq!(data.recover_all("/\0q").unwrap().len(), 499);
    }

    #[tokio::test]
    async fn definitions_are_synced_only_when_changed() {
        let dir = tempfile::tempdir().unwrap();
        let data = DataDir::open(dir.path()).unwrap();
        data.put_definition("queue", "a", b"").unwrap();
        assert!(data.meta_dirty.load(Ordering::Acquire));
        data.sync().await.unwrap();
        assert!(!data.meta_dirty.load(Ordering::Acquire));
    }

    #[test]
    fn a_second_broker_and_foreign_directories_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let _first = DataDir::open(dir.path()).unwrap();
        assert!(DataDir::open(dir.path()).is_err());
        let foreign = tempfile::tempdir().unwrap();
        std::fs::write(foreign.path().join("something"), b"x").unwrap();
        assert!(DataDir::open(foreign.path()).is_err());
        let newer = tempfile::tempdir().unwrap();
        std::fs::write(newer.path().join("FORMAT"), b"leveret-99").unwrap();
        assert!(DataDir::open(newer.path()).is_err());
    }
}
