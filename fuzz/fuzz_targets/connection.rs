//! A whole connection: input bytes are what a client sends, fed to a real connection task over
//! a Unix socket pair against a fresh in-memory broker, with the broker's answers read
//! concurrently. The first byte picks the mode: after a valid handshake or from the first
//! byte, and either raw bytes or a sequence of well-formed commands decoded from the input
//! (channels, declares with x-arguments, bindings, publishes with properties, consumes, gets,
//! acks/nacks/rejects, qos, confirms, transactions, cancels, deletes, closes), so the
//! handshake, channel state machine, queues and confirms are all reached. A panic anywhere,
//! or a connection that does not end once the client hangs up, is a bug.
#![no_main]

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::BytesMut;
use leveret::broker::{Broker, BrokerConfig};
use leveret::protocol::codec::{encode_content, encode_method, encode_properties, PROTOCOL_HEADER};
use leveret::protocol::{
    basic, channel, confirm, connection, exchange, queue, tx, AMQPValue, FieldTable, Method,
    Properties,
};
use leveret::store::MemoryStore;
use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
    })
}

/// Bytes of the input, one at a time, zero once exhausted.
struct Input<'a>(std::slice::Iter<'a, u8>);

impl Input<'_> {
    fn byte(&mut self) -> u8 {
        self.0.next().copied().unwrap_or(0)
    }
    fn done(&self) -> bool {
        self.0.len() == 0
    }
    fn bit(&mut self) -> bool {
        self.byte() & 1 == 1
    }
    fn pick<'s>(&mut self, from: &[&'s str]) -> &'s str {
        from[usize::from(self.byte()) % from.len()]
    }
}

const QUEUES: &[&str] = &["q0", "q1", "q2", "", "amq.rabbitmq.reply-to"];
const EXCHANGES: &[&str] = &[
    "",
    "e0",
    "e1",
    "amq.direct",
    "amq.fanout",
    "amq.topic",
    "amq.headers",
];
const KINDS: &[&str] = &["direct", "fanout", "topic", "headers", "x-unknown"];
const KEYS: &[&str] = &["q0", "q1", "a.b", "#", "*.b", ""];

fn handshake(out: &mut BytesMut) {
    out.extend_from_slice(PROTOCOL_HEADER);
    let m = |m| Method::Connection(m);
    encode_method(
        out,
        0,
        &m(connection::AMQPMethod::StartOk(connection::StartOk {
            client_properties: FieldTable::default(),
            mechanism: "PLAIN".into(),
            response: "\0guest\0guest".into(),
            locale: "en_US".into(),
        })),
    );
    encode_method(
        out,
        0,
        &m(connection::AMQPMethod::TuneOk(connection::TuneOk {
            channel_max: 16,
            frame_max: 131_072,
            heartbeat: 0,
        })),
    );
    encode_method(
        out,
        0,
        &m(connection::AMQPMethod::Open(connection::Open {
            virtual_host: "/".into(),
        })),
    );
}

fn arguments(input: &mut Input<'_>) -> FieldTable {
    let mut t = FieldTable::default();
    let flags = input.byte();
    let n = i64::from(input.byte() % 4);
    let mut put = |k: &str, v: AMQPValue| {
        t.insert(k.into(), v);
    };
    if flags & 1 != 0 {
        put("x-max-length", AMQPValue::LongLongInt(n));
    }
    if flags & 2 != 0 {
        put("x-message-ttl", AMQPValue::LongLongInt(n * 10));
    }
    if flags & 4 != 0 {
        put("x-dead-letter-exchange", AMQPValue::LongString("e0".into()));
    }
    if flags & 8 != 0 {
        put("x-max-priority", AMQPValue::ShortShortUInt(n as u8));
    }
    if flags & 16 != 0 {
        put("x-overflow", AMQPValue::LongString("reject-publish".into()));
    }
    if flags & 32 != 0 {
        put("x-queue-type", AMQPValue::LongString("quorum".into()));
    }
    if flags & 64 != 0 {
        put("x-single-active-consumer", AMQPValue::Boolean(true));
    }
    if flags & 128 != 0 {
        put("x-match", AMQPValue::LongString("any".into()));
    }
    t
}

/// Well-formed commands decoded from the input.
fn commands(input: &mut Input<'_>, out: &mut BytesMut) {
    while !input.done() {
        let op = input.byte() % 27;
        let ch = u16::from(input.byte() % 3) + 1;
        let method = match op {
            0 => Method::Channel(channel::AMQPMethod::Open(channel::Open {})),
            1 => Method::Queue(queue::AMQPMethod::Declare(queue::Declare {
                queue: input.pick(QUEUES).into(),
                passive: input.bit(),
                durable: input.bit(),
                exclusive: input.bit(),
                auto_delete: input.bit(),
                nowait: false,
                arguments: arguments(input),
            })),
            2 => Method::Exchange(exchange::AMQPMethod::Declare(exchange::Declare {
                exchange: input.pick(EXCHANGES).into(),
                kind: input.pick(KINDS).into(),
                passive: input.bit(),
                durable: input.bit(),
                auto_delete: input.bit(),
                internal: input.bit(),
                nowait: false,
                arguments: FieldTable::default(),
            })),
            3 => Method::Queue(queue::AMQPMethod::Bind(queue::Bind {
                queue: input.pick(QUEUES).into(),
                exchange: input.pick(EXCHANGES).into(),
                routing_key: input.pick(KEYS).into(),
                nowait: false,
                arguments: arguments(input),
            })),
            4 => Method::Exchange(exchange::AMQPMethod::Bind(exchange::Bind {
                destination: input.pick(EXCHANGES).into(),
                source: input.pick(EXCHANGES).into(),
                routing_key: input.pick(KEYS).into(),
                nowait: false,
                arguments: FieldTable::default(),
            })),
            5 => {
                let publish = Method::Basic(basic::AMQPMethod::Publish(basic::Publish {
                    exchange: input.pick(EXCHANGES).into(),
                    routing_key: input.pick(KEYS).into(),
                    mandatory: input.bit(),
                    immediate: input.byte() == 255,
                }));
                encode_method(out, ch, &publish);
                let mut props = Properties::default().with_delivery_mode(1 + input.byte() % 2);
                if input.bit() {
                    props = props.with_priority(input.byte() % 12);
                }
                if input.bit() {
                    props = props.with_expiration(format!("{}", input.byte()).as_str().into());
                }
                if input.bit() {
                    props = props.with_headers(arguments(input));
                }
                let body = vec![input.byte(); usize::from(input.byte()) * 97];
                encode_content(out, ch, &encode_properties(&props), &body, 4096 + 8);
                continue;
            }
            6 => Method::Basic(basic::AMQPMethod::Consume(basic::Consume {
                queue: input.pick(QUEUES).into(),
                consumer_tag: input.pick(&["", "c0", "c1"]).into(),
                no_local: false,
                no_ack: input.bit(),
                exclusive: input.bit(),
                nowait: false,
                arguments: FieldTable::default(),
            })),
            7 => Method::Basic(basic::AMQPMethod::Get(basic::Get {
                queue: input.pick(QUEUES).into(),
                no_ack: input.bit(),
            })),
            8 => Method::Basic(basic::AMQPMethod::Ack(basic::Ack {
                delivery_tag: u64::from(input.byte() % 8),
                multiple: input.bit(),
            })),
            9 => Method::Basic(basic::AMQPMethod::Nack(basic::Nack {
                delivery_tag: u64::from(input.byte() % 8),
                multiple: input.bit(),
                requeue: input.bit(),
            })),
            10 => Method::Basic(basic::AMQPMethod::Reject(basic::Reject {
                delivery_tag: u64::from(input.byte() % 8),
                requeue: input.bit(),
            })),
            11 => Method::Basic(basic::AMQPMethod::Recover(basic::Recover {
                requeue: input.bit(),
            })),
            12 => Method::Basic(basic::AMQPMethod::Qos(basic::Qos {
                prefetch_count: u16::from(input.byte() % 5),
                global: input.bit(),
            })),
            13 => Method::Confirm(confirm::AMQPMethod::Select(confirm::Select {
                nowait: false,
            })),
            14 => Method::Tx(tx::AMQPMethod::Select(tx::Select {})),
            15 => Method::Tx(tx::AMQPMethod::Commit(tx::Commit {})),
            16 => Method::Tx(tx::AMQPMethod::Rollback(tx::Rollback {})),
            17 => Method::Basic(basic::AMQPMethod::Cancel(basic::Cancel {
                consumer_tag: input.pick(&["c0", "c1", "x"]).into(),
                nowait: false,
            })),
            18 => Method::Queue(queue::AMQPMethod::Delete(queue::Delete {
                queue: input.pick(QUEUES).into(),
                if_unused: input.bit(),
                if_empty: input.bit(),
                nowait: false,
            })),
            19 => Method::Queue(queue::AMQPMethod::Purge(queue::Purge {
                queue: input.pick(QUEUES).into(),
                nowait: false,
            })),
            20 => Method::Exchange(exchange::AMQPMethod::Delete(exchange::Delete {
                exchange: input.pick(EXCHANGES).into(),
                if_unused: input.bit(),
                nowait: false,
            })),
            21 => Method::Channel(channel::AMQPMethod::Close(channel::Close {
                reply_code: 200,
                reply_text: "bye".into(),
                class_id: 0,
                method_id: 0,
            })),
            22 => Method::Queue(queue::AMQPMethod::Unbind(queue::Unbind {
                queue: input.pick(QUEUES).into(),
                exchange: input.pick(EXCHANGES).into(),
                routing_key: input.pick(KEYS).into(),
                arguments: FieldTable::default(),
            })),
            23 => Method::Exchange(exchange::AMQPMethod::Unbind(exchange::Unbind {
                destination: input.pick(EXCHANGES).into(),
                source: input.pick(EXCHANGES).into(),
                routing_key: input.pick(KEYS).into(),
                nowait: false,
                arguments: FieldTable::default(),
            })),
            24 => Method::Channel(channel::AMQPMethod::Flow(channel::Flow {
                active: input.bit(),
            })),
            25 => Method::Channel(channel::AMQPMethod::CloseOk(channel::CloseOk {})),
            _ => {
                // A few raw bytes where a frame should be.
                let n = usize::from(input.byte() % 16);
                for _ in 0..n {
                    out.extend_from_slice(&[input.byte()]);
                }
                continue;
            }
        };
        encode_method(out, ch, &method);
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let mut bytes = BytesMut::new();
    if mode & 1 == 1 {
        handshake(&mut bytes);
    }
    if mode & 2 == 2 {
        commands(&mut Input(rest.iter()), &mut bytes);
    } else {
        bytes.extend_from_slice(rest);
    }
    runtime().block_on(async move {
        // No silent-close delay: a failed handshake would otherwise hold each input 3 s.
        let config = BrokerConfig {
            silent_close_delay: Duration::ZERO,
            ..BrokerConfig::default()
        };
        let broker = Broker::open(config, Arc::new(MemoryStore::new())).expect("broker");
        let (client, server) = tokio::net::UnixStream::pair().expect("socket pair");
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let peer = "127.0.0.1:5672".parse().expect("address");
        let serving = tokio::spawn(leveret::server::serve_stream(
            server,
            peer,
            broker.clone(),
            stopped,
        ));
        let (mut rx, mut tx) = client.into_split();
        let writing = tokio::spawn(async move {
            let _ = tx.write_all(&bytes).await;
            let _ = tx.shutdown().await;
        });
        let mut sink = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), rx.read_to_end(&mut sink)).await;
        let _ = stop.send(true);
        // The client has hung up: the connection must end, whatever it was doing.
        tokio::time::timeout(Duration::from_secs(10), serving)
            .await
            .expect("the connection ends once its client hangs up")
            .expect("the connection task does not panic");
        writing.abort();
        broker.shutdown(Duration::from_secs(5)).await;
    });
});
