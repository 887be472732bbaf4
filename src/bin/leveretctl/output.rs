//! rabbitmqctl's output: a banner, then tab-separated rows (`-q`, `--no-table-headers`,
//! `--formatter json`).

use serde_json::Value;

use super::client::{Api, Failure};
use super::{Cli, Formatter};
/// A cell as rabbitmqctl prints it: strings raw, lists as `[a, b]`, tables as JSON.
pub(super) fn cell(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        Value::Array(items) => format!(
            "[{}]",
            items.iter().map(cell).collect::<Vec<_>>().join(", ")
        ),
        other => other.to_string(),
    }
}

pub(super) fn print_rows(cli: &Cli, banner: &str, columns: &[String], rows: &[Value]) {
    match cli.formatter {
        Formatter::Json => {
            let objects: Vec<Value> = rows
                .iter()
                .map(|r| {
                    Value::Object(
                        columns
                            .iter()
                            .map(|c| (c.clone(), r.get(c).cloned().unwrap_or(Value::Null)))
                            .collect(),
                    )
                })
                .collect();
            println!(
                "{}",
                serde_json::to_string_pretty(&objects).unwrap_or_default()
            );
        }
        Formatter::Table => {
            if !cli.quiet {
                println!("{banner}");
            }
            if !cli.no_table_headers {
                println!("{}", columns.join("\t"));
            }
            for r in rows {
                let cells: Vec<String> = columns
                    .iter()
                    .map(|c| cell(r.get(c).unwrap_or(&Value::Null)))
                    .collect();
                println!("{}", cells.join("\t"));
            }
        }
    }
}

pub(super) fn columns(given: &[String], default: &[&str]) -> Vec<String> {
    if given.is_empty() {
        default.iter().map(|s| (*s).to_owned()).collect()
    } else {
        given.to_vec()
    }
}

pub(super) fn list(
    cli: &Cli,
    api: &Api,
    path: &str,
    banner: &str,
    given: &[String],
    default: &[&str],
) -> Result<(), Failure> {
    let rows = api.get(path)?;
    let rows = rows.as_array().cloned().unwrap_or_default();
    let columns = columns(given, default);
    if let (Some(first), Some(bad)) = (
        rows.first(),
        columns
            .iter()
            .find(|c| rows.first().is_some_and(|r| r.get(c.as_str()).is_none())),
    ) {
        let known: Vec<&String> = first
            .as_object()
            .map(|o| o.keys().collect())
            .unwrap_or_default();
        return Err(Failure::Usage(format!(
            "invalid info key '{bad}'; valid keys: {}",
            known
                .iter()
                .map(|k| k.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    print_rows(cli, banner, &columns, &rows);
    Ok(())
}

pub(super) fn done(cli: &Cli, message: &str) {
    if !cli.quiet {
        println!("{message}");
    }
}
