//! leveret-perf: a load generator modelled on RabbitMQ's PerfTest, built on lapin.
//!
//! Producers and consumers each get their own connection. Bodies carry the send time, so the
//! consumer measures publish→deliver latency. With `--pmessages` each producer sends a fixed
//! count and the run reports lost messages; otherwise it runs for `--time` seconds. With
//! `--broker-pid` it also reports the broker's CPU time per message (from /proc), the figure that
//! does not depend on how fast this client is. With `--depth N` it fills each queue with N
//! messages (publish only), then drains them (consume only), and reports both rates with the
//! broker's peak memory and, given `--data-dir`, the data directory's size after the fill, after
//! the drain, and how long after the drain it took to come down to `--disk-target` megabytes.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use futures::StreamExt;
use lapin::options::*;
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties, ExchangeKind};

#[derive(Debug, Parser, Clone)]
#[command(about = "Throughput and latency load generator for AMQP 0-9-1 brokers")]
struct Args {
    /// Broker URI.
    #[arg(long, default_value = "amqp://guest:guest@127.0.0.1:5672/%2f")]
    uri: String,
    /// Number of producers.
    #[arg(long, short = 'x', default_value_t = 1)]
    producers: usize,
    /// Number of consumers.
    #[arg(long, short = 'y', default_value_t = 1)]
    consumers: usize,
    /// Number of queues (producer i publishes to queue i mod n; consumer j reads queue j mod n).
    #[arg(long, default_value_t = 1)]
    queues: usize,
    /// Publish to a fanout exchange bound to every queue instead.
    #[arg(long)]
    fanout: bool,
    /// Message body size in bytes (at least 8: the send time).
    #[arg(long, short = 's', default_value_t = 16)]
    size: usize,
    /// Publishing rate per producer, messages per second (0 = as fast as possible).
    #[arg(long, short = 'r', default_value_t = 0)]
    rate: u64,
    /// Publisher confirms with at most N outstanding (0 = no confirms).
    #[arg(long, short = 'c', default_value_t = 0)]
    confirm: usize,
    /// Persistent messages on durable queues.
    #[arg(long)]
    persistent: bool,
    /// Consumers use no-ack.
    #[arg(long, short = 'a')]
    autoack: bool,
    /// Ack every N deliveries with multiple=true (manual ack only).
    #[arg(long, default_value_t = 1)]
    multi_ack: u64,
    /// Consumer prefetch (basic.qos).
    #[arg(long, short = 'q', default_value_t = 0)]
    qos: u16,
    /// Run time in seconds (time-based runs).
    #[arg(long, short = 'z', default_value_t = 10)]
    time: u64,
    /// Messages per producer (fixed-count run; reports lost messages).
    #[arg(long, short = 'C')]
    pmessages: Option<u64>,
    /// Broker process id, to report its CPU time per message.
    #[arg(long)]
    broker_pid: Option<u32>,
    /// Queue name prefix.
    #[arg(long, default_value = "perf")]
    prefix: String,
    /// Only publish (no consumers), leaving messages queued.
    #[arg(long)]
    publish_only: bool,
    /// Only consume what is already queued.
    #[arg(long)]
    consume_only: bool,
    /// Delete the queues at the end of the run.
    #[arg(long)]
    cleanup: bool,
    /// Fill-and-drain: N messages per producer published (publish only), then drained.
    #[arg(long)]
    depth: Option<u64>,
    /// The broker's data directory, for the disk figures of `--depth`.
    #[arg(long)]
    data_dir: Option<std::path::PathBuf>,
    /// Use streams (`x-queue-type: stream`, durable) instead of classic queues: every consumer
    /// of a stream reads all of it, from `--stream-offset`.
    #[arg(long)]
    stream: bool,
    /// Where stream consumers start (`first`, `last`, `next` or a number).
    #[arg(long, default_value = "next")]
    stream_offset: String,
    /// Megabytes the data directory should come down to after a `--depth` drain.
    #[arg(long, default_value_t = 64)]
    disk_target: u64,
}

fn epoch() -> Instant {
    static START: OnceLock<Instant> = OnceLock::new();
    *START.get_or_init(Instant::now)
}

fn now_nanos() -> u64 {
    epoch().elapsed().as_nanos() as u64
}

#[derive(Default)]
struct Counters {
    published: AtomicU64,
    consumed: AtomicU64,
    /// Nanoseconds (since the epoch) of the latest delivery, for consume-only runs.
    last_consumed_at: AtomicU64,
    stop: AtomicBool,
    latencies: Mutex<Vec<u64>>,
}

/// CPU time (ns) the process has used, summed over its threads.
fn process_cpu_nanos(pid: u32) -> Option<u64> {
    let mut total = 0u64;
    for entry in std::fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        let path = entry.ok()?.path().join("schedstat");
        if let Ok(text) = std::fs::read_to_string(path) {
            total += text.split_whitespace().next()?.parse::<u64>().ok()?;
        }
    }
    Some(total)
}

fn queue_name(args: &Args, i: usize) -> String {
    format!("{}-{}", args.prefix, i)
}

async fn setup(args: &Args) -> anyhow::Result<()> {
    let conn = Connection::connect(&args.uri, ConnectionProperties::default())
        .await
        .context("connecting")?;
    let ch = conn.create_channel().await?;
    for i in 0..args.queues {
        let name = queue_name(args, i);
        let mut declare_args = FieldTable::default();
        if args.stream {
            declare_args.insert(
                "x-queue-type".into(),
                lapin::types::AMQPValue::LongString("stream".into()),
            );
        }
        ch.queue_declare(
            name.as_str().into(),
            QueueDeclareOptions {
                durable: args.persistent || args.stream,
                ..Default::default()
            },
            declare_args,
        )
        .await?;
        // Streams refuse purge; a stream run reads from its own offset instead.
        if !args.consume_only && !args.stream {
            ch.queue_purge(name.as_str().into(), QueuePurgeOptions::default())
                .await?;
        }
        if args.fanout {
            ch.exchange_declare(
                format!("{}-fanout", args.prefix).as_str().into(),
                ExchangeKind::Fanout,
                ExchangeDeclareOptions::default(),
                FieldTable::default(),
            )
            .await?;
            ch.queue_bind(
                name.as_str().into(),
                format!("{}-fanout", args.prefix).as_str().into(),
                "".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
        }
    }
    conn.close(200, "setup done".into()).await?;
    Ok(())
}

async fn produce(args: Arc<Args>, id: usize, counters: Arc<Counters>) -> anyhow::Result<()> {
    let conn = Connection::connect(&args.uri, ConnectionProperties::default()).await?;
    let ch = conn.create_channel().await?;
    if args.confirm > 0 {
        ch.confirm_select(ConfirmSelectOptions::default()).await?;
    }
    let (exchange, key) = if args.fanout {
        (format!("{}-fanout", args.prefix), String::new())
    } else {
        (String::new(), queue_name(&args, id % args.queues))
    };
    let mut props = BasicProperties::default();
    if args.persistent {
        props = props.with_delivery_mode(2);
    }
    // lapin resolves a publish once its frames are written; keep a window of publishes in flight
    // (each polled once, so frames go out in order) instead of waiting for each in turn.
    let window = if args.confirm > 0 { args.confirm } else { 512 };
    let mut in_flight: VecDeque<Pin<Box<dyn Future<Output = lapin::Result<()>> + Send>>> =
        VecDeque::new();
    let confirm = args.confirm > 0;
    let started = Instant::now();
    let mut sent = 0u64;
    loop {
        if counters.stop.load(Ordering::Relaxed) || args.pmessages.is_some_and(|n| sent >= n) {
            break;
        }
        if let Some(gap) = 1_000_000_000u64.checked_div(args.rate) {
            let due = started + Duration::from_nanos(sent * gap);
            let now = Instant::now();
            if due > now {
                tokio::time::sleep(due - now).await;
            }
        }
        let mut body = vec![0u8; args.size.max(8)];
        body[..8].copy_from_slice(&now_nanos().to_le_bytes());
        let (ch, exchange, key, props) = (ch.clone(), exchange.clone(), key.clone(), props.clone());
        let mut publish: Pin<Box<dyn Future<Output = lapin::Result<()>> + Send>> =
            Box::pin(async move {
                let pending = ch
                    .basic_publish(
                        exchange.as_str().into(),
                        key.as_str().into(),
                        BasicPublishOptions::default(),
                        &body,
                        props,
                    )
                    .await?;
                if confirm {
                    pending.await?;
                }
                Ok(())
            });
        sent += 1;
        match futures::poll!(&mut publish) {
            std::task::Poll::Ready(result) => result?,
            std::task::Poll::Pending => in_flight.push_back(publish),
        }
        while in_flight.len() >= window {
            if let Some(oldest) = in_flight.pop_front() {
                oldest.await?;
            }
        }
        counters.published.fetch_add(1, Ordering::Relaxed);
    }
    for publish in in_flight {
        publish.await?;
    }
    conn.close(200, "done".into()).await.ok();
    Ok(())
}

/// A stream consumer's `x-stream-offset`.
fn consume_args(args: &Args) -> FieldTable {
    let mut t = FieldTable::default();
    if args.stream {
        let offset = match args.stream_offset.parse::<i64>() {
            Ok(n) => lapin::types::AMQPValue::LongLongInt(n),
            Err(_) => lapin::types::AMQPValue::LongString(args.stream_offset.as_str().into()),
        };
        t.insert("x-stream-offset".into(), offset);
    }
    t
}

async fn consume(args: Arc<Args>, id: usize, counters: Arc<Counters>) -> anyhow::Result<()> {
    let conn = Connection::connect(&args.uri, ConnectionProperties::default()).await?;
    let ch = conn.create_channel().await?;
    if args.qos > 0 {
        ch.basic_qos(args.qos, BasicQosOptions::default()).await?;
    }
    let mut consumer = ch
        .basic_consume(
            queue_name(&args, id % args.queues).as_str().into(),
            format!("perf-{id}").as_str().into(),
            BasicConsumeOptions {
                no_ack: args.autoack,
                ..Default::default()
            },
            consume_args(&args),
        )
        .await?;
    let mut latencies = Vec::with_capacity(1 << 16);
    let mut unacked = 0u64;
    let mut acks: VecDeque<Pin<Box<dyn Future<Output = lapin::Result<()>> + Send>>> =
        VecDeque::new();
    loop {
        let next = tokio::time::timeout(Duration::from_millis(200), consumer.next()).await;
        let delivery = match next {
            Ok(Some(Ok(d))) => d,
            Ok(Some(Err(e))) => return Err(e.into()),
            Ok(None) => break,
            Err(_) => {
                if counters.stop.load(Ordering::Relaxed) {
                    break;
                }
                continue;
            }
        };
        if delivery.data.len() >= 8 {
            let mut sent = [0u8; 8];
            sent.copy_from_slice(&delivery.data[..8]);
            latencies.push(now_nanos().saturating_sub(u64::from_le_bytes(sent)));
        }
        if !args.autoack {
            unacked += 1;
            if unacked >= args.multi_ack {
                // Like publishes, acks are pipelined: queued in order, awaited later.
                let (ch, tag, multiple) = (ch.clone(), delivery.delivery_tag, args.multi_ack > 1);
                let mut ack: Pin<Box<dyn Future<Output = lapin::Result<()>> + Send>> =
                    Box::pin(async move { ch.basic_ack(tag, BasicAckOptions { multiple }).await });
                if futures::poll!(&mut ack).is_pending() {
                    acks.push_back(ack);
                }
                while acks.len() >= 256 {
                    if let Some(oldest) = acks.pop_front() {
                        oldest.await?;
                    }
                }
                unacked = 0;
            }
        }
        counters.consumed.fetch_add(1, Ordering::Relaxed);
        counters
            .last_consumed_at
            .store(now_nanos(), Ordering::Relaxed);
    }
    for ack in acks {
        ack.await?;
    }
    if let Ok(mut all) = counters.latencies.lock() {
        all.extend_from_slice(&latencies);
    }
    conn.close(200, "done".into()).await.ok();
    Ok(())
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

/// Allocated bytes under `dir` (what `du` counts).
fn disk_bytes(dir: &std::path::Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(meta) = e.metadata() else { continue };
            if meta.is_dir() {
                stack.push(e.path());
            } else {
                total += meta.blocks() * 512;
            }
        }
    }
    total
}

fn rss_bytes(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// One phase of `--depth`: this program again, with `extra` arguments; its RESULT line's fields.
fn phase(extra: &[&str]) -> anyhow::Result<std::collections::HashMap<String, f64>> {
    let mut argv: Vec<String> = std::env::args().skip(1).collect();
    // Drop `--depth N` (and its `=` form) so the child runs a plain phase.
    let mut i = 0;
    while i < argv.len() {
        if argv[i] == "--depth" {
            argv.drain(i..(i + 2).min(argv.len()));
        } else if argv[i].starts_with("--depth=") {
            argv.remove(i);
        } else {
            i += 1;
        }
    }
    argv.extend(extra.iter().map(|s| s.to_string()));
    let out = std::process::Command::new(std::env::current_exe()?)
        .args(&argv)
        .stderr(std::process::Stdio::null())
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.starts_with("RESULT "))
        .with_context(|| format!("phase {extra:?} printed no RESULT: {text}"))?;
    Ok(line
        .split_whitespace()
        .skip(1)
        .filter_map(|kv| kv.split_once('='))
        .filter_map(|(k, v)| Some((k.to_owned(), v.parse().ok()?)))
        .collect())
}

fn run_depth(args: &Args, depth: u64) -> anyhow::Result<()> {
    let peak = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = args.broker_pid.map(|pid| {
        let (peak, stop) = (peak.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                peak.fetch_max(rss_bytes(pid), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    });
    let mb = |b: u64| b as f64 / 1e6;
    let disk = |dir: &Option<std::path::PathBuf>| dir.as_deref().map_or(0, disk_bytes);
    let n = depth.to_string();
    let fill = phase(&["--publish-only", "--pmessages", &n])?;
    let disk_full = disk(&args.data_dir);
    let rss_full = args.broker_pid.map_or(0, rss_bytes);
    let drain = phase(&["--consume-only", "--pmessages", &n])?;
    let drained = Instant::now();
    let mut disk_empty = disk(&args.data_dir);
    let target = args.disk_target * 1_000_000;
    while args.data_dir.is_some()
        && disk_empty > target
        && drained.elapsed() < Duration::from_secs(30)
    {
        std::thread::sleep(Duration::from_millis(200));
        disk_empty = disk(&args.data_dir);
    }
    let settle = drained.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    if let Some(s) = sampler {
        let _ = s.join();
    }
    let get =
        |m: &std::collections::HashMap<String, f64>, k: &str| m.get(k).copied().unwrap_or(0.0);
    println!(
        "DEPTH messages={} fill_rate={:.0} drain_rate={:.0} lost={:.0} rss_peak_mb={:.0} rss_full_mb={:.0} disk_full_mb={:.0} disk_drained_mb={:.0} disk_settle_s={:.1}",
        depth * args.producers as u64,
        get(&fill, "sent_rate"),
        get(&drain, "recv_rate"),
        get(&drain, "lost"),
        mb(peak.load(Ordering::Relaxed)),
        mb(rss_full),
        mb(disk_full),
        mb(disk_empty),
        settle
    );
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Arc::new(Args::parse());
    if let Some(depth) = args.depth {
        return tokio::task::block_in_place(|| run_depth(&args, depth));
    }
    epoch();
    setup(&args).await?;
    let counters = Arc::new(Counters::default());
    let mut consumers = Vec::new();
    if !args.publish_only {
        for id in 0..args.consumers {
            consumers.push(tokio::spawn(consume(args.clone(), id, counters.clone())));
        }
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let cpu_before = args.broker_pid.and_then(process_cpu_nanos);
    let started = Instant::now();
    let mut producers = Vec::new();
    if !args.consume_only {
        for id in 0..args.producers {
            producers.push(tokio::spawn(produce(args.clone(), id, counters.clone())));
        }
    }
    // Every consumer of a stream reads all of it; a queue's consumers share it.
    let fanout = if args.fanout {
        args.queues as u64
    } else if args.stream {
        (args.consumers as u64 / args.queues.max(1) as u64).max(1)
    } else {
        1
    };
    let expected = args.pmessages.map(|n| n * args.producers as u64 * fanout);
    let mut last = (0, 0);
    let mut idle_since = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let p = counters.published.load(Ordering::Relaxed);
        let c = counters.consumed.load(Ordering::Relaxed);
        eprintln!(
            "{:>4}s  sent {:>9} msg/s  received {:>9} msg/s",
            started.elapsed().as_secs(),
            p - last.0,
            c - last.1
        );
        if (p, c) != last {
            idle_since = Instant::now();
        }
        last = (p, c);
        let done = match expected {
            Some(n) if args.publish_only => p >= n / fanout,
            Some(n) => c >= n,
            None if args.consume_only => idle_since.elapsed() >= Duration::from_secs(2),
            None => started.elapsed() >= Duration::from_secs(args.time),
        };
        if done || idle_since.elapsed() >= Duration::from_secs(10) {
            break;
        }
    }
    let mut elapsed = started.elapsed().as_secs_f64();
    if args.consume_only {
        // Draining ends with the last delivery, not with the idle wait that detects it.
        let last = counters.last_consumed_at.load(Ordering::Relaxed);
        let start = started.duration_since(epoch()).as_nanos() as u64;
        if last > start {
            elapsed = (last - start) as f64 / 1e9;
        }
    }
    let cpu_after = args.broker_pid.and_then(process_cpu_nanos);
    // Rates count what happened inside the measured interval; a fixed-count run then waits for
    // the remainder so that `lost` is exact.
    let (published_in_time, consumed_in_time) = (
        counters.published.load(Ordering::Relaxed),
        counters.consumed.load(Ordering::Relaxed),
    );
    counters.stop.store(true, Ordering::Relaxed);
    for p in producers {
        p.await??;
    }
    for c in consumers {
        c.await??;
    }
    let published = counters.published.load(Ordering::Relaxed);
    let consumed = counters.consumed.load(Ordering::Relaxed);
    let mut lat = counters
        .latencies
        .lock()
        .map(|l| l.clone())
        .unwrap_or_default();
    lat.sort_unstable();
    let cpu_per_msg = match (cpu_before, cpu_after) {
        (Some(a), Some(b)) => {
            (b.saturating_sub(a)) as f64
                / 1000.0
                / (published_in_time.max(consumed_in_time).max(1) as f64)
        }
        _ => f64::NAN,
    };
    let (sent_rate, recv_rate) = (
        published_in_time as f64 / elapsed,
        consumed_in_time as f64 / elapsed,
    );
    let (p50, p95, p99) = (
        percentile(&lat, 0.50),
        percentile(&lat, 0.95),
        percentile(&lat, 0.99),
    );
    println!(
        "sent {sent_rate:.0} msg/s, received {recv_rate:.0} msg/s, latency p50 {p50:.0} us, p95 {p95:.0} us, p99 {p99:.0} us, broker cpu {cpu_per_msg:.3} us/msg"
    );
    if args.cleanup {
        let conn = Connection::connect(&args.uri, ConnectionProperties::default()).await?;
        let ch = conn.create_channel().await?;
        for i in 0..args.queues {
            ch.queue_delete(
                queue_name(&args, i).as_str().into(),
                QueueDeleteOptions::default(),
            )
            .await?;
        }
        conn.close(200, "cleanup done".into()).await.ok();
    }
    let lost = match expected {
        Some(n) if !args.publish_only => n.saturating_sub(consumed),
        _ => 0,
    };
    if expected.is_some() && !args.publish_only {
        println!("lost {lost} of {}", expected.unwrap_or(0));
    }
    println!(
        "RESULT sent_rate={sent_rate:.0} recv_rate={recv_rate:.0} p50_us={p50:.0} p95_us={p95:.0} p99_us={p99:.0} cpu_us_per_msg={cpu_per_msg:.3} published={} consumed={} lost={} elapsed_s={:.3}",
        published,
        consumed,
        lost,
        elapsed
    );
    Ok(())
}
