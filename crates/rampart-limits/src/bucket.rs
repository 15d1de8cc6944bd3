//! One token bucket: `governor`'s lock-free GCRA (one atomic
//! compare-and-swap per check), with costs above the bucket's capacity
//! charged as a full bucket instead of never passing.

use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

/// Rates at or above this many units per second are not limited (the GCRA
/// works in whole nanoseconds per unit).
pub const MAX_RATE: u64 = 1_000_000_000;

pub(crate) struct Bucket {
    limiter: DefaultDirectRateLimiter,
    clock: DefaultClock,
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
    /// A bucket refilled at `per_sec` units per second holding up to
    /// `per_sec * burst` units; `None` when the rate is too high to limit.
    pub(crate) fn new(per_sec: u64, burst: f64) -> Option<Bucket> {
        if per_sec == 0 || per_sec >= MAX_RATE {
            return None;
        }
        let period = Duration::from_nanos(1_000_000_000 / per_sec);
        let capacity = ((per_sec as f64) * burst.max(1.0)).ceil();
        let capacity = if capacity >= f64::from(u32::MAX) {
            u32::MAX
        } else {
            (capacity as u32).max(1)
        };
        let quota = Quota::with_period(period)?.allow_burst(NonZeroU32::new(capacity)?);
        let clock = DefaultClock::default();
        Some(Bucket {
            limiter: RateLimiter::direct_with_clock(quota, clock.clone()),
            clock,
            capacity,
            per_sec,
        })
    }

    pub(crate) fn per_sec(&self) -> u64 {
        self.per_sec
    }

    /// The most units one take can charge in full.
    pub(crate) fn capacity(&self) -> u32 {
        self.capacity
    }

    /// Takes `n` units, or says how long until they would be there.
    #[inline]
    pub(crate) fn take(&self, n: u64) -> Result<(), Duration> {
        let n = n.min(u64::from(self.capacity)) as u32;
        let Some(n) = NonZeroU32::new(n) else {
            return Ok(());
        };
        match self.limiter.check_n(n) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(not_until)) => Err(not_until.wait_time_from(self.clock.now())),
            // Cannot happen: n is capped at the capacity above.
            Err(_) => Err(Duration::from_secs(1)),
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
    fn a_cost_above_capacity_needs_a_full_bucket() {
        let b = Bucket::new(100, 1.0).unwrap();
        b.take(1_000_000).unwrap();
        assert!(b.take(1).is_err());
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
