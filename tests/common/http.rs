//! The HTTP management API's test client: real HTTP (ureq) to an in-process broker's API.

use std::net::SocketAddr;

use serde_json::{json, Value};

use super::{start_admin, TestBroker};

pub struct Http {
    pub base: String,
    pub agent: ureq::Agent,
}

pub struct Reply {
    pub status: u16,
    pub body: Value,
    pub headers: Vec<(String, String)>,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

impl Http {
    pub fn new(addr: SocketAddr) -> Self {
        Self {
            base: format!("http://{addr}"),
            agent: ureq::Agent::config_builder()
                .http_status_as_error(false)
                .build()
                .into(),
        }
    }

    /// A request as `user:pass` (None: no credentials).
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        auth: Option<(&str, &str)>,
        body: Option<Value>,
    ) -> Reply {
        let agent = self.agent.clone();
        let url = format!("{}{path}", self.base);
        let method = method.to_owned();
        let auth = auth.map(|(u, p)| {
            use base64::Engine as _;
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
            )
        });
        tokio::task::spawn_blocking(move || {
            let builder = ureq::http::Request::builder()
                .method(method.as_str())
                .uri(&url);
            let builder = match &auth {
                Some(a) => builder.header("Authorization", a),
                None => builder,
            };
            let text = body.map(|b| b.to_string()).unwrap_or_default();
            let request = builder.body(text).unwrap();
            let mut response = agent.run(request).expect("HTTP");
            let status = response.status().as_u16();
            let headers = response
                .headers()
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_owned()))
                .collect();
            let text = response.body_mut().read_to_string().unwrap_or_default();
            Reply {
                status,
                body: serde_json::from_str(&text).unwrap_or(Value::Null),
                headers,
            }
        })
        .await
        .unwrap()
    }

    pub async fn guest(&self, method: &str, path: &str, body: Option<Value>) -> Reply {
        self.call(method, path, Some(("guest", "guest")), body)
            .await
    }
}

/// A broker with its HTTP API, and a client for it.
pub async fn setup() -> (TestBroker, Http) {
    let b = TestBroker::start().await;
    let addr = start_admin(&b).await;
    (b, Http::new(addr))
}

/// RabbitMQ's 404 body.
pub fn not_found() -> Value {
    json!({"error": "Object Not Found", "reason": "Not Found"})
}
