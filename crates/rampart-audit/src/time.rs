//! Wall-clock time as RFC 3339 text, without a date library.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch; 0 if the clock is before 1970.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Formats `unix_ms` as `YYYY-MM-DDTHH:MM:SS.mmmZ` (UTC), the form of an
/// audit record's timestamp.
pub fn rfc3339_ms(unix_ms: u64) -> String {
    rfc3339(unix_ms, true)
}

/// Formats `unix_ms` as `YYYY-MM-DDTHH:MM:SSZ` (UTC, whole seconds), the
/// form the Vault-compatible API prints times in.
pub fn rfc3339_s(unix_ms: u64) -> String {
    rfc3339(unix_ms, false)
}

/// Digit by digit rather than through `format!`, whose padding machinery
/// cost an audit record's writer 7% of its time (every record, and every
/// secret read's answer, has a timestamp).
fn rfc3339(unix_ms: u64, millis: bool) -> String {
    let secs = unix_ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days);
    let mut out = String::with_capacity(24);
    for (n, width, then) in [
        (y, 4, '-'),
        (m, 2, '-'),
        (d, 2, 'T'),
        (rem / 3600, 2, ':'),
        (rem % 3600 / 60, 2, ':'),
        (rem % 60, 2, if millis { '.' } else { 'Z' }),
    ] {
        push_padded(&mut out, n, width);
        out.push(then);
    }
    if millis {
        push_padded(&mut out, unix_ms % 1000, 3);
        out.push('Z');
    }
    out
}

/// `n` in decimal, zero-padded to at least `width` digits.
fn push_padded(out: &mut String, mut n: u64, width: usize) {
    let mut digits = [b'0'; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    let from = i.min(digits.len() - width);
    out.extend(digits[from..].iter().map(|&b| char::from(b)));
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

/// The instant `s` names, in the form [`rfc3339_ms`] writes (an audit
/// record's timestamp) or the same without milliseconds
/// (`YYYY-MM-DDTHH:MM:SSZ`); `None` for anything else, dates before 1970
/// and dates that do not exist.
pub fn parse_rfc3339_ms(s: &str) -> Option<u64> {
    let (body, ms) = if is_rfc3339_ms(s) {
        (&s[..19], s[20..23].parse::<u64>().ok()?)
    } else {
        const SHAPE: &[u8; 20] = b"dddd-dd-ddTdd:dd:ddZ";
        let ok = s.len() == SHAPE.len()
            && s.bytes().zip(SHAPE.iter()).all(|(c, want)| match want {
                b'd' => c.is_ascii_digit(),
                _ => c == *want,
            });
        if !ok {
            return None;
        }
        (&s[..19], 0)
    };
    let num = |r: std::ops::Range<usize>| body[r].parse::<u64>().ok();
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hh, mm, ss) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if y < 1970 || !(1..=12).contains(&m) || !(1..=31).contains(&d) || hh > 23 || mm > 59 || ss > 59
    {
        return None;
    }
    let days = days_from_civil(y, m, d);
    // 2023-02-30 would land in March: refused.
    if civil_from_days(days) != (y, m, d) {
        return None;
    }
    Some(((days * 86_400 + hh * 3600 + mm * 60 + ss) * 1000) + ms)
}

/// Days from 1970-01-01 to `y-m-d` (`y` >= 1970): the inverse of
/// [`civil_from_days`], Howard Hinnant's `days_from_civil`.
fn days_from_civil(y: u64, m: u64, d: u64) -> u64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y / 400;
    let yoe = y - era * 400; // [0, 399]
    let mp = if m > 2 { m - 3 } else { m + 9 }; // March = 0
    let doy = (153 * mp + 2) / 5 + d - 1; // [0, 365]
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy; // [0, 146096]
    era * 146_097 + doe - 719_468
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
    fn timestamps_parse_back_to_their_instant() {
        for ms in [
            0,
            1_768_473_045_123,
            951_782_400_000,
            4_107_542_400_000,
            1_709_164_800_999,
        ] {
            assert_eq!(parse_rfc3339_ms(&rfc3339_ms(ms)), Some(ms), "{ms}");
        }
        assert_eq!(
            parse_rfc3339_ms("2026-01-15T10:30:45Z"),
            Some(1_768_473_045_000)
        );
        for bad in [
            "",
            "2026-01-15",
            "2026-01-15T10:30:45.12Z",
            "2026-02-30T00:00:00Z",
            "2026-13-01T00:00:00Z",
            "2026-01-15T24:00:00Z",
            "1969-12-31T23:59:59Z",
            "2026-01-15T10:30:45+01:00",
        ] {
            assert_eq!(parse_rfc3339_ms(bad), None, "{bad}");
        }
    }

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
        // Past year 9999 the year just grows.
        assert_eq!(rfc3339_ms(253_402_300_800_000), "10000-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_s(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339_s(1_768_473_045_999), "2026-01-15T10:30:45Z");
        assert_eq!(rfc3339_s(951_782_400_000), "2000-02-29T00:00:00Z");
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
