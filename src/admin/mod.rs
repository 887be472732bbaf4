//! The HTTP management API, shaped like RabbitMQ's management plugin, and Prometheus metrics.
//!
//! Routes, JSON fields, status codes and error bodies follow RabbitMQ 3.10
//! (`interop/rabbitmq-3.10.8-management-api.md`), so `rabbitmqadmin`, client test suites and
//! operators' scripts work unchanged. Every request authenticates with HTTP basic auth against
//! the broker's users; a user needs one of the management tags, and writes to users, vhosts,
//! permissions and definitions need `administrator`. Handlers only call the broker: nothing
//! here holds state of its own but the rate sampler.

mod accounts;
mod bindings;
mod definitions;
mod health;
pub mod listing;
mod metrics;
mod objects;
mod overview;
mod parameters;
pub mod rates;
pub mod render;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use base64::Engine as _;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::broker::access::{AdminError, UserRecord, ADMINISTRATOR};
use crate::broker::Broker;
use crate::protocol::AmqpError;

/// The node name the API reports (RabbitMQ's `rabbit@host`).
/// This node's name (`rabbit@host` unless `LEVERET_NODENAME` or `RABBITMQ_NODENAME` says).
fn node() -> &'static str {
    crate::broker::parameters::node_name()
}

pub use crate::broker::COMPATIBLE_VERSION;
pub use definitions::import_definitions;

/// What every handler sees.
#[derive(Debug)]
pub struct AdminState {
    /// The broker.
    pub broker: Arc<Broker>,
    /// Message rates, sampled every few seconds.
    pub rates: rates::Rates,
    /// The AMQP listener ports (for `/api/overview`).
    pub amqp_ports: Vec<u16>,
    /// The HTTP API's listener ports, as bound (for `/api/overview`).
    pub http_ports: Vec<u16>,
    /// Bounds on what one request may make the API hold in memory.
    pub limits: HttpLimits,
}

/// Bounds on what one HTTP request may make the API hold in memory.
#[derive(Debug, Clone, Copy)]
pub struct HttpLimits {
    /// Largest request body (RabbitMQ's `management.http.max_body_size`); a larger one gets
    /// 413 before it is read whole.
    pub max_body_size: usize,
    /// Payload bytes one `POST .../get` collects before it stops taking messages (Leveret's
    /// `management.http.max_get_payload`): the answer is built whole in memory.
    pub max_get_payload: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            max_body_size: 20 * 1024 * 1024,
            max_get_payload: 64 * 1024 * 1024,
        }
    }
}

type State = Arc<AdminState>;

/// An error response with RabbitMQ's body.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    body: Option<Value>,
    challenge: bool,
}

impl ApiError {
    fn new(status: StatusCode, error: &str, reason: impl Into<Value>) -> Self {
        Self {
            status,
            body: Some(json!({ "error": error, "reason": reason.into() })),
            challenge: false,
        }
    }

    /// 404 `Object Not Found`.
    pub fn not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "Object Not Found", "Not Found")
    }

    /// 400 `bad_request`.
    pub fn bad_request(reason: impl Into<Value>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", reason)
    }

    /// 401 `not_authorised` (RabbitMQ never answers 403).
    pub fn not_authorised(reason: impl Into<Value>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "not_authorised", reason)
    }

    fn login_failed() -> Self {
        Self {
            challenge: true,
            ..Self::new(StatusCode::UNAUTHORIZED, "not_authorized", "Login failed")
        }
    }

    fn no_credentials() -> Self {
        Self {
            status: StatusCode::UNAUTHORIZED,
            body: None,
            challenge: true,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = match self.body {
            Some(body) => (self.status, axum::Json(body)).into_response(),
            None => self.status.into_response(),
        };
        if self.challenge {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"RabbitMQ Management\""),
            );
        }
        response
    }
}

impl From<AdminError> for ApiError {
    fn from(error: AdminError) -> Self {
        match error {
            AdminError::NotFound(_) => Self::not_found(),
            AdminError::BadRequest(reason) => Self::bad_request(reason),
            AdminError::Store(e) => Self::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal_server_error",
                e.to_string(),
            ),
        }
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(error: crate::store::StoreError) -> Self {
        AdminError::Store(error).into()
    }
}

impl From<AmqpError> for ApiError {
    /// An AMQP refusal as RabbitMQ's API reports it: 403s are 401 `not_authorised`, 404s are
    /// `Object Not Found`, the rest `bad_request` with the text after the code name.
    fn from(error: AmqpError) -> Self {
        match error.code as u16 {
            403 => Self::not_authorised(error.text),
            404 => Self::not_found(),
            _ => {
                let reason = error
                    .text
                    .split_once(" - ")
                    .map_or(error.text.as_str(), |(_, r)| r)
                    .to_owned();
                Self::bad_request(reason)
            }
        }
    }
}

/// The authenticated user of a request.
#[derive(Debug)]
pub struct Auth(pub UserRecord);

const MANAGEMENT_TAGS: &[&str] = &[ADMINISTRATOR, "monitoring", "management", "policymaker"];

impl Auth {
    fn is_admin(&self) -> bool {
        self.0.has_tag(ADMINISTRATOR)
    }

    /// Administrators only.
    pub fn require_admin(&self) -> Result<(), ApiError> {
        if self.is_admin() {
            Ok(())
        } else {
            Err(ApiError::not_authorised("Not administrator user"))
        }
    }

    /// Whether this user may see everything (administrators and monitoring users).
    pub fn sees_all(&self) -> bool {
        self.is_admin() || self.0.has_tag("monitoring")
    }

    /// Whether this user may see (and, with permissions, act in) `vhost`.
    pub fn sees_vhost(&self, broker: &Broker, vhost: &str) -> bool {
        self.sees_all() || broker.access().may_open_vhost(&self.0.name, vhost)
    }

    /// The vhosts this user may see, in name order; `only` narrows them to one.
    pub fn visible_vhosts(
        &self,
        broker: &Broker,
        only: Option<&str>,
    ) -> Vec<Arc<crate::broker::VHost>> {
        broker
            .vhosts()
            .into_iter()
            .filter(|v| only.is_none_or(|o| o == v.name()) && self.sees_vhost(broker, v.name()))
            .collect()
    }

    /// Policy changes: administrators and policymakers with access to the vhost.
    pub fn require_policymaker(&self, broker: &Broker, vhost: &str) -> Result<(), ApiError> {
        if self.is_admin()
            || (self.0.has_tag("policymaker")
                && broker.access().may_open_vhost(&self.0.name, vhost))
        {
            Ok(())
        } else {
            Err(ApiError::not_authorised("Access refused."))
        }
    }

    /// Listing runtime parameters: administrators and policymakers (RabbitMQ's `policymaker`
    /// authorisation for `/api/parameters`).
    pub fn require_policymaker_anywhere(&self) -> Result<(), ApiError> {
        if self.is_admin() || self.0.has_tag("policymaker") {
            Ok(())
        } else {
            Err(ApiError::not_authorised("Not policymaker user"))
        }
    }

    /// Writes to queues, exchanges and bindings of a vhost: administrators, or users with
    /// access to it (their AMQP permissions are then checked per resource).
    pub fn require_vhost(&self, broker: &Broker, vhost: &str) -> Result<(), ApiError> {
        if self.is_admin() || broker.access().may_open_vhost(&self.0.name, vhost) {
            Ok(())
        } else {
            Err(ApiError::not_authorised("Access refused."))
        }
    }
}

impl FromRequestParts<State> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &State) -> Result<Self, ApiError> {
        let Some(value) = parts.headers.get(header::AUTHORIZATION) else {
            return Err(ApiError::no_credentials());
        };
        let credentials = value
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Basic "))
            .and_then(|b| {
                base64::engine::general_purpose::STANDARD
                    .decode(b.trim())
                    .ok()
            })
            .and_then(|raw| String::from_utf8(raw).ok());
        let Some((name, password)) = credentials.as_deref().and_then(|c| c.split_once(':')) else {
            return Err(ApiError::login_failed());
        };
        // Without a known peer, the request is not from loopback (loopback_users refused).
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(peer)| *peer)
            .or_else(|| {
                parts
                    .extensions
                    .get::<ConnectInfo<TlsPeer>>()
                    .map(|ConnectInfo(TlsPeer(peer))| *peer)
            });
        let loopback = peer.is_some_and(|p| p.ip().is_loopback());
        let user = state
            .broker
            .authenticate(name, password, loopback)
            .ok_or_else(ApiError::login_failed)?;
        if !MANAGEMENT_TAGS.iter().any(|t| user.has_tag(t)) {
            return Err(ApiError::not_authorised("Not management user"));
        }
        Ok(Auth(user))
    }
}

/// 201 when something was created, 204 when it already existed.
fn created(was_new: bool) -> StatusCode {
    if was_new {
        StatusCode::CREATED
    } else {
        StatusCode::NO_CONTENT
    }
}

async fn fallback() -> ApiError {
    ApiError::not_found()
}

/// The API's routes.
pub fn router(state: State) -> Router {
    let body_limit = axum::extract::DefaultBodyLimit::max(state.limits.max_body_size);
    Router::new()
        .merge(overview::routes())
        .merge(health::routes())
        .merge(definitions::routes())
        .merge(parameters::routes())
        .merge(objects::routes())
        .merge(bindings::routes())
        .merge(accounts::routes())
        .fallback(fallback)
        .layer(axum::middleware::from_fn(listing::shape))
        .layer(body_limit)
        .with_state(state)
}

/// Serve the management API on `listener` until `shutdown` turns true.
pub async fn serve(listener: TcpListener, state: State, shutdown: watch::Receiver<bool>) {
    serve_all(vec![listener], state, shutdown).await;
}

/// [`serve`] on several listeners (one per address family), with one rate sampler.
pub async fn serve_all(listeners: Vec<TcpListener>, state: State, shutdown: watch::Receiver<bool>) {
    let sampler = tokio::spawn(rates::sample(state.clone()));
    let servers = listeners.into_iter().map(|listener| {
        let app = router(state.clone()).into_make_service_with_connect_info::<SocketAddr>();
        let mut shutdown = shutdown.clone();
        async move {
            let result = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = shutdown.changed().await;
                })
                .await;
            if let Err(error) = result {
                tracing::error!(%error, "management API failed");
            }
        }
    });
    futures::future::join_all(servers).await;
    sampler.abort();
}

/// The Prometheus metrics text, as `GET /metrics` returns it.
pub fn render_metrics(state: &AdminState) -> String {
    metrics::render(state)
}

/// The peer address of a TLS connection to the HTTP API.
#[derive(Debug, Clone, Copy)]
struct TlsPeer(SocketAddr);

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, TlsListener>>
    for TlsPeer
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, TlsListener>) -> Self {
        Self(*stream.remote_addr())
    }
}

/// Accepted TLS connections for the HTTP API: handshakes run in their own tasks, so a slow
/// client cannot hold up the others.
struct TlsListener {
    accepted: tokio::sync::mpsc::Receiver<(
        tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
        SocketAddr,
    )>,
    local: SocketAddr,
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.accepted.recv().await {
            Some(accepted) => accepted,
            // The acceptor is gone (shutdown): nothing more will come.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.local)
    }
}

/// Serve the management API over TLS (RabbitMQ's `management.ssl.*`) until `shutdown`.
pub async fn serve_tls(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    state: State,
    mut shutdown: watch::Receiver<bool>,
) {
    let local = match listener.local_addr() {
        Ok(local) => local,
        Err(error) => {
            tracing::error!(%error, "management TLS listener has no address");
            return;
        }
    };
    let (tx, accepted) = tokio::sync::mpsc::channel(64);
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let accepting = tokio::spawn(async move {
        loop {
            let Ok((stream, peer)) = listener.accept().await else {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            };
            let (acceptor, tx) = (acceptor.clone(), tx.clone());
            tokio::spawn(async move {
                let handshake = tokio::time::timeout(
                    std::time::Duration::from_secs(10),
                    acceptor.accept(stream),
                );
                if let Ok(Ok(tls)) = handshake.await {
                    let _ = tx.send((tls, peer)).await;
                }
            });
        }
    });
    let app = router(state.clone()).into_make_service_with_connect_info::<TlsPeer>();
    let sampler = tokio::spawn(rates::sample(state));
    let result = axum::serve(TlsListener { accepted, local }, app)
        .with_graceful_shutdown(async move {
            let _ = shutdown.changed().await;
        })
        .await;
    accepting.abort();
    sampler.abort();
    if let Err(error) = result {
        tracing::error!(%error, "management API (TLS) failed");
    }
}

/// Serve Prometheus metrics (`GET /metrics`) on `listener` until `shutdown` turns true.
pub async fn serve_metrics(
    listener: TcpListener,
    state: State,
    mut shutdown: watch::Receiver<bool>,
) {
    let app = metrics::router(state);
    let result = axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = shutdown.changed().await;
        })
        .await;
    if let Err(error) = result {
        tracing::error!(%error, "metrics endpoint failed");
    }
}
