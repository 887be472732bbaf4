//! Crash safety: a broker process under confirmed publishing is killed with SIGKILL at random
//! moments and restarted on the same data directory; every confirmed message must be there
//! exactly once (unconfirmed ones may or may not be).

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lapin::options::*;
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};

const ROUNDS: u64 = 6;

fn pseudo_random(round: u64) -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64;
    (nanos ^ round.wrapping_mul(0x9E37_79B9_7F4A_7C15)) % 400
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_loses_no_confirmed_message() {
    let dir = tempfile::tempdir().unwrap();
    let confirmed: Arc<Mutex<Vec<u64>>> = Arc::default();
    for round in 0..ROUNDS {
        let (child, port) = common::spawn_leveret(&dir.path().join("data"));
        let uri = format!("amqp://127.0.0.1:{port}/%2f");
        let conn = Connection::connect(&uri, ConnectionProperties::default())
            .await
            .unwrap();
        let ch = conn.create_channel().await.unwrap();
        ch.queue_declare(
            "crash".into(),
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
        let publisher = {
            let confirmed = confirmed.clone();
            tokio::spawn(async move {
                let mut pending = std::collections::VecDeque::new();
                for i in 0..1_000_000u64 {
                    let id = round * 1_000_000 + i;
                    let Ok(confirm) = ch
                        .basic_publish(
                            "".into(),
                            "crash".into(),
                            BasicPublishOptions::default(),
                            &id.to_be_bytes(),
                            BasicProperties::default().with_delivery_mode(2),
                        )
                        .await
                    else {
                        return;
                    };
                    pending.push_back((id, confirm));
                    while pending.len() > 50 {
                        let (id, confirm) = pending.pop_front().unwrap();
                        match confirm.await {
                            Ok(c) if c.is_ack() => confirmed.lock().unwrap().push(id),
                            _ => return,
                        }
                    }
                }
            })
        };
        tokio::time::sleep(Duration::from_millis(150 + pseudo_random(round))).await;
        // SIGKILL: no shutdown path runs.
        drop(child);
        let _ = tokio::time::timeout(Duration::from_secs(10), publisher).await;
    }
    let (child, port) = common::spawn_leveret(&dir.path().join("data"));
    let conn = Connection::connect(
        &format!("amqp://127.0.0.1:{port}/%2f"),
        ConnectionProperties::default(),
    )
    .await
    .unwrap();
    let ch = conn.create_channel().await.unwrap();
    let mut seen: HashMap<u64, u32> = HashMap::new();
    while let Some(m) = ch
        .basic_get("crash".into(), BasicGetOptions { no_ack: true })
        .await
        .unwrap()
    {
        let id = u64::from_be_bytes(m.delivery.data[..8].try_into().unwrap());
        *seen.entry(id).or_default() += 1;
    }
    drop(child);
    let confirmed = confirmed.lock().unwrap().clone();
    assert!(
        confirmed.len() > 100,
        "the test published enough to mean something: {}",
        confirmed.len()
    );
    let lost: Vec<u64> = confirmed
        .iter()
        .filter(|id| !seen.contains_key(id))
        .copied()
        .collect();
    let duplicated: Vec<u64> = confirmed
        .iter()
        .filter(|id| seen.get(id).copied().unwrap_or(0) > 1)
        .copied()
        .collect();
    assert!(
        lost.is_empty(),
        "{} confirmed messages lost, e.g. {:?}",
        lost.len(),
        &lost[..lost.len().min(5)]
    );
    assert!(
        duplicated.is_empty(),
        "confirmed messages duplicated: {:?}",
        &duplicated[..duplicated.len().min(5)]
    );
    eprintln!(
        "{} rounds, {} confirmed, {} recovered",
        ROUNDS,
        confirmed.len(),
        seen.len()
    );
}

/// Dead-lettering persistent messages between durable queues, killed mid-way: after a restart
/// each message is in the source queue or in the dead-letter queue, never in neither.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_while_dead_lettering_loses_no_message() {
    const MESSAGES: u64 = 3000;
    for round in 0..3u64 {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let (child, port) = common::spawn_leveret(&data);
        let uri = format!("amqp://127.0.0.1:{port}/%2f");
        let conn = Connection::connect(&uri, ConnectionProperties::default())
            .await
            .unwrap();
        let ch = conn.create_channel().await.unwrap();
        let durable = QueueDeclareOptions {
            durable: true,
            ..Default::default()
        };
        ch.exchange_declare(
            "dl-x".into(),
            lapin::ExchangeKind::Fanout,
            ExchangeDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
        ch.queue_declare("dl-dead".into(), durable, FieldTable::default())
            .await
            .unwrap();
        ch.queue_bind(
            "dl-dead".into(),
            "dl-x".into(),
            "".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
        let mut args = FieldTable::default();
        args.insert(
            "x-dead-letter-exchange".into(),
            lapin::types::AMQPValue::LongString("dl-x".into()),
        );
        ch.queue_declare("dl-src".into(), durable, args)
            .await
            .unwrap();
        ch.confirm_select(ConfirmSelectOptions::default())
            .await
            .unwrap();
        let mut confirms = Vec::new();
        for id in 0..MESSAGES {
            confirms.push(
                ch.basic_publish(
                    "".into(),
                    "dl-src".into(),
                    BasicPublishOptions::default(),
                    &id.to_be_bytes(),
                    BasicProperties::default().with_delivery_mode(2),
                )
                .await
                .unwrap(),
            );
        }
        for c in confirms {
            assert!(c.await.unwrap().is_ack());
        }
        let consumer_ch = conn.create_channel().await.unwrap();
        consumer_ch
            .basic_qos(200, BasicQosOptions::default())
            .await
            .unwrap();
        let mut consumer = consumer_ch
            .basic_consume(
                "dl-src".into(),
                "rejecter".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
        let rejecter = tokio::spawn(async move {
            use futures::StreamExt;
            while let Some(Ok(d)) = consumer.next().await {
                if d.reject(BasicRejectOptions { requeue: false })
                    .await
                    .is_err()
                {
                    return;
                }
            }
        });
        tokio::time::sleep(Duration::from_millis(30 + pseudo_random(round) / 4)).await;
        drop(child);
        let _ = tokio::time::timeout(Duration::from_secs(10), rejecter).await;

        let (child, port) = common::spawn_leveret(&data);
        let conn = Connection::connect(
            &format!("amqp://127.0.0.1:{port}/%2f"),
            ConnectionProperties::default(),
        )
        .await
        .unwrap();
        let ch = conn.create_channel().await.unwrap();
        let mut seen: HashMap<u64, u32> = HashMap::new();
        let mut dead = 0;
        for q in ["dl-src", "dl-dead"] {
            while let Some(m) = ch
                .basic_get(q.into(), BasicGetOptions { no_ack: true })
                .await
                .unwrap()
            {
                let id = u64::from_be_bytes(m.delivery.data[..8].try_into().unwrap());
                *seen.entry(id).or_default() += 1;
                dead += u32::from(q == "dl-dead");
            }
        }
        drop(child);
        let lost: Vec<u64> = (0..MESSAGES).filter(|id| !seen.contains_key(id)).collect();
        assert!(
            lost.is_empty(),
            "round {round}: {} messages in neither queue, e.g. {:?}",
            lost.len(),
            &lost[..lost.len().min(5)]
        );
        eprintln!("round {round}: {dead} dead-lettered before the kill, none lost");
    }
}

/// A publisher far faster than its consumer: the queue grows by hundreds of megabytes of
/// persistent messages, the broker's memory does not (deep messages live in the store).
#[tokio::test]
async fn a_fast_publisher_against_a_slow_consumer_keeps_memory_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let (broker, port) = common::spawn_leveret(&dir.path().join("data"));
    let pid = broker.0.id();
    let rss_mb = move || common::rss_mb(pid);
    let uri = format!("amqp://guest:guest@127.0.0.1:{port}/%2f");
    let conn = Connection::connect(&uri, Default::default()).await.unwrap();
    let ch = conn.create_channel().await.unwrap();
    ch.queue_declare("deep".into(), common::durable(), Default::default())
        .await
        .unwrap();
    // The slow consumer: one message at a time, acked every 10 ms.
    let consumer_ch = conn.create_channel().await.unwrap();
    consumer_ch.basic_qos(1, Default::default()).await.unwrap();
    let mut consumer = consumer_ch
        .basic_consume(
            "deep".into(),
            "slow".into(),
            Default::default(),
            Default::default(),
        )
        .await
        .unwrap();
    let slow = tokio::spawn(async move {
        use futures::StreamExt;
        while let Some(Ok(d)) = consumer.next().await {
            tokio::time::sleep(Duration::from_millis(10)).await;
            let _ = d.ack(Default::default()).await;
        }
    });
    let body = vec![0x5a; 8 * 1024];
    let persistent = BasicProperties::default().with_delivery_mode(2);
    let mut peak = 0;
    let mut at_third = 0;
    for round in 0..30_000u32 {
        ch.basic_publish(
            "".into(),
            "deep".into(),
            Default::default(),
            &body,
            persistent.clone(),
        )
        .await
        .unwrap();
        if round % 1_000 == 0 {
            peak = peak.max(rss_mb());
        }
        if round == 10_000 {
            at_third = rss_mb();
        }
    }
    let depth = common::message_count(&ch, "deep").await;
    peak = peak.max(rss_mb());
    slow.abort();
    assert!(depth > 25_000, "the queue grew: {depth}");
    // 30,000 × 8 KiB = 240 MiB went in. Resident memory does not follow the queue's depth: the
    // last two thirds (160 MiB more queued) add little to what the first third needed.
    eprintln!("resident memory: {at_third} MiB at a third, peak {peak} MiB");
    assert!(
        peak < at_third + 48 && peak < 240,
        "broker resident memory grew with the queue: {at_third} MiB at a third, peak {peak} MiB"
    );
}

/// `tx.commit-ok` promises what a confirm promises: 2,000 persistent messages committed in one
/// transaction survive a SIGKILL sent right after the commit-ok, and so do the acks of a second
/// committed transaction (the queue comes back empty, not redelivered).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_right_after_tx_commit_ok_loses_nothing_committed() {
    const N: u32 = 2000;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let connect = |port: u16| async move {
        let conn = Connection::connect(
            &format!("amqp://127.0.0.1:{port}/%2f"),
            ConnectionProperties::default(),
        )
        .await
        .unwrap();
        let ch = conn.create_channel().await.unwrap();
        (conn, ch)
    };
    let (child, port) = common::spawn_leveret(&data);
    let (_conn, ch) = connect(port).await;
    ch.queue_declare("tx".into(), common::durable(), FieldTable::default())
        .await
        .unwrap();
    // Past sled's background flush (500 ms), so only the transaction is at stake.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    ch.tx_select().await.unwrap();
    for i in 0..N {
        ch.basic_publish(
            "".into(),
            "tx".into(),
            BasicPublishOptions::default(),
            &i.to_be_bytes(),
            BasicProperties::default().with_delivery_mode(2),
        )
        .await
        .unwrap();
    }
    ch.tx_commit().await.unwrap();
    drop(child);

    let (child, port) = common::spawn_leveret(&data);
    let (_conn, ch) = connect(port).await;
    assert_eq!(
        common::message_count(&ch, "tx").await,
        N,
        "committed publishes lost"
    );
    ch.tx_select().await.unwrap();
    for _ in 0..N {
        let m = ch
            .basic_get("tx".into(), BasicGetOptions { no_ack: false })
            .await
            .unwrap()
            .expect("a message");
        m.delivery.ack(BasicAckOptions::default()).await.unwrap();
    }
    ch.tx_commit().await.unwrap();
    drop(child);

    let (_child, port) = common::spawn_leveret(&data);
    let (_conn, ch) = connect(port).await;
    assert_eq!(
        common::message_count(&ch, "tx").await,
        0,
        "committed acks lost"
    );
}

/// A client that asks for output and never reads it: `basic.get` and `basic.reject(requeue)` of
/// a 1 MB message in a loop, pipelined, for 4 s. The broker stops reading that socket once
/// `max_pending_output` is queued for it, so its memory stays flat (it grew to 1.5 GB), and a
/// well-behaved client is served meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_cannot_grow_broker_memory() {
    use bytes::BufMut;
    use tokio::io::AsyncWriteExt;
    let dir = tempfile::tempdir().unwrap();
    let (broker, port) = common::spawn_leveret(&dir.path().join("data"));
    let pid = broker.0.id();
    let rss_mb = move || common::rss_mb(pid);
    let uri = format!("amqp://guest:guest@127.0.0.1:{port}/%2f");
    let conn = Connection::connect(&uri, Default::default()).await.unwrap();
    let ch = conn.create_channel().await.unwrap();
    common::declare(&ch, "big").await;
    common::publish(&ch, "", "big", &vec![1u8; 1 << 20]).await;
    common::declare(&ch, "small").await;
    let before = rss_mb();

    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut raw = common::raw::RawClient::open_at(addr, 0, 131_072, 0).await;
    raw.open_channel(1).await;
    let frame = |method_id: u16, args: &[u8]| {
        let mut f = vec![1, 0, 1];
        f.put_u32(4 + args.len() as u32);
        f.put_u16(60);
        f.put_u16(method_id);
        f.extend_from_slice(args);
        f.push(0xCE);
        f
    };
    let flood = tokio::spawn(async move {
        let deadline = std::time::Instant::now() + Duration::from_secs(4);
        let mut tag = 1u64;
        let mut get = vec![0, 0, 3];
        get.extend_from_slice(b"big");
        get.push(0);
        while std::time::Instant::now() < deadline {
            let mut burst = Vec::new();
            for _ in 0..64 {
                burst.extend(frame(70, &get));
                let mut reject = tag.to_be_bytes().to_vec();
                reject.push(1);
                burst.extend(frame(90, &reject));
                tag += 1;
            }
            // Once the broker stops reading, this write stalls: that is the point.
            match tokio::time::timeout(Duration::from_millis(500), raw.stream.write_all(&burst))
                .await
            {
                Ok(Ok(())) => {}
                Ok(Err(_)) => break,
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
        raw
    });
    // Meanwhile, another client is served.
    for i in 0..20u32 {
        common::publish(&ch, "", "small", &i.to_be_bytes()).await;
        assert!(common::get_body(&ch, "small").await.is_some());
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    let _raw = flood.await.unwrap();
    let after = rss_mb();
    eprintln!("broker RSS {before} MB before, {after} MB after 4 s of unread get-ok");
    assert!(
        after < before + 64,
        "broker memory grew from {before} MB to {after} MB"
    );
    drop(broker);
}
