//! Headers read and set on content properties in wire form, without decoding the rest.
//!
//! A stream stamps `x-stream-offset` on every delivery and reads `x-stream-filter-value` of every
//! publish, so both work on the raw bytes: setting a header splices one entry into the headers
//! table (or adds the table) and copies everything else as it is; a header of that name already
//! present (a publisher's own `x-stream-offset`) sends it the slow way, through a full decode
//! and encode, so the result never holds the name twice. Bytes that do not parse are left alone
//! (`None`): they came from a peer.

use bytes::{BufMut, Bytes, BytesMut};

use super::table::{as_str, decode_properties};
use super::{codec::encode_properties, AMQPValue, ShortString};

const CONTENT_TYPE: u16 = 0x8000;
const CONTENT_ENCODING: u16 = 0x4000;
const HEADERS: u16 = 0x2000;

/// Where the headers table starts in `raw` (at its length prefix, or where it would go), and
/// whether there is one.
fn headers_at(raw: &[u8]) -> Option<(usize, bool)> {
    let flags = u16::from_be_bytes([*raw.first()?, *raw.get(1)?]);
    let mut at = 2usize;
    for bit in [CONTENT_TYPE, CONTENT_ENCODING] {
        if flags & bit != 0 {
            at = at.checked_add(1 + usize::from(*raw.get(at)?))?;
        }
    }
    if at > raw.len() {
        return None;
    }
    Some((at, flags & HEADERS != 0))
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

/// `raw` with header `name` set to the signed 64-bit `value`; `None` if `raw` is malformed or
/// `name` is longer than a short string.
pub fn with_long_header(raw: &[u8], name: &str, value: i64) -> Option<Bytes> {
    let name_len = u8::try_from(name.len()).ok()?;
    let (at, has_table) = headers_at(raw)?;
    if has_table && contains(raw.get(at..)?, name.as_bytes()) {
        // Possibly there already: decode, replace, encode.
        let properties = decode_properties(raw)?;
        let mut headers = properties.headers().clone().unwrap_or_default();
        headers.insert(ShortString::from(name), AMQPValue::LongLongInt(value));
        return Some(encode_properties(&properties.with_headers(headers)));
    }
    let mut entry = Vec::with_capacity(name.len() + 10);
    entry.push(name_len);
    entry.extend_from_slice(name.as_bytes());
    entry.push(b'l');
    entry.extend_from_slice(&value.to_be_bytes());
    let mut out = BytesMut::with_capacity(raw.len() + entry.len() + 4);
    if has_table {
        let len_bytes: [u8; 4] = raw.get(at..at + 4)?.try_into().ok()?;
        let len = u32::from_be_bytes(len_bytes) as usize;
        let table_end = at.checked_add(4)?.checked_add(len)?;
        let table = raw.get(at + 4..table_end)?;
        let new_len = u32::try_from(len + entry.len()).ok()?;
        out.put_slice(raw.get(..at)?);
        out.put_u32(new_len);
        out.put_slice(table);
        out.put_slice(&entry);
        out.put_slice(raw.get(table_end..)?);
    } else {
        let flags = u16::from_be_bytes([*raw.first()?, *raw.get(1)?]) | HEADERS;
        out.put_u16(flags);
        out.put_slice(raw.get(2..at)?);
        out.put_u32(u32::try_from(entry.len()).ok()?);
        out.put_slice(&entry);
        out.put_slice(raw.get(at..)?);
    }
    Some(out.freeze())
}

/// The string value of header `name`, if the properties carry one (the bytes are decoded only
/// when the name appears in them).
pub fn string_header(raw: &[u8], name: &str) -> Option<String> {
    let (at, has_table) = headers_at(raw)?;
    if !has_table || !contains(raw.get(at..)?, name.as_bytes()) {
        return None;
    }
    let properties = decode_properties(raw)?;
    let headers = properties.headers().as_ref()?;
    headers
        .inner()
        .get(name)
        .and_then(as_str)
        .map(|s| s.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{FieldTable, Properties};
    use proptest::prelude::*;

    fn props(content_type: Option<&str>, headers: Option<Vec<(&str, i64)>>) -> Bytes {
        let mut p = Properties::default().with_delivery_mode(2);
        if let Some(ct) = content_type {
            p = p.with_content_type(ct.into());
        }
        if let Some(h) = headers {
            let mut t = FieldTable::default();
            for (k, v) in h {
                t.insert(k.into(), AMQPValue::LongLongInt(v));
            }
            p = p.with_headers(t);
        }
        encode_properties(&p)
    }

    fn header(raw: &[u8], name: &str) -> Option<AMQPValue> {
        decode_properties(raw)?
            .headers()
            .as_ref()?
            .inner()
            .get(name)
            .cloned()
    }

    #[test]
    fn sets_a_header_with_or_without_a_table() {
        for raw in [
            props(None, None),
            props(Some("text/plain"), None),
            props(Some("x"), Some(vec![("a", 1)])),
            props(None, Some(vec![("x-stream-offset", 9), ("b", 2)])),
        ] {
            let out = with_long_header(&raw, "x-stream-offset", 42).unwrap();
            let decoded = decode_properties(&out).unwrap();
            let original = decode_properties(&raw).unwrap();
            assert_eq!(decoded.delivery_mode(), &Some(2));
            assert_eq!(decoded.content_type(), original.content_type());
            assert_eq!(
                header(&out, "x-stream-offset"),
                Some(AMQPValue::LongLongInt(42))
            );
            let before = original.headers().as_ref().map_or(0, |h| h.inner().len());
            let had = original
                .headers()
                .as_ref()
                .is_some_and(|h| h.inner().contains_key("x-stream-offset"));
            let after = decoded.headers().as_ref().map_or(0, |h| h.inner().len());
            assert_eq!(after, before + usize::from(!had));
        }
    }

    #[test]
    fn reads_a_string_header() {
        let mut t = FieldTable::default();
        t.insert(
            "x-stream-filter-value".into(),
            AMQPValue::LongString("ca".into()),
        );
        let raw = encode_properties(&Properties::default().with_headers(t));
        assert_eq!(
            string_header(&raw, "x-stream-filter-value").as_deref(),
            Some("ca")
        );
        assert_eq!(string_header(&raw, "other"), None);
        assert_eq!(string_header(&props(None, None), "x"), None);
    }

    proptest! {
        // Whatever a peer sent: no panic, and any answer decodes with the header set.
        #[test]
        fn never_panics_and_answers_decode(raw in proptest::collection::vec(any::<u8>(), 0..64)) {
            if let Some(out) = with_long_header(&raw, "x-stream-offset", 7) {
                if decode_properties(&raw).is_some() {
                    prop_assert_eq!(header(&out, "x-stream-offset"), Some(AMQPValue::LongLongInt(7)));
                }
            }
            let _ = string_header(&raw, "x-stream-filter-value");
        }
    }
}
