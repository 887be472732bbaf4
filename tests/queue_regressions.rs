//! Regressions found in review of the queue features: dead-lettered priority after a restart,
//! a refused dead letter coming back, the reply queue left behind by a failed consume, basic.get
//! counts past expired messages, and confirms lost when a queue goes away with work queued.

mod common;

use std::time::Duration;

use common::*;
use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable};
use lapin::BasicProperties;

mod engine {
    use bytes::Bytes;
    use leveret::broker::queue::{ChannelLimiter, ClientEvent, ConfirmTarget, ConsumeRequest};
    use leveret::broker::vhost::QueueDeclare;
    use leveret::broker::{Broker, BrokerConfig, Message};
    use leveret::protocol::{AMQPValue, FieldTable};
    use leveret::store::MemoryStore;
    use std::sync::Arc;
    use tokio::sync::mpsc;

    #[tokio::test(flavor = "current_thread")]
    async fn publishes_in_the_lane_lose_their_confirms_on_auto_delete() {
        let broker = Broker::open(BrokerConfig::default(), Arc::new(MemoryStore::new())).unwrap();
        let vhost = broker.vhost("/").unwrap();
        let mut args = FieldTable::default();
        args.insert("x-max-length".into(), AMQPValue::LongInt(1_000_000));
        args.insert(
            "x-overflow".into(),
            AMQPValue::LongString("reject-publish".into()),
        );
        vhost
            .declare_queue(
                &QueueDeclare {
                    name: "ad".into(),
                    auto_delete: true,
                    arguments: args,
                    argument_order: Vec::new(),
                    ..Default::default()
                },
                1,
            )
            .await
            .unwrap();
        let q = vhost.queue("ad", 1).unwrap();
        let (sink, mut inbox) = mpsc::unbounded_channel();
        q.consume(ConsumeRequest {
            consumer_id: 1,
            connection_id: 1,
            channel: 1,
            tag: Arc::from("c"),
            prefetch: 0,
            no_ack: true,
            exclusive: false,
            priority: 0,
            limiter: Arc::new(ChannelLimiter::default()),
            sink: sink.clone(),
            arguments: Default::default(),
        })
        .await
        .unwrap();
        // 100 publishes queued in the work lane, then the last consumer goes, all without yielding.
        for seq in 1..=100u64 {
            let m = Arc::new(Message::new(
                Arc::from(""),
                Arc::from("ad"),
                Bytes::from_static(&[0, 0]),
                Bytes::from_static(b"x"),
                false,
            ));
            q.publish(
                m,
                Some(ConfirmTarget::Publisher {
                    sink: sink.clone(),
                    channel: 1,
                    seq,
                }),
            )
            .await;
        }
        q.consumer_gone(1);
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        let mut confirms = 0;
        while let Ok(ev) = inbox.try_recv() {
            if let ClientEvent::Confirm { .. } = ev {
                confirms += 1;
            }
        }
        assert_eq!(confirms, 100);
    }
}

async fn pubp(ch: &lapin::Channel, q: &str, body: &str, priority: u8) {
    let props = BasicProperties::default()
        .with_delivery_mode(2)
        .with_priority(priority);
    // Acked or, for a full reject-publish queue, nacked: either way the broker answered.
    publish_confirmed(ch, "", q, body.as_bytes(), props).await;
}

async fn dlx_setup(ch: &lapin::Channel, dead_args: FieldTable) {
    dead_letter_pair(ch, &[], dead_args, true).await;
}

/// A recovered (decoded from the store) message loses its priority when dead-lettered.
#[tokio::test]
async fn dead_letter_priority_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let b = TestBroker::start_in(dir.path()).await;
    {
        let (_c, ch) = b.channel().await;
        dlx_setup(&ch, args(&[("x-max-priority", AMQPValue::LongInt(5))])).await;
        ch.confirm_select(ConfirmSelectOptions::default())
            .await
            .unwrap();
        pubp(&ch, "source", "hi", 5).await;
    }
    let b = b.restart_in(dir.path()).await;
    let (_c, ch) = b.channel().await;
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    pubp(&ch, "dead", "lo", 0).await;
    let m = get(&ch, "source").await.unwrap();
    m.delivery
        .reject(BasicRejectOptions { requeue: false })
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let first = get(&ch, "dead").await.unwrap();
    assert_eq!(
        first.delivery.data, b"hi",
        "priority-5 dead letter should come first"
    );
}

/// A dead letter refused by a full reject-publish target comes back in the source after restart.
#[tokio::test]
async fn refused_dead_letter_resurrects() {
    let dir = tempfile::tempdir().unwrap();
    let b = TestBroker::start_in(dir.path()).await;
    {
        let (_c, ch) = b.channel().await;
        dlx_setup(
            &ch,
            args(&[
                ("x-max-length", AMQPValue::LongInt(0)),
                ("x-overflow", long("reject-publish")),
            ]),
        )
        .await;
        ch.confirm_select(ConfirmSelectOptions::default())
            .await
            .unwrap();
        pubp(&ch, "source", "poison", 0).await;
        let m = get(&ch, "source").await.unwrap();
        m.delivery
            .reject(BasicRejectOptions { requeue: false })
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(get(&ch, "source").await.is_none());
    }
    let b = b.restart_in(dir.path()).await;
    let (_c, ch) = b.channel().await;
    let back = get(&ch, "source").await;
    assert!(back.is_none(), "rejected message came back after restart");
}

/// A bad x-priority on a direct reply-to consume leaves the reply queue behind forever.
#[tokio::test]
async fn reply_queue_leak() {
    let b = TestBroker::start().await;
    let (_c, ch) = b.channel().await;
    let r = ch
        .basic_consume(
            "amq.rabbitmq.reply-to".into(),
            "".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            args(&[("x-priority", long("a"))]),
        )
        .await;
    assert!(r.is_err());
    tokio::time::sleep(Duration::from_millis(200)).await;
    drop(_c);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let names = b.broker.vhost("/").unwrap().queue_names();
    assert!(names.is_empty(), "reply queue leaked: {names:?}");
}

/// get-ok message_count leaves out an already-expired message behind the fetched head.
#[tokio::test]
async fn get_count_after_expired_second() {
    let b = TestBroker::start().await;
    let (_c, ch) = b.channel().await;
    ch.queue_declare(
        "q".into(),
        QueueDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    for (body, exp) in [("long", "60000"), ("short", "100")] {
        ch.basic_publish(
            "".into(),
            "q".into(),
            BasicPublishOptions::default(),
            body.as_bytes(),
            BasicProperties::default().with_expiration(exp.into()),
        )
        .await
        .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    let m = get(&ch, "q").await.unwrap();
    assert_eq!(m.delivery.data, b"long");
    // As RabbitMQ: the count leaves out the message that expired behind the head.
    assert_eq!(m.message_count, 0);
}

/// Publishes waiting in an auto-delete queue's work lane when it deletes itself never get a confirm.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn confirms_lost_on_auto_delete() {
    let b = TestBroker::start().await;
    let (_c1, ch) = b.channel().await;
    let (_c2, cons) = b.channel().await;
    ch.queue_declare(
        "ad".into(),
        QueueDeclareOptions {
            auto_delete: true,
            ..Default::default()
        },
        args(&[
            ("x-max-length", AMQPValue::LongInt(10_000_000)),
            ("x-overflow", long("reject-publish")),
        ]),
    )
    .await
    .unwrap();
    let consumer = cons
        .basic_consume(
            "ad".into(),
            "c".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let mut pending = Vec::new();
    let body = vec![0u8; 64];
    for i in 0..30_000 {
        if i == 15_000 {
            let cons2 = cons.clone();
            tokio::spawn(async move {
                cons2
                    .basic_cancel("c".into(), BasicCancelOptions::default())
                    .await
                    .unwrap();
            });
        }
        pending.push(
            ch.basic_publish(
                "".into(),
                "ad".into(),
                BasicPublishOptions::default(),
                &body,
                BasicProperties::default(),
            )
            .await
            .unwrap(),
        );
    }
    drop(consumer);
    let all = futures::future::join_all(pending);
    match tokio::time::timeout(Duration::from_secs(10), all).await {
        Ok(confirms) => assert!(confirms.iter().all(Result::is_ok)),
        Err(_) => panic!("confirms never arrived"),
    }
}
