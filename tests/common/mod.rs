//! Test harness: a Leveret broker started in-process on an ephemeral loopback port, and lapin
//! helpers. Every test gets its own broker, so tests never share state.
#![allow(dead_code)]

pub mod http;
pub mod raw;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use leveret::broker::{Broker, BrokerConfig};
use leveret::store::MemoryStore;
use tokio::sync::watch;

pub struct TestBroker {
    pub addr: SocketAddr,
    pub broker: Arc<Broker>,
    shutdown: watch::Sender<bool>,
}

impl TestBroker {
    pub async fn start() -> Self {
        Self::start_with(BrokerConfig::default()).await
    }

    pub async fn start_with(config: BrokerConfig) -> Self {
        Self::start_on(config, Arc::new(MemoryStore::new())).await
    }

    /// A broker on a sled store in `dir` (restart tests start a second one on the same dir).
    pub async fn start_in(dir: &std::path::Path) -> Self {
        Self::start_in_with(dir, BrokerConfig::default()).await
    }

    pub async fn start_in_with(dir: &std::path::Path, config: BrokerConfig) -> Self {
        let store = leveret::store::DataDir::open(dir).expect("open store");
        Self::start_on(config, Arc::new(store)).await
    }

    pub async fn start_on(config: BrokerConfig, store: Arc<dyn leveret::store::Store>) -> Self {
        let broker = Broker::open(config, store).expect("open broker");
        let (tx, rx) = watch::channel(false);
        let (addr, _task) =
            leveret::server::start("127.0.0.1:0".parse().unwrap(), broker.clone(), rx)
                .await
                .expect("bind");
        Self {
            addr,
            broker,
            shutdown: tx,
        }
    }

    pub fn uri(&self) -> String {
        format!("amqp://guest:guest@{}/%2f", self.addr)
    }

    pub async fn connect(&self) -> Connection {
        Connection::connect(&self.uri(), ConnectionProperties::default())
            .await
            .expect("connect")
    }

    pub async fn channel(&self) -> (Connection, Channel) {
        let conn = self.connect().await;
        let ch = conn.create_channel().await.expect("channel");
        (conn, ch)
    }

    pub fn stop(&self) {
        let _ = self.shutdown.send(true);
    }

    /// Stop this broker and start another on the same data directory (once the first has let
    /// go of it).
    pub async fn restart_in(self, dir: &std::path::Path) -> Self {
        let _ = self.shutdown.send(true);
        self.broker.shutdown(Duration::from_secs(10)).await;
        drop(self);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            match leveret::store::DataDir::open(dir) {
                Ok(store) => return Self::start_on(BrokerConfig::default(), Arc::new(store)).await,
                Err(e) if std::time::Instant::now() < deadline => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => panic!("store still held: {e}"),
            }
        }
    }
}

impl Drop for TestBroker {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
    }
}

/// The reply code and text of an AMQP error.
pub fn amqp_error(error: &lapin::Error) -> (u16, String) {
    match error.kind() {
        lapin::ErrorKind::ProtocolError(e) => (e.get_id(), e.get_message().to_string()),
        other => panic!("not an AMQP error: {other:?}"),
    }
}

pub async fn declare(ch: &Channel, name: &str) -> lapin::Queue {
    ch.queue_declare(
        name.into(),
        QueueDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .expect("queue.declare")
}

pub async fn publish(ch: &Channel, exchange: &str, key: &str, body: &[u8]) {
    ch.basic_publish(
        exchange.into(),
        key.into(),
        BasicPublishOptions::default(),
        body,
        BasicProperties::default(),
    )
    .await
    .expect("basic.publish");
}

pub async fn publish_with(
    ch: &Channel,
    exchange: &str,
    key: &str,
    body: &[u8],
    props: BasicProperties,
) {
    ch.basic_publish(
        exchange.into(),
        key.into(),
        BasicPublishOptions::default(),
        body,
        props,
    )
    .await
    .expect("basic.publish");
}

/// `basic.get` with no-ack, returning the body.
pub async fn get_body(ch: &Channel, queue: &str) -> Option<Vec<u8>> {
    ch.basic_get(queue.into(), BasicGetOptions { no_ack: true })
        .await
        .expect("basic.get")
        .map(|m| m.delivery.data)
}

/// Drain a queue with basic.get (no-ack), returning bodies as strings.
pub async fn drain(ch: &Channel, queue: &str) -> Vec<String> {
    let mut out = Vec::new();
    while let Some(body) = get_body(ch, queue).await {
        out.push(String::from_utf8(body).unwrap());
    }
    out
}

/// Wait for the next delivery on a consumer.
pub async fn next_delivery(consumer: &mut lapin::Consumer) -> lapin::message::Delivery {
    tokio::time::timeout(Duration::from_secs(5), consumer.next())
        .await
        .expect("delivery within 5s")
        .expect("consumer stream open")
        .expect("delivery ok")
}

/// Assert no delivery arrives within `ms` milliseconds.
pub async fn assert_no_delivery(consumer: &mut lapin::Consumer, ms: u64) {
    if let Ok(Some(d)) = tokio::time::timeout(Duration::from_millis(ms), consumer.next()).await {
        panic!(
            "unexpected delivery: {:?}",
            d.map(|d| String::from_utf8_lossy(&d.data).into_owned())
        );
    }
}

/// A `leveret` binary running as a child process, killed (SIGKILL) when dropped.
pub struct BrokerProcess(pub std::process::Child, pub u16);

/// Resident memory of process `pid`, MB.
pub fn rss_mb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .unwrap_or(0)
        / 1024
}

impl BrokerProcess {
    /// SIGTERM, and wait (up to 20 s) for the broker's orderly exit: what it owes the store is
    /// synced.
    pub fn stop_gracefully(mut self) {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for BrokerProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Start the `leveret` binary on an ephemeral loopback port with `dir` as its data directory;
/// returns it once it logs readiness, with its port.
pub fn spawn_leveret(dir: &std::path::Path) -> (BrokerProcess, u16) {
    spawn_leveret_with(dir, &[])
}

/// [`spawn_leveret`] with more command-line arguments.
pub fn spawn_leveret_with(dir: &std::path::Path, extra: &[&str]) -> (BrokerProcess, u16) {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let ports: &[&str] = if extra.contains(&"--management-port") {
        &[]
    } else {
        &["--management-port", "0", "--prometheus-port", "0"]
    };
    let bind: &[&str] = if extra.contains(&"--bind") {
        &[]
    } else {
        &["--bind", "127.0.0.1"]
    };
    let mut broker = BrokerProcess(
        Command::new(env!("CARGO_BIN_EXE_leveret"))
            .args(bind)
            .args(["--port", "0", "--data-dir"])
            .arg(dir)
            .args(ports)
            .args(extra)
            .current_dir(dir.parent().unwrap_or(dir))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn leveret"),
        0,
    );
    let stderr = broker.0.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let port_after = |line: &str, key: &str| -> Option<u16> {
        let rest = line.split(key).nth(1)?;
        let addr = rest.split_whitespace().next()?;
        addr.rsplit(':').next()?.parse().ok()
    };
    loop {
        let line = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("broker logs readiness");
        if let Some(http) = port_after(&line, "http=") {
            broker.1 = http;
        }
        if let Some(rest) = line.split("local=").nth(1) {
            let addr = rest.split_whitespace().next().expect("address");
            let port = addr
                .rsplit(':')
                .next()
                .and_then(|p| p.parse().ok())
                .expect("port");
            return (broker, port);
        }
    }
}

/// An ephemeral listener for the management API of an in-process broker, and the API's state.
pub async fn admin_state(
    b: &TestBroker,
) -> (tokio::net::TcpListener, Arc<leveret::admin::AdminState>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let state = Arc::new(leveret::admin::AdminState {
        broker: b.broker.clone(),
        rates: Default::default(),
        amqp_ports: vec![b.addr.port()],
        http_ports: vec![listener.local_addr().unwrap().port()],
        limits: Default::default(),
    });
    (listener, state)
}

/// Serve the management API of an in-process broker on an ephemeral port.
pub async fn start_admin(b: &TestBroker) -> SocketAddr {
    let (listener, state) = admin_state(b).await;
    let addr = listener.local_addr().unwrap();
    let (_tx, rx) = watch::channel(false);
    // The sender lives as long as the test: leak it so the server is never told to stop.
    std::mem::forget(_tx);
    tokio::spawn(leveret::admin::serve(listener, state, rx));
    addr
}

/// A field table from pairs.
pub fn args(pairs: &[(&str, AMQPValue)]) -> FieldTable {
    let mut t = FieldTable::default();
    for (k, v) in pairs {
        t.insert((*k).into(), v.clone());
    }
    t
}

/// A long-string field value.
pub fn long(s: &str) -> AMQPValue {
    AMQPValue::LongString(s.into())
}

/// Options of a durable queue.
pub fn durable() -> QueueDeclareOptions {
    QueueDeclareOptions {
        durable: true,
        ..Default::default()
    }
}

/// A queue's ready count, by passive declare.
pub async fn message_count(ch: &Channel, name: &str) -> u32 {
    ch.queue_declare(
        name.into(),
        QueueDeclareOptions {
            passive: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .expect("passive declare")
    .message_count()
}

/// `basic.get` with manual ack.
pub async fn get(ch: &Channel, q: &str) -> Option<lapin::message::BasicGetMessage> {
    ch.basic_get(q.into(), BasicGetOptions { no_ack: false })
        .await
        .expect("basic.get")
}

/// A fanout exchange `dlx` bound to a queue `dead` (declared with `dead_args`), and a queue
/// `source` (declared with `source_args`) dead-lettering to `dlx`; durable when `durable_all`.
pub async fn dead_letter_pair(
    ch: &Channel,
    source_args: &[(&str, AMQPValue)],
    dead_args: FieldTable,
    durable_all: bool,
) {
    let options = if durable_all {
        durable()
    } else {
        QueueDeclareOptions::default()
    };
    ch.exchange_declare(
        "dlx".into(),
        lapin::ExchangeKind::Fanout,
        ExchangeDeclareOptions {
            durable: durable_all,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .expect("exchange.declare dlx");
    ch.queue_declare("dead".into(), options, dead_args)
        .await
        .expect("queue.declare dead");
    ch.queue_bind(
        "dead".into(),
        "dlx".into(),
        "".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .expect("queue.bind dead");
    let mut source = vec![("x-dead-letter-exchange", long("dlx"))];
    source.extend(source_args.iter().cloned());
    ch.queue_declare("source".into(), options, args(&source))
        .await
        .expect("queue.declare source");
}

/// Publish on a channel in confirm mode and wait for the broker's answer; true for an ack.
pub async fn publish_confirmed(
    ch: &Channel,
    exchange: &str,
    key: &str,
    body: &[u8],
    props: BasicProperties,
) -> bool {
    ch.basic_publish(
        exchange.into(),
        key.into(),
        BasicPublishOptions::default(),
        body,
        props,
    )
    .await
    .expect("basic.publish")
    .await
    .expect("publisher confirm")
    .is_ack()
}
