//! Latency histograms with fixed buckets, counted with a few relaxed atomic
//! adds and read as snapshots for the server's `/metrics` (no metrics
//! library here). [`Histogram`] is also what the audit log counts its
//! write latencies with; this module keeps the process-wide fsync latency
//! of every log.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Upper bounds of the fsync buckets, in seconds (a last, unbounded one
/// follows).
pub const FSYNC_BUCKETS_SECS: [f64; 12] = [
    0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];

static FSYNC: Histogram<12> = Histogram::new(FSYNC_BUCKETS_SECS);

/// A histogram being counted, with `N` bounded buckets and an unbounded
/// one.
#[derive(Debug)]
pub struct Histogram<const N: usize> {
    bounds: [f64; N],
    buckets: [AtomicU64; N],
    count: AtomicU64,
    sum_nanos: AtomicU64,
}

impl<const N: usize> Histogram<N> {
    /// An empty histogram whose buckets end at `bounds` (seconds, rising).
    pub const fn new(bounds: [f64; N]) -> Self {
        Self {
            bounds,
            buckets: [const { AtomicU64::new(0) }; N],
            count: AtomicU64::new(0),
            sum_nanos: AtomicU64::new(0),
        }
    }

    /// Counts one observation that took `took`.
    pub fn record(&self, took: Duration) {
        let secs = took.as_secs_f64();
        if let Some(i) = self.bounds.iter().position(|&le| secs <= le) {
            self.buckets[i].fetch_add(1, Relaxed);
        }
        self.sum_nanos
            .fetch_add(u64::try_from(took.as_nanos()).unwrap_or(u64::MAX), Relaxed);
        self.count.fetch_add(1, Relaxed);
    }

    /// What was counted so far.
    pub fn snapshot(&self) -> Latency {
        let mut total = 0;
        let buckets = self
            .bounds
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

/// Counts one fsync that took `took`.
pub(crate) fn record(took: Duration) {
    FSYNC.record(took);
}

/// The fsyncs of every log opened in this process so far.
pub fn fsync_latency() -> Latency {
    FSYNC.snapshot()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_cumulative_and_bounded_by_the_count() {
        let before = fsync_latency();
        record(Duration::from_micros(50));
        record(Duration::from_millis(3));
        record(Duration::from_secs(2));
        let after = fsync_latency();
        let grew = |le: f64| {
            let at = |h: &Latency| h.buckets.iter().find(|b| b.0 == le).map_or(0, |b| b.1);
            at(&after) - at(&before)
        };
        // Other tests of this process may fsync meanwhile: at least ours.
        assert!(grew(0.000_1) >= 1);
        assert!(grew(0.005) >= 2);
        assert!(after.count - before.count >= 3);
        assert!(after.sum_secs - before.sum_secs >= 2.0);
        assert!(after.buckets.windows(2).all(|w| w[0].1 <= w[1].1));
        assert!(after.buckets.last().map_or(0, |b| b.1) <= after.count);
    }
}
