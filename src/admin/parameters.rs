//! Runtime parameters, global parameters, the cluster's name and user limits, in RabbitMQ's
//! shapes and texts.
//!
//! RabbitMQ keeps vhost limits and policies as runtime parameters (components `vhost-limits`
//! and `policy`); Leveret keeps them in their own records and shows them here the same way, so
//! a tool may use either API. Components of plugins Leveret does not have (federation,
//! shovels) are refused as RabbitMQ refuses them when the plugin is off.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, put};
use axum::{Json, Router};
use serde_json::{json, Map, Value};

use super::objects::{body_object, vhost};
use super::{created, ApiError, Auth};
use crate::broker::parameters::CLUSTER_NAME;
use crate::broker::VHost;

type St = State<Arc<super::AdminState>>;

/// The vhost limits RabbitMQ knows.
const VHOST_LIMITS: &[&str] = &["max-connections", "max-queues"];
/// The user limits RabbitMQ knows.
const USER_LIMITS: &[&str] = &["max-connections", "max-channels"];

pub(super) fn routes() -> Router<Arc<super::AdminState>> {
    Router::new()
        .route(
            "/api/cluster-name",
            get(get_cluster_name).put(put_cluster_name),
        )
        .route("/api/global-parameters", get(list_global))
        .route(
            "/api/global-parameters/{name}",
            get(get_global).put(put_global).delete(delete_global),
        )
        .route("/api/parameters", get(list_parameters))
        .route("/api/parameters/{component}", get(list_component))
        .route(
            "/api/parameters/{component}/{vhost}",
            get(list_component_in),
        )
        .route(
            "/api/parameters/{component}/{vhost}/{name}",
            get(get_parameter)
                .put(put_parameter)
                .delete(delete_parameter),
        )
        .route("/api/user-limits", get(list_user_limits))
        .route("/api/user-limits/{user}", get(user_limits))
        .route(
            "/api/user-limits/{user}/{name}",
            put(put_user_limit).delete(delete_user_limit),
        )
}

async fn get_cluster_name(State(state): St, _auth: Auth) -> Json<Value> {
    Json(json!({ "name": state.broker.parameters().cluster_name() }))
}

async fn put_cluster_name(
    State(state): St,
    auth: Auth,
    body: Bytes,
) -> Result<StatusCode, ApiError> {
    auth.require_admin()?;
    let map = body_object(&body)?;
    let name = map
        .get("name")
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::bad_request("[{key_missing,name}]"))?;
    state
        .broker
        .parameters()
        .set(CLUSTER_NAME, Value::String(name.to_owned()))?;
    Ok(StatusCode::NO_CONTENT)
}

fn global_json(name: &str, value: Value) -> Value {
    json!({ "name": name, "value": value })
}

async fn list_global(State(state): St, auth: Auth) -> Result<Json<Vec<Value>>, ApiError> {
    auth.require_admin()?;
    Ok(Json(
        state
            .broker
            .parameters()
            .all()
            .into_iter()
            .map(|(name, value)| global_json(&name, value))
            .collect(),
    ))
}

async fn get_global(
    State(state): St,
    auth: Auth,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    auth.require_admin()?;
    let value = state
        .broker
        .parameters()
        .get(&name)
        .ok_or_else(ApiError::not_found)?;
    Ok(Json(global_json(&name, value)))
}

async fn put_global(
    State(state): St,
    auth: Auth,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<StatusCode, ApiError> {
    auth.require_admin()?;
    let map = body_object(&body)?;
    let value = map
        .get("value")
        .cloned()
        .ok_or_else(|| ApiError::bad_request("[{key_missing,value}]"))?;
    // The path names the parameter; a `name` in the body is ignored, as by RabbitMQ.
    let was_new = state.broker.parameters().set(&name, value)?;
    Ok(created(was_new))
}

async fn delete_global(
    State(state): St,
    auth: Auth,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    auth.require_admin()?;
    if state.broker.parameters().clear(&name)? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found())
    }
}

fn parameter_json(vhost: &str, component: &str, name: &str, value: Value) -> Value {
    json!({ "value": value, "vhost": vhost, "component": component, "name": name })
}

/// A vhost's runtime parameters that RabbitMQ lists under `/api/parameters`: its limits
/// (policies are listed only under their own component, as by RabbitMQ).
pub(super) fn vhost_parameters(v: &VHost) -> Vec<Value> {
    let limits = v.meta().limits;
    if limits.is_empty() {
        return Vec::new();
    }
    vec![parameter_json(
        v.name(),
        "vhost-limits",
        "limits",
        json!(limits),
    )]
}

fn policy_parameters(v: &VHost) -> Vec<Value> {
    v.policies()
        .iter()
        .map(|p| {
            let value = json!({
                "pattern": p.pattern,
                "definition": p.definition,
                "priority": p.priority,
                "apply-to": p.apply_to,
            });
            parameter_json(v.name(), "policy", &p.name, value)
        })
        .collect()
}

/// The parameters of `component` in the vhosts the caller sees (`only`: one of them).
fn component_parameters(
    state: &super::AdminState,
    auth: &Auth,
    component: Option<&str>,
    only: Option<&str>,
) -> Vec<Value> {
    let mut all = Vec::new();
    for v in auth.visible_vhosts(&state.broker, only) {
        match component {
            None | Some("vhost-limits") => all.extend(vhost_parameters(&v)),
            Some("policy") => all.extend(policy_parameters(&v)),
            Some(_) => {}
        }
    }
    all
}

async fn list_parameters(State(state): St, auth: Auth) -> Result<Json<Vec<Value>>, ApiError> {
    auth.require_policymaker_anywhere()?;
    Ok(Json(component_parameters(&state, &auth, None, None)))
}

async fn list_component(
    State(state): St,
    auth: Auth,
    Path(component): Path<String>,
) -> Result<Json<Vec<Value>>, ApiError> {
    auth.require_policymaker_anywhere()?;
    Ok(Json(component_parameters(
        &state,
        &auth,
        Some(&component),
        None,
    )))
}

async fn list_component_in(
    State(state): St,
    auth: Auth,
    Path((component, vh)): Path<(String, String)>,
) -> Result<Json<Vec<Value>>, ApiError> {
    vhost(&state, &vh)?;
    auth.require_policymaker(&state.broker, &vh)?;
    Ok(Json(component_parameters(
        &state,
        &auth,
        Some(&component),
        Some(&vh),
    )))
}

async fn get_parameter(
    State(state): St,
    auth: Auth,
    Path((component, vh, name)): Path<(String, String, String)>,
) -> Result<Json<Value>, ApiError> {
    vhost(&state, &vh)?;
    auth.require_policymaker(&state.broker, &vh)?;
    component_parameters(&state, &auth, Some(&component), Some(&vh))
        .into_iter()
        .find(|p| p.get("name").and_then(Value::as_str) == Some(name.as_str()))
        .map(Json)
        .ok_or_else(ApiError::not_found)
}

fn validation_failed(text: String) -> ApiError {
    ApiError::bad_request(format!("Validation failed\n\n{text}\n"))
}

/// Set a runtime parameter of a vhost (the API's PUT and definitions import): limits replace
/// the vhost's limits, a policy is set as through `/api/policies`.
pub(super) fn set_vhost_parameter(
    state: &super::AdminState,
    v: &VHost,
    component: &str,
    name: &str,
    value: &Value,
) -> Result<bool, ApiError> {
    match component {
        "vhost-limits" => {
            // RabbitMQ stores other names too, then cannot read them back (500s follow);
            // Leveret refuses them.
            if name != "limits" {
                return Err(validation_failed(format!(
                    "vhost limits are named 'limits', not '{name}'"
                )));
            }
            let limits = value.as_object().ok_or_else(|| {
                validation_failed(format!("limits must be an object, actually was {value}"))
            })?;
            let mut parsed = BTreeMap::new();
            for (k, n) in limits {
                if !VHOST_LIMITS.contains(&k.as_str()) {
                    // RabbitMQ escapes this reason's angle brackets as HTML.
                    return Err(validation_failed(format!(
                        "Unrecognised terms [{{&lt;&lt;\"{k}\"&gt;&gt;,{n}}}] in limits"
                    )));
                }
                let n = n.as_i64().ok_or_else(|| {
                    validation_failed(format!("{k} should be a number, actually was {n}"))
                })?;
                parsed.insert(k.clone(), n);
            }
            let mut meta = v.meta();
            let was_new = meta.limits.is_empty();
            meta.limits = parsed;
            state.broker.put_vhost(v.name(), meta)?;
            Ok(was_new)
        }
        "policy" => {
            let map = value.as_object().cloned().unwrap_or_default();
            let policy = super::accounts::policy_from(v.name(), name, &map)?;
            Ok(v.set_policy(policy)?)
        }
        other => Err(validation_failed(format!("component {other} not found"))),
    }
}

async fn put_parameter(
    State(state): St,
    auth: Auth,
    Path((component, vh, name)): Path<(String, String, String)>,
    body: Bytes,
) -> Result<StatusCode, ApiError> {
    let Some(v) = state.broker.vhost(&vh) else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "vhost_not_found",
        ));
    };
    auth.require_policymaker(&state.broker, &vh)?;
    let map = body_object(&body)?;
    let value = map
        .get("value")
        .ok_or_else(|| ApiError::bad_request("[{key_missing,value}]"))?;
    let was_new = set_vhost_parameter(&state, &v, &component, &name, value)?;
    Ok(created(was_new))
}

async fn delete_parameter(
    State(state): St,
    auth: Auth,
    Path((component, vh, name)): Path<(String, String, String)>,
) -> Result<StatusCode, ApiError> {
    let v = vhost(&state, &vh)?;
    auth.require_policymaker(&state.broker, &vh)?;
    match component.as_str() {
        "vhost-limits" if name == "limits" && !v.meta().limits.is_empty() => {
            let mut meta = v.meta();
            meta.limits.clear();
            state.broker.put_vhost(&vh, meta)?;
            Ok(StatusCode::NO_CONTENT)
        }
        "policy" if v.policies().iter().any(|p| p.name == name) => {
            v.clear_policy(&name)?;
            Ok(StatusCode::NO_CONTENT)
        }
        _ => Err(ApiError::not_found()),
    }
}

fn user_limits_json(user: &str, limits: &BTreeMap<String, i64>) -> Value {
    json!({ "user": user, "value": limits })
}

async fn list_user_limits(State(state): St, auth: Auth) -> Result<Json<Vec<Value>>, ApiError> {
    auth.require_admin()?;
    Ok(Json(
        state
            .broker
            .access()
            .users()
            .iter()
            .filter(|u| !u.limits.is_empty())
            .map(|u| user_limits_json(&u.name, &u.limits))
            .collect(),
    ))
}

async fn user_limits(
    State(state): St,
    auth: Auth,
    Path(name): Path<String>,
) -> Result<Json<Vec<Value>>, ApiError> {
    auth.require_admin()?;
    let user = state
        .broker
        .access()
        .user(&name)
        .ok_or_else(ApiError::not_found)?;
    Ok(Json(if user.limits.is_empty() {
        Vec::new()
    } else {
        vec![user_limits_json(&user.name, &user.limits)]
    }))
}

fn no_such_user(name: &str) -> ApiError {
    ApiError::bad_request(json!(["no_such_user", name]))
}

async fn put_user_limit(
    State(state): St,
    auth: Auth,
    Path((user, name)): Path<(String, String)>,
    body: Bytes,
) -> Result<StatusCode, ApiError> {
    auth.require_admin()?;
    let map: Map<String, Value> = body_object(&body)?;
    let value = map
        .get("value")
        .ok_or_else(|| ApiError::bad_request("[{key_missing,value}]"))?;
    if !USER_LIMITS.contains(&name.as_str()) {
        return Err(ApiError::bad_request(format!(
            "Unrecognised terms [{{<<\"{name}\">>,{value}}}] in user-limits"
        )));
    }
    let n = value.as_i64().ok_or_else(|| {
        let shown = match value {
            Value::String(s) => format!("<<\"{s}\">>"),
            other => other.to_string(),
        };
        ApiError::bad_request(format!("{name} should be a number, actually was {shown}"))
    })?;
    let access = state.broker.access();
    if access.user(&user).is_none() {
        return Err(no_such_user(&user));
    }
    access.update_limits(&user, |limits| {
        limits.insert(name, n);
    })?;
    Ok(StatusCode::NO_CONTENT)
}

async fn delete_user_limit(
    State(state): St,
    auth: Auth,
    Path((user, name)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    auth.require_admin()?;
    let access = state.broker.access();
    if access.user(&user).is_none() {
        return Err(no_such_user(&user));
    }
    access.update_limits(&user, |limits| {
        limits.remove(&name);
    })?;
    Ok(StatusCode::NO_CONTENT)
}
