//! The `leveret` binary itself: starts with no configuration, serves clients, and exits 0 on
//! SIGTERM after closing connections with 320 CONNECTION_FORCED.

mod common;

use std::process::Command;
use std::time::Duration;

use futures::StreamExt;
use lapin::{Connection, ConnectionProperties};

#[tokio::test]
async fn sigterm_closes_connections_and_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let (mut broker, port) = common::spawn_leveret(&dir.path().join("data"));
    let conn = Connection::connect(
        &format!("amqp://127.0.0.1:{port}/%2f"),
        ConnectionProperties::default(),
    )
    .await
    .unwrap();
    let mut events = Box::pin(conn.events_listener());
    let closed = async move {
        loop {
            match events.next().await {
                Some(lapin::Event::Error(e)) => return format!("{e:?}"),
                Some(_) => continue,
                None => return "events ended".to_owned(),
            }
        }
    };
    let status = Command::new("kill")
        .args(["-TERM", &broker.0.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let error = tokio::time::timeout(Duration::from_secs(10), closed)
        .await
        .unwrap();
    assert!(
        error.contains("320") || error.contains("CONNECTION_FORCED"),
        "{error}"
    );
    let exit = tokio::task::spawn_blocking(move || broker.0.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(exit.success(), "{exit:?}");
}
