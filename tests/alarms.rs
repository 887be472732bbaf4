//! Resource alarms through lapin: a memory or disk alarm blocks publishing connections
//! (`connection.blocked`, socket no longer read), leaves consumers alone, and publishing resumes
//! with nothing lost when the alarm clears.

mod common;

use std::time::Duration;

use common::*;
use futures::StreamExt;
use lapin::options::*;
use lapin::types::FieldTable;
use lapin::Event;
use leveret::broker::BrokerConfig;

/// The next blocked/unblocked event of a connection.
async fn next_flow_event(events: &mut (impl futures::Stream<Item = Event> + Unpin)) -> Event {
    tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match events.next().await {
                Some(e @ (Event::ConnectionBlocked(_) | Event::ConnectionUnblocked)) => return e,
                Some(_) => continue,
                None => panic!("events ended"),
            }
        }
    })
    .await
    .expect("a connection.blocked or connection.unblocked within 5 s")
}

#[tokio::test]
async fn a_memory_alarm_blocks_publishers_until_it_clears_and_loses_nothing() {
    let b = TestBroker::start_with(BrokerConfig {
        memory_high_watermark: 1,
        ..BrokerConfig::default()
    })
    .await;
    let (_cc, consumer_ch) = b.channel().await;
    declare(&consumer_ch, "alarmed").await;
    let mut consumer = consumer_ch
        .basic_consume(
            "alarmed".into(),
            "c".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    // Let the monitor raise the alarm (it checks once a second).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(b.broker.alarms().state().memory);

    let publisher = b.connect().await;
    let mut events = Box::pin(publisher.events_listener());
    let ch = publisher.create_channel().await.unwrap();
    publish(&ch, "", "alarmed", b"first").await;
    match next_flow_event(&mut events).await {
        Event::ConnectionBlocked(reason) => assert_eq!(reason, "low on memory"),
        other => panic!("expected connection.blocked, got {other:?}"),
    }
    assert_eq!(next_delivery(&mut consumer).await.data, b"first");
    // lapin itself holds publishes back while its connection is blocked: publish from a task.
    let held = tokio::spawn(async move {
        for i in 0..20 {
            publish(&ch, "", "alarmed", format!("held-{i}").as_bytes()).await;
        }
        ch
    });
    assert_no_delivery(&mut consumer, 500).await;

    b.broker.alarms().set_memory_limit(u64::MAX);
    assert!(matches!(
        next_flow_event(&mut events).await,
        Event::ConnectionUnblocked
    ));
    for i in 0..20 {
        assert_eq!(
            next_delivery(&mut consumer).await.data,
            format!("held-{i}").as_bytes()
        );
    }
    held.await.unwrap();
}

#[tokio::test]
async fn a_disk_alarm_says_low_on_disk_space() {
    let dir = tempfile::tempdir().unwrap();
    let b = TestBroker::start_with(BrokerConfig {
        disk_free_limit: u64::MAX,
        data_dir: Some(dir.path().to_owned()),
        ..BrokerConfig::default()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(b.broker.alarms().state().disk);
    let publisher = b.connect().await;
    let mut events = Box::pin(publisher.events_listener());
    let ch = publisher.create_channel().await.unwrap();
    declare(&ch, "q").await;
    publish(&ch, "", "q", b"m").await;
    match next_flow_event(&mut events).await {
        Event::ConnectionBlocked(reason) => assert_eq!(reason, "low on disk space"),
        other => panic!("expected connection.blocked, got {other:?}"),
    }
    b.broker.alarms().set_disk_limit(0);
    assert!(matches!(
        next_flow_event(&mut events).await,
        Event::ConnectionUnblocked
    ));
    assert_eq!(message_count(&ch, "q").await, 1);
}
