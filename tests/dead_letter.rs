//! Dead-lettering through lapin: reasons, the `x-death` header field by field and type by
//! type, routing of the copies, cycle detection, delivery limits, and restarts.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use lapin::options::*;
use lapin::types::{AMQPValue, FieldArray, FieldTable, ShortString};
use lapin::{BasicProperties, ExchangeKind};

/// A fanout `dlx` bound to a queue `dead`, and `source` dead-lettering to it.
async fn setup(ch: &lapin::Channel, source_args: &[(&str, AMQPValue)], persistent: bool) {
    dead_letter_pair(ch, source_args, FieldTable::default(), persistent).await;
}

/// Dead-lettering is asynchronous (as in RabbitMQ): poll for the copy.
async fn get_dead(ch: &lapin::Channel, q: &str) -> Option<lapin::message::BasicGetMessage> {
    for _ in 0..100 {
        if let Some(m) = get(ch, q).await {
            return Some(m);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

fn headers(d: &lapin::message::Delivery) -> BTreeMap<ShortString, AMQPValue> {
    d.properties
        .headers()
        .clone()
        .map(|h| h.inner().clone())
        .unwrap_or_default()
}

fn deaths(d: &lapin::message::Delivery) -> Vec<BTreeMap<ShortString, AMQPValue>> {
    match headers(d).get("x-death") {
        Some(AMQPValue::FieldArray(a)) => a
            .as_slice()
            .iter()
            .map(|v| match v {
                AMQPValue::FieldTable(t) => t.inner().clone(),
                other => panic!("x-death entry is not a table: {other:?}"),
            })
            .collect(),
        other => panic!("no x-death array: {other:?}"),
    }
}

#[tokio::test]
async fn rejected_messages_carry_rabbitmq_x_death() {
    let b = TestBroker::start().await;
    let (_c, ch) = b.channel().await;
    setup(&ch, &[], false).await;
    ch.exchange_declare(
        "src".into(),
        ExchangeKind::Direct,
        ExchangeDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    for key in ["k", "cc1", "bcc1"] {
        ch.queue_bind(
            "source".into(),
            "src".into(),
            key.into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    }
    let mut h = FieldTable::default();
    h.insert("h".into(), long("v"));
    h.insert(
        "CC".into(),
        AMQPValue::FieldArray(FieldArray::from(vec![long("cc1")])),
    );
    h.insert(
        "BCC".into(),
        AMQPValue::FieldArray(FieldArray::from(vec![long("bcc1")])),
    );
    publish_with(
        &ch,
        "src",
        "k",
        b"body",
        BasicProperties::default()
            .with_headers(h)
            .with_expiration("60000".into())
            .with_priority(3)
            .with_message_id("mid".into())
            .with_correlation_id("cid".into()),
    )
    .await;
    let m = get(&ch, "source").await.expect("in source");
    m.delivery
        .reject(BasicRejectOptions { requeue: false })
        .await
        .unwrap();
    let dead = get_dead(&ch, "dead").await.expect("dead-lettered");
    let d = &dead.delivery;
    assert_eq!(d.data, b"body");
    assert!(!d.redelivered);
    assert_eq!(d.exchange.as_str(), "dlx");
    assert_eq!(d.routing_key.as_str(), "k");
    assert_eq!(d.properties.expiration(), &None, "expiration is removed");
    assert_eq!(d.properties.priority(), &Some(3));
    assert_eq!(
        d.properties.message_id().as_ref().map(|s| s.as_str()),
        Some("mid")
    );
    let h = headers(d);
    assert_eq!(h.get("h"), Some(&long("v")));
    assert!(!h.contains_key("BCC"));
    assert_eq!(h.get("x-first-death-reason"), Some(&long("rejected")));
    assert_eq!(h.get("x-first-death-queue"), Some(&long("source")));
    assert_eq!(h.get("x-first-death-exchange"), Some(&long("src")));
    let x = deaths(d);
    assert_eq!(x.len(), 1);
    let death = &x[0];
    assert_eq!(death.get("count"), Some(&AMQPValue::LongLongInt(1)));
    assert_eq!(death.get("reason"), Some(&long("rejected")));
    assert_eq!(death.get("queue"), Some(&long("source")));
    assert_eq!(death.get("exchange"), Some(&long("src")));
    assert_eq!(death.get("original-expiration"), Some(&long("60000")));
    assert_eq!(
        death.get("routing-keys"),
        Some(&AMQPValue::FieldArray(FieldArray::from(vec![
            long("k"),
            long("cc1")
        ])))
    );
    assert!(matches!(death.get("time"), Some(AMQPValue::Timestamp(t)) if *t > 1_600_000_000));
}

#[tokio::test]
async fn expiry_overflow_and_dead_letter_routing_keys() {
    let b = TestBroker::start().await;
    let (_c, ch) = b.channel().await;
    ch.queue_declare(
        "by-key".into(),
        QueueDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    ch.queue_declare(
        "ttl".into(),
        QueueDeclareOptions::default(),
        args(&[
            ("x-message-ttl", AMQPValue::LongInt(50)),
            ("x-dead-letter-exchange", long("")),
            ("x-dead-letter-routing-key", long("by-key")),
        ]),
    )
    .await
    .unwrap();
    publish(&ch, "", "ttl", b"late").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let m = get_dead(&ch, "by-key").await.expect("expired into by-key");
    assert_eq!(m.delivery.routing_key.as_str(), "by-key");
    assert_eq!(deaths(&m.delivery)[0].get("reason"), Some(&long("expired")));
    assert_eq!(
        deaths(&m.delivery)[0].get("routing-keys"),
        Some(&AMQPValue::FieldArray(FieldArray::from(vec![long("ttl")])))
    );

    setup(
        &ch,
        &[
            ("x-max-length", AMQPValue::LongInt(1)),
            ("x-overflow", long("reject-publish-dlx")),
        ],
        false,
    )
    .await;
    publish(&ch, "", "source", b"kept").await;
    publish(&ch, "", "source", b"refused").await;
    let m = get_dead(&ch, "dead")
        .await
        .expect("refused publish dead-lettered");
    assert_eq!(m.delivery.data, b"refused");
    assert_eq!(deaths(&m.delivery)[0].get("reason"), Some(&long("maxlen")));
    assert_eq!(drain(&ch, "source").await, vec!["kept"]);
}

#[tokio::test]
async fn repeat_deaths_count_up_and_automatic_cycles_are_dropped() {
    let b = TestBroker::start().await;
    let (_c, ch) = b.channel().await;
    setup(&ch, &[], false).await;
    // Back into the source: the same death twice counts up one entry.
    publish(&ch, "", "source", b"m").await;
    get(&ch, "source")
        .await
        .unwrap()
        .delivery
        .nack(BasicNackOptions {
            requeue: false,
            multiple: false,
        })
        .await
        .unwrap();
    let once = get_dead(&ch, "dead").await.unwrap();
    once.delivery.ack(BasicAckOptions::default()).await.unwrap();
    publish_with(&ch, "", "source", b"m", once.delivery.properties.clone()).await;
    get(&ch, "source")
        .await
        .unwrap()
        .delivery
        .reject(BasicRejectOptions { requeue: false })
        .await
        .unwrap();
    let twice = get_dead(&ch, "dead").await.unwrap();
    let x = deaths(&twice.delivery);
    assert_eq!(x.len(), 1);
    assert_eq!(x[0].get("count"), Some(&AMQPValue::LongLongInt(2)));

    // A queue whose expired messages route back to itself drops them instead of looping.
    ch.queue_declare(
        "loop".into(),
        QueueDeclareOptions::default(),
        args(&[
            ("x-message-ttl", AMQPValue::LongInt(50)),
            ("x-dead-letter-exchange", long("")),
        ]),
    )
    .await
    .unwrap();
    publish(&ch, "", "loop", b"once").await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(get(&ch, "loop").await.is_none());
}

#[tokio::test]
async fn a_delivery_limit_counts_returns_and_dead_letters_the_poison_message() {
    let b = TestBroker::start().await;
    let (_c, ch) = b.channel().await;
    setup(
        &ch,
        &[
            ("x-queue-type", long("quorum")),
            ("x-delivery-limit", AMQPValue::LongInt(1)),
        ],
        true,
    )
    .await;
    publish(&ch, "", "source", b"poison").await;
    let first = get(&ch, "source").await.unwrap();
    // RabbitMQ 3.10 counts from 0 on basic.get.
    assert_eq!(
        headers(&first.delivery).get("x-delivery-count"),
        Some(&AMQPValue::LongLongInt(0))
    );
    first
        .delivery
        .nack(BasicNackOptions {
            requeue: true,
            multiple: false,
        })
        .await
        .unwrap();
    let second = get(&ch, "source").await.unwrap();
    assert!(second.delivery.redelivered);
    assert_eq!(
        headers(&second.delivery).get("x-delivery-count"),
        Some(&AMQPValue::LongLongInt(1))
    );
    second
        .delivery
        .nack(BasicNackOptions {
            requeue: true,
            multiple: false,
        })
        .await
        .unwrap();
    let dead = get_dead(&ch, "dead").await.expect("over the limit");
    assert_eq!(
        deaths(&dead.delivery)[0].get("reason"),
        Some(&long("delivery_limit"))
    );
    assert!(get(&ch, "source").await.is_none());
}

#[tokio::test]
async fn dead_letters_and_delivery_counts_survive_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let b = TestBroker::start_in(dir.path()).await;
    {
        let (_c, ch) = b.channel().await;
        setup(
            &ch,
            &[
                ("x-queue-type", long("quorum")),
                ("x-delivery-limit", AMQPValue::LongInt(5)),
            ],
            true,
        )
        .await;
        ch.confirm_select(ConfirmSelectOptions::default())
            .await
            .unwrap();
        for body in ["to-die", "counted"] {
            let props = BasicProperties::default().with_delivery_mode(2);
            assert!(publish_confirmed(&ch, "", "source", body.as_bytes(), props).await);
        }
        let m = get(&ch, "source").await.unwrap();
        m.delivery
            .reject(BasicRejectOptions { requeue: false })
            .await
            .unwrap();
        for _ in 0..2 {
            let m = get(&ch, "source").await.unwrap();
            assert_eq!(m.delivery.data, b"counted");
            m.delivery
                .nack(BasicNackOptions {
                    requeue: true,
                    multiple: false,
                })
                .await
                .unwrap();
        }
        // The dead-lettered copy is stored in `dead` before `source` forgets it.
        let mut stored = 0;
        for _ in 0..100 {
            stored = message_count(&ch, "dead").await;
            if stored == 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(stored, 1);
        // The source forgets its copy once the target's group commit has synced the copy; a
        // restart before that would (by design) find the message in both queues.
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let b = b.restart_in(dir.path()).await;
    let (_c, ch) = b.channel().await;
    let dead = get_dead(&ch, "dead").await.expect("dead letter survived");
    assert_eq!(dead.delivery.data, b"to-die");
    assert_eq!(
        deaths(&dead.delivery)[0].get("reason"),
        Some(&long("rejected"))
    );
    let m = get(&ch, "source").await.unwrap();
    assert_eq!(m.delivery.data, b"counted");
    assert!(m.delivery.redelivered);
    assert_eq!(
        headers(&m.delivery).get("x-delivery-count"),
        Some(&AMQPValue::LongLongInt(2)),
        "the count survives the restart"
    );
    assert!(get(&ch, "source").await.is_none(), "to-die left the source");
}

#[tokio::test]
async fn expiry_and_priorities_hold_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let b = TestBroker::start_in(dir.path()).await;
    {
        let (_c, ch) = b.channel().await;
        setup(&ch, &[("x-max-priority", AMQPValue::LongInt(5))], true).await;
        ch.confirm_select(ConfirmSelectOptions::default())
            .await
            .unwrap();
        for (body, priority, expiration) in [
            ("low", 1, None),
            ("short-lived", 3, Some("300")),
            ("high", 5, None),
            ("mid", 3, None),
        ] {
            let mut props = BasicProperties::default()
                .with_delivery_mode(2)
                .with_priority(priority);
            if let Some(e) = expiration {
                props = props.with_expiration(e.into());
            }
            assert!(publish_confirmed(&ch, "", "source", body.as_bytes(), props).await);
        }
    }
    // The stored expiry is absolute: the recovered queue expires the message on time.
    let b = b.restart_in(dir.path()).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (_c, ch) = b.channel().await;
    let mut order = Vec::new();
    while let Some(m) = get(&ch, "source").await {
        order.push(String::from_utf8(m.delivery.data.clone()).unwrap());
    }
    assert_eq!(
        order,
        vec!["high", "mid", "low"],
        "priorities kept, expiry kept"
    );
    let dead = get_dead(&ch, "dead")
        .await
        .expect("expired while the broker was down");
    assert_eq!(dead.delivery.data, b"short-lived");
    assert_eq!(
        deaths(&dead.delivery)[0].get("reason"),
        Some(&long("expired"))
    );
}
