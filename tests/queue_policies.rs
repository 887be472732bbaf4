//! TTL, queue expiry, length limits, priorities, consumer priorities, single active consumer,
//! direct reply-to and the consumer timeout, through lapin. Expected behaviour and texts are
//! RabbitMQ 3.10's (see interop/rabbitmq-3.10.8-behaviour.md).

mod common;

use std::time::Duration;

use common::*;
use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable};
use lapin::BasicProperties;
use leveret::broker::BrokerConfig;

async fn declare_with(ch: &lapin::Channel, name: &str, a: &[(&str, AMQPValue)]) -> lapin::Queue {
    ch.queue_declare(name.into(), QueueDeclareOptions::default(), args(a))
        .await
        .expect("queue.declare")
}

async fn consume(
    ch: &lapin::Channel,
    q: &str,
    no_ack: bool,
    arguments: FieldTable,
) -> lapin::Consumer {
    ch.basic_consume(
        q.into(),
        "".into(),
        BasicConsumeOptions {
            no_ack,
            ..Default::default()
        },
        arguments,
    )
    .await
    .expect("basic.consume")
}

fn text(d: &lapin::message::Delivery) -> String {
    String::from_utf8_lossy(&d.data).into_owned()
}

#[tokio::test]
async fn queue_ttl_expires_head_messages_promptly() {
    let b = TestBroker::start().await;
    let (_c, ch) = b.channel().await;
    declare_with(&ch, "ttl", &[("x-message-ttl", AMQPValue::LongInt(100))]).await;
    for i in 0..3 {
        publish(&ch, "", "ttl", format!("m{i}").as_bytes()).await;
    }
    assert_eq!(message_count(&ch, "ttl").await, 3);
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        message_count(&ch, "ttl").await,
        0,
        "expired without any consumer or get"
    );
}

#[tokio::test]
async fn per_message_expiration_and_the_smaller_ttl_wins() {
    let b = TestBroker::start().await;
    let (_c, ch) = b.channel().await;
    declare_with(&ch, "pm", &[("x-message-ttl", AMQPValue::LongInt(60_000))]).await;
    let props = |e: &str| BasicProperties::default().with_expiration(e.into());
    publish_with(&ch, "", "pm", b"short", props("100")).await;
    publish_with(&ch, "", "pm", b"long", props("100000")).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(drain(&ch, "pm").await, vec!["long"]);

    // "0": delivered only if a consumer can take it at once.
    declare(&ch, "zero").await;
    publish_with(&ch, "", "zero", b"nobody", props("0")).await;
    assert_eq!(get_body(&ch, "zero").await, None);
    let mut c = consume(&ch, "zero", true, FieldTable::default()).await;
    publish_with(&ch, "", "zero", b"taken", props("0")).await;
    assert_eq!(text(&next_delivery(&mut c).await), "taken");
}

#[tokio::test]
async fn invalid_expirations_close_the_channel_with_rabbitmq_texts() {
    let b = TestBroker::start().await;
    let conn = b.connect().await;
    declare(&conn.create_channel().await.unwrap(), "e").await;
    for (expiration, expected) in [
        (
            "abc",
            "PRECONDITION_FAILED - invalid expiration 'abc': no_integer",
        ),
        (
            "",
            "PRECONDITION_FAILED - invalid expiration '': no_integer",
        ),
        (
            "-1",
            "PRECONDITION_FAILED - invalid expiration '-1': {value_negative,-1}",
        ),
        (
            "1.5",
            "PRECONDITION_FAILED - invalid expiration '1.5': {leftover_string,\".5\"}",
        ),
    ] {
        let ch = conn.create_channel().await.unwrap();
        // Under confirms the close reaches the publish's confirm: no race with a next call.
        ch.confirm_select(ConfirmSelectOptions::default())
            .await
            .unwrap();
        let err = ch
            .basic_publish(
                "".into(),
                "e".into(),
                BasicPublishOptions::default(),
                b"x",
                BasicProperties::default().with_expiration(expiration.into()),
            )
            .await
            .unwrap()
            .await
            .expect_err("channel closed");
        assert_eq!(
            amqp_error(&err),
            (406, expected.to_owned()),
            "{expiration:?}"
        );
    }
}

#[tokio::test]
async fn invalid_queue_arguments_are_refused_with_rabbitmq_texts() {
    let b = TestBroker::start().await;
    let conn = b.connect().await;
    for (key, value, expected) in [
        (
            "x-message-ttl",
            AMQPValue::LongInt(-1),
            "{value_negative,-1}",
        ),
        (
            "x-message-ttl",
            long("abc"),
            "\"expected integer, got longstr\"",
        ),
        ("x-expires", AMQPValue::LongInt(0), "{value_zero,0}"),
        (
            "x-max-length",
            AMQPValue::LongInt(-1),
            "{value_negative,-1}",
        ),
    ] {
        let ch = conn.create_channel().await.unwrap();
        let err = ch
            .queue_declare(
                "bad".into(),
                QueueDeclareOptions::default(),
                args(&[(key, value)]),
            )
            .await
            .expect_err("refused");
        assert_eq!(
            amqp_error(&err),
            (
                406,
                format!("PRECONDITION_FAILED - invalid arg '{key}' for queue 'bad' in vhost '/': {expected}")
            )
        );
    }
}

#[tokio::test]
async fn unused_queues_expire_and_use_keeps_them() {
    let b = TestBroker::start().await;
    let (_c, ch) = b.channel().await;
    declare_with(&ch, "gone", &[("x-expires", AMQPValue::LongInt(300))]).await;
    declare_with(&ch, "kept", &[("x-expires", AMQPValue::LongInt(300))]).await;
    let _consumer = consume(&ch, "kept", true, FieldTable::default()).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    let (_c2, ch2) = b.channel().await;
    let err = ch2
        .queue_declare(
            "gone".into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .expect_err("expired queue is deleted");
    assert_eq!(amqp_error(&err).0, 404);
    assert_eq!(
        message_count(&ch, "kept").await,
        0,
        "a queue with a consumer stays"
    );
}

#[tokio::test]
async fn max_length_drops_from_the_head_by_count_and_by_bytes() {
    let b = TestBroker::start().await;
    let (_c, ch) = b.channel().await;
    declare_with(&ch, "ml", &[("x-max-length", AMQPValue::LongInt(2))]).await;
    for m in ["a", "b", "c"] {
        publish(&ch, "", "ml", m.as_bytes()).await;
    }
    assert_eq!(drain(&ch, "ml").await, vec!["b", "c"]);

    declare_with(&ch, "mb", &[("x-max-length-bytes", AMQPValue::LongInt(10))]).await;
    publish(&ch, "", "mb", b"12345").await;
    publish(&ch, "", "mb", b"12345678").await;
    assert_eq!(drain(&ch, "mb").await, vec!["12345678"]);
}

#[tokio::test]
async fn reject_publish_nacks_under_confirms_and_drops_silently_without() {
    let b = TestBroker::start().await;
    let (_c, ch) = b.channel().await;
    declare_with(
        &ch,
        "rp",
        &[
            ("x-max-length", AMQPValue::LongInt(2)),
            ("x-overflow", long("reject-publish")),
        ],
    )
    .await;
    publish(&ch, "", "rp", b"plain").await;
    let cch = b.connect().await.create_channel().await.unwrap();
    cch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let mut outcomes = Vec::new();
    for m in ["a", "b", "c"] {
        outcomes.push(
            publish_confirmed(&cch, "", "rp", m.as_bytes(), BasicProperties::default()).await,
        );
    }
    assert_eq!(outcomes, vec![true, false, false]);
    assert_eq!(drain(&ch, "rp").await, vec!["plain", "a"]);
}

#[tokio::test]
async fn priority_queues_deliver_higher_priorities_first() {
    let b = TestBroker::start().await;
    let (_c, ch) = b.channel().await;
    declare_with(&ch, "pq", &[("x-max-priority", AMQPValue::LongInt(5))]).await;
    for (body, p) in [
        ("p0", Some(0)),
        ("none", None),
        ("p9", Some(9)),
        ("p5", Some(5)),
        ("p3", Some(3)),
    ] {
        let mut props = BasicProperties::default();
        if let Some(p) = p {
            props = props.with_priority(p);
        }
        publish_with(&ch, "", "pq", body.as_bytes(), props).await;
    }
    // Priorities above the maximum count as the maximum, in arrival order.
    assert_eq!(drain(&ch, "pq").await, vec!["p9", "p5", "p3", "p0", "none"]);
}

#[tokio::test]
async fn consumer_priorities_and_single_active_consumer() {
    let b = TestBroker::start().await;
    let (_c, ch) = b.channel().await;
    declare(&ch, "cp").await;
    let (_c2, ch_high) = b.channel().await;
    ch_high
        .basic_qos(1, BasicQosOptions::default())
        .await
        .unwrap();
    let mut high = consume(
        &ch_high,
        "cp",
        false,
        args(&[("x-priority", AMQPValue::LongInt(10))]),
    )
    .await;
    let mut low = consume(&ch, "cp", true, FieldTable::default()).await;
    publish(&ch, "", "cp", b"first").await;
    publish(&ch, "", "cp", b"second").await;
    assert_eq!(text(&next_delivery(&mut high).await), "first");
    assert_eq!(
        text(&next_delivery(&mut low).await),
        "second",
        "the low-priority consumer gets messages only while the high one is full"
    );

    declare_with(
        &ch,
        "sac",
        &[("x-single-active-consumer", AMQPValue::Boolean(true))],
    )
    .await;
    let (_c3, ch_first) = b.channel().await;
    let mut first = consume(&ch_first, "sac", true, FieldTable::default()).await;
    let mut second = consume(&ch, "sac", true, FieldTable::default()).await;
    for m in ["a", "b"] {
        publish(&ch, "", "sac", m.as_bytes()).await;
    }
    assert_eq!(text(&next_delivery(&mut first).await), "a");
    assert_eq!(text(&next_delivery(&mut first).await), "b");
    assert_no_delivery(&mut second, 100).await;
    ch_first.close(200, "bye".into()).await.unwrap();
    publish(&ch, "", "sac", b"c").await;
    assert_eq!(text(&next_delivery(&mut second).await), "c", "takeover");
}

#[tokio::test]
async fn direct_reply_to_round_trip_and_misuse() {
    let b = TestBroker::start().await;
    let (_c, requester) = b.channel().await;
    let (_c2, server) = b.channel().await;
    declare(&server, "rpc").await;
    let mut replies = consume(
        &requester,
        "amq.rabbitmq.reply-to",
        true,
        FieldTable::default(),
    )
    .await;
    publish_with(
        &requester,
        "",
        "rpc",
        b"ping",
        BasicProperties::default().with_reply_to("amq.rabbitmq.reply-to".into()),
    )
    .await;
    let request = server
        .basic_get("rpc".into(), BasicGetOptions { no_ack: true })
        .await
        .unwrap()
        .unwrap();
    let reply_to = request
        .delivery
        .properties
        .reply_to()
        .clone()
        .expect("reply_to")
        .to_string();
    assert!(reply_to.starts_with("amq.rabbitmq.reply-to."), "{reply_to}");
    publish(&server, "", &reply_to, b"pong").await;
    let reply = next_delivery(&mut replies).await;
    assert_eq!(text(&reply), "pong");
    assert_eq!(reply.routing_key.as_str(), reply_to);

    let (_c3, lonely) = b.channel().await;
    lonely
        .basic_publish(
            "".into(),
            "rpc".into(),
            BasicPublishOptions::default(),
            b"x",
            BasicProperties::default().with_reply_to("amq.rabbitmq.reply-to".into()),
        )
        .await
        .unwrap();
    let err = lonely
        .basic_qos(1, BasicQosOptions::default())
        .await
        .expect_err("channel closed");
    assert_eq!(
        amqp_error(&err),
        (
            406,
            "PRECONDITION_FAILED - fast reply consumer does not exist".to_owned()
        )
    );
    let (_c4, acker) = b.channel().await;
    let err = acker
        .basic_consume(
            "amq.rabbitmq.reply-to".into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect_err("manual ack refused");
    assert_eq!(
        amqp_error(&err),
        (
            406,
            "PRECONDITION_FAILED - reply consumer cannot acknowledge".to_owned()
        )
    );
}

#[tokio::test]
async fn an_unacked_delivery_past_the_consumer_timeout_closes_its_channel() {
    let b = TestBroker::start_with(BrokerConfig {
        consumer_timeout: Some(Duration::from_millis(500)),
        ..BrokerConfig::default()
    })
    .await;
    let (_c, ch) = b.channel().await;
    declare(&ch, "slow").await;
    publish(&ch, "", "slow", b"m").await;
    let (_c2, consumer_ch) = b.channel().await;
    let mut c = consume(&consumer_ch, "slow", false, FieldTable::default()).await;
    let d = next_delivery(&mut c).await;
    assert!(!d.redelivered);
    let closed = tokio::time::timeout(Duration::from_secs(5), futures::StreamExt::next(&mut c))
        .await
        .expect("the channel is closed within 5 s");
    let err = match closed {
        Some(Err(err)) => err,
        other => panic!("expected the channel's close, got {other:?}"),
    };
    let (code, text) = amqp_error(&err);
    assert_eq!(code, 406);
    assert!(
        text.starts_with("PRECONDITION_FAILED - delivery acknowledgement on channel"),
        "{text}"
    );
    let again = ch
        .basic_get("slow".into(), BasicGetOptions { no_ack: true })
        .await
        .unwrap()
        .expect("requeued");
    assert!(again.delivery.redelivered);
}

#[tokio::test]
async fn a_requeued_head_over_the_length_limit_is_dropped_before_delivery() {
    let b = TestBroker::start().await;
    let (_c, ch) = b.channel().await;
    declare_with(&ch, "rq", &[("x-max-length", AMQPValue::LongInt(2))]).await;
    ch.basic_qos(1, BasicQosOptions::default()).await.unwrap();
    publish(&ch, "", "rq", b"h0").await;
    let mut c = consume(&ch, "rq", false, FieldTable::default()).await;
    let h0 = next_delivery(&mut c).await;
    assert_eq!(text(&h0), "h0");
    for m in ["h1", "h2", "h3", "h4"] {
        publish(&ch, "", "rq", m.as_bytes()).await;
    }
    assert_eq!(message_count(&ch, "rq").await, 2);
    h0.nack(BasicNackOptions {
        requeue: true,
        multiple: false,
    })
    .await
    .unwrap();
    // As RabbitMQ: h0 goes back to the head, the queue is over its limit, h0 is dropped.
    assert_eq!(text(&next_delivery(&mut c).await), "h3");
}

#[tokio::test]
async fn x_consumer_timeout_on_a_queue_overrides_the_default() {
    let b = TestBroker::start().await;
    let (_c, ch) = b.channel().await;
    declare_with(
        &ch,
        "qt",
        &[("x-consumer-timeout", AMQPValue::LongInt(300))],
    )
    .await;
    publish(&ch, "", "qt", b"m").await;
    let (_c2, consumer_ch) = b.channel().await;
    let mut c = consume(&consumer_ch, "qt", false, FieldTable::default()).await;
    next_delivery(&mut c).await;
    let closed = tokio::time::timeout(Duration::from_secs(5), futures::StreamExt::next(&mut c))
        .await
        .expect("closed by the queue's 300 ms timeout, not the 30-minute default");
    let Some(Err(err)) = closed else {
        panic!("expected the channel's close, got {closed:?}")
    };
    assert_eq!(
        amqp_error(&err),
        (
            406,
            "PRECONDITION_FAILED - delivery acknowledgement on channel 1 timed out. Timeout value \
             used: 300 ms. This timeout value can be configured, see consumers doc guide to learn \
             more"
                .to_owned()
        )
    );
}

#[tokio::test]
async fn a_second_reply_to_consumer_on_a_channel_is_refused() {
    let b = TestBroker::start().await;
    let (_c, ch) = b.channel().await;
    let _first = consume(&ch, "amq.rabbitmq.reply-to", true, FieldTable::default()).await;
    let err = ch
        .basic_consume(
            "amq.rabbitmq.reply-to".into(),
            "again".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .expect_err("refused");
    assert_eq!(
        amqp_error(&err),
        (
            406,
            "PRECONDITION_FAILED - reply consumer already set".to_owned()
        )
    );
}

#[tokio::test]
async fn a_message_that_expired_while_unacked_dies_when_requeued() {
    let b = TestBroker::start().await;
    let (_c, ch) = b.channel().await;
    declare(&ch, "expired-dead").await;
    declare_with(
        &ch,
        "unacked-ttl",
        &[
            ("x-message-ttl", AMQPValue::LongInt(200)),
            ("x-dead-letter-exchange", long("")),
            ("x-dead-letter-routing-key", long("expired-dead")),
        ],
    )
    .await;
    publish(&ch, "", "unacked-ttl", b"slow").await;
    let (_c2, holder) = b.channel().await;
    let held = holder
        .basic_get("unacked-ttl".into(), BasicGetOptions { no_ack: false })
        .await
        .unwrap()
        .expect("message");
    assert_eq!(held.delivery.data, b"slow");
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        message_count(&ch, "expired-dead").await,
        0,
        "nothing expires while unacked"
    );
    holder.close(200, "bye".into()).await.unwrap();
    let mut dead = None;
    for _ in 0..100 {
        dead = ch
            .basic_get("expired-dead".into(), BasicGetOptions { no_ack: true })
            .await
            .unwrap();
        if dead.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let dead = dead.expect("dead-lettered on requeue");
    let headers = dead
        .delivery
        .properties
        .headers()
        .clone()
        .unwrap_or_default();
    let Some(AMQPValue::FieldArray(deaths)) = headers.inner().get("x-death") else {
        panic!("no x-death")
    };
    let AMQPValue::FieldTable(death) = &deaths.as_slice()[0] else {
        panic!("x-death entry")
    };
    assert_eq!(death.inner().get("reason"), Some(&long("expired")));
    assert_eq!(message_count(&ch, "unacked-ttl").await, 0);
}

#[tokio::test]
async fn rejecting_into_a_missing_dead_letter_exchange_drops_the_message() {
    let b = TestBroker::start().await;
    let (_c, ch) = b.channel().await;
    declare_with(
        &ch,
        "nodlx",
        &[("x-dead-letter-exchange", long("does-not-exist"))],
    )
    .await;
    publish(&ch, "", "nodlx", b"m").await;
    let m = ch
        .basic_get("nodlx".into(), BasicGetOptions { no_ack: false })
        .await
        .unwrap()
        .unwrap();
    m.delivery
        .reject(BasicRejectOptions { requeue: false })
        .await
        .unwrap();
    assert_eq!(
        message_count(&ch, "nodlx").await,
        0,
        "dropped, and the channel is still open"
    );
}
