//! Upgrade in place: a data directory written by the last release of the sled-only format
//! (`leveret-sled-2`, made by `tests/fixtures/make-leveret-sled-2.py` against commit c72245a and
//! packed as `tests/fixtures/leveret-sled-2.tar.gz`) is migrated to the segment log on first
//! start, with every message, property, delivery mark and definition intact.

mod common;

use lapin::options::{BasicGetOptions, BasicPublishOptions};
use lapin::types::AMQPValue;
use lapin::BasicProperties;

/// The generator's bodies: a function of (queue, index).
fn body(queue: &str, i: usize) -> Vec<u8> {
    let size = match queue {
        "plain" => 1 + (i * 37) % 20_000,
        "large" => 300_000 + i,
        _ => 100 + i,
    };
    let seed = format!("{queue}-{i}-").into_bytes();
    seed.iter().copied().cycle().take(size).collect()
}

fn unpack(to: &std::path::Path) {
    let fixture = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/leveret-sled-2.tar.gz"
    );
    std::fs::create_dir_all(to).unwrap();
    let status = std::process::Command::new("tar")
        .args(["-xzf", fixture, "-C"])
        .arg(to)
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(
        std::fs::read_to_string(to.join("FORMAT")).unwrap(),
        "leveret-sled-2"
    );
}

#[tokio::test]
async fn a_leveret_sled_2_directory_is_migrated_with_nothing_lost() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    unpack(&data);
    let (broker, port) = common::spawn_leveret(&data);
    assert_eq!(
        std::fs::read_to_string(data.join("FORMAT")).unwrap(),
        "leveret-3"
    );
    let uri = format!("amqp://guest:guest@127.0.0.1:{port}/%2f");
    let conn = lapin::Connection::connect(&uri, Default::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    for (queue, n) in [("plain", 2000usize), ("large", 20), ("delivered", 100)] {
        for i in 0..n {
            let got = ch
                .basic_get(queue.into(), BasicGetOptions { no_ack: true })
                .await
                .unwrap()
                .unwrap_or_else(|| panic!("{queue}: message {i} of {n} missing"));
            assert_eq!(got.delivery.data, body(queue, i), "{queue} {i}");
            let props = &got.delivery.properties;
            assert_eq!(
                props.message_id().as_ref().map(|s| s.as_str().to_owned()),
                Some(format!("{queue}-{i}"))
            );
            assert_eq!(props.delivery_mode(), &Some(2));
            let index = props
                .headers()
                .as_ref()
                .and_then(|h| h.inner().get("index").cloned());
            assert!(
                matches!(index, Some(AMQPValue::LongInt(x)) if x == i as i32)
                    || matches!(index, Some(AMQPValue::LongLongInt(x)) if x == i as i64),
                "{queue} {i}: {index:?}"
            );
            // The 30 left unacknowledged come back redelivered.
            assert_eq!(
                got.delivery.redelivered,
                queue == "delivered" && i < 30,
                "{queue} {i}"
            );
        }
        // The transient message did not survive, as before the upgrade.
        assert!(common::get_body(&ch, queue).await.is_none(), "{queue}");
    }
    // Definitions stayed in sled: the durable exchange and its binding route.
    ch.basic_publish(
        "routed".into(),
        "a.b".into(),
        BasicPublishOptions::default(),
        b"through the binding",
        BasicProperties::default(),
    )
    .await
    .unwrap();
    let mut routed = None;
    for _ in 0..50 {
        routed = common::get_body(&ch, "plain").await;
        if routed.is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(routed.as_deref(), Some(&b"through the binding"[..]));
    drop(conn);
    // kill -9: the settlements written so far are enough.
    drop(broker);
    // Nothing is migrated twice: the next start finds the new format and the drained queues.
    let (_broker, port) = common::spawn_leveret(&data);
    let uri = format!("amqp://guest:guest@127.0.0.1:{port}/%2f");
    let conn = lapin::Connection::connect(&uri, Default::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    for queue in ["plain", "large", "delivered"] {
        assert!(common::get_body(&ch, queue).await.is_none(), "{queue}");
    }
}
