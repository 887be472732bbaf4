//! Bounding how deep field tables and arrays nest, before amq-protocol's parser sees them.
//!
//! amq-protocol parses field tables and arrays recursively, one stack frame per level, with no
//! limit: a 40 KB `connection.start-ok` nesting arrays 4,000 deep overflows a worker's stack
//! and aborts the process. Every byte sequence that may hold a table (method arguments, content
//! headers, the AMQPLAIN response, stored records) is walked here first, iteratively, with an
//! explicit stack of container ends; anything nested deeper than [`MAX_TABLE_DEPTH`] is refused
//! before any recursive code runs. The walk accepts exactly the value types amq-protocol does,
//! so a table it passes is one amq-protocol can parse without going deeper than the limit.

/// How many tables and arrays may nest, counting the outermost table as 1. RabbitMQ has no
/// limit; real clients nest 4 deep at most (`x-death` is headers → array → table → array).
pub const MAX_TABLE_DEPTH: usize = 64;

/// Why a table was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NestingError {
    /// Nested deeper than [`MAX_TABLE_DEPTH`].
    TooDeep,
    /// Not a well-formed table (truncated, unknown type tag, a value crossing its container).
    Malformed,
}

/// One argument of a method, for skipping to its tables.
#[derive(Debug, Clone, Copy)]
enum Arg {
    Octet,
    Short,
    ShortStr,
    LongStr,
    Table,
}

/// The arguments of each method that carries a field table, up to and including its table.
fn table_layout(class_id: u16, method_id: u16) -> Option<&'static [Arg]> {
    use Arg::{LongStr as L, Octet as O, Short as U, ShortStr as S, Table as T};
    let layout: &'static [Arg] = match (class_id, method_id) {
        // connection.start: version-major, version-minor, server-properties, ...
        (10, 10) => &[O, O, T, L, L],
        // connection.start-ok: client-properties, ...
        (10, 11) => &[T],
        // exchange.declare: reserved, exchange, type, flags, arguments
        (40, 10) => &[U, S, S, O, T],
        // exchange.bind / unbind: reserved, destination, source, routing-key, no-wait, arguments
        (40, 30) | (40, 40) => &[U, S, S, S, O, T],
        // queue.declare: reserved, queue, flags, arguments
        (50, 10) => &[U, S, O, T],
        // queue.bind: reserved, queue, exchange, routing-key, no-wait, arguments
        (50, 20) => &[U, S, S, S, O, T],
        // queue.unbind: reserved, queue, exchange, routing-key, arguments (no no-wait)
        (50, 50) => &[U, S, S, S, T],
        // basic.consume: reserved, queue, consumer-tag, flags, arguments
        (60, 20) => &[U, S, S, O, T],
        _ => return None,
    };
    Some(layout)
}

fn u32_at(bytes: &[u8], at: usize) -> Option<usize> {
    let b = bytes.get(at..at.checked_add(4)?)?;
    Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
}

/// Check the tables among a method's arguments (`args` follows the class and method ids).
/// Methods without tables, and arguments too short to reach their table, pass: amq-protocol
/// refuses the latter itself, without recursing.
pub fn check_method(class_id: u16, method_id: u16, args: &[u8]) -> Result<(), NestingError> {
    let Some(layout) = table_layout(class_id, method_id) else {
        return Ok(());
    };
    let mut at = 0usize;
    for arg in layout {
        let size = match arg {
            Arg::Octet => 1,
            Arg::Short => 2,
            Arg::ShortStr => match args.get(at) {
                Some(&n) => 1 + usize::from(n),
                None => return Ok(()),
            },
            Arg::LongStr => match u32_at(args, at) {
                Some(n) => 4 + n,
                None => return Ok(()),
            },
            Arg::Table => match args.get(at..) {
                Some(rest) => check_table(rest)?,
                None => return Ok(()),
            },
        };
        at = at.saturating_add(size);
    }
    Ok(())
}

/// Check the `headers` property of content-header properties (flags first).
pub fn check_properties(raw: &[u8]) -> Result<(), NestingError> {
    let Some(flags) = raw.get(0..2).map(|b| u16::from_be_bytes([b[0], b[1]])) else {
        return Ok(());
    };
    let mut at = 2usize;
    // content-type and content-encoding (short strings) come before headers.
    for bit in [0x8000u16, 0x4000] {
        if flags & bit != 0 {
            match raw.get(at) {
                Some(&n) => at += 1 + usize::from(n),
                None => return Ok(()),
            }
        }
    }
    if flags & 0x2000 != 0 {
        if let Some(rest) = raw.get(at..) {
            check_table(rest)?;
        }
    }
    Ok(())
}

/// Walk the field table at the start of `bytes` (with its 4-byte length); returns its size.
pub fn check_table(bytes: &[u8]) -> Result<usize, NestingError> {
    walk_table(bytes, &mut |_| {})
}

/// Replace, in place, the bytes of `bytes` that are not UTF-8 with `?`: the length is
/// kept, so every length prefix around it stays right.
pub(crate) fn make_utf8(bytes: &mut [u8]) {
    let mut at = 0;
    while at < bytes.len() {
        match std::str::from_utf8(&bytes[at..]) {
            Ok(_) => return,
            Err(e) => {
                let bad_from = at + e.valid_up_to();
                let bad_to = e.error_len().map_or(bytes.len(), |n| bad_from + n);
                bytes[bad_from..bad_to].fill(b'?');
                at = bad_to;
            }
        }
    }
}

/// A copy of content-header properties (flags first) whose short strings, table keys
/// included, are UTF-8: what amq-protocol can parse, for the broker's own reading of a
/// message (routing, expiration, user-id). RabbitMQ accepts any bytes there and so does
/// Leveret: the message itself keeps the bytes the publisher sent. `None` if malformed.
pub fn utf8_properties(raw: &[u8]) -> Option<Vec<u8>> {
    // Property kinds in flag order: short string, table, octet, timestamp.
    const KINDS: [u8; 14] = [
        b's', b's', b'F', b'o', b'o', b's', b's', b's', b's', b'T', b's', b's', b's', b's',
    ];
    let mut out = raw.to_vec();
    let flags = u16::from_be_bytes([*raw.first()?, *raw.get(1)?]);
    let mut at = 2usize;
    for (i, kind) in KINDS.iter().enumerate() {
        if flags & (0x8000 >> i) == 0 {
            continue;
        }
        match kind {
            b's' => {
                let n = usize::from(*raw.get(at)?);
                make_utf8(out.get_mut(at + 1..at + 1 + n)?);
                at += 1 + n;
            }
            b'F' => {
                let mut keys = Vec::new();
                let size = walk_table(raw.get(at..)?, &mut |key| keys.push(key)).ok()?;
                for key in keys {
                    make_utf8(out.get_mut(at + key.start..at + key.end)?);
                }
                at += size;
            }
            b'o' => at += 1,
            _ => at += 8,
        }
    }
    // A fixed-size property cut short is malformed too (found by the field_tables target).
    (at <= raw.len()).then_some(out)
}

/// Content-header properties (flags first) without the top-level header `key`, every other
/// byte as sent: duplicate keys, key order and field types stay exactly as the publisher
/// wrote them (RabbitMQ strips `BCC` so and keeps the rest). `None` if malformed or absent.
pub fn strip_header(raw: &[u8], key: &str) -> Option<Vec<u8>> {
    let flags = u16::from_be_bytes([*raw.first()?, *raw.get(1)?]);
    if flags & 0x2000 == 0 {
        return None;
    }
    let mut at = 2usize;
    for bit in [0x8000u16, 0x4000] {
        if flags & bit != 0 {
            at += 1 + usize::from(*raw.get(at)?);
        }
    }
    let table_at = at;
    let len = u32_at(raw, table_at)?;
    let end = table_at.checked_add(4)?.checked_add(len)?;
    if end > raw.len() {
        return None;
    }
    // Entry by entry at the top level; a nested value is skipped by its length prefix.
    let mut entry = table_at + 4;
    let mut removed: Vec<std::ops::Range<usize>> = Vec::new();
    while entry < end {
        let key_len = usize::from(*raw.get(entry)?);
        let name = raw.get(entry + 1..entry + 1 + key_len)?;
        let tag_at = entry + 1 + key_len;
        let value_at = tag_at + 1;
        let size = match *raw.get(tag_at)? {
            b'S' | b'x' | b'A' | b'F' => 4 + u32_at(raw, value_at)?,
            tag => fixed_size(tag)?,
        };
        let next = value_at.checked_add(size)?;
        if next > end {
            return None;
        }
        if name == key.as_bytes() {
            removed.push(entry..next);
        }
        entry = next;
    }
    if removed.is_empty() {
        return None;
    }
    let cut: usize = removed.iter().map(|r| r.len()).sum();
    let mut out = Vec::with_capacity(raw.len() - cut);
    out.extend_from_slice(&raw[..table_at]);
    out.extend_from_slice(&((len - cut) as u32).to_be_bytes());
    let mut from = table_at + 4;
    for r in &removed {
        out.extend_from_slice(&raw[from..r.start]);
        from = r.end;
    }
    out.extend_from_slice(&raw[from..]);
    Some(out)
}

/// The top-level keys of the field table at the start of `table` (with its 4-byte length), in
/// the order they were sent, duplicates kept (bytes that are not UTF-8 replaced by U+FFFD; such
/// a table amq-protocol refuses anyway). `None` if malformed.
pub fn top_level_keys(table: &[u8]) -> Option<Vec<String>> {
    let len = u32_at(table, 0)?;
    let end = len.checked_add(4)?;
    if end > table.len() {
        return None;
    }
    let mut keys = Vec::new();
    let mut entry = 4usize;
    while entry < end {
        let key_len = usize::from(*table.get(entry)?);
        let name = table.get(entry + 1..entry + 1 + key_len)?;
        let tag_at = entry + 1 + key_len;
        let value_at = tag_at + 1;
        let size = match *table.get(tag_at)? {
            b'S' | b'x' | b'A' | b'F' => 4usize.checked_add(u32_at(table, value_at)?)?,
            tag => fixed_size(tag)?,
        };
        entry = value_at.checked_add(size)?;
        if entry > end {
            return None;
        }
        keys.push(String::from_utf8_lossy(name).into_owned());
    }
    Some(keys)
}

/// The size of a field value of fixed size (the types amq-protocol reads), by its type tag.
fn fixed_size(tag: u8) -> Option<usize> {
    match tag {
        b't' | b'b' | b'B' => Some(1),
        b's' | b'U' | b'u' => Some(2),
        b'I' | b'i' | b'f' => Some(4),
        b'D' => Some(5),
        b'L' | b'l' | b'd' | b'T' => Some(8),
        b'V' => Some(0),
        _ => None,
    }
}

/// [`check_table`], telling `on_key` where each key's bytes are (at any depth).
fn walk_table(
    bytes: &[u8],
    on_key: &mut dyn FnMut(std::ops::Range<usize>),
) -> Result<usize, NestingError> {
    let len = u32_at(bytes, 0).ok_or(NestingError::Malformed)?;
    let end = len.checked_add(4).ok_or(NestingError::Malformed)?;
    if end > bytes.len() {
        return Err(NestingError::Malformed);
    }
    // Each open container: where it ends, and whether its entries have keys (tables do).
    let mut open: Vec<(usize, bool)> = vec![(end, true)];
    let mut at = 4usize;
    while let Some(&(container_end, keyed)) = open.last() {
        if at == container_end {
            open.pop();
            continue;
        }
        if keyed {
            let key_len = usize::from(*bytes.get(at).ok_or(NestingError::Malformed)?);
            if at + 1 + key_len > container_end {
                return Err(NestingError::Malformed);
            }
            on_key(at + 1..at + 1 + key_len);
            at += 1 + key_len;
        }
        let tag = *bytes.get(at).ok_or(NestingError::Malformed)?;
        at += 1;
        let size = match tag {
            b'S' | b'x' => 4 + u32_at(bytes, at).ok_or(NestingError::Malformed)?,
            b'A' | b'F' => {
                let inner = u32_at(bytes, at).ok_or(NestingError::Malformed)?;
                let inner_end = at + 4 + inner;
                if inner_end > container_end {
                    return Err(NestingError::Malformed);
                }
                if open.len() >= MAX_TABLE_DEPTH {
                    return Err(NestingError::TooDeep);
                }
                open.push((inner_end, tag == b'F'));
                at += 4;
                continue;
            }
            scalar => fixed_size(scalar).ok_or(NestingError::Malformed)?,
        };
        at += size;
        if at > container_end {
            return Err(NestingError::Malformed);
        }
    }
    Ok(end)
}

/// How deep a parsed value nests (a table or array counts 1 plus its deepest member), without
/// recursion: for tables built from JSON or by the broker itself.
pub fn value_depth(value: &amq_protocol::types::AMQPValue) -> usize {
    use amq_protocol::types::AMQPValue;
    let mut deepest = 0;
    let mut stack: Vec<(&AMQPValue, usize)> = vec![(value, 0)];
    while let Some((v, depth)) = stack.pop() {
        match v {
            AMQPValue::FieldTable(t) => {
                deepest = deepest.max(depth + 1);
                stack.extend(t.inner().values().map(|inner| (inner, depth + 1)));
            }
            AMQPValue::FieldArray(a) => {
                deepest = deepest.max(depth + 1);
                stack.extend(a.as_slice().iter().map(|inner| (inner, depth + 1)));
            }
            _ => deepest = deepest.max(depth),
        }
    }
    deepest
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::table::encode_table;
    use amq_protocol::types::{AMQPValue, FieldArray, FieldTable};

    #[test]
    fn top_level_keys_in_wire_order() {
        // b: {c: true}, a: false, b: void (a duplicate); the nested key is not top-level.
        let mut table = Vec::new();
        table.extend_from_slice(b"\x01bF\x00\x00\x00\x04\x01ct\x01");
        table.extend_from_slice(b"\x01at\x00\x01bV");
        let mut bytes = (table.len() as u32).to_be_bytes().to_vec();
        bytes.extend_from_slice(&table);
        assert_eq!(top_level_keys(&bytes).unwrap(), ["b", "a", "b"]);
        // A key that is U+FFFD itself is kept as it is (the fuzz target found it read as `?`),
        // the same key amq-protocol parses; its parser is streaming and wants a byte after.
        let odd = [0, 0, 0, 6, 3, 0xef, 0xbf, 0xbd, b't', 1, 0];
        assert_eq!(top_level_keys(&odd).unwrap(), ["\u{fffd}"]);
        let parsed = amq_protocol::types::parsing::parse_field_table(&odd[..])
            .unwrap()
            .1;
        assert!(parsed.inner().contains_key("\u{fffd}"));
        // Cut short anywhere: refused, never a panic.
        for cut in 0..bytes.len() {
            let mut short = bytes[..cut].to_vec();
            if short.len() >= 4 {
                short[..4].copy_from_slice(&((cut - 4) as u32).to_be_bytes());
            }
            let _ = top_level_keys(&short);
        }
    }

    /// A table holding arrays nested `depth - 1` deep (the table itself is level 1).
    fn nested(depth: usize) -> Vec<u8> {
        // Built as bytes: building it as a value would need recursion to encode and drop.
        let mut inner: Vec<u8> = Vec::new();
        for _ in 1..depth {
            let mut outer = vec![b'A'];
            outer.extend_from_slice(&(inner.len() as u32).to_be_bytes());
            outer.extend_from_slice(&inner);
            inner = outer;
        }
        let mut entry = vec![1, b'k'];
        if inner.is_empty() {
            entry.push(b'V');
        } else {
            entry.extend_from_slice(&inner);
        }
        let mut table = (entry.len() as u32).to_be_bytes().to_vec();
        table.extend_from_slice(&entry);
        table
    }

    #[test]
    fn strip_header_removes_one_key_and_keeps_every_other_byte() {
        // headers {k: b 0, BCC: A [S "q"], k: B 1}, duplicates kept as sent
        let mut entries = vec![1, b'k', b'b', 0];
        entries.extend_from_slice(&[
            3, b'B', b'C', b'C', b'A', 0, 0, 0, 6, b'S', 0, 0, 0, 1, b'q',
        ]);
        entries.extend_from_slice(&[1, b'k', b'B', 1]);
        let mut raw = vec![0x20, 0x00];
        raw.extend_from_slice(&(entries.len() as u32).to_be_bytes());
        raw.extend_from_slice(&entries);
        raw.push(2); // a delivery-mode byte would follow in real properties; kept as is
        let stripped = strip_header(&raw, "BCC").unwrap();
        let mut expected = vec![
            0x20, 0x00, 0, 0, 0, 8, 1, b'k', b'b', 0, 1, b'k', b'B', 1, 2,
        ];
        assert_eq!(stripped, expected);
        assert_eq!(strip_header(&raw, "CC"), None);
        expected.truncate(5);
        assert_eq!(strip_header(&expected, "BCC"), None);
    }

    #[test]
    fn utf8_properties_mends_short_strings_and_keys_in_place() {
        // content-type "a\xff", headers {"k\xfe": I 1}
        let mut raw = vec![0xA0, 0x00, 2, b'a', 0xFF];
        let entry = [2, b'k', 0xFE, b'I', 0, 0, 0, 1];
        raw.extend_from_slice(&(entry.len() as u32).to_be_bytes());
        raw.extend_from_slice(&entry);
        let fixed = utf8_properties(&raw).unwrap();
        assert_eq!(fixed.len(), raw.len());
        assert_eq!(&fixed[3..5], b"a?");
        assert_eq!(&fixed[10..12], b"k?");
        assert!(amq_protocol::protocol::basic::parse_properties(&fixed[..]).is_ok());
        assert!(amq_protocol::protocol::basic::parse_properties(&raw[..]).is_err());
        assert_eq!(utf8_properties(&raw[..6]), None);
        // A timestamp cut short (the field_tables fuzz target's find).
        assert_eq!(utf8_properties(&[0x00, 0x40, 0x00, 0x01, 0x08]), None);
    }

    #[test]
    fn depth_up_to_the_limit_passes_and_beyond_is_refused() {
        assert_eq!(check_table(&nested(1)), Ok(nested(1).len()));
        assert!(check_table(&nested(MAX_TABLE_DEPTH)).is_ok());
        assert_eq!(
            check_table(&nested(MAX_TABLE_DEPTH + 1)),
            Err(NestingError::TooDeep)
        );
        // The audit's input: 4,000 levels, which overflowed a worker's stack.
        assert_eq!(check_table(&nested(4000)), Err(NestingError::TooDeep));
    }

    #[test]
    fn every_value_type_walks_like_amq_protocol_parses() {
        let mut inner = FieldTable::default();
        inner.insert("x".into(), AMQPValue::LongLongInt(-1));
        let mut t = FieldTable::default();
        for (k, v) in [
            ("t", AMQPValue::Boolean(true)),
            ("b", AMQPValue::ShortShortInt(-1)),
            ("B", AMQPValue::ShortShortUInt(1)),
            ("s", AMQPValue::ShortInt(-2)),
            ("u", AMQPValue::ShortUInt(2)),
            ("I", AMQPValue::LongInt(-3)),
            ("i", AMQPValue::LongUInt(3)),
            ("l", AMQPValue::LongLongInt(4)),
            ("f", AMQPValue::Float(1.5)),
            ("d", AMQPValue::Double(2.5)),
            ("T", AMQPValue::Timestamp(5)),
            ("S", AMQPValue::LongString("str".into())),
            ("x", AMQPValue::ByteArray(vec![1u8, 2, 3].into())),
            ("V", AMQPValue::Void),
            (
                "A",
                AMQPValue::FieldArray(FieldArray::from(vec![AMQPValue::FieldTable(inner.clone())])),
            ),
            ("F", AMQPValue::FieldTable(inner)),
        ] {
            t.insert(k.into(), v);
        }
        let bytes = encode_table(&t);
        assert_eq!(check_table(&bytes), Ok(bytes.len()));
        assert_eq!(value_depth(&AMQPValue::FieldTable(t)), 3);
    }

    #[test]
    fn truncated_and_unknown_are_malformed() {
        let bytes = encode_table(&{
            let mut t = FieldTable::default();
            t.insert("k".into(), AMQPValue::LongString("value".into()));
            t
        });
        for cut in 0..bytes.len() {
            assert!(check_table(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        assert_eq!(
            check_table(&[0, 0, 0, 3, 1, b'k', b'?']),
            Err(NestingError::Malformed)
        );
    }

    #[test]
    fn method_layouts_reach_their_tables() {
        // queue.declare: reserved, queue "q", flags, then a too-deep table.
        let mut args = vec![0, 0, 1, b'q', 0];
        args.extend_from_slice(&nested(MAX_TABLE_DEPTH + 1));
        assert_eq!(check_method(50, 10, &args), Err(NestingError::TooDeep));
        assert_eq!(check_method(60, 40, &args), Ok(()));
        // Content properties: content-type set, then headers.
        let mut props = vec![0xA0, 0x00, 4, b't', b'e', b'x', b't'];
        props.extend_from_slice(&nested(MAX_TABLE_DEPTH + 1));
        assert_eq!(check_properties(&props), Err(NestingError::TooDeep));
    }
}
