//! Headers exchange: bindings match on the message's headers table, not its routing key.
//!
//! `x-match` is `all` (default), `any`, `all-with-x` or `any-with-x`. Binding arguments starting
//! with `x-` take part only in the `-with-x` modes. A void binding value matches on presence
//! alone; other values compare as Erlang's `==` does (see [`crate::protocol::table`]).

use super::{Binding, Destination};
use crate::protocol::table::{as_str, values_equal};
use crate::protocol::{AMQPValue, FieldTable};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MatchMode {
    All,
    Any,
}

#[derive(Debug)]
struct Spec {
    mode: MatchMode,
    keys: Vec<(String, AMQPValue)>,
    destination: Destination,
    arguments: FieldTable,
}

#[derive(Debug, Default)]
pub(super) struct HeadersRouter {
    specs: Vec<Spec>,
}

/// Whether `headers` match a binding with `arguments`.
pub fn matches(arguments: &FieldTable, headers: Option<&FieldTable>) -> bool {
    let (mode, keys) = parse(arguments);
    spec_matches(mode, &keys, headers)
}

fn parse(arguments: &FieldTable) -> (MatchMode, Vec<(String, AMQPValue)>) {
    let x_match = arguments.inner().get("x-match").and_then(as_str);
    let (mode, with_x) = match x_match.as_deref() {
        Some("any") => (MatchMode::Any, false),
        Some("any-with-x") => (MatchMode::Any, true),
        Some("all-with-x") => (MatchMode::All, true),
        _ => (MatchMode::All, false),
    };
    let keys = arguments
        .inner()
        .iter()
        .filter(|(k, _)| k.as_str() != "x-match" && (with_x || !k.as_str().starts_with("x-")))
        .map(|(k, v)| (k.as_str().to_owned(), v.clone()))
        .collect();
    (mode, keys)
}

fn spec_matches(
    mode: MatchMode,
    keys: &[(String, AMQPValue)],
    headers: Option<&FieldTable>,
) -> bool {
    let one = |(key, expected): &(String, AMQPValue)| match headers
        .and_then(|h| h.inner().get(key.as_str()))
    {
        None => false,
        Some(_) if matches!(expected, AMQPValue::Void) => true,
        Some(actual) => values_equal(expected, actual),
    };
    match mode {
        MatchMode::All => keys.iter().all(one),
        MatchMode::Any => keys.iter().any(one),
    }
}

impl HeadersRouter {
    pub(super) fn add(&mut self, binding: &Binding) {
        let (mode, keys) = parse(&binding.arguments);
        self.specs.push(Spec {
            mode,
            keys,
            destination: binding.destination.clone(),
            arguments: binding.arguments.clone(),
        });
    }

    pub(super) fn remove(&mut self, binding: &Binding) {
        if let Some(at) = self
            .specs
            .iter()
            .position(|s| s.destination == binding.destination && s.arguments == binding.arguments)
        {
            self.specs.remove(at);
        }
    }

    pub(super) fn route<'a>(
        &'a self,
        headers: Option<&FieldTable>,
        out: &mut Vec<&'a Destination>,
    ) {
        for spec in &self.specs {
            if spec_matches(spec.mode, &spec.keys, headers) {
                out.push(&spec.destination);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(pairs: &[(&str, AMQPValue)]) -> FieldTable {
        let mut t = FieldTable::default();
        for (k, v) in pairs {
            t.insert((*k).into(), v.clone());
        }
        t
    }

    #[test]
    fn all_and_any() {
        let h = table(&[
            ("a", AMQPValue::LongInt(1)),
            ("b", AMQPValue::LongString("x".into())),
        ]);
        let all = table(&[
            ("a", AMQPValue::ShortInt(1)),
            ("b", AMQPValue::LongString("x".into())),
        ]);
        assert!(matches(&all, Some(&h)));
        let all_miss = table(&[("a", AMQPValue::LongInt(1)), ("c", AMQPValue::Void)]);
        assert!(!matches(&all_miss, Some(&h)));
        let mut any = all_miss.clone();
        any.insert("x-match".into(), AMQPValue::LongString("any".into()));
        assert!(matches(&any, Some(&h)));
    }

    #[test]
    fn x_keys_only_with_x() {
        let h = table(&[("x-k", AMQPValue::LongString("v".into()))]);
        let mut b = table(&[("x-k", AMQPValue::LongString("w".into()))]);
        assert!(matches(&b, Some(&h)), "x- keys are ignored under plain all");
        b.insert("x-match".into(), AMQPValue::LongString("all-with-x".into()));
        assert!(!matches(&b, Some(&h)));
    }

    #[test]
    fn void_matches_presence_and_string_never_equals_number() {
        let h = table(&[("k", AMQPValue::LongString("1".into()))]);
        assert!(matches(&table(&[("k", AMQPValue::Void)]), Some(&h)));
        assert!(!matches(&table(&[("k", AMQPValue::LongInt(1))]), Some(&h)));
        let any_empty = table(&[("x-match", AMQPValue::LongString("any".into()))]);
        assert!(!matches(&any_empty, Some(&h)));
        assert!(matches(&FieldTable::default(), None));
    }
}
