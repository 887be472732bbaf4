//! The sled backend (pinned 0.34.7): definitions, and the reader of the message records that
//! the sled-only format (`leveret-sled-2`) kept in two more trees of the same database.
//!
//! sled 0.34's `flush()` ends in `sync_file_range`, which is not a durability barrier, so `sync`
//! is `flush()` followed by `fdatasync` of sled's data file (see shared/design/storage.md).
//! A serialized page over a quarter of sled's 512 KiB segment becomes a blob file, which sled
//! writes without any fsync (`pagecache/blob_io.rs`); a leaf holds up to 17 entries before it
//! splits, so records are cut into 6 KiB chunks, keeping every leaf under 128 KiB. As a
//! second line, `sync` fsyncs any blob file that appears anyway (and the blob directory) before
//! it reports success. A lock file keeps a second broker off the directory; a format marker
//! keeps the broker off directories it did not write.
//!
//! Message keys: `[queue prefix][seq u64 BE][chunk u16 BE]` in the `messages` tree, so a queue's
//! records are one contiguous, ordered key range. The `index` tree holds, per message,
//! `[queue prefix][seq]` → `[delivery count u32 BE][metadata]`: recovery scans only the index, a
//! few bytes per message, never the bodies. Records are written before their index entry, and
//! removed after it; sled's single log keeps that order through a crash.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};

use super::{MetaStore, StoreError, StoredMessage};

/// Chunk size for records: 17 of them (a leaf's most before it splits) with their keys stay
/// below sled's 128 KiB blob threshold for a page. (12 KiB made no blob in tests, as sled
/// writes split halves of about 8 entries, but only 10 such chunks fit under the threshold;
/// 16 KiB values do make blobs.)
#[cfg(test)]
const CHUNK: usize = 6 * 1024;
/// Upper bound of a record's chunk numbers.
const LAST_CHUNK: u16 = u16::MAX;

/// sled's cache budget. sled's real use is a multiple of it (nodes are held deserialized), and a
/// queue workload touches little beyond the head and tail of each queue, so it is kept small.
const CACHE_BYTES: u64 = 4 * 1024 * 1024;
/// Written to `FORMAT` in a data directory of the sled-only format (messages in sled too),
/// which [`super::DataDir`] migrates.
pub const FORMAT: &str = "leveret-sled-2";

/// A store in a directory, backed by sled.
#[derive(Debug, Clone)]
pub struct SledStore {
    db: sled::Db,
    messages: sled::Tree,
    index: sled::Tree,
    definitions: sled::Tree,
    data_file: Arc<File>,
    blobs: Arc<BlobDir>,
    // Held for the store's lifetime: the OS lock on it keeps other brokers out.
    _lock: Arc<File>,
    dir: PathBuf,
}

fn io(e: std::io::Error) -> StoreError {
    StoreError::Io(e)
}

fn sled_error(e: sled::Error) -> StoreError {
    match e {
        sled::Error::Io(e) => StoreError::Io(e),
        other => StoreError::Unusable(other.to_string()),
    }
}

/// A queue's key prefix: `[len u8][name]` for names under 255 bytes (every key written so far),
/// `[0xFF][len u16 BE][name]` for longer ones, so no two queues ever share a key range.
fn queue_prefix(queue: &str) -> Vec<u8> {
    let name = queue.as_bytes();
    let mut key = Vec::with_capacity(3 + name.len() + 10);
    match u8::try_from(name.len()) {
        Ok(len) if len < u8::MAX => key.push(len),
        _ => {
            key.push(u8::MAX);
            key.extend_from_slice(&(name.len().min(usize::from(u16::MAX)) as u16).to_be_bytes());
        }
    }
    key.extend_from_slice(name);
    key
}

fn message_key(queue: &str, seq: u64, chunk: u16) -> Vec<u8> {
    let mut key = queue_prefix(queue);
    key.extend_from_slice(&seq.to_be_bytes());
    key.extend_from_slice(&chunk.to_be_bytes());
    key
}

#[cfg(test)]
fn index_key(queue: &str, seq: u64) -> Vec<u8> {
    let mut key = queue_prefix(queue);
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

fn definition_key(kind: &str, name: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(kind.len() + 1 + name.len());
    key.extend_from_slice(kind.as_bytes());
    key.push(0);
    key.extend_from_slice(name.as_bytes());
    key
}

impl SledStore {
    /// Open (or create) a store in `dir`, with sled's default 500 ms background flush.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        Self::open_with(dir, 500)
    }

    /// Open (or create) a store in `dir`; sled flushes in the background every
    /// `flush_interval_ms` (acks become durable within that window; confirms never wait on it).
    pub fn open_with(dir: &Path, flush_interval_ms: u64) -> Result<Self, StoreError> {
        let lock = super::data_dir::lock_dir(dir)?;
        match std::fs::read_to_string(dir.join("FORMAT")) {
            Ok(found) if found.trim() == FORMAT => {}
            Ok(found) => {
                return Err(StoreError::Unusable(format!(
                    "data directory {} has format '{}', this Leveret reads '{FORMAT}'",
                    dir.display(),
                    found.trim()
                )))
            }
            Err(_) => {
                super::data_dir::refuse_foreign(dir)?;
                super::data_dir::write_marker(dir, FORMAT)?;
            }
        }
        Self::open_db(dir, flush_interval_ms, Arc::new(lock))
    }

    /// Open sled's database under `dir/sled`, the caller holding the directory's lock (and
    /// having checked its format).
    pub(crate) fn open_db(
        dir: &Path,
        flush_interval_ms: u64,
        lock: Arc<File>,
    ) -> Result<Self, StoreError> {
        let sled_dir = dir.join("sled");
        let db = sled::Config::new()
            .path(&sled_dir)
            .cache_capacity(CACHE_BYTES)
            .flush_every_ms(Some(flush_interval_ms.max(1)))
            .open()
            .map_err(|e| StoreError::Unusable(format!("opening {}: {e}", sled_dir.display())))?;
        let messages = db.open_tree("messages").map_err(sled_error)?;
        let index = db.open_tree("index").map_err(sled_error)?;
        let definitions = db.open_tree("definitions").map_err(sled_error)?;
        let data_file = File::open(sled_dir.join("db")).map_err(io)?;
        Ok(Self {
            db,
            messages,
            index,
            definitions,
            data_file: Arc::new(data_file),
            blobs: Arc::new(BlobDir {
                path: sled_dir.join("blobs"),
                synced: Default::default(),
            }),
            _lock: lock,
            dir: dir.to_owned(),
        })
    }

    /// The directory this store lives in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn remove_range(tree: &sled::Tree, from: Vec<u8>, to: Vec<u8>) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        for item in tree.range(from..to) {
            let (key, _) = item.map_err(sled_error)?;
            batch.remove(key);
        }
        tree.apply_batch(batch).map_err(sled_error)
    }
}

/// The message records of the sled-only format (`leveret-sled-2`), which [`super::DataDir`]
/// migrates to the segment log: read, then deleted. Only tests write them (to make such a
/// directory).
impl SledStore {
    /// Write a message record, as the sled-only format did.
    #[cfg(test)]
    pub(crate) fn append(
        &self,
        queue: &str,
        seq: u64,
        record: &[u8],
        meta: &[u8],
    ) -> Result<(), StoreError> {
        if record.len() <= CHUNK {
            self.messages
                .insert(message_key(queue, seq, 0), record)
                .map_err(sled_error)?;
        } else {
            let mut batch = sled::Batch::default();
            for (i, chunk) in record.chunks(CHUNK).enumerate() {
                batch.insert(message_key(queue, seq, i as u16), chunk);
            }
            self.messages.apply_batch(batch).map_err(sled_error)?;
        }
        let mut entry = Vec::with_capacity(4 + meta.len());
        entry.extend_from_slice(&0u32.to_be_bytes());
        entry.extend_from_slice(meta);
        self.index
            .insert(index_key(queue, seq), entry)
            .map_err(sled_error)?;
        Ok(())
    }

    /// Record a delivery count, as the sled-only format did.
    #[cfg(test)]
    pub(crate) fn mark_delivered(
        &self,
        queue: &str,
        seq: u64,
        deliveries: u32,
    ) -> Result<(), StoreError> {
        self.index
            .fetch_and_update(index_key(queue, seq), |old| {
                old.map(|entry| {
                    let mut entry = entry.to_vec();
                    if entry.len() >= 4 {
                        entry[..4].copy_from_slice(&deliveries.to_be_bytes());
                    }
                    entry
                })
            })
            .map_err(sled_error)?;
        Ok(())
    }

    /// Remove a message record, as the sled-only format did.
    #[cfg(test)]
    pub(crate) fn remove(&self, queue: &str, seq: u64) -> Result<(), StoreError> {
        // The index entry goes first: a crash in between leaves an unindexed record (space, not
        // a resurrected message). Most records are one chunk: point removes, no scan.
        self.index
            .remove(index_key(queue, seq))
            .map_err(sled_error)?;
        // A full first chunk means more may follow (`>=`: records written with larger chunks).
        // The tail goes before the head: a crash in between leaves a lone first chunk, which
        // any record later stored under this number overwrites, never a headless tail.
        let head = message_key(queue, seq, 0);
        let first = self.messages.get(&head).map_err(sled_error)?;
        if first.is_some_and(|v| v.len() >= CHUNK) {
            Self::remove_range(
                &self.messages,
                message_key(queue, seq, 1),
                message_key(queue, seq, LAST_CHUNK),
            )?;
        }
        self.messages.remove(head).map_err(sled_error)?;
        Ok(())
    }

    /// One message record.
    pub fn read(&self, queue: &str, seq: u64) -> Result<Option<Bytes>, StoreError> {
        let mut out = BytesMut::new();
        let mut found = false;
        for item in self
            .messages
            .range(message_key(queue, seq, 0)..message_key(queue, seq, LAST_CHUNK))
        {
            let (_, value) = item.map_err(sled_error)?;
            out.extend_from_slice(&value);
            found = true;
        }
        Ok(found.then(|| out.freeze()))
    }

    /// Every index entry of a queue, in sequence order; chunks left above the highest one (a
    /// removal a crash cut short) are removed.
    pub fn recover_all(&self, queue: &str) -> Result<Vec<StoredMessage>, StoreError> {
        let mut out = Vec::new();
        self.recover(queue, &mut |m| out.push(m))?;
        Ok(out)
    }

    fn recover(&self, queue: &str, visit: &mut dyn FnMut(StoredMessage)) -> Result<(), StoreError> {
        let prefix = queue_prefix(queue);
        let mut next = 0u64;
        for item in self.index.scan_prefix(&prefix) {
            let (key, value) = item.map_err(sled_error)?;
            let (Ok(seq), Some(count)) = (
                <[u8; 8]>::try_from(&key[prefix.len()..]),
                value.get(..4).and_then(|c| <[u8; 4]>::try_from(c).ok()),
            ) else {
                continue;
            };
            let seq = u64::from_be_bytes(seq);
            next = next.max(seq.saturating_add(1));
            visit(StoredMessage {
                seq,
                meta: Bytes::copy_from_slice(&value[4..]),
                deliveries: u32::from_be_bytes(count),
            });
        }
        // The queue numbers new messages from the highest recovered one up. Chunks stored
        // above it belong to no message (a crash cut a removal short) and would be read back
        // as part of a new record with a reused number: a torn message, which the kill -9
        // torture found. They go now.
        let mut end = prefix.clone();
        end.extend_from_slice(&[0xFF; 10]);
        Self::remove_range(&self.messages, message_key(queue, next, 0), end.clone())?;
        self.messages.remove(end).map_err(sled_error)?;
        Ok(())
    }

    /// Drop a queue's records.
    pub fn delete_queue(&self, queue: &str) -> Result<(), StoreError> {
        let from = queue_prefix(queue);
        let mut to = from.clone();
        to.extend_from_slice(&[0xFF; 10]);
        Self::remove_range(&self.index, from.clone(), to.clone())?;
        Self::remove_range(&self.messages, from, to.clone())?;
        self.messages.remove(to).map_err(sled_error)?;
        Ok(())
    }
}

#[async_trait]
impl MetaStore for SledStore {
    fn put_definition(&self, kind: &str, name: &str, record: &[u8]) -> Result<(), StoreError> {
        self.definitions
            .insert(definition_key(kind, name), record)
            .map_err(sled_error)?;
        Ok(())
    }

    fn remove_definition(&self, kind: &str, name: &str) -> Result<(), StoreError> {
        self.definitions
            .remove(definition_key(kind, name))
            .map_err(sled_error)?;
        Ok(())
    }

    fn definitions(&self, kind: &str) -> Result<Vec<(String, Bytes)>, StoreError> {
        let prefix = definition_key(kind, "");
        let mut out = Vec::new();
        for item in self.definitions.scan_prefix(&prefix) {
            let (key, value) = item.map_err(sled_error)?;
            let name = String::from_utf8_lossy(&key[prefix.len()..]).into_owned();
            out.push((name, Bytes::copy_from_slice(&value)));
        }
        Ok(out)
    }

    async fn sync_definitions(&self) -> Result<(), StoreError> {
        self.sync_all().await
    }
}

impl SledStore {
    /// sled's flush, the blob files, then an fdatasync of the data file, on this thread.
    pub fn sync_blocking(&self) -> Result<(), StoreError> {
        self.db.flush().map_err(sled_error)?;
        sync_blobs(&self.blobs)?;
        self.data_file.sync_data().map_err(io)
    }

    /// The names of queues with message records (written by the sled-only format).
    pub fn legacy_queues(&self) -> Result<Vec<String>, StoreError> {
        let mut out: Vec<String> = Vec::new();
        for item in self.index.iter() {
            let (key, _) = item.map_err(sled_error)?;
            let name = match key.first() {
                Some(&u8::MAX) => key
                    .get(1..3)
                    .and_then(|l| <[u8; 2]>::try_from(l).ok())
                    .map(|l| usize::from(u16::from_be_bytes(l)))
                    .and_then(|len| key.get(3..3 + len)),
                Some(&len) => key.get(1..1 + usize::from(len)),
                None => None,
            };
            let Some(name) = name.and_then(|n| std::str::from_utf8(n).ok()) else {
                continue;
            };
            if out.last().is_none_or(|last| last != name) {
                out.push(name.to_owned());
            }
        }
        out.dedup();
        Ok(out)
    }

    /// sled's flush, the blob files, then an fdatasync of the data file.
    pub async fn sync_all(&self) -> Result<(), StoreError> {
        let db = self.db.clone();
        let file = self.data_file.clone();
        let blobs = self.blobs.clone();
        tokio::task::spawn_blocking(move || {
            db.flush().map_err(sled_error)?;
            sync_blobs(&blobs)?;
            file.sync_data().map_err(io)
        })
        .await
        .map_err(|e| StoreError::Io(std::io::Error::other(e)))?
    }
}

/// sled's blob directory and the blob files already made durable.
#[derive(Debug)]
struct BlobDir {
    path: PathBuf,
    synced: std::sync::Mutex<std::collections::HashSet<std::ffi::OsString>>,
}

/// fsync blob files sled wrote since the last sync, and the directory that names them. The
/// directory is normally empty (records are chunked to stay out of it): one `readdir`.
fn sync_blobs(blobs: &BlobDir) -> Result<(), StoreError> {
    let entries = match std::fs::read_dir(&blobs.path) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io(e)),
    };
    let mut synced = blobs
        .synced
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut present = std::collections::HashSet::new();
    let mut new = false;
    for entry in entries {
        let name = entry.map_err(io)?.file_name();
        if !synced.contains(&name) {
            // A blob sled has already collected is gone: nothing to make durable.
            match File::open(blobs.path.join(&name)) {
                Ok(f) => f.sync_data().map_err(io)?,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io(e)),
            }
            new = true;
        }
        present.insert(name);
    }
    if new {
        File::open(&blobs.path)
            .and_then(|d| d.sync_all())
            .map_err(io)?;
    }
    *synced = present;
    Ok(())
}

impl Drop for SledStore {
    fn drop(&mut self) {
        // Last handle: make a clean stop durable too.
        if Arc::strong_count(&self.data_file) == 1 {
            let _ = self.db.flush();
            let _ = self.data_file.sync_data();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn passes_conformance() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        super::super::conformance::run_meta(&store).await;
    }

    /// A crash in the middle of a removal left chunks of a large record whose index entry is
    /// gone; after recovery the queue numbers new messages from its highest indexed one, so the
    /// same number comes again. The new record must read back as itself, not with the old
    /// chunks appended (the torn message the kill -9 torture found).
    #[tokio::test]
    async fn a_reused_number_never_reads_leftover_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        store.append("q", 1, b"kept", b"m").unwrap();
        let large = vec![7u8; 10 * CHUNK];
        store.append("q", 2, &large, b"m").unwrap();
        // The crash: the index entry and the first chunk went, the rest did not.
        store.index.remove(index_key("q", 2)).unwrap();
        store.messages.remove(message_key("q", 2, 0)).unwrap();
        let recovered = store.recover_all("q").unwrap();
        assert_eq!(recovered.iter().map(|m| m.seq).collect::<Vec<_>>(), [1]);
        // Number 2 again, for a small record.
        store.append("q", 2, b"new", b"m").unwrap();
        assert_eq!(&store.read("q", 2).unwrap().unwrap()[..], b"new");
        assert_eq!(&store.read("q", 1).unwrap().unwrap()[..], b"kept");
    }

    fn blob_files(dir: &Path) -> usize {
        std::fs::read_dir(dir.join("sled").join("blobs")).map_or(0, |d| d.count())
    }

    /// Large messages never reach sled's blob files, which sled writes without fsync: 200
    /// messages of 100 KB (thousands of chunks, leaves full of them) leave the blob directory
    /// empty. The control shows the hole is real: 16 KiB values do make blob files, and
    /// `sync` then fsyncs every one of them before it reports success.
    #[tokio::test]
    async fn large_records_never_become_sled_blob_files() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        let record = vec![0x5Au8; 100_000];
        for seq in 0..200 {
            store.append("q", seq, &record, b"m").unwrap();
        }
        store.sync_all().await.unwrap();
        assert_eq!(blob_files(dir.path()), 0);
        // The control: 16 KiB values make blobs (leaves of 8 or more pass 128 KiB).
        const CONTROL_VALUE: usize = 16 * 1024;

        for i in 0..200u32 {
            store
                .messages
                .insert(format!("control{i:04}"), &record[..CONTROL_VALUE])
                .unwrap();
        }
        store.sync_all().await.unwrap();
        assert!(blob_files(dir.path()) > 0, "the control made no blob");
        // ...which sync made durable (sled's background flusher may add or collect blobs
        // meanwhile, so the counts need not match exactly).
        let synced = store.blobs.synced.lock().unwrap().len();
        assert!(synced > 0, "sync made no blob file durable");
    }

    #[tokio::test]
    async fn large_records_are_chunked_below_the_blob_threshold_and_reassembled() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        let record: Vec<u8> = (0..100_000u32).map(|i| (i % 253) as u8).collect();
        store.append("q", 7, &record, b"m").unwrap();
        store.mark_delivered("q", 7, 1).unwrap();
        store.sync_all().await.unwrap();
        assert!(store
            .messages
            .iter()
            .all(|kv| kv.map(|(_, v)| v.len() <= CHUNK).unwrap_or(false)));
        let back = store.recover_all("q").unwrap();
        assert_eq!(back.len(), 1);
        assert_eq!(&back[0].meta[..], b"m");
        assert_eq!(back[0].deliveries, 1);
        assert_eq!(&store.read("q", 7).unwrap().unwrap()[..], &record[..]);
        store.remove("q", 7).unwrap();
        assert!(store.messages.is_empty() && store.index.is_empty());
    }

    #[tokio::test]
    async fn survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = SledStore::open(dir.path()).unwrap();
            store.append("q", 1, b"kept", b"m").unwrap();
            store.append("q", 2, b"acked", b"m").unwrap();
            store.remove("q", 2).unwrap();
            store.put_definition("queue", "/\0q", b"def").unwrap();
            store.sync_all().await.unwrap();
        }
        let store = SledStore::open(dir.path()).unwrap();
        let back = store.recover_all("q").unwrap();
        assert_eq!(back.len(), 1);
        assert_eq!(
            store.read("q", back[0].seq).unwrap().as_deref(),
            Some(&b"kept"[..])
        );
        assert_eq!(back[0].deliveries, 0);
        assert_eq!(store.definitions("queue").unwrap().len(), 1);
    }

    #[test]
    fn a_second_broker_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let _first = SledStore::open(dir.path()).unwrap();
        let err = SledStore::open(dir.path()).unwrap_err();
        assert!(
            err.to_string()
                .contains("in use by another Leveret process"),
            "{err}"
        );
    }

    #[test]
    fn a_foreign_directory_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("something.txt"), b"not ours").unwrap();
        let err = SledStore::open(dir.path()).unwrap_err();
        assert!(
            err.to_string().contains("not a Leveret data directory"),
            "{err}"
        );
        assert_eq!(
            std::fs::read(dir.path().join("something.txt")).unwrap(),
            b"not ours"
        );
    }

    #[tokio::test]
    async fn long_queue_names_never_share_records() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        let base = "v".repeat(300);
        let (a, b) = (format!("{base}\0a"), format!("{base}\0b"));
        store.append(&a, 1, b"A", b"").unwrap();
        store.append(&b, 1, b"B", b"").unwrap();
        assert_eq!(store.recover_all(&a).unwrap().len(), 1);
        store.delete_queue(&a).unwrap();
        assert_eq!(store.read(&b, 1).unwrap().as_deref(), Some(&b"B"[..]));
    }
}
