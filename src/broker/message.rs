//! A published message, shared by every queue it is routed to (`Arc<Message>`).
//!
//! Memory per queued message is what bounds a deep queue, so a message keeps only wire bytes
//! (properties as they arrived, and the body) plus the few facts routing and queueing need. Small
//! messages are copied once into one exact-size buffer on arrival, so they do not pin the
//! connection's read buffer; large bodies stay zero-copy slices of it. Names are `Arc<str>`, shared
//! between consecutive publishes with the same exchange and key.

use std::sync::Arc;

use bytes::Bytes;

use crate::protocol::codec::encode_properties;
use crate::protocol::table::decode_properties;
use crate::protocol::{AMQPValue, ShortString};

/// Messages whose properties and body together are at most this big are compacted on arrival.
const COMPACT_LIMIT: usize = 4096;

/// A message as it travels from publisher to consumers.
#[derive(Debug, Clone)]
pub struct Message {
    /// Exchange it was published to.
    pub exchange: Arc<str>,
    /// Routing key it was published with.
    pub routing_key: Arc<str>,
    /// Properties in wire form (flags + fields), re-sent verbatim to consumers.
    pub raw_properties: Bytes,
    /// The body, shared and never copied per queue.
    pub body: Bytes,
    /// `delivery_mode = 2`.
    pub persistent: bool,
    /// The `priority` property (0 when absent), for priority queues.
    pub priority: u8,
    /// The `expiration` property, validated, in milliseconds.
    pub expiration: Option<u64>,
}

impl Message {
    /// A message from its publish; compacts small ones into one allocation.
    pub fn new(
        exchange: Arc<str>,
        routing_key: Arc<str>,
        raw_properties: Bytes,
        body: Bytes,
        persistent: bool,
    ) -> Self {
        let (raw_properties, body) = if raw_properties.len() + body.len() <= COMPACT_LIMIT {
            let mut joined = Vec::with_capacity(raw_properties.len() + body.len());
            joined.extend_from_slice(&raw_properties);
            joined.extend_from_slice(&body);
            let joined = Bytes::from(joined);
            let split = raw_properties.len();
            (joined.slice(..split), joined.slice(split..))
        } else {
            (raw_properties, body)
        };
        Self {
            exchange,
            routing_key,
            raw_properties,
            body,
            persistent,
            priority: 0,
            expiration: None,
        }
    }

    /// The same message with the properties a queue acts on (priority and per-message TTL).
    pub fn with_queue_properties(mut self, priority: u8, expiration: Option<u64>) -> Self {
        self.priority = priority;
        self.expiration = expiration;
        self
    }

    /// A copy with one header set (the body stays shared). Properties that cannot be decoded
    /// are left as they are.
    pub fn with_header(&self, name: &str, value: AMQPValue) -> Self {
        let mut copy = self.clone();
        if let Some(properties) = decode_properties(&self.raw_properties) {
            let mut headers = properties.headers().clone().unwrap_or_default();
            headers.insert(ShortString::from(name), value);
            copy.raw_properties = encode_properties(&properties.with_headers(headers));
        }
        copy
    }
}
