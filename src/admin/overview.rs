//! The broker as a whole through the API: overview, nodes, connections, channels, consumers
//! and runtime alarm limits.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, put};
use axum::{Json, Router};
use serde_json::{json, Value};

use super::objects::{body_object, vhost};
use super::render;
use super::{node, ApiError, Auth, COMPATIBLE_VERSION};
use crate::broker::queue::QueueGauges;

type St = State<Arc<super::AdminState>>;

pub(super) fn routes() -> Router<Arc<super::AdminState>> {
    Router::new()
        .route("/api/overview", get(overview))
        .route("/api/nodes", get(nodes))
        .route("/api/nodes/{name}", get(get_node))
        .route(
            "/api/feature-flags",
            get(|_auth: Auth| async { Json(feature_flags()) }),
        )
        .route(
            "/api/auth",
            get(|| async {
                Json(json!({"enable_uaa": false, "uaa_client_id": "", "uaa_location": ""}))
            }),
        )
        // The management UI's own extension, as RabbitMQ lists it.
        .route(
            "/api/extensions",
            get(|| async { Json(json!([{"javascript": "dispatcher.js"}])) }),
        )
        .route("/api/connections", get(list_connections))
        .route(
            "/api/connections/{name}",
            get(get_connection).delete(close_connection),
        )
        .route(
            "/api/connections/username/{user}",
            get(list_user_connections).delete(close_user_connections),
        )
        .route(
            "/api/connections/{name}/channels",
            get(list_connection_channels),
        )
        .route("/api/channels", get(list_channels))
        .route("/api/channels/{name}", get(get_channel))
        .route("/api/vhosts/{vhost}/connections", get(list_connections_in))
        .route("/api/vhosts/{vhost}/channels", get(list_channels_in))
        .route("/api/consumers", get(list_consumers))
        .route("/api/consumers/{vhost}", get(list_consumers_in))
        .route(
            "/api/leveret/vm_memory_high_watermark",
            put(set_memory_limit),
        )
        .route("/api/leveret/disk_free_limit", put(set_disk_limit))
}

fn rate(state: &super::AdminState, field: &str) -> Value {
    json!({ "rate": state.rates.of("", field) })
}

async fn overview(State(state): St, _auth: Auth) -> Json<Value> {
    let broker = &state.broker;
    let c = broker.counters();
    let load = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
    let (mut ready, mut unacked, mut queues, mut exchanges, mut consumers) = (0, 0, 0, 0, 0);
    for v in broker.vhosts() {
        exchanges += v.exchanges().len();
        for (_, record) in v.queues() {
            let g = record.handle.gauges();
            queues += 1;
            ready += QueueGauges::get(&g.ready);
            unacked += QueueGauges::get(&g.unacked);
            consumers += QueueGauges::get(&g.consumers);
        }
    }
    let connections = broker.connections().all();
    let channels: usize = connections.iter().map(|c| c.channels().len()).sum();
    let mut listeners: Vec<Value> = state
        .amqp_ports
        .iter()
        // The options Leveret's listeners really use (server::bind and the accept loop).
        .map(|port| json!({"node": node(), "protocol": "amqp", "ip_address": "::", "port": port, "socket_opts": {"backlog": 1024, "nodelay": true, "linger": [false, 0], "exit_on_close": false}}))
        .collect();
    listeners.extend(state.http_ports.iter().map(|port| json!({"node": node(), "protocol": "http", "ip_address": "::", "port": port, "socket_opts": {"port": port, "cowboy_opts": {"sendfile": false}}})));
    let exchange_types = exchange_types();
    Json(json!({
        "management_version": COMPATIBLE_VERSION,
        "rates_mode": "basic",
        "product_name": "Leveret",
        "product_version": env!("CARGO_PKG_VERSION"),
        "rabbitmq_version": COMPATIBLE_VERSION,
        "cluster_name": state.broker.parameters().cluster_name(),
        "node": node(),
        "erlang_version": "none (Rust)",
        "disable_stats": false,
        "enable_queue_totals": false,
        "exchange_types": exchange_types,
        "message_stats": {
            "publish": load(&c.publish), "publish_details": rate(&state, "publish"),
            "confirm": load(&c.confirm), "confirm_details": rate(&state, "confirm"),
            "deliver": load(&c.deliver), "deliver_details": rate(&state, "deliver"),
            "get": load(&c.get), "get_details": rate(&state, "get"),
            "deliver_get": load(&c.deliver) + load(&c.get), "deliver_get_details": rate(&state, "deliver_get"),
            "ack": load(&c.ack), "ack_details": rate(&state, "ack"),
            "redeliver": load(&c.redeliver), "redeliver_details": rate(&state, "redeliver"),
            "return_unroutable": load(&c.unroutable), "return_unroutable_details": rate(&state, "return_unroutable"),
            // Counted by RabbitMQ, not yet by Leveret.
            "deliver_no_ack": 0, "deliver_no_ack_details": {"rate": 0.0},
            "get_no_ack": 0, "get_no_ack_details": {"rate": 0.0},
            "get_empty": 0, "get_empty_details": {"rate": 0.0},
            "drop_unroutable": 0, "drop_unroutable_details": {"rate": 0.0},
            "disk_reads": 0, "disk_reads_details": {"rate": 0.0},
            "disk_writes": 0, "disk_writes_details": {"rate": 0.0},
        },
        "churn_rates": {
            "channel_closed": 0, "channel_closed_details": {"rate": 0.0},
            "channel_created": 0, "channel_created_details": {"rate": 0.0},
            "connection_closed": 0, "connection_closed_details": {"rate": 0.0},
            "connection_created": 0, "connection_created_details": {"rate": 0.0},
            "queue_created": 0, "queue_created_details": {"rate": 0.0},
            "queue_declared": 0, "queue_declared_details": {"rate": 0.0},
            "queue_deleted": 0, "queue_deleted_details": {"rate": 0.0},
        },
        "sample_retention_policies": {
            "global": [600, 3600, 28800, 86400],
            "basic": [600, 3600],
            "detailed": [600],
        },
        "release_series_support_status": "supported",
        "erlang_full_version": "none (Leveret is written in Rust)",
        "queue_totals": {
            "messages": ready + unacked, "messages_details": {"rate": 0.0},
            "messages_ready": ready, "messages_ready_details": {"rate": 0.0},
            "messages_unacknowledged": unacked, "messages_unacknowledged_details": {"rate": 0.0},
        },
        "object_totals": {
            "channels": channels, "connections": connections.len(), "consumers": consumers,
            "exchanges": exchanges, "queues": queues,
        },
        "statistics_db_event_queue": 0,
        // Leveret's own: the message log's space and its group commit.
        "message_log": message_log_json(&state.broker.store().stats()),
        "listeners": listeners,
        "contexts": contexts(&state),
    }))
}

fn message_log_json(s: &crate::store::LogStats) -> Value {
    json!({
        "queues": s.queues,
        "segments": s.segments,
        "bytes": s.bytes,
        "reclaimable_bytes": s.reclaimable_bytes,
        "syncs": s.syncs,
        "synced_files": s.synced_files,
        "sync_seconds": s.sync_micros as f64 / 1e6,
        "mean_sync_seconds": if s.syncs > 0 { s.sync_micros as f64 / 1e6 / s.syncs as f64 } else { 0.0 },
        "quarantined_segments": s.quarantined,
    })
}

/// When the API first served (the node's `uptime` counts from it).
static STARTED: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();

/// Open file descriptors, and the process's limit.
fn file_descriptors() -> (u64, u64) {
    let used = std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count() as u64);
    let total = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|l| {
            l.lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(3)?.parse().ok())
        })
        .unwrap_or(1024);
    (used, total)
}

/// The node, with every field RabbitMQ's node object has (Erlang's own measurements as 0).
fn node_json(state: &super::AdminState) -> Value {
    let broker = &state.broker;
    let alarms = broker.alarms();
    let a = alarms.state();
    let (fd_used, fd_total) = file_descriptors();
    let sockets = broker.connections().all().len() as u64;
    let zero = json!({"rate": 0.0});
    let mut node = json!({
        "name": node(),
        "type": "disc",
        "running": true,
        "os_pid": std::process::id().to_string(),
        "mem_used": crate::broker::memory::resident_bytes().unwrap_or(0),
        "mem_limit": alarms.memory_limit(),
        "mem_alarm": a.memory,
        "mem_calculation_strategy": "rss",
        "disk_free": broker.config().data_dir.as_deref().and_then(crate::broker::alarms::free_disk_bytes).unwrap_or(0),
        "disk_free_limit": alarms.disk_limit(),
        "disk_free_alarm": a.disk,
        "fd_used": fd_used,
        "fd_total": fd_total,
        "sockets_used": sockets,
        "sockets_total": fd_total.saturating_mul(9) / 10,
        "proc_used": 0,
        "proc_total": 1_048_576,
        "processors": std::thread::available_parallelism().map_or(1, |n| n.get()),
        "run_queue": 0,
        "uptime": STARTED.get_or_init(std::time::Instant::now).elapsed().as_millis() as u64,
        "rates_mode": "basic",
        "net_ticktime": 60,
        "partitions": [],
        "cluster_links": [],
        "applications": [],
        "enabled_plugins": ["rabbitmq_management"],
        "auth_mechanisms": [
            {"name": "PLAIN", "description": "SASL PLAIN authentication mechanism", "enabled": true},
            {"name": "AMQPLAIN", "description": "QPid AMQPLAIN mechanism", "enabled": true},
            {"name": "EXTERNAL", "description": "SASL EXTERNAL authentication mechanism", "enabled": false},
        ],
        "exchange_types": exchange_types(),
        "contexts": contexts(state),
        "log_files": ["<stderr>"],
        "config_files": [],
        "db_dir": broker.config().data_dir.as_ref().map_or(String::new(), |d| d.display().to_string()),
    });
    if let Some(map) = node.as_object_mut() {
        // Erlang's own bookkeeping (Raft log files, the stats collector's backlog): none here.
        map.insert(
            "ra_open_file_metrics".into(),
            json!({ "ra_log_wal": 0, "ra_log_segment_writer": 0 }),
        );
        map.insert(
            "metrics_gc_queue_length".into(),
            json!({
                "connection_closed": 0, "channel_closed": 0, "consumer_deleted": 0,
                "exchange_deleted": 0, "queue_deleted": 0, "vhost_deleted": 0,
                "node_node_deleted": 0, "channel_consumer_deleted": 0,
            }),
        );
        // Counters RabbitMQ keeps per node (Erlang's and its stores'); Leveret has none of them.
        for counter in [
            "channel_closed",
            "channel_created",
            "connection_closed",
            "connection_created",
            "context_switches",
            "gc_bytes_reclaimed",
            "gc_num",
            "io_read_avg_time",
            "io_read_bytes",
            "io_read_count",
            "io_reopen_count",
            "io_seek_avg_time",
            "io_seek_count",
            "io_sync_avg_time",
            "io_sync_count",
            "io_write_avg_time",
            "io_write_bytes",
            "io_write_count",
            "mnesia_disk_tx_count",
            "mnesia_ram_tx_count",
            "msg_store_read_count",
            "msg_store_write_count",
            "queue_created",
            "queue_declared",
            "queue_deleted",
            "queue_index_read_count",
            "queue_index_write_count",
        ] {
            map.entry(counter).or_insert(json!(0));
            map.insert(format!("{counter}_details"), zero.clone());
        }
        for gauge in [
            "mem_used",
            "disk_free",
            "fd_used",
            "sockets_used",
            "proc_used",
        ] {
            map.insert(format!("{gauge}_details"), zero.clone());
        }
    }
    node
}

fn exchange_types() -> Vec<Value> {
    ["direct", "fanout", "topic", "headers"]
        .iter()
        .map(|t| json!({"name": t, "description": format!("AMQP {t} exchange, as per the AMQP specification"), "enabled": true}))
        .collect()
}

fn contexts(state: &super::AdminState) -> Vec<Value> {
    state
        .http_ports
        .iter()
        .map(|port| json!({"node": node(), "description": "RabbitMQ Management", "path": "/", "port": port.to_string(), "ssl_opts": [], "cowboy_opts": "[{sendfile,false}]"}))
        .collect()
}

/// RabbitMQ 3.10's feature flags that name behaviour Leveret has, all enabled (tools read
/// them to decide what to use). Mirroring, maintenance mode and streams are not listed.
fn feature_flags() -> Value {
    let flags = [
        (
            "drop_unroutable_metric",
            "Count unroutable publishes to be dropped in stats",
            "",
            "rabbitmq_management_agent",
        ),
        (
            "empty_basic_get_metric",
            "Count AMQP `basic.get` on empty queues in stats",
            "",
            "rabbitmq_management_agent",
        ),
        (
            "implicit_default_bindings",
            "Default bindings are now implicit, instead of being stored in the database",
            "",
            "rabbit",
        ),
        (
            "quorum_queue",
            "Support queues of type `quorum`",
            "https://www.rabbitmq.com/quorum-queues.html",
            "rabbit",
        ),
        (
            "user_limits",
            "Configure connection and channel limits for a user",
            "",
            "rabbit",
        ),
        (
            "virtual_host_metadata",
            "Virtual host metadata (description, tags, etc)",
            "",
            "rabbit",
        ),
    ];
    flags
        .iter()
        .map(|(name, desc, doc_url, provided_by)| {
            json!({"name": name, "desc": desc, "doc_url": doc_url, "state": "enabled", "stability": "stable", "provided_by": provided_by})
        })
        .collect()
}

async fn nodes(State(state): St, _auth: Auth) -> Json<Value> {
    Json(json!([node_json(&state)]))
}

async fn get_node(
    State(state): St,
    _auth: Auth,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    if name != node() {
        return Err(ApiError::not_found());
    }
    Ok(Json(node_json(&state)))
}

async fn list_connections(State(state): St, auth: Auth) -> Json<Vec<Value>> {
    Json(connections_json(&state, &auth, None))
}

fn connections_json(state: &super::AdminState, auth: &Auth, vhost: Option<&str>) -> Vec<Value> {
    state
        .broker
        .connections()
        .all()
        .iter()
        .filter(|c| auth.sees_all() || c.user == auth.0.name)
        .filter(|c| vhost.is_none_or(|v| c.vhost == v))
        .map(|c| render::connection_json(c))
        .collect()
}

async fn list_connections_in(
    State(state): St,
    auth: Auth,
    Path(vhost): Path<String>,
) -> Result<Json<Vec<Value>>, ApiError> {
    super::objects::visible_vhost(&state, &auth, &vhost)?;
    Ok(Json(connections_json(&state, &auth, Some(&vhost))))
}

async fn list_channels_in(
    State(state): St,
    auth: Auth,
    Path(vhost): Path<String>,
) -> Result<Json<Vec<Value>>, ApiError> {
    super::objects::visible_vhost(&state, &auth, &vhost)?;
    Ok(Json(channels_json(&state, &auth, Some(&vhost))))
}

async fn get_connection(
    State(state): St,
    auth: Auth,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let c = state
        .broker
        .connections()
        .all()
        .into_iter()
        .find(|c| c.name == name && (auth.sees_all() || c.user == auth.0.name))
        .ok_or_else(ApiError::not_found)?;
    Ok(Json(render::connection_json(&c)))
}

async fn close_connection(
    State(state): St,
    auth: Auth,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    let c = state
        .broker
        .connections()
        .all()
        .into_iter()
        .find(|c| c.name == name)
        .ok_or_else(ApiError::not_found)?;
    if !auth.0.has_tag(crate::broker::access::ADMINISTRATOR) && c.user != auth.0.name {
        return Err(ApiError::not_authorised("Access refused."));
    }
    let reason = headers
        .get("x-reason")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("Closed via management plugin");
    c.close(reason);
    Ok(StatusCode::NO_CONTENT)
}

/// A user's connections (`/api/connections/username/{user}`): others' only for those who see
/// everything.
async fn list_user_connections(
    State(state): St,
    auth: Auth,
    Path(user): Path<String>,
) -> Result<Json<Vec<Value>>, ApiError> {
    if !auth.sees_all() && user != auth.0.name {
        return Err(ApiError::not_authorised("Access refused."));
    }
    Ok(Json(
        state
            .broker
            .connections()
            .all()
            .iter()
            .filter(|c| c.user == user)
            .map(|c| render::connection_json(c))
            .collect(),
    ))
}

/// Close every connection of a user, with the `X-Reason` header's text if given.
async fn close_user_connections(
    State(state): St,
    auth: Auth,
    Path(user): Path<String>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    if !auth.0.has_tag(crate::broker::access::ADMINISTRATOR) && user != auth.0.name {
        return Err(ApiError::not_authorised("Access refused."));
    }
    let reason = headers
        .get("x-reason")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("Closed via management plugin");
    state
        .broker
        .connections()
        .close_where(|c| c.user == user, reason);
    Ok(StatusCode::NO_CONTENT)
}

async fn list_channels(State(state): St, auth: Auth) -> Json<Vec<Value>> {
    Json(channels_json(&state, &auth, None))
}

fn channels_json(state: &super::AdminState, auth: &Auth, vhost: Option<&str>) -> Vec<Value> {
    let mut out = Vec::new();
    for c in state.broker.connections().all() {
        if (auth.sees_all() || c.user == auth.0.name) && vhost.is_none_or(|v| c.vhost == v) {
            for ch in c.channels() {
                out.push(render::channel_json(&c, &ch, &state.rates));
            }
        }
    }
    out
}

/// A connection's channels (404 for a connection the caller may not see).
async fn list_connection_channels(
    State(state): St,
    auth: Auth,
    Path(name): Path<String>,
) -> Result<Json<Vec<Value>>, ApiError> {
    let c = state
        .broker
        .connections()
        .all()
        .into_iter()
        .find(|c| c.name == name && (auth.sees_all() || c.user == auth.0.name))
        .ok_or_else(ApiError::not_found)?;
    Ok(Json(
        c.channels()
            .iter()
            .map(|ch| render::channel_json(&c, ch, &state.rates))
            .collect(),
    ))
}

/// One channel, by its name (`{connection name} ({number})`).
async fn get_channel(
    State(state): St,
    auth: Auth,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    for c in state.broker.connections().all() {
        if !(auth.sees_all() || c.user == auth.0.name) {
            continue;
        }
        for ch in c.channels() {
            let mut one = render::channel_json(&c, &ch, &state.rates);
            if one.get("name").and_then(Value::as_str) != Some(name.as_str()) {
                continue;
            }
            if let Some(o) = one.as_object_mut() {
                let consumers: Vec<Value> = ch
                    .consumers()
                    .iter()
                    .map(|consumer| render::consumer_json(&c, &ch, consumer))
                    .collect();
                o.insert("consumer_details".into(), json!(consumers));
                // Per-exchange and per-queue breakdowns: RabbitMQ's `detailed` rates mode only.
                o.insert("publishes".into(), json!([]));
                o.insert("deliveries".into(), json!([]));
            }
            return Ok(Json(one));
        }
    }
    Err(ApiError::not_found())
}

fn consumers(state: &super::AdminState, auth: &Auth, only: Option<&str>) -> Vec<Value> {
    let mut out = Vec::new();
    for c in state.broker.connections().all() {
        if only.is_some_and(|v| v != c.vhost) || !(auth.sees_all() || c.user == auth.0.name) {
            continue;
        }
        for ch in c.channels() {
            for consumer in ch.consumers() {
                out.push(render::consumer_json(&c, &ch, &consumer));
            }
        }
    }
    out
}

async fn list_consumers(State(state): St, auth: Auth) -> Json<Vec<Value>> {
    Json(consumers(&state, &auth, None))
}

async fn list_consumers_in(
    State(state): St,
    auth: Auth,
    Path(vh): Path<String>,
) -> Result<Json<Vec<Value>>, ApiError> {
    vhost(&state, &vh)?;
    Ok(Json(consumers(&state, &auth, Some(&vh))))
}

fn bytes_of(body: &Bytes) -> Result<u64, ApiError> {
    let map = body_object(body)?;
    super::objects::integer(&map, "bytes")
        .and_then(|n| u64::try_from(n).ok())
        .ok_or_else(|| ApiError::bad_request("[{key_missing,bytes}]"))
}

/// Leveret's own: `leveretctl set_vm_memory_high_watermark` (RabbitMQ does this over its CLI
/// channel, which has no HTTP equivalent).
async fn set_memory_limit(
    State(state): St,
    auth: Auth,
    body: Bytes,
) -> Result<StatusCode, ApiError> {
    auth.require_admin()?;
    state.broker.alarms().set_memory_limit(bytes_of(&body)?);
    Ok(StatusCode::NO_CONTENT)
}

/// Leveret's own: `leveretctl set_disk_free_limit`.
async fn set_disk_limit(State(state): St, auth: Auth, body: Bytes) -> Result<StatusCode, ApiError> {
    auth.require_admin()?;
    state.broker.alarms().set_disk_limit(bytes_of(&body)?);
    Ok(StatusCode::NO_CONTENT)
}
