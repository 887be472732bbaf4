//! Raw-socket tests of framing and handshake errors: the bytes a broken client can send.

mod common;

use std::time::Duration;

use bytes::BytesMut;
use common::raw::RawClient;
use common::TestBroker;
use leveret::protocol::codec::PROTOCOL_HEADER;
use leveret::protocol::{basic, channel, Frame, Method};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn wrong_protocol_header_gets_ours_back_and_a_close() {
    let b = TestBroker::start().await;
    for bad in [&b"AMQP\x00\x00\x09\x02"[..], b"HTTP/1.1 GET /\r\n"] {
        let mut c = RawClient::connect(&b).await;
        c.stream.write_all(bad).await.unwrap();
        let mut got = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), c.stream.read_to_end(&mut got))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got, PROTOCOL_HEADER);
    }
}

#[tokio::test]
async fn frame_over_frame_max_is_501() {
    let b = TestBroker::start().await;
    let mut c = RawClient::open(&b, 0, 0).await;
    let mut frame = vec![3u8, 0, 1];
    frame.extend_from_slice(&10_000u32.to_be_bytes());
    frame.extend(std::iter::repeat_n(0u8, 10_000));
    frame.push(0xCE);
    c.stream.write_all(&frame).await.unwrap();
    assert_eq!(
        c.expect_connection_close(501).await,
        "FRAME_ERROR - type 3, all octets = <<>>: {frame_too_large,10000,4088}"
    );
}

#[tokio::test]
async fn bad_frame_end_is_501_and_unknown_frame_type_is_501() {
    let b = TestBroker::start().await;
    let mut c = RawClient::open(&b, 0, 0).await;
    c.stream
        .write_all(&[8, 0, 0, 0, 0, 0, 0, 0xAB])
        .await
        .unwrap();
    assert_eq!(
        c.expect_connection_close(501).await,
        "FRAME_ERROR - type 8, all octets = <<>>: {invalid_frame_end_marker,171}"
    );
    let mut c = RawClient::open(&b, 0, 0).await;
    c.stream
        .write_all(&[9, 0, 1, 0, 0, 0, 3, b'a', b'b', b'c', 0xCE])
        .await
        .unwrap();
    assert_eq!(
        c.expect_connection_close(501).await,
        "FRAME_ERROR - type 9, all octets = <<\"abc\">>: unknown_frame"
    );
}

#[tokio::test]
async fn content_header_without_publish_is_505() {
    let b = TestBroker::start().await;
    let mut c = RawClient::open(&b, 0, 0).await;
    c.open_channel(1).await;
    let mut out = BytesMut::new();
    leveret::protocol::codec::encode_content(&mut out, 1, &[0, 0], b"x", 4096);
    c.stream.write_all(&out).await.unwrap();
    let text = c.expect_connection_close(505).await;
    assert!(text.starts_with("UNEXPECTED_FRAME"), "{text}");
}

#[tokio::test]
async fn channel_open_twice_is_504_and_unopened_channel_is_504() {
    let b = TestBroker::start().await;
    let mut c = RawClient::open(&b, 0, 0).await;
    c.open_channel(1).await;
    c.send(
        1,
        Method::Channel(channel::AMQPMethod::Open(channel::Open {})),
    )
    .await;
    c.expect_connection_close(504).await;
    let mut c = RawClient::open(&b, 0, 0).await;
    c.send(
        5,
        Method::Basic(basic::AMQPMethod::Qos(basic::Qos {
            prefetch_count: 1,
            global: false,
        })),
    )
    .await;
    c.expect_connection_close(504).await;
}

#[tokio::test]
async fn channel_max_limits_open_channels_not_channel_numbers() {
    let b = TestBroker::start().await;
    let mut c = RawClient::open(&b, 2, 0).await;
    c.open_channel(7).await;
    c.open_channel(2047).await;
    c.send(
        3,
        Method::Channel(channel::AMQPMethod::Open(channel::Open {})),
    )
    .await;
    assert_eq!(
        c.expect_connection_close(530).await,
        "NOT_ALLOWED - number of channels opened (2) has reached the negotiated channel_max (2)"
    );
}

#[tokio::test]
async fn heartbeat_on_a_channel_is_505() {
    let b = TestBroker::start().await;
    let mut c = RawClient::open(&b, 0, 0).await;
    c.stream
        .write_all(&[8, 0, 1, 0, 0, 0, 0, 0xCE])
        .await
        .unwrap();
    assert_eq!(
        c.expect_connection_close(505).await,
        "UNEXPECTED_FRAME - type 8, all octets = <<>>"
    );
}

#[tokio::test]
async fn truncated_method_arguments_are_501_cannot_decode() {
    let b = TestBroker::start().await;
    let mut c = RawClient::open(&b, 0, 0).await;
    c.open_channel(1).await;
    c.stream
        .write_all(&[1, 0, 1, 0, 0, 0, 6, 0, 50, 0, 10, 0, 0, 0xCE])
        .await
        .unwrap();
    assert_eq!(
        c.expect_connection_close(501).await,
        "FRAME_ERROR - cannot decode <<0,0>>"
    );
}

#[tokio::test]
async fn prefetch_size_is_540() {
    let b = TestBroker::start().await;
    let mut c = RawClient::open(&b, 0, 0).await;
    c.open_channel(1).await;
    // basic.qos with prefetch_size=1000 (amq-protocol cannot encode the field; write it raw).
    let payload = [0u8, 60, 0, 10, 0, 0, 0x03, 0xE8, 0, 0, 0];
    let mut frame = vec![1u8, 0, 1];
    frame.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    frame.extend_from_slice(&payload);
    frame.push(0xCE);
    c.stream.write_all(&frame).await.unwrap();
    assert_eq!(
        c.expect_connection_close(540).await,
        "NOT_IMPLEMENTED - prefetch_size!=0 (1000)"
    );
}

#[tokio::test]
async fn silent_peer_is_disconnected_after_two_heartbeats() {
    let b = TestBroker::start().await;
    let mut c = RawClient::open(&b, 0, 1).await;
    let started = std::time::Instant::now();
    while c.frame().await.is_some() {}
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(1500) && waited < Duration::from_secs(5),
        "{waited:?}"
    );
}

#[tokio::test]
async fn broker_sends_heartbeats_after_half_the_interval_not_at_once() {
    let b = TestBroker::start().await;
    let mut c = RawClient::open(&b, 0, 1).await;
    let opened = std::time::Instant::now();
    let frame = c.frame().await.unwrap();
    assert!(matches!(frame, Frame::Heartbeat(0)), "{frame:?}");
    // RabbitMQ's first heartbeat comes after an idle half interval; one sent straight after
    // open-ok made amqprs 2 drop a connection it was closing.
    let waited = opened.elapsed();
    assert!(waited >= Duration::from_millis(400), "{waited:?}");
}

#[tokio::test]
async fn truncated_and_garbage_input_never_takes_the_broker_down() {
    let b = TestBroker::start().await;
    for garbage in [
        &b"AMQP\x00\x00\x09\x01\x01\x00"[..],
        &[0xFFu8; 64][..],
        b"AMQP\x00\x00\x09\x01\x01\x00\x00\x00\x00\x00\x05abc",
    ] {
        let mut c = RawClient::connect(&b).await;
        c.stream.write_all(garbage).await.unwrap();
        drop(c);
    }
    let (_c, ch) = b.channel().await;
    common::declare(&ch, "alive").await;
}
