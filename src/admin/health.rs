//! Health checks and the aliveness test, as RabbitMQ 3.10 answers them: `200 {"status":
//! "ok", ...}` when healthy, `503 {"status": "failed", "reason": ...}` when not, 400 for a
//! malformed request. Leveret is one node with no mirrors or quorum replicas, so the checks
//! that guard a cluster's replicas pass as RabbitMQ's do on a single node.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

use super::objects::vhost;
use super::{node, ApiError, Auth};
use crate::broker::vhost::QueueDeclare;

type St = State<Arc<super::AdminState>>;

pub(super) fn routes() -> Router<Arc<super::AdminState>> {
    Router::new()
        .route(
            "/api/healthchecks/node",
            get(|auth| node_health(auth, None)),
        )
        .route(
            "/api/healthchecks/node/{name}",
            get(|auth, name| node_health(auth, Some(name))),
        )
        .route("/api/health/checks/alarms", get(alarms))
        .route("/api/health/checks/local-alarms", get(alarms))
        .route(
            "/api/health/checks/port-listener/{port}",
            get(port_listener),
        )
        .route(
            "/api/health/checks/protocol-listener/{protocol}",
            get(protocol_listener),
        )
        .route("/api/health/checks/virtual-hosts", get(virtual_hosts))
        .route(
            "/api/health/checks/node-is-quorum-critical",
            get(single_node),
        )
        .route(
            "/api/health/checks/node-is-mirror-sync-critical",
            get(single_node),
        )
        .route(
            "/api/health/checks/certificate-expiration/{within}/{unit}",
            get(certificate_expiration),
        )
        .route("/api/aliveness-test/{vhost}", get(aliveness))
        // Queue leaders to rebalance across nodes: with one node there is nothing to move.
        .route(
            "/api/rebalance/queues",
            post(|_auth: Auth| async { StatusCode::NO_CONTENT }),
        )
}

fn failed(body: Value) -> Response {
    (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
}

/// The listeners as RabbitMQ names their protocols, with their ports.
fn listeners(state: &super::AdminState) -> Vec<(&'static str, u16)> {
    let mut all: Vec<(&'static str, u16)> = Vec::new();
    all.extend(state.amqp_ports.iter().map(|&p| ("amqp", p)));
    all.extend(state.http_ports.iter().map(|&p| ("http", p)));
    all
}

async fn port_listener(State(state): St, _auth: Auth, Path(port): Path<String>) -> Response {
    let Ok(port) = port.parse::<u16>() else {
        return ApiError::bad_request("Invalid port").into_response();
    };
    let mut ports: Vec<u16> = listeners(&state).iter().map(|&(_, p)| p).collect();
    if ports.contains(&port) {
        return Json(json!({"status": "ok", "port": port})).into_response();
    }
    ports.sort_unstable();
    ports.dedup();
    failed(
        json!({"status": "failed", "reason": "No active listener", "missing": port, "ports": ports}),
    )
}

async fn protocol_listener(
    State(state): St,
    _auth: Auth,
    Path(protocol): Path<String>,
) -> Response {
    let mut protocols: Vec<&str> = listeners(&state).iter().map(|&(p, _)| p).collect();
    protocols.dedup();
    // RabbitMQ's aliases for the same listeners.
    let wanted = match protocol.as_str() {
        "amqp091" | "amqp0.9.1" | "amqp0-9-1" => "amqp",
        other => other,
    };
    if protocols.contains(&wanted) {
        return Json(json!({"status": "ok", "protocol": protocol})).into_response();
    }
    failed(
        json!({"status": "failed", "reason": "No active listener", "missing": protocol, "protocols": protocols}),
    )
}

/// Every vhost is served by this process, so every vhost is up.
async fn virtual_hosts(_auth: Auth) -> Json<Value> {
    Json(json!({"status": "ok"}))
}

async fn single_node(_auth: Auth) -> Json<Value> {
    Json(json!({"status": "ok", "reason": "single node cluster"}))
}

/// Whether a certificate expires within the given time. Leveret's listeners' certificates
/// are checked when loaded; expiry is not tracked, so a valid unit answers ok.
async fn certificate_expiration(
    _auth: Auth,
    Path((within, unit)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    if !matches!(unit.as_str(), "days" | "weeks" | "months" | "years") {
        return Err(ApiError::bad_request(
            "Time unit not recognised. Supported units: days, weeks, months, years.",
        ));
    }
    if within.parse::<u64>().is_err() {
        return Err(ApiError::bad_request("Time period cannot be parsed"));
    }
    Ok(Json(json!({"status": "ok"})))
}

/// The deprecated node health check RabbitMQ 3.10 still answers.
async fn node_health(_auth: Auth, name: Option<Path<String>>) -> Result<Json<Value>, ApiError> {
    match name {
        Some(Path(name)) if name != node() => Err(ApiError::not_found()),
        _ => Ok(Json(json!({"status": "ok"}))),
    }
}

async fn alarms(State(state): St, _auth: Auth) -> Response {
    let a = state.broker.alarms().state();
    let mut alarms = Vec::new();
    if a.memory {
        alarms.push(json!({"node": node(), "resource": "memory"}));
    }
    if a.disk {
        alarms.push(json!({"node": node(), "resource": "disk"}));
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
        Ok(Some(_)) => Ok(Json(json!({"status": "ok"}))),
        Ok(None) | Err(_) => Ok(Json(
            json!({"status": "failed", "reason": "the test message did not come back"}),
        )),
    }
}
