//! Policies: per-vhost settings applied to queues and exchanges whose names match a pattern,
//! resolved against declaration arguments with RabbitMQ 3.10's precedence.
//!
//! One policy applies to an object: the highest priority among those whose pattern matches
//! and whose `apply-to` covers it (RabbitMQ breaks ties by an internal hash order; Leveret
//! takes the greatest name, so ties are at least stable). Against queue arguments, the
//! smaller number wins for `message-ttl`, `expires`, `max-length`, `max-length-bytes` and
//! `delivery-limit`; the argument wins for `dead-letter-exchange`, `dead-letter-routing-key`
//! and `overflow` (classic queues); an exchange's `alternate-exchange` argument wins over the
//! policy's.

use regex::Regex;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::access::AdminError;
use super::queue::args::{Overflow, QueueArgs, MAX_EXPIRY_MS};
use crate::protocol::table::lookup;
use crate::protocol::FieldTable;

/// A policy as stored, exported and shown by the API.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PolicyRecord {
    /// The vhost.
    pub vhost: String,
    /// The policy's name.
    pub name: String,
    /// Regex matched (unanchored) against object names.
    pub pattern: String,
    /// `queues`, `exchanges` or `all`.
    #[serde(rename = "apply-to")]
    pub apply_to: String,
    /// The settings.
    pub definition: Map<String, Value>,
    /// Higher wins.
    pub priority: i64,
}

/// A validated policy with its compiled pattern.
#[derive(Debug, Clone)]
pub struct Policy {
    /// What was set.
    pub record: PolicyRecord,
    pattern: Regex,
}

/// What a policy applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// Queues.
    Queue,
    /// Exchanges.
    Exchange,
}

/// RabbitMQ's validation failure text (with the management API's HTML escaping).
fn invalid(detail: String) -> AdminError {
    AdminError::BadRequest(format!(
        "Validation failed\n\n{}\n",
        detail.replace('<', "&lt;").replace('>', "&gt;")
    ))
}

fn erlang(value: &Value) -> String {
    match value {
        Value::String(s) => format!("<<\"{s}\">>"),
        other => other.to_string(),
    }
}

impl Policy {
    /// Validate a policy as RabbitMQ does.
    pub fn new(record: PolicyRecord) -> Result<Self, AdminError> {
        match record.apply_to.as_str() {
            "queues" | "exchanges" | "all" | "classic_queues" => {}
            other => {
                return Err(invalid(format!(
                    "<<\"{other}\">> was not one of [<<\"all\">>,<<\"exchanges\">>,<<\"queues\">>]"
                )))
            }
        }
        let pattern = Regex::new(&record.pattern).map_err(|e| {
            invalid(format!(
                "<<\"{}\">> is not a valid regex: {e}",
                record.pattern
            ))
        })?;
        if record.definition.is_empty() {
            return Err(invalid("no policy provided".to_owned()));
        }
        let mut unknown = Vec::new();
        for (key, value) in &record.definition {
            let number = |min: i64, what: &str| match value.as_i64() {
                Some(n) if n >= min && n as u64 <= MAX_EXPIRY_MS.max(u64::MAX >> 1) => Ok(()),
                _ => Err(invalid(format!("{} is not a valid {what}", erlang(value)))),
            };
            let text = |what: &str| match value {
                Value::String(_) => Ok(()),
                _ => Err(invalid(format!("{} is not a valid {what}", erlang(value)))),
            };
            match key.as_str() {
                "message-ttl" => number(0, "message TTL")?,
                "expires" => number(1, "queue TTL")?,
                "max-length" => number(0, "maximum length")?,
                "max-length-bytes" => number(0, "maximum length in bytes")?,
                "delivery-limit" => number(0, "delivery limit")?,
                "max-age" => match value
                    .as_str()
                    .and_then(crate::broker::queue::args::parse_max_age)
                {
                    Some(_) => {}
                    None => {
                        return Err(invalid(format!("{} is not a valid max age", erlang(value))))
                    }
                },
                "stream-max-segment-size-bytes" => number(0, "segment size")?,
                "dead-letter-exchange" => text("dead letter exchange")?,
                "dead-letter-routing-key" => text("dead letter routing key")?,
                "alternate-exchange" => text("alternate exchange")?,
                "overflow" => match value.as_str() {
                    Some("drop-head" | "reject-publish" | "reject-publish-dlx") => {}
                    _ => {
                        return Err(invalid(format!(
                            "{} is not a valid overflow value",
                            erlang(value)
                        )))
                    }
                },
                _ => unknown.push(format!("{{<<\"{key}\">>,{}}}", erlang(value))),
            }
        }
        if !unknown.is_empty() {
            return Err(invalid(format!(
                "[{}] are not recognised policy settings",
                unknown.join(",")
            )));
        }
        Ok(Self { record, pattern })
    }

    fn applies(&self, target: Target, name: &str) -> bool {
        let kind = matches!(
            (self.record.apply_to.as_str(), target),
            ("all", _)
                | ("queues" | "classic_queues", Target::Queue)
                | ("exchanges", Target::Exchange)
        );
        kind && self.pattern.is_match(name)
    }

    fn number(&self, key: &str) -> Option<u64> {
        self.record
            .definition
            .get(key)
            .and_then(Value::as_i64)
            .and_then(|n| u64::try_from(n).ok())
    }

    fn text(&self, key: &str) -> Option<String> {
        self.record
            .definition
            .get(key)
            .and_then(Value::as_str)
            .map(str::to_owned)
    }

    /// The policy's alternate exchange, if it sets one.
    pub fn alternate_exchange(&self) -> Option<String> {
        self.text("alternate-exchange")
    }
}

/// The policy that applies to `name`, if any.
pub fn select<'a>(policies: &'a [Policy], target: Target, name: &str) -> Option<&'a Policy> {
    policies
        .iter()
        .filter(|p| p.applies(target, name))
        .max_by(|a, b| {
            (a.record.priority, &a.record.name).cmp(&(b.record.priority, &b.record.name))
        })
}

fn smaller(argument: Option<u64>, policy: Option<u64>) -> Option<u64> {
    match (argument, policy) {
        (Some(a), Some(p)) => Some(a.min(p)),
        (a, p) => a.or(p),
    }
}

/// A queue's effective settings: its arguments with the policy's applied.
pub fn effective_queue_args(
    declared: &QueueArgs,
    arguments: &FieldTable,
    policy: Option<&Policy>,
) -> QueueArgs {
    let Some(p) = policy else {
        return declared.clone();
    };
    let mut args = declared.clone();
    args.message_ttl = smaller(declared.message_ttl, p.number("message-ttl"));
    args.expires = smaller(declared.expires, p.number("expires"));
    args.max_length = smaller(declared.max_length, p.number("max-length"));
    args.max_length_bytes = smaller(declared.max_length_bytes, p.number("max-length-bytes"));
    args.delivery_limit = smaller(declared.delivery_limit, p.number("delivery-limit"));
    // A stream's retention settings: the policy's win.
    if let Some(age) = p
        .text("max-age")
        .and_then(|t| crate::broker::queue::args::parse_max_age(&t))
    {
        args.max_age = Some(age);
    }
    if let Some(bytes) = p.number("stream-max-segment-size-bytes") {
        args.stream_segment_bytes = Some(bytes);
    }
    if declared.dead_letter_exchange.is_none() {
        args.dead_letter_exchange = p.text("dead-letter-exchange");
    }
    if declared.dead_letter_routing_key.is_none() {
        args.dead_letter_routing_key = p.text("dead-letter-routing-key");
    }
    if lookup(Some(arguments), "x-overflow").is_none() {
        args.overflow = match p.text("overflow").as_deref() {
            Some("reject-publish") => Overflow::RejectPublish,
            Some("reject-publish-dlx") => Overflow::RejectPublishDlx,
            _ => Overflow::DropHead,
        };
    }
    args
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn policy(name: &str, pattern: &str, priority: i64, definition: Value) -> Policy {
        Policy::new(PolicyRecord {
            vhost: "/".into(),
            name: name.into(),
            pattern: pattern.into(),
            apply_to: "queues".into(),
            definition: definition.as_object().unwrap().clone(),
            priority,
        })
        .unwrap()
    }

    #[test]
    fn the_highest_priority_matching_policy_applies() {
        let ps = vec![
            policy("low", "^q", 0, json!({"max-length": 1})),
            policy("high", "^q", 5, json!({"max-length": 2})),
            policy("other", "^x", 9, json!({"max-length": 3})),
        ];
        assert_eq!(
            select(&ps, Target::Queue, "q1").unwrap().record.name,
            "high"
        );
        assert!(select(&ps, Target::Exchange, "q1").is_none());
        assert!(select(&ps, Target::Queue, "z").is_none());
    }

    #[test]
    fn numbers_take_the_smaller_and_arguments_win_for_the_rest() {
        let mut arguments = FieldTable::default();
        arguments.insert(
            "x-overflow".into(),
            crate::protocol::AMQPValue::LongString("drop-head".into()),
        );
        let declared = QueueArgs {
            max_length: Some(2),
            message_ttl: Some(100),
            dead_letter_exchange: Some("arg-dlx".into()),
            ..QueueArgs::default()
        };
        let p = policy(
            "p",
            ".*",
            0,
            json!({"max-length": 5, "message-ttl": 50, "expires": 1000, "dead-letter-exchange": "pol-dlx", "overflow": "reject-publish", "dead-letter-routing-key": "rk"}),
        );
        let args = effective_queue_args(&declared, &arguments, Some(&p));
        assert_eq!(args.max_length, Some(2));
        assert_eq!(args.message_ttl, Some(50));
        assert_eq!(args.expires, Some(1000));
        assert_eq!(args.dead_letter_exchange.as_deref(), Some("arg-dlx"));
        assert_eq!(args.dead_letter_routing_key.as_deref(), Some("rk"));
        assert_eq!(args.overflow, Overflow::DropHead);
        let args = effective_queue_args(&declared, &FieldTable::default(), Some(&p));
        assert_eq!(args.overflow, Overflow::RejectPublish);
    }

    #[test]
    fn validation_uses_rabbitmqs_texts() {
        let bad = |definition: Value| {
            Policy::new(PolicyRecord {
                vhost: "/".into(),
                name: "p".into(),
                pattern: "^q".into(),
                apply_to: "queues".into(),
                definition: definition.as_object().unwrap().clone(),
                priority: 1,
            })
            .unwrap_err()
            .to_string()
        };
        assert_eq!(
            bad(json!({"max-length": "x"})),
            "Validation failed\n\n&lt;&lt;\"x\"&gt;&gt; is not a valid maximum length\n"
        );
        assert_eq!(
            bad(json!({"no-such-key": 1})),
            "Validation failed\n\n[{&lt;&lt;\"no-such-key\"&gt;&gt;,1}] are not recognised policy settings\n"
        );
    }
}
