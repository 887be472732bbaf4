//! A queue's `x-` arguments, validated once at declaration into typed settings.
//!
//! Validation follows RabbitMQ 3.x: arguments are checked in its order, and a bad value closes
//! the channel with 406 and RabbitMQ's text (the error term printed the way Erlang prints it).
//! Unknown `x-` arguments are ignored, as RabbitMQ ignores them.

use crate::protocol::table::{as_str, type_name};
use crate::protocol::{AMQPValue, AmqpError, FieldTable};

pub use crate::broker::queue_type::QueueType;
use crate::broker::queue_type::{CLASSIC_ARGS, QUORUM_ARGS, STREAM_ARGS};

/// The longest TTL or expiry RabbitMQ accepts: ten years, in milliseconds.
pub const MAX_EXPIRY_MS: u64 = 315_360_000_000;

/// The highest `x-max-priority`.
pub const MAX_PRIORITY: u8 = 255;

/// What happens to a publish that would take a queue over its length limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Overflow {
    /// Drop (or dead-letter) messages from the head to make room.
    #[default]
    DropHead,
    /// Refuse the publish: nacked under confirms, dropped otherwise.
    RejectPublish,
    /// Refuse the publish and dead-letter it.
    RejectPublishDlx,
}

/// A queue's settings from its arguments.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueueArgs {
    /// `x-message-ttl`, ms.
    pub message_ttl: Option<u64>,
    /// `x-expires`, ms.
    pub expires: Option<u64>,
    /// `x-max-length`, ready messages.
    pub max_length: Option<u64>,
    /// `x-max-length-bytes`, body bytes of ready messages.
    pub max_length_bytes: Option<u64>,
    /// `x-overflow`.
    pub overflow: Overflow,
    /// `x-dead-letter-exchange` (may be "" for the default exchange).
    pub dead_letter_exchange: Option<String>,
    /// `x-dead-letter-routing-key`.
    pub dead_letter_routing_key: Option<String>,
    /// `x-max-priority`: the queue has priority levels 0..=this.
    pub max_priority: Option<u8>,
    /// `x-single-active-consumer`.
    pub single_active_consumer: bool,
    /// `x-delivery-limit`: returns allowed before a message is dead-lettered.
    pub delivery_limit: Option<u64>,
    /// `x-consumer-timeout`, ms.
    pub consumer_timeout: Option<u64>,
    /// `x-queue-type`.
    pub queue_type: QueueType,
    /// A stream's `x-max-age`, ms.
    pub max_age: Option<u64>,
    /// A stream's `x-stream-max-segment-size-bytes`.
    pub stream_segment_bytes: Option<u64>,
    /// A stream's `x-stream-filter-size-bytes` (its chunks' Bloom filter size).
    pub stream_filter_bytes: Option<u8>,
}

/// The largest `x-stream-max-segment-size-bytes` RabbitMQ accepts.
pub const MAX_STREAM_SEGMENT_BYTES: u64 = 3_000_000_000;

/// A retention age (`x-max-age`, the `max-age` policy): a positive integer and one of the units
/// Y (365 days), M (30 days), D, h, m, s. Returns milliseconds.
pub fn parse_max_age(text: &str) -> Option<u64> {
    let digits = text.len().checked_sub(1)?;
    let (number, unit) = (text.get(..digits)?, text.get(digits..)?);
    if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = number.parse().ok()?;
    let seconds = match unit {
        "Y" => 365 * 86_400,
        "M" => 30 * 86_400,
        "D" => 86_400,
        "h" => 3_600,
        "m" => 60,
        "s" => 1,
        _ => return None,
    };
    (n > 0).then(|| n.saturating_mul(seconds).saturating_mul(1000))
}

/// The type a queue was declared with (`classic` when `x-queue-type` is absent or unreadable).
pub fn declared_type(arguments: &FieldTable) -> QueueType {
    match arguments.inner().get("x-queue-type").and_then(as_str) {
        Some(t) if t == "quorum" => QueueType::Quorum,
        Some(t) if t == "stream" => QueueType::Stream,
        _ => QueueType::Classic,
    }
}

/// What RabbitMQ checks after the arguments' values: no argument another queue type takes
/// (the first in `order`, the client's order, or in key order when that is empty), then the
/// properties the type requires (quorum and stream queues are durable, not exclusive, not
/// auto-delete).
pub fn check_declare(
    arguments: &FieldTable,
    order: &[String],
    args: &QueueArgs,
    resource: &str,
    (durable, exclusive, auto_delete): (bool, bool, bool),
) -> Result<(), AmqpError> {
    let kind = args.queue_type;
    let keys: Vec<&str> = if order.is_empty() {
        arguments.inner().keys().map(|k| k.as_str()).collect()
    } else {
        order.iter().map(String::as_str).collect()
    };
    for key in keys {
        let known = [CLASSIC_ARGS, QUORUM_ARGS, STREAM_ARGS]
            .iter()
            .any(|list| list.contains(&key));
        if known && !kind.accepts(key) {
            return Err(AmqpError::precondition_failed(format!(
                "invalid arg '{key}' for {resource} of queue type {}",
                kind.module()
            )));
        }
    }
    if kind != QueueType::Classic {
        let property = if auto_delete {
            Some("auto-delete")
        } else if exclusive {
            Some("exclusive-owner")
        } else if !durable {
            Some("non-durable")
        } else {
            None
        };
        if let Some(property) = property {
            return Err(AmqpError::precondition_failed(format!(
                "invalid property '{property}' for {resource}"
            )));
        }
    }
    if args
        .stream_segment_bytes
        .is_some_and(|n| n > MAX_STREAM_SEGMENT_BYTES)
    {
        return Err(AmqpError::precondition_failed(
            "Exceeded max value for x-stream-max-segment-size-bytes",
        ));
    }
    Ok(())
}

impl QueueArgs {
    /// Whether a length limit is set.
    pub fn has_length_limit(&self) -> bool {
        self.max_length.is_some() || self.max_length_bytes.is_some()
    }

    /// Whether a publish to this queue may be refused, so publishers under confirms need an
    /// answer from the queue itself.
    pub fn may_refuse_publishes(&self) -> bool {
        self.has_length_limit() && self.overflow != Overflow::DropHead
    }
}

/// Why an argument is invalid, printed as RabbitMQ prints its error term.
enum Invalid {
    Text(String),
    Term(String),
}

fn integer(value: &AMQPValue) -> Result<i64, Invalid> {
    match value {
        AMQPValue::ShortShortInt(v) => Ok(i64::from(*v)),
        AMQPValue::ShortShortUInt(v) => Ok(i64::from(*v)),
        AMQPValue::ShortInt(v) => Ok(i64::from(*v)),
        AMQPValue::ShortUInt(v) => Ok(i64::from(*v)),
        AMQPValue::LongInt(v) => Ok(i64::from(*v)),
        AMQPValue::LongUInt(v) => Ok(i64::from(*v)),
        AMQPValue::LongLongInt(v) => Ok(*v),
        other => Err(Invalid::Text(format!(
            "expected integer, got {}",
            type_name(other)
        ))),
    }
}

fn non_negative(value: &AMQPValue) -> Result<u64, Invalid> {
    let v = integer(value)?;
    u64::try_from(v).map_err(|_| Invalid::Term(format!("{{value_negative,{v}}}")))
}

fn expiry(value: &AMQPValue) -> Result<u64, Invalid> {
    let v = non_negative(value)?;
    if v > MAX_EXPIRY_MS {
        return Err(Invalid::Term(format!("{{value_too_large,{v}}}")));
    }
    Ok(v)
}

fn string(value: &AMQPValue) -> Result<String, Invalid> {
    match value {
        AMQPValue::LongString(_) | AMQPValue::ShortString(_) => {
            Ok(as_str(value).map(|s| s.into_owned()).unwrap_or_default())
        }
        other => Err(Invalid::Term(format!(
            "{{unacceptable_type,{}}}",
            type_name(other)
        ))),
    }
}

fn boolean(value: &AMQPValue) -> Result<bool, Invalid> {
    match value {
        AMQPValue::Boolean(b) => Ok(*b),
        other => Err(Invalid::Term(format!(
            "{{unacceptable_type,{}}}",
            type_name(other)
        ))),
    }
}

/// Parse and validate a queue's arguments; `resource` is "queue 'q' in vhost '/'".
pub fn parse(arguments: &FieldTable, resource: &str) -> Result<QueueArgs, AmqpError> {
    let mut args = QueueArgs::default();
    let table = arguments.inner();
    let check = |key: &str, result: Result<(), Invalid>| {
        result.map_err(|invalid| {
            let term = match invalid {
                Invalid::Text(text) => format!("\"{text}\""),
                Invalid::Term(term) => term,
            };
            AmqpError::precondition_failed(format!("invalid arg '{key}' for {resource}: {term}"))
        })
    };
    // RabbitMQ's order of checks, so the first bad argument reported is the same: the
    // dead-letter exchange's type (the channel checks it before declaring), the queue type,
    // then each argument the queue type takes, in RabbitMQ's `declare_args()` order.
    if let Some(v) = table.get("x-dead-letter-exchange") {
        match string(v) {
            Ok(x) => args.dead_letter_exchange = Some(x),
            // RabbitMQ words this one differently.
            Err(_) => {
                return Err(AmqpError::precondition_failed(format!(
                    "invalid type '{}' for arg 'x-dead-letter-exchange' in {resource}",
                    type_name(v)
                )))
            }
        }
    }
    let mut kind = QueueType::Classic;
    if let Some(v) = table.get("x-queue-type") {
        check(
            "x-queue-type",
            string(v).and_then(|t| {
                kind = match t.as_str() {
                    "classic" => QueueType::Classic,
                    "quorum" => QueueType::Quorum,
                    "stream" => QueueType::Stream,
                    _ => return Err(Invalid::Text(format!("unsupported queue type '{t}'"))),
                };
                Ok(())
            }),
        )?;
    }
    args.queue_type = kind;
    // Only the arguments this queue type takes are validated; the others are refused by
    // [`check_declare`] or ignored.
    let table_get = |key: &str| table.get(key).filter(|_| kind.accepts(key));
    if let Some(v) = table_get("x-expires") {
        check(
            "x-expires",
            expiry(v).and_then(|ms| {
                if ms == 0 {
                    Err(Invalid::Term("{value_zero,0}".into()))
                } else {
                    args.expires = Some(ms);
                    Ok(())
                }
            }),
        )?;
    }
    if let Some(v) = table_get("x-message-ttl") {
        check(
            "x-message-ttl",
            expiry(v).map(|ms| args.message_ttl = Some(ms)),
        )?;
    }
    if let Some(v) = table_get("x-dead-letter-routing-key") {
        check(
            "x-dead-letter-routing-key",
            string(v).and_then(|k| {
                if table.contains_key("x-dead-letter-exchange") {
                    args.dead_letter_routing_key = Some(k);
                    Ok(())
                } else {
                    Err(Invalid::Term("routing_key_but_no_dlx_defined".into()))
                }
            }),
        )?;
    }
    for (key, slot) in [
        ("x-max-length", &mut args.max_length),
        ("x-max-length-bytes", &mut args.max_length_bytes),
    ] {
        if let Some(v) = table_get(key) {
            check(key, non_negative(v).map(|n| *slot = Some(n)))?;
        }
    }
    for key in ["x-max-in-memory-length", "x-max-in-memory-bytes"] {
        if let Some(v) = table_get(key) {
            check(key, non_negative(v).map(|_| ()))?;
        }
    }
    if let Some(v) = table_get("x-max-priority") {
        check(
            "x-max-priority",
            non_negative(v).and_then(|n| match u8::try_from(n) {
                Ok(p) => {
                    args.max_priority = Some(p);
                    Ok(())
                }
                Err(_) => Err(Invalid::Term(format!("{{max_value_exceeded,{n}}}"))),
            }),
        )?;
    }
    if let Some(v) = table_get("x-overflow") {
        check(
            "x-overflow",
            string(v).and_then(|o| {
                args.overflow = match o.as_str() {
                    "drop-head" => Overflow::DropHead,
                    "reject-publish" => Overflow::RejectPublish,
                    "reject-publish-dlx" => Overflow::RejectPublishDlx,
                    _ => return Err(Invalid::Term("invalid_overflow".into())),
                };
                Ok(())
            }),
        )?;
    }
    if let Some(v) = table_get("x-queue-mode") {
        check(
            "x-queue-mode",
            string(v).and_then(|m| match m.as_str() {
                "default" | "lazy" => Ok(()),
                _ => Err(Invalid::Text(format!("unsupported queue mode '{m}'"))),
            }),
        )?;
    }
    if let Some(v) = table_get("x-single-active-consumer") {
        check(
            "x-single-active-consumer",
            boolean(v).map(|b| args.single_active_consumer = b),
        )?;
    }
    // Quorum queues only. RabbitMQ 3.10 does not validate it; a value that is not a
    // non-negative integer sets no limit.
    if let Some(v) = table_get("x-delivery-limit") {
        args.delivery_limit = non_negative(v).ok();
    }
    if let Some(v) = table_get("x-max-age") {
        check(
            "x-max-age",
            string(v).and_then(|text| match parse_max_age(&text) {
                Some(ms) => {
                    args.max_age = Some(ms);
                    Ok(())
                }
                None => Err(Invalid::Term("invalid_max_age".into())),
            }),
        )?;
    }
    if let Some(v) = table_get("x-stream-max-segment-size-bytes") {
        check(
            "x-stream-max-segment-size-bytes",
            non_negative(v).map(|n| args.stream_segment_bytes = Some(n)),
        )?;
    }
    if let Some(v) = table_get("x-initial-cluster-size") {
        check(
            "x-initial-cluster-size",
            non_negative(v).and_then(|n| {
                if n == 0 {
                    Err(Invalid::Term("{value_zero,0}".into()))
                } else {
                    Ok(())
                }
            }),
        )?;
    }
    if let Some(v) = table_get("x-queue-leader-locator") {
        check(
            "x-queue-leader-locator",
            string(v).and_then(|l| match l.as_str() {
                "client-local" | "balanced" | "random" | "least-leaders" => Ok(()),
                _ => Err(Invalid::Term("invalid_queue_locator_arg".into())),
            }),
        )?;
    }
    // RabbitMQ 3.13's, checked as 4.x checks it (3.10 ignores it as unknown).
    if let Some(v) = table_get("x-stream-filter-size-bytes") {
        match integer(v) {
            Ok(n @ 16..=255) => args.stream_filter_bytes = Some(n as u8),
            _ => {
                return Err(AmqpError::precondition_failed(
                    "Invalid value for x-stream-filter-size-bytes",
                ))
            }
        }
    }
    // Leveret's own (RabbitMQ 3.10 ignores it as an unknown argument).
    if let Some(v) = table.get("x-consumer-timeout") {
        check(
            "x-consumer-timeout",
            non_negative(v).map(|n| args.consumer_timeout = Some(n)),
        )?;
    }
    Ok(args)
}

/// A consumer's `x-priority` argument (any integer; RabbitMQ's text names the queue).
pub fn parse_consumer_priority(
    value: Option<&AMQPValue>,
    resource: &str,
) -> Result<i32, AmqpError> {
    let Some(value) = value else {
        return Ok(0);
    };
    match integer(value) {
        Ok(p) => Ok(p.clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32),
        Err(Invalid::Text(text)) | Err(Invalid::Term(text)) => Err(AmqpError::precondition_failed(
            format!("invalid arg 'x-priority' for {resource}: \"{text}\""),
        )),
    }
}

/// Validate a message's `expiration` property: milliseconds as a decimal string. Texts are
/// RabbitMQ's, including Erlang's line break in the `value_too_large` term.
pub fn parse_expiration(expiration: &str) -> Result<u64, AmqpError> {
    let invalid = |term: String| {
        AmqpError::precondition_failed(format!("invalid expiration '{expiration}': {term}"))
    };
    // Erlang's string:to_integer: optional sign, then digits; anything after is "leftover".
    let bytes = expiration.as_bytes();
    let sign_len = usize::from(matches!(bytes.first(), Some(b'+' | b'-')));
    let digits = bytes[sign_len..]
        .iter()
        .take_while(|b| b.is_ascii_digit())
        .count();
    if digits == 0 {
        return Err(invalid("no_integer".into()));
    }
    let end = sign_len + digits;
    if end < bytes.len() {
        return Err(invalid(format!(
            "{{leftover_string,\"{}\"}}",
            &expiration[end..]
        )));
    }
    let negative = bytes[0] == b'-';
    let magnitude = expiration[sign_len..end].trim_start_matches('0');
    let magnitude = if magnitude.is_empty() { "0" } else { magnitude };
    let value: Option<u64> = magnitude.parse().ok();
    let prefix_len = "invalid expiration '".len() + expiration.len() + "': ".len();
    match (negative, value) {
        (true, Some(0)) => Ok(0),
        (true, _) => Err(invalid(erlang_tuple(
            prefix_len,
            "value_negative",
            &format!("-{magnitude}"),
        ))),
        (false, Some(v)) if v <= MAX_EXPIRY_MS => Ok(v),
        (false, _) => Err(invalid(erlang_tuple(
            prefix_len,
            "value_too_large",
            magnitude,
        ))),
    }
}

/// `{tag,value}` as Erlang's `~p` prints it at column `column`: on one line if it fits within
/// 78 columns, otherwise broken after the comma with the value aligned under the tag.
fn erlang_tuple(column: usize, tag: &str, value: &str) -> String {
    let flat = format!("{{{tag},{value}}}");
    if column + flat.len() <= 78 {
        flat
    } else {
        format!("{{{tag},\n{}{value}}}", " ".repeat(column + 1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{LongString, ShortString};

    fn table(pairs: Vec<(&str, AMQPValue)>) -> FieldTable {
        let mut t = FieldTable::default();
        for (k, v) in pairs {
            t.insert(ShortString::from(k), v);
        }
        t
    }

    fn text(pairs: Vec<(&str, AMQPValue)>) -> String {
        parse(&table(pairs), "queue 'q' in vhost '/'")
            .unwrap_err()
            .text
            .to_string()
    }

    #[test]
    fn invalid_arguments_get_rabbitmq_texts() {
        assert_eq!(
            text(vec![("x-message-ttl", AMQPValue::LongInt(-1))]),
            "PRECONDITION_FAILED - invalid arg 'x-message-ttl' for queue 'q' in vhost '/': {value_negative,-1}"
        );
        assert_eq!(
            text(vec![("x-message-ttl", AMQPValue::LongString(LongString::from("abc")))]),
            "PRECONDITION_FAILED - invalid arg 'x-message-ttl' for queue 'q' in vhost '/': \"expected integer, got longstr\""
        );
        assert_eq!(
            text(vec![("x-message-ttl", AMQPValue::Double(1000.0))]),
            "PRECONDITION_FAILED - invalid arg 'x-message-ttl' for queue 'q' in vhost '/': \"expected integer, got double\""
        );
        assert_eq!(
            text(vec![("x-expires", AMQPValue::LongInt(0))]),
            "PRECONDITION_FAILED - invalid arg 'x-expires' for queue 'q' in vhost '/': {value_zero,0}"
        );
        assert_eq!(
            text(vec![(
                "x-dead-letter-routing-key",
                AMQPValue::LongString(LongString::from("k"))
            )]),
            "PRECONDITION_FAILED - invalid arg 'x-dead-letter-routing-key' for queue 'q' in vhost '/': routing_key_but_no_dlx_defined"
        );
        assert_eq!(
            text(vec![("x-max-priority", AMQPValue::LongInt(256))]),
            "PRECONDITION_FAILED - invalid arg 'x-max-priority' for queue 'q' in vhost '/': {max_value_exceeded,256}"
        );
        assert_eq!(
            text(vec![("x-overflow", AMQPValue::LongString(LongString::from("foo")))]),
            "PRECONDITION_FAILED - invalid arg 'x-overflow' for queue 'q' in vhost '/': invalid_overflow"
        );
        assert_eq!(
            text(vec![("x-single-active-consumer", AMQPValue::LongInt(1))]),
            "PRECONDITION_FAILED - invalid arg 'x-single-active-consumer' for queue 'q' in vhost '/': {unacceptable_type,signedint}"
        );
        assert_eq!(
            text(vec![("x-dead-letter-exchange", AMQPValue::LongInt(1))]),
            "PRECONDITION_FAILED - invalid type 'signedint' for arg 'x-dead-letter-exchange' in queue 'q' in vhost '/'"
        );
        assert_eq!(
            text(vec![("x-message-ttl", AMQPValue::LongLongInt(315_360_000_001))]),
            "PRECONDITION_FAILED - invalid arg 'x-message-ttl' for queue 'q' in vhost '/': {value_too_large,315360000001}"
        );
        assert_eq!(
            text(vec![("x-max-length", AMQPValue::LongInt(-1))]),
            "PRECONDITION_FAILED - invalid arg 'x-max-length' for queue 'q' in vhost '/': {value_negative,-1}"
        );
    }

    #[test]
    fn valid_arguments_parse() {
        let args = parse(
            &table(vec![
                ("x-message-ttl", AMQPValue::LongLongInt(1000)),
                ("x-max-priority", AMQPValue::ShortShortUInt(10)),
                (
                    "x-overflow",
                    AMQPValue::LongString(LongString::from("reject-publish")),
                ),
                ("x-max-length", AMQPValue::LongInt(5)),
                ("x-single-active-consumer", AMQPValue::Boolean(true)),
            ]),
            "q",
        )
        .unwrap();
        assert_eq!(args.message_ttl, Some(1000));
        assert_eq!(args.max_priority, Some(10));
        assert!(args.may_refuse_publishes());
        assert!(args.single_active_consumer);
    }

    #[test]
    fn expirations_as_rabbitmq() {
        let e = |s: &str| parse_expiration(s).map_err(|e| e.text.to_string());
        assert_eq!(e("1000"), Ok(1000));
        assert_eq!(e("+100"), Ok(100));
        assert_eq!(e("00100"), Ok(100));
        assert_eq!(e("0"), Ok(0));
        assert_eq!(e("315360000000"), Ok(315_360_000_000));
        assert_eq!(
            e("abc").unwrap_err(),
            "PRECONDITION_FAILED - invalid expiration 'abc': no_integer"
        );
        assert_eq!(
            e("").unwrap_err(),
            "PRECONDITION_FAILED - invalid expiration '': no_integer"
        );
        assert_eq!(
            e(" 100").unwrap_err(),
            "PRECONDITION_FAILED - invalid expiration ' 100': no_integer"
        );
        assert_eq!(
            e("-1").unwrap_err(),
            "PRECONDITION_FAILED - invalid expiration '-1': {value_negative,-1}"
        );
        assert_eq!(
            e("1.5").unwrap_err(),
            "PRECONDITION_FAILED - invalid expiration '1.5': {leftover_string,\".5\"}"
        );
        assert_eq!(
            e("1e3").unwrap_err(),
            "PRECONDITION_FAILED - invalid expiration '1e3': {leftover_string,\"e3\"}"
        );
        assert_eq!(
            e("9223372036854775807").unwrap_err(),
            "PRECONDITION_FAILED - invalid expiration '9223372036854775807': {value_too_large,\n                                           9223372036854775807}"
        );
        assert_eq!(
            e("999999999999999999").unwrap_err(),
            "PRECONDITION_FAILED - invalid expiration '999999999999999999': {value_too_large,999999999999999999}"
        );
        assert_eq!(e("-00"), Ok(0));
        assert_eq!(
            e("-99999999999999999999").unwrap_err(),
            "PRECONDITION_FAILED - invalid expiration '-99999999999999999999': {value_negative,\n                                             -99999999999999999999}"
        );
        assert_eq!(
            e("99999999999999999999").unwrap_err(),
            "PRECONDITION_FAILED - invalid expiration '99999999999999999999': {value_too_large,\n                                            99999999999999999999}"
        );
    }
}
