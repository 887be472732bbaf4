//! Fairness under load: while publishers flood the broker faster than it can take messages in,
//! a consumer with a prefetch window still gets deliveries at a useful rate. The broker process
//! runs on one worker thread, as on the 2-core machines Leveret is tested on, so the publishers'
//! connections and the consumer's share it.
//!
//! Before connections spent scheduling budget per frame, a flooding publisher kept the worker for
//! its whole read backlog: a prefetch-100 consumer got 100 to 400 messages a second (one
//! prefetch window per scheduling round) against 300,000 published.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::stream::FuturesUnordered;
use futures::StreamExt;
use lapin::options::*;
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};

const PUBLISHERS: usize = 2;
const FLOOD: Duration = Duration::from_secs(4);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_is_fed_while_publishers_flood() {
    let dir = tempfile::tempdir().unwrap();
    let (_broker, port) = common::spawn_leveret_with(&dir.path().join("data"), &["--workers", "1"]);
    let uri = format!("amqp://127.0.0.1:{port}/%2f");

    let consumer_conn = Connection::connect(&uri, ConnectionProperties::default())
        .await
        .unwrap();
    let ch = consumer_conn.create_channel().await.unwrap();
    ch.queue_declare(
        "flood".into(),
        QueueDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    ch.basic_qos(100, BasicQosOptions::default()).await.unwrap();
    let mut consumer = ch
        .basic_consume(
            "flood".into(),
            "c".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let published = Arc::new(AtomicU64::new(0));
    let mut publishers = Vec::new();
    for _ in 0..PUBLISHERS {
        let conn = Connection::connect(&uri, ConnectionProperties::default())
            .await
            .unwrap();
        let (stop, published) = (stop.clone(), published.clone());
        publishers.push(tokio::spawn(async move {
            let ch = conn.create_channel().await.unwrap();
            let body = [7u8; 64];
            // Publishes are pipelined, as a fast client's are: the socket never runs dry.
            let mut in_flight = FuturesUnordered::new();
            while !stop.load(Ordering::Relaxed) {
                while in_flight.len() < 512 {
                    let ch = ch.clone();
                    in_flight.push(async move {
                        ch.basic_publish(
                            "".into(),
                            "flood".into(),
                            BasicPublishOptions::default(),
                            &body,
                            BasicProperties::default(),
                        )
                        .await
                        .map(|_| ())
                    });
                }
                if let Some(result) = in_flight.next().await {
                    result.unwrap();
                    published.fetch_add(1, Ordering::Relaxed);
                }
            }
            conn
        }));
    }

    // Let the flood build a backlog, then count what the consumer gets while it goes on.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let published_before = published.load(Ordering::Relaxed);
    let deadline = tokio::time::Instant::now() + FLOOD;
    let mut consumed = 0u64;
    while let Ok(Some(delivery)) = tokio::time::timeout_at(deadline, consumer.next()).await {
        let delivery = delivery.unwrap();
        delivery.ack(BasicAckOptions::default()).await.unwrap();
        consumed += 1;
    }
    let published_during = published.load(Ordering::Relaxed) - published_before;
    stop.store(true, Ordering::Relaxed);
    // Aborted, not awaited: a publisher waiting on a broker that stopped reading (an alarm
    // under this load) would never see the stop flag.
    for p in publishers {
        p.abort();
    }

    let secs = FLOOD.as_secs_f64();
    eprintln!(
        "during the flood: published {:.0}/s, consumed {:.0}/s",
        published_during as f64 / secs,
        consumed as f64 / secs
    );
    // The queue grows (the publishers outrun the consumer) but the consumer is not starved:
    // RabbitMQ 3.10 on the same machine gives a consumer about a fifth of the publish rate.
    assert!(published_during > 0, "the publishers published nothing");
    assert!(
        consumed * 50 >= published_during && consumed >= 2_000,
        "consumer starved: {consumed} deliveries while {published_during} were published"
    );
}
