//! Memory pressure: whether queues should keep less in memory.
//!
//! A background task reads the process's resident set size from `/proc/self/statm` five times a
//! second and raises a shared flag above the paging ratio of the memory watermark
//! (`vm_memory_high_watermark_paging_ratio`). Queues read the flag when a message arrives: under
//! pressure their resident window shrinks, so new arrivals go to the message log sooner. The
//! same task hands memory the allocator holds but no longer uses back to the kernel now and
//! then: glibc keeps freed memory in per-thread arenas, and after recovering or draining a deep
//! queue that is most of the resident set.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::alarms::Alarms;

/// The shared "memory is short" flag.
#[derive(Debug, Clone, Default)]
pub struct MemoryPressure(Arc<AtomicBool>);

impl MemoryPressure {
    /// Whether queues should keep less in memory now.
    pub fn is_high(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    /// A flag that is always raised (`ratio` 0), or raised while the resident set is over
    /// `ratio` of the memory alarm's watermark, which follows the watermark when it is changed
    /// on a running broker.
    pub fn watch(ratio: f64, alarms: &Arc<Alarms>) -> Self {
        let pressure = Self(Arc::new(AtomicBool::new(ratio <= 0.0)));
        let flag = Arc::downgrade(&pressure.0);
        let alarms = Arc::downgrade(alarms);
        let ratio = ratio.clamp(0.0, 1.0);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(CHECK_EVERY);
            let mut ticks = 0u32;
            loop {
                tick.tick().await;
                let (Some(flag), Some(alarms)) = (flag.upgrade(), alarms.upgrade()) else {
                    return;
                };
                let Some(rss) = resident_bytes() else {
                    continue;
                };
                let high = ratio > 0.0 && rss >= (alarms.memory_limit() as f64 * ratio) as u64;
                if ratio > 0.0 {
                    flag.store(high, Ordering::Relaxed);
                }
                // Every few seconds, once the process is big enough for it to matter (every
                // second under pressure, when paging frees bodies by the thousand): a trim
                // walks the allocator's free lists, and freed pages come back as page faults.
                ticks = ticks.wrapping_add(1);
                let every = if high {
                    TRIM_EVERY_TICKS_HIGH
                } else {
                    TRIM_EVERY_TICKS
                };
                if rss > TRIM_FLOOR && ticks.is_multiple_of(every) {
                    // Off the async workers: a trim of a large heap takes milliseconds.
                    tokio::task::spawn_blocking(release_freed_memory);
                }
            }
        });
        pressure
    }
}

/// How often the pressure is looked at: a flood of publishers fills a queue fast, and paging
/// must start before the alarm's watermark is reached.
const CHECK_EVERY: Duration = Duration::from_millis(200);

/// Resident set (bytes) above which the watcher returns freed memory to the kernel.
const TRIM_FLOOR: u64 = 96 * 1024 * 1024;
/// How often it does, in ticks (5 s).
const TRIM_EVERY_TICKS: u32 = 25;
/// How often under memory pressure (1 s).
const TRIM_EVERY_TICKS_HIGH: u32 = 5;

/// Return memory the allocator holds but does not use to the kernel.
pub fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        extern "C" {
            fn malloc_trim(pad: usize) -> std::os::raw::c_int;
        }
        // SAFETY: glibc's malloc_trim takes no pointers; it only madvises unused heap pages
        // away and is safe to call from any thread at any time.
        unsafe {
            malloc_trim(0);
        }
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
