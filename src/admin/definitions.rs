//! Definitions export and import, RabbitMQ's format: the whole broker (`/api/definitions`)
//! or one vhost (`/api/definitions/{vhost}`, objects without their `vhost` field). Importing
//! leaves objects that already exist as they are, as RabbitMQ does; what cannot be imported
//! fails the request with the reason.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Map, Value};

use super::accounts::{permission_json, tags, user_from};
use super::objects::vhost;
use super::render::{self, json_table, table_json};
use super::{ApiError, Auth, COMPATIBLE_VERSION};
use crate::broker::access::{PermissionRecord, TopicPermissionRecord};
use crate::broker::exchange::Destination;
use crate::broker::queue::args::declared_type;
use crate::broker::vhost::{ExchangeDeclare, QueueDeclare};
use crate::broker::{VHost, VhostMeta};

type St = State<Arc<super::AdminState>>;

pub(super) fn routes() -> Router<Arc<super::AdminState>> {
    Router::new()
        .route("/api/definitions", get(export).post(import))
        .route(
            "/api/definitions/{vhost}",
            get(export_vhost).post(import_vhost),
        )
}

/// A vhost's policies, runtime parameters, queues, exchanges (not `amq.*` or the default)
/// and explicit bindings, into the lists of a definitions document.
#[derive(Default)]
struct VhostObjects {
    parameters: Vec<Value>,
    policies: Vec<Value>,
    queues: Vec<Value>,
    exchanges: Vec<Value>,
    bindings: Vec<Value>,
}

impl VhostObjects {
    fn add(&mut self, v: &VHost) {
        self.policies.extend(v.policies().iter().map(|p| json!(p)));
        self.parameters
            .extend(super::parameters::vhost_parameters(v));
        for (name, r) in v.queues() {
            if r.exclusive_owner.is_some() {
                continue;
            }
            let kind = declared_type(&r.arguments).name();
            self.queues.push(json!({"name": name, "vhost": v.name(), "durable": r.durable, "auto_delete": r.auto_delete, "arguments": table_json(&r.arguments), "type": kind}));
        }
        for x in v.exchanges() {
            if x.name.is_empty() || x.name.starts_with("amq.") {
                continue;
            }
            self.exchanges.push(json!({"name": x.name, "vhost": v.name(), "type": x.kind, "durable": x.durable, "auto_delete": x.auto_delete, "internal": x.internal, "arguments": table_json(&x.arguments)}));
        }
        for (source, b) in v.bindings() {
            let mut item = render::binding_json(v.name(), &source, &b);
            if let Some(o) = item.as_object_mut() {
                o.remove("properties_key");
            }
            self.bindings.push(item);
        }
    }
}

/// Everything durable-or-not that RabbitMQ exports: users, vhosts, permissions, parameters,
/// policies, queues, exchanges and explicit bindings.
async fn export(State(state): St, auth: Auth) -> Result<Json<Value>, ApiError> {
    auth.require_admin()?;
    let broker = &state.broker;
    let access = broker.access();
    let mut objects = VhostObjects::default();
    let mut vhosts = Vec::new();
    for v in broker.vhosts() {
        objects.add(&v);
        let meta = v.meta();
        let limits: Vec<Value> = meta.limits.iter().map(|(k, v)| json!([k, v])).collect();
        vhosts.push(json!({"name": v.name(), "limits": limits, "metadata": {"description": meta.description, "tags": meta.tags}}));
    }
    let global: Vec<Value> = broker
        .parameters()
        .all()
        .into_iter()
        .map(|(name, value)| json!({"name": name, "value": value}))
        .collect();
    Ok(Json(json!({
        "rabbit_version": COMPATIBLE_VERSION,
        "rabbitmq_version": COMPATIBLE_VERSION,
        "product_name": "Leveret",
        "product_version": env!("CARGO_PKG_VERSION"),
        "users": access.users().iter().map(super::accounts::user_json).collect::<Vec<_>>(),
        "vhosts": vhosts,
        "permissions": access.permissions().iter().map(permission_json).collect::<Vec<_>>(),
        "topic_permissions": access.topic_permissions(),
        "parameters": objects.parameters,
        "global_parameters": global,
        "policies": objects.policies,
        "queues": objects.queues,
        "exchanges": objects.exchanges,
        "bindings": objects.bindings,
    })))
}

/// One vhost's definitions, as RabbitMQ exports them: queues, exchanges and bindings without
/// their `vhost` field (so they import into any vhost), policies and parameters with it.
async fn export_vhost(
    State(state): St,
    auth: Auth,
    Path(vh): Path<String>,
) -> Result<Json<Value>, ApiError> {
    auth.require_admin()?;
    let v = state
        .broker
        .vhost(&vh)
        .ok_or_else(|| ApiError::bad_request("vhost_not_found"))?;
    let mut objects = VhostObjects::default();
    objects.add(&v);
    let unplaced = |items: Vec<Value>| -> Vec<Value> {
        items
            .into_iter()
            .map(|mut item| {
                if let Some(o) = item.as_object_mut() {
                    o.remove("vhost");
                }
                item
            })
            .collect()
    };
    Ok(Json(json!({
        "rabbit_version": COMPATIBLE_VERSION,
        "parameters": objects.parameters,
        "policies": objects.policies,
        "queues": unplaced(objects.queues),
        "exchanges": unplaced(objects.exchanges),
        "bindings": unplaced(objects.bindings),
    })))
}

fn parse_document(body: &Bytes) -> Result<Map<String, Value>, ApiError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(ApiError::bad_request("failed_to_parse_json")),
    }
}

/// Import into one vhost: its objects go there whatever vhost they name; users, vhosts,
/// permissions and global parameters in the document are not for a vhost and are ignored.
async fn import_vhost(
    State(state): St,
    auth: Auth,
    Path(vh): Path<String>,
    body: Bytes,
) -> Result<StatusCode, ApiError> {
    auth.require_admin()?;
    if state.broker.vhost(&vh).is_none() {
        return Err(ApiError::not_found());
    }
    let defs = parse_document(&body)?;
    let mut placed = Map::new();
    for key in ["parameters", "policies", "queues", "exchanges", "bindings"] {
        let items: Vec<Value> = list(&defs, key)
            .map(|item| {
                let mut item = item.clone();
                item.insert("vhost".into(), Value::String(vh.clone()));
                Value::Object(item)
            })
            .collect();
        placed.insert(key.into(), Value::Array(items));
    }
    import_definitions(&state, &placed).await?;
    Ok(StatusCode::NO_CONTENT)
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
    let defs = parse_document(&body)?;
    import_definitions(&state, &defs).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Apply a definitions document (shared by the API and tests).
pub async fn import_definitions(
    state: &super::AdminState,
    defs: &Map<String, Value>,
) -> Result<(), ApiError> {
    let broker = &state.broker;
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
        broker.put_vhost(name, VhostMeta { ..meta })?;
    }
    for p in list(defs, "global_parameters") {
        let value = p.get("value").cloned().unwrap_or(Value::Null);
        broker.parameters().set(s(p, "name"), value)?;
    }
    for p in list(defs, "parameters") {
        let v = vhost(state, s(p, "vhost"))?;
        let value = p.get("value").cloned().unwrap_or(Value::Null);
        super::parameters::set_vhost_parameter(state, &v, s(p, "component"), s(p, "name"), &value)?;
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
