//! The HTTP API client leveretctl speaks through, and how a command fails (exit codes).

use std::time::Duration;

use base64::Engine as _;
use serde_json::{json, Value};

use super::Cli;
/// How a command failed, with its exit code.
pub(super) enum Failure {
    Usage(String),
    Unreachable(String),
    Refused(String),
}

pub(super) struct Api {
    pub(super) base: String,
    pub(super) auth: String,
    pub(super) agent: ureq::Agent,
}

pub(super) fn encode(segment: &str) -> String {
    leveret::admin::render::percent_encode(segment)
}

impl Api {
    pub(super) fn new(cli: &Cli) -> Self {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
            .build()
            .into();
        let credentials = format!("{}:{}", cli.user, cli.password);
        Self {
            base: format!("http://{}:{}", cli.host, cli.port),
            auth: format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(credentials)
            ),
            agent,
        }
    }

    pub(super) fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, Failure> {
        let url = format!("{}{path}", self.base);
        let unreachable = |e: ureq::Error| {
            Failure::Unreachable(format!("unable to reach the broker at {}: {e}", self.base))
        };
        let mut response = match (method, body) {
            ("GET", _) => self
                .agent
                .get(&url)
                .header("Authorization", &self.auth)
                .call(),
            ("DELETE", _) => self
                .agent
                .delete(&url)
                .header("Authorization", &self.auth)
                .call(),
            ("POST", Some(b)) => self
                .agent
                .post(&url)
                .header("Authorization", &self.auth)
                .send_json(b),
            (_, b) => self
                .agent
                .put(&url)
                .header("Authorization", &self.auth)
                .send_json(b.unwrap_or_else(|| json!({}))),
        }
        .map_err(unreachable)?;
        let status = response.status().as_u16();
        let text = response.body_mut().read_to_string().unwrap_or_default();
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        match status {
            200..=299 => Ok(value),
            401 => Err(Failure::Refused(format!(
                "access refused: {}",
                value["reason"].as_str().unwrap_or("authentication failed")
            ))),
            404 => Err(Failure::Refused(format!("not found: {path}"))),
            _ => Err(Failure::Refused(
                value["reason"]
                    .as_str()
                    .map(str::to_owned)
                    .unwrap_or_else(|| format!("HTTP {status}: {text}")),
            )),
        }
    }

    pub(super) fn get(&self, path: &str) -> Result<Value, Failure> {
        self.call("GET", path, None)
    }
}
