//! Prometheus metrics at `/metrics`, named as RabbitMQ's Prometheus plugin names them where
//! the meaning is the same (so its Grafana dashboards and alerts work), plus Leveret's own
//! per-queue depths.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use crate::broker::queue::QueueGauges;

pub(super) fn router(state: Arc<super::AdminState>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/metrics/per-object", get(metrics))
        .with_state(state)
}

/// Reads one figure of a queue.
type GaugeReader = fn(&QueueGauges) -> u64;

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# TYPE {name} {kind}\n# HELP {name} {help}");
}

fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The metrics text (Prometheus exposition format 0.0.4).
pub fn render(state: &super::AdminState) -> String {
    let broker = &state.broker;
    let mut out = String::with_capacity(8192);
    let simple = |out: &mut String, name: &str, kind: &str, help: &str, value: u64| {
        family(out, name, kind, help);
        let _ = writeln!(out, "{name} {value}");
    };
    let alarms = broker.alarms();
    let a = alarms.state();
    simple(
        &mut out,
        "rabbitmq_alarms_memory_used_watermark",
        "untyped",
        "is 1 if VM memory watermark alarm is in effect",
        u64::from(a.memory),
    );
    simple(
        &mut out,
        "rabbitmq_alarms_free_disk_space_watermark",
        "untyped",
        "is 1 if free disk space watermark alarm is in effect",
        u64::from(a.disk),
    );
    simple(
        &mut out,
        "rabbitmq_process_resident_memory_bytes",
        "gauge",
        "Memory used in bytes",
        crate::broker::memory::resident_bytes().unwrap_or(0),
    );
    simple(
        &mut out,
        "rabbitmq_resident_memory_limit_bytes",
        "gauge",
        "Memory high watermark in bytes",
        alarms.memory_limit(),
    );
    simple(
        &mut out,
        "rabbitmq_disk_space_available_limit_bytes",
        "gauge",
        "Free disk space low watermark in bytes",
        alarms.disk_limit(),
    );
    let connections = broker.connections().all();
    let channels: usize = connections.iter().map(|c| c.channels().len()).sum();
    simple(
        &mut out,
        "rabbitmq_connections",
        "gauge",
        "Connections currently open",
        connections.len() as u64,
    );
    simple(
        &mut out,
        "rabbitmq_channels",
        "gauge",
        "Channels currently open",
        channels as u64,
    );
    let c = broker.counters();
    for (name, help, counter) in [
        ("rabbitmq_global_messages_received_total", "Total number of messages received from publishers", &c.publish),
        ("rabbitmq_global_messages_confirmed_total", "Total number of messages confirmed to publishers", &c.confirm),
        ("rabbitmq_global_messages_delivered_consume_auto_ack_total", "Total number of messages delivered to consumers (all acknowledgement modes in Leveret)", &c.deliver),
        ("rabbitmq_global_messages_delivered_get_auto_ack_total", "Total number of messages fetched with basic.get", &c.get),
        ("rabbitmq_global_messages_acknowledged_total", "Total number of messages acknowledged by consumers", &c.ack),
        ("rabbitmq_global_messages_redelivered_total", "Total number of messages redelivered to consumers", &c.redeliver),
        ("rabbitmq_global_messages_unroutable_returned_total", "Total number of messages published as mandatory into an exchange and returned to the publisher as unroutable", &c.unroutable),
    ] {
        simple(&mut out, name, "counter", help, counter.load(Ordering::Relaxed));
    }
    let (buckets, count, sum) = broker.confirm_latency().snapshot();
    family(
        &mut out,
        "leveret_confirm_latency_seconds",
        "histogram",
        "Time from publish to publisher confirm, for messages the queues confirm themselves (persistent in durable queues)",
    );
    for (le, n) in buckets {
        let _ = writeln!(
            out,
            "leveret_confirm_latency_seconds_bucket{{le=\"{le}\"}} {n}"
        );
    }
    let _ = writeln!(
        out,
        "leveret_confirm_latency_seconds_bucket{{le=\"+Inf\"}} {count}"
    );
    let _ = writeln!(out, "leveret_confirm_latency_seconds_sum {sum}");
    let _ = writeln!(out, "leveret_confirm_latency_seconds_count {count}");
    let log = broker.store().stats();
    for (name, kind, help, value) in [
        (
            "leveret_message_log_bytes",
            "gauge",
            "Bytes in message segment files",
            log.bytes,
        ),
        (
            "leveret_message_log_reclaimable_bytes",
            "gauge",
            "Bytes of segment files held by settled messages",
            log.reclaimable_bytes,
        ),
        (
            "leveret_message_log_segments",
            "gauge",
            "Message segment files",
            log.segments,
        ),
        (
            "leveret_message_log_syncs_total",
            "counter",
            "Group commits (fdatasync rounds) of the message log",
            log.syncs,
        ),
        (
            "leveret_message_log_synced_files_total",
            "counter",
            "Files made durable by the message log's group commits",
            log.synced_files,
        ),
        (
            "leveret_message_log_quarantined_segments_total",
            "counter",
            "Corrupt segments moved to quarantine at recovery",
            log.quarantined,
        ),
    ] {
        simple(&mut out, name, kind, help, value);
    }
    family(
        &mut out,
        "leveret_message_log_sync_seconds_total",
        "counter",
        "Time spent in the message log's group commits",
    );
    let _ = writeln!(
        out,
        "leveret_message_log_sync_seconds_total {}",
        log.sync_micros as f64 / 1e6
    );
    let mut queues = Vec::new();
    for v in broker.vhosts() {
        for (name, record) in v.queues() {
            queues.push((v.name().to_owned(), name, record));
        }
    }
    simple(
        &mut out,
        "rabbitmq_queues",
        "gauge",
        "Queues available",
        queues.len() as u64,
    );
    let per_queue: [(&str, &str, GaugeReader); 5] = [
        (
            "rabbitmq_queue_messages_ready",
            "Messages ready to be delivered to consumers",
            |g| QueueGauges::get(&g.ready),
        ),
        (
            "rabbitmq_queue_messages_unacked",
            "Messages delivered to consumers but not yet acknowledged",
            |g| QueueGauges::get(&g.unacked),
        ),
        (
            "rabbitmq_queue_messages",
            "Sum of ready and unacknowledged messages - total queue depth",
            |g| QueueGauges::get(&g.ready) + QueueGauges::get(&g.unacked),
        ),
        (
            "rabbitmq_queue_messages_ready_bytes",
            "Size in bytes of ready messages",
            |g| QueueGauges::get(&g.ready_bytes),
        ),
        ("rabbitmq_queue_consumers", "Consumers on a queue", |g| {
            QueueGauges::get(&g.consumers)
        }),
    ];
    family(
        &mut out,
        "leveret_queue_disk_bytes",
        "gauge",
        "Bytes of a queue's segment files in the message log",
    );
    for v in broker.vhosts() {
        for (queue, _) in v.queues() {
            let _ = writeln!(
                out,
                "leveret_queue_disk_bytes{{vhost=\"{}\",queue=\"{}\"}} {}",
                escape(v.name()),
                escape(&queue),
                v.queue_disk(&queue).bytes
            );
        }
    }
    for (name, help, read) in per_queue {
        family(&mut out, name, "gauge", help);
        for (vhost, queue, record) in &queues {
            let _ = writeln!(
                out,
                "{name}{{vhost=\"{}\",queue=\"{}\"}} {}",
                escape(vhost),
                escape(queue),
                read(record.handle.gauges())
            );
        }
    }
    out
}

async fn metrics(State(state): State<Arc<super::AdminState>>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        render(&state),
    )
}
