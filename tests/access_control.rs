//! Users, vhosts and permissions through lapin: every operation/permission pair of RabbitMQ's
//! matrix, with the 403/530 texts recorded from RabbitMQ 3.10.8
//! (interop/rabbitmq-3.10.8-access-control.md). User `u` has configure `^c-`, write `^w-` and
//! read `^r-` on vhost `v`, so a name's prefix says which permission it passes.

mod common;

use common::*;
use lapin::options::*;
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection};
use leveret::broker::access::{PermissionRecord, TopicPermissionRecord, UserRecord};

fn grant(user: &str, vhost: &str, c: &str, w: &str, r: &str) -> PermissionRecord {
    PermissionRecord {
        user: user.into(),
        vhost: vhost.into(),
        configure: c.into(),
        write: w.into(),
        read: r.into(),
    }
}

/// Add user `name` (password `pw`) with `tags` and these permissions on vhost `v`.
fn add_user(b: &TestBroker, name: &str, tags: &[&str], (c, w, r): (&str, &str, &str)) {
    let tags = tags.iter().map(|t| (*t).to_owned()).collect();
    b.broker
        .access()
        .put_user(UserRecord::new(name, Some("pw"), tags))
        .unwrap();
    b.broker.set_permissions(grant(name, "v", c, w, r)).unwrap();
}

/// A broker with vhost `v`, objects made by guest, and user `u` (password `pw`).
async fn setup() -> (TestBroker, Connection) {
    let b = TestBroker::start().await;
    b.broker.add_vhost("v").unwrap();
    b.broker
        .set_permissions(grant("guest", "v", ".*", ".*", ".*"))
        .unwrap();
    add_user(&b, "u", &[], ("^c-", "^w-", "^r-"));
    let admin = connect(&b, "guest", "guest", "v").await.unwrap();
    let ch = admin.create_channel().await.unwrap();
    for x in ["c-x", "w-x", "r-x", "x-none", "x-none2"] {
        ch.exchange_declare(
            x.into(),
            lapin::ExchangeKind::Direct,
            ExchangeDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    }
    for q in ["c-q", "w-q", "r-q", "q-none"] {
        declare(&ch, q).await;
    }
    publish(&ch, "", "r-q", b"m").await;
    (b, admin)
}

async fn connect(
    b: &TestBroker,
    user: &str,
    pass: &str,
    vhost: &str,
) -> Result<Connection, lapin::Error> {
    let uri = format!("amqp://{user}:{pass}@{}/{vhost}", b.addr);
    Connection::connect(&uri, Default::default()).await
}

/// The code and text of the server's `connection.close`, once it comes.
fn close_reason(conn: &Connection) -> impl std::future::Future<Output = (u16, String)> + use<'_> {
    use futures::StreamExt;
    let mut events = conn.events_listener();
    async move {
        let wait = async {
            while let Some(event) = events.next().await {
                if let lapin::Event::Error(e) = event {
                    return amqp_error(&e);
                }
            }
            panic!("no error event");
        };
        tokio::time::timeout(std::time::Duration::from_secs(5), wait)
            .await
            .expect("closed in time")
    }
}

#[derive(Debug, Clone, Copy)]
enum Op<'a> {
    DeclareExchange(&'a str),
    DeclareExchangePassive(&'a str),
    DeleteExchange(&'a str),
    DeclareQueue(&'a str),
    DeclareQueuePassive(&'a str),
    DeleteQueue(&'a str),
    Purge(&'a str),
    BindQueue(&'a str, &'a str),
    UnbindQueue(&'a str, &'a str),
    BindExchange(&'a str, &'a str),
    UnbindExchange(&'a str, &'a str),
    Publish(&'a str),
    Get(&'a str),
    Consume(&'a str),
}

async fn run(ch: &Channel, op: Op<'_>) -> Result<(), lapin::Error> {
    let no = FieldTable::default;
    let direct = lapin::ExchangeKind::Direct;
    match op {
        Op::DeclareExchange(x) => ch
            .exchange_declare(x.into(), direct, Default::default(), no())
            .await
            .map(drop),
        Op::DeclareExchangePassive(x) => ch
            .exchange_declare(
                x.into(),
                direct,
                ExchangeDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                no(),
            )
            .await
            .map(drop),
        Op::DeleteExchange(x) => ch.exchange_delete(x.into(), Default::default()).await,
        Op::DeclareQueue(q) => ch
            .queue_declare(q.into(), Default::default(), no())
            .await
            .map(drop),
        Op::DeclareQueuePassive(q) => ch
            .queue_declare(
                q.into(),
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                no(),
            )
            .await
            .map(drop),
        Op::DeleteQueue(q) => ch
            .queue_delete(q.into(), Default::default())
            .await
            .map(drop),
        Op::Purge(q) => ch.queue_purge(q.into(), Default::default()).await.map(drop),
        Op::BindQueue(q, x) => {
            ch.queue_bind(q.into(), x.into(), "k".into(), Default::default(), no())
                .await
        }
        Op::UnbindQueue(q, x) => ch.queue_unbind(q.into(), x.into(), "k".into(), no()).await,
        Op::BindExchange(dest, src) => {
            ch.exchange_bind(
                dest.into(),
                src.into(),
                "k".into(),
                Default::default(),
                no(),
            )
            .await
        }
        Op::UnbindExchange(dest, src) => {
            ch.exchange_unbind(
                dest.into(),
                src.into(),
                "k".into(),
                Default::default(),
                no(),
            )
            .await
        }
        Op::Publish(x) => {
            ch.confirm_select(Default::default()).await?;
            ch.basic_publish(
                x.into(),
                "w-q".into(),
                Default::default(),
                b"m",
                BasicProperties::default(),
            )
            .await?
            .await
            .map(drop)
        }
        Op::Get(q) => ch
            .basic_get(q.into(), BasicGetOptions { no_ack: true })
            .await
            .map(drop),
        Op::Consume(q) => ch
            .basic_consume(q.into(), "".into(), Default::default(), no())
            .await
            .map(drop),
    }
}

/// `Ok(())`, or a channel close's code and text.
type Outcome = Result<(), (u16, String)>;

/// Run `op` as `conn`'s user on a fresh channel.
async fn attempt(conn: &Connection, op: Op<'_>) -> Outcome {
    let ch = conn.create_channel().await.expect("channel");
    run(&ch, op).await.map_err(|e| amqp_error(&e))
}

fn refused(kind: &str, name: &str) -> Result<(), (u16, String)> {
    Err((
        403,
        format!("ACCESS_REFUSED - access to {kind} '{name}' in vhost 'v' refused for user 'u'"),
    ))
}

#[tokio::test]
async fn every_operation_checks_its_permission_with_rabbitmq_texts() {
    let (b, _admin) = setup().await;
    let u = connect(&b, "u", "pw", "v").await.expect("u opens v");
    let default_refused = Err((
        403,
        "ACCESS_REFUSED - operation not permitted on the default exchange".to_owned(),
    ));
    let not_found =
        |kind: &str, name: &str| Err((404, format!("NOT_FOUND - no {kind} '{name}' in vhost 'v'")));
    let cases: Vec<(Op, Outcome)> = vec![
        // configure
        (Op::DeclareExchange("c-new"), Ok(())),
        (Op::DeclareExchange("x-foo"), refused("exchange", "x-foo")),
        (Op::DeclareExchange("x-none"), refused("exchange", "x-none")),
        (
            Op::DeclareExchange("amq.foo"),
            refused("exchange", "amq.foo"),
        ),
        (Op::DeclareExchange(""), default_refused.clone()),
        (Op::DeclareExchangePassive("x-none"), Ok(())),
        (
            Op::DeclareExchangePassive("x-missing"),
            not_found("exchange", "x-missing"),
        ),
        (Op::DeleteExchange("x-none"), refused("exchange", "x-none")),
        (
            Op::DeleteExchange("x-missing"),
            refused("exchange", "x-missing"),
        ),
        (Op::DeleteExchange("c-missing"), Ok(())),
        (Op::DeclareQueue("c-newq"), Ok(())),
        (Op::DeclareQueue("q-foo"), refused("queue", "q-foo")),
        (Op::DeclareQueue("q-none"), refused("queue", "q-none")),
        (
            Op::DeclareQueue("amq.foo"),
            Err((
                403,
                "ACCESS_REFUSED - queue name 'amq.foo' contains reserved prefix 'amq.*'".into(),
            )),
        ),
        (Op::DeclareQueuePassive("q-none"), Ok(())),
        (
            Op::DeclareQueuePassive("q-missing"),
            not_found("queue", "q-missing"),
        ),
        (Op::DeleteQueue("q-none"), refused("queue", "q-none")),
        (Op::DeleteQueue("q-missing"), refused("queue", "q-missing")),
        (Op::DeleteQueue("c-missing"), Ok(())),
        // read
        (Op::Purge("q-none"), refused("queue", "q-none")),
        (Op::Purge("c-q"), refused("queue", "c-q")),
        (Op::Purge("r-missing"), not_found("queue", "r-missing")),
        (Op::Get("r-q"), Ok(())),
        (Op::Get("c-q"), refused("queue", "c-q")),
        (Op::Get("q-missing"), refused("queue", "q-missing")),
        (Op::Get("r-missing"), not_found("queue", "r-missing")),
        (Op::Consume("r-q"), Ok(())),
        (Op::Consume("w-q"), refused("queue", "w-q")),
        (Op::Consume("r-missing"), not_found("queue", "r-missing")),
        // write (queue) then read (exchange)
        (Op::BindQueue("w-q", "r-x"), Ok(())),
        (Op::BindQueue("q-none", "r-x"), refused("queue", "q-none")),
        (
            Op::BindQueue("w-q", "x-none"),
            refused("exchange", "x-none"),
        ),
        (
            Op::BindQueue("q-none", "x-none"),
            refused("queue", "q-none"),
        ),
        (Op::BindQueue("w-q", ""), default_refused.clone()),
        (Op::BindQueue("q-none", ""), refused("queue", "q-none")),
        (
            Op::BindQueue("w-missing", "r-x"),
            not_found("queue", "w-missing"),
        ),
        (
            Op::BindQueue("w-q", "r-missing"),
            not_found("exchange", "r-missing"),
        ),
        (Op::UnbindQueue("w-q", "r-x"), Ok(())),
        (Op::UnbindQueue("q-none", "r-x"), refused("queue", "q-none")),
        (
            Op::UnbindQueue("w-q", "x-none"),
            refused("exchange", "x-none"),
        ),
        // write (destination) then read (source)
        (Op::BindExchange("w-x", "r-x"), Ok(())),
        (
            Op::BindExchange("x-none", "r-x"),
            refused("exchange", "x-none"),
        ),
        (
            Op::BindExchange("w-x", "x-none"),
            refused("exchange", "x-none"),
        ),
        (
            Op::BindExchange("x-none", "x-none2"),
            refused("exchange", "x-none"),
        ),
        (
            Op::BindExchange("x-none", ""),
            refused("exchange", "x-none"),
        ),
        (Op::BindExchange("w-x", ""), default_refused.clone()),
        (Op::UnbindExchange("w-x", "r-x"), Ok(())),
        (
            Op::UnbindExchange("w-x", "x-none"),
            refused("exchange", "x-none"),
        ),
        // write (publish)
        (Op::Publish("w-x"), Ok(())),
        (Op::Publish("x-none"), refused("exchange", "x-none")),
        (Op::Publish("r-x"), refused("exchange", "r-x")),
        (Op::Publish(""), refused("exchange", "amq.default")),
        (Op::Publish("amq.direct"), refused("exchange", "amq.direct")),
        (Op::Publish("w-missing"), not_found("exchange", "w-missing")),
        (Op::Publish("x-missing"), refused("exchange", "x-missing")),
    ];
    let mut failures = Vec::new();
    for (op, expected) in cases {
        let got = attempt(&u, op).await;
        if got != expected {
            failures.push(format!("{op:?}: expected {expected:?}, got {got:?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(
        u.status().connected(),
        "403s close channels, not the connection"
    );
}

#[tokio::test]
async fn dead_letter_and_alternate_exchanges_need_read_and_write_when_new() {
    let (b, _admin) = setup().await;
    add_user(&b, "u2", &[], ("^c-", "^w-", "^(r|c)-"));
    let u = connect(&b, "u", "pw", "v").await.unwrap();
    let u2 = connect(&b, "u2", "pw", "v").await.unwrap();
    let dlq = |ch: Channel, name: &'static str, dlx: &'static str| async move {
        ch.queue_declare(
            name.into(),
            Default::default(),
            args(&[("x-dead-letter-exchange", long(dlx))]),
        )
        .await
        .map(drop)
        .map_err(|e| amqp_error(&e))
    };
    let ae = |ch: Channel, name: &'static str, ae: &'static str| async move {
        ch.exchange_declare(
            name.into(),
            lapin::ExchangeKind::Direct,
            Default::default(),
            args(&[("alternate-exchange", long(ae))]),
        )
        .await
        .map(drop)
        .map_err(|e| amqp_error(&e))
    };
    let refused_u2 = |kind: &str, name: &str| {
        Err::<(), _>((
            403,
            format!(
                "ACCESS_REFUSED - access to {kind} '{name}' in vhost 'v' refused for user 'u2'"
            ),
        ))
    };
    let ch = || async { u.create_channel().await.unwrap() };
    let ch2 = || async { u2.create_channel().await.unwrap() };
    assert_eq!(
        dlq(ch().await, "c-dlq", "w-x").await,
        refused("queue", "c-dlq")
    );
    assert_eq!(
        dlq(ch2().await, "c-dlq3", "x-none").await,
        refused_u2("exchange", "x-none")
    );
    assert_eq!(dlq(ch2().await, "c-dlq4", "w-x").await, Ok(()));
    assert_eq!(
        dlq(ch2().await, "c-dlq5", "").await,
        refused_u2("exchange", "amq.default")
    );
    // A redeclare is not checked again.
    assert_eq!(dlq(ch().await, "c-dlq4", "w-x").await, Ok(()));
    assert_eq!(
        ae(ch().await, "c-ax", "w-x").await,
        refused("exchange", "c-ax")
    );
    assert_eq!(
        ae(ch2().await, "c-ax3", "x-none").await,
        refused_u2("exchange", "x-none")
    );
    assert_eq!(ae(ch2().await, "c-ax4", "w-missing").await, Ok(()));
}

#[tokio::test]
async fn vhost_access_needs_a_permission_record() {
    let (b, _admin) = setup().await;
    let access = b.broker.access();
    access
        .put_user(UserRecord::new("noperm", Some("pw"), vec![]))
        .unwrap();
    let err = connect(&b, "noperm", "pw", "v").await.unwrap_err();
    assert_eq!(
        amqp_error(&err),
        (
            530,
            "NOT_ALLOWED - access to vhost 'v' refused for user 'noperm'".into()
        )
    );
    let err = connect(&b, "u", "pw", "%2f").await.unwrap_err();
    assert_eq!(
        amqp_error(&err),
        (
            530,
            "NOT_ALLOWED - access to vhost '/' refused for user 'u'".into()
        )
    );
    // Three empty regexes still open the vhost; every operation is then refused.
    b.broker
        .set_permissions(grant("noperm", "v", "", "", ""))
        .unwrap();
    let c = connect(&b, "noperm", "pw", "v").await.expect("opens");
    assert_eq!(
        attempt(&c, Op::Get("r-q")).await,
        Err((
            403,
            "ACCESS_REFUSED - access to queue 'r-q' in vhost 'v' refused for user 'noperm'".into()
        ))
    );
    // Wrong passwords and blank ones are refused.
    assert!(connect(&b, "u", "wrong", "v").await.is_err());
    access.change_password("u", None).unwrap();
    assert!(connect(&b, "u", "", "v").await.is_err());
}

#[tokio::test]
async fn permission_changes_apply_to_open_channels_at_once() {
    let (b, _admin) = setup().await;
    let u = connect(&b, "u", "pw", "v").await.unwrap();
    let ch = u.create_channel().await.unwrap();
    ch.confirm_select(Default::default()).await.unwrap();
    assert!(publish_confirmed(&ch, "w-x", "k", b"1", BasicProperties::default()).await);
    b.broker
        .set_permissions(grant("u", "v", "^c-", "^nomatch$", "^r-"))
        .unwrap();
    let err = ch
        .basic_publish(
            "w-x".into(),
            "k".into(),
            Default::default(),
            b"2",
            BasicProperties::default(),
        )
        .await
        .unwrap()
        .await
        .unwrap_err();
    assert_eq!(amqp_error(&err), refused("exchange", "w-x").unwrap_err());
    b.broker.access().clear_permissions("v", "u").unwrap();
    let err = connect(&b, "u", "pw", "v").await.unwrap_err();
    assert_eq!(amqp_error(&err).0, 530);
}

#[tokio::test]
async fn deleting_a_user_or_vhost_closes_its_connections_with_320() {
    let (b, _admin) = setup().await;
    add_user(&b, "victim", &[], (".*", ".*", ".*"));
    let victim = connect(&b, "victim", "pw", "v").await.unwrap();
    let closed = close_reason(&victim);
    b.broker.delete_user("victim").unwrap();
    assert_eq!(
        closed.await,
        (320, "CONNECTION_FORCED - user 'victim' is deleted".into())
    );
    let u = connect(&b, "u", "pw", "v").await.unwrap();
    let closed = close_reason(&u);
    b.broker.delete_vhost("v").await.unwrap();
    assert_eq!(
        closed.await,
        (320, "CONNECTION_FORCED - vhost 'v' is deleted".into())
    );
    assert!(connect(&b, "guest", "guest", "v").await.is_err());
    assert!(b.broker.access().permission("v", "u").is_none());
}

#[tokio::test]
async fn topic_permissions_check_routing_and_binding_keys() {
    let (b, _admin) = setup().await;
    b.broker
        .set_permissions(grant("u", "v", ".*", ".*", ".*"))
        .unwrap();
    b.broker
        .access()
        .set_topic_permissions(TopicPermissionRecord {
            user: "u".into(),
            vhost: "v".into(),
            exchange: "amq.topic".into(),
            write: "^ok\\.".into(),
            read: "^rd\\.".into(),
        })
        .unwrap();
    let u = connect(&b, "u", "pw", "v").await.unwrap();
    let ch = u.create_channel().await.unwrap();
    ch.confirm_select(Default::default()).await.unwrap();
    assert!(publish_confirmed(&ch, "amq.topic", "ok.a", b"1", BasicProperties::default()).await);
    assert!(publish_confirmed(&ch, "amq.direct", "bad.a", b"1", BasicProperties::default()).await);
    let err = ch
        .basic_publish(
            "amq.topic".into(),
            "bad.a".into(),
            Default::default(),
            b"2",
            BasicProperties::default(),
        )
        .await
        .unwrap()
        .await
        .unwrap_err();
    assert_eq!(
        amqp_error(&err),
        (
            403,
            "ACCESS_REFUSED - access to topic 'bad.a' in exchange 'amq.topic' in vhost 'v' refused for user 'u'".into()
        )
    );
    let ch = u.create_channel().await.unwrap();
    ch.queue_bind(
        "c-q".into(),
        "amq.topic".into(),
        "rd.x".into(),
        Default::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    let err = ch
        .queue_bind(
            "c-q".into(),
            "amq.topic".into(),
            "ok.x".into(),
            Default::default(),
            FieldTable::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(amqp_error(&err).0, 403);
}

#[tokio::test]
async fn impersonators_may_set_any_user_id() {
    let (b, _admin) = setup().await;
    add_user(&b, "imp", &["impersonator"], (".*", ".*", ".*"));
    let c = connect(&b, "imp", "pw", "v").await.unwrap();
    let ch = c.create_channel().await.unwrap();
    ch.confirm_select(Default::default()).await.unwrap();
    let props = BasicProperties::default().with_user_id("nobody-at-all".into());
    assert!(publish_confirmed(&ch, "", "w-q", b"1", props).await);
}

#[tokio::test]
async fn users_and_permissions_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let b = TestBroker::start_in(dir.path()).await;
    b.broker.add_vhost("v").unwrap();
    add_user(&b, "u", &["monitoring"], (".*", ".*", ".*"));
    let b = b.restart_in(dir.path()).await;
    let c = connect(&b, "u", "pw", "v")
        .await
        .expect("u logs in after restart");
    assert!(attempt(&c, Op::DeclareQueue("q")).await.is_ok());
    assert_eq!(
        b.broker.access().user("u").unwrap().tags,
        vec!["monitoring"]
    );
}

#[tokio::test]
async fn vhost_limits_refuse_connections_and_queues_over_the_limit() {
    let (b, _admin) = setup().await;
    let v = b.broker.vhost("v").unwrap();
    let mut meta = v.meta();
    meta.limits.insert("max-queues".into(), 5);
    b.broker.put_vhost("v", meta.clone()).unwrap();
    let u = connect(&b, "guest", "guest", "v").await.unwrap();
    assert_eq!(attempt(&u, Op::DeclareQueue("c-5")).await, Ok(()));
    assert_eq!(
        attempt(&u, Op::DeclareQueue("c-6")).await,
        Err((
            406,
            "PRECONDITION_FAILED - cannot declare queue 'c-6': queue limit in vhost 'v' (5) is reached".into()
        ))
    );
    meta.limits.insert("max-connections".into(), 2);
    b.broker.put_vhost("v", meta).unwrap();
    // Two open already (the admin's and this one).
    let err = connect(&b, "u", "pw", "v").await.unwrap_err();
    assert_eq!(
        amqp_error(&err),
        (
            530,
            "NOT_ALLOWED - access to vhost 'v' refused for user 'u': connection limit (2) is reached".into()
        )
    );
}
