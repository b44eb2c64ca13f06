//! Per-thread shards for the counters every proxied request touches.
//!
//! The gateway's workers are one thread per core. A counter they all add to
//! (requests in flight, a request counter, a histogram bucket) is one
//! cache line, and each `lock`-prefixed add first has to take
//! that line from the other core: the profile in bench/RESULTS.md ("Speed,
//! fifth step") found over a quarter of the gateway's user-space samples on such
//! instructions. Here each thread adds to its own line and readers (a drain
//! waiting for zero, a scrape) sum the shards; a read costs `SHARDS` loads,
//! which only the rare readers pay.
//!
//! Threads get shard indexes round-robin at their first use, so two threads
//! can share a shard: every shard is still an atomic, so sharing costs speed,
//! never correctness.

use std::sync::atomic::{AtomicUsize, Ordering};

/// Shards per value: more than the cores of most machines this runs on,
/// small enough that reading the sum stays cheap.
pub const SHARDS: usize = 8;

/// One shard on a cache line (and its neighbour: Intel prefetches pairs).
#[derive(Debug, Default)]
#[repr(align(128))]
struct Line<T>(T);

/// `SHARDS` copies of `T`, each on its own cache line.
#[derive(Debug)]
pub struct Sharded<T> {
    lines: [Line<T>; SHARDS],
}

impl<T: Default> Default for Sharded<T> {
    fn default() -> Self {
        Self {
            lines: std::array::from_fn(|_| Line::default()),
        }
    }
}

impl<T> Sharded<T> {
    /// The calling thread's shard.
    pub fn local(&self) -> &T {
        &self.lines[index()].0
    }

    /// Every shard, for summing.
    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.lines.iter().map(|l| &l.0)
    }
}

/// The calling thread's shard index.
fn index() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static INDEX: usize = NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS;
    }
    INDEX.with(|i| *i)
}

/// A new owner id for per-thread state ([`entry`]).
pub fn owner_id() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// `owner`'s entry in a thread's own list of per-owner state (a thread
/// serves one harbor, in tests a few), made with `T::default()` on first
/// use: what a worker keeps for itself instead of sharing with the others.
pub fn entry<T: Default>(list: &mut Vec<(u64, T)>, owner: u64) -> &mut T {
    let i = match list.iter().position(|(id, _)| *id == owner) {
        Some(i) => i,
        None => {
            list.push((owner, T::default()));
            list.len() - 1
        }
    };
    &mut list[i].1
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;
    use std::sync::Arc;

    #[test]
    fn the_sum_sees_every_threads_adds_even_when_threads_share_a_shard() {
        let counter: Arc<Sharded<AtomicU64>> = Arc::default();
        let threads: Vec<_> = (0..SHARDS + 3)
            .map(|_| {
                let c = counter.clone();
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        c.local().fetch_add(1, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        let sum: u64 = counter.iter().map(|s| s.load(Ordering::Relaxed)).sum();
        assert_eq!(sum, (SHARDS as u64 + 3) * 1000);
        let lines: Vec<usize> = counter.iter().map(|s| s as *const _ as usize).collect();
        assert!(
            lines.windows(2).all(|w| w[1] - w[0] >= 128),
            "one line each"
        );
    }
}
