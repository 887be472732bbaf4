//! A store that fails (disk full, failed write or sync) turns persistent publishes into nacks and
//! a log line, never a crash or a silent confirm. The failing backend wraps the in-memory one; the
//! broker under test is the real one.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use common::*;
use lapin::options::*;
use lapin::types::FieldTable;
use lapin::BasicProperties;
use leveret::broker::BrokerConfig;
use leveret::store::{MemoryStore, MessageLog, MetaStore, SegmentSpan, StoreError, StoredMessage};

#[derive(Debug, Default)]
struct FailingStore {
    inner: MemoryStore,
    failing: AtomicBool,
}

impl FailingStore {
    fn check(&self) -> Result<(), StoreError> {
        if self.failing.load(Ordering::SeqCst) {
            Err(StoreError::Io(std::io::Error::other(
                "No space left on device",
            )))
        } else {
            Ok(())
        }
    }
}

#[async_trait]
impl MessageLog for FailingStore {
    fn append(&self, queue: &str, seq: u64, record: &[u8], meta: &[u8]) -> Result<(), StoreError> {
        self.check()?;
        self.inner.append(queue, seq, record, meta)
    }
    fn mark_delivered(&self, queue: &str, seq: u64, deliveries: u32) -> Result<(), StoreError> {
        self.inner.mark_delivered(queue, seq, deliveries)
    }
    fn read_range(
        &self,
        queue: &str,
        from: u64,
        to: u64,
        visit: &mut dyn FnMut(u64, Bytes) -> bool,
    ) -> Result<(), StoreError> {
        self.inner.read_range(queue, from, to, visit)
    }
    fn remove(&self, queue: &str, seq: u64) -> Result<(), StoreError> {
        self.inner.remove(queue, seq)
    }
    fn read(&self, queue: &str, seq: u64) -> Result<Option<Bytes>, StoreError> {
        self.inner.read(queue, seq)
    }
    fn recover(&self, queue: &str, visit: &mut dyn FnMut(StoredMessage)) -> Result<(), StoreError> {
        self.inner.recover(queue, visit)
    }
    fn segments(&self, queue: &str) -> Result<Vec<SegmentSpan>, StoreError> {
        self.inner.segments(queue)
    }
    fn drop_segments_before(&self, queue: &str, seq: u64) -> Result<(), StoreError> {
        self.inner.drop_segments_before(queue, seq)
    }
    fn delete_queue(&self, queue: &str) -> Result<(), StoreError> {
        self.inner.delete_queue(queue)
    }
    async fn sync_messages(&self) -> Result<(), StoreError> {
        self.check()
    }
}

#[async_trait]
impl MetaStore for FailingStore {
    fn put_definition(&self, kind: &str, name: &str, record: &[u8]) -> Result<(), StoreError> {
        self.inner.put_definition(kind, name, record)
    }
    fn remove_definition(&self, kind: &str, name: &str) -> Result<(), StoreError> {
        self.inner.remove_definition(kind, name)
    }
    fn definitions(&self, kind: &str) -> Result<Vec<(String, Bytes)>, StoreError> {
        self.inner.definitions(kind)
    }
    async fn sync_definitions(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

#[tokio::test]
async fn a_failing_store_nacks_persistent_publishes_and_the_broker_carries_on() {
    let store = Arc::new(FailingStore::default());
    let b = TestBroker::start_on(BrokerConfig::default(), store.clone()).await;
    let (_c, ch) = b.channel().await;
    ch.queue_declare(
        "dq".into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .unwrap();
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let persistent = BasicProperties::default().with_delivery_mode(2);

    let ok = ch
        .basic_publish(
            "".into(),
            "dq".into(),
            BasicPublishOptions::default(),
            b"before",
            persistent.clone(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    assert!(ok.is_ack());

    store.failing.store(true, Ordering::SeqCst);
    let refused = ch
        .basic_publish(
            "".into(),
            "dq".into(),
            BasicPublishOptions::default(),
            b"refused",
            persistent.clone(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    assert!(
        refused.is_nack(),
        "a persistent message the store cannot take is nacked"
    );
    let transient = ch
        .basic_publish(
            "".into(),
            "dq".into(),
            BasicPublishOptions::default(),
            b"transient",
            BasicProperties::default(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    assert!(
        transient.is_ack(),
        "transient messages do not need the disk"
    );

    store.failing.store(false, Ordering::SeqCst);
    let after = ch
        .basic_publish(
            "".into(),
            "dq".into(),
            BasicPublishOptions::default(),
            b"after",
            persistent,
        )
        .await
        .unwrap()
        .await
        .unwrap();
    assert!(after.is_ack(), "publishing works again once the disk does");
    assert_eq!(drain(&ch, "dq").await, vec!["before", "transient", "after"]);
}
