//! Vhosts, users, permissions and vhost limits through the API (administrators only for
//! writes), durable through the broker and effective at once on live connections.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Map, Value};

use super::objects::{body_object, require_keys, vhost, visible_vhost};
use super::{created, ApiError, Auth};
use crate::broker::access::{PermissionRecord, TopicPermissionRecord, UserRecord, SHA256};
use crate::broker::policy::PolicyRecord;
use crate::broker::{VHost, VhostMeta};

type St = State<Arc<super::AdminState>>;

pub(super) fn routes() -> Router<Arc<super::AdminState>> {
    Router::new()
        .route("/api/whoami", get(whoami))
        .route("/api/vhosts", get(list_vhosts))
        .route(
            "/api/vhosts/{vhost}",
            get(get_vhost).put(put_vhost).delete(delete_vhost),
        )
        .route("/api/vhosts/{vhost}/permissions", get(vhost_permissions))
        .route(
            "/api/vhosts/{vhost}/topic-permissions",
            get(vhost_topic_permissions),
        )
        .route("/api/users", get(list_users))
        .route(
            "/api/users/without-permissions",
            get(users_without_permissions),
        )
        .route("/api/users/bulk-delete", post(bulk_delete_users))
        .route(
            "/api/users/{user}",
            get(get_user).put(put_user).delete(delete_user),
        )
        .route("/api/users/{user}/permissions", get(user_permissions))
        .route(
            "/api/users/{user}/topic-permissions",
            get(user_topic_permissions),
        )
        .route("/api/topic-permissions", get(list_topic_permissions))
        .route(
            "/api/topic-permissions/{vhost}/{user}",
            get(get_topic_permissions)
                .put(put_topic_permission)
                .delete(delete_topic_permissions),
        )
        .route(
            "/api/topic-permissions/{vhost}/{user}/{exchange}",
            axum::routing::delete(delete_topic_permission),
        )
        .route("/api/permissions", get(list_permissions))
        .route(
            "/api/permissions/{vhost}/{user}",
            get(get_permission)
                .put(put_permission)
                .delete(delete_permission),
        )
        .route("/api/policies", get(list_policies))
        .route("/api/policies/{vhost}", get(list_policies_in))
        .route(
            "/api/policies/{vhost}/{name}",
            get(get_policy).put(put_policy).delete(delete_policy),
        )
        .route("/api/vhost-limits", get(list_limits))
        .route("/api/vhost-limits/{vhost}", get(vhost_limits))
        .route(
            "/api/vhost-limits/{vhost}/{name}",
            axum::routing::put(put_limit).delete(delete_limit),
        )
}

/// Tags as RabbitMQ accepts them: a list, or one comma-separated string.
pub(super) fn tags(value: Option<&Value>) -> Vec<String> {
    match value {
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        Some(Value::String(s)) => s
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(str::to_owned)
            .collect(),
        _ => Vec::new(),
    }
}

async fn whoami(auth: Auth) -> Json<Value> {
    Json(json!({ "name": auth.0.name, "tags": auth.0.tags }))
}

pub(super) fn vhost_json(v: &VHost, rates: &super::rates::Rates) -> Value {
    let meta = v.meta();
    let (mut ready, mut unacked) = (0, 0);
    for (_, record) in v.queues() {
        let g = record.handle.gauges();
        ready += crate::broker::queue::QueueGauges::get(&g.ready);
        unacked += crate::broker::queue::QueueGauges::get(&g.unacked);
    }
    let counts = super::rates::vhost_counts(v);
    let key = super::rates::vhost_key(v.name());
    let mut message_stats = Map::new();
    // As RabbitMQ: nothing until messages have come through.
    if counts.iter().any(|(_, n)| *n > 0) {
        for (field, n) in &counts {
            message_stats.insert((*field).to_owned(), json!(n));
            message_stats.insert(
                format!("{field}_details"),
                json!({ "rate": rates.of(&key, field) }),
            );
        }
    }
    json!({
        "name": v.name(),
        "description": meta.description,
        "tags": meta.tags,
        "default_queue_type": "undefined",
        "metadata": { "description": meta.description, "tags": meta.tags },
        "tracing": false,
        "cluster_state": { super::node(): "running" },
        "messages": ready + unacked,
        "messages_details": { "rate": 0.0 },
        "messages_ready": ready,
        "messages_ready_details": { "rate": 0.0 },
        "messages_unacknowledged": unacked,
        "messages_unacknowledged_details": { "rate": 0.0 },
        "recv_oct": 0,
        "recv_oct_details": { "rate": 0.0 },
        "send_oct": 0,
        "send_oct_details": { "rate": 0.0 },
        "message_stats": message_stats,
    })
}

async fn list_vhosts(State(state): St, auth: Auth) -> Json<Vec<Value>> {
    Json(
        auth.visible_vhosts(&state.broker, None)
            .iter()
            .map(|v| vhost_json(v, &state.rates))
            .collect(),
    )
}

async fn get_vhost(
    State(state): St,
    auth: Auth,
    Path(vh): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let v = visible_vhost(&state, &auth, &vh)?;
    Ok(Json(vhost_json(&v, &state.rates)))
}

async fn put_vhost(
    State(state): St,
    auth: Auth,
    Path(vh): Path<String>,
    body: Bytes,
) -> Result<StatusCode, ApiError> {
    auth.require_admin()?;
    let map = body_object(&body)?;
    let existing = state.broker.vhost(&vh);
    let mut meta = existing.as_ref().map(|v| v.meta()).unwrap_or_default();
    if let Some(d) = map.get("description").and_then(Value::as_str) {
        meta.description = d.to_owned();
    }
    if map.contains_key("tags") {
        meta.tags = tags(map.get("tags"));
    }
    state.broker.put_vhost(&vh, meta)?;
    if existing.is_none() {
        // As RabbitMQ: the creating user gets full permissions on the new vhost.
        state.broker.set_permissions(PermissionRecord {
            user: auth.0.name.clone(),
            vhost: vh,
            configure: ".*".into(),
            write: ".*".into(),
            read: ".*".into(),
        })?;
    }
    Ok(created(existing.is_none()))
}

async fn delete_vhost(
    State(state): St,
    auth: Auth,
    Path(vh): Path<String>,
) -> Result<StatusCode, ApiError> {
    auth.require_admin()?;
    state.broker.delete_vhost(&vh).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub(super) fn user_json(u: &UserRecord) -> Value {
    json!({
        "name": u.name,
        "password_hash": u.password_hash,
        "hashing_algorithm": u.hashing_algorithm,
        "tags": u.tags,
        "limits": u.limits,
    })
}

async fn list_users(State(state): St, auth: Auth) -> Result<Json<Vec<Value>>, ApiError> {
    auth.require_admin()?;
    Ok(Json(
        state
            .broker
            .access()
            .users()
            .iter()
            .map(user_json)
            .collect(),
    ))
}

async fn get_user(
    State(state): St,
    auth: Auth,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    auth.require_admin()?;
    let u = state
        .broker
        .access()
        .user(&name)
        .ok_or_else(ApiError::not_found)?;
    Ok(Json(user_json(&u)))
}

/// A user from the API's (or definitions') JSON: `password` is hashed, `password_hash` taken
/// as it is.
pub(super) fn user_from(name: &str, map: &Map<String, Value>) -> UserRecord {
    let tags = tags(map.get("tags"));
    let mut user = match (
        map.get("password").and_then(Value::as_str),
        map.get("password_hash").and_then(Value::as_str),
    ) {
        (Some(password), _) => UserRecord::new(name, Some(password), tags),
        (None, Some(hash)) => UserRecord {
            name: name.to_owned(),
            password_hash: hash.to_owned(),
            hashing_algorithm: map
                .get("hashing_algorithm")
                .and_then(Value::as_str)
                .unwrap_or(SHA256)
                .to_owned(),
            tags,
            limits: Default::default(),
        },
        (None, None) => UserRecord::new(name, None, tags),
    };
    if let Some(Value::Object(limits)) = map.get("limits") {
        user.limits = limits
            .iter()
            .filter_map(|(k, v)| Some((k.clone(), v.as_i64()?)))
            .collect();
    }
    user
}

async fn put_user(
    State(state): St,
    auth: Auth,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<StatusCode, ApiError> {
    auth.require_admin()?;
    let map = body_object(&body)?;
    let access = state.broker.access();
    let existing = access.user(&name);
    let mut user = user_from(&name, &map);
    if let Some(old) = &existing {
        // Updating tags alone keeps the password.
        if !map.contains_key("password") && !map.contains_key("password_hash") {
            user.password_hash = old.password_hash.clone();
            user.hashing_algorithm = old.hashing_algorithm.clone();
        }
        if !map.contains_key("tags") {
            user.tags = old.tags.clone();
        }
        user.limits = old.limits.clone();
    }
    access.put_user(user)?;
    Ok(created(existing.is_none()))
}

async fn delete_user(
    State(state): St,
    auth: Auth,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    auth.require_admin()?;
    state.broker.delete_user(&name)?;
    Ok(StatusCode::NO_CONTENT)
}

/// Users with no permissions in any vhost (RabbitMQ's `/api/users/without-permissions`).
async fn users_without_permissions(
    State(state): St,
    auth: Auth,
) -> Result<Json<Vec<Value>>, ApiError> {
    auth.require_admin()?;
    let access = state.broker.access();
    let permitted: std::collections::BTreeSet<String> =
        access.permissions().into_iter().map(|p| p.user).collect();
    Ok(Json(
        access
            .users()
            .iter()
            .filter(|u| !permitted.contains(&u.name))
            .map(user_json)
            .collect(),
    ))
}

/// Delete the users a `{"users": [...]}` body names, in order, as RabbitMQ does: an unknown
/// user stops the request there with 400, the ones before it staying deleted.
async fn bulk_delete_users(
    State(state): St,
    auth: Auth,
    body: Bytes,
) -> Result<StatusCode, ApiError> {
    auth.require_admin()?;
    let map = body_object(&body)?;
    let users = match map.get("users") {
        Some(Value::Array(users)) => users,
        Some(_) => return Err(ApiError::bad_request("users must be a list of user names")),
        None => return Err(ApiError::bad_request("[{key_missing,users}]")),
    };
    for name in users.iter().filter_map(Value::as_str) {
        if state.broker.access().user(name).is_none() {
            return Err(ApiError::bad_request(json!(["no_such_user", name])));
        }
        state.broker.delete_user(name)?;
    }
    Ok(StatusCode::NO_CONTENT)
}

fn topic_permissions_where(
    state: &super::AdminState,
    pred: impl Fn(&TopicPermissionRecord) -> bool,
) -> Vec<Value> {
    state
        .broker
        .access()
        .topic_permissions()
        .iter()
        .filter(|r| pred(r))
        .map(|r| json!(r))
        .collect()
}

async fn list_topic_permissions(
    State(state): St,
    auth: Auth,
) -> Result<Json<Vec<Value>>, ApiError> {
    auth.require_admin()?;
    Ok(Json(topic_permissions_where(&state, |_| true)))
}

async fn vhost_topic_permissions(
    State(state): St,
    auth: Auth,
    Path(vh): Path<String>,
) -> Result<Json<Vec<Value>>, ApiError> {
    auth.require_admin()?;
    vhost(&state, &vh)?;
    Ok(Json(topic_permissions_where(&state, |r| r.vhost == vh)))
}

async fn user_topic_permissions(
    State(state): St,
    auth: Auth,
    Path(name): Path<String>,
) -> Result<Json<Vec<Value>>, ApiError> {
    auth.require_admin()?;
    state
        .broker
        .access()
        .user(&name)
        .ok_or_else(ApiError::not_found)?;
    Ok(Json(topic_permissions_where(&state, |r| r.user == name)))
}

async fn get_topic_permissions(
    State(state): St,
    auth: Auth,
    Path((vh, user)): Path<(String, String)>,
) -> Result<Json<Vec<Value>>, ApiError> {
    auth.require_admin()?;
    let found = topic_permissions_where(&state, |r| r.vhost == vh && r.user == user);
    if found.is_empty() {
        return Err(ApiError::not_found());
    }
    Ok(Json(found))
}

async fn put_topic_permission(
    State(state): St,
    auth: Auth,
    Path((vh, user)): Path<(String, String)>,
    body: Bytes,
) -> Result<StatusCode, ApiError> {
    auth.require_admin()?;
    let map = body_object(&body)?;
    require_keys(&map, &["exchange", "write", "read"])?;
    let access = state.broker.access();
    if state.broker.vhost(&vh).is_none() || access.user(&user).is_none() {
        return Err(ApiError::bad_request("vhost_or_user_not_found"));
    }
    let text = |k: &str| {
        map.get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    // Created when the user had no topic permissions in the vhost, as RabbitMQ answers.
    let existed = !topic_permissions_where(&state, |r| r.vhost == vh && r.user == user).is_empty();
    access.set_topic_permissions(TopicPermissionRecord {
        user,
        vhost: vh,
        exchange: text("exchange"),
        write: text("write"),
        read: text("read"),
    })?;
    Ok(created(!existed))
}

async fn delete_topic_permissions(
    State(state): St,
    auth: Auth,
    Path((vh, user)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    auth.require_admin()?;
    if topic_permissions_where(&state, |r| r.vhost == vh && r.user == user).is_empty() {
        return Err(ApiError::not_found());
    }
    state
        .broker
        .access()
        .clear_topic_permissions_where(|r| r.vhost == vh && r.user == user)?;
    Ok(StatusCode::NO_CONTENT)
}

async fn delete_topic_permission(
    State(state): St,
    auth: Auth,
    Path((vh, user, exchange)): Path<(String, String, String)>,
) -> Result<StatusCode, ApiError> {
    auth.require_admin()?;
    // RabbitMQ answers 404 only when the user has no topic permissions in the vhost at all.
    if topic_permissions_where(&state, |r| r.vhost == vh && r.user == user).is_empty() {
        return Err(ApiError::not_found());
    }
    let matches =
        |r: &TopicPermissionRecord| r.vhost == vh && r.user == user && r.exchange == exchange;
    state
        .broker
        .access()
        .clear_topic_permissions_where(matches)?;
    Ok(StatusCode::NO_CONTENT)
}

pub(super) fn permission_json(p: &PermissionRecord) -> Value {
    json!({
        "user": p.user,
        "vhost": p.vhost,
        "configure": p.configure,
        "write": p.write,
        "read": p.read,
    })
}

async fn list_permissions(State(state): St, auth: Auth) -> Result<Json<Vec<Value>>, ApiError> {
    auth.require_admin()?;
    Ok(Json(
        state
            .broker
            .access()
            .permissions()
            .iter()
            .map(permission_json)
            .collect(),
    ))
}

async fn vhost_permissions(
    State(state): St,
    auth: Auth,
    Path(vh): Path<String>,
) -> Result<Json<Vec<Value>>, ApiError> {
    auth.require_admin()?;
    vhost(&state, &vh)?;
    Ok(Json(
        state
            .broker
            .access()
            .permissions()
            .iter()
            .filter(|p| p.vhost == vh)
            .map(|p| {
                json!({"vhost": p.vhost, "user": p.user, "configure": p.configure, "write": p.write, "read": p.read})
            })
            .collect(),
    ))
}

async fn user_permissions(
    State(state): St,
    auth: Auth,
    Path(name): Path<String>,
) -> Result<Json<Vec<Value>>, ApiError> {
    auth.require_admin()?;
    let access = state.broker.access();
    access.user(&name).ok_or_else(ApiError::not_found)?;
    Ok(Json(
        access
            .permissions()
            .iter()
            .filter(|p| p.user == name)
            .map(permission_json)
            .collect(),
    ))
}

async fn get_permission(
    State(state): St,
    auth: Auth,
    Path((vh, user)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    auth.require_admin()?;
    let p = state
        .broker
        .access()
        .permission(&vh, &user)
        .ok_or_else(ApiError::not_found)?;
    Ok(Json(permission_json(&p)))
}

async fn put_permission(
    State(state): St,
    auth: Auth,
    Path((vh, user)): Path<(String, String)>,
    body: Bytes,
) -> Result<StatusCode, ApiError> {
    auth.require_admin()?;
    let map = body_object(&body)?;
    require_keys(&map, &["configure", "write", "read"])?;
    let access = state.broker.access();
    if state.broker.vhost(&vh).is_none() || access.user(&user).is_none() {
        return Err(ApiError::bad_request("vhost_or_user_not_found"));
    }
    let existed = access.permission(&vh, &user).is_some();
    let regex = |k: &str| {
        map.get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    state.broker.set_permissions(PermissionRecord {
        user,
        vhost: vh,
        configure: regex("configure"),
        write: regex("write"),
        read: regex("read"),
    })?;
    Ok(created(!existed))
}

async fn delete_permission(
    State(state): St,
    auth: Auth,
    Path((vh, user)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    auth.require_admin()?;
    let access = state.broker.access();
    access
        .permission(&vh, &user)
        .ok_or_else(ApiError::not_found)?;
    access.clear_permissions(&vh, &user)?;
    Ok(StatusCode::NO_CONTENT)
}

fn limits_json(v: &VHost) -> Value {
    json!({ "vhost": v.name(), "value": v.meta().limits })
}

async fn list_limits(State(state): St, auth: Auth) -> Result<Json<Vec<Value>>, ApiError> {
    auth.require_admin()?;
    Ok(Json(
        state
            .broker
            .vhosts()
            .iter()
            .filter(|v| !v.meta().limits.is_empty())
            .map(|v| limits_json(v))
            .collect(),
    ))
}

async fn vhost_limits(
    State(state): St,
    auth: Auth,
    Path(vh): Path<String>,
) -> Result<Json<Vec<Value>>, ApiError> {
    auth.require_admin()?;
    let v = vhost(&state, &vh)?;
    let meta = v.meta();
    Ok(Json(if meta.limits.is_empty() {
        Vec::new()
    } else {
        vec![limits_json(&v)]
    }))
}

fn update_limits(
    state: &super::AdminState,
    vh: &str,
    change: impl FnOnce(&mut VhostMeta),
) -> Result<(), ApiError> {
    let v = vhost(state, vh)?;
    let mut meta = v.meta();
    change(&mut meta);
    state.broker.put_vhost(vh, meta)?;
    Ok(())
}

async fn put_limit(
    State(state): St,
    auth: Auth,
    Path((vh, name)): Path<(String, String)>,
    body: Bytes,
) -> Result<StatusCode, ApiError> {
    auth.require_admin()?;
    if name != "max-connections" && name != "max-queues" {
        return Err(ApiError::bad_request(format!(
            "Validation failed\n\n[{{<<\"{name}\">>,...}}] are not recognised vhost limits\n"
        )));
    }
    let map = body_object(&body)?;
    let value = super::objects::integer(&map, "value")
        .ok_or_else(|| ApiError::bad_request("[{key_missing,value}]"))?;
    update_limits(&state, &vh, |m| {
        m.limits.insert(name, value);
    })?;
    Ok(StatusCode::NO_CONTENT)
}

async fn delete_limit(
    State(state): St,
    auth: Auth,
    Path((vh, name)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    auth.require_admin()?;
    update_limits(&state, &vh, |m| {
        m.limits.remove(&name);
    })?;
    Ok(StatusCode::NO_CONTENT)
}

fn policies_json(state: &super::AdminState, auth: &Auth, only: Option<&str>) -> Vec<Value> {
    let mut all: Vec<PolicyRecord> = auth
        .visible_vhosts(&state.broker, only)
        .iter()
        .flat_map(|v| v.policies())
        .collect();
    all.sort_by(|a, b| (a.priority, &a.vhost, &a.name).cmp(&(b.priority, &b.vhost, &b.name)));
    all.iter().map(|p| json!(p)).collect()
}

async fn list_policies(State(state): St, auth: Auth) -> Json<Vec<Value>> {
    Json(policies_json(&state, &auth, None))
}

async fn list_policies_in(
    State(state): St,
    auth: Auth,
    Path(vh): Path<String>,
) -> Result<Json<Vec<Value>>, ApiError> {
    vhost(&state, &vh)?;
    Ok(Json(policies_json(&state, &auth, Some(&vh))))
}

async fn get_policy(
    State(state): St,
    auth: Auth,
    Path((vh, name)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let v = visible_vhost(&state, &auth, &vh)?;
    let p = v
        .policies()
        .into_iter()
        .find(|p| p.name == name)
        .ok_or_else(ApiError::not_found)?;
    Ok(Json(json!(p)))
}

/// A policy from the API's (or definitions') JSON; `apply-to` defaults to `all`, `priority`
/// to 0.
pub(super) fn policy_from(
    vhost: &str,
    name: &str,
    map: &Map<String, Value>,
) -> Result<PolicyRecord, ApiError> {
    require_keys(map, &["pattern", "definition"])?;
    Ok(PolicyRecord {
        vhost: vhost.to_owned(),
        name: name.to_owned(),
        pattern: map
            .get("pattern")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
        apply_to: map
            .get("apply-to")
            .and_then(Value::as_str)
            .unwrap_or("all")
            .to_owned(),
        definition: map
            .get("definition")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default(),
        priority: super::objects::integer(map, "priority").unwrap_or(0),
    })
}

async fn put_policy(
    State(state): St,
    auth: Auth,
    Path((vh, name)): Path<(String, String)>,
    body: Bytes,
) -> Result<StatusCode, ApiError> {
    let v = vhost(&state, &vh)?;
    auth.require_policymaker(&state.broker, &vh)?;
    let map = body_object(&body)?;
    let was_new = v.set_policy(policy_from(&vh, &name, &map)?)?;
    Ok(created(was_new))
}

async fn delete_policy(
    State(state): St,
    auth: Auth,
    Path((vh, name)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let v = vhost(&state, &vh)?;
    auth.require_policymaker(&state.broker, &vh)?;
    v.clear_policy(&name)?;
    Ok(StatusCode::NO_CONTENT)
}
