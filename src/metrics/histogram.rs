//! The request-duration histogram, lock-free: `prometheus-client`'s own
//! takes a mutex per observation, which both gateway workers would contend
//! for on every request. Here an observation is three relaxed atomic adds
//! on integers (bucket, nanosecond sum); the exposition is encoded with
//! `prometheus-client`'s histogram encoder, so the text is the same.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::{MetricType, TypedMetric};

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
pub struct Durations(Arc<Inner>);

impl Durations {
    pub fn observe(&self, d: Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        let i = BOUNDS_NS.partition_point(|bound| *bound < ns);
        self.0.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.0.sum_ns.fetch_add(ns, Ordering::Relaxed);
    }
}

impl TypedMetric for Durations {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for Durations {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let counts = self.0.buckets.iter().map(|b| b.load(Ordering::Relaxed));
        let bounds = BUCKETS.iter().copied().chain([f64::INFINITY]);
        let buckets: Vec<(f64, u64)> = bounds.zip(counts).collect();
        // The count is the buckets' total, so the two always agree.
        let count = buckets.iter().map(|(_, n)| n).sum();
        let sum = self.0.sum_ns.load(Ordering::Relaxed) as f64 / 1e9;
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
        let n = |i: usize| h.0.buckets[i].load(Ordering::Relaxed);
        assert_eq!((n(0), n(1), n(16)), (1, 1, 1));
        assert_eq!(h.0.sum_ns.load(Ordering::Relaxed), 11_000_201_000);
    }
}
