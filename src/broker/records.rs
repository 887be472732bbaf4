//! How broker entities are written to the store: definitions and message records.
//!
//! A small length-prefixed format, versioned by the store's format marker. Readers return `None`
//! on anything malformed; recovery reports such records instead of panicking.

use std::sync::Arc;

use bytes::Bytes;

use super::exchange::{Binding, Destination};
use super::message::Message;
use crate::protocol::table::{decode_table, encode_table};
use crate::protocol::FieldTable;

/// Appends fields to a record.
#[derive(Debug, Default)]
pub(crate) struct RecordWriter(Vec<u8>);

impl RecordWriter {
    pub(crate) fn with_capacity(n: usize) -> Self {
        Self(Vec::with_capacity(n))
    }
    pub(crate) fn u8(mut self, v: u8) -> Self {
        self.0.push(v);
        self
    }
    pub(crate) fn bytes(mut self, v: &[u8]) -> Self {
        self.0.extend_from_slice(&(v.len() as u32).to_be_bytes());
        self.0.extend_from_slice(v);
        self
    }
    pub(crate) fn str(self, v: &str) -> Self {
        self.bytes(v.as_bytes())
    }
    pub(crate) fn table(self, t: &FieldTable) -> Self {
        self.bytes(&encode_table(t))
    }
    /// Unprefixed bytes to the end of the record.
    pub(crate) fn rest(mut self, v: &[u8]) -> Self {
        self.0.extend_from_slice(v);
        self
    }
    pub(crate) fn finish(self) -> Vec<u8> {
        self.0
    }
}

/// Reads fields back.
#[derive(Debug)]
pub(crate) struct RecordReader<'a>(&'a [u8]);

impl<'a> RecordReader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Self(bytes)
    }
    pub(crate) fn u8(&mut self) -> Option<u8> {
        let (first, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(*first)
    }
    pub(crate) fn bytes(&mut self) -> Option<&'a [u8]> {
        if self.0.len() < 4 {
            return None;
        }
        let n = u32::from_be_bytes([self.0[0], self.0[1], self.0[2], self.0[3]]) as usize;
        let rest = &self.0[4..];
        if rest.len() < n {
            return None;
        }
        let (v, rest) = rest.split_at(n);
        self.0 = rest;
        Some(v)
    }
    pub(crate) fn str(&mut self) -> Option<&'a str> {
        std::str::from_utf8(self.bytes()?).ok()
    }
    pub(crate) fn table(&mut self) -> Option<FieldTable> {
        decode_table(self.bytes()?)
    }
    pub(crate) fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.0)
    }
}

/// Queue-side facts stored with a message record: its absolute expiry and priority level.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct RecordMeta {
    /// Expiry, in milliseconds since the Unix epoch.
    pub(crate) expires_at: Option<u64>,
    /// Priority level in its queue.
    pub(crate) priority: u8,
}

const PERSISTENT: u8 = 1;
const HAS_EXPIRY: u8 = 2;
const HAS_PRIORITY: u8 = 4;

/// A message as stored: flags, [expiry], [priority], exchange, routing key, properties, body.
pub(crate) fn encode_message(m: &Message, meta: RecordMeta) -> Vec<u8> {
    let mut flags = if m.persistent { PERSISTENT } else { 0 };
    let mut w = RecordWriter::with_capacity(
        26 + m.exchange.len() + m.routing_key.len() + m.raw_properties.len() + m.body.len(),
    );
    if meta.expires_at.is_some() {
        flags |= HAS_EXPIRY;
    }
    if meta.priority != 0 {
        flags |= HAS_PRIORITY;
    }
    w = w.u8(flags);
    if let Some(at) = meta.expires_at {
        w = w.rest(&at.to_be_bytes());
    }
    if meta.priority != 0 {
        w = w.u8(meta.priority);
    }
    w.str(&m.exchange)
        .str(&m.routing_key)
        .bytes(&m.raw_properties)
        .rest(&m.body)
        .finish()
}

fn read_meta(r: &mut RecordReader<'_>) -> Option<(bool, RecordMeta)> {
    let flags = r.u8()?;
    let mut meta = RecordMeta::default();
    if flags & HAS_EXPIRY != 0 {
        let mut at = [0u8; 8];
        for b in &mut at {
            *b = r.u8()?;
        }
        meta.expires_at = Some(u64::from_be_bytes(at));
    }
    if flags & HAS_PRIORITY != 0 {
        meta.priority = r.u8()?;
    }
    Some((flags & PERSISTENT != 0, meta))
}

/// A stored message back.
pub(crate) fn decode_message(record: &Bytes) -> Option<Message> {
    let mut r = RecordReader::new(record);
    let (persistent, _) = read_meta(&mut r)?;
    let exchange: Arc<str> = Arc::from(r.str()?);
    let routing_key: Arc<str> = Arc::from(r.str()?);
    let props = Bytes::copy_from_slice(r.bytes()?);
    let body_start = record.len() - r.rest().len();
    Some(Message::new(
        exchange,
        routing_key,
        props,
        record.slice(body_start..),
        persistent,
    ))
}

/// A message's index entry: body size and queue facts, read at recovery instead of the record.
pub(crate) fn encode_index(body_len: u32, meta: RecordMeta) -> Vec<u8> {
    let mut out = Vec::with_capacity(14);
    out.extend_from_slice(&body_len.to_be_bytes());
    let mut flags = 0;
    if meta.expires_at.is_some() {
        flags |= HAS_EXPIRY;
    }
    if meta.priority != 0 {
        flags |= HAS_PRIORITY;
    }
    out.push(flags);
    if let Some(at) = meta.expires_at {
        out.extend_from_slice(&at.to_be_bytes());
    }
    if meta.priority != 0 {
        out.push(meta.priority);
    }
    out
}

/// An index entry back.
pub(crate) fn decode_index(entry: &[u8]) -> Option<(u32, RecordMeta)> {
    let body_len = u32::from_be_bytes(entry.get(..4)?.try_into().ok()?);
    let mut r = RecordReader::new(&entry[4..]);
    let (_, meta) = read_meta(&mut r)?;
    Some((body_len, meta))
}

/// A binding's definition key: unique per (source, destination, key, arguments).
pub(crate) fn binding_key(vhost: &str, source: &str, b: &Binding) -> String {
    let (kind, dest) = match &b.destination {
        Destination::Queue(q) => ("q", q.as_str()),
        Destination::Exchange(x) => ("e", x.as_str()),
    };
    let args: String = encode_table(&b.arguments)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!(
        "{vhost}\0{source}\0{kind}\0{dest}\0{}\0{args}",
        b.routing_key
    )
}

/// A binding's record (the key is not parsed back).
pub(crate) fn encode_binding(source: &str, b: &Binding) -> Vec<u8> {
    let (kind, dest) = match &b.destination {
        Destination::Queue(q) => (b'q', q.as_str()),
        Destination::Exchange(x) => (b'e', x.as_str()),
    };
    RecordWriter::default()
        .str(source)
        .u8(kind)
        .str(dest)
        .str(&b.routing_key)
        .table(&b.arguments)
        .finish()
}

/// (source, binding) back from a record.
pub(crate) fn decode_binding(record: &[u8]) -> Option<(String, Binding)> {
    let mut r = RecordReader::new(record);
    let source = r.str()?.to_owned();
    let kind = r.u8()?;
    let dest = r.str()?.to_owned();
    let routing_key = r.str()?.to_owned();
    let arguments = r.table()?;
    let destination = match kind {
        b'q' => Destination::Queue(dest),
        b'e' => Destination::Exchange(dest),
        _ => return None,
    };
    Some((
        source,
        Binding {
            destination,
            routing_key,
            arguments,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::AMQPValue;

    #[test]
    fn messages_round_trip() {
        let m = Message::new(
            Arc::from("x"),
            Arc::from("rk"),
            Bytes::from_static(&[0x10, 0x00, 2]),
            Bytes::from(vec![9u8; 20_000]),
            true,
        );
        for meta in [
            RecordMeta::default(),
            RecordMeta {
                expires_at: Some(1_700_000_000_000),
                priority: 7,
            },
        ] {
            let record = encode_message(&m, meta);
            let back = decode_message(&Bytes::from(record)).unwrap();
            assert_eq!((&*back.exchange, &*back.routing_key), ("x", "rk"));
            assert_eq!(back.raw_properties, m.raw_properties);
            assert_eq!(back.body, m.body);
            assert!(back.persistent);
            assert_eq!(
                decode_index(&encode_index(20_000, meta)),
                Some((20_000, meta))
            );
        }
        assert!(decode_message(&Bytes::from_static(&[1, 0, 0])).is_none());
    }

    #[test]
    fn bindings_round_trip() {
        let mut args = FieldTable::default();
        args.insert("x-match".into(), AMQPValue::LongString("any".into()));
        let b = Binding {
            destination: Destination::Exchange("dst".into()),
            routing_key: "a.#".into(),
            arguments: args,
        };
        let (source, back) = decode_binding(&encode_binding("src", &b)).unwrap();
        assert_eq!(source, "src");
        assert_eq!(back, b);
    }
}
