//! Writes the fuzz seed corpora (`fuzz/seeds/`) from real client traffic: lapin sessions run
//! through a recording proxy in front of a broker, and what the client sent is saved as seeds
//! for the connection target (whole sessions), the frames target (the frames after the
//! protocol header) and the field_tables target (the client-properties table of start-ok).
//! Ignored by default: run it with `cargo test --test capture_seeds -- --ignored` to refresh.

mod common;

use std::sync::{Arc, Mutex};

use common::TestBroker;
use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable};
use lapin::BasicProperties;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A proxy to `upstream` that records every byte its one client sends.
async fn recording_proxy(
    upstream: std::net::SocketAddr,
) -> (std::net::SocketAddr, Arc<Mutex<Vec<u8>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let sent: Arc<Mutex<Vec<u8>>> = Arc::default();
    let record = sent.clone();
    tokio::spawn(async move {
        let (client, _) = listener.accept().await.unwrap();
        let server = tokio::net::TcpStream::connect(upstream).await.unwrap();
        let (mut cr, mut cw) = client.into_split();
        let (mut sr, mut sw) = server.into_split();
        let up = async move {
            let mut buf = vec![0u8; 65536];
            while let Ok(n) = cr.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                record.lock().unwrap().extend_from_slice(&buf[..n]);
                if sw.write_all(&buf[..n]).await.is_err() {
                    break;
                }
            }
            let _ = sw.shutdown().await;
        };
        let down = async move {
            let _ = tokio::io::copy(&mut sr, &mut cw).await;
        };
        tokio::join!(up, down);
    });
    (addr, sent)
}

async fn session(b: &TestBroker, kind: usize) -> Vec<u8> {
    let (addr, sent) = recording_proxy(b.addr).await;
    let conn = lapin::Connection::connect(
        &format!("amqp://guest:guest@{addr}/%2f"),
        Default::default(),
    )
    .await
    .unwrap();
    let ch = conn.create_channel().await.unwrap();
    let q = format!("seed{kind}");
    let mut args = FieldTable::default();
    args.insert("x-max-length".into(), AMQPValue::LongLongInt(100));
    args.insert(
        "x-dead-letter-exchange".into(),
        AMQPValue::LongString("amq.fanout".into()),
    );
    ch.queue_declare(q.as_str().into(), QueueDeclareOptions::default(), args)
        .await
        .unwrap();
    ch.exchange_declare(
        "seed.x".into(),
        lapin::ExchangeKind::Topic,
        Default::default(),
        Default::default(),
    )
    .await
    .unwrap();
    ch.queue_bind(
        q.as_str().into(),
        "seed.x".into(),
        "a.#".into(),
        Default::default(),
        Default::default(),
    )
    .await
    .unwrap();
    let mut headers = FieldTable::default();
    headers.insert(
        "CC".into(),
        AMQPValue::FieldArray(vec![AMQPValue::LongString(q.as_str().into())].into()),
    );
    headers.insert("n".into(), AMQPValue::LongInt(7));
    let props = BasicProperties::default()
        .with_delivery_mode(2)
        .with_headers(headers)
        .with_expiration("60000".into())
        .with_message_id("m1".into());
    match kind {
        0 => {
            ch.confirm_select(Default::default()).await.unwrap();
            for i in 0..3u8 {
                ch.basic_publish(
                    "seed.x".into(),
                    "a.b".into(),
                    BasicPublishOptions {
                        mandatory: true,
                        ..Default::default()
                    },
                    &[i; 40],
                    props.clone(),
                )
                .await
                .unwrap()
                .await
                .unwrap();
            }
            ch.basic_qos(2, Default::default()).await.unwrap();
            let mut consumer = ch
                .basic_consume(
                    q.as_str().into(),
                    "c".into(),
                    Default::default(),
                    Default::default(),
                )
                .await
                .unwrap();
            let d = common::next_delivery(&mut consumer).await;
            d.ack(BasicAckOptions { multiple: true }).await.unwrap();
            let d = common::next_delivery(&mut consumer).await;
            d.nack(BasicNackOptions {
                requeue: true,
                ..Default::default()
            })
            .await
            .unwrap();
            ch.basic_cancel("c".into(), Default::default())
                .await
                .unwrap();
        }
        _ => {
            ch.tx_select().await.unwrap();
            ch.basic_publish(
                "".into(),
                q.as_str().into(),
                Default::default(),
                &vec![9u8; 5000],
                props,
            )
            .await
            .unwrap();
            ch.tx_commit().await.unwrap();
            if let Some(m) = ch
                .basic_get(q.as_str().into(), BasicGetOptions { no_ack: false })
                .await
                .unwrap()
            {
                m.delivery
                    .reject(BasicRejectOptions { requeue: false })
                    .await
                    .unwrap();
            }
            ch.tx_rollback().await.unwrap();
            ch.queue_purge(q.as_str().into(), Default::default())
                .await
                .unwrap();
            ch.queue_delete(q.as_str().into(), Default::default())
                .await
                .unwrap();
        }
    }
    ch.close(200, "bye".into()).await.unwrap();
    conn.close(200, "bye".into()).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let bytes = sent.lock().unwrap().clone();
    bytes
}

#[tokio::test]
#[ignore]
async fn capture_fuzz_seeds_from_lapin() {
    let b = TestBroker::start().await;
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds");
    for dir in ["connection", "frames", "field_tables"] {
        std::fs::create_dir_all(root.join(dir)).unwrap();
    }
    for kind in 0..2 {
        let sent = session(&b, kind).await;
        assert!(sent.starts_with(b"AMQP"));
        // connection: mode 0 = raw bytes from the protocol header on.
        let mut raw = vec![0u8];
        raw.extend_from_slice(&sent);
        std::fs::write(root.join(format!("connection/lapin-{kind}.bin")), raw).unwrap();
        // frames: a mode byte (2: frame_max 131072), then the frames.
        let mut frames = vec![2u8];
        frames.extend_from_slice(&sent[8..]);
        std::fs::write(root.join(format!("frames/lapin-{kind}.bin")), frames).unwrap();
        // field_tables: start-ok's client properties (the first frame's arguments).
        let table_at = 8 + 7 + 4;
        let len = u32::from_be_bytes(sent[table_at..table_at + 4].try_into().unwrap()) as usize;
        std::fs::write(
            root.join(format!("field_tables/lapin-client-properties-{kind}.bin")),
            &sent[table_at..table_at + 4 + len],
        )
        .unwrap();
    }
}
