//! A stream consumer's arguments: where it starts (`x-stream-offset`), what it reads
//! (`x-stream-filter`, `x-stream-match-unfiltered`) and whether the broker remembers where it
//! got to (`x-stream-automatic-offset-tracking`).
//!
//! Checked in RabbitMQ 3.10's order, with its texts: the offset, the consumer arguments other
//! queue types take (`x-priority`), the prefetch, no-ack, global QoS. RabbitMQ 3.10 crashes
//! (541) on offset values it cannot read; Leveret answers them as 4.x does, with 406.

use std::sync::Arc;

use crate::protocol::codec::erlang_binary;
use crate::protocol::table::{as_str, type_name};
use crate::protocol::{AMQPValue, AmqpError, FieldTable};

/// Where a consumer starts reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetSpec {
    /// The oldest message kept.
    First,
    /// The start of the last batch written.
    Last,
    /// The next message written (the default).
    Next,
    /// An offset; a negative one counts back from the end (LavinMQ's `-100`: the last 100).
    Offset(i64),
    /// The first chunk holding messages written at or after this time (ms since the epoch).
    Timestamp(u64),
    /// That long ago (ms), as `7D` says.
    Ago(u64),
}

/// Which messages a consumer reads (RabbitMQ 3.13's stream filtering).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    /// The `x-stream-filter-value`s wanted (any of them).
    pub values: Vec<Arc<str>>,
    /// Also messages published without a filter value.
    pub match_unfiltered: bool,
}

impl Filter {
    /// Whether a message with this filter value is wanted.
    pub fn matches(&self, value: Option<&str>) -> bool {
        match value {
            Some(v) => self.values.iter().any(|w| &**w == v),
            None => self.match_unfiltered,
        }
    }
}

/// A stream consumer's settings, from its arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamConsumerArgs {
    /// Where it starts when no tracked offset applies.
    pub offset: OffsetSpec,
    /// Whether `x-stream-offset` was given (a tracked offset, when there is one, wins only
    /// over an absent or null offset, unless tracking was asked for explicitly).
    pub offset_given: bool,
    /// Its filter, if any.
    pub filter: Option<Filter>,
    /// Whether the broker tracks its offset under its tag.
    pub tracking: bool,
    /// `x-stream-automatic-offset-tracking: true`.
    pub tracking_asked: bool,
}

/// The most filter values a consumer may name.
const MAX_FILTER_VALUES: usize = 256;

/// An interval such as `7D` (`<positive int><Y|M|D|h|m|s>`), in ms.
pub fn parse_interval(text: &str) -> Option<u64> {
    crate::broker::queue::args::parse_max_age(text)
}

fn invalid_offset(value: &AMQPValue, resource: &str) -> AmqpError {
    let shown = match value {
        AMQPValue::LongString(s) => erlang_binary(s.as_bytes()),
        AMQPValue::ShortString(s) => erlang_binary(s.as_str().as_bytes()),
        AMQPValue::Boolean(b) => b.to_string(),
        other => crate::protocol::table::display_value(other),
    };
    AmqpError::precondition_failed(format!(
        "invalid arg 'x-stream-offset' for {resource}: {{invalid_stream_offset_arg,{{{},{shown}}}}}",
        type_name(value)
    ))
}

fn offset(value: Option<&AMQPValue>, resource: &str) -> Result<OffsetSpec, AmqpError> {
    let Some(value) = value else {
        return Ok(OffsetSpec::Next);
    };
    match value {
        AMQPValue::LongString(_) | AMQPValue::ShortString(_) => {
            let text = as_str(value).unwrap_or_default();
            match text.as_ref() {
                "first" => Ok(OffsetSpec::First),
                "last" => Ok(OffsetSpec::Last),
                "next" => Ok(OffsetSpec::Next),
                other => parse_interval(other)
                    .map(OffsetSpec::Ago)
                    .ok_or_else(|| invalid_offset(value, resource)),
            }
        }
        AMQPValue::ShortShortInt(_)
        | AMQPValue::ShortShortUInt(_)
        | AMQPValue::ShortInt(_)
        | AMQPValue::ShortUInt(_)
        | AMQPValue::LongInt(_)
        | AMQPValue::LongUInt(_)
        | AMQPValue::LongLongInt(_) => Ok(OffsetSpec::Offset(
            crate::protocol::table::as_i64(value).unwrap_or(0),
        )),
        AMQPValue::Timestamp(seconds) => Ok(OffsetSpec::Timestamp(seconds.saturating_mul(1000))),
        // LavinMQ's null offset: from the start, tracked.
        AMQPValue::Void => Ok(OffsetSpec::First),
        AMQPValue::Boolean(_)
        | AMQPValue::Float(_)
        | AMQPValue::Double(_)
        | AMQPValue::DecimalValue(_)
        | AMQPValue::FieldArray(_)
        | AMQPValue::FieldTable(_)
        | AMQPValue::ByteArray(_) => Err(invalid_offset(value, resource)),
    }
}

fn filter(arguments: &FieldTable) -> Option<Filter> {
    let values: Vec<Arc<str>> = match arguments.inner().get("x-stream-filter")? {
        AMQPValue::FieldArray(items) => items
            .as_slice()
            .iter()
            .filter_map(as_str)
            .take(MAX_FILTER_VALUES)
            .map(|s| Arc::from(s.as_ref()))
            .collect(),
        other => vec![Arc::from(as_str(other)?.as_ref())],
    };
    let match_unfiltered = matches!(
        arguments.inner().get("x-stream-match-unfiltered"),
        Some(AMQPValue::Boolean(true))
    );
    Some(Filter {
        values,
        match_unfiltered,
    })
}

/// What a consume asks of a stream, checked in RabbitMQ's order; `resource` is
/// "queue 's' in vhost '/'".
pub fn parse(
    arguments: &FieldTable,
    tag: &str,
    (prefetch, no_ack, global_limit): (u32, bool, bool),
    resource: &str,
) -> Result<StreamConsumerArgs, AmqpError> {
    let table = arguments.inner();
    let given = table.get("x-stream-offset");
    let offset = offset(given, resource)?;
    if table.contains_key("x-priority") {
        return Err(AmqpError::precondition_failed(format!(
            "invalid arg 'x-priority' for {resource} of queue type rabbit_stream_queue"
        )));
    }
    if prefetch == 0 {
        return Err(AmqpError::precondition_failed(format!(
            "consumer prefetch count is not set for '{resource}'"
        )));
    }
    if no_ack {
        return Err(AmqpError::not_implemented(format!(
            "automatic acknowledgement not supported by stream queues {resource}"
        )));
    }
    if global_limit {
        return Err(AmqpError::not_implemented(format!(
            "{resource} does not support global qos"
        )));
    }
    let tracking_asked = matches!(
        table.get("x-stream-automatic-offset-tracking"),
        Some(AMQPValue::Boolean(true))
    );
    let tracking = tracking_asked || !tag.starts_with("amq.ctag-");
    Ok(StreamConsumerArgs {
        offset,
        offset_given: given.is_some_and(|v| !matches!(v, AMQPValue::Void)),
        filter: filter(arguments),
        tracking,
        tracking_asked,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const R: &str = "queue 's' in vhost '/'";

    fn args(pairs: &[(&str, AMQPValue)]) -> FieldTable {
        let mut t = FieldTable::default();
        for (k, v) in pairs {
            t.insert((*k).into(), v.clone());
        }
        t
    }

    fn spec(v: AMQPValue) -> Result<OffsetSpec, String> {
        parse(&args(&[("x-stream-offset", v)]), "t", (10, false, false), R)
            .map(|a| a.offset)
            .map_err(|e| e.reply_text().as_str().to_owned())
    }

    #[test]
    fn offsets_as_rabbitmq_reads_them() {
        assert_eq!(
            spec(AMQPValue::LongString("first".into())),
            Ok(OffsetSpec::First)
        );
        assert_eq!(
            spec(AMQPValue::LongString("last".into())),
            Ok(OffsetSpec::Last)
        );
        assert_eq!(
            spec(AMQPValue::LongString("next".into())),
            Ok(OffsetSpec::Next)
        );
        assert_eq!(spec(AMQPValue::LongLongInt(5)), Ok(OffsetSpec::Offset(5)));
        assert_eq!(
            spec(AMQPValue::ShortInt(-100)),
            Ok(OffsetSpec::Offset(-100))
        );
        assert_eq!(
            spec(AMQPValue::Timestamp(10)),
            Ok(OffsetSpec::Timestamp(10_000))
        );
        assert_eq!(
            spec(AMQPValue::LongString("7D".into())),
            Ok(OffsetSpec::Ago(7 * 86_400_000))
        );
        assert_eq!(
            spec(AMQPValue::LongString("0s".into())),
            Err("PRECONDITION_FAILED - invalid arg 'x-stream-offset' for queue 's' in vhost '/': {invalid_stream_offset_arg,{longstr,<<\"0s\">>}}".into())
        );
        assert!(spec(AMQPValue::Boolean(true)).is_err());
        assert!(spec(AMQPValue::LongString("".into())).is_err());
    }

    #[test]
    fn checks_in_rabbitmqs_order() {
        let bad_offset = args(&[
            ("x-stream-offset", AMQPValue::LongString("0s".into())),
            ("x-priority", AMQPValue::LongInt(1)),
        ]);
        let e = parse(&bad_offset, "t", (0, true, true), R).unwrap_err();
        assert!(e.reply_text().as_str().contains("x-stream-offset"));
        let prio = args(&[("x-priority", AMQPValue::LongInt(1))]);
        let e = parse(&prio, "t", (0, true, true), R).unwrap_err();
        assert!(e.reply_text().as_str().contains("x-priority"));
        let none = FieldTable::default();
        let e = parse(&none, "t", (0, true, true), R).unwrap_err();
        assert!(e
            .reply_text()
            .as_str()
            .contains("prefetch count is not set"));
        let e = parse(&none, "t", (5, true, true), R).unwrap_err();
        assert!(e
            .reply_text()
            .as_str()
            .contains("automatic acknowledgement"));
        let e = parse(&none, "t", (5, false, true), R).unwrap_err();
        assert!(e.reply_text().as_str().contains("global qos"));
        assert!(parse(&none, "t", (5, false, false), R).is_ok());
    }

    #[test]
    fn filters_and_tracking() {
        let a = parse(
            &args(&[
                (
                    "x-stream-filter",
                    AMQPValue::FieldArray(
                        vec![
                            AMQPValue::LongString("ca".into()),
                            AMQPValue::LongString("tx".into()),
                        ]
                        .into(),
                    ),
                ),
                ("x-stream-match-unfiltered", AMQPValue::Boolean(true)),
            ]),
            "amq.ctag-x",
            (5, false, false),
            R,
        )
        .unwrap();
        let f = a.filter.unwrap();
        assert!(f.matches(Some("tx")) && f.matches(None) && !f.matches(Some("ny")));
        assert!(!a.tracking);
        let a = parse(&FieldTable::default(), "mine", (5, false, false), R).unwrap();
        assert!(a.tracking && !a.offset_given);
    }
}
