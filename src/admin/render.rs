//! Broker objects as the JSON RabbitMQ's management API returns, and JSON arguments back
//! into AMQP tables.
//!
//! Field names and value types follow RabbitMQ 3.10's management plugin (recorded in
//! `interop/rabbitmq-3.10.8-management-api.md`), so tools written against it read Leveret's.

use crate::broker::queue::args::{declared_type, QueueType};
use serde_json::{json, Map, Value};

use super::rates::Rates;
use super::ApiError;
use crate::broker::connections::{ChannelInfo, ConnectionInfo, ConsumerInfo};
use crate::broker::exchange::{Binding, Destination};
use crate::broker::policy::PolicyRecord;
use crate::broker::queue::QueueGauges;
use crate::broker::vhost::{ExchangeInfo, QueueRecord};
use crate::protocol::nesting::MAX_TABLE_DEPTH;
use crate::protocol::{short_string, AMQPValue, FieldArray, FieldTable, Properties};

/// An AMQP field value as JSON (strings as text; byte strings that are not UTF-8 lossily).
pub fn value_json(value: &AMQPValue) -> Value {
    match value {
        AMQPValue::Boolean(b) => json!(b),
        AMQPValue::ShortShortInt(v) => json!(v),
        AMQPValue::ShortShortUInt(v) => json!(v),
        AMQPValue::ShortInt(v) => json!(v),
        AMQPValue::ShortUInt(v) => json!(v),
        AMQPValue::LongInt(v) => json!(v),
        AMQPValue::LongUInt(v) => json!(v),
        AMQPValue::LongLongInt(v) => json!(v),
        AMQPValue::Float(v) => json!(v),
        AMQPValue::Double(v) => json!(v),
        AMQPValue::DecimalValue(d) => json!(f64::from(d.value) / 10f64.powi(i32::from(d.scale))),
        AMQPValue::ShortString(s) => json!(s.as_str()),
        AMQPValue::LongString(s) => json!(String::from_utf8_lossy(s.as_bytes())),
        AMQPValue::ByteArray(b) => json!(String::from_utf8_lossy(b.as_slice())),
        AMQPValue::FieldArray(a) => Value::Array(a.as_slice().iter().map(value_json).collect()),
        AMQPValue::Timestamp(t) => json!(t),
        AMQPValue::FieldTable(t) => table_json(t),
        AMQPValue::Void => Value::Null,
    }
}

/// An AMQP table as a JSON object.
pub fn table_json(table: &FieldTable) -> Value {
    Value::Object(
        table
            .inner()
            .iter()
            .map(|(k, v)| (k.as_str().to_owned(), value_json(v)))
            .collect(),
    )
}

/// JSON as an AMQP value, as RabbitMQ converts management arguments: integers are long
/// (signed 64-bit), other numbers double, strings long strings. `None` when it nests deeper
/// than an AMQP table may ([`MAX_TABLE_DEPTH`]; serde_json already stops at 128 levels, so this
/// recursion is bounded): such a table could be stored but never read back.
fn json_value(value: &Value, depth: usize) -> Option<AMQPValue> {
    Some(match value {
        Value::Null => AMQPValue::Void,
        Value::Bool(b) => AMQPValue::Boolean(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => AMQPValue::LongLongInt(i),
            None => AMQPValue::Double(n.as_f64().unwrap_or_default()),
        },
        Value::String(s) => AMQPValue::LongString(s.as_str().into()),
        Value::Array(items) => {
            if depth >= MAX_TABLE_DEPTH {
                return None;
            }
            let items: Option<Vec<AMQPValue>> =
                items.iter().map(|v| json_value(v, depth + 1)).collect();
            AMQPValue::FieldArray(FieldArray::from(items?))
        }
        Value::Object(map) => AMQPValue::FieldTable(table_at(map, depth + 1)?),
    })
}

fn table_at(map: &Map<String, Value>, depth: usize) -> Option<FieldTable> {
    if depth > MAX_TABLE_DEPTH {
        return None;
    }
    let mut table = FieldTable::default();
    for (k, v) in map {
        table.insert(short_string(k), json_value(v, depth)?);
    }
    Some(table)
}

/// A JSON object as an AMQP table (keys cut to short strings); 400 when it nests too deep.
pub fn json_table(map: &Map<String, Value>) -> Result<FieldTable, ApiError> {
    table_at(map, 1).ok_or_else(|| {
        ApiError::bad_request(format!(
            "arguments nested deeper than {MAX_TABLE_DEPTH} levels"
        ))
    })
}

fn rate(count: u64, rate: f64) -> (u64, Value) {
    (count, json!({ "rate": rate }))
}

/// A queue as `GET /api/queues` lists it.
pub fn queue_json(
    vhost: &str,
    name: &str,
    record: &QueueRecord,
    policy: Option<&PolicyRecord>,
    rates: &Rates,
    disk: crate::store::QueueLogStats,
) -> Value {
    let g: &QueueGauges = record.handle.gauges();
    let load = QueueGauges::get;
    let (ready, unacked) = (load(&g.ready), load(&g.unacked));
    let key = format!("{vhost}\u{0}{name}");
    let (publish, publish_details) = rate(load(&g.published), rates.of(&key, "publish"));
    let (deliver, deliver_details) = rate(load(&g.delivered), rates.of(&key, "deliver_get"));
    let (ack, ack_details) = rate(load(&g.acked), rates.of(&key, "ack"));
    let (redeliver, redeliver_details) = rate(load(&g.redelivered), rates.of(&key, "redeliver"));
    let consumers = load(&g.consumers);
    let mut queue = json!({
        "name": name,
        "vhost": vhost,
        "durable": record.durable,
        "auto_delete": record.auto_delete,
        "exclusive": record.exclusive_owner.is_some(),
        "arguments": table_json(&record.arguments),
        "type": declared_type(&record.arguments).name(),
        "node": super::node(),
        "state": "running",
        "policy": policy.map(|p| p.name.as_str()),
        "effective_policy_definition": policy.map_or_else(|| json!({}), |p| json!(p.definition)),
        "consumers": consumers,
        "consumer_utilisation": if consumers > 0 { 1.0 } else { 0.0 },
        "messages": ready + unacked,
        "messages_details": { "rate": 0.0 },
        "messages_ready": ready,
        "messages_ready_details": { "rate": 0.0 },
        "messages_unacknowledged": unacked,
        "messages_unacknowledged_details": { "rate": 0.0 },
        "message_bytes": load(&g.ready_bytes),
        "message_bytes_ready": load(&g.ready_bytes),
        // Leveret's own: the queue's segment files in the message log.
        "disk_segments": disk.segments,
        "disk_bytes": disk.bytes,
        "disk_reclaimable_bytes": disk.reclaimable_bytes,
    });
    extend(
        &mut queue,
        json!({
            // RabbitMQ's memory and paging breakdown: Leveret keeps what is ready in memory or in
            // its store, and reports it all as in RAM, nothing paged out.
            "message_bytes_ram": load(&g.ready_bytes),
            "message_bytes_unacknowledged": 0,
            "message_bytes_paged_out": 0,
            "message_bytes_persistent": if record.durable { load(&g.ready_bytes) } else { 0 },
            "messages_ram": ready + unacked,
            "messages_ready_ram": ready,
            "messages_unacknowledged_ram": unacked,
            "messages_paged_out": 0,
            "messages_persistent": if record.durable { ready } else { 0 },
            "consumer_capacity": if consumers > 0 { 1.0 } else { 0.0 },
            "exclusive_consumer_tag": Value::Null,
            "single_active_consumer_tag": Value::Null,
            "head_message_timestamp": Value::Null,
            "operator_policy": Value::Null,
            "recoverable_slaves": Value::Null,
            "memory": 0,
            "reductions": 0,
            "reductions_details": { "rate": 0.0 },
            "garbage_collection": garbage_collection(),
        }),
    );
    extend(
        &mut queue,
        json!({
            "backing_queue_status": {
                "mode": "default", "version": 1, "len": ready, "q1": 0, "q2": 0,
                "delta": ["delta", "undefined", 0, 0, "undefined"], "q3": 0, "q4": ready,
                "target_ram_count": "infinity", "next_seq_id": 0, "next_deliver_seq_id": 0,
                "avg_ingress_rate": 0.0, "avg_egress_rate": 0.0, "avg_ack_ingress_rate": 0.0,
                "avg_ack_egress_rate": 0.0,
            },
            "message_stats": {
                "publish": publish,
                "publish_details": publish_details,
                "deliver_get": deliver,
                "deliver_get_details": deliver_details,
                "deliver": deliver,
                "deliver_details": deliver_details,
                "ack": ack,
                "ack_details": ack_details,
                "redeliver": redeliver,
                "redeliver_details": redeliver_details,
                "deliver_no_ack": 0, "deliver_no_ack_details": { "rate": 0.0 },
                "get": 0, "get_details": { "rate": 0.0 },
                "get_no_ack": 0, "get_no_ack_details": { "rate": 0.0 },
                "get_empty": 0, "get_empty_details": { "rate": 0.0 },
            },
        }),
    );
    if let (Some(idle), Some(o)) = (rates.idle_since(&key), queue.as_object_mut()) {
        o.insert("idle_since".into(), json!(idle));
    }
    if let (Some(stream), Some(o)) = (record.handle.stream_snapshot(), queue.as_object_mut()) {
        // Leveret's own fields: where the stream starts and ends, its segments, and where each
        // consumer is.
        o.insert("stream_first_offset".into(), json!(stream.first_offset));
        o.insert("stream_last_offset".into(), json!(stream.last_offset));
        o.insert("stream_segments".into(), json!(disk.segments));
        o.insert("stream_bytes".into(), json!(disk.bytes));
        o.insert(
            "stream_consumers".into(),
            Value::Array(
                stream
                    .consumers
                    .iter()
                    .map(|(tag, offset, acked)| {
                        json!({"consumer_tag": &**tag, "offset": offset, "acked_offset": acked})
                    })
                    .collect(),
            ),
        );
    }
    if let (QueueType::Quorum | QueueType::Stream, Some(o)) =
        (declared_type(&record.arguments), queue.as_object_mut())
    {
        // One node: it leads every quorum queue and is its only member.
        o.insert("leader".into(), json!(super::node()));
        o.insert("members".into(), json!([super::node()]));
        o.insert("online".into(), json!([super::node()]));
    }
    queue
}

/// Erlang's per-process garbage collection settings, which RabbitMQ reports for queues,
/// connections and channels; Leveret has no such processes and reports Erlang's defaults.
fn garbage_collection() -> Value {
    json!({
        "fullsweep_after": 65535, "max_heap_size": 0, "min_bin_vheap_size": 46422,
        "min_heap_size": 233, "minor_gcs": 0,
    })
}

/// Add `extra`'s fields to the object `value` (json! nests only so deep in one call).
fn extend(value: &mut Value, extra: Value) {
    if let (Some(map), Value::Object(extra)) = (value.as_object_mut(), extra) {
        map.extend(extra);
    }
}

/// An exchange as `GET /api/exchanges` lists it.
pub fn exchange_json(
    vhost: &str,
    x: &ExchangeInfo,
    policy: Option<&PolicyRecord>,
    rates: &Rates,
) -> Value {
    let mut exchange = json!({
        "name": x.name,
        "vhost": vhost,
        "type": x.kind,
        "durable": x.durable,
        "auto_delete": x.auto_delete,
        "internal": x.internal,
        "arguments": table_json(&x.arguments),
        "user_who_performed_action": "rmq-internal",
        "policy": policy.map(|p| p.name.as_str()),
    });
    // As RabbitMQ: counts once a message has come through, not before.
    if x.publish_in > 0 {
        let key = format!("\u{1}x\u{0}{vhost}\u{0}{}", x.name);
        let (publish_in, in_details) = rate(x.publish_in, rates.of(&key, "publish_in"));
        let (publish_out, out_details) = rate(x.publish_out, rates.of(&key, "publish_out"));
        extend(
            &mut exchange,
            json!({"message_stats": {
                "publish_in": publish_in,
                "publish_in_details": in_details,
                "publish_out": publish_out,
                "publish_out_details": out_details,
            }}),
        );
    }
    exchange
}

/// RabbitMQ's `properties_key` of a binding: `~` for no key and no arguments, else the
/// routing key with `%`-escapes, and a hash of the arguments when there are any.
pub fn properties_key(routing_key: &str, arguments: &FieldTable) -> String {
    if routing_key.is_empty() && arguments.inner().is_empty() {
        return "~".to_owned();
    }
    let mut key = percent_encode(routing_key);
    if !arguments.inner().is_empty() {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        table_json(arguments).to_string().hash(&mut h);
        key.push_str(&format!("~{:x}", h.finish()));
    }
    key
}

/// Percent-encode everything but unreserved characters (as RabbitMQ's `quote_plus`-like
/// encoding of binding keys in URLs).
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A binding as `GET /api/bindings` lists it.
pub fn binding_json(vhost: &str, source: &str, b: &Binding) -> Value {
    let (destination, destination_type) = match &b.destination {
        Destination::Queue(q) => (q.as_str(), "queue"),
        Destination::Exchange(x) => (x.as_str(), "exchange"),
    };
    json!({
        "source": source,
        "vhost": vhost,
        "destination": destination,
        "destination_type": destination_type,
        "routing_key": b.routing_key,
        "arguments": table_json(&b.arguments),
        "properties_key": properties_key(&b.routing_key, &b.arguments),
    })
}

/// The default exchange's implicit binding to a queue, as RabbitMQ lists it.
pub fn default_binding_json(vhost: &str, queue: &str) -> Value {
    json!({
        "source": "",
        "vhost": vhost,
        "destination": queue,
        "destination_type": "queue",
        "routing_key": queue,
        "arguments": {},
        "properties_key": percent_encode(queue),
    })
}

fn client_properties_json(table: &FieldTable) -> Value {
    table_json(table)
}

/// A connection as `GET /api/connections` lists it.
pub fn connection_json(c: &ConnectionInfo) -> Value {
    let channels = c.channels().len();
    let load = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
    let blocked = c.blocked.load(std::sync::atomic::Ordering::Relaxed);
    let mut connection = json!({
        "name": c.name,
        "vhost": c.vhost,
        "user": c.user,
        "user_who_performed_action": c.user,
        "node": super::node(),
        "type": "network",
        "protocol": "AMQP 0-9-1",
        "auth_mechanism": c.auth_mechanism,
        "host": c.local.ip().to_string(),
        "port": c.local.port(),
        "peer_host": c.peer.ip().to_string(),
        "peer_port": c.peer.port(),
        "ssl": c.tls.load(std::sync::atomic::Ordering::Relaxed),
        "channels": channels,
        "channel_max": c.channel_max,
        "frame_max": c.frame_max,
        "timeout": c.heartbeat,
        "connected_at": c.connected_at,
        "client_properties": client_properties_json(&c.client_properties),
        "state": if blocked { "blocked" } else { "running" },
        "recv_oct": load(&c.recv_oct),
        "send_oct": load(&c.send_oct),
        "recv_oct_details": { "rate": 0.0 },
        "send_oct_details": { "rate": 0.0 },
    });
    extend(
        &mut connection,
        json!({
            "recv_cnt": 0,
            "send_cnt": 0,
            "send_pend": 0,
            "user_provided_name": c.client_properties.inner().get("connection_name").map(value_json),
            "ssl_protocol": Value::Null,
            "ssl_key_exchange": Value::Null,
            "ssl_cipher": Value::Null,
            "ssl_hash": Value::Null,
            "peer_cert_subject": Value::Null,
            "peer_cert_issuer": Value::Null,
            "peer_cert_validity": Value::Null,
            "reductions": 0,
            "reductions_details": { "rate": 0.0 },
            "garbage_collection": garbage_collection(),
        }),
    );
    connection
}

/// A channel as `GET /api/channels` lists it.
pub fn channel_json(c: &ConnectionInfo, ch: &ChannelInfo, rates: &Rates) -> Value {
    let load = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
    let relaxed = std::sync::atomic::Ordering::Relaxed;
    let counters = &ch.counters;
    let mut channel = json!({
        "name": format!("{} ({})", c.name, ch.number),
        "number": ch.number,
        "vhost": c.vhost,
        "user": c.user,
        "node": super::node(),
        "connection_details": { "name": c.name, "peer_host": c.peer.ip().to_string(), "peer_port": c.peer.port() },
        "consumer_count": ch.consumers().len(),
        "messages_unacknowledged": load(&ch.unacked),
        "messages_unconfirmed": 0,
        "messages_uncommitted": 0,
        "acks_uncommitted": 0,
        "prefetch_count": ch.prefetch_count.load(relaxed),
        "global_prefetch_count": ch.global_prefetch_count.load(relaxed),
        "confirm": ch.confirm.load(relaxed),
        "transactional": ch.transactional.load(relaxed),
        "state": "running",
    });
    extend(
        &mut channel,
        json!({
            "user_who_performed_action": c.user,
            "pending_raft_commands": 0,
            "reductions": 0,
            "reductions_details": { "rate": 0.0 },
            "garbage_collection": garbage_collection(),
            "message_stats": {
                "publish": load(&counters.publish),
                "publish_details": { "rate": 0.0 },
                "confirm": load(&counters.confirm),
                "confirm_details": { "rate": 0.0 },
                "deliver": load(&counters.deliver),
                "deliver_details": { "rate": 0.0 },
                "get": load(&counters.get),
                "get_details": { "rate": 0.0 },
                "deliver_get": load(&counters.deliver) + load(&counters.get),
                "deliver_get_details": { "rate": 0.0 },
                "ack": load(&counters.ack),
                "ack_details": { "rate": 0.0 },
                "redeliver": load(&counters.redeliver),
                "redeliver_details": { "rate": 0.0 },
                "return_unroutable": load(&counters.unroutable),
                "return_unroutable_details": { "rate": 0.0 },
                "deliver_no_ack": 0, "deliver_no_ack_details": { "rate": 0.0 },
                "get_no_ack": 0, "get_no_ack_details": { "rate": 0.0 },
                "get_empty": 0, "get_empty_details": { "rate": 0.0 },
                "drop_unroutable": 0, "drop_unroutable_details": { "rate": 0.0 },
            },
        }),
    );
    if let (Some(idle), Some(o)) = (
        rates.idle_since(&super::rates::channel_key(&c.name, ch.number)),
        channel.as_object_mut(),
    ) {
        o.insert("idle_since".into(), json!(idle));
    }
    channel
}

/// A consumer as `GET /api/consumers` lists it.
pub fn consumer_json(c: &ConnectionInfo, ch: &ChannelInfo, consumer: &ConsumerInfo) -> Value {
    json!({
        "consumer_tag": consumer.tag,
        "queue": { "name": consumer.queue, "vhost": c.vhost },
        "channel_details": {
            "name": format!("{} ({})", c.name, ch.number),
            "number": ch.number,
            "connection_name": c.name,
            "peer_host": c.peer.ip().to_string(),
            "peer_port": c.peer.port(),
            "user": c.user,
            "node": super::node(),
        },
        "ack_required": consumer.ack_required,
        "exclusive": consumer.exclusive,
        "prefetch_count": consumer.prefetch_count,
        "active": true,
        "activity_status": "up",
        "arguments": table_json(&consumer.arguments),
    })
}

/// Message properties as the management API shows them (absent ones left out).
pub fn properties_json(p: &Properties) -> Value {
    let mut map = Map::new();
    let mut put = |k: &str, v: Option<Value>| {
        if let Some(v) = v {
            map.insert(k.to_owned(), v);
        }
    };
    put(
        "content_type",
        p.content_type().as_ref().map(|s| json!(s.as_str())),
    );
    put(
        "content_encoding",
        p.content_encoding().as_ref().map(|s| json!(s.as_str())),
    );
    put("headers", p.headers().as_ref().map(table_json));
    put("delivery_mode", p.delivery_mode().map(|v| json!(v)));
    put("priority", p.priority().map(|v| json!(v)));
    put(
        "correlation_id",
        p.correlation_id().as_ref().map(|s| json!(s.as_str())),
    );
    put("reply_to", p.reply_to().as_ref().map(|s| json!(s.as_str())));
    put(
        "expiration",
        p.expiration().as_ref().map(|s| json!(s.as_str())),
    );
    put(
        "message_id",
        p.message_id().as_ref().map(|s| json!(s.as_str())),
    );
    put("timestamp", p.timestamp().map(|v| json!(v)));
    put("type", p.kind().as_ref().map(|s| json!(s.as_str())));
    put("user_id", p.user_id().as_ref().map(|s| json!(s.as_str())));
    put("app_id", p.app_id().as_ref().map(|s| json!(s.as_str())));
    put(
        "cluster_id",
        p.cluster_id().as_ref().map(|s| json!(s.as_str())),
    );
    Value::Object(map)
}

/// Message properties from the management API's JSON (unknown keys ignored, as RabbitMQ).
pub fn json_properties(map: &Map<String, Value>) -> Result<Properties, ApiError> {
    let text = |k: &str| map.get(k).and_then(Value::as_str).map(short_string);
    let mut p = Properties::default();
    if let Some(v) = text("content_type") {
        p = p.with_content_type(v);
    }
    if let Some(v) = text("content_encoding") {
        p = p.with_content_encoding(v);
    }
    if let Some(Value::Object(h)) = map.get("headers") {
        p = p.with_headers(json_table(h)?);
    }
    if let Some(v) = map.get("delivery_mode").and_then(Value::as_u64) {
        p = p.with_delivery_mode(v as u8);
    }
    if let Some(v) = map.get("priority").and_then(Value::as_u64) {
        p = p.with_priority(v as u8);
    }
    if let Some(v) = text("correlation_id") {
        p = p.with_correlation_id(v);
    }
    if let Some(v) = text("reply_to") {
        p = p.with_reply_to(v);
    }
    if let Some(v) = text("expiration") {
        p = p.with_expiration(v);
    }
    if let Some(v) = text("message_id") {
        p = p.with_message_id(v);
    }
    if let Some(v) = map.get("timestamp").and_then(Value::as_u64) {
        p = p.with_timestamp(v);
    }
    if let Some(v) = text("type") {
        p = p.with_type(v);
    }
    if let Some(v) = text("user_id") {
        p = p.with_user_id(v);
    }
    if let Some(v) = text("app_id") {
        p = p.with_app_id(v);
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_round_trip_through_json() {
        let v = json!({"x-max-length": 10, "x-dead-letter-exchange": "dlx", "flag": true, "nested": {"a": [1, "b"]}});
        let table = json_table(v.as_object().unwrap()).unwrap();
        assert_eq!(table_json(&table), v);
        assert!(matches!(
            table.inner().get("x-max-length"),
            Some(AMQPValue::LongLongInt(10))
        ));
    }

    #[test]
    fn properties_keys_are_rabbitmqs() {
        assert_eq!(properties_key("", &FieldTable::default()), "~");
        assert_eq!(properties_key("a.b", &FieldTable::default()), "a.b");
        assert_eq!(properties_key("a b/c", &FieldTable::default()), "a%20b%2Fc");
    }
}
