//! A published message, shared by every queue it is routed to (`Arc<Message>`; body is `Bytes`).

use bytes::Bytes;

use crate::protocol::Properties;

/// A message as it travels from publisher to consumers.
#[derive(Debug, Clone)]
pub struct Message {
    /// Exchange it was published to.
    pub exchange: String,
    /// Routing key it was published with.
    pub routing_key: String,
    /// Parsed properties.
    pub properties: Properties,
    /// Properties in wire form, re-sent verbatim to consumers.
    pub raw_properties: Bytes,
    /// The body, shared and never copied per queue.
    pub body: Bytes,
}

impl Message {
    /// `delivery_mode = 2`.
    pub fn is_persistent(&self) -> bool {
        *self.properties.delivery_mode() == Some(2)
    }
}
