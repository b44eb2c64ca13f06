//! The writer's counters, kept as atomics so any task (a metrics exporter,
//! the status endpoint, a test) can read them without asking the writer.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

#[derive(Debug, Default)]
pub struct Stats {
    /// Records taken off the queue and not yet written (the batch in hand).
    pub(super) queued: AtomicU64,
    pub(super) written: AtomicU64,
    /// Failed writes (each retried).
    pub(super) write_errors: AtomicU64,
    /// Callers that found the queue full and waited for room.
    pub(super) waits: AtomicU64,
}

/// A reading of the counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct StatsSnapshot {
    /// Records waiting: in the queue plus the batch being written.
    pub queue_depth: u64,
    pub queue_capacity: u64,
    pub written: u64,
    pub write_errors: u64,
    pub waits: u64,
}

impl Stats {
    pub(super) fn snapshot(&self, in_queue: u64, capacity: u64) -> StatsSnapshot {
        StatsSnapshot {
            queue_depth: in_queue + self.queued.load(Relaxed),
            queue_capacity: capacity,
            written: self.written.load(Relaxed),
            write_errors: self.write_errors.load(Relaxed),
            waits: self.waits.load(Relaxed),
        }
    }
}
