//! One token bucket as a GCRA (generic cell rate algorithm): one atomic
//! "theoretical arrival time" per bucket, one compare-and-swap per check.
//!
//! A cost above the bucket's capacity never passes: [`Handle::rate`]
//! refuses it up front (413, "split it") at either level before charging
//! anything. Letting it through on a full bucket and leaving the bucket in
//! debt, as before, kept the long-run rate but let one principal's batch
//! put its whole tenant in debt: every other principal of the tenant then
//! waited out the excess, for hours with a large batch of small messages.
//!
//! [`Handle::rate`]: crate::Handle::rate

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Nanoseconds since the first call in this process: every bucket's clock,
/// read once per check however many buckets it charges. (`quanta`'s
/// time-stamp-counter clock saved 6 ns of a 38 ns check of two buckets in
/// `benches/check.rs`, not worth a dependency; `governor` took 45 ns in
/// the same hour.)
pub(crate) fn now_ns() -> u64 {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    u64::try_from(ORIGIN.get_or_init(Instant::now).elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// Rates at or above this many units per second are not limited (the GCRA
/// works in whole nanoseconds per unit).
pub const MAX_RATE: u64 = 1_000_000_000;

/// What a bucket refilled at `per_sec` holds: `per_sec * burst` units (at
/// least 1), the most one take may charge; `None` when the rate is not
/// limited.
pub(crate) fn capacity(per_sec: u64, burst: f64) -> Option<u32> {
    if per_sec == 0 || per_sec >= MAX_RATE {
        return None;
    }
    let capacity = ((per_sec as f64) * burst.max(1.0)).ceil();
    Some(if capacity >= f64::from(u32::MAX) {
        u32::MAX
    } else {
        (capacity as u32).max(1)
    })
}

pub(crate) struct Bucket {
    /// When the bucket is full again, in [`now_ns`]'s nanoseconds: at or
    /// before now, it is full; each unit taken moves it `period_ns` on.
    tat: AtomicU64,
    period_ns: u64,
    capacity: u32,
    per_sec: u64,
}

impl std::fmt::Debug for Bucket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bucket")
            .field("per_sec", &self.per_sec)
            .field("capacity", &self.capacity)
            .finish()
    }
}

impl Bucket {
    /// A full bucket refilled at `per_sec` units per second holding up to
    /// `per_sec * burst` units; `None` when the rate is too high to limit.
    pub(crate) fn new(per_sec: u64, burst: f64) -> Option<Bucket> {
        let capacity = capacity(per_sec, burst)?;
        Some(Bucket {
            tat: AtomicU64::new(0),
            period_ns: 1_000_000_000 / per_sec,
            capacity,
            per_sec,
        })
    }

    pub(crate) fn per_sec(&self) -> u64 {
        self.per_sec
    }

    /// The most units one take can charge: a full bucket.
    pub(crate) fn capacity(&self) -> u32 {
        self.capacity
    }

    /// Takes `n` units now, or says how long until they would be there.
    pub(crate) fn take(&self, n: u64) -> Result<(), Duration> {
        self.take_at(n, now_ns())
    }

    /// Takes `n` units at `now` (from [`now_ns`]), or says how long until
    /// they would be there. More than the capacity never passes:
    /// callers refuse such a cost before they charge it.
    #[inline]
    pub(crate) fn take_at(&self, n: u64, now: u64) -> Result<(), Duration> {
        if n == 0 {
            return Ok(());
        }
        let tau = u64::from(self.capacity) * self.period_ns;
        let cost = n.saturating_mul(self.period_ns);
        let mut tat = self.tat.load(Ordering::Acquire);
        loop {
            let next = tat.max(now).saturating_add(cost);
            if next - now > tau {
                return Err(Duration::from_nanos(next - tau - now));
            }
            match self
                .tat
                .compare_exchange_weak(tat, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return Ok(()),
                Err(current) => tat = current,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_refusal_with_a_wait() {
        let b = Bucket::new(10, 2.0).unwrap();
        for _ in 0..20 {
            b.take(1).unwrap();
        }
        let wait = b.take(1).unwrap_err();
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_millis(100),
            "{wait:?}"
        );
    }

    #[test]
    fn a_cost_above_capacity_never_passes_and_charges_nothing() {
        let b = Bucket::new(100, 1.0).unwrap();
        // Even on a full bucket.
        assert!(b.take(101).is_err());
        assert!(b.take(1_000).is_err());
        // The refusals took nothing: the whole bucket is still there.
        b.take(100).unwrap();
        let wait = b.take(1).unwrap_err();
        assert!(wait <= Duration::from_millis(10), "{wait:?}");
    }

    #[test]
    fn the_bucket_refills_at_its_rate() {
        let b = Bucket::new(1_000, 1.0).unwrap();
        b.take(1_000).unwrap();
        assert!(b.take(1).is_err());
        std::thread::sleep(Duration::from_millis(20));
        // At least 20 units came back (the sleep may be longer), not all.
        b.take(20).unwrap();
        assert!(b.take(1_000).is_err());
    }

    #[test]
    fn concurrent_takes_never_pass_more_than_the_bucket() {
        let b = std::sync::Arc::new(Bucket::new(1, 1_000.0).unwrap());
        let passed: usize = (0..4)
            .map(|_| {
                let b = b.clone();
                std::thread::spawn(move || (0..1_000).filter(|_| b.take(1).is_ok()).count())
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|t| t.join().unwrap())
            .sum();
        // 1,000 in the bucket, and at most a unit or so refilled meanwhile.
        assert!((1_000..=1_002).contains(&passed), "{passed}");
    }

    #[test]
    fn zero_cost_and_unlimited_rates() {
        let b = Bucket::new(1, 1.0).unwrap();
        b.take(1).unwrap();
        b.take(0).unwrap();
        assert!(b.take(1).is_err());
        assert!(Bucket::new(MAX_RATE, 1.0).is_none());
        assert!(Bucket::new(0, 1.0).is_none());
    }
}
