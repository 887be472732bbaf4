//! Message rates for the API: counters sampled every few seconds, rate = change per second
//! over the last interval (RabbitMQ's `basic` rates mode reports the same kind of figure).
//!
//! Counts are also compared every second, to say when an object went idle: a queue or channel
//! whose counts did not change in the last second shows `idle_since`, the time of the check
//! that last saw them change, as RabbitMQ shows it for a queue or channel process that has
//! hibernated.

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
    activity: RwLock<Activity>,
}

/// When each sampled object's counts last changed (wall-clock milliseconds).
#[derive(Debug, Default)]
struct Activity {
    changed: HashMap<String, u64>,
    /// The latest sample's time.
    sampled: u64,
}

impl Activity {
    /// Take a sample taken at `now_ms`: objects whose counts differ from `previous` (or that
    /// are new) changed now; objects gone are forgotten.
    fn record(&mut self, previous: &Counts, now: &Counts, now_ms: u64) {
        self.changed.retain(|key, _| now.contains_key(key));
        for (key, counts) in now {
            if previous.get(key) != Some(counts) || !self.changed.contains_key(key) {
                self.changed.insert(key.clone(), now_ms);
            }
        }
        self.sampled = now_ms;
    }

    /// Since when `key` has been idle: its last change, if the latest sample saw none.
    fn idle_since(&self, key: &str) -> Option<u64> {
        self.changed.get(key).copied().filter(|&t| t < self.sampled)
    }
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

    /// When `key` went idle, as RabbitMQ prints it (`2026-12-03T15:59:11.193+00:00`); `None`
    /// while it is active or before it has been sampled twice.
    pub fn idle_since(&self, key: &str) -> Option<String> {
        self.activity
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .idle_since(key)
            .map(utc_timestamp)
    }
}

/// A channel's key among the sampled counts.
pub fn channel_key(connection: &str, number: u16) -> String {
    format!("\u{1}c\u{0}{connection}\u{0}{number}")
}

/// Milliseconds since the Unix epoch as `YYYY-MM-DDTHH:MM:SS.mmm+00:00`.
pub fn utc_timestamp(ms: u64) -> String {
    let (days, rest) = (ms / 86_400_000, ms % 86_400_000);
    let (year, month, day) = civil_from_days(days);
    let (h, m, sec, milli) = (
        rest / 3_600_000,
        rest / 60_000 % 60,
        rest / 1000 % 60,
        rest % 1000,
    );
    format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{sec:02}.{milli:03}+00:00")
}

/// The proleptic Gregorian date `days` after 1970-01-01: years are counted in 400-year eras
/// of 146,097 days, each starting on 1 March so that leap days fall at an era-year's end.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let shifted = days + 719_468; // days from 0000-03-01 to 1970-01-01
    let era = shifted / 146_097;
    let day_of_era = shifted % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153; // 0 = March
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = era * 400 + year_of_era + u64::from(month <= 2);
    (year, month, day)
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
                    // Not rates; there so that a change of them counts as activity.
                    ("\u{0}ready", QueueGauges::get(&g.ready)),
                    ("\u{0}unacked", QueueGauges::get(&g.unacked)),
                    ("\u{0}consumers", QueueGauges::get(&g.consumers)),
                ],
            );
        }
    }
    for c in state.broker.connections().all() {
        for ch in c.channels() {
            let n = &ch.counters;
            let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
            counts.insert(
                channel_key(&c.name, ch.number),
                vec![
                    ("publish", load(&n.publish)),
                    ("confirm", load(&n.confirm)),
                    ("deliver", load(&n.deliver)),
                    ("get", load(&n.get)),
                    ("ack", load(&n.ack)),
                    ("redeliver", load(&n.redeliver)),
                    ("return_unroutable", load(&n.unroutable)),
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

/// A vhost's message counts, RabbitMQ's vhost `message_stats`: what its channels (and the
/// HTTP API) published, confirmed, delivered, fetched, had acked and redelivered, and what
/// came back unroutable. Leveret counts a delivery once whatever its ack mode, so the
/// `*_no_ack` and `get_empty` counts RabbitMQ splits off are 0, as is `drop_unroutable`
/// (unroutable publishes are all counted as `return_unroutable`).
pub fn vhost_counts(vhost: &crate::broker::vhost::VHost) -> Vec<(&'static str, u64)> {
    let c = vhost.counters();
    let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    let (deliver, get) = (load(&c.deliver), load(&c.get));
    vec![
        ("publish", load(&c.publish)),
        ("confirm", load(&c.confirm)),
        ("deliver", deliver),
        ("deliver_no_ack", 0),
        ("get", get),
        ("get_no_ack", 0),
        ("get_empty", 0),
        ("deliver_get", deliver + get),
        ("ack", load(&c.ack)),
        ("redeliver", load(&c.redeliver)),
        ("return_unroutable", load(&c.unroutable)),
        ("drop_unroutable", 0),
    ]
}

/// How often activity is checked (for `idle_since`); rates are taken every [`INTERVAL`].
const ACTIVITY_TICK: Duration = Duration::from_secs(1);

/// Sample forever (the caller aborts the task).
pub async fn sample(state: Arc<AdminState>) {
    let mut previous = snapshot(&state);
    let mut last_tick = previous.clone();
    let mut at = Instant::now();
    loop {
        tokio::time::sleep(ACTIVITY_TICK).await;
        let now = snapshot(&state);
        state
            .rates
            .activity
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .record(&last_tick, &now, crate::broker::connections::now_ms());
        if at.elapsed() < INTERVAL {
            last_tick = now;
            continue;
        }
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
        last_tick = now.clone();
        previous = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_as_rabbitmq_prints_them() {
        assert_eq!(utc_timestamp(0), "1970-01-01T00:00:00.000+00:00");
        // 2026-12-03T15:59:11.193Z, 2000-02-29 (a leap day in a century year) and 2100-03-01.
        assert_eq!(
            utc_timestamp(1_796_313_551_193),
            "2026-12-03T15:59:11.193+00:00"
        );
        assert_eq!(
            utc_timestamp(951_782_400_000),
            "2000-02-29T00:00:00.000+00:00"
        );
        assert_eq!(
            utc_timestamp(4_107_542_400_000),
            "2100-03-01T00:00:00.000+00:00"
        );
    }

    #[test]
    fn idle_after_a_sample_without_change() {
        let counts = |n: u64| Counts::from([("q".to_owned(), vec![("publish", n)])]);
        let mut a = Activity::default();
        a.record(&Counts::new(), &counts(1), 1_000);
        assert_eq!(a.idle_since("q"), None, "new: active");
        a.record(&counts(1), &counts(2), 6_000);
        assert_eq!(a.idle_since("q"), None, "changed in the last interval");
        a.record(&counts(2), &counts(2), 11_000);
        assert_eq!(a.idle_since("q"), Some(6_000));
        a.record(&counts(2), &counts(2), 16_000);
        assert_eq!(a.idle_since("q"), Some(6_000), "idle since the last change");
        a.record(&counts(2), &counts(3), 21_000);
        assert_eq!(a.idle_since("q"), None, "active again");
        a.record(&counts(3), &Counts::new(), 26_000);
        assert_eq!(a.idle_since("q"), None, "gone");
    }
}
