//! RabbitMQ's list query parameters, applied to any JSON answer: `columns` (a comma-separated
//! list of fields to keep; of a dotted path RabbitMQ keeps the first field, whole), `sort` (a dotted path) and `sort_reverse`, and on the lists
//! RabbitMQ pages (queues, exchanges, vhosts, connections, channels) `page`, `page_size`, `name`
//! and `use_regex`, which turn the answer into RabbitMQ's page object.
//!
//! Order, as RabbitMQ's: filter by name (paged lists only), sort, page, then keep the columns.
//! Limits: `page` from 1, `page_size` from 1 to 500 (default 100); a bad value or a bad regular
//! expression is a 400 with RabbitMQ's body. Walks are iterative over the given path only, and
//! paths and regular expressions are bounded, so a query cannot make this costly.

use std::cmp::Ordering;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Map, Value};

use super::ApiError;

/// RabbitMQ's largest page.
const MAX_PAGE_SIZE: u64 = 500;
const DEFAULT_PAGE_SIZE: u64 = 100;
/// Bounds on what a query may ask for.
const MAX_COLUMNS: usize = 256;
const MAX_PATH_DEPTH: usize = 16;
const MAX_REGEX_BYTES: usize = 4096;
/// Answers are ours and already in memory; this only keeps the buffering bounded.
const MAX_ANSWER_BYTES: usize = 1 << 30;

/// The list parameters of one request.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct ListQuery {
    columns: Option<Vec<Vec<String>>>,
    sort: Option<Vec<String>>,
    sort_reverse: bool,
    page: Option<String>,
    page_size: Option<String>,
    name: Option<String>,
    use_regex: bool,
}

impl ListQuery {
    /// The parameters in a query string (`None`: there are none, the answer stays as it is).
    pub fn parse(query: &str) -> Option<Self> {
        let mut q = Self::default();
        let mut any = false;
        for (key, value) in form_urlencoded::parse(query.as_bytes()) {
            let path = |v: &str| -> Vec<String> {
                v.split('.')
                    .take(MAX_PATH_DEPTH)
                    .map(str::to_owned)
                    .collect()
            };
            match &*key {
                "columns" => {
                    q.columns = Some(
                        value
                            .split(',')
                            .filter(|c| !c.is_empty())
                            .take(MAX_COLUMNS)
                            .map(path)
                            .collect(),
                    )
                }
                "sort" if !value.is_empty() => q.sort = Some(path(&value)),
                "sort_reverse" => q.sort_reverse = value == "true",
                "page" => q.page = Some(value.into_owned()),
                "page_size" => q.page_size = Some(value.into_owned()),
                "name" => q.name = Some(value.into_owned()),
                "use_regex" => q.use_regex = value == "true",
                _ => continue,
            }
            any = true;
        }
        any.then_some(q)
    }

    /// Apply to an answer; `paged`: the endpoint is one RabbitMQ pages.
    pub fn apply(&self, answer: Value, paged: bool) -> Result<Value, ApiError> {
        let mut answer = answer;
        if let Value::Array(items) = &mut answer {
            if let Some(path) = &self.sort {
                // Stable, as RabbitMQ's: equal keys keep the answer's order.
                items.sort_by(|a, b| compare(lookup(a, path), lookup(b, path)));
            }
            if self.sort_reverse {
                items.reverse();
            }
        }
        let answer = match (paged, &self.page, answer) {
            (true, Some(_), Value::Array(items)) => self.paginate(items)?,
            (_, _, other) => other,
        };
        Ok(match &self.columns {
            Some(columns) => keep_columns(answer, columns, paged && self.page.is_some()),
            None => answer,
        })
    }

    fn paginate(&self, items: Vec<Value>) -> Result<Value, ApiError> {
        let number = |v: Option<&String>, default: u64| match v {
            None => Some(default),
            Some(s) => s.parse::<u64>().ok(),
        };
        let (Some(page), Some(page_size)) = (
            number(self.page.as_ref(), 1),
            number(self.page_size.as_ref(), DEFAULT_PAGE_SIZE),
        ) else {
            return Err(ApiError::bad_request("Pagination parameters are invalid"));
        };
        if page == 0 || page_size == 0 || page_size > MAX_PAGE_SIZE {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_pagination_parameters",
                format!("Invalid pagination parameters: page number {page}, page size {page_size}"),
            ));
        }
        let total = items.len() as u64;
        let filtered: Vec<Value> = match self.name.as_deref().filter(|n| !n.is_empty()) {
            None => items,
            Some(name) => {
                let matches = name_matcher(name, self.use_regex)?;
                items
                    .into_iter()
                    .filter(|item| {
                        item.get("name")
                            .and_then(Value::as_str)
                            .is_some_and(&matches)
                    })
                    .collect()
            }
        };
        let filtered_count = filtered.len() as u64;
        let start = (page - 1).saturating_mul(page_size);
        if start > filtered_count {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "page_out_of_range",
                format!(
                    "Page out of range, page: {page} page size: {page_size}, len: {filtered_count}"
                ),
            ));
        }
        let page_items: Vec<Value> = filtered
            .into_iter()
            .skip(usize::try_from(start).unwrap_or(usize::MAX))
            .take(page_size as usize)
            .collect();
        Ok(json!({
            "filtered_count": filtered_count,
            "item_count": page_items.len(),
            "items": page_items,
            "page": page,
            "page_count": filtered_count.div_ceil(page_size),
            "page_size": page_size,
            "total_count": total,
        }))
    }
}

/// RabbitMQ matches names case-insensitively, as a substring or a regular expression.
fn name_matcher(name: &str, regex: bool) -> Result<impl Fn(&str) -> bool, ApiError> {
    let pattern = if regex {
        name.to_owned()
    } else {
        regex::escape(name)
    };
    if pattern.len() > MAX_REGEX_BYTES {
        return Err(ApiError::bad_request("Pagination parameters are invalid"));
    }
    let re = regex::RegexBuilder::new(&pattern)
        .case_insensitive(true)
        .size_limit(1 << 20)
        .build()
        .map_err(|_| ApiError::bad_request("Pagination parameters are invalid"))?;
    Ok(move |s: &str| re.is_match(s))
}

fn lookup<'a>(v: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter().try_fold(v, |v, key| v.get(key))
}

/// The order of Erlang terms, as RabbitMQ sorts JSON values: numbers, then atoms (false, null,
/// true), then maps, lists and strings (binaries); a missing field sorts as null.
fn compare(a: Option<&Value>, b: Option<&Value>) -> Ordering {
    fn rank(v: Option<&Value>) -> u8 {
        match v {
            Some(Value::Number(_)) => 0,
            Some(Value::Bool(_)) | Some(Value::Null) | None => 1,
            Some(Value::Object(_)) => 2,
            Some(Value::Array(_)) => 3,
            Some(Value::String(_)) => 4,
        }
    }
    fn atom(v: Option<&Value>) -> &'static str {
        match v {
            Some(Value::Bool(true)) => "true",
            Some(Value::Bool(false)) => "false",
            _ => "undefined",
        }
    }
    match (a, b) {
        (Some(Value::Number(x)), Some(Value::Number(y))) => {
            let (x, y) = (x.as_f64().unwrap_or(0.0), y.as_f64().unwrap_or(0.0));
            x.partial_cmp(&y).unwrap_or(Ordering::Equal)
        }
        (Some(Value::String(x)), Some(Value::String(y))) => x.as_bytes().cmp(y.as_bytes()),
        _ => rank(a)
            .cmp(&rank(b))
            .then_with(|| match (rank(a), rank(b)) {
                (1, 1) => atom(a).cmp(atom(b)),
                _ => Ordering::Equal,
            }),
    }
}

/// Keep only the given paths of each item (or of the one object). An item left with none of
/// them is `[]`, as RabbitMQ renders an empty property list.
fn keep_columns(answer: Value, columns: &[Vec<String>], paged: bool) -> Value {
    match answer {
        Value::Object(mut page) if paged => {
            if let Some(Value::Array(items)) = page.remove("items") {
                let items = items.into_iter().map(|i| pick(&i, columns)).collect();
                page.insert("items".to_owned(), Value::Array(items));
            }
            Value::Object(page)
        }
        Value::Array(items) => Value::Array(items.iter().map(|i| pick(i, columns)).collect()),
        other => pick(&other, columns),
    }
}

fn pick(item: &Value, columns: &[Vec<String>]) -> Value {
    let mut out = Map::new();
    for path in columns {
        // RabbitMQ keeps a dotted column's first field, whole.
        let Some(key) = path.first() else { continue };
        if let Some(found) = item.get(key) {
            out.insert(key.clone(), found.clone());
        }
    }
    if out.is_empty() {
        Value::Array(Vec::new())
    } else {
        Value::Object(out)
    }
}

/// Whether RabbitMQ pages the list at this path.
fn paged_path(path: &str) -> bool {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    matches!(
        parts.as_slice(),
        ["api", "queues"]
            | ["api", "queues", _]
            | ["api", "exchanges"]
            | ["api", "exchanges", _]
            | ["api", "vhosts"]
            | ["api", "connections"]
            | ["api", "channels"]
    )
}

/// The middleware: GET answers that are JSON, with list parameters in the query, reshaped.
pub async fn shape(request: Request, next: Next) -> Response {
    let query = (request.method() == Method::GET)
        .then(|| request.uri().query().and_then(ListQuery::parse))
        .flatten();
    let paged = paged_path(request.uri().path());
    let response = next.run(request).await;
    let Some(query) = query else {
        return response;
    };
    let json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if response.status() != StatusCode::OK || !json {
        return response;
    }
    let (parts, body) = response.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, MAX_ANSWER_BYTES).await else {
        return ApiError::bad_request("answer too large to reshape").into_response();
    };
    let Ok(value) = serde_json::from_slice::<Value>(&bytes) else {
        return Response::from_parts(parts, Body::from(bytes));
    };
    match query.apply(value, paged) {
        Ok(shaped) => {
            let mut parts = parts;
            parts.headers.remove(header::CONTENT_LENGTH);
            Response::from_parts(parts, Body::from(shaped.to_string()))
        }
        Err(error) => error.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queues() -> Value {
        json!([
            {"name": "pg-alpha", "vhost": "/", "messages": 3, "arguments": {"x-max-length": 5}},
            {"name": "pg-beta", "vhost": "/", "messages": 1},
            {"name": "Other", "vhost": "v", "messages": 10},
        ])
    }

    fn apply(query: &str, paged: bool) -> Result<Value, ApiError> {
        ListQuery::parse(query).unwrap().apply(queues(), paged)
    }

    #[test]
    fn columns_keep_first_fields_whole_and_empty_items_become_lists() {
        assert_eq!(
            apply("columns=name,arguments.nothing", false).unwrap(),
            json!([
                {"name": "pg-alpha", "arguments": {"x-max-length": 5}},
                {"name": "pg-beta"},
                {"name": "Other"},
            ])
        );
        assert_eq!(
            apply("columns=nothing", false).unwrap(),
            json!([[], [], []])
        );
    }

    #[test]
    fn sort_by_a_path_numbers_before_strings_and_reverse() {
        let names = |v: Value| -> Vec<String> {
            v.as_array()
                .unwrap()
                .iter()
                .map(|i| i["name"].as_str().unwrap().to_owned())
                .collect()
        };
        assert_eq!(
            names(apply("sort=messages", false).unwrap()),
            ["pg-beta", "pg-alpha", "Other"]
        );
        assert_eq!(
            names(apply("sort=name&sort_reverse=true", false).unwrap()),
            ["pg-beta", "pg-alpha", "Other"]
        );
        // A missing field sorts as null: after every number.
        assert_eq!(
            names(apply("sort=arguments.x-max-length", false).unwrap()),
            ["pg-alpha", "pg-beta", "Other"]
        );
    }

    #[test]
    fn pages_with_rabbitmqs_counts_and_case_insensitive_name_filters() {
        assert_eq!(
            apply("page=2&page_size=1&columns=name", true).unwrap(),
            json!({"filtered_count": 3, "item_count": 1, "items": [{"name": "pg-beta"}],
                   "page": 2, "page_count": 3, "page_size": 1, "total_count": 3})
        );
        let filtered = apply("page=1&name=PG-&columns=name", true).unwrap();
        assert_eq!(
            (
                filtered["filtered_count"].clone(),
                filtered["page_size"].clone()
            ),
            (json!(2), json!(100))
        );
        let regex = apply("page=1&name=^pg-[b]&use_regex=true&columns=name", true).unwrap();
        assert_eq!(regex["items"], json!([{"name": "pg-beta"}]));
        // Just past the end: an empty page; further, RabbitMQ's 400.
        assert_eq!(
            apply("page=4&page_size=1", true).unwrap()["items"],
            json!([])
        );
        assert!(apply("page=3&page_size=2", true).is_err());
        // Without `page`, or on a list RabbitMQ does not page, the list stays a list.
        assert!(apply("page_size=2&name=x", true).unwrap().is_array());
        assert!(apply("page=1", false).unwrap().is_array());
    }

    #[test]
    fn bad_pages_and_regular_expressions_are_rabbitmqs_400s() {
        for (query, error, reason) in [
            (
                "page=0&page_size=2",
                "invalid_pagination_parameters",
                "Invalid pagination parameters: page number 0, page size 2",
            ),
            (
                "page=1&page_size=501",
                "invalid_pagination_parameters",
                "Invalid pagination parameters: page number 1, page size 501",
            ),
            (
                "page=1&page_size=0",
                "invalid_pagination_parameters",
                "Invalid pagination parameters: page number 1, page size 0",
            ),
            ("page=x", "bad_request", "Pagination parameters are invalid"),
            (
                "page=1&name=(&use_regex=true",
                "bad_request",
                "Pagination parameters are invalid",
            ),
            (
                "page=9&page_size=2",
                "page_out_of_range",
                "Page out of range, page: 9 page size: 2, len: 3",
            ),
        ] {
            let e = apply(query, true).unwrap_err();
            assert_eq!(e.status, StatusCode::BAD_REQUEST, "{query}");
            assert_eq!(
                e.body,
                Some(json!({"error": error, "reason": reason})),
                "{query}"
            );
        }
    }

    #[test]
    fn rabbitmqs_paged_lists() {
        for p in [
            "/api/queues",
            "/api/queues/%2f",
            "/api/exchanges",
            "/api/vhosts",
            "/api/connections",
            "/api/channels",
        ] {
            assert!(paged_path(p), "{p}");
        }
        for p in [
            "/api/users",
            "/api/bindings",
            "/api/queues/%2f/q",
            "/api/vhosts/%2f/connections",
        ] {
            assert!(!paged_path(p), "{p}");
        }
    }
}
