//! Streams through lapin: durability across kill -9, retention by size and age, tracked offsets
//! across restarts, many consumers at their own offsets, replay from disk while the tail flows,
//! filtering. (RabbitMQ's wire behaviour, texts and offsets are checked against RabbitMQ itself
//! in interop/python/test_streams.py.)

mod common;

use std::time::Duration;

use common::*;
use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};

fn stream_args(extra: &[(&str, AMQPValue)]) -> FieldTable {
    let mut pairs = vec![("x-queue-type", long("stream"))];
    pairs.extend(extra.iter().cloned());
    args(&pairs)
}

async fn declare_stream(ch: &Channel, name: &str, extra: &[(&str, AMQPValue)]) -> u32 {
    ch.queue_declare(name.into(), durable(), stream_args(extra))
        .await
        .expect("declare stream")
        .message_count()
}

async fn publish_all(ch: &Channel, name: &str, bodies: impl Iterator<Item = Vec<u8>>) {
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let mut pending = Vec::new();
    for body in bodies {
        pending.push(
            ch.basic_publish(
                "".into(),
                name.into(),
                BasicPublishOptions::default(),
                &body,
                BasicProperties::default(),
            )
            .await
            .unwrap(),
        );
        if pending.len() >= 256 {
            for c in pending.drain(..) {
                assert!(c.await.unwrap().is_ack());
            }
        }
    }
    for c in pending {
        assert!(c.await.unwrap().is_ack());
    }
}

fn offset_of(d: &lapin::message::Delivery) -> i64 {
    match d
        .properties
        .headers()
        .as_ref()
        .and_then(|h| h.inner().get("x-stream-offset"))
    {
        Some(AMQPValue::LongLongInt(o)) => *o,
        other => panic!("no x-stream-offset: {other:?}"),
    }
}

/// Read `n` deliveries from `offset` on, acking each; returns (offset, body).
async fn read(
    conn: &Connection,
    name: &str,
    tag: &str,
    offset: Option<AMQPValue>,
    n: usize,
) -> Vec<(i64, Vec<u8>)> {
    let ch = conn.create_channel().await.unwrap();
    ch.basic_qos(200, BasicQosOptions::default()).await.unwrap();
    let mut a = FieldTable::default();
    if let Some(o) = offset {
        a.insert("x-stream-offset".into(), o);
    }
    let mut consumer = ch
        .basic_consume(name.into(), tag.into(), BasicConsumeOptions::default(), a)
        .await
        .unwrap();
    let mut out = Vec::new();
    while out.len() < n {
        let d = next_delivery(&mut consumer).await;
        out.push((offset_of(&d), d.data.clone()));
        d.ack(BasicAckOptions::default()).await.unwrap();
    }
    ch.close(200, "done".into()).await.unwrap();
    out
}

#[tokio::test]
async fn a_stream_keeps_every_confirmed_message_through_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (child, port) = spawn_leveret(&data);
    let uri = format!("amqp://127.0.0.1:{port}/%2f");
    let conn = Connection::connect(&uri, ConnectionProperties::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    declare_stream(&ch, "events", &[]).await;
    // Transient messages too: a stream stores everything.
    publish_all(
        &ch,
        "events",
        (0..3000u32).map(|i| i.to_be_bytes().to_vec()),
    )
    .await;
    drop(child); // SIGKILL
    let (_child, port) = spawn_leveret(&data);
    let uri = format!("amqp://127.0.0.1:{port}/%2f");
    let conn = Connection::connect(&uri, ConnectionProperties::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    assert_eq!(declare_stream(&ch, "events", &[]).await, 3000);
    let got = read(&conn, "events", "amq.ctag-a", Some(long("first")), 3000).await;
    for (i, (offset, body)) in got.iter().enumerate() {
        assert_eq!(*offset, i as i64);
        assert_eq!(body, &(i as u32).to_be_bytes());
    }
    // Numbering goes on after the restart.
    publish_all(&ch, "events", std::iter::once(b"after".to_vec())).await;
    let got = read(&conn, "events", "amq.ctag-b", Some(long("last")), 1).await;
    assert_eq!(got, vec![(3000, b"after".to_vec())]);
}

#[tokio::test]
async fn retention_by_size_drops_whole_old_segments() {
    let dir = tempfile::tempdir().unwrap();
    let b = TestBroker::start_in(dir.path()).await;
    let conn = b.connect().await;
    let ch = conn.create_channel().await.unwrap();
    declare_stream(
        &ch,
        "sized",
        &[
            ("x-max-length-bytes", AMQPValue::LongInt(20_000)),
            ("x-stream-max-segment-size-bytes", AMQPValue::LongInt(5_000)),
        ],
    )
    .await;
    publish_all(&ch, "sized", (0..100).map(|_| vec![7u8; 1000])).await;
    // Retention is checked at most once a second, on the next publish.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    publish_all(&ch, "sized", std::iter::once(vec![7u8; 1000])).await;
    let kept = message_count(&ch, "sized").await;
    assert!(
        (15..=30).contains(&kept),
        "about 20 KB of 1 KB messages kept, not {kept}"
    );
    let got = read(&conn, "sized", "amq.ctag-r", Some(long("first")), 1).await;
    assert_eq!(got[0].0, 101 - i64::from(kept), "first is the oldest kept");
}

#[tokio::test]
async fn retention_by_age_drops_segments_whose_newest_message_is_too_old() {
    let dir = tempfile::tempdir().unwrap();
    let b = TestBroker::start_in(dir.path()).await;
    let (_c, ch) = b.channel().await;
    declare_stream(
        &ch,
        "aged",
        &[
            ("x-max-age", long("1s")),
            ("x-stream-max-segment-size-bytes", AMQPValue::LongInt(5_000)),
        ],
    )
    .await;
    publish_all(&ch, "aged", (0..20).map(|_| vec![1u8; 1000])).await;
    assert_eq!(message_count(&ch, "aged").await, 20);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    publish_all(&ch, "aged", (0..10).map(|_| vec![2u8; 1000])).await;
    let kept = message_count(&ch, "aged").await;
    assert!(kept < 30, "old segments went: {kept} kept");
    assert!(kept >= 10, "the new messages stay: {kept} kept");
}

#[tokio::test]
async fn a_named_consumer_resumes_after_its_last_ack_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let b = TestBroker::start_in(dir.path()).await;
    let conn = b.connect().await;
    let ch = conn.create_channel().await.unwrap();
    declare_stream(&ch, "tracked", &[]).await;
    publish_all(&ch, "tracked", (0..10u8).map(|i| vec![i])).await;
    let got = read(&conn, "tracked", "billing", Some(long("first")), 4).await;
    assert_eq!(got.last().map(|g| g.0), Some(3));
    drop(conn);
    let b = b.restart_in(dir.path()).await;
    let conn = b.connect().await;
    // No offset given: the tracked one applies.
    let got = read(&conn, "tracked", "billing", None, 6).await;
    assert_eq!(
        got.iter().map(|g| g.0).collect::<Vec<_>>(),
        vec![4, 5, 6, 7, 8, 9]
    );
    // A server-named tag is not tracked: it starts at `next`.
    let ch = conn.create_channel().await.unwrap();
    ch.basic_qos(10, BasicQosOptions::default()).await.unwrap();
    let mut c = ch
        .basic_consume(
            "tracked".into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    assert_no_delivery(&mut c, 300).await;
}

#[tokio::test]
async fn ten_consumers_read_at_their_own_offsets_while_one_replays_from_disk() {
    let dir = tempfile::tempdir().unwrap();
    let b = TestBroker::start_in(dir.path()).await;
    let conn = b.connect().await;
    let ch = conn.create_channel().await.unwrap();
    declare_stream(&ch, "fan", &[]).await;
    // Far more than the broker keeps in memory: the replay reads the log.
    let n = 20_000u32;
    publish_all(&ch, "fan", (0..n).map(|i| i.to_be_bytes().to_vec())).await;
    let mut readers = Vec::new();
    for k in 0..10u32 {
        let conn = b.connect().await;
        let from = k * 2000;
        readers.push(tokio::spawn(async move {
            let got = read(
                &conn,
                "fan",
                &format!("amq.ctag-{k}"),
                Some(AMQPValue::LongLongInt(i64::from(from))),
                (n - from) as usize,
            )
            .await;
            for (i, (offset, body)) in got.iter().enumerate() {
                let want = from + i as u32;
                assert_eq!(*offset, i64::from(want));
                assert_eq!(body, &want.to_be_bytes());
            }
        }));
    }
    // The tail keeps flowing meanwhile, to a consumer at `next`.
    let tail_conn = b.connect().await;
    let tail =
        tokio::spawn(async move { read(&tail_conn, "fan", "amq.ctag-tail", None, 500).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    publish_all(&ch, "fan", (n..n + 500).map(|i| i.to_be_bytes().to_vec())).await;
    let tail = tokio::time::timeout(Duration::from_secs(30), tail)
        .await
        .expect("tail within 30 s")
        .unwrap();
    assert_eq!(tail.first().map(|t| t.0), Some(i64::from(n)));
    for r in readers {
        tokio::time::timeout(Duration::from_secs(60), r)
            .await
            .expect("replay within 60 s")
            .unwrap();
    }
}

#[tokio::test]
async fn filtered_consumers_get_exactly_their_values() {
    let b = TestBroker::start().await;
    let conn = b.connect().await;
    let ch = conn.create_channel().await.unwrap();
    declare_stream(&ch, "filtered", &[]).await;
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    for i in 0..3000u32 {
        let value = match i / 1000 {
            0 => Some("ca"),
            1 => Some("tx"),
            _ => None,
        };
        let mut props = BasicProperties::default();
        if let Some(v) = value {
            props = props.with_headers(args(&[("x-stream-filter-value", long(v))]));
        }
        ch.basic_publish(
            "".into(),
            "filtered".into(),
            BasicPublishOptions::default(),
            &i.to_be_bytes(),
            props,
        )
        .await
        .unwrap();
    }
    ch.wait_for_confirms().await.unwrap();
    let fch = conn.create_channel().await.unwrap();
    fch.basic_qos(100, BasicQosOptions::default())
        .await
        .unwrap();
    let mut consumer = fch
        .basic_consume(
            "filtered".into(),
            "".into(),
            BasicConsumeOptions::default(),
            args(&[
                ("x-stream-offset", long("first")),
                (
                    "x-stream-filter",
                    AMQPValue::FieldArray(vec![long("tx")].into()),
                ),
                ("x-stream-match-unfiltered", AMQPValue::Boolean(true)),
            ]),
        )
        .await
        .unwrap();
    let mut offsets = Vec::new();
    while offsets.len() < 2000 {
        let d = next_delivery(&mut consumer).await;
        offsets.push(offset_of(&d));
        d.ack(BasicAckOptions::default()).await.unwrap();
    }
    assert_eq!(offsets, (1000..3000).collect::<Vec<i64>>());
    assert_no_delivery(&mut consumer, 200).await;
}

#[tokio::test]
async fn the_http_api_shows_a_streams_offsets_segments_and_consumers() {
    let (b, http) = http::setup().await;
    let conn = b.connect().await;
    let ch = conn.create_channel().await.unwrap();
    declare_stream(&ch, "shown", &[]).await;
    publish_all(&ch, "shown", (0..5u8).map(|i| vec![i])).await;
    let reader = conn.create_channel().await.unwrap();
    reader
        .basic_qos(10, BasicQosOptions::default())
        .await
        .unwrap();
    let mut consumer = reader
        .basic_consume(
            "shown".into(),
            "dashboard".into(),
            BasicConsumeOptions::default(),
            args(&[("x-stream-offset", AMQPValue::LongLongInt(2))]),
        )
        .await
        .unwrap();
    for _ in 0..3 {
        next_delivery(&mut consumer)
            .await
            .ack(BasicAckOptions::default())
            .await
            .unwrap();
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let q = http.guest("GET", "/api/queues/%2f/shown", None).await.body;
        let acked = q["stream_consumers"][0]["acked_offset"].clone();
        if acked == serde_json::json!(4) || std::time::Instant::now() > deadline {
            assert_eq!(q["type"], "stream");
            assert_eq!(q["messages"], 5);
            assert_eq!(q["stream_first_offset"], 0);
            assert_eq!(q["stream_last_offset"], 4);
            assert_eq!(q["stream_consumers"][0]["consumer_tag"], "dashboard");
            assert_eq!(q["stream_consumers"][0]["offset"], 5);
            assert_eq!(acked, serde_json::json!(4));
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
