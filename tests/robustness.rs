//! What a hostile or careless client sends must never crash the broker or leak its state:
//! regression tests for the defects an audit found (issue 13), each through a real socket.

mod common;

use std::time::Duration;

use bytes::BufMut;
use common::raw::RawClient;
use common::TestBroker;
use lapin::options::*;
use lapin::types::FieldTable;
use leveret::broker::BrokerConfig;
use leveret::protocol::codec::PROTOCOL_HEADER;
use leveret::protocol::{connection, Method};
use tokio::io::AsyncWriteExt;

/// A field table whose one entry nests arrays `depth - 1` deep, built as bytes (building it
/// as a value would itself recurse).
fn nested_table(depth: usize) -> Vec<u8> {
    let mut inner: Vec<u8> = Vec::new();
    for _ in 1..depth {
        let mut outer = vec![b'A'];
        outer.extend_from_slice(&(inner.len() as u32).to_be_bytes());
        outer.extend_from_slice(&inner);
        inner = outer;
    }
    let mut entry = vec![1, b'k'];
    entry.extend_from_slice(&inner);
    let mut table = (entry.len() as u32).to_be_bytes().to_vec();
    table.extend_from_slice(&entry);
    table
}

/// A method frame on `channel` with these raw arguments.
fn method_frame(channel: u16, class_id: u16, method_id: u16, args: &[u8]) -> Vec<u8> {
    let mut payload = Vec::new();
    payload.put_u16(class_id);
    payload.put_u16(method_id);
    payload.extend_from_slice(args);
    let mut frame = vec![1];
    frame.put_u16(channel);
    frame.put_u32(payload.len() as u32);
    frame.extend_from_slice(&payload);
    frame.push(0xCE);
    frame
}

fn short(s: &str) -> Vec<u8> {
    let mut out = vec![s.len() as u8];
    out.extend_from_slice(s.as_bytes());
    out
}

fn long(s: &[u8]) -> Vec<u8> {
    let mut out = (s.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(s);
    out
}

/// The broker is still serving: a real client can connect and round-trip a message.
async fn still_serving(b: &TestBroker) {
    let (_conn, ch) = b.channel().await;
    common::declare(&ch, "alive").await;
    common::publish(&ch, "", "alive", b"yes").await;
    assert_eq!(
        common::get_body(&ch, "alive").await.as_deref(),
        Some(&b"yes"[..])
    );
}

#[tokio::test]
async fn a_start_ok_nesting_4000_deep_closes_that_connection_only() {
    let b = TestBroker::start().await;
    let mut c = RawClient::connect(&b).await;
    c.stream.write_all(PROTOCOL_HEADER).await.unwrap();
    assert!(matches!(
        c.method().await,
        Method::Connection(connection::AMQPMethod::Start(_))
    ));
    let mut args = nested_table(4000);
    args.extend(short("PLAIN"));
    args.extend(long(b"\0guest\0guest"));
    args.extend(short("en_US"));
    c.stream
        .write_all(&method_frame(0, 10, 11, &args))
        .await
        .unwrap();
    // Refused before login, as RabbitMQ refuses any handshake error: the socket closes without
    // a word after the silent-close delay (after login a too-deep table is a 502 close).
    assert!(c.frame().await.is_none(), "a close frame before login");
    still_serving(&b).await;
}

#[tokio::test]
async fn too_deep_arguments_and_headers_close_the_connection_after_login() {
    let b = TestBroker::start().await;
    // queue.declare arguments.
    let mut c = RawClient::open(&b, 0, 0).await;
    c.open_channel(1).await;
    let mut args = vec![0, 0];
    args.extend(short("deep"));
    args.push(0);
    args.extend(nested_table(65));
    c.stream
        .write_all(&method_frame(1, 50, 10, &args))
        .await
        .unwrap();
    c.expect_connection_close(502).await;
    // A content header's headers property, after a basic.publish.
    let mut c = RawClient::open(&b, 0, 0).await;
    c.open_channel(1).await;
    let mut publish = vec![0, 0];
    publish.extend(short(""));
    publish.extend(short("q"));
    publish.push(0);
    let mut frames = method_frame(1, 60, 40, &publish);
    let mut header = Vec::new();
    header.put_u16(60);
    header.put_u16(0);
    header.put_u64(0);
    header.put_u16(0x2000);
    header.extend(nested_table(200));
    frames.push(2);
    frames.put_u16(1);
    frames.put_u32(header.len() as u32);
    frames.extend_from_slice(&header);
    frames.push(0xCE);
    c.stream.write_all(&frames).await.unwrap();
    c.expect_connection_close(502).await;
    // 64 levels are fine.
    let mut c = RawClient::open(&b, 0, 0).await;
    c.open_channel(1).await;
    let mut args = vec![0, 0];
    args.extend(short("deep-enough"));
    args.push(0);
    args.extend(nested_table(64));
    c.stream
        .write_all(&method_frame(1, 50, 10, &args))
        .await
        .unwrap();
    assert!(matches!(
        c.method().await,
        Method::Queue(leveret::protocol::queue::AMQPMethod::DeclareOk(_))
    ));
    still_serving(&b).await;
}

#[tokio::test]
async fn an_amqplain_response_nesting_deep_is_a_failed_login() {
    let b = TestBroker::start().await;
    let mut c = RawClient::connect(&b).await;
    c.stream.write_all(PROTOCOL_HEADER).await.unwrap();
    c.method().await;
    let table = nested_table(4000);
    let mut args = (0u32).to_be_bytes().to_vec();
    args.extend(short("AMQPLAIN"));
    // The response is a table without its length prefix.
    args.extend(long(&table[4..]));
    args.extend(short("en_US"));
    c.stream
        .write_all(&method_frame(0, 10, 11, &args))
        .await
        .unwrap();
    // No capabilities advertised: a failed login closes the socket without a word.
    assert!(c.frame().await.is_none());
    still_serving(&b).await;
}

#[tokio::test]
async fn an_8000_exchange_chain_routes_and_its_auto_delete_cascade_unwinds() {
    const N: usize = 8000;
    let b = TestBroker::start().await;
    let (_conn, ch) = b.channel().await;
    let opts = ExchangeDeclareOptions {
        auto_delete: true,
        ..Default::default()
    };
    for i in 0..=N {
        ch.exchange_declare(
            format!("e{i}").as_str().into(),
            lapin::ExchangeKind::Fanout,
            opts,
            FieldTable::default(),
        )
        .await
        .unwrap();
    }
    for i in 0..N {
        ch.exchange_bind(
            format!("e{}", i + 1).as_str().into(),
            format!("e{i}").as_str().into(),
            "".into(),
            ExchangeBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    }
    common::declare(&ch, "end").await;
    ch.queue_bind(
        "end".into(),
        format!("e{N}").as_str().into(),
        "".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    common::publish(&ch, "e0", "", b"through").await;
    assert_eq!(
        common::get_body(&ch, "end").await.as_deref(),
        Some(&b"through"[..])
    );
    // Deleting the queue empties e8000, which goes, which empties e7999, ... up to e0.
    ch.queue_delete("end".into(), QueueDeleteOptions::default())
        .await
        .unwrap();
    let passive = ExchangeDeclareOptions {
        passive: true,
        ..Default::default()
    };
    let err = ch
        .exchange_declare(
            "e0".into(),
            lapin::ExchangeKind::Fanout,
            passive,
            FieldTable::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(common::amqp_error(&err).0, 404);
    let vhost = b.broker.vhost("/").unwrap();
    assert!(!vhost.has_exchange(&format!("e{}", N / 2)));
    still_serving(&b).await;
}

#[tokio::test]
async fn a_reply_text_over_255_bytes_is_cut_and_the_connection_cleaned_up() {
    let b = TestBroker::start().await;
    let (conn, ch) = b.channel().await;
    let name = "q".repeat(255);
    let err = ch
        .queue_declare(
            name.as_str().into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap_err();
    let (code, text) = common::amqp_error(&err);
    assert_eq!(code, 404);
    assert_eq!(text.len(), 255);
    assert!(text.starts_with("NOT_FOUND - no queue 'qqq"), "{text}");
    assert!(text.ends_with("qqq..."), "cut as RabbitMQ cuts: {text}");
    // The connection survived the channel error, and closes cleanly.
    let ch2 = conn.create_channel().await.unwrap();
    common::declare(&ch2, "after").await;
    conn.close(200, "bye".into()).await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !b.broker.connections().all().is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "connection still listed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn frame_max_and_channel_max_zero_mean_no_limit() {
    let b = TestBroker::start_with(BrokerConfig {
        frame_max: 0,
        channel_max: 0,
        ..Default::default()
    })
    .await;
    // lapin sizes its buffer by frame_max, so it asks for 1 MiB (more than a limited server
    // would take); a raw client asks for no limit at all.
    let conn = lapin::Connection::connect(
        &format!("{}?frame_max=1048576", b.uri()),
        lapin::ConnectionProperties::default(),
    )
    .await
    .expect("connect with frame_max 1 MiB");
    let ch = conn.create_channel().await.unwrap();
    common::declare(&ch, "big").await;
    let body = vec![7u8; 300_000];
    common::publish(&ch, "", "big", &body).await;
    assert_eq!(common::get_body(&ch, "big").await, Some(body));
    let mut c = RawClient::open_tuned(&b, 0, 0, 0).await;
    for id in 1..=3000 {
        c.open_channel(id).await;
    }
    // Before login a frame is still bounded: a 1 MB frame is refused, not buffered (the
    // socket closes without a word, as after any handshake error).
    let mut c = RawClient::connect(&b).await;
    c.stream.write_all(PROTOCOL_HEADER).await.unwrap();
    c.method().await;
    let mut frame = vec![1, 0, 0];
    frame.put_u32(1 << 20);
    c.stream.write_all(&frame).await.unwrap();
    assert!(c.frame().await.is_none());
}

/// An HTTP get whose client hangs up mid-way settles what it took: with `ack_requeue_true`,
/// every message is back in the queue, none left unacknowledged without an owner.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_http_get_requeues_what_it_took() {
    const N: u32 = 30_000;
    let b = TestBroker::start().await;
    let admin = common::start_admin(&b).await;
    let (_conn, ch) = b.channel().await;
    common::declare(&ch, "q").await;
    for i in 0..N {
        ch.basic_publish(
            "".into(),
            "q".into(),
            BasicPublishOptions::default(),
            &i.to_be_bytes(),
            Default::default(),
        )
        .await
        .unwrap();
    }
    while common::message_count(&ch, "q").await < N {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let body = format!(r#"{{"count":{N},"ackmode":"ack_requeue_true","encoding":"auto"}}"#);
    let request = format!(
        "POST /api/queues/%2F/q/get HTTP/1.1\r\nHost: localhost\r\n\
         Authorization: Basic Z3Vlc3Q6Z3Vlc3Q=\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut http = tokio::net::TcpStream::connect(admin).await.unwrap();
    http.write_all(request.as_bytes()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    drop(http);
    let queue = b.broker.vhost("/").unwrap().queue("q", 0).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let stats = queue.stats().await;
        if stats.messages == N && stats.unacked == 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{} ready, {} unacked: messages stranded",
            stats.messages,
            stats.unacked
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A panic in a connection task leaves nothing behind: the connection leaves the registry, its
/// unacknowledged deliveries go back to their queue, its consumer and its exclusive queue go.
#[tokio::test]
async fn a_panicking_connection_task_leaks_nothing_and_strands_nothing() {
    use leveret::protocol::{basic, queue};
    leveret::broker::fault::ENABLED.store(true, std::sync::atomic::Ordering::Relaxed);
    let b = TestBroker::start().await;
    let (_conn, ch) = b.channel().await;
    common::declare(&ch, "work").await;
    for i in 0..5u8 {
        common::publish(&ch, "", "work", &[i]).await;
    }
    let mut c = RawClient::open(&b, 0, 0).await;
    c.open_channel(1).await;
    c.send(
        1,
        Method::Queue(queue::AMQPMethod::Declare(queue::Declare {
            queue: "mine".into(),
            exclusive: true,
            ..Default::default()
        })),
    )
    .await;
    c.method().await;
    c.send(
        1,
        Method::Basic(basic::AMQPMethod::Consume(basic::Consume {
            queue: "work".into(),
            consumer_tag: "raw".into(),
            ..Default::default()
        })),
    )
    .await;
    // consume-ok, then five deliveries (method, header, body each).
    let mut deliveries = 0;
    while deliveries < 5 {
        if let Some(leveret::protocol::Frame::Body(..)) = c.frame().await {
            deliveries += 1;
        }
    }
    let vhost = b.broker.vhost("/").unwrap();
    let work = vhost.queue("work", 0).unwrap();
    assert_eq!(work.stats().await.unacked, 5);
    c.send(
        0,
        Method::Connection(connection::AMQPMethod::UpdateSecret(
            connection::UpdateSecret {
                new_secret: leveret::broker::fault::PANIC_CONNECTION.to_vec().into(),
                reason: "test".into(),
            },
        )),
    )
    .await;
    while c.frame().await.is_some() {}
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let stats = work.stats().await;
        let listed = b.broker.connections().all().len();
        let exclusive_gone = vhost.queue_record("mine").is_none();
        if stats.messages == 5
            && stats.unacked == 0
            && stats.consumers == 0
            && listed == 1
            && exclusive_gone
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "after the panic: {stats:?}, {listed} connections listed, exclusive queue gone: {exclusive_gone}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    still_serving(&b).await;
}

/// A panic inside a queue actor is contained to the command: the queue and its messages stay.
#[tokio::test]
async fn a_panicking_queue_command_keeps_the_queue_and_its_messages() {
    leveret::broker::fault::ENABLED.store(true, std::sync::atomic::Ordering::Relaxed);
    let b = TestBroker::start().await;
    let (_conn, ch) = b.channel().await;
    common::declare(&ch, "pq").await;
    common::publish(&ch, "", "pq", b"one").await;
    common::publish(&ch, "", "pq", leveret::broker::fault::PANIC_QUEUE).await;
    common::publish(&ch, "", "pq", b"two").await;
    assert_eq!(common::drain(&ch, "pq").await, ["one", "two"]);
    // Under confirms, a persistent publish to a durable queue (which the queue itself
    // confirms) whose command panicked is nacked, not left unanswered.
    ch.queue_declare("pqd".into(), common::durable(), FieldTable::default())
        .await
        .unwrap();
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let mut outcomes = Vec::new();
    for body in [&b"three"[..], leveret::broker::fault::PANIC_QUEUE, b"four"] {
        let persistent = lapin::BasicProperties::default().with_delivery_mode(2);
        let confirmed = common::publish_confirmed(&ch, "", "pqd", body, persistent);
        let ack = tokio::time::timeout(Duration::from_secs(5), confirmed)
            .await
            .expect("a publish left unconfirmed");
        outcomes.push(ack);
    }
    assert_eq!(outcomes, [true, false, true]);
    still_serving(&b).await;
}

/// The HTTP API refuses a body over `management.http.max_body_size` with 413, before reading
/// it whole.
#[tokio::test]
async fn an_http_body_over_the_limit_is_refused() {
    let b = TestBroker::start().await;
    let admin = common::start_admin(&b).await;
    let limit = leveret::admin::HttpLimits::default().max_body_size;
    let body = format!(r#"{{"vhosts":[],"padding":"{}"}}"#, "x".repeat(limit));
    let request = format!(
        "POST /api/definitions HTTP/1.1\r\nHost: localhost\r\n\
         Authorization: Basic Z3Vlc3Q6Z3Vlc3Q=\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let mut http = tokio::net::TcpStream::connect(admin).await.unwrap();
    // The server may answer and close before the whole body is written.
    let _ = http.write_all(request.as_bytes()).await;
    let mut answer = Vec::new();
    let _ = tokio::io::AsyncReadExt::read_to_end(&mut http, &mut answer).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    still_serving(&b).await;
}
