//! The audit log's latency histograms: fixed buckets counted with a few
//! relaxed atomic adds ([`rampart_log::Histogram`]), read as snapshots for
//! the server's `/metrics` (no metrics library here).

use std::time::Duration;

pub use rampart_log::Latency;

/// Upper bounds of the buckets, in seconds (a last, unbounded one follows).
/// From a fast fsync to past the longest `durable_timeout` callers use.
pub const LATENCY_BUCKETS_SECS: [f64; 14] = [
    0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 2.5, 10.0,
];

/// One histogram of the audit log, over [`LATENCY_BUCKETS_SECS`]: the log
/// crate's histogram, with the `Default` the writer's counters want.
#[derive(Debug)]
pub(crate) struct Histogram(rampart_log::Histogram<{ LATENCY_BUCKETS_SECS.len() }>);

impl Default for Histogram {
    fn default() -> Self {
        Histogram(rampart_log::Histogram::new(LATENCY_BUCKETS_SECS))
    }
}

impl Histogram {
    pub(crate) fn record(&self, took: Duration) {
        self.0.record(took);
    }

    pub(crate) fn snapshot(&self) -> Latency {
        self.0.snapshot()
    }
}

/// The audit log's latencies, from [`Auditor::latency`](crate::Auditor::latency).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct AuditLatency {
    /// The writer thread writing one batch (to the page cache: its fsync
    /// is the fsync thread's). Failed writes too.
    pub batch_write: Latency,
    /// [`Auditor::mandatory`](crate::Auditor::mandatory) callers, from the
    /// call to the answer: durable, or refused at `durable_timeout`.
    pub durable_wait: Latency,
    /// [`Auditor::written`](crate::Auditor::written) callers, likewise.
    pub written_wait: Latency,
    /// The fsync thread's fsyncs, each covering every batch written before
    /// it (a caller waiting for durability, a checkpoint, a rotation, or
    /// records written 100 ms ago without one). Failed ones too.
    pub fsync: Latency,
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
