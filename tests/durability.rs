//! Durability across restarts, through lapin: what survives (durable entities, persistent
//! messages in durable queues, delivery state) and what does not.

mod common;

use common::*;
use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, ExchangeKind};

async fn exists_queue(ch: &lapin::Channel, name: &str) -> bool {
    ch.queue_declare(
        name.into(),
        QueueDeclareOptions {
            passive: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .is_ok()
}

#[tokio::test]
async fn durable_definitions_survive_and_transient_ones_do_not() {
    let dir = tempfile::tempdir().unwrap();
    let b = TestBroker::start_in(dir.path()).await;
    {
        let (_c, ch) = b.channel().await;
        ch.exchange_declare(
            "dx".into(),
            ExchangeKind::Topic,
            ExchangeDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
        ch.exchange_declare(
            "dx2".into(),
            ExchangeKind::Fanout,
            ExchangeDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
        ch.exchange_declare(
            "tx".into(),
            ExchangeKind::Direct,
            ExchangeDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
        let mut args = FieldTable::default();
        args.insert("x-max-length".into(), AMQPValue::LongInt(10));
        ch.queue_declare("dq".into(), durable(), args)
            .await
            .unwrap();
        ch.queue_declare(
            "tq".into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
        ch.queue_declare(
            "xq".into(),
            QueueDeclareOptions {
                durable: true,
                exclusive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
        ch.exchange_bind(
            "dx2".into(),
            "dx".into(),
            "a.#".into(),
            ExchangeBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
        ch.queue_bind(
            "dq".into(),
            "dx2".into(),
            "".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    }
    let b = b.restart_in(dir.path()).await;
    let (_c, ch) = b.channel().await;
    assert!(exists_queue(&ch, "dq").await);
    let ch = b.connect().await.create_channel().await.unwrap();
    assert!(!exists_queue(&ch, "tq").await, "non-durable queue is gone");
    let ch = b.connect().await.create_channel().await.unwrap();
    assert!(!exists_queue(&ch, "xq").await, "exclusive queue is gone");
    let ch = b.connect().await.create_channel().await.unwrap();
    let err = ch
        .exchange_declare(
            "tx".into(),
            ExchangeKind::Direct,
            ExchangeDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(amqp_error(&err).0, 404, "non-durable exchange is gone");
    let ch = b.connect().await.create_channel().await.unwrap();
    let mut args = FieldTable::default();
    args.insert("x-max-length".into(), AMQPValue::LongInt(10));
    ch.queue_declare("dq".into(), durable(), args)
        .await
        .expect("arguments were kept");
    publish(&ch, "dx", "a.b", b"through e2e").await;
    assert_eq!(
        drain(&ch, "dq").await,
        vec!["through e2e"],
        "bindings were kept"
    );
}

#[tokio::test]
async fn persistent_messages_survive_with_every_property_and_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let b = TestBroker::start_in(dir.path()).await;
    let mut headers = FieldTable::default();
    headers.insert("h".into(), AMQPValue::LongString("v".into()));
    headers.insert("n".into(), AMQPValue::LongLongInt(-5));
    let props = BasicProperties::default()
        .with_delivery_mode(2)
        .with_headers(headers)
        .with_content_type("text/plain".into())
        .with_message_id("id-1".into())
        .with_timestamp(1234);
    {
        let (_c, ch) = b.channel().await;
        ch.queue_declare("dq".into(), durable(), FieldTable::default())
            .await
            .unwrap();
        ch.queue_declare(
            "tq".into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
        ch.confirm_select(ConfirmSelectOptions::default())
            .await
            .unwrap();
        for i in 0..50 {
            let p = if i % 2 == 0 {
                props.clone()
            } else {
                BasicProperties::default().with_delivery_mode(1)
            };
            ch.basic_publish(
                "".into(),
                "dq".into(),
                BasicPublishOptions::default(),
                format!("m{i}").as_bytes(),
                p,
            )
            .await
            .unwrap();
        }
        let big = vec![7u8; 100_000];
        ch.basic_publish(
            "".into(),
            "dq".into(),
            BasicPublishOptions::default(),
            &big,
            props.clone(),
        )
        .await
        .unwrap();
        ch.basic_publish(
            "".into(),
            "tq".into(),
            BasicPublishOptions::default(),
            b"lost",
            props.clone(),
        )
        .await
        .unwrap();
        assert!(ch.wait_for_confirms().await.unwrap().is_empty());
    }
    let b = b.restart_in(dir.path()).await;
    let (_c, ch) = b.channel().await;
    let mut got = Vec::new();
    while let Some(m) = ch
        .basic_get("dq".into(), BasicGetOptions { no_ack: true })
        .await
        .unwrap()
    {
        assert_eq!(m.delivery.properties, props);
        assert!(!m.delivery.redelivered);
        got.push(m.delivery.data);
    }
    let expected: Vec<Vec<u8>> = (0..50)
        .filter(|i| i % 2 == 0)
        .map(|i| format!("m{i}").into_bytes())
        .chain(std::iter::once(vec![7u8; 100_000]))
        .collect();
    assert_eq!(
        got, expected,
        "persistent messages only, in order, bodies intact"
    );
    ch.queue_declare(
        "tq".into(),
        QueueDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    assert!(get_body(&ch, "tq").await.is_none());
}

#[tokio::test]
async fn unacked_come_back_redelivered_and_acked_never_come_back() {
    let dir = tempfile::tempdir().unwrap();
    let b = TestBroker::start_in(dir.path()).await;
    {
        let (_c, ch) = b.channel().await;
        ch.queue_declare("dq".into(), durable(), FieldTable::default())
            .await
            .unwrap();
        ch.confirm_select(ConfirmSelectOptions::default())
            .await
            .unwrap();
        for i in 0..4 {
            ch.basic_publish(
                "".into(),
                "dq".into(),
                BasicPublishOptions::default(),
                format!("m{i}").as_bytes(),
                BasicProperties::default().with_delivery_mode(2),
            )
            .await
            .unwrap();
        }
        ch.wait_for_confirms().await.unwrap();
        let m0 = ch
            .basic_get("dq".into(), BasicGetOptions::default())
            .await
            .unwrap()
            .unwrap();
        let _m1 = ch
            .basic_get("dq".into(), BasicGetOptions::default())
            .await
            .unwrap()
            .unwrap();
        m0.delivery
            .acker
            .ack(BasicAckOptions::default())
            .await
            .unwrap();
        // A synchronous call makes sure the ack has been processed before the stop.
        declare(&ch, "probe").await;
    }
    let b = b.restart_in(dir.path()).await;
    let (_c, ch) = b.channel().await;
    let mut got = Vec::new();
    while let Some(m) = ch
        .basic_get("dq".into(), BasicGetOptions { no_ack: true })
        .await
        .unwrap()
    {
        got.push((
            String::from_utf8(m.delivery.data).unwrap(),
            m.delivery.redelivered,
        ));
    }
    assert_eq!(
        got,
        vec![
            ("m1".into(), true),
            ("m2".into(), false),
            ("m3".into(), false)
        ]
    );
}

#[tokio::test]
async fn deleted_queue_does_not_come_back() {
    let dir = tempfile::tempdir().unwrap();
    let b = TestBroker::start_in(dir.path()).await;
    {
        let (_c, ch) = b.channel().await;
        ch.queue_declare("dq".into(), durable(), FieldTable::default())
            .await
            .unwrap();
        publish_with(
            &ch,
            "",
            "dq",
            b"x",
            BasicProperties::default().with_delivery_mode(2),
        )
        .await;
        ch.queue_delete("dq".into(), QueueDeleteOptions::default())
            .await
            .unwrap();
        ch.queue_declare("dq2".into(), durable(), FieldTable::default())
            .await
            .unwrap();
        ch.queue_purge("dq2".into(), QueuePurgeOptions::default())
            .await
            .unwrap();
    }
    let b = b.restart_in(dir.path()).await;
    let (_c, ch) = b.channel().await;
    assert!(!exists_queue(&ch, "dq").await);
}

#[tokio::test]
async fn a_deep_durable_queue_pages_to_the_store_and_delivers_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let b = TestBroker::start_in(dir.path()).await;
    let n = 3000u32;
    {
        let (_c, ch) = b.channel().await;
        ch.queue_declare("deep".into(), durable(), FieldTable::default())
            .await
            .unwrap();
        ch.confirm_select(ConfirmSelectOptions::default())
            .await
            .unwrap();
        for i in 0..n {
            let props = if i % 7 == 3 {
                BasicProperties::default()
            } else {
                BasicProperties::default().with_delivery_mode(2)
            };
            ch.basic_publish(
                "".into(),
                "deep".into(),
                BasicPublishOptions::default(),
                format!("m{i}").as_bytes(),
                props,
            )
            .await
            .unwrap();
        }
        assert!(ch.wait_for_confirms().await.unwrap().is_empty());
        // Half now, through a consumer with manual acks; a few requeued on the way.
        let mut consumer = ch
            .basic_consume(
                "deep".into(),
                "c".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
        for i in 0..n / 2 {
            let d = next_delivery(&mut consumer).await;
            assert_eq!(d.data, format!("m{i}").into_bytes());
            d.acker.ack(BasicAckOptions::default()).await.unwrap();
        }
        ch.basic_cancel("c".into(), BasicCancelOptions::default())
            .await
            .unwrap();
        declare(&ch, "probe").await;
    }
    let b = b.restart_in(dir.path()).await;
    let (_c, ch) = b.channel().await;
    let mut got = Vec::new();
    while let Some(body) = get_body(&ch, "deep").await {
        got.push(String::from_utf8(body).unwrap());
    }
    // Transient messages (every 7th) did not survive; every persistent one did, in order.
    let expected: Vec<String> = (n / 2..n)
        .filter(|i| i % 7 != 3)
        .map(|i| format!("m{i}"))
        .collect();
    assert_eq!(got.len(), expected.len());
    assert_eq!(got, expected);
}

#[tokio::test]
async fn deep_transient_queues_page_to_scratch_space_that_a_restart_wipes() {
    let dir = tempfile::tempdir().unwrap();
    // Threshold 0: memory pressure is always high, so transient messages page too.
    let config = leveret::broker::BrokerConfig {
        paging_ratio: 0.0,
        ..Default::default()
    };
    let b = TestBroker::start_in_with(dir.path(), config).await;
    let n = 4000u32;
    {
        let (_c, ch) = b.channel().await;
        declare(&ch, "transient-deep").await;
        ch.queue_declare("durable-deep".into(), durable(), FieldTable::default())
            .await
            .unwrap();
        ch.confirm_select(ConfirmSelectOptions::default())
            .await
            .unwrap();
        for i in 0..n {
            for q in ["transient-deep", "durable-deep"] {
                ch.basic_publish(
                    "".into(),
                    q.into(),
                    BasicPublishOptions::default(),
                    format!("m{i}").as_bytes(),
                    BasicProperties::default(),
                )
                .await
                .unwrap();
            }
        }
        assert!(ch.wait_for_confirms().await.unwrap().is_empty());
        for q in ["transient-deep", "durable-deep"] {
            for i in 0..n / 2 {
                assert_eq!(
                    get_body(&ch, q).await.unwrap(),
                    format!("m{i}").into_bytes(),
                    "{q}"
                );
            }
        }
    }
    let b = b.restart_in(dir.path()).await;
    {
        let (_c, ch) = b.channel().await;
        assert!(!exists_queue(&ch, "transient-deep").await);
        let ch = b.connect().await.create_channel().await.unwrap();
        ch.queue_declare("durable-deep".into(), durable(), FieldTable::default())
            .await
            .unwrap();
        assert!(
            get_body(&ch, "durable-deep").await.is_none(),
            "transient messages do not survive"
        );
    }
    b.broker.close();
    drop(b);
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let store = leveret::store::DataDir::open(dir.path()).unwrap();
    use leveret::store::MetaStore;
    assert!(
        store.definitions("scratch").unwrap().is_empty(),
        "scratch space was wiped"
    );
}
