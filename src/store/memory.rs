//! In-memory backend: maps under a mutex. Nothing survives the process; `sync` is immediate.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use async_trait::async_trait;
use bytes::Bytes;

use super::{MessageLog, MetaStore, SegmentSpan, StoreError, StoredMessage};

/// Per queue: seq → (record, metadata, delivery count).
type Queues = HashMap<String, BTreeMap<u64, (Bytes, Bytes, u32)>>;
type Definitions = HashMap<String, BTreeMap<String, Bytes>>;

/// A store that forgets everything at exit.
#[derive(Debug, Default)]
pub struct MemoryStore {
    // Plain mutexes: no await happens while they are held.
    queues: Mutex<Queues>,
    definitions: Mutex<Definitions>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[async_trait]
impl MessageLog for MemoryStore {
    fn append(&self, queue: &str, seq: u64, record: &[u8], meta: &[u8]) -> Result<(), StoreError> {
        lock(&self.queues)
            .entry(queue.to_owned())
            .or_default()
            .insert(
                seq,
                (
                    Bytes::copy_from_slice(record),
                    Bytes::copy_from_slice(meta),
                    0,
                ),
            );
        Ok(())
    }

    fn mark_delivered(&self, queue: &str, seq: u64, deliveries: u32) -> Result<(), StoreError> {
        if let Some((_, _, count)) = lock(&self.queues)
            .get_mut(queue)
            .and_then(|q| q.get_mut(&seq))
        {
            *count = deliveries;
        }
        Ok(())
    }

    fn remove(&self, queue: &str, seq: u64) -> Result<(), StoreError> {
        if let Some(q) = lock(&self.queues).get_mut(queue) {
            q.remove(&seq);
        }
        Ok(())
    }

    fn read(&self, queue: &str, seq: u64) -> Result<Option<Bytes>, StoreError> {
        Ok(lock(&self.queues)
            .get(queue)
            .and_then(|q| q.get(&seq).map(|(record, _, _)| record.clone())))
    }

    fn read_range(
        &self,
        queue: &str,
        from: u64,
        to: u64,
        visit: &mut dyn FnMut(u64, Bytes) -> bool,
    ) -> Result<(), StoreError> {
        let records: Vec<(u64, Bytes)> = lock(&self.queues)
            .get(queue)
            .map(|q| {
                q.range(from..to)
                    .map(|(seq, (record, _, _))| (*seq, record.clone()))
                    .collect()
            })
            .unwrap_or_default();
        for (seq, record) in records {
            if !visit(seq, record) {
                break;
            }
        }
        Ok(())
    }

    fn recover(&self, queue: &str, visit: &mut dyn FnMut(StoredMessage)) -> Result<(), StoreError> {
        let records: Vec<StoredMessage> = lock(&self.queues)
            .get(queue)
            .map(|q| {
                q.iter()
                    .map(|(seq, (_, meta, deliveries))| StoredMessage {
                        seq: *seq,
                        meta: meta.clone(),
                        deliveries: *deliveries,
                    })
                    .collect()
            })
            .unwrap_or_default();
        records.into_iter().for_each(visit);
        Ok(())
    }

    fn segments(&self, queue: &str) -> Result<Vec<SegmentSpan>, StoreError> {
        let queues = lock(&self.queues);
        let Some(q) = queues.get(queue) else {
            return Ok(Vec::new());
        };
        let (Some((first, _)), Some((last, _))) = (q.first_key_value(), q.last_key_value()) else {
            return Ok(Vec::new());
        };
        let bytes = q.values().map(|(r, m, _)| (r.len() + m.len()) as u64).sum();
        Ok(vec![SegmentSpan {
            first_seq: *first,
            last_seq: *last,
            bytes,
        }])
    }

    fn drop_segments_before(&self, _queue: &str, _seq: u64) -> Result<(), StoreError> {
        // One segment, the one appended to: it always stays.
        Ok(())
    }

    fn delete_queue(&self, queue: &str) -> Result<(), StoreError> {
        lock(&self.queues).remove(queue);
        Ok(())
    }

    async fn sync_messages(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

#[async_trait]
impl MetaStore for MemoryStore {
    fn put_definition(&self, kind: &str, name: &str, record: &[u8]) -> Result<(), StoreError> {
        lock(&self.definitions)
            .entry(kind.to_owned())
            .or_default()
            .insert(name.to_owned(), Bytes::copy_from_slice(record));
        Ok(())
    }

    fn remove_definition(&self, kind: &str, name: &str) -> Result<(), StoreError> {
        if let Some(d) = lock(&self.definitions).get_mut(kind) {
            d.remove(name);
        }
        Ok(())
    }

    fn definitions(&self, kind: &str) -> Result<Vec<(String, Bytes)>, StoreError> {
        Ok(lock(&self.definitions)
            .get(kind)
            .map(|d| d.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default())
    }

    async fn sync_definitions(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn passes_conformance() {
        let store = super::MemoryStore::new();
        super::super::conformance::run_log(&store).await;
        super::super::conformance::run_stream(&store).await;
        super::super::conformance::run_meta(&store).await;
    }
}
