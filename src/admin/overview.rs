//! The broker as a whole through the API: overview, connections, channels, consumers, health
//! checks, aliveness test, definitions export and import, and runtime alarm limits.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use axum::{Json, Router};
use serde_json::{json, Map, Value};

use super::accounts::{permission_json, tags, user_from};
use super::objects::{body_object, vhost};
use super::render::{self, json_table, table_json};
use super::{ApiError, Auth, COMPATIBLE_VERSION, NODE};
use crate::broker::access::{PermissionRecord, TopicPermissionRecord};
use crate::broker::exchange::Destination;
use crate::broker::queue::QueueGauges;
use crate::broker::vhost::{ExchangeDeclare, QueueDeclare};
use crate::broker::VhostMeta;

type St = State<Arc<super::AdminState>>;

pub(super) fn routes() -> Router<Arc<super::AdminState>> {
    Router::new()
        .route("/api/overview", get(overview))
        .route("/api/nodes", get(nodes))
        .route("/api/nodes/{name}", get(get_node))
        .route(
            "/api/healthchecks/node",
            get(|auth| node_health(auth, None)),
        )
        .route(
            "/api/healthchecks/node/{name}",
            get(|auth, name| node_health(auth, Some(name))),
        )
        .route(
            "/api/cluster-name",
            get(|_auth: Auth| async { Json(json!({"name": NODE})) }),
        )
        .route(
            "/api/parameters",
            get(|_auth: Auth| async { Json(json!([])) }),
        )
        .route(
            "/api/global-parameters",
            get(|_auth: Auth| async { Json(json!([])) }),
        )
        .route(
            "/api/feature-flags",
            get(|_auth: Auth| async { Json(json!([])) }),
        )
        .route(
            "/api/auth",
            get(|| async {
                Json(json!({"enable_uaa": false, "uaa_client_id": "", "uaa_location": ""}))
            }),
        )
        .route("/api/extensions", get(|| async { Json(json!([])) }))
        .route("/api/connections", get(list_connections))
        .route(
            "/api/connections/{name}",
            get(get_connection).delete(close_connection),
        )
        .route("/api/channels", get(list_channels))
        .route("/api/vhosts/{vhost}/connections", get(list_connections_in))
        .route("/api/vhosts/{vhost}/channels", get(list_channels_in))
        .route("/api/consumers", get(list_consumers))
        .route("/api/consumers/{vhost}", get(list_consumers_in))
        .route("/api/health/checks/alarms", get(alarms))
        .route("/api/health/checks/local-alarms", get(alarms))
        .route("/api/aliveness-test/{vhost}", get(aliveness))
        .route("/api/definitions", get(export).post(import))
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
        .map(|port| json!({"node": NODE, "protocol": "amqp", "ip_address": "::", "port": port, "socket_opts": {}}))
        .collect();
    listeners.extend(state.http_ports.iter().map(|port| json!({"node": NODE, "protocol": "http", "ip_address": "::", "port": port, "socket_opts": {}})));
    let exchange_types = exchange_types();
    Json(json!({
        "management_version": COMPATIBLE_VERSION,
        "rates_mode": "basic",
        "product_name": "Leveret",
        "product_version": env!("CARGO_PKG_VERSION"),
        "rabbitmq_version": COMPATIBLE_VERSION,
        "cluster_name": NODE,
        "node": NODE,
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
        "name": NODE,
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
        "ra_open_file_metrics": {},
        "metrics_gc_queue_length": {},
    });
    if let Some(map) = node.as_object_mut() {
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
        .map(|port| json!({"node": NODE, "description": "RabbitMQ Management", "path": "/", "port": port.to_string()}))
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
    if name != NODE {
        return Err(ApiError::not_found());
    }
    Ok(Json(node_json(&state)))
}

/// The deprecated node health check RabbitMQ 3.10 still answers.
async fn node_health(_auth: Auth, name: Option<Path<String>>) -> Result<Json<Value>, ApiError> {
    match name {
        Some(Path(name)) if name != NODE => Err(ApiError::not_found()),
        _ => Ok(Json(json!({"status": "ok"}))),
    }
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

async fn list_channels(State(state): St, auth: Auth) -> Json<Vec<Value>> {
    Json(channels_json(&state, &auth, None))
}

fn channels_json(state: &super::AdminState, auth: &Auth, vhost: Option<&str>) -> Vec<Value> {
    let mut out = Vec::new();
    for c in state.broker.connections().all() {
        if (auth.sees_all() || c.user == auth.0.name) && vhost.is_none_or(|v| c.vhost == v) {
            for ch in c.channels() {
                out.push(render::channel_json(&c, &ch));
            }
        }
    }
    out
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

async fn alarms(State(state): St, _auth: Auth) -> Response {
    let a = state.broker.alarms().state();
    let mut alarms = Vec::new();
    if a.memory {
        alarms.push(json!({"node": NODE, "resource": "memory"}));
    }
    if a.disk {
        alarms.push(json!({"node": NODE, "resource": "disk"}));
    }
    if alarms.is_empty() {
        Json(json!({"status": "ok"})).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"alarms": alarms, "reason": "There are alarms in effect in the cluster", "status": "failed"})),
        )
            .into_response()
    }
}

/// RabbitMQ's aliveness test: declare `aliveness-test`, publish to it, get the message back.
async fn aliveness(
    State(state): St,
    auth: Auth,
    Path(vh): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let v = vhost(&state, &vh)?;
    state
        .broker
        .access()
        .check(
            &auth.0.name,
            &vh,
            crate::broker::access::Resource::Queue("aliveness-test"),
            crate::broker::access::Permission::Configure,
        )
        .map_err(|e| ApiError::not_authorised(e.text))?;
    let (_, _) = v
        .declare_queue(
            &QueueDeclare {
                name: "aliveness-test".into(),
                durable: true,
                ..QueueDeclare::default()
            },
            0,
        )
        .await?;
    let record = v
        .queue_record("aliveness-test")
        .ok_or_else(ApiError::not_found)?;
    let message = Arc::new(crate::broker::Message::new(
        Arc::from(""),
        Arc::from("aliveness-test"),
        crate::protocol::codec::encode_properties(&Default::default()),
        Bytes::from_static(b"test_message"),
        false,
    ));
    record.handle.publish(message, None).await;
    match record.handle.get(true).await {
        Some(_) => Ok(Json(json!({"status": "ok"}))),
        None => Ok(Json(
            json!({"status": "failed", "reason": "the test message did not come back"}),
        )),
    }
}

/// Everything durable-or-not that RabbitMQ exports: users, vhosts, permissions, queues,
/// exchanges (not `amq.*` or the default) and explicit bindings.
async fn export(State(state): St, auth: Auth) -> Result<Json<Value>, ApiError> {
    auth.require_admin()?;
    let broker = &state.broker;
    let access = broker.access();
    let (mut queues, mut exchanges, mut bindings) = (Vec::new(), Vec::new(), Vec::new());
    let mut vhosts = Vec::new();
    let mut policies = Vec::new();
    for v in broker.vhosts() {
        policies.extend(v.policies().iter().map(|p| json!(p)));
        let meta = v.meta();
        let limits: Vec<Value> = meta.limits.iter().map(|(k, v)| json!([k, v])).collect();
        vhosts.push(json!({"name": v.name(), "limits": limits, "metadata": {"description": meta.description, "tags": meta.tags}}));
        for (name, r) in v.queues() {
            if r.exclusive_owner.is_some() {
                continue;
            }
            queues.push(json!({"name": name, "vhost": v.name(), "durable": r.durable, "auto_delete": r.auto_delete, "arguments": table_json(&r.arguments), "type": "classic"}));
        }
        for x in v.exchanges() {
            if x.name.is_empty() || x.name.starts_with("amq.") {
                continue;
            }
            exchanges.push(json!({"name": x.name, "vhost": v.name(), "type": x.kind, "durable": x.durable, "auto_delete": x.auto_delete, "internal": x.internal, "arguments": table_json(&x.arguments)}));
        }
        for (source, b) in v.bindings() {
            let mut item = render::binding_json(v.name(), &source, &b);
            if let Some(o) = item.as_object_mut() {
                o.remove("properties_key");
            }
            bindings.push(item);
        }
    }
    Ok(Json(json!({
        "rabbit_version": COMPATIBLE_VERSION,
        "rabbitmq_version": COMPATIBLE_VERSION,
        "product_name": "Leveret",
        "product_version": env!("CARGO_PKG_VERSION"),
        "users": access.users().iter().map(super::accounts::user_json).collect::<Vec<_>>(),
        "vhosts": vhosts,
        "permissions": access.permissions().iter().map(permission_json).collect::<Vec<_>>(),
        "topic_permissions": access.topic_permissions(),
        "parameters": [],
        "global_parameters": [],
        "policies": policies,
        "queues": queues,
        "exchanges": exchanges,
        "bindings": bindings,
    })))
}

fn list<'a>(
    defs: &'a Map<String, Value>,
    key: &str,
) -> impl Iterator<Item = &'a Map<String, Value>> {
    defs.get(key)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_object)
}

fn s<'a>(m: &'a Map<String, Value>, key: &str) -> &'a str {
    m.get(key).and_then(Value::as_str).unwrap_or_default()
}

fn b(m: &Map<String, Value>, key: &str) -> bool {
    super::objects::flag(m, key)
}

fn args(m: &Map<String, Value>) -> Result<crate::protocol::FieldTable, ApiError> {
    match m.get("arguments") {
        Some(Value::Object(a)) => json_table(a),
        _ => Ok(Default::default()),
    }
}

/// Import RabbitMQ definitions. Like RabbitMQ, objects that already exist are left as they
/// are; what cannot be imported fails the request with the reason.
async fn import(State(state): St, auth: Auth, body: Bytes) -> Result<StatusCode, ApiError> {
    auth.require_admin()?;
    let defs = match serde_json::from_slice::<Value>(&body) {
        Ok(Value::Object(map)) => map,
        _ => return Err(ApiError::bad_request("failed_to_parse_json")),
    };
    import_definitions(&state, &defs).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Apply a definitions document (shared by the API and tests).
pub async fn import_definitions(
    state: &super::AdminState,
    defs: &Map<String, Value>,
) -> Result<(), ApiError> {
    let broker = &state.broker;
    let store_error = |e| ApiError::from(crate::broker::access::AdminError::Store(e));
    for v in list(defs, "vhosts") {
        let name = s(v, "name");
        let metadata = v.get("metadata").and_then(Value::as_object);
        let mut meta = broker.vhost(name).map(|v| v.meta()).unwrap_or_default();
        meta.description = metadata
            .map(|m| s(m, "description"))
            .or_else(|| v.get("description").and_then(Value::as_str))
            .unwrap_or(&meta.description)
            .to_owned();
        if let Some(t) = metadata
            .and_then(|m| m.get("tags"))
            .or_else(|| v.get("tags"))
        {
            meta.tags = tags(Some(t));
        }
        if let Some(Value::Array(limits)) = v.get("limits") {
            for pair in limits.iter().filter_map(Value::as_array) {
                if let (Some(k), Some(n)) = (
                    pair.first().and_then(Value::as_str),
                    pair.get(1).and_then(Value::as_i64),
                ) {
                    meta.limits.insert(k.to_owned(), n);
                }
            }
        }
        broker
            .put_vhost(name, VhostMeta { ..meta })
            .map_err(store_error)?;
    }
    for u in list(defs, "users") {
        broker.access().put_user(user_from(s(u, "name"), u))?;
    }
    for p in list(defs, "permissions") {
        broker.set_permissions(PermissionRecord {
            user: s(p, "user").into(),
            vhost: s(p, "vhost").into(),
            configure: s(p, "configure").into(),
            write: s(p, "write").into(),
            read: s(p, "read").into(),
        })?;
    }
    for p in list(defs, "topic_permissions") {
        broker
            .access()
            .set_topic_permissions(TopicPermissionRecord {
                user: s(p, "user").into(),
                vhost: s(p, "vhost").into(),
                exchange: s(p, "exchange").into(),
                write: s(p, "write").into(),
                read: s(p, "read").into(),
            })?;
    }
    for p in list(defs, "policies") {
        let v = vhost(state, s(p, "vhost"))?;
        v.set_policy(super::accounts::policy_from(
            s(p, "vhost"),
            s(p, "name"),
            p,
        )?)?;
    }
    for x in list(defs, "exchanges") {
        let v = vhost(state, s(x, "vhost"))?;
        if v.has_exchange(s(x, "name")) {
            continue;
        }
        v.declare_exchange(&ExchangeDeclare {
            name: s(x, "name").into(),
            kind: x
                .get("type")
                .and_then(Value::as_str)
                .unwrap_or("direct")
                .into(),
            passive: false,
            durable: b(x, "durable"),
            auto_delete: b(x, "auto_delete"),
            internal: b(x, "internal"),
            arguments: args(x)?,
        })?;
    }
    for q in list(defs, "queues") {
        let v = vhost(state, s(q, "vhost"))?;
        if v.queue_record(s(q, "name")).is_some() {
            continue;
        }
        v.declare_queue(
            &QueueDeclare {
                name: s(q, "name").into(),
                passive: false,
                durable: b(q, "durable"),
                exclusive: false,
                auto_delete: b(q, "auto_delete"),
                arguments: args(q)?,
                argument_order: Vec::new(),
            },
            0,
        )
        .await?;
    }
    for bd in list(defs, "bindings") {
        let v = vhost(state, s(bd, "vhost"))?;
        let destination = match s(bd, "destination_type") {
            "exchange" => Destination::Exchange(s(bd, "destination").into()),
            _ => Destination::Queue(s(bd, "destination").into()),
        };
        v.set_binding(
            s(bd, "source"),
            destination,
            s(bd, "routing_key"),
            &args(bd)?,
            0,
            true,
        )?;
    }
    Ok(())
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
