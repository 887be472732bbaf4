//! The registry of live client connections, their channels and consumers, for management.
//!
//! The server registers each connection after its handshake and keeps the shared counters up
//! to date (plain atomics, written by the connection's own task, read by the HTTP API). The
//! registry can ask a connection to close (user or vhost deleted, an operator's request): the
//! request goes down the connection's kill lane and the connection sends `connection.close`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use tokio::sync::mpsc;

use crate::protocol::{AmqpError, FieldTable, ReplyCode};

/// Message counters, shared between the task that counts and the readers that report.
#[derive(Debug, Default)]
pub struct MessageCounters {
    /// Messages published.
    pub publish: AtomicU64,
    /// Publisher confirms (acks) sent.
    pub confirm: AtomicU64,
    /// Deliveries to consumers (acknowledged mode or not).
    pub deliver: AtomicU64,
    /// Messages fetched with `basic.get`.
    pub get: AtomicU64,
    /// Deliveries acknowledged by clients.
    pub ack: AtomicU64,
    /// Redeliveries.
    pub redeliver: AtomicU64,
    /// Publishes that reached no queue.
    pub unroutable: AtomicU64,
}

impl MessageCounters {
    /// Add `n` to a counter.
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

/// A consumer, as management lists it.
#[derive(Debug, Clone)]
pub struct ConsumerInfo {
    /// The consumer tag.
    pub tag: String,
    /// The queue consumed from.
    pub queue: String,
    /// Whether deliveries need acks.
    pub ack_required: bool,
    /// Exclusive consumer.
    pub exclusive: bool,
    /// The channel's prefetch when it subscribed.
    pub prefetch_count: u32,
    /// `basic.consume` arguments.
    pub arguments: FieldTable,
}

/// A channel's live state, written by its connection task.
#[derive(Debug, Default)]
pub struct ChannelInfo {
    /// Channel number.
    pub number: u16,
    /// Per-consumer prefetch (`basic.qos` with global = false).
    pub prefetch_count: AtomicU32,
    /// Channel-wide prefetch (`basic.qos` with global = true).
    pub global_prefetch_count: AtomicU32,
    /// Deliveries not yet settled.
    pub unacked: AtomicU64,
    /// Publisher confirms on.
    pub confirm: AtomicBool,
    /// In a transaction.
    pub transactional: AtomicBool,
    /// Message counters.
    pub counters: MessageCounters,
    consumers: Mutex<BTreeMap<String, ConsumerInfo>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl ChannelInfo {
    /// A channel's record.
    pub fn new(number: u16) -> Self {
        Self {
            number,
            ..Self::default()
        }
    }

    /// A consumer started.
    pub fn add_consumer(&self, consumer: ConsumerInfo) {
        lock(&self.consumers).insert(consumer.tag.clone(), consumer);
    }

    /// A consumer ended.
    pub fn remove_consumer(&self, tag: &str) {
        lock(&self.consumers).remove(tag);
    }

    /// The channel's consumers.
    pub fn consumers(&self) -> Vec<ConsumerInfo> {
        lock(&self.consumers).values().cloned().collect()
    }
}

/// A connection's identity and live state.
#[derive(Debug)]
pub struct ConnectionInfo {
    /// Broker-unique id.
    pub id: u64,
    /// RabbitMQ's connection name: `"peer -> local"`.
    pub name: String,
    /// The client's address.
    pub peer: SocketAddr,
    /// Our address.
    pub local: SocketAddr,
    /// The authenticated user.
    pub user: String,
    /// The vhost.
    pub vhost: String,
    /// The authentication mechanism.
    pub auth_mechanism: String,
    /// What the client said about itself in `connection.start-ok`.
    pub client_properties: FieldTable,
    /// Negotiated.
    pub frame_max: u32,
    /// Negotiated.
    pub channel_max: u16,
    /// Negotiated, seconds.
    pub heartbeat: u16,
    /// Milliseconds since the epoch.
    pub connected_at: u64,
    /// Bytes read from the socket.
    pub recv_oct: AtomicU64,
    /// Bytes written to the socket.
    pub send_oct: AtomicU64,
    /// Whether an alarm has it blocked.
    pub blocked: AtomicBool,
    /// Over TLS.
    pub tls: AtomicBool,
    channels: Mutex<BTreeMap<u16, Arc<ChannelInfo>>>,
    kill: mpsc::UnboundedSender<AmqpError>,
}

impl ConnectionInfo {
    /// A record for a connection that just finished its handshake; the receiver is its kill
    /// lane.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        id: u64,
        peer: SocketAddr,
        local: SocketAddr,
        user: String,
        vhost: String,
        auth_mechanism: String,
        client_properties: FieldTable,
        (frame_max, channel_max, heartbeat): (u32, u16, u16),
    ) -> (Arc<Self>, mpsc::UnboundedReceiver<AmqpError>) {
        let (kill, killed) = mpsc::unbounded_channel();
        let info = Arc::new(Self {
            id,
            name: format!("{peer} -> {local}"),
            peer,
            local,
            user,
            vhost,
            auth_mechanism,
            client_properties,
            frame_max,
            channel_max,
            heartbeat,
            connected_at: now_ms(),
            recv_oct: AtomicU64::new(0),
            send_oct: AtomicU64::new(0),
            blocked: AtomicBool::new(false),
            tls: AtomicBool::new(false),
            channels: Mutex::new(BTreeMap::new()),
            kill,
        });
        (info, killed)
    }

    /// A channel opened.
    pub fn add_channel(&self, channel: Arc<ChannelInfo>) {
        lock(&self.channels).insert(channel.number, channel);
    }

    /// A channel closed.
    pub fn remove_channel(&self, number: u16) {
        lock(&self.channels).remove(&number);
    }

    /// Its open channels.
    pub fn channels(&self) -> Vec<Arc<ChannelInfo>> {
        lock(&self.channels).values().cloned().collect()
    }

    /// Ask the connection to close with 320 CONNECTION_FORCED and `reason`.
    pub fn close(&self, reason: &str) {
        let _ = self
            .kill
            .send(AmqpError::new(ReplyCode::ConnectionForced, reason));
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Every live connection.
#[derive(Debug, Default)]
pub struct ConnectionRegistry {
    connections: RwLock<BTreeMap<u64, Arc<ConnectionInfo>>>,
}

impl ConnectionRegistry {
    /// Add a connection.
    pub fn register(&self, info: Arc<ConnectionInfo>) {
        self.connections
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(info.id, info);
    }

    /// Remove a connection.
    pub fn unregister(&self, id: u64) {
        self.connections
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&id);
    }

    /// Every connection, oldest first.
    pub fn all(&self) -> Vec<Arc<ConnectionInfo>> {
        self.connections
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .values()
            .cloned()
            .collect()
    }

    /// Close every connection matching `pred` with 320 and `reason`; returns how many.
    pub fn close_where(&self, pred: impl Fn(&ConnectionInfo) -> bool, reason: &str) -> usize {
        let doomed: Vec<Arc<ConnectionInfo>> = self.all().into_iter().filter(|c| pred(c)).collect();
        for c in &doomed {
            c.close(reason);
        }
        doomed.len()
    }
}

/// Upper bounds (seconds) of the confirm-latency histogram's buckets.
pub const LATENCY_BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

/// How long publishes that queues confirm themselves (persistent messages in durable queues,
/// or queues that may refuse) waited for their confirm: a Prometheus histogram.
#[derive(Debug, Default)]
pub struct LatencyHistogram {
    buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl LatencyHistogram {
    /// Count one latency.
    pub fn record(&self, latency: std::time::Duration) {
        let seconds = latency.as_secs_f64();
        if let Some(i) = LATENCY_BUCKETS.iter().position(|&le| seconds <= le) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add(latency.as_micros() as u64, Ordering::Relaxed);
    }

    /// Cumulative counts per bucket bound, the total count and the sum in seconds.
    pub fn snapshot(&self) -> (Vec<(f64, u64)>, u64, f64) {
        let mut cumulative = 0;
        let buckets = LATENCY_BUCKETS
            .iter()
            .zip(&self.buckets)
            .map(|(&le, n)| {
                cumulative += n.load(Ordering::Relaxed);
                (le, cumulative)
            })
            .collect();
        (
            buckets,
            self.count.load(Ordering::Relaxed),
            self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6,
        )
    }
}
