//! Definitions exported by a real RabbitMQ 3.10.8 (interop/fixtures, made by
//! interop/make-definitions-fixture.sh) import into Leveret, and Leveret exports them back
//! the same: users (with RabbitMQ's password hashes), vhosts and limits, permissions, topic
//! permissions, policies, queues, exchanges and bindings.

mod common;

use common::*;
use serde_json::{json, Value};

const FIXTURE: &str = include_str!("../interop/fixtures/rabbitmq-3.10.8-definitions.json");

/// One request to the API as guest: (status, JSON body).
fn request(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> (u16, Value) {
    use base64::Engine as _;
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let auth = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("guest:guest")
    );
    let url = format!("http://{addr}{path}");
    let mut response = match (method, body) {
        ("POST", Some(body)) => agent
            .post(&url)
            .header("Authorization", &auth)
            .send_json(body),
        _ => agent.get(&url).header("Authorization", &auth).call(),
    }
    .unwrap();
    let status = response.status().as_u16();
    (
        status,
        response.body_mut().read_json().unwrap_or(Value::Null),
    )
}

/// The comparable part of a definitions list: chosen fields of each item, sorted.
fn normalised(defs: &Value, key: &str, fields: &[&str]) -> Vec<String> {
    let mut items: Vec<String> = defs[key]
        .as_array()
        .unwrap_or(&Vec::new())
        .iter()
        .map(|item| {
            let mut picked = serde_json::Map::new();
            for f in fields {
                let mut v = item.get(*f).cloned().unwrap_or(Value::Null);
                if let Value::Array(a) = &mut v {
                    a.sort_by_key(|x| x.to_string());
                }
                picked.insert((*f).to_owned(), v);
            }
            Value::Object(picked).to_string()
        })
        .collect();
    items.sort();
    items
}

#[tokio::test]
async fn rabbitmq_definitions_import_and_export_unchanged() {
    let b = TestBroker::start().await;
    let addr = start_admin(&b).await;
    let rabbit: Value = serde_json::from_str(FIXTURE).unwrap();
    let status = tokio::task::spawn_blocking({
        let rabbit = rabbit.clone();
        move || request(addr, "POST", "/api/definitions", Some(&rabbit)).0
    })
    .await
    .unwrap();
    assert_eq!(status, 204);
    let ours =
        tokio::task::spawn_blocking(move || request(addr, "GET", "/api/definitions", None).1)
            .await
            .unwrap();
    let checks: &[(&str, &[&str])] = &[
        (
            "users",
            &["name", "password_hash", "hashing_algorithm", "tags"],
        ),
        ("vhosts", &["name", "limits"]),
        (
            "permissions",
            &["user", "vhost", "configure", "write", "read"],
        ),
        (
            "topic_permissions",
            &["user", "vhost", "exchange", "write", "read"],
        ),
        (
            "policies",
            &[
                "vhost",
                "name",
                "pattern",
                "apply-to",
                "definition",
                "priority",
            ],
        ),
        (
            "queues",
            &["name", "vhost", "durable", "auto_delete", "arguments"],
        ),
        (
            "exchanges",
            &[
                "name",
                "vhost",
                "type",
                "durable",
                "auto_delete",
                "arguments",
            ],
        ),
        (
            "bindings",
            &[
                "source",
                "vhost",
                "destination",
                "destination_type",
                "routing_key",
                "arguments",
            ],
        ),
    ];
    for (key, fields) in checks {
        assert_eq!(
            normalised(&ours, key, fields),
            normalised(&rabbit, key, fields),
            "{key}"
        );
    }
    // RabbitMQ's password hashes work for logins, and the imported topology routes.
    let uri = format!("amqp://fx-admin:secret@{}/fixture", b.addr);
    let conn = lapin::Connection::connect(&uri, Default::default())
        .await
        .expect("fx-admin logs in with its RabbitMQ password");
    let ch = conn.create_channel().await.unwrap();
    ch.confirm_select(Default::default()).await.unwrap();
    let props = lapin::BasicProperties::default();
    assert!(publish_confirmed(&ch, "routed", "order.1", b"o", props.clone()).await);
    // The policy's alternate exchange takes what "routed" cannot route.
    assert!(publish_confirmed(&ch, "routed", "nothing.here", b"n", props).await);
    assert_eq!(message_count(&ch, "orders").await, 1);
    assert_eq!(message_count(&ch, "mon-events").await, 1);
    assert_eq!(
        json!(b
            .broker
            .vhost("fixture")
            .unwrap()
            .meta()
            .limit("max-queues")),
        json!(200)
    );
}
