//! Routing through every exchange type, through lapin.

mod common;

use common::*;
use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, ExchangeKind};

async fn bind(ch: &lapin::Channel, q: &str, x: &str, key: &str, args: FieldTable) {
    ch.queue_bind(
        q.into(),
        x.into(),
        key.into(),
        QueueBindOptions::default(),
        args,
    )
    .await
    .expect("queue.bind");
}

#[tokio::test]
async fn default_exchange_routes_by_queue_name() {
    let b = TestBroker::start().await;
    let (_c, ch) = b.channel().await;
    declare(&ch, "q1").await;
    publish(&ch, "", "q1", b"hello").await;
    publish(&ch, "", "nowhere", b"lost").await;
    assert_eq!(drain(&ch, "q1").await, vec!["hello"]);
}

#[tokio::test]
async fn direct_fanout_and_topic_route_as_rabbitmq() {
    let b = TestBroker::start().await;
    let (_c, ch) = b.channel().await;
    for q in ["d", "f1", "f2", "t1", "t2", "t3"] {
        declare(&ch, q).await;
    }
    bind(&ch, "d", "amq.direct", "k", FieldTable::default()).await;
    bind(&ch, "f1", "amq.fanout", "ignored", FieldTable::default()).await;
    bind(&ch, "f2", "amq.fanout", "", FieldTable::default()).await;
    bind(&ch, "t1", "amq.topic", "a.*.c", FieldTable::default()).await;
    bind(&ch, "t2", "amq.topic", "a.#", FieldTable::default()).await;
    bind(&ch, "t3", "amq.topic", "#.c", FieldTable::default()).await;
    publish(&ch, "amq.direct", "k", b"d1").await;
    publish(&ch, "amq.direct", "other", b"d2").await;
    publish(&ch, "amq.fanout", "x", b"f").await;
    publish(&ch, "amq.topic", "a.b.c", b"abc").await;
    publish(&ch, "amq.topic", "a", b"a").await;
    publish(&ch, "amq.topic", "c", b"c").await;
    publish(&ch, "amq.topic", "a.b.b.c", b"abbc").await;
    assert_eq!(drain(&ch, "d").await, vec!["d1"]);
    assert_eq!(drain(&ch, "f1").await, vec!["f"]);
    assert_eq!(drain(&ch, "f2").await, vec!["f"]);
    assert_eq!(drain(&ch, "t1").await, vec!["abc"]);
    assert_eq!(drain(&ch, "t2").await, vec!["abc", "a", "abbc"]);
    assert_eq!(drain(&ch, "t3").await, vec!["abc", "c", "abbc"]);
}

#[tokio::test]
async fn headers_exchange_matches_all_and_any() {
    let b = TestBroker::start().await;
    let (_c, ch) = b.channel().await;
    declare(&ch, "all").await;
    declare(&ch, "any").await;
    let mut all = FieldTable::default();
    all.insert("x-match".into(), AMQPValue::LongString("all".into()));
    all.insert("a".into(), AMQPValue::LongInt(1));
    all.insert("b".into(), AMQPValue::LongString("x".into()));
    let mut any = all.clone();
    any.insert("x-match".into(), AMQPValue::LongString("any".into()));
    bind(&ch, "all", "amq.headers", "", all).await;
    bind(&ch, "any", "amq.headers", "", any).await;
    let headers = |pairs: &[(&str, AMQPValue)]| {
        let mut t = FieldTable::default();
        for (k, v) in pairs {
            t.insert((*k).into(), v.clone());
        }
        BasicProperties::default().with_headers(t)
    };
    publish_with(
        &ch,
        "amq.headers",
        "",
        b"both",
        headers(&[
            ("a", AMQPValue::ShortInt(1)),
            ("b", AMQPValue::LongString("x".into())),
        ]),
    )
    .await;
    publish_with(
        &ch,
        "amq.headers",
        "",
        b"one",
        headers(&[("a", AMQPValue::LongInt(1))]),
    )
    .await;
    publish_with(
        &ch,
        "amq.headers",
        "",
        b"string-one",
        headers(&[("a", AMQPValue::LongString("1".into()))]),
    )
    .await;
    assert_eq!(drain(&ch, "all").await, vec!["both"]);
    assert_eq!(drain(&ch, "any").await, vec!["both", "one"]);
}

#[tokio::test]
async fn exchange_to_exchange_bindings_and_cycles() {
    let b = TestBroker::start().await;
    let (_c, ch) = b.channel().await;
    for x in ["x1", "x2"] {
        ch.exchange_declare(
            x.into(),
            ExchangeKind::Fanout,
            ExchangeDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    }
    ch.exchange_bind(
        "x2".into(),
        "x1".into(),
        "".into(),
        ExchangeBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    ch.exchange_bind(
        "x1".into(),
        "x2".into(),
        "".into(),
        ExchangeBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    declare(&ch, "q").await;
    bind(&ch, "q", "x2", "", FieldTable::default()).await;
    publish(&ch, "x1", "", b"once").await;
    assert_eq!(
        drain(&ch, "q").await,
        vec!["once"],
        "delivered once despite the cycle"
    );
}

#[tokio::test]
async fn alternate_exchange_takes_unroutable_messages() {
    let b = TestBroker::start().await;
    let (_c, ch) = b.channel().await;
    ch.exchange_declare(
        "ae".into(),
        ExchangeKind::Fanout,
        ExchangeDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    let mut args = FieldTable::default();
    args.insert(
        "alternate-exchange".into(),
        AMQPValue::LongString("ae".into()),
    );
    ch.exchange_declare(
        "main".into(),
        ExchangeKind::Direct,
        ExchangeDeclareOptions::default(),
        args,
    )
    .await
    .unwrap();
    declare(&ch, "routed").await;
    declare(&ch, "unrouted").await;
    bind(&ch, "routed", "main", "k", FieldTable::default()).await;
    bind(&ch, "unrouted", "ae", "", FieldTable::default()).await;
    publish(&ch, "main", "k", b"a").await;
    publish(&ch, "main", "other", b"b").await;
    assert_eq!(drain(&ch, "routed").await, vec!["a"]);
    let got = ch
        .basic_get("unrouted".into(), BasicGetOptions { no_ack: true })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.delivery.data, b"b");
    assert_eq!(
        got.delivery.exchange.as_str(),
        "main",
        "AE delivery keeps the original exchange"
    );
}

#[tokio::test]
async fn cc_routes_copies_and_bcc_is_stripped() {
    let b = TestBroker::start().await;
    let (_c, ch) = b.channel().await;
    for q in ["main", "cc", "bcc"] {
        declare(&ch, q).await;
    }
    let mut headers = FieldTable::default();
    headers.insert(
        "CC".into(),
        AMQPValue::FieldArray(vec![AMQPValue::LongString("cc".into())].into()),
    );
    headers.insert(
        "BCC".into(),
        AMQPValue::FieldArray(vec![AMQPValue::LongString("bcc".into())].into()),
    );
    publish_with(
        &ch,
        "",
        "main",
        b"m",
        BasicProperties::default().with_headers(headers),
    )
    .await;
    for q in ["main", "cc", "bcc"] {
        let got = ch
            .basic_get(q.into(), BasicGetOptions { no_ack: true })
            .await
            .unwrap()
            .unwrap();
        let h = got.delivery.properties.headers().clone().unwrap();
        assert!(h.inner().contains_key("CC"), "{q}: CC kept");
        assert!(!h.inner().contains_key("BCC"), "{q}: BCC stripped");
    }
}

#[tokio::test]
async fn mandatory_unroutable_message_is_returned_before_its_confirm() {
    let b = TestBroker::start().await;
    let (_c, ch) = b.channel().await;
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let confirm = ch
        .basic_publish(
            "".into(),
            "no-such-queue".into(),
            BasicPublishOptions {
                mandatory: true,
                ..Default::default()
            },
            b"r",
            BasicProperties::default(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    assert!(confirm.is_ack());
    let returned = confirm.take_message().expect("basic.return before the ack");
    assert_eq!(returned.reply_code, 312);
    assert_eq!(returned.reply_text.as_str(), "NO_ROUTE");
    assert_eq!(returned.delivery.data, b"r");
}

#[tokio::test]
async fn every_field_table_type_round_trips_with_its_type() {
    use lapin::types::{ByteArray, DecimalValue, FieldArray, LongString};
    let b = TestBroker::start().await;
    let (_c, ch) = b.channel().await;
    declare(&ch, "types").await;
    let mut nested = FieldTable::default();
    nested.insert("inner".into(), AMQPValue::LongInt(-7));
    let mut headers = FieldTable::default();
    let values = [
        ("t", AMQPValue::Boolean(true)),
        ("b", AMQPValue::ShortShortInt(-8)),
        ("B", AMQPValue::ShortShortUInt(200)),
        ("s", AMQPValue::ShortInt(-300)),
        ("u", AMQPValue::ShortUInt(60000)),
        ("I", AMQPValue::LongInt(-70000)),
        ("i", AMQPValue::LongUInt(4_000_000_000)),
        ("l", AMQPValue::LongLongInt(-9_000_000_000)),
        ("f", AMQPValue::Float(1.5)),
        ("d", AMQPValue::Double(2.25)),
        (
            "D",
            AMQPValue::DecimalValue(DecimalValue {
                scale: 2,
                value: 12345,
            }),
        ),
        ("S", AMQPValue::LongString(LongString::from("text"))),
        (
            "A",
            AMQPValue::FieldArray(FieldArray::from(vec![
                AMQPValue::LongInt(1),
                AMQPValue::Boolean(false),
            ])),
        ),
        ("T", AMQPValue::Timestamp(1_700_000_000)),
        ("F", AMQPValue::FieldTable(nested)),
        (
            "x",
            AMQPValue::ByteArray(ByteArray::from(vec![0u8, 1, 255])),
        ),
        ("V", AMQPValue::Void),
    ];
    for (k, v) in &values {
        headers.insert((*k).into(), v.clone());
    }
    let props = BasicProperties::default()
        .with_headers(headers.clone())
        .with_content_type("application/x".into())
        .with_priority(3)
        .with_correlation_id("c".into())
        .with_message_id("m".into())
        .with_timestamp(42)
        .with_app_id("app".into());
    publish_with(&ch, "", "types", b"x", props.clone()).await;
    let got = ch
        .basic_get("types".into(), BasicGetOptions { no_ack: true })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        got.delivery.properties, props,
        "properties come back byte for byte"
    );
}
