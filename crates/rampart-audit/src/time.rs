//! Wall-clock time as RFC 3339 text, without a date library.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch; 0 if the clock is before 1970.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Formats `unix_ms` as `YYYY-MM-DDTHH:MM:SS.mmmZ` (UTC).
pub(crate) fn rfc3339_ms(unix_ms: u64) -> String {
    let ms = unix_ms % 1000;
    let secs = unix_ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days);
    let (hh, mm, ss) = (rem / 3600, rem % 3600 / 60, rem % 60);
    format!("{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}.{ms:03}Z")
}

/// Year, month, day of the `days`-th day after 1970-01-01 (proleptic
/// Gregorian calendar). Howard Hinnant's `civil_from_days`, restricted to
/// dates after the epoch so that everything stays unsigned.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468; // days since 0000-03-01
    let era = z / 146_097;
    let doe = z % 146_097; // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365], from March 1st
    let mp = (5 * doy + 2) / 153; // [0, 11], March = 0
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

/// Whether `s` has the shape [`rfc3339_ms`] writes.
pub(crate) fn is_rfc3339_ms(s: &str) -> bool {
    const SHAPE: &[u8; 24] = b"dddd-dd-ddTdd:dd:dd.dddZ";
    s.len() == SHAPE.len()
        && s.bytes().zip(SHAPE.iter()).all(|(c, want)| match want {
            b'd' => c.is_ascii_digit(),
            _ => c == *want,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_instants() {
        assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
        // The seed's example instant.
        assert_eq!(rfc3339_ms(1_768_473_045_123), "2026-01-15T10:30:45.123Z");
        // Leap days, including the 400-year rule.
        assert_eq!(rfc3339_ms(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(rfc3339_ms(4_107_542_400_000), "2100-03-01T00:00:00.000Z");
        assert_eq!(rfc3339_ms(1_709_251_199_999), "2024-02-29T23:59:59.999Z");
        assert_eq!(rfc3339_ms(253_402_300_799_999), "9999-12-31T23:59:59.999Z");
    }

    #[test]
    fn every_day_is_well_formed_and_increasing() {
        let mut prev = String::new();
        for day in 0..(200 * 366) {
            let s = rfc3339_ms(day * 86_400_000 + 1);
            assert!(is_rfc3339_ms(&s), "{s}");
            assert!(s > prev, "{s} after {prev}");
            prev = s;
        }
    }

    #[test]
    fn shape_check() {
        assert!(is_rfc3339_ms("2026-01-15T10:30:45.123Z"));
        assert!(!is_rfc3339_ms("2026-01-15T10:30:45Z"));
        assert!(!is_rfc3339_ms("2026-01-15 10:30:45.123Z"));
        assert!(!is_rfc3339_ms("2026-01-15T10:30:45.123+"));
    }
}
