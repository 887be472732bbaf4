//! Queues, exchanges and messages through the API: list, declare, delete, purge, publish and
//! get, each checked against the caller's AMQP permissions as RabbitMQ does (bindings are in
//! `bindings.rs`).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use serde_json::{json, Map, Value};

use super::render::{self, json_table};
use super::{created, ApiError, Auth};
use crate::broker::access::{Permission, Resource};
use crate::broker::policy::Target;
use crate::broker::queue::args::parse_expiration;
use crate::broker::queue::QueueHandle;
use crate::broker::vhost::{check_queue_name, ExchangeDeclare, QueueDeclare, VHost};
use crate::broker::Message;
use crate::protocol::codec::encode_properties;
use crate::protocol::table::decode_properties;
use crate::protocol::table::{as_str, lookup};
use crate::protocol::AmqpError;

type St = State<Arc<super::AdminState>>;

pub(super) fn routes() -> Router<Arc<super::AdminState>> {
    Router::new()
        .route("/api/queues", get(list_queues))
        .route("/api/queues/{vhost}", get(list_queues_in))
        .route(
            "/api/queues/{vhost}/{name}",
            get(get_queue).put(put_queue).delete(delete_queue),
        )
        .route(
            "/api/queues/{vhost}/{name}/contents",
            axum::routing::delete(purge_queue),
        )
        .route("/api/queues/{vhost}/{name}/get", post(get_messages))
        .route("/api/exchanges", get(list_exchanges))
        .route("/api/exchanges/{vhost}", get(list_exchanges_in))
        .route(
            "/api/exchanges/{vhost}/{name}",
            get(get_exchange).put(put_exchange).delete(delete_exchange),
        )
        .route("/api/exchanges/{vhost}/{name}/publish", post(publish))
}

/// Parse a request body as RabbitMQ does: no content type needed, empty means `{}`.
/// RabbitMQ's 400 for a body lacking keys it needs: `[{key_missing,a},{key_missing,b}]`, in
/// the order given.
pub(super) fn require_keys(map: &Map<String, Value>, keys: &[&str]) -> Result<(), ApiError> {
    let missing: Vec<String> = keys
        .iter()
        .filter(|k| !map.contains_key(**k))
        .map(|k| format!("{{key_missing,{k}}}"))
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!("[{}]", missing.join(","))))
    }
}

pub(super) fn body_object(body: &Bytes) -> Result<Map<String, Value>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    match serde_json::from_slice(body) {
        Ok(Value::Object(map)) => {
            check_key_lengths(&map)?;
            Ok(map)
        }
        _ => Err(ApiError::bad_request("not_json")),
    }
}

/// AMQP table keys are short strings (at most 255 bytes); a longer one in an argument or
/// header table could not be encoded.
fn check_key_lengths(map: &Map<String, Value>) -> Result<(), ApiError> {
    for (key, value) in map {
        if key.len() > 255 {
            return Err(ApiError::bad_request(format!(
                "field name too long: {} bytes",
                key.len()
            )));
        }
        match value {
            Value::Object(inner) => check_key_lengths(inner)?,
            Value::Array(items) => {
                for item in items {
                    if let Value::Object(inner) = item {
                        check_key_lengths(inner)?;
                    }
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// A boolean field; rabbitmqadmin sends `"true"`/`"false"` strings.
pub(super) fn flag(map: &Map<String, Value>, key: &str) -> bool {
    match map.get(key) {
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => s == "true",
        _ => false,
    }
}

/// An integer field, or a string holding one (rabbitmqadmin).
pub(super) fn integer(map: &Map<String, Value>, key: &str) -> Option<i64> {
    match map.get(key) {
        Some(Value::Number(n)) => n.as_i64(),
        Some(Value::String(s)) => s.parse().ok(),
        _ => None,
    }
}

pub(super) fn text<'a>(map: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    map.get(key).and_then(Value::as_str)
}

pub(super) fn arguments(map: &Map<String, Value>) -> Result<crate::protocol::FieldTable, ApiError> {
    match map.get("arguments") {
        Some(Value::Object(a)) => json_table(a),
        _ => Ok(Default::default()),
    }
}

pub(super) fn vhost(state: &super::AdminState, name: &str) -> Result<Arc<VHost>, ApiError> {
    state.broker.vhost(name).ok_or_else(ApiError::not_found)
}

/// A vhost the caller may see: 404 if it does not exist, 401 `Access refused.` if hidden.
pub(super) fn visible_vhost(
    state: &super::AdminState,
    auth: &Auth,
    name: &str,
) -> Result<Arc<VHost>, ApiError> {
    let v = vhost(state, name)?;
    if !auth.sees_vhost(&state.broker, name) {
        return Err(ApiError::not_authorised("Access refused."));
    }
    Ok(v)
}

pub(super) fn authorize(
    state: &super::AdminState,
    auth: &Auth,
    vhost: &str,
    resource: Resource<'_>,
    permission: Permission,
) -> Result<(), ApiError> {
    auth.require_vhost(&state.broker, vhost)?;
    state
        .broker
        .access()
        .check(&auth.0.name, vhost, resource, permission)
        .map_err(|e| ApiError::not_authorised(e.text))
}

/// `amq.default` in a URL is the default exchange.
pub(super) fn exchange_name(name: &str) -> &str {
    if name == "amq.default" {
        ""
    } else {
        name
    }
}

fn queues_json(state: &super::AdminState, auth: &Auth, only: Option<&str>) -> Vec<Value> {
    auth.visible_vhosts(&state.broker, only)
        .into_iter()
        .flat_map(|v| {
            v.queues()
                .into_iter()
                .map(|(name, record)| {
                    let policy = v.policy_for(Target::Queue, &name);
                    render::queue_json(
                        v.name(),
                        &name,
                        &record,
                        policy.as_ref(),
                        &state.rates,
                        v.queue_disk(&name),
                    )
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

async fn list_queues(State(state): St, auth: Auth) -> Json<Vec<Value>> {
    Json(queues_json(&state, &auth, None))
}

async fn list_queues_in(
    State(state): St,
    auth: Auth,
    Path(vh): Path<String>,
) -> Result<Json<Vec<Value>>, ApiError> {
    vhost(&state, &vh)?;
    Ok(Json(queues_json(&state, &auth, Some(&vh))))
}

async fn get_queue(
    State(state): St,
    auth: Auth,
    Path((vh, name)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let v = visible_vhost(&state, &auth, &vh)?;
    let record = v.queue_record(&name).ok_or_else(ApiError::not_found)?;
    let policy = v.policy_for(Target::Queue, &name);
    let mut queue = render::queue_json(
        &vh,
        &name,
        &record,
        policy.as_ref(),
        &state.rates,
        v.queue_disk(&name),
    );
    // One queue's page also lists its consumers, and (with detailed rates, which Leveret does
    // not keep) where its messages came from and went.
    let mut consumers = Vec::new();
    for c in state.broker.connections().all() {
        if c.vhost != vh {
            continue;
        }
        for ch in c.channels() {
            for consumer in ch.consumers() {
                if *consumer.queue == *name {
                    consumers.push(render::consumer_json(&c, &ch, &consumer));
                }
            }
        }
    }
    if let Some(map) = queue.as_object_mut() {
        map.insert("consumer_details".into(), Value::Array(consumers));
        map.insert("deliveries".into(), Value::Array(Vec::new()));
        map.insert("incoming".into(), Value::Array(Vec::new()));
    }
    Ok(Json(queue))
}

async fn put_queue(
    State(state): St,
    auth: Auth,
    Path((vh, name)): Path<(String, String)>,
    body: Bytes,
) -> Result<StatusCode, ApiError> {
    let v = vhost(&state, &vh)?;
    let map = body_object(&body)?;
    short("queue name", &name)?;
    check_queue_name(&name).map_err(|_| ApiError::not_authorised("Access refused."))?;
    authorize(
        &state,
        &auth,
        &vh,
        Resource::Queue(&name),
        Permission::Configure,
    )?;
    let was_new = v.queue_record(&name).is_none();
    let args = arguments(&map)?;
    // As over AMQP: a new queue's dead-letter exchange needs read on the queue, write on it.
    if let Some(dlx) = lookup(Some(&args), "x-dead-letter-exchange").and_then(as_str) {
        if was_new {
            authorize(&state, &auth, &vh, Resource::Queue(&name), Permission::Read)?;
            authorize(
                &state,
                &auth,
                &vh,
                Resource::Exchange(&dlx),
                Permission::Write,
            )?;
        }
    }
    v.declare_queue(
        &QueueDeclare {
            name: name.clone(),
            passive: false,
            durable: flag(&map, "durable"),
            exclusive: false,
            auto_delete: flag(&map, "auto_delete"),
            arguments: args,
            argument_order: Vec::new(),
        },
        0,
    )
    .await?;
    Ok(created(was_new))
}

#[derive(serde::Deserialize)]
struct DeleteQuery {
    #[serde(rename = "if-unused")]
    if_unused: Option<String>,
    #[serde(rename = "if-empty")]
    if_empty: Option<String>,
}

async fn delete_queue(
    State(state): St,
    auth: Auth,
    Path((vh, name)): Path<(String, String)>,
    Query(q): Query<DeleteQuery>,
) -> Result<StatusCode, ApiError> {
    let v = vhost(&state, &vh)?;
    authorize(
        &state,
        &auth,
        &vh,
        Resource::Queue(&name),
        Permission::Configure,
    )?;
    if v.queue_record(&name).is_none() {
        return Err(ApiError::not_found());
    }
    let yes = |o: &Option<String>| o.as_deref() == Some("true");
    v.delete_queue(&name, yes(&q.if_unused), yes(&q.if_empty), 0)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn purge_queue(
    State(state): St,
    auth: Auth,
    Path((vh, name)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let v = vhost(&state, &vh)?;
    authorize(&state, &auth, &vh, Resource::Queue(&name), Permission::Read)?;
    // Another connection's exclusive queue is locked, as over AMQP (405).
    v.queue(&name, 0)?.purge().await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn get_messages(
    State(state): St,
    auth: Auth,
    Path((vh, name)): Path<(String, String)>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let v = vhost(&state, &vh)?;
    let map = body_object(&body)?;
    require_keys(&map, &["count", "ackmode", "encoding"])?;
    authorize(&state, &auth, &vh, Resource::Queue(&name), Permission::Read)?;
    let handle = v.queue(&name, 0)?;
    let count = integer(&map, "count").unwrap_or(1).max(0);
    let (no_ack, requeue, reject) = match text(&map, "ackmode") {
        Some("ack_requeue_true") => (false, true, false),
        Some("reject_requeue_true") => (false, true, true),
        Some("ack_requeue_false") => (true, false, false),
        Some("reject_requeue_false") => (false, false, true),
        // RabbitMQ's handler crashes on an unknown mode: 500, empty body.
        _ => return Ok(StatusCode::INTERNAL_SERVER_ERROR.into_response()),
    };
    let base64_only = text(&map, "encoding") == Some("base64");
    let truncate = integer(&map, "truncate").and_then(|t| usize::try_from(t).ok());
    let mut out = Vec::new();
    // What this request took is settled when it ends, however it ends: a client that hangs up
    // drops this future mid-loop, and the guard's drop settles what was taken so far.
    let mut taken = Taken {
        queue: handle.clone(),
        seqs: Vec::new(),
        settle: match (no_ack, requeue, reject) {
            (true, _, _) => None,
            (false, true, _) => Some(QueueHandle::requeue),
            (false, false, true) => Some(QueueHandle::reject),
            (false, false, false) => Some(QueueHandle::ack),
        },
    };
    let mut payload_bytes = 0usize;
    for _ in 0..count {
        // The answer is built in memory: stop taking once it is large.
        if payload_bytes >= state.limits.max_get_payload {
            break;
        }
        let Some(r) = handle.get(no_ack).await? else {
            break;
        };
        // From here `taken` settles it, whenever this request ends.
        taken.seqs.push(r.seq);
        r.guard.claim();
        payload_bytes += r.message.body.len();
        let m = &r.message;
        let properties = decode_properties(&m.raw_properties)
            .map(|p| render::properties_json(&p))
            .filter(|p| p.as_object().is_some_and(|o| !o.is_empty()))
            .unwrap_or_else(|| json!([]));
        let body = match truncate {
            Some(t) if t < m.body.len() => &m.body[..t],
            _ => &m.body[..],
        };
        let (payload, encoding) = match std::str::from_utf8(body) {
            Ok(s) if !base64_only => (s.to_owned(), "string"),
            _ => (
                base64::engine::general_purpose::STANDARD.encode(body),
                "base64",
            ),
        };
        out.push(json!({
            "payload_bytes": m.body.len(),
            "redelivered": r.redelivered,
            "exchange": &*m.exchange,
            "routing_key": &*m.routing_key,
            "message_count": r.remaining,
            "properties": properties,
            "payload": payload,
            "payload_encoding": encoding,
        }));
    }
    drop(taken);
    Ok(Json(out).into_response())
}

/// Messages an HTTP get took from a queue, settled (requeued, rejected or acked, as its
/// ackmode says) when dropped.
struct Taken {
    queue: QueueHandle,
    seqs: Vec<u64>,
    settle: Option<fn(&QueueHandle, Vec<u64>)>,
}

impl Drop for Taken {
    fn drop(&mut self) {
        let seqs = std::mem::take(&mut self.seqs);
        if let (Some(settle), false) = (self.settle, seqs.is_empty()) {
            settle(&self.queue, seqs);
        }
    }
}

fn exchanges_json(state: &super::AdminState, auth: &Auth, only: Option<&str>) -> Vec<Value> {
    auth.visible_vhosts(&state.broker, only)
        .into_iter()
        .flat_map(|v| {
            v.exchanges()
                .iter()
                .map(|x| {
                    render::exchange_json(
                        v.name(),
                        x,
                        v.policy_for(Target::Exchange, &x.name).as_ref(),
                        &state.rates,
                    )
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

async fn list_exchanges(State(state): St, auth: Auth) -> Json<Vec<Value>> {
    Json(exchanges_json(&state, &auth, None))
}

async fn list_exchanges_in(
    State(state): St,
    auth: Auth,
    Path(vh): Path<String>,
) -> Result<Json<Vec<Value>>, ApiError> {
    vhost(&state, &vh)?;
    Ok(Json(exchanges_json(&state, &auth, Some(&vh))))
}

async fn get_exchange(
    State(state): St,
    auth: Auth,
    Path((vh, name)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let v = visible_vhost(&state, &auth, &vh)?;
    let name = exchange_name(&name);
    let x = v
        .exchanges()
        .into_iter()
        .find(|x| x.name == name)
        .ok_or_else(ApiError::not_found)?;
    let policy = v.policy_for(Target::Exchange, &x.name);
    let mut exchange = render::exchange_json(&vh, &x, policy.as_ref(), &state.rates);
    if let Some(o) = exchange.as_object_mut() {
        // RabbitMQ's per-channel and per-queue breakdown of the exchange's traffic, kept only
        // in its `detailed` rates mode; in `basic` mode, as here, both lists are empty.
        o.insert("incoming".into(), json!([]));
        o.insert("outgoing".into(), json!([]));
    }
    Ok(Json(exchange))
}

async fn put_exchange(
    State(state): St,
    auth: Auth,
    Path((vh, name)): Path<(String, String)>,
    body: Bytes,
) -> Result<StatusCode, ApiError> {
    let v = vhost(&state, &vh)?;
    let map = body_object(&body)?;
    if name.starts_with("amq.") || name.is_empty() {
        return Err(ApiError::not_authorised("Access refused."));
    }
    short("exchange name", &name)?;
    authorize(
        &state,
        &auth,
        &vh,
        Resource::Exchange(&name),
        Permission::Configure,
    )?;
    let was_new = !v.has_exchange(&name);
    if let Some(ae) = lookup(Some(&arguments(&map)?), "alternate-exchange").and_then(as_str) {
        if was_new {
            authorize(
                &state,
                &auth,
                &vh,
                Resource::Exchange(&name),
                Permission::Read,
            )?;
            authorize(
                &state,
                &auth,
                &vh,
                Resource::Exchange(&ae),
                Permission::Write,
            )?;
        }
    }
    v.declare_exchange(&ExchangeDeclare {
        name: name.clone(),
        kind: text(&map, "type").unwrap_or("direct").to_owned(),
        passive: false,
        durable: flag(&map, "durable"),
        auto_delete: flag(&map, "auto_delete"),
        internal: flag(&map, "internal"),
        arguments: arguments(&map)?,
    })?;
    Ok(created(was_new))
}

async fn delete_exchange(
    State(state): St,
    auth: Auth,
    Path((vh, name)): Path<(String, String)>,
    Query(q): Query<DeleteQuery>,
) -> Result<StatusCode, ApiError> {
    let v = vhost(&state, &vh)?;
    if name.starts_with("amq.") {
        return Err(ApiError::not_authorised("Access refused."));
    }
    authorize(
        &state,
        &auth,
        &vh,
        Resource::Exchange(&name),
        Permission::Configure,
    )?;
    if !v.has_exchange(&name) {
        return Err(ApiError::not_found());
    }
    v.delete_exchange(&name, q.if_unused.as_deref() == Some("true"))?;
    Ok(StatusCode::NO_CONTENT)
}

async fn publish(
    State(state): St,
    auth: Auth,
    Path((vh, name)): Path<(String, String)>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let v = vhost(&state, &vh)?;
    let map = body_object(&body)?;
    require_keys(
        &map,
        &["properties", "routing_key", "payload", "payload_encoding"],
    )?;
    let exchange = exchange_name(&name);
    authorize(
        &state,
        &auth,
        &vh,
        Resource::Exchange(exchange),
        Permission::Write,
    )?;
    let routing_key = text(&map, "routing_key").unwrap_or_default();
    short("routing_key", routing_key)?;
    short("exchange name", exchange)?;
    let payload = text(&map, "payload").unwrap_or_default();
    let body = match text(&map, "payload_encoding") {
        Some("base64") => base64::engine::general_purpose::STANDARD
            .decode(payload)
            .map_err(|_| ApiError::bad_request("not_base64"))?,
        _ => payload.as_bytes().to_vec(),
    };
    let properties = match map.get("properties") {
        Some(Value::Object(p)) => {
            check_short_properties(p)?;
            if p.get("delivery_mode").is_some_and(|d| !d.is_u64()) {
                return Err(ApiError::bad_request(json!(["not_int", "delivery_mode"])));
            }
            render::json_properties(p)?
        }
        _ => Default::default(),
    };
    if let Some(user_id) = properties.user_id() {
        if user_id.as_str() != auth.0.name && !auth.0.has_tag(crate::broker::access::IMPERSONATOR) {
            return Err(ApiError::bad_request(format!(
                "user_id property set to '{}' but authenticated user was '{}'",
                user_id.as_str(),
                auth.0.name
            )));
        }
    }
    if v.is_topic(exchange) {
        state
            .broker
            .access()
            .check_topic(&auth.0.name, &vh, exchange, routing_key, Permission::Write)
            .map_err(|e| ApiError::not_authorised(e.text))?;
    }
    let expiration = properties
        .expiration()
        .as_ref()
        .map(|e| parse_expiration(e.as_str()))
        .transpose()
        .map_err(|e: AmqpError| ApiError::bad_request(e.text))?;
    let priority = properties.priority().unwrap_or(0);
    let persistent = *properties.delivery_mode() == Some(2);
    let mut queues = Vec::new();
    v.route(
        exchange,
        &[routing_key],
        properties.headers().as_ref(),
        &mut queues,
    )
    .map_err(|e| ApiError::bad_request(format!("{} {}", e.code as u16, e.text)))?;
    let message = Arc::new(
        Message::new(
            Arc::from(exchange),
            Arc::from(routing_key),
            encode_properties(&properties),
            body.into(),
            persistent,
        )
        .with_queue_properties(priority, expiration),
    );
    for q in &queues {
        q.publish(message.clone(), None).await;
    }
    crate::broker::connections::MessageCounters::add(&state.broker.counters().publish, 1);
    crate::broker::connections::MessageCounters::add(&v.counters().publish, 1);
    Ok(Json(json!({ "routed": !queues.is_empty() })))
}

/// AMQP short strings (names, routing keys, most properties) are at most 255 bytes; longer
/// ones from HTTP are refused before they reach a frame.
pub(super) fn short(what: &str, value: &str) -> Result<(), ApiError> {
    if value.len() > 255 {
        return Err(ApiError::bad_request(format!(
            "{what} is longer than 255 bytes"
        )));
    }
    Ok(())
}

fn check_short_properties(p: &Map<String, Value>) -> Result<(), ApiError> {
    for name in [
        "content_type",
        "content_encoding",
        "correlation_id",
        "reply_to",
        "expiration",
        "message_id",
        "type",
        "user_id",
        "app_id",
        "cluster_id",
    ] {
        if let Some(Value::String(v)) = p.get(name) {
            short(name, v)?;
        }
    }
    Ok(())
}
