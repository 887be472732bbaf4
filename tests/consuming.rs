//! Consumers, prefetch, acknowledgements and requeue, through lapin.

mod common;

use std::time::Duration;

use common::*;
use lapin::options::*;
use lapin::types::FieldTable;

async fn consume(ch: &lapin::Channel, q: &str, tag: &str, no_ack: bool) -> lapin::Consumer {
    ch.basic_consume(
        q.into(),
        tag.into(),
        BasicConsumeOptions {
            no_ack,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .expect("basic.consume")
}

#[tokio::test]
async fn consumers_share_a_queue_round_robin() {
    let b = TestBroker::start().await;
    let (_c, ch) = b.channel().await;
    declare(&ch, "rr").await;
    let mut c1 = consume(&ch, "rr", "c1", true).await;
    let mut c2 = consume(&ch, "rr", "c2", true).await;
    for i in 0..4 {
        publish(&ch, "", "rr", format!("m{i}").as_bytes()).await;
    }
    let a: Vec<_> = [next_delivery(&mut c1).await, next_delivery(&mut c1).await]
        .iter()
        .map(|d| String::from_utf8_lossy(&d.data).into_owned())
        .collect();
    let b2: Vec<_> = [next_delivery(&mut c2).await, next_delivery(&mut c2).await]
        .iter()
        .map(|d| String::from_utf8_lossy(&d.data).into_owned())
        .collect();
    assert_eq!(a, vec!["m0", "m2"]);
    assert_eq!(b2, vec!["m1", "m3"]);
}

#[tokio::test]
async fn prefetch_limits_unacked_deliveries_per_consumer() {
    let b = TestBroker::start().await;
    let (_c, ch) = b.channel().await;
    declare(&ch, "pf").await;
    for i in 0..5 {
        publish(&ch, "", "pf", format!("m{i}").as_bytes()).await;
    }
    ch.basic_qos(2, BasicQosOptions::default()).await.unwrap();
    let mut c = consume(&ch, "pf", "c", false).await;
    let d1 = next_delivery(&mut c).await;
    let _d2 = next_delivery(&mut c).await;
    assert_no_delivery(&mut c, 200).await;
    let q = ch
        .queue_declare(
            "pf".into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    assert_eq!(
        q.message_count(),
        3,
        "declare-ok counts ready messages only"
    );
    assert_eq!(q.consumer_count(), 1);
    d1.acker.ack(BasicAckOptions::default()).await.unwrap();
    let d3 = next_delivery(&mut c).await;
    assert_eq!(d3.data, b"m2");
    assert_no_delivery(&mut c, 200).await;
}

#[tokio::test]
async fn global_qos_is_shared_by_the_channel() {
    let b = TestBroker::start().await;
    let (_c, ch) = b.channel().await;
    declare(&ch, "g1").await;
    declare(&ch, "g2").await;
    ch.basic_qos(1, BasicQosOptions { global: true })
        .await
        .unwrap();
    for q in ["g1", "g2"] {
        publish(&ch, "", q, b"x").await;
        publish(&ch, "", q, b"y").await;
    }
    let mut c1 = consume(&ch, "g1", "c1", false).await;
    let mut c2 = consume(&ch, "g2", "c2", false).await;
    let first = tokio::select! {
        d = next_delivery(&mut c1) => d,
        d = next_delivery(&mut c2) => d,
    };
    assert_no_delivery(&mut c1, 150).await;
    assert_no_delivery(&mut c2, 150).await;
    first.acker.ack(BasicAckOptions::default()).await.unwrap();
    let second = tokio::select! {
        d = next_delivery(&mut c1) => d,
        d = next_delivery(&mut c2) => d,
    };
    assert_eq!(second.data.len(), 1);
}

#[tokio::test]
async fn requeued_message_returns_first_and_redelivered() {
    let b = TestBroker::start().await;
    let (_c, ch) = b.channel().await;
    declare(&ch, "rq").await;
    for m in ["a", "b", "c"] {
        publish(&ch, "", "rq", m.as_bytes()).await;
    }
    let a = ch
        .basic_get("rq".into(), BasicGetOptions::default())
        .await
        .unwrap()
        .unwrap();
    let bm = ch
        .basic_get("rq".into(), BasicGetOptions::default())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(a.message_count, 2, "get-ok counts the messages left");
    assert_eq!(bm.message_count, 1);
    bm.delivery
        .acker
        .nack(BasicNackOptions {
            requeue: true,
            ..Default::default()
        })
        .await
        .unwrap();
    a.delivery
        .acker
        .reject(BasicRejectOptions { requeue: true })
        .await
        .unwrap();
    let mut order = Vec::new();
    while let Some(m) = ch
        .basic_get("rq".into(), BasicGetOptions { no_ack: true })
        .await
        .unwrap()
    {
        order.push((
            String::from_utf8(m.delivery.data).unwrap(),
            m.delivery.redelivered,
        ));
    }
    assert_eq!(
        order,
        vec![("a".into(), true), ("b".into(), true), ("c".into(), false)],
        "original order restored, requeued ones flagged"
    );
}

#[tokio::test]
async fn nack_without_requeue_drops_and_multiple_ack_settles_all() {
    let b = TestBroker::start().await;
    let (_c, ch) = b.channel().await;
    declare(&ch, "na").await;
    for m in ["a", "b", "c", "d"] {
        publish(&ch, "", "na", m.as_bytes()).await;
    }
    let mut c = consume(&ch, "na", "c", false).await;
    let mut tags = Vec::new();
    for _ in 0..4 {
        tags.push(next_delivery(&mut c).await.delivery_tag);
    }
    ch.basic_nack(
        tags[0],
        BasicNackOptions {
            requeue: false,
            multiple: false,
        },
    )
    .await
    .unwrap();
    ch.basic_ack(tags[3], BasicAckOptions { multiple: true })
        .await
        .unwrap();
    ch.basic_cancel("c".into(), BasicCancelOptions::default())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(drain(&ch, "na").await.is_empty());
}

#[tokio::test]
async fn unacked_messages_are_requeued_in_order_when_the_channel_closes() {
    let b = TestBroker::start().await;
    let conn = b.connect().await;
    let ch1 = conn.create_channel().await.unwrap();
    declare(&ch1, "cl").await;
    for m in ["a", "b", "c"] {
        publish(&ch1, "", "cl", m.as_bytes()).await;
    }
    let mut c = consume(&ch1, "cl", "c", false).await;
    for _ in 0..3 {
        next_delivery(&mut c).await;
    }
    ch1.close(200, "bye".into()).await.unwrap();
    let ch2 = conn.create_channel().await.unwrap();
    let mut got = Vec::new();
    while let Some(m) = ch2
        .basic_get("cl".into(), BasicGetOptions { no_ack: true })
        .await
        .unwrap()
    {
        assert!(m.delivery.redelivered);
        got.push(String::from_utf8(m.delivery.data).unwrap());
    }
    assert_eq!(got, vec!["a", "b", "c"]);
}

#[tokio::test]
async fn unacked_messages_are_requeued_when_the_connection_drops() {
    let b = TestBroker::start().await;
    let (c1, ch1) = b.channel().await;
    declare(&ch1, "drop").await;
    publish(&ch1, "", "drop", b"x").await;
    let mut c = consume(&ch1, "drop", "c", false).await;
    next_delivery(&mut c).await;
    c1.close(200, "bye".into()).await.unwrap();
    let (_c2, ch2) = b.channel().await;
    let mut got = None;
    for _ in 0..50 {
        got = ch2
            .basic_get("drop".into(), BasicGetOptions { no_ack: true })
            .await
            .unwrap();
        if got.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let got = got.expect("requeued");
    assert!(got.delivery.redelivered);
}

#[tokio::test]
async fn basic_recover_requeues_unacked() {
    let b = TestBroker::start().await;
    let (_c, ch) = b.channel().await;
    declare(&ch, "rec").await;
    publish(&ch, "", "rec", b"x").await;
    let m = ch
        .basic_get("rec".into(), BasicGetOptions::default())
        .await
        .unwrap()
        .unwrap();
    assert!(!m.delivery.redelivered);
    ch.basic_recover(BasicRecoverOptions { requeue: true })
        .await
        .unwrap();
    let again = ch
        .basic_get("rec".into(), BasicGetOptions { no_ack: true })
        .await
        .unwrap()
        .unwrap();
    assert!(again.delivery.redelivered);
}

#[tokio::test]
async fn deleting_a_queue_cancels_its_consumers() {
    let b = TestBroker::start().await;
    let (_c, ch) = b.channel().await;
    declare(&ch, "gone").await;
    let mut c = consume(&ch, "gone", "c", true).await;
    let (_c2, ch2) = b.channel().await;
    let deleted = ch2
        .queue_delete("gone".into(), QueueDeleteOptions::default())
        .await
        .unwrap();
    assert_eq!(deleted, 0);
    let end = tokio::time::timeout(Duration::from_secs(5), futures::StreamExt::next(&mut c))
        .await
        .unwrap();
    assert!(
        end.is_none(),
        "consumer stream ends on basic.cancel from the server"
    );
}

#[tokio::test]
async fn auto_delete_queue_goes_with_its_last_consumer() {
    let b = TestBroker::start().await;
    let (_c, ch) = b.channel().await;
    ch.queue_declare(
        "ad".into(),
        QueueDeclareOptions {
            auto_delete: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .unwrap();
    let _consumer = consume(&ch, "ad", "c", true).await;
    ch.basic_cancel("c".into(), BasicCancelOptions::default())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let err = ch
        .queue_declare(
            "ad".into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(amqp_error(&err).0, 404);
}

#[tokio::test]
async fn exclusive_queue_is_deleted_with_its_connection_and_locked_to_others() {
    let b = TestBroker::start().await;
    let (c1, ch1) = b.channel().await;
    let q = ch1
        .queue_declare(
            "".into(),
            QueueDeclareOptions {
                exclusive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    let name = q.name().to_string();
    assert!(name.starts_with("amq.gen-"), "{name}");
    let (_c2, ch2) = b.channel().await;
    let err = ch2
        .basic_consume(
            name.as_str().into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap_err();
    let (code, text) = amqp_error(&err);
    assert_eq!(code, 405);
    assert!(
        text.starts_with("RESOURCE_LOCKED - cannot obtain exclusive access to locked queue"),
        "{text}"
    );
    c1.close(200, "bye".into()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let ch3 = b.connect().await.create_channel().await.unwrap();
    let err = ch3
        .queue_declare(
            name.as_str().into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(amqp_error(&err).0, 404);
}

#[tokio::test]
async fn purge_and_delete_report_counts() {
    let b = TestBroker::start().await;
    let (_c, ch) = b.channel().await;
    declare(&ch, "pc").await;
    for _ in 0..3 {
        publish(&ch, "", "pc", b"x").await;
    }
    assert_eq!(
        ch.queue_purge("pc".into(), QueuePurgeOptions::default())
            .await
            .unwrap(),
        3
    );
    publish(&ch, "", "pc", b"y").await;
    publish(&ch, "", "pc", b"z").await;
    assert_eq!(declare(&ch, "pc").await.message_count(), 2);
    assert_eq!(
        ch.queue_delete("pc".into(), QueueDeleteOptions::default())
            .await
            .unwrap(),
        2
    );
}

#[tokio::test]
async fn slow_consumer_does_not_stall_a_fast_one() {
    let b = TestBroker::start().await;
    let (_c, ch) = b.channel().await;
    declare(&ch, "sf").await;
    ch.basic_qos(1, BasicQosOptions::default()).await.unwrap();
    let mut slow = consume(&ch, "sf", "slow", false).await;
    let (_c2, ch2) = b.channel().await;
    let mut fast = consume(&ch2, "sf", "fast", true).await;
    for i in 0..100 {
        publish(&ch, "", "sf", format!("{i}").as_bytes()).await;
    }
    let _held = next_delivery(&mut slow).await;
    let mut n = 0;
    while n < 99 {
        next_delivery(&mut fast).await;
        n += 1;
    }
    assert_no_delivery(&mut slow, 100).await;
}

#[tokio::test]
async fn transactions_defer_publishes_and_acks() {
    let b = TestBroker::start().await;
    let (_c, ch) = b.channel().await;
    declare(&ch, "tx").await;
    publish(&ch, "", "tx", b"before").await;
    ch.tx_select().await.unwrap();
    let m = ch
        .basic_get("tx".into(), BasicGetOptions::default())
        .await
        .unwrap()
        .unwrap();
    m.delivery
        .acker
        .ack(BasicAckOptions::default())
        .await
        .unwrap();
    publish(&ch, "", "tx", b"in-tx").await;
    let (_c2, ch2) = b.channel().await;
    assert_eq!(
        declare(&ch2, "tx").await.message_count(),
        0,
        "nothing visible before commit"
    );
    ch.tx_rollback().await.unwrap();
    assert_eq!(declare(&ch2, "tx").await.message_count(), 0);
    publish(&ch, "", "tx", b"committed").await;
    ch.tx_commit().await.unwrap();
    assert_eq!(declare(&ch2, "tx").await.message_count(), 1);
    ch.close(200, "bye".into()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(
        drain(&ch2, "tx").await,
        vec!["before", "committed"],
        "rolled-back ack left 'before' unacked"
    );
}

#[tokio::test]
async fn publisher_confirms_ack_every_publish() {
    let b = TestBroker::start().await;
    let (_c, ch) = b.channel().await;
    declare(&ch, "cf").await;
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let mut confirms = Vec::new();
    for i in 0..500 {
        confirms.push(
            ch.basic_publish(
                "".into(),
                "cf".into(),
                BasicPublishOptions::default(),
                format!("{i}").as_bytes(),
                Default::default(),
            )
            .await
            .unwrap(),
        );
    }
    for c in confirms {
        assert!(c.await.unwrap().is_ack());
    }
    assert_eq!(declare(&ch, "cf").await.message_count(), 500);
}

#[tokio::test]
async fn large_bodies_cross_frame_boundaries_intact() {
    let b = TestBroker::start().await;
    let (_c, ch) = b.channel().await;
    declare(&ch, "big").await;
    let body: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
    publish(&ch, "", "big", &body).await;
    let got = get_body(&ch, "big").await.unwrap();
    assert_eq!(got, body);
}

#[tokio::test]
async fn the_broker_caps_unacked_deliveries_per_channel() {
    let config = leveret::broker::BrokerConfig {
        max_unacked_per_channel: 3,
        ..Default::default()
    };
    let b = TestBroker::start_with(config).await;
    let (_c, ch) = b.channel().await;
    declare(&ch, "capped").await;
    for i in 0..10 {
        publish(&ch, "", "capped", format!("{i}").as_bytes()).await;
    }
    // No prefetch asked for: the cap still holds deliveries to 3 until acks come.
    let mut consumer = ch
        .basic_consume(
            "capped".into(),
            "".into(),
            Default::default(),
            Default::default(),
        )
        .await
        .unwrap();
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(next_delivery(&mut consumer).await);
    }
    assert_no_delivery(&mut consumer, 300).await;
    held[0].ack(Default::default()).await.unwrap();
    let fourth = next_delivery(&mut consumer).await;
    assert_eq!(fourth.data, b"3");
    assert_no_delivery(&mut consumer, 200).await;
    // A global prefetch above the cap is bounded by it too.
    ch.basic_qos(100, BasicQosOptions { global: true })
        .await
        .unwrap();
    assert_no_delivery(&mut consumer, 200).await;
}
