//! Field-table helpers: typed lookups, RabbitMQ's type names, and value comparison.
//!
//! RabbitMQ names field types in its error texts ('long', 'longstr', ...) and compares header
//! values with Erlang's `==`, under which integers of different widths and floats of equal value
//! are equal but a string never equals a number. These helpers reproduce both.

use std::borrow::Cow;

use amq_protocol::types::{AMQPValue, FieldTable};

/// The type name RabbitMQ uses for a value in its texts.
pub fn type_name(value: &AMQPValue) -> &'static str {
    match value {
        AMQPValue::Boolean(_) => "bool",
        AMQPValue::ShortShortInt(_) => "byte",
        AMQPValue::ShortShortUInt(_) => "unsignedbyte",
        AMQPValue::ShortInt(_) => "short",
        AMQPValue::ShortUInt(_) => "unsignedshort",
        AMQPValue::LongInt(_) => "signedint",
        AMQPValue::LongUInt(_) => "unsignedint",
        AMQPValue::LongLongInt(_) => "long",
        AMQPValue::Float(_) => "float",
        AMQPValue::Double(_) => "double",
        AMQPValue::DecimalValue(_) => "decimal",
        AMQPValue::ShortString(_) | AMQPValue::LongString(_) => "longstr",
        AMQPValue::FieldArray(_) => "array",
        AMQPValue::Timestamp(_) => "timestamp",
        AMQPValue::FieldTable(_) => "table",
        AMQPValue::ByteArray(_) => "binary",
        AMQPValue::Void => "void",
    }
}

/// A value as RabbitMQ prints it inside quotes.
pub fn display_value(value: &AMQPValue) -> String {
    match value {
        AMQPValue::Boolean(b) => b.to_string(),
        AMQPValue::ShortString(s) => s.as_str().to_owned(),
        AMQPValue::LongString(s) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        AMQPValue::Float(f) => f.to_string(),
        AMQPValue::Double(d) => d.to_string(),
        AMQPValue::Void => "undefined".to_owned(),
        other => match as_i64(other) {
            Some(i) => i.to_string(),
            None => format!("{other:?}"),
        },
    }
}

/// An integer value of any width.
pub fn as_i64(value: &AMQPValue) -> Option<i64> {
    match value {
        AMQPValue::ShortShortInt(v) => Some(i64::from(*v)),
        AMQPValue::ShortShortUInt(v) => Some(i64::from(*v)),
        AMQPValue::ShortInt(v) => Some(i64::from(*v)),
        AMQPValue::ShortUInt(v) => Some(i64::from(*v)),
        AMQPValue::LongInt(v) => Some(i64::from(*v)),
        AMQPValue::LongUInt(v) => Some(i64::from(*v)),
        AMQPValue::LongLongInt(v) => Some(*v),
        AMQPValue::Timestamp(v) => i64::try_from(*v).ok(),
        _ => None,
    }
}

/// A string value (short or long).
pub fn as_str(value: &AMQPValue) -> Option<Cow<'_, str>> {
    match value {
        AMQPValue::ShortString(s) => Some(Cow::Borrowed(s.as_str())),
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes())),
        _ => None,
    }
}

/// Look up a key in an optional table.
pub fn lookup<'a>(table: Option<&'a FieldTable>, key: &str) -> Option<&'a AMQPValue> {
    table.and_then(|t| t.inner().get(key))
}

fn as_f64(value: &AMQPValue) -> Option<f64> {
    match value {
        AMQPValue::Float(f) => Some(f64::from(*f)),
        AMQPValue::Double(d) => Some(*d),
        other => as_i64(other).map(|i| i as f64),
    }
}

/// Erlang `==` between two field values: numbers by value across widths, strings by bytes.
pub fn values_equal(a: &AMQPValue, b: &AMQPValue) -> bool {
    if let (Some(x), Some(y)) = (as_i64(a), as_i64(b)) {
        if !matches!(a, AMQPValue::Timestamp(_)) && !matches!(b, AMQPValue::Timestamp(_)) {
            return x == y;
        }
    }
    if let (Some(x), Some(y)) = (as_str(a), as_str(b)) {
        return x == y;
    }
    let numeric = |v: &AMQPValue| {
        matches!(v, AMQPValue::Float(_) | AMQPValue::Double(_))
            || (as_i64(v).is_some() && !matches!(v, AMQPValue::Timestamp(_)))
    };
    if numeric(a) && numeric(b) {
        return as_f64(a) == as_f64(b);
    }
    a == b
}

/// Parse an AMQPLAIN response (a field table without its length prefix) into login/password.
pub fn parse_amqplain(response: &[u8]) -> Option<(String, String)> {
    let mut framed = Vec::with_capacity(response.len() + 4);
    framed.extend_from_slice(&(response.len() as u32).to_be_bytes());
    framed.extend_from_slice(response);
    super::nesting::check_table(&framed).ok()?;
    let (_, table) = amq_protocol::types::parsing::parse_field_table(&framed[..]).ok()?;
    let login = as_str(table.inner().get("LOGIN")?)?.into_owned();
    let password = as_str(table.inner().get("PASSWORD")?)?.into_owned();
    Some((login, password))
}

/// Parse a PLAIN response into user/password, as RabbitMQ reads it: `NUL user NUL password`,
/// exactly (an authzid, or a third NUL, makes it malformed). Names that are not UTF-8 are kept
/// lossily: no user has such a name, so they are refused as unknown.
pub fn parse_plain(response: &[u8]) -> Option<(String, String)> {
    let rest = response.strip_prefix(&[0])?;
    let split = rest.iter().position(|b| *b == 0)?;
    let (user, password) = (&rest[..split], &rest[split + 1..]);
    if password.contains(&0) {
        return None;
    }
    Some((
        String::from_utf8_lossy(user).into_owned(),
        String::from_utf8_lossy(password).into_owned(),
    ))
}

/// A field table in wire form (with its length prefix), for storage.
pub fn encode_table(table: &FieldTable) -> Vec<u8> {
    use amq_protocol::frame::WriteContext;
    match amq_protocol::types::generation::gen_field_table(table)(WriteContext::from(Vec::new())) {
        Ok(ctx) => ctx.write,
        Err(_) => vec![0, 0, 0, 0],
    }
}

/// Parse a field table written by [`encode_table`].
pub fn decode_table(bytes: &[u8]) -> Option<FieldTable> {
    super::nesting::check_table(bytes).ok()?;
    amq_protocol::types::parsing::parse_field_table(bytes)
        .ok()
        .map(|(_, t)| t)
}

/// Parse content properties in wire form.
pub fn decode_properties(bytes: &[u8]) -> Option<amq_protocol::protocol::basic::AMQPProperties> {
    super::nesting::check_properties(bytes).ok()?;
    amq_protocol::protocol::basic::parse_properties(bytes)
        .ok()
        .map(|(_, p)| p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_compare_across_widths() {
        assert!(values_equal(
            &AMQPValue::ShortInt(5),
            &AMQPValue::LongLongInt(5)
        ));
        assert!(!values_equal(
            &AMQPValue::LongInt(1),
            &AMQPValue::LongString("1".into())
        ));
        assert!(values_equal(
            &AMQPValue::LongInt(1),
            &AMQPValue::Double(1.0)
        ));
        assert!(values_equal(
            &AMQPValue::ShortString("a".into()),
            &AMQPValue::LongString("a".into())
        ));
    }
}
