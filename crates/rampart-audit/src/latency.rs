//! Latency histograms with fixed buckets, counted with a few relaxed atomic
//! adds and read as snapshots for the server's `/metrics` (this crate does
//! not depend on a metrics library).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Upper bounds of the buckets, in seconds (a last, unbounded one follows).
/// From a fast fsync to past the longest `durable_timeout` callers use.
pub const LATENCY_BUCKETS_SECS: [f64; 14] = [
    0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 2.5, 10.0,
];

/// One histogram being counted.
#[derive(Debug, Default)]
pub(crate) struct Histogram {
    buckets: [AtomicU64; LATENCY_BUCKETS_SECS.len()],
    count: AtomicU64,
    sum_nanos: AtomicU64,
}

impl Histogram {
    pub(crate) fn record(&self, took: Duration) {
        let secs = took.as_secs_f64();
        if let Some(i) = LATENCY_BUCKETS_SECS.iter().position(|&le| secs <= le) {
            self.buckets[i].fetch_add(1, Relaxed);
        }
        self.sum_nanos
            .fetch_add(u64::try_from(took.as_nanos()).unwrap_or(u64::MAX), Relaxed);
        self.count.fetch_add(1, Relaxed);
    }

    pub(crate) fn snapshot(&self) -> Latency {
        let mut total = 0;
        let buckets = LATENCY_BUCKETS_SECS
            .iter()
            .zip(&self.buckets)
            .map(|(&le, n)| {
                total += n.load(Relaxed);
                (le, total)
            })
            .collect();
        // Read after the buckets, so that count >= every bucket.
        let count = self.count.load(Relaxed).max(total);
        Latency {
            buckets,
            count,
            sum_secs: self.sum_nanos.load(Relaxed) as f64 / 1e9,
        }
    }
}

/// A snapshot of one histogram.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Latency {
    /// (upper bound in seconds, observations at most that long):
    /// cumulative, as Prometheus wants them; the unbounded bucket is
    /// `count`.
    pub buckets: Vec<(f64, u64)>,
    pub count: u64,
    pub sum_secs: f64,
}

/// The audit log's latencies, from [`Auditor::latency`](crate::Auditor::latency).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct AuditLatency {
    /// The writer thread writing one batch, its fsync included when it had
    /// one (a caller waiting for durability, a checkpoint, a rotation, or
    /// records written 100 ms ago without one). Failed writes too.
    pub batch_write: Latency,
    /// [`Auditor::mandatory`](crate::Auditor::mandatory) callers, from the
    /// call to the answer: durable, or refused at `durable_timeout`.
    pub durable_wait: Latency,
    /// [`Auditor::written`](crate::Auditor::written) callers, likewise.
    pub written_wait: Latency,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_cumulative_and_the_sum_adds_up() {
        let h = Histogram::default();
        assert_eq!(h.snapshot().count, 0);
        h.record(Duration::from_micros(50));
        h.record(Duration::from_millis(3));
        h.record(Duration::from_millis(4));
        h.record(Duration::from_secs(20));
        let s = h.snapshot();
        let at = |le: f64| s.buckets.iter().find(|b| b.0 == le).map(|b| b.1);
        assert_eq!(at(0.000_1), Some(1));
        assert_eq!(at(0.002_5), Some(1));
        assert_eq!(at(0.005), Some(3));
        assert_eq!(at(10.0), Some(3), "20 s is only in the unbounded bucket");
        assert_eq!(s.count, 4);
        assert!((s.sum_secs - 20.007_05).abs() < 1e-9, "{}", s.sum_secs);
        assert_eq!(s.buckets.len(), LATENCY_BUCKETS_SECS.len());
    }
}
