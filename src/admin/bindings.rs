//! Bindings through the API: listed per vhost, queue and exchange, created with a `location`
//! header naming their properties key, read and deleted by it; each checked against the
//! caller's AMQP permissions as RabbitMQ does.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::Value;

use super::objects::{
    arguments, authorize, body_object, exchange_name, short, text, vhost, visible_vhost,
};
use super::render;
use super::{ApiError, Auth};
use crate::broker::access::{Permission, Resource};
use crate::broker::exchange::Destination;
use crate::broker::vhost::VHost;

type St = State<Arc<super::AdminState>>;

pub(super) fn routes() -> Router<Arc<super::AdminState>> {
    Router::new()
        .route("/api/queues/{vhost}/{name}/bindings", get(queue_bindings))
        .route(
            "/api/exchanges/{vhost}/{name}/bindings/source",
            get(bindings_from),
        )
        .route(
            "/api/exchanges/{vhost}/{name}/bindings/destination",
            get(bindings_to),
        )
        .route("/api/bindings", get(list_bindings))
        .route("/api/bindings/{vhost}", get(list_bindings_in))
        .route(
            "/api/bindings/{vhost}/e/{source}/{kind}/{destination}",
            get(bindings_between).post(add_binding),
        )
        .route(
            "/api/bindings/{vhost}/e/{source}/{kind}/{destination}/{props}",
            get(get_binding).delete(delete_binding),
        )
}

fn all_bindings(v: &VHost) -> Vec<Value> {
    let mut out: Vec<Value> = v
        .queue_names()
        .iter()
        .map(|q| render::default_binding_json(v.name(), q))
        .collect();
    out.extend(
        v.bindings()
            .iter()
            .map(|(source, b)| render::binding_json(v.name(), source, b)),
    );
    out
}

async fn list_bindings(State(state): St, auth: Auth) -> Json<Vec<Value>> {
    Json(
        auth.visible_vhosts(&state.broker, None)
            .iter()
            .flat_map(|v| all_bindings(v))
            .collect(),
    )
}

async fn list_bindings_in(
    State(state): St,
    auth: Auth,
    Path(vh): Path<String>,
) -> Result<Json<Vec<Value>>, ApiError> {
    let v = visible_vhost(&state, &auth, &vh)?;
    Ok(Json(all_bindings(&v)))
}

fn bindings_where(v: &VHost, pred: impl Fn(&str, &Destination) -> bool) -> Vec<Value> {
    v.bindings()
        .iter()
        .filter(|(source, b)| pred(source, &b.destination))
        .map(|(source, b)| render::binding_json(v.name(), source, b))
        .collect()
}

async fn queue_bindings(
    State(state): St,
    auth: Auth,
    Path((vh, name)): Path<(String, String)>,
) -> Result<Json<Vec<Value>>, ApiError> {
    let v = visible_vhost(&state, &auth, &vh)?;
    v.queue_record(&name).ok_or_else(ApiError::not_found)?;
    let mut out = vec![render::default_binding_json(&vh, &name)];
    out.extend(bindings_where(
        &v,
        |_, d| matches!(d, Destination::Queue(q) if *q == name),
    ));
    Ok(Json(out))
}

async fn bindings_from(
    State(state): St,
    auth: Auth,
    Path((vh, name)): Path<(String, String)>,
) -> Result<Json<Vec<Value>>, ApiError> {
    let v = visible_vhost(&state, &auth, &vh)?;
    let name = exchange_name(&name).to_owned();
    if !v.has_exchange(&name) {
        return Err(ApiError::not_found());
    }
    Ok(Json(bindings_where(&v, |s, _| s == name)))
}

async fn bindings_to(
    State(state): St,
    auth: Auth,
    Path((vh, name)): Path<(String, String)>,
) -> Result<Json<Vec<Value>>, ApiError> {
    let v = visible_vhost(&state, &auth, &vh)?;
    if !v.has_exchange(&name) {
        return Err(ApiError::not_found());
    }
    Ok(Json(bindings_where(
        &v,
        |_, d| matches!(d, Destination::Exchange(x) if *x == name),
    )))
}

fn destination(kind: &str, name: String) -> Result<Destination, ApiError> {
    match kind {
        "q" => Ok(Destination::Queue(name)),
        "e" => Ok(Destination::Exchange(name)),
        _ => Err(ApiError::not_found()),
    }
}

async fn bindings_between(
    State(state): St,
    auth: Auth,
    Path((vh, source, kind, dest)): Path<(String, String, String, String)>,
) -> Result<Json<Vec<Value>>, ApiError> {
    let v = visible_vhost(&state, &auth, &vh)?;
    let dest = destination(&kind, dest)?;
    Ok(Json(bindings_where(&v, |s, d| s == source && *d == dest)))
}

fn authorize_binding(
    state: &super::AdminState,
    auth: &Auth,
    vh: &str,
    source: &str,
    dest: &Destination,
) -> Result<(), ApiError> {
    let resource = match dest {
        Destination::Queue(q) => Resource::Queue(q),
        Destination::Exchange(x) => Resource::Exchange(x),
    };
    authorize(state, auth, vh, resource, Permission::Write)?;
    authorize(
        state,
        auth,
        vh,
        Resource::Exchange(source),
        Permission::Read,
    )
}

async fn add_binding(
    State(state): St,
    auth: Auth,
    Path((vh, source, kind, dest)): Path<(String, String, String, String)>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let v = vhost(&state, &vh)?;
    let map = body_object(&body)?;
    let dest = destination(&kind, dest)?;
    authorize_binding(&state, &auth, &vh, &source, &dest)?;
    let routing_key = text(&map, "routing_key").unwrap_or_default().to_owned();
    short("routing_key", &routing_key)?;
    let args = arguments(&map)?;
    v.set_binding(&source, dest.clone(), &routing_key, &args, 0, true)
        .map_err(|e| match e.code as u16 {
            404 => ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                e.text.split_once(" - ").map_or("", |(_, r)| r).to_owned(),
            ),
            _ => e.into(),
        })?;
    let name = match &dest {
        Destination::Queue(n) | Destination::Exchange(n) => n,
    };
    let location = format!("{name}/{}", render::properties_key(&routing_key, &args));
    Ok((StatusCode::CREATED, [(header::LOCATION, location)]).into_response())
}

fn find_binding(
    v: &VHost,
    source: &str,
    dest: &Destination,
    props: &str,
) -> Option<crate::broker::exchange::Binding> {
    v.bindings()
        .into_iter()
        .find(|(s, b)| {
            s == source
                && b.destination == *dest
                && render::properties_key(&b.routing_key, &b.arguments) == props
        })
        .map(|(_, b)| b)
}

async fn get_binding(
    State(state): St,
    auth: Auth,
    Path((vh, source, kind, dest, props)): Path<(String, String, String, String, String)>,
) -> Result<Json<Value>, ApiError> {
    let v = visible_vhost(&state, &auth, &vh)?;
    let dest = destination(&kind, dest)?;
    let props = render::percent_encode(&props);
    let b = find_binding(&v, &source, &dest, &props).ok_or_else(ApiError::not_found)?;
    Ok(Json(render::binding_json(&vh, &source, &b)))
}

async fn delete_binding(
    State(state): St,
    auth: Auth,
    Path((vh, source, kind, dest, props)): Path<(String, String, String, String, String)>,
) -> Result<StatusCode, ApiError> {
    let v = vhost(&state, &vh)?;
    let dest = destination(&kind, dest)?;
    authorize_binding(&state, &auth, &vh, &source, &dest)?;
    let props = render::percent_encode(&props);
    let b = find_binding(&v, &source, &dest, &props).ok_or_else(ApiError::not_found)?;
    v.set_binding(&source, dest, &b.routing_key, &b.arguments, 0, false)?;
    Ok(StatusCode::NO_CONTENT)
}
