//! Frame codec: bytes from the socket into [`Frame`]s, and frames into bytes for the writer.
//!
//! Framing (type, channel, size, frame-end octet, frame_max) is checked here by hand so that every
//! violation maps to RabbitMQ's reply code; method arguments and content properties are parsed by
//! amq-protocol. Body payloads are sliced out of the read buffer as `Bytes`, never copied. The hot
//! outbound methods (deliver, get-ok, ack/nack) are encoded by hand; the rest go through amq-protocol.

use amq_protocol::frame::{parsing::parse_content_header, WriteContext};
use amq_protocol::protocol::{basic, gen_class, parse_class, AMQPClass};
use bytes::{BufMut, Bytes, BytesMut};

use super::error::AmqpError;
use super::nesting::{self, NestingError};

/// The eight bytes a client sends first.
pub const PROTOCOL_HEADER: &[u8; 8] = b"AMQP\x00\x00\x09\x01";

const FRAME_METHOD: u8 = 1;
const FRAME_HEADER: u8 = 2;
const FRAME_BODY: u8 = 3;
const FRAME_HEARTBEAT: u8 = 8;
const FRAME_END: u8 = 0xCE;
/// Frame overhead: type (1) + channel (2) + size (4) + frame-end (1).
pub const FRAME_OVERHEAD: u32 = 8;

/// A content header: the parsed properties and, for cheap re-sending, their encoded bytes.
#[derive(Debug, Clone)]
pub struct ContentHeader {
    /// Content class (60 for basic).
    pub class_id: u16,
    /// Announced body size.
    pub body_size: u64,
    /// Parsed properties.
    pub properties: basic::AMQPProperties,
    /// The properties exactly as they arrived (flags + fields).
    pub raw_properties: Bytes,
}

/// The keys of a method's argument table in the order the client sent them, kept where an
/// answer depends on it (a `queue.declare` naming several arguments: RabbitMQ reports the first
/// one another queue type takes) because amq-protocol's tables are sorted maps. `None` elsewhere.
pub type ArgumentOrder = Option<Box<[String]>>;

/// One decoded frame.
#[derive(Debug, Clone)]
pub enum Frame {
    /// A method frame, with its argument table's key order where that matters.
    Method(u16, Box<AMQPClass>, ArgumentOrder),
    /// A content header frame.
    Header(u16, Box<ContentHeader>),
    /// A content body frame.
    Body(u16, Bytes),
    /// A heartbeat frame (channel should be 0).
    Heartbeat(u16),
}

impl Frame {
    /// The channel the frame belongs to.
    pub fn channel(&self) -> u16 {
        match self {
            Self::Method(ch, ..)
            | Self::Header(ch, _)
            | Self::Body(ch, _)
            | Self::Heartbeat(ch) => *ch,
        }
    }
}

/// Decode one frame from `buf`, or `Ok(None)` when more bytes are needed.
///
/// `frame_max` is the negotiated maximum frame size including overhead (0 = no limit).
pub fn decode_frame(buf: &mut BytesMut, frame_max: u32) -> Result<Option<Frame>, AmqpError> {
    if buf.len() < 7 {
        return Ok(None);
    }
    let frame_type = buf[0];
    let channel = u16::from_be_bytes([buf[1], buf[2]]);
    let size = u32::from_be_bytes([buf[3], buf[4], buf[5], buf[6]]);
    // RabbitMQ accepts a payload of up to frame_max bytes (8 more than the spec allows) and
    // names frame_max - 8 as the limit in its error.
    if frame_max != 0 && size > frame_max {
        return Err(AmqpError::frame_error(format!(
            "type {frame_type}, all octets = <<>>: {{frame_too_large,{size},{}}}",
            frame_max - FRAME_OVERHEAD
        )));
    }
    let total = 8 + size as usize;
    if buf.len() < total {
        // Room grows as bytes arrive, never ahead of them: a 7-byte header claiming a huge
        // frame must not make the broker allocate it (found by the frames fuzz target).
        buf.reserve((total - buf.len()).min(64 * 1024));
        return Ok(None);
    }
    let payload_view = &buf[7..total - 1];
    if buf[total - 1] != FRAME_END {
        return Err(AmqpError::frame_error(format!(
            "type {frame_type}, all octets = {}: {{invalid_frame_end_marker,{}}}",
            erlang_binary(payload_view),
            buf[total - 1]
        )));
    }
    let unknown = match frame_type {
        FRAME_METHOD | FRAME_HEADER | FRAME_BODY => false,
        FRAME_HEARTBEAT => size != 0,
        _ => true,
    };
    if unknown {
        return Err(AmqpError::frame_error(format!(
            "type {frame_type}, all octets = {}: unknown_frame",
            erlang_binary(payload_view)
        )));
    }
    let mut frame = buf.split_to(total);
    frame.truncate(total - 1);
    let payload = frame.split_off(7).freeze();
    match frame_type {
        FRAME_METHOD => decode_method(&payload).map(|m| {
            Some(Frame::Method(
                channel,
                Box::new(m),
                argument_order(&payload),
            ))
        }),
        FRAME_HEADER => decode_header(payload).map(|h| Some(Frame::Header(channel, Box::new(h)))),
        FRAME_BODY => Ok(Some(Frame::Body(channel, payload))),
        _ => Ok(Some(Frame::Heartbeat(channel))),
    }
}

/// Bytes as Erlang prints a binary: `<<"abc">>` when printable, else `<<0,50,...>>`.
pub fn erlang_binary(bytes: &[u8]) -> String {
    if !bytes.is_empty() && bytes.iter().all(|b| (32..=126).contains(b)) {
        let text: String = bytes
            .iter()
            .flat_map(|&b| match b {
                b'"' => vec!['\\', '"'],
                b'\\' => vec!['\\', '\\'],
                b => vec![b as char],
            })
            .collect();
        format!("<<\"{text}\">>")
    } else {
        let parts: Vec<String> = bytes.iter().map(u8::to_string).collect();
        format!("<<{}>>", parts.join(","))
    }
}

/// The payload of a frame as it was on the wire, for RabbitMQ-style "all octets" texts.
pub fn frame_payload(frame: &Frame) -> (u8, Vec<u8>) {
    match frame {
        Frame::Method(_, m, _) => {
            let mut out = BytesMut::new();
            encode_method(&mut out, 0, m);
            (FRAME_METHOD, out[7..out.len() - 1].to_vec())
        }
        Frame::Header(_, h) => {
            let mut payload = Vec::with_capacity(12 + h.raw_properties.len());
            payload.extend_from_slice(&h.class_id.to_be_bytes());
            payload.extend_from_slice(&[0, 0]);
            payload.extend_from_slice(&h.body_size.to_be_bytes());
            payload.extend_from_slice(&h.raw_properties);
            (FRAME_HEADER, payload)
        }
        Frame::Body(_, b) => (FRAME_BODY, b.to_vec()),
        Frame::Heartbeat(_) => (FRAME_HEARTBEAT, Vec::new()),
    }
}

/// Class and method ids RabbitMQ's AMQP 0-9-1 defines (access.request included, as a no-op).
fn is_known_method(class_id: u16, method_id: u16) -> bool {
    match class_id {
        10 => matches!(
            method_id,
            10 | 11 | 20 | 21 | 30 | 31 | 40 | 41 | 50 | 51 | 60 | 61 | 70 | 71
        ),
        20 => matches!(method_id, 10 | 11 | 20 | 21 | 40 | 41),
        30 => matches!(method_id, 10 | 11),
        40 => matches!(method_id, 10 | 11 | 20 | 21 | 30 | 31 | 40 | 51),
        50 => matches!(method_id, 10 | 11 | 20 | 21 | 30 | 31 | 40 | 41 | 50 | 51),
        60 => matches!(
            method_id,
            10 | 11
                | 20
                | 21
                | 30
                | 31
                | 40
                | 50
                | 60
                | 70
                | 71
                | 72
                | 80
                | 90
                | 100
                | 110
                | 111
                | 120
        ),
        85 => matches!(method_id, 10 | 11),
        90 => matches!(method_id, 10 | 11 | 20 | 21 | 30 | 31),
        _ => false,
    }
}

/// [`ArgumentOrder`] for a method that decoded: a `queue.declare` with two arguments or more.
fn argument_order(payload: &[u8]) -> ArgumentOrder {
    if payload.get(0..4) != Some(&[0, 50, 0, 10]) {
        return None;
    }
    // reserved (2), queue (short string), flags (1), then the table.
    let name_len = usize::from(*payload.get(6)?);
    let keys = nesting::top_level_keys(payload.get(7 + name_len + 1..)?)?;
    (keys.len() > 1).then(|| keys.into_boxed_slice())
}

fn decode_method(payload: &[u8]) -> Result<AMQPClass, AmqpError> {
    if payload.len() < 4 {
        return Err(AmqpError::frame_error(format!(
            "type 1, all octets = {}: unknown_frame",
            erlang_binary(payload)
        )));
    }
    let class_id = u16::from_be_bytes([payload[0], payload[1]]);
    let method_id = u16::from_be_bytes([payload[2], payload[3]]);
    if !is_known_method(class_id, method_id) {
        return Err(AmqpError::command_invalid(format!(
            "unknown method {{{class_id},{method_id}}}"
        ))
        .with_method(class_id, method_id));
    }
    if (class_id, method_id) == (60, 10) && payload.len() >= 8 {
        // amq-protocol drops basic.qos prefetch_size, which RabbitMQ refuses when non-zero.
        let prefetch_size = u32::from_be_bytes([payload[4], payload[5], payload[6], payload[7]]);
        if prefetch_size != 0 {
            return Err(
                AmqpError::not_implemented(format!("prefetch_size!=0 ({prefetch_size})"))
                    .with_method(60, 10),
            );
        }
    }
    match nesting::check_method(class_id, method_id, &payload[4..]) {
        Ok(()) => {}
        Err(NestingError::TooDeep) => return Err(too_deep().with_method(class_id, method_id)),
        Err(NestingError::Malformed) => {
            return Err(AmqpError::frame_error(format!(
                "cannot decode {}",
                erlang_binary(&payload[4..])
            ))
            .with_method(class_id, method_id))
        }
    }
    match parse_class(payload) {
        Ok((_, method)) => Ok(method),
        Err(error) if utf8_refused(&error) => {
            // RabbitMQ's parser checks short strings in every method but basic.publish.
            if (class_id, method_id) == (60, 40) {
                let mended = mended_publish(payload);
                if let Some(Ok((_, method))) = mended.as_deref().map(parse_class) {
                    return Ok(method);
                }
            }
            Err(AmqpError::frame_error("Malformed UTF-8 in shortstr"))
        }
        Err(_) => Err(AmqpError::frame_error(format!(
            "cannot decode {}",
            erlang_binary(&payload[4..])
        ))
        .with_method(class_id, method_id)),
    }
}

/// The error for a field table nested deeper than [`nesting::MAX_TABLE_DEPTH`]: it closes the
/// connection, as any undecodable frame does.
fn too_deep() -> AmqpError {
    AmqpError::syntax_error(format!(
        "field table nested deeper than {} levels",
        nesting::MAX_TABLE_DEPTH
    ))
}

fn decode_header(payload: Bytes) -> Result<ContentHeader, AmqpError> {
    match payload.get(12..).map(nesting::check_properties) {
        Some(Err(NestingError::TooDeep)) => return Err(too_deep()),
        Some(Err(NestingError::Malformed)) => {
            return Err(AmqpError::frame_error("malformed content header"))
        }
        Some(Ok(())) | None => {}
    }
    let parsed = match parse_content_header(&payload[..]) {
        Ok((_, header)) => Some(header),
        // Short strings that are not UTF-8 (RabbitMQ takes any bytes there): read a mended
        // copy; the message keeps the bytes as sent.
        Err(_) => payload
            .get(12..)
            .and_then(nesting::utf8_properties)
            .and_then(|fixed| {
                let mut mended = payload[..12].to_vec();
                mended.extend_from_slice(&fixed);
                parse_content_header(&mended[..]).ok().map(|(_, h)| h)
            }),
    };
    match parsed {
        Some(header) if payload.len() >= 12 => Ok(ContentHeader {
            class_id: header.class_id,
            body_size: header.body_size,
            properties: header.properties,
            raw_properties: payload.slice(12..),
        }),
        Some(_) | None => Err(AmqpError::frame_error("malformed content header")),
    }
}

/// Whether amq-protocol refused a method for a short string that is not UTF-8 (its only
/// `map_res` is the short string's UTF-8 conversion).
fn utf8_refused<E: std::fmt::Display>(error: &E) -> bool {
    error.to_string().contains("MapRes")
}

/// `basic.publish` with its exchange and routing key made UTF-8 (invalid bytes become `?`,
/// lengths kept), for a publisher that sent other bytes: RabbitMQ routes them as bytes.
fn mended_publish(payload: &[u8]) -> Option<Vec<u8>> {
    let mut out = payload.to_vec();
    let mut at = 6usize; // class, method, reserved
    for _ in 0..2 {
        let n = usize::from(*payload.get(at)?);
        nesting::make_utf8(out.get_mut(at + 1..at + 1 + n)?);
        at += 1 + n;
    }
    Some(out)
}

fn put_short_str(out: &mut BytesMut, s: &str) {
    // Short strings are at most 255 bytes; names are validated on the way in.
    let bytes = &s.as_bytes()[..s.len().min(255)];
    out.put_u8(bytes.len() as u8);
    out.put_slice(bytes);
}

/// Start a frame, returning the offset of its size field for [`finish_frame`].
fn start_frame(out: &mut BytesMut, frame_type: u8, channel: u16) -> usize {
    out.put_u8(frame_type);
    out.put_u16(channel);
    let at = out.len();
    out.put_u32(0);
    at
}

fn finish_frame(out: &mut BytesMut, size_at: usize) {
    let size = (out.len() - size_at - 4) as u32;
    out[size_at..size_at + 4].copy_from_slice(&size.to_be_bytes());
    out.put_u8(FRAME_END);
}

/// Encode any method with amq-protocol's generator.
pub fn encode_method(out: &mut BytesMut, channel: u16, method: &AMQPClass) {
    let at = start_frame(out, FRAME_METHOD, channel);
    match gen_class(method)(WriteContext::from(Vec::with_capacity(64))) {
        Ok(ctx) => out.put_slice(&ctx.write),
        // Generation only fails on values we built ourselves (e.g. an over-long short string).
        Err(error) => tracing::error!(?error, "failed to encode method"),
    }
    finish_frame(out, at);
}

/// Encode `basic.deliver` by hand (hot path).
pub fn encode_deliver(
    out: &mut BytesMut,
    channel: u16,
    consumer_tag: &str,
    delivery_tag: u64,
    redelivered: bool,
    exchange: &str,
    routing_key: &str,
) {
    let at = start_frame(out, FRAME_METHOD, channel);
    out.put_u16(60);
    out.put_u16(60);
    put_short_str(out, consumer_tag);
    out.put_u64(delivery_tag);
    out.put_u8(u8::from(redelivered));
    put_short_str(out, exchange);
    put_short_str(out, routing_key);
    finish_frame(out, at);
}

/// Encode `basic.get-ok` by hand.
pub fn encode_get_ok(
    out: &mut BytesMut,
    channel: u16,
    delivery_tag: u64,
    redelivered: bool,
    exchange: &str,
    routing_key: &str,
    message_count: u32,
) {
    let at = start_frame(out, FRAME_METHOD, channel);
    out.put_u16(60);
    out.put_u16(71);
    out.put_u64(delivery_tag);
    out.put_u8(u8::from(redelivered));
    put_short_str(out, exchange);
    put_short_str(out, routing_key);
    out.put_u32(message_count);
    finish_frame(out, at);
}

/// Encode a publisher-confirm `basic.ack` or `basic.nack` by hand.
pub fn encode_confirm(
    out: &mut BytesMut,
    channel: u16,
    delivery_tag: u64,
    multiple: bool,
    ack: bool,
) {
    let at = start_frame(out, FRAME_METHOD, channel);
    out.put_u16(60);
    if ack {
        out.put_u16(80);
        out.put_u64(delivery_tag);
        out.put_u8(u8::from(multiple));
    } else {
        out.put_u16(120);
        out.put_u64(delivery_tag);
        out.put_u8(u8::from(multiple));
    }
    finish_frame(out, at);
}

/// Encode a content header and the body frames, splitting the body at `frame_max - 8`.
pub fn encode_content(
    out: &mut BytesMut,
    channel: u16,
    raw_properties: &[u8],
    body: &[u8],
    frame_max: u32,
) {
    out.reserve(32 + raw_properties.len() + body.len());
    let at = start_frame(out, FRAME_HEADER, channel);
    out.put_u16(60);
    out.put_u16(0);
    out.put_u64(body.len() as u64);
    out.put_slice(raw_properties);
    finish_frame(out, at);
    let chunk = frame_max.saturating_sub(FRAME_OVERHEAD).max(1) as usize;
    for part in body.chunks(chunk) {
        let at = start_frame(out, FRAME_BODY, channel);
        out.put_slice(part);
        finish_frame(out, at);
    }
}

/// Encode properties into their wire form (flags + fields).
pub fn encode_properties(properties: &basic::AMQPProperties) -> Bytes {
    match basic::gen_properties(properties)(WriteContext::from(Vec::with_capacity(64))) {
        Ok(ctx) => Bytes::from(ctx.write),
        Err(error) => {
            tracing::error!(?error, "failed to encode properties");
            Bytes::from_static(&[0, 0])
        }
    }
}

/// Encode a heartbeat frame.
pub fn encode_heartbeat(out: &mut BytesMut) {
    out.put_slice(&[FRAME_HEARTBEAT, 0, 0, 0, 0, 0, 0, FRAME_END]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use amq_protocol::protocol::queue;

    #[test]
    fn method_round_trips() {
        let method = AMQPClass::Queue(queue::AMQPMethod::Declare(queue::Declare {
            queue: "q".into(),
            passive: false,
            durable: true,
            exclusive: false,
            auto_delete: true,
            nowait: false,
            arguments: Default::default(),
        }));
        let mut out = BytesMut::new();
        encode_method(&mut out, 3, &method);
        let frame = decode_frame(&mut out, 4096).unwrap().unwrap();
        match frame {
            Frame::Method(3, m, _) => assert_eq!(*m, method),
            other => panic!("unexpected {other:?}"),
        }
        assert!(out.is_empty());
    }

    #[test]
    fn queue_declare_keeps_the_clients_argument_order() {
        // queue.declare of "q", no flags, with a table of x-b (long) then x-a (short string):
        // the reverse of the sorted order amq-protocol's map gives.
        let mut table = Vec::new();
        table.extend_from_slice(b"\x03x-bI\x00\x00\x00\x01");
        table.extend_from_slice(b"\x03x-aS\x00\x00\x00\x01z");
        let mut payload = vec![0, 50, 0, 10, 0, 0, 1, b'q', 0];
        payload.extend_from_slice(&(table.len() as u32).to_be_bytes());
        payload.extend_from_slice(&table);
        let mut out = BytesMut::new();
        out.put_u8(FRAME_METHOD);
        out.put_u16(1);
        out.put_u32(payload.len() as u32);
        out.put_slice(&payload);
        out.put_u8(FRAME_END);
        match decode_frame(&mut out, 4096).unwrap().unwrap() {
            Frame::Method(1, _, Some(order)) => assert_eq!(&*order, ["x-b", "x-a"]),
            other => panic!("unexpected {other:?}"),
        }
        // One argument: nothing to order.
        let mut arguments = amq_protocol::types::FieldTable::default();
        arguments.insert("x-a".into(), amq_protocol::types::AMQPValue::LongInt(1));
        let method = AMQPClass::Queue(queue::AMQPMethod::Declare(queue::Declare {
            queue: "q".into(),
            passive: false,
            durable: true,
            exclusive: false,
            auto_delete: false,
            nowait: false,
            arguments,
        }));
        let mut out = BytesMut::new();
        encode_method(&mut out, 1, &method);
        assert!(matches!(
            decode_frame(&mut out, 4096).unwrap().unwrap(),
            Frame::Method(1, _, None)
        ));
    }

    #[test]
    fn partial_frames_wait_for_more() {
        let mut out = BytesMut::new();
        encode_heartbeat(&mut out);
        let mut partial = BytesMut::from(&out[..5]);
        assert!(decode_frame(&mut partial, 4096).unwrap().is_none());
    }

    #[test]
    fn bad_frame_end_is_frame_error() {
        let mut out = BytesMut::from(&[8u8, 0, 0, 0, 0, 0, 0, 0xCD][..]);
        let err = decode_frame(&mut out, 4096).unwrap_err();
        assert_eq!(err.code as u16, 501);
    }

    #[test]
    fn oversized_frame_is_frame_error() {
        let mut out = BytesMut::from(&[3u8, 0, 1, 0, 0, 0x10, 0x01][..]);
        let err = decode_frame(&mut out, 4096).unwrap_err();
        assert_eq!(err.code as u16, 501);
    }

    #[test]
    fn body_is_split_at_frame_max() {
        let body = vec![7u8; 10_000];
        let mut out = BytesMut::new();
        encode_content(&mut out, 1, &[0, 0], &body, 4096);
        let mut frames = Vec::new();
        while let Some(frame) = decode_frame(&mut out, 4096).unwrap() {
            frames.push(frame);
        }
        assert_eq!(frames.len(), 1 + 3);
        let total: usize = frames
            .iter()
            .map(|f| match f {
                Frame::Body(_, b) => b.len(),
                _ => 0,
            })
            .sum();
        assert_eq!(total, 10_000);
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use amq_protocol::protocol::{basic, queue};
    use amq_protocol::types::{
        AMQPValue, ByteArray, DecimalValue, FieldArray, FieldTable, LongString,
    };
    use proptest::prelude::*;

    fn value() -> impl Strategy<Value = AMQPValue> {
        let leaf = prop_oneof![
            any::<bool>().prop_map(AMQPValue::Boolean),
            any::<i8>().prop_map(AMQPValue::ShortShortInt),
            any::<u8>().prop_map(AMQPValue::ShortShortUInt),
            any::<i16>().prop_map(AMQPValue::ShortInt),
            any::<u16>().prop_map(AMQPValue::ShortUInt),
            any::<i32>().prop_map(AMQPValue::LongInt),
            any::<u32>().prop_map(AMQPValue::LongUInt),
            any::<i64>().prop_map(AMQPValue::LongLongInt),
            any::<f32>()
                .prop_filter("NaN is not equal to itself", |f| !f.is_nan())
                .prop_map(AMQPValue::Float),
            any::<f64>()
                .prop_filter("NaN is not equal to itself", |f| !f.is_nan())
                .prop_map(AMQPValue::Double),
            (any::<u8>(), any::<u32>())
                .prop_map(|(scale, value)| AMQPValue::DecimalValue(DecimalValue { scale, value })),
            ".{0,20}".prop_map(|s| AMQPValue::LongString(LongString::from(s))),
            any::<u64>().prop_map(AMQPValue::Timestamp),
            proptest::collection::vec(any::<u8>(), 0..16)
                .prop_map(|b| AMQPValue::ByteArray(ByteArray::from(b))),
            Just(AMQPValue::Void),
        ];
        leaf.prop_recursive(2, 16, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4)
                    .prop_map(|v| AMQPValue::FieldArray(FieldArray::from(v))),
                proptest::collection::btree_map("[a-z]{1,8}", inner, 0..4).prop_map(|m| {
                    let mut t = FieldTable::default();
                    for (k, v) in m {
                        t.insert(k.into(), v);
                    }
                    AMQPValue::FieldTable(t)
                }),
            ]
        })
    }

    fn table() -> impl Strategy<Value = FieldTable> {
        proptest::collection::btree_map("[a-zA-Z-]{1,12}", value(), 0..6).prop_map(|m| {
            let mut t = FieldTable::default();
            for (k, v) in m {
                t.insert(k.into(), v);
            }
            t
        })
    }

    proptest! {
        #[test]
        fn methods_round_trip(name in "[a-z.]{0,40}", flags in any::<[bool; 5]>(), arguments in table(), channel in 1u16..) {
            let method = AMQPClass::Queue(queue::AMQPMethod::Declare(queue::Declare {
                queue: name.into(),
                passive: flags[0],
                durable: flags[1],
                exclusive: flags[2],
                auto_delete: flags[3],
                nowait: flags[4],
                arguments,
            }));
            let mut out = BytesMut::new();
            encode_method(&mut out, channel, &method);
            match decode_frame(&mut out, 0).unwrap() {
                Some(Frame::Method(ch, m, _)) => {
                    prop_assert_eq!(ch, channel);
                    prop_assert_eq!(*m, method);
                }
                other => prop_assert!(false, "{:?}", other),
            }
        }

        #[test]
        fn properties_round_trip_through_a_content_header(headers in table(), body in proptest::collection::vec(any::<u8>(), 0..300)) {
            let props = basic::AMQPProperties::default().with_headers(headers).with_delivery_mode(2);
            let raw = encode_properties(&props);
            let mut out = BytesMut::new();
            encode_content(&mut out, 1, &raw, &body, 4096);
            match decode_frame(&mut out, 0).unwrap() {
                Some(Frame::Header(1, h)) => {
                    prop_assert_eq!(h.properties, props);
                    prop_assert_eq!(&h.raw_properties[..], &raw[..]);
                    prop_assert_eq!(h.body_size, body.len() as u64);
                }
                other => prop_assert!(false, "{:?}", other),
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512), frame_max in prop_oneof![Just(0u32), 4096u32..]) {
            let mut buf = BytesMut::from(&bytes[..]);
            // Decode until the input is exhausted or rejected; every outcome is fine but a panic.
            while let Ok(Some(_)) = decode_frame(&mut buf, frame_max) {}
        }

        #[test]
        fn valid_frames_with_garbage_after_decode_the_valid_prefix(tail in proptest::collection::vec(any::<u8>(), 0..64)) {
            let mut buf = BytesMut::new();
            encode_heartbeat(&mut buf);
            buf.extend_from_slice(&tail);
            prop_assert!(matches!(decode_frame(&mut buf, 4096), Ok(Some(Frame::Heartbeat(0)))));
        }
    }
}
