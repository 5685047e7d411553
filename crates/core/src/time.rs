//! Event time: milliseconds since the Unix epoch, UTC.
//!
//! Event time (never wall time) decides everything training must reproduce, so timestamps are a
//! plain integer with exact ordering. RFC 3339 is parsed and printed here by hand: the grammar is
//! small, and owning it keeps `core` free of I/O-capable dependencies.

use std::fmt;

/// Milliseconds since 1970-01-01T00:00:00Z.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(pub i64);

/// The last millisecond of year 9999, the largest instant RFC 3339 can write.
pub const MAX_MILLIS: i64 = 253_402_300_799_999;

impl Timestamp {
    pub const fn from_millis(ms: i64) -> Self {
        Timestamp(ms)
    }

    pub const fn millis(self) -> i64 {
        self.0
    }

    /// The current wall-clock time (clamped to the epoch if the system clock is before it).
    ///
    /// Event time never comes from here; this is for things like "when was this bundle made" or
    /// "how stale is this". Code that needs a testable notion of now takes a
    /// [`Clock`](crate::Clock) instead.
    pub fn now() -> Self {
        let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        Timestamp(i64::try_from(since.as_millis()).unwrap_or(i64::MAX))
    }

    /// Seconds since the epoch, as MovieLens and most CSV exports write them.
    pub fn from_secs(secs: i64) -> Option<Self> {
        let ms = secs.checked_mul(1000)?;
        (0..=MAX_MILLIS).contains(&ms).then_some(Timestamp(ms))
    }

    /// Parses RFC 3339 (`2024-05-01T12:00:00Z`, `2024-05-01T14:00:00.250+02:00`).
    /// Fractions beyond milliseconds are truncated. Returns a reason on failure.
    pub fn parse_rfc3339(s: &str) -> Result<Self, &'static str> {
        let b = s.as_bytes();
        if b.len() < 20 {
            return Err("too short for RFC 3339 (expected e.g. 2024-05-01T12:00:00Z)");
        }
        let num = |r: std::ops::Range<usize>| -> Result<i64, &'static str> {
            let mut v = 0i64;
            for &c in &b[r] {
                if !c.is_ascii_digit() {
                    return Err("expected a digit");
                }
                v = v * 10 + i64::from(c - b'0');
            }
            Ok(v)
        };
        if b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') || b[13] != b':' || b[16] != b':' {
            return Err("not RFC 3339 (expected YYYY-MM-DDTHH:MM:SS and an offset)");
        }
        let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
        let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
        if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
            return Err("date out of range");
        }
        if hour > 23 || minute > 59 || second > 60 {
            return Err("time of day out of range");
        }
        let mut i = 19;
        let mut millis = 0i64;
        if b[i] == b'.' {
            i += 1;
            let start = i;
            while i < b.len() && b[i].is_ascii_digit() {
                if i - start < 3 {
                    millis = millis * 10 + i64::from(b[i] - b'0');
                }
                i += 1;
            }
            if i == start {
                return Err("empty fraction of a second");
            }
            for _ in (i - start)..3 {
                millis *= 10;
            }
        }
        let offset_minutes = match b.get(i) {
            Some(b'Z' | b'z') if i + 1 == b.len() => 0,
            Some(&sign @ (b'+' | b'-')) if i + 6 == b.len() && b[i + 3] == b':' => {
                let (h, m) = (num(i + 1..i + 3)?, num(i + 4..i + 6)?);
                if h > 23 || m > 59 {
                    return Err("offset out of range");
                }
                let off = h * 60 + m;
                if sign == b'-' { -off } else { off }
            }
            _ => return Err("missing or malformed UTC offset (use Z or +HH:MM)"),
        };
        // Leap seconds fold into the next second, as most systems do.
        let secs =
            days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second - offset_minutes * 60;
        let ms = secs * 1000 + millis;
        if !(0..=MAX_MILLIS).contains(&ms) {
            return Err("before 1970 or after 9999");
        }
        Ok(Timestamp(ms))
    }
}

impl fmt::Display for Timestamp {
    /// RFC 3339 in UTC with milliseconds: `2024-05-01T12:00:00.000Z`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.0.div_euclid(1000);
        let ms = self.0.rem_euclid(1000);
        let (days, sod) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
        let (y, m, d) = civil_from_days(days);
        write!(f, "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{ms:03}Z", sod / 3600, sod / 60 % 60, sod % 60)
    }
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if is_leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
pub fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The inverse of [`days_from_civil`].
pub fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { yoe + era * 400 + 1 } else { yoe + era * 400 }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_known_instants() {
        assert_eq!(Timestamp::parse_rfc3339("1970-01-01T00:00:00Z"), Ok(Timestamp(0)));
        // 2001-09-09T01:46:40Z is the famous 1e9 seconds.
        assert_eq!(Timestamp::parse_rfc3339("2001-09-09T01:46:40Z"), Ok(Timestamp(1_000_000_000_000)));
        assert_eq!(Timestamp::parse_rfc3339("2001-09-09T03:46:40.5+02:00"), Ok(Timestamp(1_000_000_000_500)));
        assert_eq!(Timestamp::parse_rfc3339("2024-02-29T23:59:59.123456Z"), Ok(Timestamp(1_709_251_199_123)));
    }

    #[test]
    fn refuses_malformed() {
        for bad in [
            "2024-02-30T00:00:00Z",
            "2023-13-01T00:00:00Z",
            "2024-01-01T24:00:00Z",
            "2024-01-01T00:00:00",
            "2024-01-01 00:00",
            "1969-12-31T23:59:59Z",
            "yesterday at noon, UTC",
            "2024-01-01T00:00:00.Z",
        ] {
            assert!(Timestamp::parse_rfc3339(bad).is_err(), "{bad} should be refused");
        }
    }

    proptest! {
        #[test]
        fn display_round_trips(ms in 0i64..=MAX_MILLIS) {
            let t = Timestamp(ms);
            prop_assert_eq!(Timestamp::parse_rfc3339(&t.to_string()), Ok(t));
        }
    }
}
