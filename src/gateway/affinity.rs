//! `[gateway] worker_cpu_affinity = "auto"`: each gateway worker thread
//! pinned to one CPU, as nginx's `worker_cpu_affinity auto`.
//!
//! On a machine where the proxy shares the cores with its clients and
//! backends, the scheduler moves unpinned workers between cores, and the
//! requests a worker holds wait while it does: pinned, the keep-alive p99
//! fell from 3.8–4.9 ms to 1.2–2.4 ms and the CPU per request by ~10 %
//! (bench/RESULTS.md, "Speed, fifth step"; nginx gains the same). Off by
//! default: a pinned worker cannot be moved off a core that one of the
//! supervised apps saturates. Read at start (the gateway is built once).

use rustix::thread::{sched_getaffinity, sched_setaffinity, CpuSet};

/// Pins the calling thread to the `i`-th CPU (wrapping) of those the
/// process may run on (its affinity mask: cgroups and `taskset` are
/// respected). With one CPU allowed there is nothing to spread over; if the
/// mask cannot be read or set, the thread stays as it is and says why.
pub(super) fn pin_to_cpu(i: usize) {
    let allowed = match sched_getaffinity(None) {
        Ok(set) => set,
        Err(e) => {
            tracing::warn!(error = %e, "worker_cpu_affinity: cannot read the CPU mask; not pinned");
            return;
        }
    };
    let cpus: Vec<usize> = (0..CpuSet::MAX_CPU)
        .filter(|c| allowed.is_set(*c))
        .collect();
    if cpus.len() < 2 {
        return;
    }
    let cpu = cpus[i % cpus.len()];
    let mut one = CpuSet::new();
    one.set(cpu);
    match sched_setaffinity(None, &one) {
        Ok(()) => tracing::debug!(worker = i, cpu, "gateway worker pinned"),
        Err(e) => {
            tracing::warn!(error = %e, worker = i, cpu, "worker_cpu_affinity: cannot pin; not pinned")
        }
    }
}
