//! The channel state machine driven directly, frame by frame: no client, no socket reads.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tokio::sync::mpsc;

use super::*;
use crate::broker::{Broker, BrokerConfig};
use crate::protocol::codec::{decode_frame, encode_properties};
use crate::protocol::{basic, ContentHeader, Properties};
use crate::server::connection::ConnCtx;
use crate::store::MemoryStore;

/// The far ends a test context needs kept alive (the peer socket, the event inbox).
struct Peer(
    #[allow(dead_code)] tokio::net::TcpStream,
    #[allow(dead_code)] mpsc::UnboundedReceiver<crate::broker::queue::ClientEvent>,
);

async fn context() -> (ConnCtx, Peer) {
    let broker = Broker::open(BrokerConfig::default(), Arc::new(MemoryStore::new())).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (client, accepted) = tokio::join!(tokio::net::TcpStream::connect(addr), listener.accept());
    let (writer, _task) = crate::server::writer::spawn(
        Arc::new(crate::server::socket::Socket::Tcp(accepted.unwrap().0)),
        1 << 19,
    );
    let (sink, inbox) = mpsc::unbounded_channel();
    (
        ConnCtx::for_tests(broker, sink, writer),
        Peer(client.unwrap(), inbox),
    )
}

fn method(m: Method) -> Frame {
    Frame::Method(1, Box::new(m), None)
}

async fn feed(ch: &mut Channel, ctx: &mut ConnCtx, m: Method) -> ChannelFate {
    ch.on_frame(ctx, method(m))
        .await
        .expect("no connection error")
}

async fn publish(ch: &mut Channel, ctx: &mut ConnCtx, routing_key: &str, body: &'static [u8]) {
    feed(
        ch,
        ctx,
        Method::Basic(basic::AMQPMethod::Publish(basic::Publish {
            exchange: "".into(),
            routing_key: routing_key.into(),
            mandatory: false,
            immediate: false,
        })),
    )
    .await;
    let properties = Properties::default();
    let header = ContentHeader {
        class_id: 60,
        body_size: body.len() as u64,
        raw_properties: encode_properties(&properties),
        properties,
    };
    ch.on_frame(ctx, Frame::Header(1, Box::new(header)))
        .await
        .unwrap();
    ch.on_frame(ctx, Frame::Body(1, Bytes::from_static(body)))
        .await
        .unwrap();
}

/// Everything the channel wrote since the last call, as methods.
fn sent(ctx: &mut ConnCtx) -> Vec<Method> {
    let mut out = BytesMut::from(&ctx.out.split()[..]);
    let mut methods = Vec::new();
    while let Some(frame) = decode_frame(&mut out, 0).unwrap() {
        if let Frame::Method(_, m, _) = frame {
            methods.push(*m);
        }
    }
    methods
}

#[tokio::test]
async fn soft_error_closes_the_channel_and_ignores_everything_until_close_ok() {
    let (mut ctx, _peer) = context().await;
    let mut ch = Channel::new(1, &ctx);
    feed(
        &mut ch,
        &mut ctx,
        Method::Basic(basic::AMQPMethod::Ack(basic::Ack {
            delivery_tag: 7,
            multiple: false,
        })),
    )
    .await;
    match sent(&mut ctx).as_slice() {
        [Method::Channel(channel::AMQPMethod::Close(c))] => {
            assert_eq!((c.reply_code, c.class_id, c.method_id), (406, 60, 80));
            assert_eq!(
                c.reply_text.as_str(),
                "PRECONDITION_FAILED - unknown delivery tag 7"
            );
        }
        other => panic!("{other:?}"),
    }
    let fate = feed(
        &mut ch,
        &mut ctx,
        Method::Tx(tx::AMQPMethod::Select(tx::Select {})),
    )
    .await;
    assert!(matches!(fate, ChannelFate::Open));
    assert!(
        sent(&mut ctx).is_empty(),
        "methods after channel.close are dropped"
    );
    let fate = feed(
        &mut ch,
        &mut ctx,
        Method::Channel(channel::AMQPMethod::Close(channel::Close {
            reply_code: 200,
            reply_text: "bye".into(),
            class_id: 0,
            method_id: 0,
        })),
    )
    .await;
    assert!(
        matches!(fate, ChannelFate::Open),
        "a crossing close is answered but the channel awaits our close-ok"
    );
    assert!(matches!(
        sent(&mut ctx).as_slice(),
        [Method::Channel(channel::AMQPMethod::CloseOk(_))]
    ));
    let fate = feed(
        &mut ch,
        &mut ctx,
        Method::Channel(channel::AMQPMethod::CloseOk(channel::CloseOk {})),
    )
    .await;
    assert!(matches!(fate, ChannelFate::Closed));
}

#[tokio::test]
async fn confirms_are_numbered_and_folded_into_one_multiple_ack() {
    let (mut ctx, _peer) = context().await;
    let mut ch = Channel::new(1, &ctx);
    feed(
        &mut ch,
        &mut ctx,
        Method::Confirm(confirm::AMQPMethod::Select(confirm::Select {
            nowait: false,
        })),
    )
    .await;
    assert!(matches!(
        sent(&mut ctx).as_slice(),
        [Method::Confirm(confirm::AMQPMethod::SelectOk(_))]
    ));
    for _ in 0..3 {
        publish(&mut ch, &mut ctx, "nowhere", b"x").await;
    }
    ch.flush_confirms(&mut ctx);
    match sent(&mut ctx).as_slice() {
        [Method::Basic(basic::AMQPMethod::Ack(a))] => {
            assert_eq!((a.delivery_tag, a.multiple), (3, true))
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn transactions_hold_publishes_until_commit() {
    let (mut ctx, _peer) = context().await;
    let mut ch = Channel::new(1, &ctx);
    let declare = |name: &str| {
        Method::Queue(queue::AMQPMethod::Declare(queue::Declare {
            queue: name.into(),
            passive: false,
            durable: false,
            exclusive: false,
            auto_delete: false,
            nowait: false,
            arguments: Default::default(),
        }))
    };
    feed(&mut ch, &mut ctx, declare("q")).await;
    feed(
        &mut ch,
        &mut ctx,
        Method::Tx(tx::AMQPMethod::Select(tx::Select {})),
    )
    .await;
    publish(&mut ch, &mut ctx, "q", b"held").await;
    sent(&mut ctx);
    feed(&mut ch, &mut ctx, declare("q")).await;
    match sent(&mut ctx).as_slice() {
        [Method::Queue(queue::AMQPMethod::DeclareOk(ok))] => assert_eq!(ok.message_count, 0),
        other => panic!("{other:?}"),
    }
    feed(
        &mut ch,
        &mut ctx,
        Method::Tx(tx::AMQPMethod::Commit(tx::Commit {})),
    )
    .await;
    feed(&mut ch, &mut ctx, declare("q")).await;
    match sent(&mut ctx).as_slice() {
        [Method::Tx(tx::AMQPMethod::CommitOk(_)), Method::Queue(queue::AMQPMethod::DeclareOk(ok))] =>
        {
            assert_eq!(ok.message_count, 1)
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn basic_get_tags_count_up_and_multiple_ack_settles_them() {
    let (mut ctx, _peer) = context().await;
    let mut ch = Channel::new(1, &ctx);
    feed(
        &mut ch,
        &mut ctx,
        Method::Queue(queue::AMQPMethod::Declare(queue::Declare {
            queue: "".into(),
            passive: false,
            durable: false,
            exclusive: true,
            auto_delete: false,
            nowait: true,
            arguments: Default::default(),
        })),
    )
    .await;
    let name = ch
        .last_queue
        .clone()
        .expect("server-named queue remembered");
    for _ in 0..3 {
        publish(&mut ch, &mut ctx, &name, b"m").await;
    }
    for _ in 0..3 {
        feed(
            &mut ch,
            &mut ctx,
            Method::Basic(basic::AMQPMethod::Get(basic::Get {
                queue: "".into(),
                no_ack: false,
            })),
        )
        .await;
    }
    let tags: Vec<u64> = sent(&mut ctx)
        .into_iter()
        .filter_map(|m| match m {
            Method::Basic(basic::AMQPMethod::GetOk(g)) => Some(g.delivery_tag),
            _ => None,
        })
        .collect();
    assert_eq!(tags, vec![1, 2, 3]);
    assert_eq!(ch.unacked.len(), 3);
    feed(
        &mut ch,
        &mut ctx,
        Method::Basic(basic::AMQPMethod::Ack(basic::Ack {
            delivery_tag: 2,
            multiple: true,
        })),
    )
    .await;
    assert_eq!(ch.unacked.keys().copied().collect::<Vec<_>>(), vec![3]);
    feed(
        &mut ch,
        &mut ctx,
        Method::Basic(basic::AMQPMethod::Reject(basic::Reject {
            delivery_tag: 3,
            requeue: true,
        })),
    )
    .await;
    assert!(ch.unacked.is_empty());
    assert!(sent(&mut ctx).is_empty(), "acks and rejects have no reply");
}
