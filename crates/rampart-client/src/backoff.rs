//! Back-off as told by the server: how long a request refused for a rate
//! limit waits before it is sent again, and the bound on the total. Free of
//! IO and clocks; the callers sleep and resend.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rampart_proto::ErrorCode;

use crate::ClientError;

/// Most jitter added to the server's wait, in thousandths of it (10%).
const JITTER_PER_MILLE: u64 = 100;

/// The waits of one request: none once their sum would pass `max`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Backoff {
    max: Duration,
    waited: Duration,
}

impl Backoff {
    /// `max` of zero: never wait (every refusal is final).
    pub(crate) fn new(max: Duration) -> Self {
        Self {
            max,
            waited: Duration::ZERO,
        }
    }

    /// Total waited so far.
    #[cfg(test)]
    pub(crate) fn waited(&self) -> Duration {
        self.waited
    }

    /// The wait before resending a request the server refused with
    /// `retry_after`, plus `jitter` (0..=1000 thousandths of 10% of it);
    /// `None` when the request must fail now: the server named no wait,
    /// or the wait would take the total past the bound. A wait is never
    /// cut short: resending before the server's time is up is pointless.
    pub(crate) fn next(&mut self, retry_after: Duration, jitter: u64) -> Option<Duration> {
        if retry_after.is_zero() {
            return None;
        }
        let total = self.waited.checked_add(retry_after)?;
        if total > self.max {
            return None;
        }
        let extra_nanos =
            retry_after.as_nanos() * u128::from(jitter.min(1000)) * u128::from(JITTER_PER_MILLE)
                / 1_000_000;
        let extra = Duration::from_nanos(u64::try_from(extra_nanos).unwrap_or(u64::MAX));
        // The jitter may use what is left of the bound, no more.
        let wait = retry_after + extra.min(self.max - total);
        self.waited += wait;
        Some(wait)
    }
}

/// Spreads one connection's resends after rate limits. Requests refused
/// together are each told about the same wait; resending them all when it
/// ends gets all but one refused again, a storm of 429s. Instead each
/// refused request takes the next free slot, one told wait after the
/// previous one, so resends arrive at the rate the server refills; and
/// while slots are queued, new requests queue behind them.
#[derive(Debug, Default)]
pub(crate) struct Pacer {
    /// Set while slots are queued: the fast path is one atomic load.
    active: AtomicBool,
    state: Mutex<PacerState>,
}

#[derive(Debug, Default)]
struct PacerState {
    /// When the next slot starts.
    until: Option<Instant>,
}

impl Pacer {
    fn state(&self) -> std::sync::MutexGuard<'_, PacerState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A request refused now with `wait` (already jittered): when to send
    /// it again.
    pub(crate) fn refused(&self, now: Instant, wait: Duration) -> Instant {
        let mut st = self.state();
        let start = st.until.map_or(now + wait, |u| u.max(now + wait));
        st.until = Some(start + wait);
        self.active.store(true, Ordering::Release);
        start
    }

    /// Before a new request: while resends are queued, when it may go
    /// (after them); `None` when nothing is queued. It takes no slot of its
    /// own: the last told wait may belong to a request of another kind and
    /// size, and a new request refused at its turn takes a slot then.
    pub(crate) fn slot(&self, now: Instant) -> Option<Instant> {
        if !self.active.load(Ordering::Acquire) {
            return None;
        }
        let mut st = self.state();
        match st.until {
            Some(u) if u > now => Some(u),
            _ => {
                st.until = None;
                self.active.store(false, Ordering::Release);
                None
            }
        }
    }
}

/// The wait a refusal asks for, if it is one that backing off can cure:
/// NACK 429 with a retry-after. (A quota refusal, 429 without one, is
/// final: waiting frees nothing.)
pub(crate) fn rate_limited(e: &ClientError) -> Option<Duration> {
    match e {
        ClientError::Nack {
            code: ErrorCode::TOO_MANY_REQUESTS,
            retry_after: Some(d),
            ..
        } => Some(*d),
        _ => None,
    }
}

/// The wait an HTTP `Retry-After` value asks for: whole seconds only (the
/// server sends those); a date or garbage is no wait.
pub(crate) fn retry_after_header(value: &str) -> Option<Duration> {
    match value.trim().parse::<u64>() {
        Ok(s) if s > 0 => Some(Duration::from_secs(s)),
        _ => None,
    }
}

/// A jitter draw in 0..=1000 for [`Backoff::next`]: spreads the resends of
/// clients refused at the same moment. Not for anything secret.
pub(crate) fn jitter() -> u64 {
    static STATE: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let x = STATE.fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed) ^ u64::from(nanos);
    splitmix64(x) % 1001
}

fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn refused_requests_take_successive_slots() {
        let p = Pacer::default();
        let t0 = Instant::now();
        assert_eq!(p.slot(t0), None);
        // Four requests refused together, each told 10 ms.
        let slots: Vec<_> = (0..4).map(|_| p.refused(t0, 10 * MS)).collect();
        assert_eq!(
            slots,
            vec![t0 + 10 * MS, t0 + 20 * MS, t0 + 30 * MS, t0 + 40 * MS]
        );
        // New requests queue behind them.
        assert_eq!(p.slot(t0 + MS), Some(t0 + 50 * MS));
        assert_eq!(p.slot(t0 + MS), Some(t0 + 50 * MS));
        // Once the queue has drained, nothing waits.
        assert_eq!(p.slot(t0 + 100 * MS), None);
        assert_eq!(p.slot(t0 + 100 * MS), None);
        // A refusal long after starts from its own wait.
        let t1 = t0 + 200 * MS;
        assert_eq!(p.refused(t1, 5 * MS), t1 + 5 * MS);
    }

    #[test]
    fn waits_as_told_plus_at_most_ten_percent() {
        let mut b = Backoff::new(Duration::from_secs(30));
        assert_eq!(b.next(100 * MS, 0), Some(100 * MS));
        assert_eq!(b.next(100 * MS, 1000), Some(110 * MS));
        assert_eq!(b.next(100 * MS, 500), Some(105 * MS));
        // Out-of-range draws are clamped to 10%.
        assert_eq!(b.next(100 * MS, u64::MAX), Some(110 * MS));
        assert_eq!(b.waited(), 425 * MS);
    }

    #[test]
    fn the_total_is_bounded() {
        let mut b = Backoff::new(Duration::from_secs(1));
        assert_eq!(b.next(400 * MS, 0), Some(400 * MS));
        assert_eq!(b.next(400 * MS, 0), Some(400 * MS));
        // 200 ms left: a 300 ms wait would pass the bound, so fail now.
        assert_eq!(b.next(300 * MS, 0), None);
        // The jitter only uses what is left.
        assert_eq!(b.next(190 * MS, 1000), Some(200 * MS));
        assert_eq!(b.waited(), Duration::from_secs(1));
        assert_eq!(b.next(MS, 0), None);
    }

    #[test]
    fn zero_bound_or_no_wait_never_retries() {
        assert_eq!(Backoff::new(Duration::ZERO).next(MS, 0), None);
        assert_eq!(
            Backoff::new(Duration::from_secs(30)).next(Duration::ZERO, 0),
            None
        );
        assert_eq!(
            Backoff::new(Duration::MAX).next(Duration::MAX, 1000),
            Some(Duration::MAX)
        );
    }

    #[test]
    fn only_rate_limits_with_a_wait_are_retried() {
        let nack = |code, retry_after| ClientError::Nack {
            code,
            message: String::new(),
            retry_after,
        };
        assert_eq!(
            rate_limited(&nack(ErrorCode::TOO_MANY_REQUESTS, Some(5 * MS))),
            Some(5 * MS)
        );
        assert_eq!(
            rate_limited(&nack(ErrorCode::TOO_MANY_REQUESTS, None)),
            None
        );
        assert_eq!(
            rate_limited(&nack(ErrorCode::FORBIDDEN, Some(5 * MS))),
            None
        );
        assert_eq!(rate_limited(&ClientError::Closed), None);
    }

    #[test]
    fn retry_after_headers() {
        assert_eq!(retry_after_header("2"), Some(Duration::from_secs(2)));
        assert_eq!(retry_after_header(" 1 "), Some(Duration::from_secs(1)));
        assert_eq!(retry_after_header("0"), None);
        assert_eq!(retry_after_header("-1"), None);
        assert_eq!(retry_after_header("Wed, 21 Oct 2015 07:28:00 GMT"), None);
    }

    #[test]
    fn jitter_stays_in_range_and_varies() {
        let draws: Vec<u64> = (0..200).map(|_| jitter()).collect();
        assert!(draws.iter().all(|j| *j <= 1000));
        let distinct: std::collections::HashSet<_> = draws.iter().collect();
        assert!(distinct.len() > 50, "{} distinct draws", distinct.len());
    }
}
