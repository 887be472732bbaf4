//! The configuration file, in the syntax of RabbitMQ's `rabbitmq.conf`: `key = value` lines,
//! dotted keys, `#` comments on their own lines (a value may contain `#`: passwords do).
//!
//! Parsing (nom) and validation are pure: [`parse`] turns text into a [`Config`] or an error that
//! names the file, line, column and key, with a suggestion for an unknown key. Keys follow
//! RabbitMQ's where the meaning is the same; Leveret's own are `data_dir`, `store.*`,
//! `max_unacked_per_channel`, `max_pending_output` and `management.http.max_get_payload`. [`Config::render`] prints the effective configuration in the same
//! syntax, so that `parse(render(c)) == c`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use nom::bytes::complete::{take_while, take_while1};
use nom::character::complete::{char, space0};
use nom::sequence::delimited;
use nom::{IResult, Parser};

/// A memory threshold: a fraction of the machine's RAM, or bytes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Watermark {
    /// `*.relative`: a fraction of total memory.
    Relative(f64),
    /// `*.absolute`: bytes.
    Absolute(u64),
}

/// The effective configuration: the file's values over the defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// `listeners.tcp.default` (and other `listeners.tcp.NAME`): AMQP listeners.
    pub listeners_tcp: BTreeMap<String, SocketAddr>,
    /// `listeners.ssl.NAME`: amqps listeners.
    pub listeners_ssl: BTreeMap<String, SocketAddr>,
    /// `ssl_options.*`, as given.
    pub ssl_options: BTreeMap<String, String>,
    /// `default_vhost`.
    pub default_vhost: String,
    /// `default_user`.
    pub default_user: String,
    /// `default_pass`.
    pub default_pass: String,
    /// `loopback_users.NAME = true|false`; `loopback_users = none` clears the list.
    pub loopback_users: Vec<String>,
    /// `heartbeat`, seconds.
    pub heartbeat: u16,
    /// `frame_max`, bytes.
    pub frame_max: u32,
    /// `channel_max`.
    pub channel_max: u16,
    /// `max_message_size`, bytes.
    pub max_message_size: u64,
    /// `max_unacked_per_channel` (Leveret's own): deliveries a channel may hold unacknowledged
    /// across its consumers, whatever their prefetch (0: no cap, as RabbitMQ).
    pub max_unacked_per_channel: u32,
    /// `max_pending_output` (Leveret's own), bytes: output a connection may have queued for a
    /// client that does not read before the broker stops reading that connection's socket.
    pub max_pending_output: u64,
    /// `consumer_timeout`, milliseconds (`None`: `consumer_timeout = false`, never).
    pub consumer_timeout: Option<u64>,
    /// `vm_memory_high_watermark.relative` / `.absolute`.
    pub vm_memory_high_watermark: Watermark,
    /// `vm_memory_high_watermark_paging_ratio`: the fraction of the watermark at which queues
    /// start paging transient messages out of memory (RabbitMQ's default, 0.5).
    pub vm_memory_high_watermark_paging_ratio: f64,
    /// `disk_free_limit.absolute` / `.relative`.
    pub disk_free_limit: Watermark,
    /// `management.tcp.port`.
    pub management_port: u16,
    /// `management.http.max_body_size`, bytes: the largest HTTP API request body.
    pub management_max_body_size: u64,
    /// `management.http.max_get_payload` (Leveret's own), bytes: payload one HTTP API get
    /// collects at most.
    pub management_max_get_payload: u64,
    /// `management.ssl.*` (`port`, `certfile`, `keyfile`, `cacertfile`, `verify`,
    /// `fail_if_no_peer_cert`): the HTTP API over TLS, as given.
    pub management_ssl: BTreeMap<String, String>,
    /// `prometheus.tcp.port`.
    pub prometheus_port: u16,
    /// `log.console.level`.
    pub log_level: String,
    /// `data_dir` (Leveret's own).
    pub data_dir: PathBuf,
    /// `store.flush_interval`, milliseconds: sled's background flush (Leveret's own).
    pub store_flush_interval: u64,
    /// `store.segment_size`, bytes: the message log starts a new segment file past this
    /// (Leveret's own).
    pub store_segment_size: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listeners_tcp: BTreeMap::from([(
                "default".to_owned(),
                SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 5672),
            )]),
            listeners_ssl: BTreeMap::new(),
            ssl_options: BTreeMap::new(),
            default_vhost: "/".to_owned(),
            default_user: "guest".to_owned(),
            default_pass: "guest".to_owned(),
            loopback_users: vec!["guest".to_owned()],
            heartbeat: 60,
            frame_max: 131_072,
            channel_max: 2047,
            max_message_size: 128 * 1024 * 1024,
            max_unacked_per_channel: 0,
            max_pending_output: 1024 * 1024,
            consumer_timeout: Some(30 * 60 * 1000),
            vm_memory_high_watermark: Watermark::Relative(0.4),
            vm_memory_high_watermark_paging_ratio: 0.5,
            disk_free_limit: Watermark::Absolute(50_000_000),
            management_port: 15672,
            management_max_body_size: 20 * 1024 * 1024,
            management_max_get_payload: 64 * 1024 * 1024,
            management_ssl: BTreeMap::new(),
            prometheus_port: 15692,
            log_level: "info".to_owned(),
            data_dir: PathBuf::from("./data"),
            store_flush_interval: 500,
            store_segment_size: 8 * 1024 * 1024,
        }
    }
}

/// A configuration error, located.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}:{column}: {message}")]
pub struct ConfigError {
    /// File name as given.
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
    /// What is wrong, naming the key.
    pub message: String,
}

/// Every key Leveret knows (`NAME` stands for any listener or user name; `ssl_options.` takes
/// any suffix).
const KEYS: &[&str] = &[
    "listeners.tcp.NAME",
    "listeners.ssl.NAME",
    "ssl_options.",
    "default_vhost",
    "default_user",
    "default_pass",
    "loopback_users",
    "loopback_users.NAME",
    "heartbeat",
    "frame_max",
    "channel_max",
    "max_message_size",
    "max_unacked_per_channel",
    "max_pending_output",
    "consumer_timeout",
    "vm_memory_high_watermark.relative",
    "vm_memory_high_watermark.absolute",
    "vm_memory_high_watermark_paging_ratio",
    "disk_free_limit.relative",
    "disk_free_limit.absolute",
    "management.tcp.port",
    "management.http.max_body_size",
    "management.http.max_get_payload",
    "management.ssl.",
    "prometheus.tcp.port",
    "log.console.level",
    "data_dir",
    "store.flush_interval",
    "store.segment_size",
];

/// One `key = value` line: the key and where the value starts.
fn assignment(line: &str) -> IResult<&str, &str> {
    let key = take_while1(|c: char| c.is_ascii_alphanumeric() || "._-".contains(c));
    let (rest, key) = delimited(space0, key, (space0, char('='), space0)).parse(line)?;
    let (value, _) = take_while(|c: char| c == ' ' || c == '\t').parse(rest)?;
    Ok((value, key))
}

/// Bytes: an integer, or an integer with a unit (`kB`, `KiB`, `MB`, `MiB`, `GB`, `GiB`, and the
/// one-letter forms), as RabbitMQ reads sizes.
fn bytes(value: &str) -> Option<u64> {
    let split = value
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(value.len());
    let (number, unit) = value.split_at(split);
    let n: u64 = number.parse().ok()?;
    let factor: u64 = match unit {
        "" => 1,
        "k" | "K" | "kB" | "KB" => 1000,
        "KiB" | "Ki" => 1024,
        "M" | "MB" => 1000 * 1000,
        "MiB" | "Mi" => 1024 * 1024,
        "G" | "GB" => 1000 * 1000 * 1000,
        "GiB" | "Gi" => 1024 * 1024 * 1024,
        _ => return None,
    };
    n.checked_mul(factor)
}

fn listener(value: &str) -> Option<SocketAddr> {
    value.parse::<SocketAddr>().ok().or_else(|| {
        Some(SocketAddr::new(
            IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            value.parse().ok()?,
        ))
    })
}

/// Edit distance, for suggestions.
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

fn suggestion(key: &str) -> String {
    let best = KEYS
        .iter()
        .map(|k| (distance(key, k.trim_end_matches(".NAME")), k))
        .min_by_key(|(d, _)| *d);
    match best {
        Some((d, k)) if d <= key.len() / 2 + 2 => format!("; did you mean '{k}'?"),
        _ => String::new(),
    }
}

/// Parse a configuration file's text. `file` is only used in error messages.
pub fn parse(file: &str, text: &str) -> Result<Config, ConfigError> {
    let mut config = Config::default();
    let mut tcp_given = false;
    for (n, raw) in text.lines().enumerate() {
        let trimmed = raw.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let error = |column: usize, message: String| ConfigError {
            file: file.to_owned(),
            line: n + 1,
            column,
            message,
        };
        let (value, key) = assignment(raw).map_err(|_| {
            error(
                raw.len() - trimmed.len() + 1,
                "expected `key = value`".into(),
            )
        })?;
        let value_column = raw.len() - value.len() + 1;
        let value = value.trim_end();
        let bad = |what: &str| error(value_column, format!("{key}: {what}, got '{value}'"));
        if value.is_empty() {
            return Err(error(value_column, format!("{key}: missing value")));
        }
        let number = |what: &str| value.parse::<u64>().map_err(|_| bad(what));
        if let Some(option) = key
            .strip_prefix("management.ssl.")
            .filter(|o| !o.is_empty())
        {
            if option == "port" {
                value.parse::<u16>().map_err(|_| bad("expected a port"))?;
            }
            config
                .management_ssl
                .insert(option.to_owned(), value.to_owned());
            continue;
        }
        match key.split_once('.') {
            Some(("listeners", rest)) => {
                let (kind, name) = rest.split_once('.').unwrap_or((rest, ""));
                let addr = listener(value).ok_or_else(|| bad("expected a port or address:port"))?;
                match (kind, name.is_empty()) {
                    ("tcp", false) => {
                        if !tcp_given {
                            config.listeners_tcp.clear();
                            tcp_given = true;
                        }
                        config.listeners_tcp.insert(name.to_owned(), addr);
                    }
                    ("ssl", false) => {
                        config.listeners_ssl.insert(name.to_owned(), addr);
                    }
                    _ => return Err(error(1, format!("unknown key '{key}'{}", suggestion(key)))),
                }
            }
            Some(("ssl_options", option)) if !option.is_empty() => {
                config
                    .ssl_options
                    .insert(option.to_owned(), value.to_owned());
            }
            Some(("loopback_users", user)) if !user.is_empty() => {
                let on = match value {
                    "true" => true,
                    "false" => false,
                    _ => return Err(bad("expected true or false")),
                };
                config.loopback_users.retain(|u| u != user);
                if on {
                    config.loopback_users.push(user.to_owned());
                }
            }
            _ => match key {
                "loopback_users" if value == "none" => config.loopback_users.clear(),
                "loopback_users" => return Err(bad("expected none")),
                "default_vhost" => config.default_vhost = value.to_owned(),
                "default_user" => config.default_user = value.to_owned(),
                "default_pass" => config.default_pass = value.to_owned(),
                "heartbeat" => {
                    config.heartbeat = value
                        .parse()
                        .map_err(|_| bad("expected seconds (0-65535)"))?
                }
                "frame_max" => {
                    config.frame_max = bytes(value)
                        .and_then(|b| u32::try_from(b).ok())
                        .filter(|b| *b == 0 || *b >= 4096)
                        .ok_or_else(|| bad("expected bytes, at least 4096 (or 0)"))?
                }
                "channel_max" => {
                    config.channel_max = value
                        .parse()
                        .map_err(|_| bad("expected a number (0-65535)"))?
                }
                "max_unacked_per_channel" => {
                    config.max_unacked_per_channel = value
                        .parse()
                        .map_err(|_| bad("expected a count (0: no cap)"))?
                }
                "max_pending_output" => {
                    config.max_pending_output = bytes(value)
                        .filter(|b| *b >= 65_536)
                        .ok_or_else(|| bad("expected bytes, at least 65536"))?
                }
                "max_message_size" => {
                    config.max_message_size = bytes(value)
                        .filter(|b| (1..=512 * 1024 * 1024).contains(b))
                        .ok_or_else(|| bad("expected bytes, at most 536870912"))?
                }
                "consumer_timeout" => {
                    config.consumer_timeout = match value {
                        "false" => None,
                        _ => Some(number("expected milliseconds or false")?),
                    }
                }
                "vm_memory_high_watermark.relative" | "disk_free_limit.relative" => {
                    let f: f64 = value
                        .parse()
                        .ok()
                        .filter(|f: &f64| f.is_finite() && *f >= 0.0)
                        .ok_or_else(|| bad("expected a fraction such as 0.4"))?;
                    if key.starts_with("vm_") {
                        config.vm_memory_high_watermark = Watermark::Relative(f);
                    } else {
                        config.disk_free_limit = Watermark::Relative(f);
                    }
                }
                "vm_memory_high_watermark_paging_ratio" => {
                    config.vm_memory_high_watermark_paging_ratio = value
                        .parse()
                        .ok()
                        .filter(|f: &f64| f.is_finite() && *f >= 0.0)
                        .ok_or_else(|| bad("expected a fraction such as 0.5"))?;
                }
                "vm_memory_high_watermark.absolute" | "disk_free_limit.absolute" => {
                    let b = bytes(value).ok_or_else(|| bad("expected bytes such as 2GB"))?;
                    if key.starts_with("vm_") {
                        config.vm_memory_high_watermark = Watermark::Absolute(b);
                    } else {
                        config.disk_free_limit = Watermark::Absolute(b);
                    }
                }
                "management.tcp.port" => {
                    config.management_port = value.parse().map_err(|_| bad("expected a port"))?
                }
                "management.http.max_body_size" => {
                    config.management_max_body_size = bytes(value)
                        .filter(|b| *b >= 1024)
                        .ok_or_else(|| bad("expected bytes, at least 1024"))?
                }
                "management.http.max_get_payload" => {
                    config.management_max_get_payload = bytes(value)
                        .filter(|b| *b >= 1024)
                        .ok_or_else(|| bad("expected bytes, at least 1024"))?
                }
                "prometheus.tcp.port" => {
                    config.prometheus_port = value.parse().map_err(|_| bad("expected a port"))?
                }
                "log.console.level" => {
                    if !["debug", "info", "warning", "error", "critical", "none"].contains(&value) {
                        return Err(bad(
                            "expected debug, info, warning, error, critical or none",
                        ));
                    }
                    config.log_level = value.to_owned();
                }
                "data_dir" => config.data_dir = PathBuf::from(value),
                "store.flush_interval" => {
                    config.store_flush_interval = number("expected milliseconds")?
                }
                "store.segment_size" => {
                    config.store_segment_size = bytes(value)
                        .filter(|b| (64 * 1024..=1024 * 1024 * 1024).contains(b))
                        .ok_or_else(|| bad("expected bytes from 64KiB to 1GiB"))?
                }
                _ => {
                    return Err(error(
                        raw.len() - trimmed.len() + 1,
                        format!("unknown key '{key}'{}", suggestion(key)),
                    ))
                }
            },
        }
    }
    Ok(config)
}

impl Config {
    /// The configuration in `rabbitmq.conf` syntax, every key (for `--print-config`).
    pub fn render(&self) -> String {
        let mut out = String::new();
        for (name, addr) in &self.listeners_tcp {
            let _ = writeln!(out, "listeners.tcp.{name} = {addr}");
        }
        for (name, addr) in &self.listeners_ssl {
            let _ = writeln!(out, "listeners.ssl.{name} = {addr}");
        }
        for (option, value) in &self.ssl_options {
            let _ = writeln!(out, "ssl_options.{option} = {value}");
        }
        let _ = writeln!(out, "default_vhost = {}", self.default_vhost);
        let _ = writeln!(out, "default_user = {}", self.default_user);
        let _ = writeln!(out, "default_pass = {}", self.default_pass);
        let _ = writeln!(out, "loopback_users = none");
        for user in &self.loopback_users {
            let _ = writeln!(out, "loopback_users.{user} = true");
        }
        let _ = writeln!(out, "heartbeat = {}", self.heartbeat);
        let _ = writeln!(out, "frame_max = {}", self.frame_max);
        let _ = writeln!(out, "channel_max = {}", self.channel_max);
        let _ = writeln!(out, "max_message_size = {}", self.max_message_size);
        let _ = writeln!(
            out,
            "max_unacked_per_channel = {}",
            self.max_unacked_per_channel
        );
        let _ = writeln!(out, "max_pending_output = {}", self.max_pending_output);
        match self.consumer_timeout {
            Some(ms) => writeln!(out, "consumer_timeout = {ms}"),
            None => writeln!(out, "consumer_timeout = false"),
        }
        .ok();
        for (key, mark) in [
            ("vm_memory_high_watermark", self.vm_memory_high_watermark),
            ("disk_free_limit", self.disk_free_limit),
        ] {
            let _ = match mark {
                Watermark::Relative(f) => writeln!(out, "{key}.relative = {f:?}"),
                Watermark::Absolute(b) => writeln!(out, "{key}.absolute = {b}"),
            };
        }
        let _ = writeln!(
            out,
            "vm_memory_high_watermark_paging_ratio = {:?}",
            self.vm_memory_high_watermark_paging_ratio
        );
        let _ = writeln!(out, "management.tcp.port = {}", self.management_port);
        let _ = writeln!(
            out,
            "management.http.max_body_size = {}",
            self.management_max_body_size
        );
        let _ = writeln!(
            out,
            "management.http.max_get_payload = {}",
            self.management_max_get_payload
        );
        for (option, value) in &self.management_ssl {
            let _ = writeln!(out, "management.ssl.{option} = {value}");
        }
        let _ = writeln!(out, "prometheus.tcp.port = {}", self.prometheus_port);
        let _ = writeln!(out, "log.console.level = {}", self.log_level);
        let _ = writeln!(out, "data_dir = {}", self.data_dir.display());
        let _ = writeln!(out, "store.flush_interval = {}", self.store_flush_interval);
        let _ = writeln!(out, "store.segment_size = {}", self.store_segment_size);
        out
    }

    /// Keys set to something Leveret does not act on yet (their features are still to come),
    /// so the binary can say so instead of silently ignoring them.
    pub fn not_yet_supported(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        for key in self.ssl_options.keys() {
            if ![
                "certfile",
                "keyfile",
                "cacertfile",
                "verify",
                "fail_if_no_peer_cert",
            ]
            .contains(&key.as_str())
            {
                out.push("ssl_options (only certfile, keyfile, cacertfile, verify and fail_if_no_peer_cert are used)");
                break;
            }
        }
        out
    }

    /// The memory high watermark in bytes (a relative one is a fraction of `total_memory`).
    pub fn memory_high_watermark_bytes_of(&self, total_memory: u64) -> u64 {
        match self.vm_memory_high_watermark {
            Watermark::Relative(f) => (total_memory as f64 * f) as u64,
            Watermark::Absolute(b) => b,
        }
    }

    /// The memory high watermark in bytes, on this machine.
    pub fn memory_high_watermark_bytes(&self) -> u64 {
        crate::broker::memory::total_memory()
            .map_or(u64::MAX, |total| self.memory_high_watermark_bytes_of(total))
    }

    /// The free-disk limit in bytes; a relative one is, as in RabbitMQ, a multiple of the
    /// machine's memory.
    pub fn disk_free_limit_bytes(&self) -> u64 {
        match self.disk_free_limit {
            Watermark::Absolute(b) => b,
            Watermark::Relative(f) => {
                crate::broker::memory::total_memory().map_or(0, |total| (total as f64 * f) as u64)
            }
        }
    }

    /// The consumer timeout as a duration.
    pub fn consumer_timeout(&self) -> Option<Duration> {
        self.consumer_timeout.map(Duration::from_millis)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn err(text: &str) -> String {
        parse("test.conf", text).unwrap_err().to_string()
    }

    #[test]
    fn rabbitmq_style_keys_parse() {
        let c = parse(
            "t",
            "# comment\n\
             listeners.tcp.default = 127.0.0.1:5673\n\
             listeners.tcp.other = 5674\n\
             default_pass = p#ss word\n\
             loopback_users.guest = false\n\
             heartbeat = 30\n\
             frame_max = 64KiB\n\
             consumer_timeout = false\n\
             vm_memory_high_watermark.absolute = 2GB\n\
             disk_free_limit.relative = 1.5\n\
             ssl_options.verify = verify_peer\n",
        )
        .unwrap();
        assert_eq!(c.listeners_tcp.len(), 2);
        assert_eq!(
            c.listeners_tcp["default"],
            "127.0.0.1:5673".parse().unwrap()
        );
        // A bare port is every interface of both families (`[::]`), as in RabbitMQ, and so is
        // the default listener.
        assert_eq!(c.listeners_tcp["other"], "[::]:5674".parse().unwrap());
        assert_eq!(
            Config::default().listeners_tcp["default"],
            "[::]:5672".parse().unwrap()
        );
        assert_eq!(c.default_pass, "p#ss word");
        assert!(c.loopback_users.is_empty());
        assert_eq!((c.heartbeat, c.frame_max), (30, 65536));
        assert_eq!(c.consumer_timeout, None);
        assert_eq!(
            c.vm_memory_high_watermark,
            Watermark::Absolute(2_000_000_000)
        );
        assert_eq!(c.disk_free_limit, Watermark::Relative(1.5));
        assert_eq!(c.ssl_options["verify"], "verify_peer");
    }

    #[test]
    fn errors_name_the_file_line_column_and_key() {
        assert_eq!(
            err("heartbeat = 30\nheartbaet = 10\n"),
            "test.conf:2:1: unknown key 'heartbaet'; did you mean 'heartbeat'?"
        );
        assert_eq!(
            err("frame_max = lots"),
            "test.conf:1:13: frame_max: expected bytes, at least 4096 (or 0), got 'lots'"
        );
        assert_eq!(err("  just words"), "test.conf:1:3: expected `key = value`");
        assert_eq!(
            err("heartbeat ="),
            "test.conf:1:12: heartbeat: missing value"
        );
        assert_eq!(
            err("listeners.tcp.default = nowhere"),
            "test.conf:1:25: listeners.tcp.default: expected a port or address:port, got 'nowhere'"
        );
        assert_eq!(
            err("log.console.level = loud"),
            "test.conf:1:21: log.console.level: expected debug, info, warning, error, critical or none, got 'loud'"
        );
        assert_eq!(
            err("loopback_users.guest = maybe"),
            "test.conf:1:24: loopback_users.guest: expected true or false, got 'maybe'"
        );
        assert_eq!(
            err("max_message_size = 1GiB"),
            "test.conf:1:20: max_message_size: expected bytes, at most 536870912, got '1GiB'"
        );
        assert!(err("vm_memory_high_watermark.relative = -1").contains("expected a fraction"));
        assert!(err("consumer_timeout = soon").contains("expected milliseconds or false"));
        assert!(err("management.tcp.port = 99999").contains("expected a port"));
        assert!(err("listeners.tcp = 5672").contains("unknown key 'listeners.tcp'"));
    }

    #[test]
    fn the_repository_config_file_is_the_defaults() {
        let text = include_str!("../conf/leveret.conf");
        assert_eq!(parse("conf/leveret.conf", text).unwrap(), Config::default());
    }

    proptest! {
        #[test]
        fn rendering_round_trips(
            heartbeat in any::<u16>(),
            channel_max in any::<u16>(),
            frame_max in 4096u32..,
            port in 1u16..,
            timeout in proptest::option::of(0u64..1_000_000_000),
            relative in 0.0f64..10.0,
            user in "[a-z]{1,8}",
            pass in "[ -~]{1,16}",
        ) {
            let mut c = Config {
                heartbeat,
                channel_max,
                frame_max,
                consumer_timeout: timeout,
                vm_memory_high_watermark: Watermark::Relative(relative),
                default_user: user.clone(),
                default_pass: pass.trim().to_owned(),
                loopback_users: vec![user],
                ..Config::default()
            };
            c.listeners_tcp.insert("default".into(), SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), port));
            prop_assume!(!c.default_pass.is_empty());
            prop_assert_eq!(parse("r", &c.render()).unwrap(), c);
        }

        #[test]
        fn arbitrary_text_never_panics(text in "\\PC{0,200}") {
            let _ = parse("fuzz", &text);
        }
    }
}
