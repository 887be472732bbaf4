//! Topic exchange: dotted binding patterns where `*` is one word and `#` is zero or more.
//!
//! Words are split on `.`; empty words are words ("a..b" has three), and the empty key has none,
//! as in RabbitMQ. Matching is a dynamic programme over (pattern word, key word), so `#`-heavy
//! patterns cost O(p·k), never exponential.

use super::{Binding, Destination};

#[derive(Debug, Default)]
pub(super) struct TopicRouter {
    bindings: Vec<(Vec<String>, Destination)>,
}

/// Split a key or pattern into words.
pub fn words(key: &str) -> Vec<&str> {
    if key.is_empty() {
        Vec::new()
    } else {
        key.split('.').collect()
    }
}

/// Whether `pattern` (a binding key) matches `routing_key`.
pub fn matches(pattern: &str, routing_key: &str) -> bool {
    let p: Vec<&str> = words(pattern);
    let k: Vec<&str> = words(routing_key);
    matches_words(&p, &k)
}

fn matches_words<P: AsRef<str>>(pattern: &[P], key: &[&str]) -> bool {
    // reach[j]: the first i pattern words can consume exactly the first j key words.
    let mut reach = vec![false; key.len() + 1];
    reach[0] = true;
    for word in pattern {
        let word = word.as_ref();
        let mut next = vec![false; key.len() + 1];
        match word {
            "#" => {
                let mut any = false;
                for j in 0..=key.len() {
                    any |= reach[j];
                    next[j] = any;
                }
            }
            "*" => {
                next[1..].copy_from_slice(&reach[..key.len()]);
            }
            literal => {
                for j in 0..key.len() {
                    next[j + 1] = reach[j] && key[j] == literal;
                }
            }
        }
        reach = next;
        if !reach.iter().any(|r| *r) {
            return false;
        }
    }
    reach[key.len()]
}

impl TopicRouter {
    pub(super) fn add(&mut self, binding: &Binding) {
        let pattern = words(&binding.routing_key)
            .into_iter()
            .map(str::to_owned)
            .collect();
        self.bindings.push((pattern, binding.destination.clone()));
    }

    pub(super) fn remove(&mut self, binding: &Binding) {
        let pattern: Vec<String> = words(&binding.routing_key)
            .into_iter()
            .map(str::to_owned)
            .collect();
        if let Some(at) = self
            .bindings
            .iter()
            .position(|(p, d)| *p == pattern && *d == binding.destination)
        {
            self.bindings.remove(at);
        }
    }

    pub(super) fn route<'a>(&'a self, routing_key: &str, out: &mut Vec<&'a Destination>) {
        let key = words(routing_key);
        for (pattern, dest) in &self.bindings {
            if matches_words(pattern, &key) {
                out.push(dest);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::matches;
    use proptest::prelude::*;

    #[test]
    fn rabbitmq_edge_cases() {
        assert!(matches("#", ""));
        assert!(matches("#", "a.b.c"));
        assert!(!matches("*", ""));
        assert!(matches("*", "a"));
        assert!(!matches("*", "a.b"));
        assert!(matches("a.#", "a"));
        assert!(matches("#.a", "a"));
        assert!(matches("a.#.b", "a.b"));
        assert!(matches("a.#.b", "a.x.y.b"));
        assert!(matches("a.*.b", "a.x.b"));
        assert!(!matches("a.*.b", "a.b"));
        assert!(matches("", ""));
        assert!(!matches("", "a"));
        assert!(matches("a..b", "a..b"));
        assert!(matches("*.*", "."));
        assert!(matches("a.*.b", "a..b"));
        assert!(matches("#.#", ""));
        assert!(matches("*.#", "a"));
        assert!(!matches("*.#", ""));
    }

    /// Reference: the obvious backtracking definition.
    fn reference(p: &[&str], k: &[&str]) -> bool {
        match p.split_first() {
            None => k.is_empty(),
            Some((&"#", rest)) => (0..=k.len()).any(|i| reference(rest, &k[i..])),
            Some((&"*", rest)) => !k.is_empty() && reference(rest, &k[1..]),
            Some((w, rest)) => k.first() == Some(w) && reference(rest, &k[1..]),
        }
    }

    fn word() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("a".to_owned()),
            Just("b".to_owned()),
            Just("".to_owned()),
            Just("*".to_owned()),
            Just("#".to_owned())
        ]
    }

    proptest! {
        #[test]
        fn agrees_with_reference(p in proptest::collection::vec(word(), 0..6),
                                 k in proptest::collection::vec("[ab]?", 0..6)) {
            let pattern = p.join(".");
            let key = k.join(".");
            let pw = super::words(&pattern);
            let kw = super::words(&key);
            prop_assert_eq!(matches(&pattern, &key), reference(&pw, &kw));
        }
    }
}
