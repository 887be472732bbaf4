//! Message rates for the API: counters sampled every few seconds, rate = change per second
//! over the last interval (RabbitMQ's `basic` rates mode reports the same kind of figure).

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use super::AdminState;
use crate::broker::queue::QueueGauges;

/// How often counters are sampled.
pub const INTERVAL: Duration = Duration::from_secs(5);

/// The latest rates, by object key (`vhost\0queue`, or `""` for the whole broker) and field.
#[derive(Debug, Default)]
pub struct Rates {
    rates: RwLock<HashMap<String, HashMap<&'static str, f64>>>,
}

impl Rates {
    /// The rate of `field` for `key` (0 before the first two samples).
    pub fn of(&self, key: &str, field: &str) -> f64 {
        self.rates
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(key)
            .and_then(|m| m.get(field))
            .copied()
            .unwrap_or(0.0)
    }
}

type Counts = HashMap<String, Vec<(&'static str, u64)>>;

fn snapshot(state: &AdminState) -> Counts {
    let mut counts = Counts::new();
    let c = state.broker.counters();
    counts.insert(
        String::new(),
        vec![
            ("publish", c.publish.load(Ordering::Relaxed)),
            ("confirm", c.confirm.load(Ordering::Relaxed)),
            ("deliver", c.deliver.load(Ordering::Relaxed)),
            (
                "deliver_get",
                c.deliver.load(Ordering::Relaxed) + c.get.load(Ordering::Relaxed),
            ),
            ("get", c.get.load(Ordering::Relaxed)),
            ("ack", c.ack.load(Ordering::Relaxed)),
            ("redeliver", c.redeliver.load(Ordering::Relaxed)),
            ("return_unroutable", c.unroutable.load(Ordering::Relaxed)),
        ],
    );
    for vhost in state.broker.vhosts() {
        counts.insert(vhost_key(vhost.name()), vhost_counts(&vhost));
        for x in vhost.exchanges() {
            counts.insert(
                format!("\u{1}x\u{0}{}\u{0}{}", vhost.name(), x.name),
                vec![("publish_in", x.publish_in), ("publish_out", x.publish_out)],
            );
        }
        for (name, record) in vhost.queues() {
            let g = record.handle.gauges();
            counts.insert(
                format!("{}\u{0}{name}", vhost.name()),
                vec![
                    ("publish", QueueGauges::get(&g.published)),
                    ("deliver_get", QueueGauges::get(&g.delivered)),
                    ("ack", QueueGauges::get(&g.acked)),
                    ("redeliver", QueueGauges::get(&g.redelivered)),
                ],
            );
        }
    }
    counts
}

/// A vhost's key among the sampled counts.
pub fn vhost_key(vhost: &str) -> String {
    format!("\u{1}v\u{0}{vhost}")
}

/// A vhost's message counts, RabbitMQ's vhost `message_stats` that Leveret counts: messages
/// published to its exchanges, and its queues' deliveries, acks and redeliveries.
pub fn vhost_counts(vhost: &crate::broker::vhost::VHost) -> Vec<(&'static str, u64)> {
    let publish = vhost.exchanges().iter().map(|x| x.publish_in).sum();
    let (mut deliver, mut ack, mut redeliver) = (0, 0, 0);
    for (_, record) in vhost.queues() {
        let g = record.handle.gauges();
        deliver += QueueGauges::get(&g.delivered);
        ack += QueueGauges::get(&g.acked);
        redeliver += QueueGauges::get(&g.redelivered);
    }
    vec![
        ("publish", publish),
        ("deliver_get", deliver),
        ("ack", ack),
        ("redeliver", redeliver),
    ]
}

/// Sample forever (the caller aborts the task).
pub async fn sample(state: Arc<AdminState>) {
    let mut previous = snapshot(&state);
    let mut at = Instant::now();
    loop {
        tokio::time::sleep(INTERVAL).await;
        let now = snapshot(&state);
        let elapsed = at.elapsed().as_secs_f64().max(0.001);
        at = Instant::now();
        let mut rates = HashMap::new();
        for (key, fields) in &now {
            let before = previous.get(key);
            let mut m = HashMap::new();
            for (field, count) in fields {
                let old = before
                    .and_then(|b| b.iter().find(|(f, _)| f == field))
                    .map_or(*count, |(_, c)| *c);
                let rate = count.saturating_sub(old) as f64 / elapsed;
                m.insert(*field, (rate * 10.0).round() / 10.0);
            }
            rates.insert(key.clone(), m);
        }
        *state
            .rates
            .rates
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = rates;
        previous = now;
    }
}
