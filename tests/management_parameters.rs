//! The HTTP API's topic permissions, user limits, global and runtime parameters, cluster name,
//! per-vhost definitions, listener health checks and idle times, over real HTTP, with AMQP
//! clients where they take effect. Expected bodies, codes and texts are RabbitMQ 3.10.8's
//! (compared live by interop/differential/httpdiff.py).

mod common;

use std::time::Duration;

use common::http::{not_found, setup, Http};
use common::raw::RawClient;
use common::*;
use lapin::options::*;
use lapin::types::FieldTable;
use lapin::BasicProperties;
use leveret::protocol::{connection, AMQPValue, Method};
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;

fn bad_request(reason: Value) -> Value {
    json!({"error": "bad_request", "reason": reason})
}

#[tokio::test]
async fn topic_permissions_are_managed_over_http_and_apply_to_amqp_publishes() {
    let (b, api) = setup().await;
    assert_eq!(
        api.guest("GET", "/api/topic-permissions", None).await.body,
        json!([])
    );
    let grant = json!({"exchange": "amq.topic", "write": "^allowed\\.", "read": ".*"});
    let put = api
        .guest(
            "PUT",
            "/api/topic-permissions/%2F/guest",
            Some(grant.clone()),
        )
        .await;
    assert_eq!(put.status, 201);
    // A second exchange for the same user and vhost updates the resource: 204.
    let other = json!({"exchange": "x2", "write": "", "read": ""});
    let again = api
        .guest("PUT", "/api/topic-permissions/%2F/guest", Some(other))
        .await;
    assert_eq!(again.status, 204);
    let one = json!({"user": "guest", "vhost": "/", "exchange": "amq.topic", "write": "^allowed\\.", "read": ".*"});
    let listed = api
        .guest("GET", "/api/topic-permissions/%2F/guest", None)
        .await;
    assert_eq!(listed.status, 200);
    assert_eq!(listed.body[0], one, "{}", listed.body);
    for path in [
        "/api/topic-permissions",
        "/api/users/guest/topic-permissions",
        "/api/vhosts/%2F/topic-permissions",
    ] {
        let body = api.guest("GET", path, None).await.body;
        assert_eq!(body.as_array().map(Vec::len), Some(2), "{path}: {body}");
    }
    // RabbitMQ's refusals.
    let missing = api
        .guest(
            "PUT",
            "/api/topic-permissions/%2F/guest",
            Some(json!({"exchange": "amq.topic"})),
        )
        .await;
    assert_eq!(
        (missing.status, missing.body),
        (
            400,
            bad_request(json!("[{key_missing,write},{key_missing,read}]"))
        )
    );
    let nowhere = api
        .guest("PUT", "/api/topic-permissions/nowhere/guest", Some(grant))
        .await;
    assert_eq!(
        (nowhere.status, nowhere.body),
        (400, bad_request(json!("vhost_or_user_not_found")))
    );
    // Publishing to the topic exchange follows the write pattern.
    let (_conn, ch) = b.channel().await;
    publish(&ch, "amq.topic", "allowed.key", b"ok").await;
    let refused = ch
        .basic_publish(
            "amq.topic".into(),
            "other.key".into(),
            BasicPublishOptions::default(),
            b"no",
            BasicProperties::default(),
        )
        .await
        .unwrap()
        .await;
    let closed = ch
        .queue_declare("after".into(), Default::default(), FieldTable::default())
        .await;
    let error = refused
        .err()
        .or(closed.err())
        .expect("the publish is refused");
    let (code, text) = amqp_error(&error);
    assert_eq!(code, 403, "{text}");
    assert!(text.contains("other.key"), "{text}");
    // Deleting one exchange's entry, then all; 404 once the user has none in the vhost.
    let del = |path: &'static str| api.guest("DELETE", path, None);
    assert_eq!(del("/api/topic-permissions/%2F/guest/x2").await.status, 204);
    assert_eq!(del("/api/topic-permissions/%2F/guest").await.status, 204);
    let gone = api
        .guest("GET", "/api/topic-permissions/%2F/guest", None)
        .await;
    assert_eq!((gone.status, gone.body), (404, not_found()));
    assert_eq!(del("/api/topic-permissions/%2F/guest").await.status, 404);
    assert_eq!(del("/api/topic-permissions/%2F/guest/x2").await.status, 404);
}

#[tokio::test]
async fn user_limits_refuse_connections_and_channels_with_rabbitmqs_texts() {
    let (b, api) = setup().await;
    assert_eq!(
        api.guest("GET", "/api/user-limits", None).await.body,
        json!([])
    );
    let limit = |name: &str, value: Value| {
        let path = format!("/api/user-limits/guest/{name}");
        let api = &api;
        async move {
            api.guest("PUT", &path, Some(json!({ "value": value })))
                .await
        }
    };
    assert_eq!(limit("max-connections", json!(1)).await.status, 204);
    assert_eq!(limit("max-channels", json!(1)).await.status, 204);
    let both = json!([{"user": "guest", "value": {"max-channels": 1, "max-connections": 1}}]);
    assert_eq!(api.guest("GET", "/api/user-limits", None).await.body, both);
    assert_eq!(
        api.guest("GET", "/api/user-limits/guest", None).await.body,
        both
    );
    let user = api.guest("GET", "/api/users/guest", None).await.body;
    assert_eq!(user["limits"], both[0]["value"], "{user}");
    // Refusals, as RabbitMQ words them.
    let unknown = limit("max-queues", json!(20)).await;
    assert_eq!(
        unknown.body,
        bad_request(json!(
            "Unrecognised terms [{<<\"max-queues\">>,20}] in user-limits"
        ))
    );
    let text = limit("max-channels", json!("x")).await;
    assert_eq!(
        text.body,
        bad_request(json!(
            "max-channels should be a number, actually was <<\"x\">>"
        ))
    );
    let nobody = api
        .guest(
            "PUT",
            "/api/user-limits/nobody/max-channels",
            Some(json!({"value": 2})),
        )
        .await;
    assert_eq!(nobody.body, bad_request(json!(["no_such_user", "nobody"])));
    assert_eq!(
        api.guest("GET", "/api/user-limits/nobody", None)
            .await
            .status,
        404
    );
    // One connection is allowed, a second is refused at connection.open.
    let (conn, ch) = b.channel().await;
    let second = lapin::Connection::connect(&b.uri(), Default::default()).await;
    let (code, text) = amqp_error(&second.expect_err("the second connection is refused"));
    assert_eq!(
        (code, text.as_str()),
        (
            530,
            "NOT_ALLOWED - connection refused for user 'guest': user connection limit (1) is reached"
        )
    );
    // The connection's second channel closes the connection, as RabbitMQ does.
    let extra = conn.create_channel().await;
    let (code, text) = amqp_error(&extra.expect_err("the second channel is refused"));
    assert_eq!(
        (code, text.as_str()),
        (
            530,
            "NOT_ALLOWED - number of channels opened for user 'guest' has reached the maximum allowed user limit of (1)"
        )
    );
    assert!(!ch.status().connected());
    // Cleared, both are allowed again.
    for name in ["max-connections", "max-channels"] {
        let path = format!("/api/user-limits/guest/{name}");
        assert_eq!(api.guest("DELETE", &path, None).await.status, 204);
    }
    assert_eq!(
        api.guest("GET", "/api/user-limits", None).await.body,
        json!([])
    );
    let (conn, _ch) = b.channel().await;
    conn.create_channel().await.unwrap();
    b.connect().await;
}

/// `connection.start`'s `cluster_name`, read off the wire.
async fn cluster_name_in_connection_start(b: &TestBroker) -> String {
    let mut c = RawClient::connect(b).await;
    c.stream
        .write_all(leveret::protocol::codec::PROTOCOL_HEADER)
        .await
        .unwrap();
    match c.method().await {
        Method::Connection(connection::AMQPMethod::Start(start)) => {
            match start.server_properties.inner().get("cluster_name") {
                Some(AMQPValue::LongString(s)) => s.to_string(),
                other => panic!("cluster_name: {other:?}"),
            }
        }
        other => panic!("expected connection.start, got {other:?}"),
    }
}

/// The API served until told to stop; the handle ends once it has let go of the broker.
async fn stoppable_admin(
    b: &TestBroker,
) -> (
    std::net::SocketAddr,
    tokio::sync::watch::Sender<bool>,
    tokio::task::JoinHandle<()>,
) {
    let (listener, state) = admin_state(b).await;
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::watch::channel(false);
    let served = tokio::spawn(leveret::admin::serve(listener, state, rx));
    (addr, tx, served)
}

#[tokio::test]
async fn cluster_name_and_global_parameters_persist_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let b = TestBroker::start_in(dir.path()).await;
    let (addr, stop, served) = stoppable_admin(&b).await;
    let api = Http::new(addr);
    let node = leveret::broker::parameters::node_name();
    assert_eq!(
        api.guest("GET", "/api/cluster-name", None).await.body,
        json!({ "name": node })
    );
    assert_eq!(cluster_name_in_connection_start(&b).await, node);
    let put = api
        .guest("PUT", "/api/cluster-name", Some(json!({"name": "rusty"})))
        .await;
    assert_eq!(put.status, 204);
    let none = api.guest("PUT", "/api/cluster-name", Some(json!({}))).await;
    assert_eq!(none.body, bad_request(json!("[{key_missing,name}]")));
    let tags = json!({"value": {"region": "ca-central-1"}});
    let created = api
        .guest(
            "PUT",
            "/api/global-parameters/cluster_tags",
            Some(tags.clone()),
        )
        .await;
    assert_eq!(created.status, 201);
    let updated = api
        .guest("PUT", "/api/global-parameters/cluster_tags", Some(tags))
        .await;
    assert_eq!(updated.status, 204);
    let no_value = api
        .guest(
            "PUT",
            "/api/global-parameters/x",
            Some(json!({"name": "x"})),
        )
        .await;
    assert_eq!(no_value.body, bad_request(json!("[{key_missing,value}]")));
    // The API lets go of the broker, which restarts on the same data directory.
    stop.send(true).unwrap();
    served.await.unwrap();
    let b = b.restart_in(dir.path()).await;
    let api = Http::new(start_admin(&b).await);
    assert_eq!(
        api.guest("GET", "/api/cluster-name", None).await.body,
        json!({"name": "rusty"})
    );
    assert_eq!(cluster_name_in_connection_start(&b).await, "rusty");
    let all = api.guest("GET", "/api/global-parameters", None).await.body;
    let names: Vec<&str> = all
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    assert_eq!(
        names,
        ["cluster_name", "cluster_tags", "internal_cluster_id"]
    );
    assert_eq!(
        api.guest("GET", "/api/global-parameters/cluster_tags", None)
            .await
            .body,
        json!({"name": "cluster_tags", "value": {"region": "ca-central-1"}})
    );
    let path = "/api/global-parameters/cluster_tags";
    assert_eq!(api.guest("DELETE", path, None).await.status, 204);
    assert_eq!(api.guest("DELETE", path, None).await.status, 404);
    assert_eq!(api.guest("GET", path, None).await.status, 404);
}

#[tokio::test]
async fn runtime_parameters_are_the_vhost_limits_and_policies() {
    let (b, api) = setup().await;
    let limits = json!({"value": {"max-queues": 1}});
    let put = api
        .guest(
            "PUT",
            "/api/parameters/vhost-limits/%2F/limits",
            Some(limits),
        )
        .await;
    assert_eq!(put.status, 201);
    assert_eq!(
        api.guest("GET", "/api/vhost-limits/%2F", None).await.body,
        json!([{"vhost": "/", "value": {"max-queues": 1}}])
    );
    // The limit holds for AMQP clients.
    let (_conn, ch) = b.channel().await;
    declare(&ch, "first").await;
    let second = ch
        .queue_declare("second".into(), Default::default(), FieldTable::default())
        .await;
    let (code, _) = amqp_error(&second.expect_err("over the queue limit"));
    assert_eq!(code, 406);
    let policy = json!({"pattern": "^p", "definition": {"max-length": 3}});
    api.guest("PUT", "/api/policies/%2F/pol", Some(policy))
        .await;
    let param = json!({"value": {"max-queues": 1}, "vhost": "/", "component": "vhost-limits", "name": "limits"});
    // Policies are parameters too, but listed only under their own component.
    assert_eq!(
        api.guest("GET", "/api/parameters", None).await.body,
        json!([param])
    );
    for path in [
        "/api/parameters/vhost-limits",
        "/api/parameters/vhost-limits/%2F",
    ] {
        assert_eq!(
            api.guest("GET", path, None).await.body,
            json!([param]),
            "{path}"
        );
    }
    assert_eq!(
        api.guest("GET", "/api/parameters/vhost-limits/%2F/limits", None)
            .await
            .body,
        param
    );
    let policies = api.guest("GET", "/api/parameters/policy", None).await.body;
    assert_eq!(policies[0]["name"], json!("pol"), "{policies}");
    assert_eq!(
        policies[0]["value"],
        json!({"pattern": "^p", "definition": {"max-length": 3}, "priority": 0, "apply-to": "all"})
    );
    // Components of plugins Leveret does not have, and limits it does not know.
    let federation = api
        .guest(
            "PUT",
            "/api/parameters/federation-upstream/%2F/up",
            Some(json!({"value": {"uri": "amqp://x"}})),
        )
        .await;
    assert_eq!(
        federation.body,
        bad_request(json!(
            "Validation failed\n\ncomponent federation-upstream not found\n"
        ))
    );
    let bogus = api
        .guest(
            "PUT",
            "/api/parameters/vhost-limits/%2F/limits",
            Some(json!({"value": {"max-bogus": 5}})),
        )
        .await;
    assert_eq!(bogus.status, 400);
    let nowhere = api
        .guest(
            "PUT",
            "/api/parameters/vhost-limits/nowhere/limits",
            Some(json!({"value": {"max-queues": 5}})),
        )
        .await;
    assert_eq!(
        (nowhere.status, nowhere.body),
        (
            404,
            json!({"error": "not_found", "reason": "vhost_not_found"})
        )
    );
    let path = "/api/parameters/vhost-limits/%2F/limits";
    assert_eq!(api.guest("DELETE", path, None).await.status, 204);
    assert_eq!(api.guest("DELETE", path, None).await.status, 404);
    assert_eq!(
        api.guest("GET", "/api/vhost-limits/%2F", None).await.body,
        json!([])
    );
    let (_conn, ch) = b.channel().await;
    declare(&ch, "second").await;
}

#[tokio::test]
async fn a_vhosts_definitions_export_and_import_into_another_vhost() {
    let (b, api) = setup().await;
    let (_conn, ch) = b.channel().await;
    ch.queue_declare(
        "dq".into(),
        durable(),
        args(&[("x-max-length", AMQPValue::LongInt(5))]),
    )
    .await
    .unwrap();
    ch.exchange_declare(
        "dx".into(),
        lapin::ExchangeKind::Fanout,
        ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .unwrap();
    ch.queue_bind(
        "dq".into(),
        "dx".into(),
        "".into(),
        Default::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    let exported = api.guest("GET", "/api/definitions/%2F", None).await.body;
    let dq = exported["queues"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["name"] == json!("dq"))
        .cloned()
        .unwrap();
    // Without their vhost, so the document imports anywhere.
    assert_eq!(
        dq,
        json!({"name": "dq", "durable": true, "auto_delete": false, "arguments": {"x-max-length": 5}, "type": "classic"})
    );
    assert!(
        exported["exchanges"][0].get("vhost").is_none(),
        "{exported}"
    );
    assert_eq!(
        api.guest("GET", "/api/definitions/nowhere", None)
            .await
            .body,
        bad_request(json!("vhost_not_found"))
    );
    api.guest("PUT", "/api/vhosts/copy", Some(json!({}))).await;
    let import = api
        .guest("POST", "/api/definitions/copy", Some(exported))
        .await;
    assert_eq!(import.status, 204);
    let q = api.guest("GET", "/api/queues/copy/dq", None).await.body;
    assert_eq!(q["arguments"], json!({"x-max-length": 5}), "{q}");
    let bindings = api
        .guest("GET", "/api/exchanges/copy/dx/bindings/source", None)
        .await
        .body;
    assert_eq!(bindings[0]["destination"], json!("dq"), "{bindings}");
    // The whole broker's export carries the parameters too.
    api.guest(
        "PUT",
        "/api/vhost-limits/copy/max-queues",
        Some(json!({"value": 9})),
    )
    .await;
    let all = api.guest("GET", "/api/definitions", None).await.body;
    assert_eq!(
        all["parameters"],
        json!([{"value": {"max-queues": 9}, "vhost": "copy", "component": "vhost-limits", "name": "limits"}])
    );
    let ids: Vec<&str> = all["global_parameters"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    assert_eq!(ids, ["internal_cluster_id"]);
}

#[tokio::test]
async fn listener_health_checks_users_without_permissions_and_bulk_deletion() {
    let (b, api) = setup().await;
    let port = b.addr.port();
    assert_eq!(
        api.guest(
            "GET",
            &format!("/api/health/checks/port-listener/{port}"),
            None
        )
        .await
        .body,
        json!({"status": "ok", "port": port})
    );
    let missing = api
        .guest("GET", "/api/health/checks/port-listener/1", None)
        .await;
    assert_eq!(missing.status, 503);
    assert_eq!(missing.body["missing"], json!(1), "{}", missing.body);
    assert_eq!(
        api.guest("GET", "/api/health/checks/port-listener/abc", None)
            .await
            .body,
        bad_request(json!("Invalid port"))
    );
    assert_eq!(
        api.guest("GET", "/api/health/checks/protocol-listener/amqp", None)
            .await
            .body,
        json!({"status": "ok", "protocol": "amqp"})
    );
    let mqtt = api
        .guest("GET", "/api/health/checks/protocol-listener/mqtt", None)
        .await;
    assert_eq!(
        (mqtt.status, &mqtt.body["reason"]),
        (503, &json!("No active listener"))
    );
    for path in [
        "/api/health/checks/virtual-hosts",
        "/api/health/checks/node-is-quorum-critical",
        "/api/health/checks/node-is-mirror-sync-critical",
        "/api/health/checks/certificate-expiration/1/months",
    ] {
        let r = api.guest("GET", path, None).await;
        assert_eq!((r.status, &r.body["status"]), (200, &json!("ok")), "{path}");
    }
    assert_eq!(
        api.guest("POST", "/api/rebalance/queues", None)
            .await
            .status,
        204
    );
    for name in ["lonely-1", "lonely-2"] {
        let path = format!("/api/users/{name}");
        api.guest("PUT", &path, Some(json!({"password": "p", "tags": ""})))
            .await;
    }
    let without = api
        .guest("GET", "/api/users/without-permissions", None)
        .await
        .body;
    let names: Vec<&str> = without
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|u| u["name"].as_str())
        .collect();
    assert_eq!(names, ["lonely-1", "lonely-2"]);
    // Deleted in order; an unknown user stops there with 400.
    let bulk = api
        .guest(
            "POST",
            "/api/users/bulk-delete",
            Some(json!({"users": ["lonely-1", "nobody", "lonely-2"]})),
        )
        .await;
    assert_eq!(bulk.body, bad_request(json!(["no_such_user", "nobody"])));
    assert_eq!(
        api.guest("GET", "/api/users/lonely-1", None).await.status,
        404
    );
    assert_eq!(
        api.guest("GET", "/api/users/lonely-2", None).await.status,
        200
    );
    let empty = api
        .guest("POST", "/api/users/bulk-delete", Some(json!({})))
        .await;
    assert_eq!(empty.body, bad_request(json!("[{key_missing,users}]")));
}

#[tokio::test]
async fn user_connections_are_listed_and_closed_by_user_name() {
    let (b, api) = setup().await;
    let (conn, ch) = b.channel().await;
    let listed = api
        .guest("GET", "/api/connections/username/guest", None)
        .await
        .body;
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed}");
    assert_eq!(listed[0]["user"], json!("guest"));
    // The connection's channels, and one channel by name, with its consumers.
    let name = listed[0]["name"].as_str().unwrap().to_owned();
    let encoded = leveret::admin::render::percent_encode(&name);
    let channels = api
        .guest("GET", &format!("/api/connections/{encoded}/channels"), None)
        .await
        .body;
    assert_eq!(channels[0]["number"], json!(1), "{channels}");
    let channel_name = channels[0]["name"].as_str().unwrap().to_owned();
    assert_eq!(channel_name, format!("{name} (1)"));
    let one = api
        .guest(
            "GET",
            &format!(
                "/api/channels/{}",
                leveret::admin::render::percent_encode(&channel_name)
            ),
            None,
        )
        .await;
    assert_eq!(one.status, 200, "{}", one.body);
    assert_eq!(one.body["consumer_details"], json!([]));
    assert_eq!(one.body["vhost"], json!("/"));
    assert_eq!(
        api.guest("GET", "/api/channels/nothing%20(1)", None)
            .await
            .status,
        404
    );
    assert_eq!(
        api.guest("GET", "/api/connections/username/nobody", None)
            .await
            .body,
        json!([])
    );
    let closed = api
        .guest("DELETE", "/api/connections/username/guest", None)
        .await;
    assert_eq!(closed.status, 204);
    let after = ch
        .queue_declare("after".into(), Default::default(), FieldTable::default())
        .await;
    assert!(after.is_err() || !conn.status().connected());
}

#[tokio::test]
async fn quiet_queues_and_channels_show_idle_since_and_quorum_queues_their_leader() {
    let b = TestBroker::start().await;
    let (listener, state) = admin_state(&b).await;
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(leveret::admin::serve(listener, state.clone(), rx));
    let sampler = tokio::spawn(leveret::admin::rates::sample(state));
    let api = Http::new(addr);
    let (_conn, ch) = b.channel().await;
    declare(&ch, "quiet").await;
    ch.queue_declare(
        "qq".into(),
        durable(),
        args(&[("x-queue-type", long("quorum"))]),
    )
    .await
    .unwrap();
    publish(&ch, "", "quiet", b"x").await;
    // Active: no idle_since (RabbitMQ leaves the field out).
    let q = api.guest("GET", "/api/queues/%2F/quiet", None).await.body;
    assert!(q.get("idle_since").is_none(), "{q}");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let (q, channel) = loop {
        let q = api.guest("GET", "/api/queues/%2F/quiet", None).await.body;
        let channels = api.guest("GET", "/api/channels", None).await.body;
        if (q.get("idle_since").is_some() && channels[0].get("idle_since").is_some())
            || std::time::Instant::now() > deadline
        {
            break (q, channels[0].clone());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    for (what, object) in [("queue", &q), ("channel", &channel)] {
        let idle = object["idle_since"].as_str().unwrap_or_default();
        // 2026-12-03T15:59:11.193+00:00
        assert_eq!(idle.len(), 29, "{what}: {object}");
        assert!(
            idle.ends_with("+00:00") && idle.as_bytes()[10] == b'T',
            "{what}: {idle}"
        );
    }
    let qq = api.guest("GET", "/api/queues/%2F/qq", None).await.body;
    let node = leveret::broker::parameters::node_name();
    assert_eq!(qq["type"], json!("quorum"));
    assert_eq!(qq["leader"], json!(node));
    assert_eq!(qq["members"], json!([node]));
    assert_eq!(
        api.guest("GET", "/api/queues/%2F/quiet", None).await.body["type"],
        json!("classic")
    );
    sampler.abort();
    drop(tx);
}
