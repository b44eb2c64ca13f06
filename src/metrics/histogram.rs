//! The per-request metrics, lock-free and per thread: `prometheus-client`'s
//! histogram takes a mutex per observation and its counter is one shared
//! atomic, lines both gateway workers would pass back and forth on every
//! request. Here an observation is two relaxed atomic adds on integers
//! (bucket, nanosecond sum) in the calling thread's shard
//! ([`crate::sharded`]), a count one; the exposition is encoded with
//! `prometheus-client`'s own encoders, so the text is the same.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::{MetricType, TypedMetric};

use crate::sharded::Sharded;

/// Upper bounds, seconds: from a fast loopback answer to a slow upstream.
pub const BUCKETS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// The same bounds in nanoseconds, for integer comparison.
const BOUNDS_NS: [u64; 16] = [
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
];

#[derive(Debug, Default)]
struct Inner {
    /// Per bucket (not cumulative); the last one is `+Inf`.
    buckets: [AtomicU64; 17],
    sum_ns: AtomicU64,
}

/// A duration histogram; clones share it.
#[derive(Debug, Clone, Default)]
pub struct Durations(Arc<Sharded<Inner>>);

impl Durations {
    pub fn observe(&self, d: Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        let i = BOUNDS_NS.partition_point(|bound| *bound < ns);
        let shard = self.0.local();
        shard.buckets[i].fetch_add(1, Ordering::Relaxed);
        shard.sum_ns.fetch_add(ns, Ordering::Relaxed);
    }

    fn bucket(&self, i: usize) -> u64 {
        self.0
            .iter()
            .map(|s| s.buckets[i].load(Ordering::Relaxed))
            .sum()
    }

    fn sum_ns(&self) -> u64 {
        self.0
            .iter()
            .map(|s| s.sum_ns.load(Ordering::Relaxed))
            .sum()
    }
}

/// A counter; clones share it.
#[derive(Debug, Clone, Default)]
pub struct Hits(Arc<Sharded<AtomicU64>>);

impl Hits {
    pub fn inc(&self) {
        self.0.local().fetch_add(1, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.iter().map(|s| s.load(Ordering::Relaxed)).sum()
    }
}

impl TypedMetric for Hits {
    const TYPE: MetricType = MetricType::Counter;
}

impl EncodeMetric for Hits {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        encoder.encode_counter::<NoLabelSet, _, u64>(&self.get(), None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

impl TypedMetric for Durations {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for Durations {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let counts = (0..BOUNDS_NS.len() + 1).map(|i| self.bucket(i));
        let bounds = BUCKETS.iter().copied().chain([f64::INFINITY]);
        let buckets: Vec<(f64, u64)> = bounds.zip(counts).collect();
        // The count is the buckets' total, so the two always agree.
        let count = buckets.iter().map(|(_, n)| n).sum();
        let sum = self.sum_ns() as f64 / 1e9;
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_agree_and_observations_land_at_or_below_their_bound() {
        for (s, ns) in BUCKETS.iter().zip(BOUNDS_NS) {
            assert_eq!((*s * 1e9).round() as u64, ns);
        }
        let h = Durations::default();
        h.observe(Duration::from_micros(100)); // le 0.0001
        h.observe(Duration::from_micros(101)); // le 0.00025
        h.observe(Duration::from_secs(11)); // +Inf
        assert_eq!((h.bucket(0), h.bucket(1), h.bucket(16)), (1, 1, 1));
        assert_eq!(h.sum_ns(), 11_000_201_000);
    }
}
