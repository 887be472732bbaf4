//! The `leveret` binary itself: starts with no configuration, serves clients, and exits 0 on
//! SIGTERM after closing connections with 320 CONNECTION_FORCED.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use futures::StreamExt;
use lapin::{Connection, ConnectionProperties};

#[tokio::test]
async fn sigterm_closes_connections_and_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_leveret"))
        .args(["--bind", "127.0.0.1", "--port", "0", "--data-dir"])
        .arg(dir.path())
        .current_dir(dir.path())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let port = loop {
        let line = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("broker logs readiness");
        if let Some(rest) = line.split("local=").nth(1) {
            break rest
                .split_whitespace()
                .next()
                .unwrap()
                .rsplit(':')
                .next()
                .unwrap()
                .parse::<u16>()
                .unwrap();
        }
    };
    let conn = Connection::connect(
        &format!("amqp://127.0.0.1:{port}/%2f"),
        ConnectionProperties::default(),
    )
    .await
    .unwrap();
    let mut events = Box::pin(conn.events_listener());
    let closed_rx = async move {
        loop {
            match events.next().await {
                Some(lapin::Event::Error(e)) => return format!("{e:?}"),
                Some(_) => continue,
                None => return "events ended".to_owned(),
            }
        }
    };
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let error = tokio::time::timeout(Duration::from_secs(10), closed_rx)
        .await
        .unwrap();
    assert!(
        error.contains("320") || error.contains("CONNECTION_FORCED"),
        "{error}"
    );
    let exit = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(exit.success(), "{exit:?}");
}
