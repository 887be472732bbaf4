//! The Leveret broker binary: flags and config → tracing → store → broker → HTTP API,
//! metrics and AMQP listeners, until SIGINT/SIGTERM.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use leveret::broker::{Broker, BrokerConfig};
use leveret::config::{self, Config};
use leveret::store::{DataDir, DataDirOptions};

/// An AMQP 0-9-1 message broker with RabbitMQ's semantics.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// AMQP port (overrides `listeners.tcp.default`).
    #[arg(long, env = "LEVERET_PORT")]
    port: Option<u16>,
    /// Address to listen on (overrides `listeners.tcp.default`).
    #[arg(long, env = "LEVERET_BIND")]
    bind: Option<IpAddr>,
    /// Data directory (overrides `data_dir`; default ./data).
    #[arg(long, env = "LEVERET_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Configuration file (rabbitmq.conf syntax); `conf/leveret.conf` is read if present.
    #[arg(long, env = "LEVERET_CONFIG")]
    config: Option<PathBuf>,
    /// Heartbeat offered to clients, seconds (overrides `heartbeat`).
    #[arg(long, env = "LEVERET_HEARTBEAT")]
    heartbeat: Option<u16>,
    /// HTTP management API port (overrides `management.tcp.port`; 0: any free port).
    #[arg(long, env = "LEVERET_MANAGEMENT_PORT")]
    management_port: Option<u16>,
    /// Prometheus metrics port (overrides `prometheus.tcp.port`; 0: any free port).
    #[arg(long, env = "LEVERET_PROMETHEUS_PORT")]
    prometheus_port: Option<u16>,
    /// Log level (overrides `log.console.level`; RUST_LOG overrides both).
    #[arg(long, env = "LEVERET_LOG_LEVEL")]
    log_level: Option<String>,
    /// Worker threads (default: one fewer than the CPUs, at least one).
    #[arg(long, env = "LEVERET_WORKERS")]
    workers: Option<usize>,
    /// Print the effective configuration (file, then flags and LEVERET_* variables) and exit.
    #[arg(long)]
    print_config: bool,
}

/// The configuration file's settings with flags and `LEVERET_*` variables applied over them.
fn effective_config(args: &Args) -> anyhow::Result<Config> {
    let default_conf = PathBuf::from("conf/leveret.conf");
    let path = match &args.config {
        Some(path) => Some(path.clone()),
        None => default_conf.exists().then_some(default_conf),
    };
    let mut config = match &path {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            config::parse(&path.display().to_string(), &text)?
        }
        None => Config::default(),
    };
    let listener = config
        .listeners_tcp
        .entry("default".to_owned())
        .or_insert_with(|| SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, 5672)));
    if let Some(ip) = args.bind {
        listener.set_ip(ip);
    }
    if let Some(port) = args.port {
        listener.set_port(port);
    }
    if let Some(dir) = &args.data_dir {
        config.data_dir = dir.clone();
    }
    if let Some(port) = args.management_port {
        config.management_port = port;
    }
    if let Some(port) = args.prometheus_port {
        config.prometheus_port = port;
    }
    if let Some(h) = args.heartbeat {
        config.heartbeat = h;
    }
    if let Some(level) = &args.log_level {
        config.log_level = level.clone();
    }
    Ok(config)
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let config = effective_config(&args)?;
    if args.print_config {
        print!("{}", config.render());
        return Ok(());
    }
    // One CPU is left to the kernel, sled's flushes and, on small machines, the clients: at
    // moderate rates a broker thread woken less often costs less per message (measured on two
    // cores: 5.7 vs 8.5 µs per fanout delivery with one worker instead of two).
    let workers = args.workers.unwrap_or_else(|| {
        std::thread::available_parallelism().map_or(1, |n| n.get().saturating_sub(1).max(1))
    });
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .context("starting the runtime")?
        .block_on(run(config, workers))
}

async fn run(config: Config, workers: usize) -> anyhow::Result<()> {
    let level = match config.log_level.as_str() {
        "warning" => "warn",
        "critical" => "error",
        "none" => "off",
        other => other,
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level)),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    for key in config.not_yet_supported() {
        tracing::warn!("configuration key accepted but not acted on yet: {key}");
    }
    let broker_config = BrokerConfig {
        heartbeat: config.heartbeat,
        frame_max: config.frame_max,
        channel_max: config.channel_max,
        max_message_size: config.max_message_size,
        max_unacked_per_channel: config.max_unacked_per_channel,
        max_pending_output: usize::try_from(config.max_pending_output).unwrap_or(usize::MAX),
        loopback_users: config.loopback_users.clone(),
        default_vhost: config.default_vhost.clone(),
        default_user: config.default_user.clone(),
        default_pass: config.default_pass.clone(),
        consumer_timeout: config.consumer_timeout(),
        memory_high_watermark: config.memory_high_watermark_bytes(),
        paging_ratio: config.vm_memory_high_watermark_paging_ratio,
        disk_free_limit: config.disk_free_limit_bytes(),
        data_dir: Some(config.data_dir.clone()),
        ..BrokerConfig::default()
    };
    let data_dir = &config.data_dir;
    let store = DataDir::open_with(
        data_dir,
        DataDirOptions {
            flush_interval_ms: config.store_flush_interval,
            segment_bytes: config.store_segment_size,
        },
    )
    .with_context(|| format!("opening the data directory {}", data_dir.display()))?;
    let started = std::time::Instant::now();
    let broker = Broker::open(broker_config, Arc::new(store))
        .context("recovering stored definitions and messages")?;
    tracing::info!(
        elapsed_ms = started.elapsed().as_millis() as u64,
        "recovery complete"
    );
    let (shutdown_tx, shutdown_rx) = tokio::sync::watch::channel(false);
    let mut servers = Vec::new();
    // The HTTP listeners bind on the AMQP listener's address, and before it: once the AMQP
    // "ready" line is logged, everything is.
    let bind_ip = config.listeners_tcp.values().next().map_or(
        IpAddr::from(std::net::Ipv6Addr::UNSPECIFIED),
        SocketAddr::ip,
    );
    let http = leveret::server::bind(SocketAddr::new(bind_ip, config.management_port))
        .with_context(|| {
            format!(
                "listening on port {} (management.tcp.port)",
                config.management_port
            )
        })?;
    let http_local = http[0].local_addr()?;
    let admin = Arc::new(leveret::admin::AdminState {
        broker: broker.clone(),
        rates: Default::default(),
        amqp_ports: config
            .listeners_tcp
            .values()
            .map(SocketAddr::port)
            .collect(),
        http_ports: vec![http_local.port()],
        limits: leveret::admin::HttpLimits {
            max_body_size: usize::try_from(config.management_max_body_size).unwrap_or(usize::MAX),
            max_get_payload: usize::try_from(config.management_max_get_payload)
                .unwrap_or(usize::MAX),
        },
    });
    tracing::info!(http = %http_local, "management API listening");
    servers.push(tokio::spawn(leveret::admin::serve_all(
        http,
        admin.clone(),
        shutdown_rx.clone(),
    )));
    if let Some(port) = config.management_ssl.get("port") {
        let port: u16 = port.parse().context("management.ssl.port")?;
        let tls = leveret::server::tls::server_config(&config.management_ssl)
            .context("loading the management API's TLS settings (management.ssl.*)")?;
        let https = leveret::server::bind(SocketAddr::new(bind_ip, port))
            .with_context(|| format!("listening on port {port} (management.ssl.port)"))?;
        tracing::info!(https = %https[0].local_addr()?, "management API listening over TLS");
        for listener in https {
            servers.push(tokio::spawn(leveret::admin::serve_tls(
                listener,
                tls.clone(),
                admin.clone(),
                shutdown_rx.clone(),
            )));
        }
    }
    let metrics = leveret::server::bind(SocketAddr::new(bind_ip, config.prometheus_port))
        .with_context(|| {
            format!(
                "listening on port {} (prometheus.tcp.port)",
                config.prometheus_port
            )
        })?;
    tracing::info!(metrics = %metrics[0].local_addr()?, "Prometheus metrics listening");
    for listener in metrics {
        servers.push(tokio::spawn(leveret::admin::serve_metrics(
            listener,
            admin.clone(),
            shutdown_rx.clone(),
        )));
    }
    // TLS listeners come up before the plain ones, so the "ready" line means all are.
    if !config.listeners_ssl.is_empty() {
        let tls = leveret::server::tls::server_config(&config.ssl_options)
            .context("loading the TLS settings (ssl_options.*)")?;
        for (name, addr) in &config.listeners_ssl {
            let (local, server) = leveret::server::tls::start(
                *addr,
                tls.clone(),
                broker.clone(),
                shutdown_rx.clone(),
            )
            .await
            .with_context(|| format!("listening on {addr} (listeners.ssl.{name})"))?;
            tracing::info!(amqps = %local, "accepting AMQP 0-9-1 over TLS");
            servers.push(server);
        }
    }
    for (name, addr) in &config.listeners_tcp {
        let (local, server) = leveret::server::start(*addr, broker.clone(), shutdown_rx.clone())
            .await
            .with_context(|| format!("listening on {addr} (listeners.tcp.{name})"))?;
        tracing::info!(%local, data_dir = %data_dir.display(), workers, "Leveret is ready for AMQP 0-9-1 clients");
        servers.push(server);
    }
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutting down");
    let _ = shutdown_tx.send(true);
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        futures::future::join_all(servers),
    )
    .await;
    broker.shutdown(std::time::Duration::from_secs(10)).await;
    Ok(())
}
