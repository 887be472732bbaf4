//! The HTTP API's list parameters (`columns`, `sort`, `page`, `name`, `use_regex`, …) on
//! arbitrary query strings and arbitrary JSON answers: parsing and reshaping never panic, and a
//! page never holds more than its size.
#![no_main]

use leveret::admin::listing::ListQuery;
use libfuzzer_sys::fuzz_target;
use serde_json::{json, Value};

fuzz_target!(|data: &[u8]| {
    let split = data.iter().position(|b| *b == 0).unwrap_or(data.len());
    let (query, answer) = data.split_at(split);
    let Some(q) = ListQuery::parse(&String::from_utf8_lossy(query)) else {
        return;
    };
    let answer = serde_json::from_slice::<Value>(answer.get(1..).unwrap_or_default())
        .unwrap_or_else(|_| {
            json!([
                {"name": "a", "vhost": "/", "messages": 1, "arguments": {"x": [1, "s"]}},
                {"name": "B", "vhost": "v", "messages": "x", "durable": true},
                {"name": null},
                7,
            ])
        });
    for paged in [false, true] {
        if let Ok(shaped) = q.apply(answer.clone(), paged) {
            if let (Some(items), Some(size)) = (
                shaped.get("items").and_then(Value::as_array),
                shaped.get("page_size").and_then(Value::as_u64),
            ) {
                assert!(items.len() as u64 <= size, "a page over its size");
            }
        }
    }
});
