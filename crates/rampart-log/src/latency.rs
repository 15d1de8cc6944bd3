//! The fsync latency of every log in the process, as a histogram with fixed
//! buckets, for the server's `/metrics`. Counting is a few relaxed atomic
//! adds per fsync.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the buckets, in seconds (a last, unbounded one follows).
pub const FSYNC_BUCKETS_SECS: [f64; 12] = [
    0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];

static BUCKETS: [AtomicU64; 12] = [const { AtomicU64::new(0) }; 12];
static COUNT: AtomicU64 = AtomicU64::new(0);
static SUM_NANOS: AtomicU64 = AtomicU64::new(0);

/// Counts one fsync that took `took`.
pub(crate) fn record(took: Duration) {
    let secs = took.as_secs_f64();
    if let Some(i) = FSYNC_BUCKETS_SECS.iter().position(|&le| secs <= le) {
        BUCKETS[i].fetch_add(1, Ordering::Relaxed);
    }
    SUM_NANOS.fetch_add(
        u64::try_from(took.as_nanos()).unwrap_or(u64::MAX),
        Ordering::Relaxed,
    );
    COUNT.fetch_add(1, Ordering::Relaxed);
}

/// A snapshot of the histogram.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct FsyncLatency {
    /// (upper bound in seconds, fsyncs at most that long): cumulative, as
    /// Prometheus wants them; the unbounded bucket is `count`.
    pub buckets: Vec<(f64, u64)>,
    pub count: u64,
    pub sum_secs: f64,
}

/// The fsyncs of every log opened in this process so far.
pub fn fsync_latency() -> FsyncLatency {
    let mut total = 0;
    let buckets = FSYNC_BUCKETS_SECS
        .iter()
        .zip(&BUCKETS)
        .map(|(&le, n)| {
            total += n.load(Ordering::Relaxed);
            (le, total)
        })
        .collect();
    // Read after the buckets, so that count >= every bucket.
    let count = COUNT.load(Ordering::Relaxed).max(total);
    FsyncLatency {
        buckets,
        count,
        sum_secs: SUM_NANOS.load(Ordering::Relaxed) as f64 / 1e9,
    }
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
            let at = |h: &FsyncLatency| h.buckets.iter().find(|b| b.0 == le).map_or(0, |b| b.1);
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
