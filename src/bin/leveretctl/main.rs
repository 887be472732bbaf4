//! `leveretctl`: a CLI modelled on `rabbitmqctl`, talking to Leveret's HTTP management API.
//!
//! Commands and output follow rabbitmqctl 3.10: a banner line ("Listing queues for vhost / ..."),
//! then a tab-separated header and rows; `-q` drops the banner, `--formatter json` prints JSON
//! for scripts. Exit codes: 0 success, 64 bad usage, 69 broker unreachable, 70 the broker
//! refused the operation (the reason is printed on stderr).

mod client;
mod output;

use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use serde_json::{json, Value};

use client::{encode, Api, Failure};
use output::{cell, columns, done, list, print_rows};

/// Manage a Leveret broker through its HTTP API (rabbitmqctl's commands).
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// Broker host.
    #[arg(
        long,
        global = true,
        default_value = "127.0.0.1",
        env = "LEVERETCTL_HOST"
    )]
    host: String,
    /// Management API port.
    #[arg(long, global = true, default_value_t = 15672, env = "LEVERETCTL_PORT")]
    port: u16,
    /// User name.
    #[arg(long, global = true, default_value = "guest", env = "LEVERETCTL_USER")]
    user: String,
    /// Password.
    #[arg(
        long,
        global = true,
        default_value = "guest",
        env = "LEVERETCTL_PASSWORD"
    )]
    password: String,
    /// Virtual host for commands that work on one.
    #[arg(short = 'p', long = "vhost", global = true, default_value = "/")]
    vhost: String,
    /// Output format: table (default) or json.
    #[arg(long, global = true, default_value = "table")]
    formatter: Formatter,
    /// Quiet: no banner lines.
    #[arg(short, long, global = true)]
    quiet: bool,
    /// Without the header row of tables.
    #[arg(long, global = true)]
    no_table_headers: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Formatter {
    Table,
    Json,
}

#[derive(Debug, Subcommand)]
#[command(rename_all = "snake_case")]
enum Command {
    /// List queues with the given columns (default: name messages).
    ListQueues { columns: Vec<String> },
    /// List exchanges (default columns: name type).
    ListExchanges { columns: Vec<String> },
    /// List bindings.
    ListBindings { columns: Vec<String> },
    /// List client connections.
    ListConnections { columns: Vec<String> },
    /// List channels.
    ListChannels { columns: Vec<String> },
    /// List consumers.
    ListConsumers { columns: Vec<String> },
    /// Close a connection (by its name, as list_connections shows it).
    CloseConnection { name: String, explanation: String },
    /// Remove every ready message from a queue.
    PurgeQueue { queue: String },
    /// Delete a queue.
    DeleteQueue {
        queue: String,
        /// Only if it has no consumers.
        #[arg(short = 'u', long = "if-unused")]
        if_unused: bool,
        /// Only if it has no ready messages.
        #[arg(short = 'e', long = "if-empty")]
        if_empty: bool,
    },
    /// Create a virtual host.
    AddVhost {
        vhost: String,
        #[arg(long)]
        description: Option<String>,
        #[arg(long)]
        tags: Option<String>,
    },
    /// Delete a virtual host and everything in it.
    DeleteVhost { vhost: String },
    /// List virtual hosts.
    ListVhosts { columns: Vec<String> },
    /// Create a user.
    AddUser {
        username: String,
        #[arg(value_name = "PASSWORD")]
        new_password: String,
    },
    /// Delete a user (its connections are closed).
    DeleteUser { username: String },
    /// Change a user's password.
    ChangePassword {
        username: String,
        #[arg(value_name = "PASSWORD")]
        new_password: String,
    },
    /// Replace a user's tags.
    SetUserTags { username: String, tags: Vec<String> },
    /// List users.
    ListUsers,
    /// Set a user's permissions in the vhost (-p).
    SetPermissions {
        username: String,
        configure: String,
        write: String,
        read: String,
    },
    /// Remove a user's permissions in the vhost (-p).
    ClearPermissions { username: String },
    /// List permissions in the vhost (-p).
    ListPermissions,
    /// Set a vhost's limits, as JSON: '{"max-connections": 10, "max-queues": 100}'.
    SetVhostLimits { definition: String },
    /// Remove a vhost's limits.
    ClearVhostLimits,
    /// Set a policy in the vhost (-p): NAME PATTERN DEFINITION (JSON).
    SetPolicy {
        name: String,
        pattern: String,
        definition: String,
        #[arg(long = "apply-to", default_value = "all")]
        apply_to: String,
        #[arg(long, default_value_t = 0)]
        priority: i64,
    },
    /// Clear a policy.
    ClearPolicy { name: String },
    /// List policies.
    ListPolicies,
    /// Write the broker's definitions to a file (or - for stdout).
    ExportDefinitions { path: String },
    /// Import definitions from a file (or - for stdin), in RabbitMQ's format.
    ImportDefinitions { path: String },
    /// Show the broker's status.
    Status,
    /// Wait until the broker answers (up to --timeout seconds).
    AwaitStartup {
        #[arg(long, short = 't', default_value_t = 60)]
        timeout: u64,
    },
    /// Set the memory high watermark: a fraction of RAM, or `absolute <bytes|NMB|NGB>`.
    SetVmMemoryHighWatermark { value: Vec<String> },
    /// Set the free-disk limit: `<bytes|NMB|NGB>`, or `mem_relative <fraction>`.
    SetDiskFreeLimit { value: Vec<String> },
}

/// `512MB`, `2GB`, `1000000` → bytes (RabbitMQ's units: kB/MB/GB are powers of ten, KiB/MiB/GiB
/// of two).
fn parse_bytes(text: &str) -> Option<u64> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let n: u64 = number.parse().ok()?;
    let factor: u64 = match unit {
        "" => 1,
        "kB" | "KB" | "k" | "K" => 1_000,
        "MB" | "M" => 1_000_000,
        "GB" | "G" => 1_000_000_000,
        "KiB" | "Ki" => 1 << 10,
        "MiB" | "Mi" => 1 << 20,
        "GiB" | "Gi" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(factor)
}

fn total_memory() -> Option<u64> {
    leveret::broker::memory::total_memory()
}

fn run(cli: &Cli) -> Result<(), Failure> {
    let api = Api::new(cli);
    let vh = encode(&cli.vhost);
    let vhost = &cli.vhost;
    match &cli.command {
        Command::ListQueues { columns } => list(
            cli,
            &api,
            &format!("/api/queues/{vh}"),
            &format!("Timeout: 60.0 seconds ...\nListing queues for vhost {vhost} ..."),
            columns,
            &["name", "messages"],
        ),
        Command::ListExchanges { columns } => list(
            cli,
            &api,
            &format!("/api/exchanges/{vh}"),
            &format!("Listing exchanges for vhost {vhost} ..."),
            columns,
            &["name", "type"],
        ),
        Command::ListBindings { columns } => list(
            cli,
            &api,
            &format!("/api/bindings/{vh}"),
            &format!("Listing bindings for vhost {vhost}..."),
            columns,
            &[
                "source",
                "destination_type",
                "destination",
                "routing_key",
                "arguments",
            ],
        ),
        Command::ListConnections { columns } => list(
            cli,
            &api,
            "/api/connections",
            "Listing connections ...",
            columns,
            &["user", "peer_host", "peer_port", "state"],
        ),
        Command::ListChannels { columns } => list(
            cli,
            &api,
            "/api/channels",
            "Listing channels ...",
            columns,
            &["name", "user", "consumer_count", "messages_unacknowledged"],
        ),
        Command::ListConsumers { columns } => {
            let rows = api.get(&format!("/api/consumers/{vh}"))?;
            let flat: Vec<Value> = rows
                .as_array()
                .into_iter()
                .flatten()
                .map(|c| {
                    json!({
                        "queue_name": c["queue"]["name"],
                        "channel_pid": c["channel_details"]["name"],
                        "consumer_tag": c["consumer_tag"],
                        "ack_required": c["ack_required"],
                        "prefetch_count": c["prefetch_count"],
                        "active": c["active"],
                        "arguments": c["arguments"],
                    })
                })
                .collect();
            let columns = self::columns(
                columns,
                &[
                    "queue_name",
                    "channel_pid",
                    "consumer_tag",
                    "ack_required",
                    "prefetch_count",
                    "active",
                    "arguments",
                ],
            );
            print_rows(
                cli,
                &format!("Listing consumers in vhost {vhost} ..."),
                &columns,
                &flat,
            );
            Ok(())
        }
        Command::CloseConnection { name, explanation } => {
            let url = format!("{}/api/connections/{}", api.base, encode(name));
            let mut response = api
                .agent
                .delete(&url)
                .header("Authorization", &api.auth)
                .header("X-Reason", explanation)
                .call()
                .map_err(|e| Failure::Unreachable(e.to_string()))?;
            match response.status().as_u16() {
                200..=299 => {
                    done(
                        cli,
                        &format!("Closing connection {name}, reason: {explanation}..."),
                    );
                    Ok(())
                }
                404 => Err(Failure::Refused(format!("no such connection: {name}"))),
                status => Err(Failure::Refused(format!(
                    "HTTP {status}: {}",
                    response.body_mut().read_to_string().unwrap_or_default()
                ))),
            }
        }
        Command::PurgeQueue { queue } => {
            api.call(
                "DELETE",
                &format!("/api/queues/{vh}/{}/contents", encode(queue)),
                None,
            )?;
            done(
                cli,
                &format!("Purging queue '{queue}' in vhost '{vhost}' ..."),
            );
            Ok(())
        }
        Command::DeleteQueue {
            queue,
            if_unused,
            if_empty,
        } => {
            let mut path = format!("/api/queues/{vh}/{}", encode(queue));
            let mut query = Vec::new();
            if *if_unused {
                query.push("if-unused=true");
            }
            if *if_empty {
                query.push("if-empty=true");
            }
            if !query.is_empty() {
                path = format!("{path}?{}", query.join("&"));
            }
            api.call("DELETE", &path, None)?;
            done(
                cli,
                &format!("Deleting queue '{queue}' on vhost '{vhost}' ..."),
            );
            Ok(())
        }
        Command::AddVhost {
            vhost,
            description,
            tags,
        } => {
            let mut body = json!({});
            if let Some(d) = description {
                body["description"] = json!(d);
            }
            if let Some(t) = tags {
                body["tags"] = json!(t);
            }
            api.call("PUT", &format!("/api/vhosts/{}", encode(vhost)), Some(body))?;
            done(cli, &format!("Adding vhost \"{vhost}\" ..."));
            Ok(())
        }
        Command::DeleteVhost { vhost } => {
            api.call("DELETE", &format!("/api/vhosts/{}", encode(vhost)), None)?;
            done(cli, &format!("Deleting vhost \"{vhost}\" ..."));
            Ok(())
        }
        Command::ListVhosts { columns } => list(
            cli,
            &api,
            "/api/vhosts",
            "Listing vhosts ...",
            columns,
            &["name"],
        ),
        Command::AddUser {
            username,
            new_password: password,
        } => {
            if api.get(&format!("/api/users/{}", encode(username))).is_ok() {
                return Err(Failure::Refused(format!(
                    "user \"{username}\" already exists"
                )));
            }
            api.call(
                "PUT",
                &format!("/api/users/{}", encode(username)),
                Some(json!({"password": password, "tags": ""})),
            )?;
            done(cli, &format!("Adding user \"{username}\" ..."));
            Ok(())
        }
        Command::DeleteUser { username } => {
            api.call("DELETE", &format!("/api/users/{}", encode(username)), None)
                .map_err(|f| match f {
                    Failure::Refused(r) if r.starts_with("not found") => {
                        Failure::Refused(format!("user \"{username}\" does not exist"))
                    }
                    other => other,
                })?;
            done(cli, &format!("Deleting user \"{username}\" ..."));
            Ok(())
        }
        Command::ChangePassword {
            username,
            new_password: password,
        } => {
            let path = format!("/api/users/{}", encode(username));
            let user = api.get(&path)?;
            api.call(
                "PUT",
                &path,
                Some(json!({"password": password, "tags": user["tags"]})),
            )?;
            done(
                cli,
                &format!("Changing password for user \"{username}\" ..."),
            );
            Ok(())
        }
        Command::SetUserTags { username, tags } => {
            let path = format!("/api/users/{}", encode(username));
            api.get(&path)?;
            api.call("PUT", &path, Some(json!({"tags": tags})))?;
            done(
                cli,
                &format!(
                    "Setting tags for user \"{username}\" to [{}] ...",
                    tags.join(", ")
                ),
            );
            Ok(())
        }
        Command::ListUsers => list(
            cli,
            &api,
            "/api/users",
            "Listing users ...",
            &[],
            &["name", "tags"],
        ),
        Command::SetPermissions {
            username,
            configure,
            write,
            read,
        } => {
            api.call(
                "PUT",
                &format!("/api/permissions/{vh}/{}", encode(username)),
                Some(json!({"configure": configure, "write": write, "read": read})),
            )?;
            done(
                cli,
                &format!("Setting permissions for user \"{username}\" in vhost \"{vhost}\" ..."),
            );
            Ok(())
        }
        Command::ClearPermissions { username } => {
            api.call(
                "DELETE",
                &format!("/api/permissions/{vh}/{}", encode(username)),
                None,
            )?;
            done(
                cli,
                &format!("Clearing permissions for user \"{username}\" in vhost \"{vhost}\" ..."),
            );
            Ok(())
        }
        Command::ListPermissions => list(
            cli,
            &api,
            &format!("/api/vhosts/{vh}/permissions"),
            &format!("Listing permissions for vhost \"{vhost}\" ..."),
            &[],
            &["user", "configure", "write", "read"],
        ),
        Command::SetVhostLimits { definition } => {
            let limits: Value = serde_json::from_str(definition)
                .map_err(|e| Failure::Usage(format!("the definition is not JSON: {e}")))?;
            let Some(limits) = limits.as_object() else {
                return Err(Failure::Usage(
                    "the definition must be a JSON object".into(),
                ));
            };
            for (name, value) in limits {
                api.call(
                    "PUT",
                    &format!("/api/vhost-limits/{vh}/{}", encode(name)),
                    Some(json!({ "value": value })),
                )?;
            }
            done(cli, &format!("Applying limits to vhost \"{vhost}\" ..."));
            Ok(())
        }
        Command::ClearVhostLimits => {
            for name in ["max-connections", "max-queues"] {
                api.call("DELETE", &format!("/api/vhost-limits/{vh}/{name}"), None)?;
            }
            done(cli, &format!("Clearing vhost \"{vhost}\" limits ..."));
            Ok(())
        }
        Command::SetPolicy {
            name,
            pattern,
            definition,
            apply_to,
            priority,
        } => {
            let definition: Value = serde_json::from_str(definition)
                .map_err(|e| Failure::Usage(format!("the definition is not JSON: {e}")))?;
            api.call(
                "PUT",
                &format!("/api/policies/{vh}/{}", encode(name)),
                Some(json!({"pattern": pattern, "definition": definition, "apply-to": apply_to, "priority": priority})),
            )?;
            done(
                cli,
                &format!("Setting policy \"{name}\" for pattern \"{pattern}\" ..."),
            );
            Ok(())
        }
        Command::ClearPolicy { name } => {
            api.call(
                "DELETE",
                &format!("/api/policies/{vh}/{}", encode(name)),
                None,
            )?;
            done(
                cli,
                &format!("Clearing policy \"{name}\" on vhost \"{vhost}\" ..."),
            );
            Ok(())
        }
        Command::ListPolicies => list(
            cli,
            &api,
            &format!("/api/policies/{vh}"),
            &format!("Listing policies for vhost \"{vhost}\" ..."),
            &[],
            &[
                "vhost",
                "name",
                "pattern",
                "apply-to",
                "definition",
                "priority",
            ],
        ),
        Command::ExportDefinitions { path } => {
            let defs = api.get("/api/definitions")?;
            let text = serde_json::to_string(&defs).unwrap_or_default();
            if path == "-" {
                println!("{text}");
            } else {
                std::fs::write(path, text)
                    .map_err(|e| Failure::Refused(format!("cannot write {path}: {e}")))?;
                done(
                    cli,
                    &format!("Exporting definitions in JSON to a file at \"{path}\" ..."),
                );
            }
            Ok(())
        }
        Command::ImportDefinitions { path } => {
            let text = if path == "-" {
                std::io::read_to_string(std::io::stdin())
                    .map_err(|e| Failure::Usage(format!("cannot read stdin: {e}")))?
            } else {
                std::fs::read_to_string(path)
                    .map_err(|e| Failure::Usage(format!("cannot read {path}: {e}")))?
            };
            let defs: Value = serde_json::from_str(&text)
                .map_err(|e| Failure::Usage(format!("{path} is not JSON: {e}")))?;
            api.call("POST", "/api/definitions", Some(defs))?;
            done(
                cli,
                &format!("Importing definitions in JSON from a file at \"{path}\" ..."),
            );
            Ok(())
        }
        Command::Status => {
            let overview = api.get("/api/overview")?;
            let nodes = api.get("/api/nodes")?;
            let node = &nodes[0];
            let status = json!({
                "product_name": overview["product_name"],
                "product_version": overview["product_version"],
                "rabbitmq_compatible_version": overview["rabbitmq_version"],
                "node": overview["node"],
                "memory_used_bytes": node["mem_used"],
                "memory_high_watermark_bytes": node["mem_limit"],
                "memory_alarm": node["mem_alarm"],
                "disk_free_limit_bytes": node["disk_free_limit"],
                "disk_free_alarm": node["disk_free_alarm"],
                "object_totals": overview["object_totals"],
                "queue_totals": overview["queue_totals"],
                "listeners": overview["listeners"],
            });
            match cli.formatter {
                Formatter::Json => println!(
                    "{}",
                    serde_json::to_string_pretty(&status).unwrap_or_default()
                ),
                Formatter::Table => {
                    if !cli.quiet {
                        println!("Status of node {} ...", cell(&status["node"]));
                    }
                    for (k, v) in status.as_object().into_iter().flatten() {
                        println!("{k}: {}", cell(v));
                    }
                }
            }
            Ok(())
        }
        Command::AwaitStartup { timeout } => {
            let deadline = Instant::now() + Duration::from_secs(*timeout);
            loop {
                match api.get("/api/overview") {
                    Ok(_) => return Ok(()),
                    Err(Failure::Unreachable(reason)) if Instant::now() < deadline => {
                        let _ = reason;
                        std::thread::sleep(Duration::from_millis(200));
                    }
                    Err(other) => return Err(other),
                }
            }
        }
        Command::SetVmMemoryHighWatermark { value } => {
            let bytes = match value.as_slice() {
                [absolute, amount] if absolute == "absolute" => parse_bytes(amount),
                [fraction] => fraction
                    .parse::<f64>()
                    .ok()
                    .filter(|f| (0.0..=1.0).contains(f))
                    .and_then(|f| total_memory().map(|t| (t as f64 * f) as u64)),
                _ => None,
            }
            .ok_or_else(|| {
                Failure::Usage("expected a fraction (0.4) or `absolute <amount>`".into())
            })?;
            api.call(
                "PUT",
                "/api/leveret/vm_memory_high_watermark",
                Some(json!({"bytes": bytes})),
            )?;
            done(
                cli,
                &format!("Setting memory threshold to {bytes} bytes ..."),
            );
            Ok(())
        }
        Command::SetDiskFreeLimit { value } => {
            let bytes = match value.as_slice() {
                [relative, fraction] if relative == "mem_relative" => fraction
                    .parse::<f64>()
                    .ok()
                    .and_then(|f| total_memory().map(|t| (t as f64 * f) as u64)),
                [amount] => parse_bytes(amount),
                _ => None,
            }
            .ok_or_else(|| {
                Failure::Usage("expected `<amount>` or `mem_relative <fraction>`".into())
            })?;
            api.call(
                "PUT",
                "/api/leveret/disk_free_limit",
                Some(json!({"bytes": bytes})),
            )?;
            done(
                cli,
                &format!("Setting disk free limit to {bytes} bytes ..."),
            );
            Ok(())
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(reason)) => {
            eprintln!("Error:\n{reason}");
            ExitCode::from(64)
        }
        Err(Failure::Unreachable(reason)) => {
            eprintln!("Error: {reason}");
            ExitCode::from(69)
        }
        Err(Failure::Refused(reason)) => {
            eprintln!("Error:\n{reason}");
            ExitCode::from(70)
        }
    }
}
