//! Channel and connection exceptions with RabbitMQ's reply codes and texts, through lapin.

mod common;

use common::*;
use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable};
use lapin::ExchangeKind;

fn ttl(ms: i64) -> FieldTable {
    let mut t = FieldTable::default();
    t.insert("x-message-ttl".into(), AMQPValue::LongLongInt(ms));
    t
}

#[tokio::test]
async fn passive_declare_of_missing_queue_is_404() {
    let b = TestBroker::start().await;
    let (_c, ch) = b.channel().await;
    let err = ch
        .queue_declare(
            "q".into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(
        amqp_error(&err),
        (404, "NOT_FOUND - no queue 'q' in vhost '/'".into())
    );
}

#[tokio::test]
async fn redeclare_with_other_arguments_is_406_inequivalent() {
    let b = TestBroker::start().await;
    let (c, ch) = b.channel().await;
    ch.queue_declare("q".into(), QueueDeclareOptions::default(), ttl(1000))
        .await
        .unwrap();
    let err = ch
        .queue_declare("q".into(), QueueDeclareOptions::default(), ttl(2000))
        .await
        .unwrap_err();
    assert_eq!(
        amqp_error(&err),
        (
            406,
            "PRECONDITION_FAILED - inequivalent arg 'x-message-ttl' for queue 'q' in vhost '/': received '2000' but current is '1000'"
                .into()
        )
    );
    let ch = c.create_channel().await.unwrap();
    let err = ch
        .queue_declare(
            "q".into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            ttl(1000),
        )
        .await
        .unwrap_err();
    assert_eq!(
        amqp_error(&err),
        (
            406,
            "PRECONDITION_FAILED - inequivalent arg 'durable' for queue 'q' in vhost '/': received 'true' but current is 'false'".into()
        )
    );
    let ch = c.create_channel().await.unwrap();
    ch.queue_declare("q".into(), QueueDeclareOptions::default(), ttl(1000))
        .await
        .expect("same args are fine");
}

#[tokio::test]
async fn exchange_redeclare_with_other_type_is_406() {
    let b = TestBroker::start().await;
    let (_c, ch) = b.channel().await;
    ch.exchange_declare(
        "x".into(),
        ExchangeKind::Direct,
        ExchangeDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    let err = ch
        .exchange_declare(
            "x".into(),
            ExchangeKind::Fanout,
            ExchangeDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(
        amqp_error(&err),
        (
            406,
            "PRECONDITION_FAILED - inequivalent arg 'type' for exchange 'x' in vhost '/': received 'fanout' but current is 'direct'".into()
        )
    );
}

#[tokio::test]
async fn reserved_amq_prefix_is_403() {
    let b = TestBroker::start().await;
    let (_c, ch) = b.channel().await;
    let err = ch
        .exchange_declare(
            "amq.example".into(),
            ExchangeKind::Direct,
            ExchangeDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(
        amqp_error(&err),
        (
            403,
            "ACCESS_REFUSED - exchange name 'amq.example' contains reserved prefix 'amq.*'".into()
        )
    );
}

#[tokio::test]
async fn binding_to_the_default_exchange_is_403() {
    let b = TestBroker::start().await;
    let (_c, ch) = b.channel().await;
    declare(&ch, "q").await;
    let err = ch
        .queue_bind(
            "q".into(),
            "".into(),
            "k".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(
        amqp_error(&err),
        (
            403,
            "ACCESS_REFUSED - operation not permitted on the default exchange".into()
        )
    );
}

#[tokio::test]
async fn publish_to_missing_exchange_closes_the_channel_with_404() {
    let b = TestBroker::start().await;
    let (c, ch) = b.channel().await;
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let result = ch
        .basic_publish(
            "nope".into(),
            "k".into(),
            BasicPublishOptions::default(),
            b"x",
            Default::default(),
        )
        .await;
    let err = match result {
        Ok(confirm) => confirm.await.unwrap_err(),
        Err(e) => e,
    };
    assert_eq!(
        amqp_error(&err),
        (404, "NOT_FOUND - no exchange 'nope' in vhost '/'".into())
    );
    assert!(
        c.status().connected(),
        "a channel error leaves the connection open"
    );
    let ch2 = c.create_channel().await.unwrap();
    declare(&ch2, "still-works").await;
}

#[tokio::test]
async fn ack_of_unknown_delivery_tag_is_406() {
    let b = TestBroker::start().await;
    let (_c, ch) = b.channel().await;
    ch.basic_ack(999, BasicAckOptions::default()).await.unwrap();
    assert_closed_with(&ch, 406, "PRECONDITION_FAILED - unknown delivery tag 999").await;
}

/// After an asynchronous method (ack), the broker closes the channel. lapin reports the close
/// reason to a call in flight; a call made after the close has been processed only learns that
/// the channel is closed (the exact text is checked by the pika suite, which always sees it).
async fn assert_closed_with(ch: &lapin::Channel, code: u16, text: &str) {
    match ch
        .queue_declare(
            "probe".into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
    {
        Ok(_) => panic!("channel was not closed"),
        Err(e) => match e.kind() {
            lapin::ErrorKind::ProtocolError(_) => {
                assert_eq!(amqp_error(&e), (code, text.to_owned()))
            }
            _ => assert!(!ch.status().connected(), "{e:?}"),
        },
    }
}

#[tokio::test]
async fn double_ack_is_406() {
    let b = TestBroker::start().await;
    let (_c, ch) = b.channel().await;
    declare(&ch, "q").await;
    publish(&ch, "", "q", b"x").await;
    let m = ch
        .basic_get("q".into(), BasicGetOptions::default())
        .await
        .unwrap()
        .unwrap();
    let tag = m.delivery.delivery_tag;
    ch.basic_ack(tag, BasicAckOptions::default()).await.unwrap();
    ch.basic_ack(tag, BasicAckOptions::default()).await.unwrap();
    assert_closed_with(
        &ch,
        406,
        &format!("PRECONDITION_FAILED - unknown delivery tag {tag}"),
    )
    .await;
}

#[tokio::test]
async fn second_consumer_on_exclusively_consumed_queue_is_403() {
    let b = TestBroker::start().await;
    let (_c, ch) = b.channel().await;
    declare(&ch, "q").await;
    let _held = ch
        .basic_consume(
            "q".into(),
            "a".into(),
            BasicConsumeOptions {
                exclusive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    let (_c2, ch2) = b.channel().await;
    let err = ch2
        .basic_consume(
            "q".into(),
            "b".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(
        amqp_error(&err),
        (
            403,
            "ACCESS_REFUSED - queue 'q' in vhost '/' in exclusive use".into()
        )
    );
}

#[tokio::test]
async fn reusing_a_consumer_tag_is_a_connection_error_530() {
    let b = TestBroker::start().await;
    let (c, ch) = b.channel().await;
    declare(&ch, "q").await;
    ch.basic_consume(
        "q".into(),
        "t".into(),
        BasicConsumeOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    let err = ch
        .basic_consume(
            "q".into(),
            "t".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(
        amqp_error(&err),
        (
            530,
            "NOT_ALLOWED - attempt to reuse consumer tag 't'".into()
        )
    );
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    assert!(!c.status().connected());
}

#[tokio::test]
async fn confirm_and_tx_exclude_each_other() {
    let b = TestBroker::start().await;
    let (c, ch) = b.channel().await;
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let err = ch.tx_select().await.unwrap_err();
    assert_eq!(
        amqp_error(&err),
        (
            406,
            "PRECONDITION_FAILED - cannot switch from confirm to tx mode".into()
        )
    );
    let ch = c.create_channel().await.unwrap();
    ch.tx_select().await.unwrap();
    let err = ch
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap_err();
    assert_eq!(
        amqp_error(&err),
        (
            406,
            "PRECONDITION_FAILED - cannot switch from tx to confirm mode".into()
        )
    );
    let ch = c.create_channel().await.unwrap();
    let err = ch.tx_commit().await.unwrap_err();
    assert_eq!(
        amqp_error(&err),
        (
            406,
            "PRECONDITION_FAILED - channel is not transactional".into()
        )
    );
}

#[tokio::test]
async fn delete_if_unused_and_if_empty_are_406() {
    let b = TestBroker::start().await;
    let (c, ch) = b.channel().await;
    declare(&ch, "q").await;
    publish(&ch, "", "q", b"x").await;
    let err = ch
        .queue_delete(
            "q".into(),
            QueueDeleteOptions {
                if_empty: true,
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(
        amqp_error(&err),
        (
            406,
            "PRECONDITION_FAILED - queue 'q' in vhost '/' not empty".into()
        )
    );
    let ch = c.create_channel().await.unwrap();
    let _held = ch
        .basic_consume(
            "q".into(),
            "t".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let ch2 = c.create_channel().await.unwrap();
    let err = ch2
        .queue_delete(
            "q".into(),
            QueueDeleteOptions {
                if_unused: true,
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(
        amqp_error(&err),
        (
            406,
            "PRECONDITION_FAILED - queue 'q' in vhost '/' in use".into()
        )
    );
}

#[tokio::test]
async fn wrong_password_is_refused() {
    let b = TestBroker::start().await;
    let uri = format!("amqp://guest:wrong@{}/%2f", b.addr);
    let err = lapin::Connection::connect(&uri, Default::default())
        .await
        .unwrap_err();
    let text = format!("{err:?}");
    assert!(
        text.contains("ACCESS_REFUSED") || text.contains("403"),
        "{text}"
    );
}

#[tokio::test]
async fn unknown_vhost_is_530() {
    let b = TestBroker::start().await;
    let uri = format!("amqp://guest:guest@{}/nope", b.addr);
    let err = lapin::Connection::connect(&uri, Default::default())
        .await
        .unwrap_err();
    assert_eq!(
        amqp_error(&err),
        (530, "NOT_ALLOWED - vhost nope not found".into())
    );
}

#[tokio::test]
async fn a_user_id_other_than_the_login_is_406() {
    let b = TestBroker::start().await;
    let (_c, ch) = b.channel().await;
    declare(&ch, "uid").await;
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let mine = lapin::BasicProperties::default().with_user_id("guest".into());
    assert!(publish_confirmed(&ch, "", "uid", b"mine", mine).await);
    assert_eq!(get_body(&ch, "uid").await.as_deref(), Some(&b"mine"[..]));
    // Under confirms the close reaches this publish's confirm, with no race against a next call.
    let err = ch
        .basic_publish(
            "".into(),
            "uid".into(),
            BasicPublishOptions::default(),
            b"theirs",
            lapin::BasicProperties::default().with_user_id("mallory".into()),
        )
        .await
        .unwrap()
        .await
        .expect_err("channel closed");
    assert_eq!(
        amqp_error(&err),
        (
            406,
            "PRECONDITION_FAILED - user_id property set to 'mallory' but authenticated user was \
             'guest'"
                .to_owned()
        )
    );
}

#[tokio::test]
async fn a_body_over_max_message_size_is_406() {
    let config = leveret::broker::BrokerConfig {
        max_message_size: 1000,
        ..Default::default()
    };
    let b = TestBroker::start_with(config).await;
    let (_c, ch) = b.channel().await;
    declare(&ch, "sized").await;
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    assert!(publish_confirmed(&ch, "", "sized", &[0; 1000], Default::default()).await);
    let err = ch
        .basic_publish(
            "".into(),
            "sized".into(),
            BasicPublishOptions::default(),
            &[0; 2000],
            Default::default(),
        )
        .await
        .unwrap()
        .await
        .expect_err("channel closed");
    assert_eq!(
        amqp_error(&err),
        (
            406,
            "PRECONDITION_FAILED - message size 2000 is larger than configured max size 1000"
                .to_owned()
        )
    );
}
