//! The `leveret` binary itself: starts with no configuration, serves clients, and exits 0 on
//! SIGTERM after closing connections with 320 CONNECTION_FORCED.

mod common;

use std::process::Command;
use std::time::Duration;

use futures::StreamExt;
use lapin::{Connection, ConnectionProperties};

/// Listening on every interface (`[::]`, what a bare port means, as in RabbitMQ) takes IPv4
/// and IPv6 clients alike, for AMQP and the HTTP API: `localhost` works whichever family a
/// client resolves it to.
#[tokio::test]
async fn every_interface_means_ipv4_and_ipv6() {
    if std::net::TcpListener::bind("[::1]:0").is_err() {
        eprintln!("no IPv6 loopback on this host; skipped");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (broker, port) = common::spawn_leveret_with(&dir.path().join("data"), &["--bind", "::"]);
    for host in ["127.0.0.1", "[::1]"] {
        let conn = Connection::connect(
            &format!("amqp://{host}:{port}/%2f"),
            ConnectionProperties::default(),
        )
        .await
        .unwrap_or_else(|e| panic!("AMQP over {host}: {e}"));
        conn.close(200, "bye".into()).await.unwrap();
        let http = std::net::TcpStream::connect(format!("{host}:{}", broker.1))
            .unwrap_or_else(|e| panic!("HTTP over {host}: {e}"));
        drop(http);
    }
}

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

#[tokio::test]
async fn a_config_file_sets_users_and_tuning_and_flags_override_it() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("leveret.conf");
    std::fs::write(
        &conf,
        "# test\nlisteners.tcp.default = 127.0.0.1:1\nheartbeat = 7\ndefault_user = alice\n\
         default_pass = s3cret#1\nloopback_users = none\n",
    )
    .unwrap();
    let conf_arg = conf.to_str().unwrap();
    let (_broker, port) =
        common::spawn_leveret_with(&dir.path().join("data"), &["--config", conf_arg]);
    let conn = Connection::connect(
        &format!("amqp://alice:s3cret%231@127.0.0.1:{port}/%2f"),
        ConnectionProperties::default(),
    )
    .await
    .expect("the configured user logs in");
    assert_eq!(conn.configuration().heartbeat(), 7);
    assert!(
        Connection::connect(
            &format!("amqp://guest:guest@127.0.0.1:{port}/%2f"),
            ConnectionProperties::default(),
        )
        .await
        .is_err(),
        "guest is not created when another default user is configured"
    );
}

#[test]
fn a_bad_config_file_stops_the_broker_with_file_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("bad.conf");
    std::fs::write(&conf, "heartbeat = 10\nhartbeat = 5\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_leveret"))
        .arg("--config")
        .arg(&conf)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("bad.conf:2:1: unknown key 'hartbeat'; did you mean 'heartbeat'?"),
        "{stderr}"
    );
}

#[test]
fn print_config_shows_the_file_under_flags_and_environment() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("c.conf");
    std::fs::write(&conf, "heartbeat = 10\nchannel_max = 100\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_leveret"))
        .arg("--config")
        .arg(&conf)
        .args(["--port", "5999", "--print-config"])
        .env("LEVERET_HEARTBEAT", "9")
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for line in [
        "listeners.tcp.default = [::]:5999",
        "heartbeat = 9",
        "channel_max = 100",
        "frame_max = 131072",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in\n{text}"
        );
    }
    let reparsed = leveret::config::parse("printed", &text).expect("printed config parses");
    assert_eq!(reparsed.heartbeat, 9);
}
