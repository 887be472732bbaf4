//! Fault injection for tests of panic containment: a panic in a connection or queue task must
//! leave nothing registered and strand no message, and those tests need a panic on demand.
//!
//! Off unless a test process turns it on ([`ENABLED`]); the broker binary never does, and no
//! configuration key or client input can. When on, a `connection.update-secret` whose secret
//! is [`PANIC_CONNECTION`] panics its connection task, and a message whose body is
//! [`PANIC_QUEUE`] panics the queue actor that receives it.

use std::sync::atomic::{AtomicBool, Ordering};

/// Whether the triggers below are armed.
pub static ENABLED: AtomicBool = AtomicBool::new(false);

/// The update-secret value that panics a connection task.
pub const PANIC_CONNECTION: &[u8] = b"leveret-fault-injection: panic this connection";

/// The message body that panics a queue actor.
pub const PANIC_QUEUE: &[u8] = b"leveret-fault-injection: panic this queue";

/// Panic if fault injection is on and `input` is `trigger`.
pub fn check(input: &[u8], trigger: &[u8]) {
    if ENABLED.load(Ordering::Relaxed) && input == trigger {
        panic!("fault injection: {}", String::from_utf8_lossy(trigger));
    }
}
