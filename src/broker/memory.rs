//! Memory pressure: whether queues should page transient messages out to the store.
//!
//! A background task reads the process's resident set size from `/proc/self/statm` once a second
//! and raises a shared flag above the threshold. Queues read the flag when a message arrives
//! deep in a queue; short queues never page.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The shared "page transient messages out" flag.
#[derive(Debug, Clone, Default)]
pub struct MemoryPressure(Arc<AtomicBool>);

impl MemoryPressure {
    /// Whether queues should page transient messages out now.
    pub fn is_high(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    /// A flag that is always raised (threshold 0), or watched against `threshold` bytes of RSS.
    pub fn watch(threshold: u64) -> Self {
        let pressure = Self(Arc::new(AtomicBool::new(threshold == 0)));
        if threshold > 0 {
            let flag = Arc::downgrade(&pressure.0);
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_secs(1));
                loop {
                    tick.tick().await;
                    let Some(flag) = flag.upgrade() else { return };
                    if let Some(rss) = resident_bytes() {
                        flag.store(rss >= threshold, Ordering::Relaxed);
                    }
                }
            });
        }
        pressure
    }
}

/// This process's resident set size.
pub fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

/// Total memory of the machine.
pub fn total_memory() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kb: u64 = meminfo
        .lines()
        .find(|l| l.starts_with("MemTotal:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kb * 1024)
}
