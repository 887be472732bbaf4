//! Resource alarms, as RabbitMQ's: memory (resident set over `vm_memory_high_watermark`) and disk
//! (free space of the data directory under `disk_free_limit`).
//!
//! A monitor task checks both every 100 ms (memory also after every 4 MiB read from clients) and publishes the state on a watch channel;
//! connections that publish block (stop reading their socket, and send `connection.blocked` to
//! clients that understand it) while either alarm is on, and resume when both clear. The limits
//! can be changed on a running broker.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::sync::watch;

use super::memory::resident_bytes;

/// Which alarms are on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AlarmState {
    /// Resident memory is over the high watermark.
    pub memory: bool,
    /// Free disk space is under the limit.
    pub disk: bool,
}

impl AlarmState {
    /// Whether publishers must block.
    pub fn any(&self) -> bool {
        self.memory || self.disk
    }

    /// The reason RabbitMQ gives in `connection.blocked`.
    pub fn reason(&self) -> &'static str {
        match (self.memory, self.disk) {
            (true, _) => "low on memory",
            (false, true) => "low on disk space",
            (false, false) => "",
        }
    }
}

/// The alarm limits and their current state.
#[derive(Debug)]
pub struct Alarms {
    /// Memory high watermark in bytes (`u64::MAX`: off).
    memory_limit: AtomicU64,
    /// Free disk bytes below which the disk alarm is on (0: off).
    disk_limit: AtomicU64,
    state: watch::Sender<AlarmState>,
    /// Bytes read from clients since memory was last looked at.
    unchecked_input: AtomicU64,
}

/// Input (bytes, all connections together) after which memory is looked at at once rather than
/// at the next tick: a flood of publishers reads hundreds of megabytes between two ticks.
const INPUT_SLICE: u64 = 4 * 1024 * 1024;

impl Alarms {
    /// Alarms with these limits, checked by a monitor task watching `data_dir` (none: no disk
    /// alarm).
    pub fn start(memory_limit: u64, disk_limit: u64, data_dir: Option<PathBuf>) -> Arc<Self> {
        let alarms = Arc::new(Self {
            memory_limit: AtomicU64::new(memory_limit),
            disk_limit: AtomicU64::new(disk_limit),
            state: watch::Sender::new(AlarmState::default()),
            unchecked_input: AtomicU64::new(0),
        });
        let weak = Arc::downgrade(&alarms);
        tokio::spawn(monitor(weak, data_dir));
        alarms
    }

    /// The current state, to watch.
    pub fn subscribe(&self) -> watch::Receiver<AlarmState> {
        self.state.subscribe()
    }

    /// The current state.
    pub fn state(&self) -> AlarmState {
        *self.state.borrow()
    }

    /// Change the memory high watermark (bytes); takes effect at the next check (a second).
    pub fn set_memory_limit(&self, bytes: u64) {
        self.memory_limit.store(bytes, Ordering::Relaxed);
    }

    /// The memory high watermark in bytes (`u64::MAX`: off).
    pub fn memory_limit(&self) -> u64 {
        self.memory_limit.load(Ordering::Relaxed)
    }

    /// The free-disk limit in bytes.
    pub fn disk_limit(&self) -> u64 {
        self.disk_limit.load(Ordering::Relaxed)
    }

    /// Change the free-disk limit (bytes).
    pub fn set_disk_limit(&self, bytes: u64) {
        self.disk_limit.store(bytes, Ordering::Relaxed);
    }

    /// Count bytes a connection read; every [`INPUT_SLICE`] of them, check memory now.
    pub fn note_input(&self, bytes: usize) {
        let before = self
            .unchecked_input
            .fetch_add(bytes as u64, Ordering::Relaxed);
        if before / INPUT_SLICE != (before + bytes as u64) / INPUT_SLICE {
            let memory = self.memory_over();
            if memory != self.state.borrow().memory {
                tracing::warn!(on = memory, "memory resource alarm");
                self.state.send_modify(|s| s.memory = memory);
            }
        }
    }

    fn memory_over(&self) -> bool {
        resident_bytes().is_some_and(|rss| rss >= self.memory_limit.load(Ordering::Relaxed))
    }

    fn check(&self, data_dir: Option<&PathBuf>) {
        let memory = self.memory_over();
        let disk = data_dir
            .and_then(|dir| free_disk_bytes(dir))
            .is_some_and(|free| free < self.disk_limit.load(Ordering::Relaxed));
        let next = AlarmState { memory, disk };
        let previous = *self.state.borrow();
        if next != previous {
            if next.memory != previous.memory {
                tracing::warn!(on = next.memory, "memory resource alarm");
            }
            if next.disk != previous.disk {
                tracing::warn!(on = next.disk, "disk resource alarm");
            }
            self.state.send_replace(next);
        }
    }
}

/// How often the monitor looks: often enough that a flood of publishers cannot push memory far
/// past the watermark between two looks (a look is two small syscalls).
const CHECK_EVERY: Duration = Duration::from_millis(100);

async fn monitor(alarms: Weak<Alarms>, data_dir: Option<PathBuf>) {
    let mut tick = tokio::time::interval(CHECK_EVERY);
    loop {
        tick.tick().await;
        let Some(alarms) = alarms.upgrade() else {
            return;
        };
        alarms.check(data_dir.as_ref());
    }
}

/// Free bytes (for unprivileged users) on the file system holding `dir`.
pub fn free_disk_bytes(dir: &std::path::Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs is plain old data; all-zero is a valid value to be overwritten.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `path` is a valid NUL-terminated string and `stat` a properly sized out-parameter.
    let rc = unsafe { libc::statvfs(path.as_ptr(), &mut stat) };
    // The field widths differ between platforms; on 64-bit Linux both are u64.
    #[allow(clippy::useless_conversion)]
    let free = u64::from(stat.f_bavail).saturating_mul(u64::from(stat.f_frsize));
    (rc == 0).then_some(free)
}
