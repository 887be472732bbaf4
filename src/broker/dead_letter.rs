//! Dead-lettering: the message a queue republishes to its dead-letter exchange when one of its
//! messages dies, and RabbitMQ's cycle rule.
//!
//! Pure functions over a [`Message`]: the copy keeps every property but `expiration` (kept as
//! `original-expiration` in the death record), gets an `x-death` entry per (queue, reason) with
//! `count` incremented in place, newest first, and `x-first-death-*` headers set once. The body is
//! shared, never copied.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::message::Message;
use crate::protocol::codec::encode_properties;
use crate::protocol::table::{as_str, decode_properties};
use crate::protocol::{AMQPValue, FieldArray, FieldTable, LongString, Properties, ShortString};

/// Why a message died, as written in `x-death`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeathReason {
    /// Rejected or nacked without requeue.
    Rejected,
    /// Its TTL passed.
    Expired,
    /// Pushed out (or refused) by a length limit.
    Maxlen,
    /// Returned more often than the queue's delivery limit.
    DeliveryLimit,
}

impl DeathReason {
    /// The name RabbitMQ writes.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Rejected => "rejected",
            Self::Expired => "expired",
            Self::Maxlen => "maxlen",
            Self::DeliveryLimit => "delivery_limit",
        }
    }
}

/// A dead-lettered copy, ready to route.
#[derive(Debug)]
pub struct DeadLetter {
    /// The copy, addressed to the dead-letter exchange.
    pub message: Message,
    /// Keys to route it with.
    pub routing_keys: Vec<String>,
    /// Its headers (for headers exchanges and cycle detection).
    pub headers: FieldTable,
}

fn long(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s.as_bytes().to_vec()))
}

fn text(value: Option<&AMQPValue>) -> Option<String> {
    value.and_then(as_str).map(|s| s.into_owned())
}

/// The CC keys a message carries in its headers.
fn cc_keys(headers: &FieldTable) -> Vec<String> {
    match headers.inner().get("CC") {
        Some(AMQPValue::FieldArray(list)) => list
            .as_slice()
            .iter()
            .filter_map(|v| text(Some(v)))
            .collect(),
        _ => Vec::new(),
    }
}

/// The copy of `message` that dies in `queue` for `reason`, addressed to `dlx`.
pub fn make(
    message: &Message,
    reason: DeathReason,
    queue: &str,
    dlx: &str,
    dead_letter_routing_key: Option<&str>,
    now_secs: u64,
) -> Option<DeadLetter> {
    let properties = decode_properties(&message.raw_properties)?;
    let mut headers: BTreeMap<ShortString, AMQPValue> = properties
        .headers()
        .as_ref()
        .map(|h| h.inner().clone())
        .unwrap_or_default();
    let cc = cc_keys(&FieldTable::from(headers.clone()));
    // The first key is the one published with; the others are CC keys (BCC never reaches here).
    let mut death_keys = vec![message.routing_key.to_string()];
    death_keys.extend(cc.iter().cloned());

    let mut info = BTreeMap::new();
    info.insert(ShortString::from("reason"), long(reason.as_str()));
    info.insert(ShortString::from("queue"), long(queue));
    info.insert(ShortString::from("time"), AMQPValue::Timestamp(now_secs));
    info.insert(ShortString::from("exchange"), long(&message.exchange));
    info.insert(
        ShortString::from("routing-keys"),
        AMQPValue::FieldArray(FieldArray::from(
            death_keys.iter().map(|k| long(k)).collect::<Vec<_>>(),
        )),
    );
    if let Some(expiration) = properties.expiration() {
        info.insert(
            ShortString::from("original-expiration"),
            long(expiration.as_str()),
        );
    }

    // RabbitMQ sets x-first-death-* only with the first x-death header; a message that came
    // with any x-death (even a malformed one) keeps whatever it had.
    let first_death = !headers.contains_key("x-death");
    let previous: Vec<AMQPValue> = match headers.get("x-death") {
        Some(AMQPValue::FieldArray(list)) => list.as_slice().to_vec(),
        _ => Vec::new(),
    };
    let same_death = |v: &AMQPValue| match v {
        AMQPValue::FieldTable(t) => {
            text(t.inner().get("queue")).as_deref() == Some(queue)
                && text(t.inner().get("reason")).as_deref() == Some(reason.as_str())
        }
        _ => false,
    };
    // One entry per (queue, reason): a repeat death counts up the existing entry and moves it
    // to the front; the entry keeps the details of the first such death.
    let (matches, others): (Vec<AMQPValue>, Vec<AMQPValue>) =
        previous.into_iter().partition(same_death);
    let entry = match matches.into_iter().next() {
        Some(AMQPValue::FieldTable(old)) => {
            let mut old = old.inner().clone();
            let count = old
                .get("count")
                .and_then(crate::protocol::table::as_i64)
                .unwrap_or(0);
            old.insert(
                ShortString::from("count"),
                AMQPValue::LongLongInt(count + 1),
            );
            old
        }
        _ => {
            info.insert(ShortString::from("count"), AMQPValue::LongLongInt(1));
            info
        }
    };
    let mut deaths = vec![AMQPValue::FieldTable(FieldTable::from(entry))];
    deaths.extend(others);
    headers.insert(
        ShortString::from("x-death"),
        AMQPValue::FieldArray(FieldArray::from(deaths)),
    );
    if first_death {
        for (key, value) in [
            ("x-first-death-reason", reason.as_str()),
            ("x-first-death-queue", queue),
            ("x-first-death-exchange", &message.exchange),
        ] {
            headers.insert(ShortString::from(key), long(value));
        }
    }

    let routing_keys = match dead_letter_routing_key {
        Some(key) => {
            headers.remove("CC");
            vec![key.to_owned()]
        }
        None => death_keys,
    };
    let headers = FieldTable::from(headers);
    let properties = clear_expiration(properties.with_headers(headers.clone()));
    let routing_key: Arc<str> = Arc::from(routing_keys[0].as_str());
    let copy = Message::new(
        Arc::from(dlx),
        routing_key,
        encode_properties(&properties),
        message.body.clone(),
        message.persistent,
    )
    // From the properties: a message read back from the store has no decoded priority.
    .with_queue_properties(properties.priority().unwrap_or(0), None);
    Some(DeadLetter {
        message: copy,
        routing_keys,
        headers,
    })
}

/// Rebuild properties without `expiration` (the builder API cannot unset a field).
fn clear_expiration(p: Properties) -> Properties {
    let mut out = Properties::default();
    if let Some(v) = p.content_type() {
        out = out.with_content_type(v.clone());
    }
    if let Some(v) = p.content_encoding() {
        out = out.with_content_encoding(v.clone());
    }
    if let Some(v) = p.headers() {
        out = out.with_headers(v.clone());
    }
    if let Some(v) = p.delivery_mode() {
        out = out.with_delivery_mode(*v);
    }
    if let Some(v) = p.priority() {
        out = out.with_priority(*v);
    }
    if let Some(v) = p.correlation_id() {
        out = out.with_correlation_id(v.clone());
    }
    if let Some(v) = p.reply_to() {
        out = out.with_reply_to(v.clone());
    }
    if let Some(v) = p.message_id() {
        out = out.with_message_id(v.clone());
    }
    if let Some(v) = p.timestamp() {
        out = out.with_timestamp(*v);
    }
    if let Some(v) = p.kind() {
        out = out.with_type(v.clone());
    }
    if let Some(v) = p.user_id() {
        out = out.with_user_id(v.clone());
    }
    if let Some(v) = p.app_id() {
        out = out.with_app_id(v.clone());
    }
    if let Some(v) = p.cluster_id() {
        out = out.with_cluster_id(v.clone());
    }
    out
}

/// RabbitMQ's cycle rule: a copy must not go to `queue` if it already died there and every
/// death since (including that one) was automatic, with no rejection in between.
pub fn is_cycle(queue: &str, headers: &FieldTable) -> bool {
    let Some(AMQPValue::FieldArray(deaths)) = headers.inner().get("x-death") else {
        return false;
    };
    let deaths = deaths.as_slice();
    let Some(at) = deaths.iter().position(|d| match d {
        AMQPValue::FieldTable(t) => text(t.inner().get("queue")).as_deref() == Some(queue),
        _ => false,
    }) else {
        return false;
    };
    deaths[..=at].iter().all(|d| match d {
        AMQPValue::FieldTable(t) => text(t.inner().get("reason")).as_deref() != Some("rejected"),
        // Something a client put there: not a fully automatic cycle.
        _ => false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn message(props: Properties) -> Message {
        Message::new(
            Arc::from("src"),
            Arc::from("k"),
            encode_properties(&props),
            Bytes::from_static(b"body"),
            true,
        )
    }

    fn deaths(headers: &FieldTable) -> Vec<BTreeMap<ShortString, AMQPValue>> {
        match headers.inner().get("x-death") {
            Some(AMQPValue::FieldArray(a)) => a
                .as_slice()
                .iter()
                .filter_map(|v| match v {
                    AMQPValue::FieldTable(t) => Some(t.inner().clone()),
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        }
    }

    #[test]
    fn first_death_records_everything_and_drops_expiration() {
        let mut h = FieldTable::default();
        h.insert(
            "CC".into(),
            AMQPValue::FieldArray(FieldArray::from(vec![long("cc1")])),
        );
        let m = message(
            Properties::default()
                .with_headers(h)
                .with_expiration("60000".into())
                .with_message_id("id".into()),
        );
        let dl = make(&m, DeathReason::Rejected, "A", "dlx", None, 1000).unwrap();
        assert_eq!(&*dl.message.exchange, "dlx");
        assert_eq!(dl.routing_keys, vec!["k".to_owned(), "cc1".to_owned()]);
        let props = decode_properties(&dl.message.raw_properties).unwrap();
        assert!(props.expiration().is_none());
        assert_eq!(props.message_id().as_ref().map(|s| s.as_str()), Some("id"));
        let d = deaths(&dl.headers);
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].get("count"), Some(&AMQPValue::LongLongInt(1)));
        assert_eq!(d[0].get("time"), Some(&AMQPValue::Timestamp(1000)));
        assert_eq!(d[0].get("original-expiration"), Some(&long("60000")));
        assert_eq!(d[0].get("queue"), Some(&long("A")));
        assert_eq!(
            dl.headers.inner().get("x-first-death-reason"),
            Some(&long("rejected"))
        );
        assert_eq!(dl.message.body, m.body);
    }

    #[test]
    fn repeat_death_counts_in_place_and_new_death_goes_first() {
        let m = message(Properties::default());
        let once = make(&m, DeathReason::Expired, "A", "dlx", None, 1).unwrap();
        let twice = make(&once.message, DeathReason::Expired, "A", "dlx", None, 2).unwrap();
        let d = deaths(&twice.headers);
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].get("count"), Some(&AMQPValue::LongLongInt(2)));
        assert_eq!(d[0].get("time"), Some(&AMQPValue::Timestamp(1)));
        let third = make(
            &twice.message,
            DeathReason::Rejected,
            "B",
            "dlx",
            Some("r"),
            3,
        )
        .unwrap();
        let d = deaths(&third.headers);
        assert_eq!(d.len(), 2);
        assert_eq!(d[0].get("queue"), Some(&long("B")));
        assert_eq!(third.routing_keys, vec!["r".to_owned()]);
        assert_eq!(
            third.headers.inner().get("x-first-death-queue"),
            Some(&long("A"))
        );
    }

    #[test]
    fn cycles_without_rejection_are_detected() {
        let m = message(Properties::default());
        let expired = make(&m, DeathReason::Expired, "A", "dlx", None, 1).unwrap();
        assert!(is_cycle("A", &expired.headers));
        assert!(!is_cycle("B", &expired.headers));
        let rejected = make(&m, DeathReason::Rejected, "W", "dlx", None, 1).unwrap();
        let retried = make(&rejected.message, DeathReason::Expired, "R", "dlx", None, 2).unwrap();
        assert!(!is_cycle("W", &retried.headers));
    }
}
