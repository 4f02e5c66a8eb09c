//! `consume --from`: where each partition starts.
//!
//! `earliest`, `latest`, an offset, `-N` (N records before the end of each
//! partition), `-DURATION` (records stamped at most that long ago: a number
//! and a unit, `-500ms -10s -30m -1h -2d`), `@UNIX_MS` or `@RFC3339`
//! (`@2026-12-04T10:00:00Z`, `@2026-12-04T11:00:00.5+01:00`). A bare `-N`
//! counts records and a unit makes it a time, so the two never clash.

/// Where `consume` starts, before it is resolved per partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartAt {
    Earliest,
    Latest,
    Offset(u64),
    /// This many records before the end (clamped to the earliest).
    FromEnd(u64),
    /// The first record stamped at or after this time.
    TimestampMs(i64),
    /// The first record stamped at or after now minus this.
    AgoMs(i64),
}

const SYNTAX: &str = "earliest, latest, an offset, -N (records before the end), -DURATION (-10s, -30m, -1h, -2d), @UNIX_MS or @RFC3339";

impl std::str::FromStr for StartAt {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("--from must be {SYNTAX}, not {s:?}");
        match s {
            "earliest" => Ok(StartAt::Earliest),
            "latest" => Ok(StartAt::Latest),
            _ => {
                if let Some(at) = s.strip_prefix('@') {
                    // Negative timestamps have no encoding: the wire uses them for earliest and latest.
                    let ms = if at.bytes().all(|b| b.is_ascii_digit()) { at.parse::<i64>().ok() } else { rfc3339_ms(at) };
                    return ms.filter(|&ms| ms >= 0).map(StartAt::TimestampMs).ok_or_else(bad);
                }
                if let Some(back) = s.strip_prefix('-') {
                    if let Ok(n) = back.parse::<u64>() {
                        return Ok(StartAt::FromEnd(n));
                    }
                    return duration_ms(back).map(StartAt::AgoMs).ok_or_else(bad);
                }
                s.parse::<u64>().map(StartAt::Offset).map_err(|_| bad())
            }
        }
    }
}

/// `10s`, `500ms`, `30m`, `1h`, `2d` in milliseconds.
fn duration_ms(s: &str) -> Option<i64> {
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    let (n, unit) = s.split_at(digits);
    let n: i64 = n.parse().ok()?;
    let unit_ms = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return None,
    };
    n.checked_mul(unit_ms)
}

/// An RFC 3339 date-time (`2026-12-04T10:00:00Z`, optional fraction, `Z` or
/// `+HH:MM`/`-HH:MM`) as ms since the epoch. Hand-written: twenty lines
/// beside a time crate the broker does not otherwise need.
pub fn rfc3339_ms(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    let num = |from: usize, len: usize| -> Option<i64> {
        let part = s.get(from..from + len)?;
        part.bytes().all(|c| c.is_ascii_digit()).then(|| part.parse().ok())?
    };
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (year, month, day) = (num(0, 4)?, num(5, 2)?, num(8, 2)?);
    let (hour, minute, second) = (num(11, 2)?, num(14, 2)?, num(17, 2)?);
    if !(1..=12).contains(&month) || !(1..=days_in_month(year, month)).contains(&day) || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let mut at = 19;
    let mut frac_ms = 0;
    if b[at] == b'.' {
        let digits = b[at + 1..].iter().take_while(|c| c.is_ascii_digit()).count();
        if digits == 0 {
            return None;
        }
        // Milliseconds from the first three digits; finer digits are dropped.
        frac_ms = (0..3).map(|i| b.get(at + 1 + i).filter(|_| i < digits).map_or(0, |&d| i64::from(d - b'0'))).fold(0, |a, d| a * 10 + d);
        at += 1 + digits;
    }
    let offset_min = match b.get(at..)? {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), _, _, b':', _, _] => {
            let (h, m) = (num(at + 1, 2)?, num(at + 4, 2)?);
            if h > 23 || m > 59 {
                return None;
            }
            if *sign == b'+' { h * 60 + m } else { -(h * 60 + m) }
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + hour * 3_600 + minute * 60 + second.min(59) - offset_min * 60;
    Some(secs * 1_000 + frac_ms)
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves: --from parses each of its forms, and -N and -DURATION do not clash.
    #[test]
    fn from_parses_every_form() {
        let p = |s: &str| s.parse::<StartAt>();
        assert_eq!(p("earliest"), Ok(StartAt::Earliest));
        assert_eq!(p("latest"), Ok(StartAt::Latest));
        assert_eq!(p("42"), Ok(StartAt::Offset(42)));
        assert_eq!(p("-10"), Ok(StartAt::FromEnd(10)));
        assert_eq!(p("-0"), Ok(StartAt::FromEnd(0)));
        assert_eq!(p("-10s"), Ok(StartAt::AgoMs(10_000)));
        assert_eq!(p("-500ms"), Ok(StartAt::AgoMs(500)));
        assert_eq!(p("-30m"), Ok(StartAt::AgoMs(1_800_000)));
        assert_eq!(p("-1h"), Ok(StartAt::AgoMs(3_600_000)));
        assert_eq!(p("-2d"), Ok(StartAt::AgoMs(172_800_000)));
        assert_eq!(p("@1700000000000"), Ok(StartAt::TimestampMs(1_700_000_000_000)));
        assert_eq!(p("@2026-12-04T10:00:00Z"), Ok(StartAt::TimestampMs(1_796_378_400_000)));
        for bad in ["-1x", "-h", "@-5", "@yesterday", "soon", "", "-", "1.5"] {
            assert!(p(bad).unwrap_err().contains("--from must be"), "{bad:?} was accepted");
        }
    }

    // Proves: RFC 3339 times convert as `date -d ... +%s%3N` gives them,
    // with fractions, offsets, leap days, and refuses impossible dates.
    #[test]
    fn rfc3339_forms() {
        assert_eq!(rfc3339_ms("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(rfc3339_ms("2026-12-04T10:00:00Z"), Some(1_796_378_400_000));
        assert_eq!(rfc3339_ms("2026-12-04T11:00:00+01:00"), Some(1_796_378_400_000));
        assert_eq!(rfc3339_ms("2026-12-04T09:30:00-00:30"), Some(1_796_378_400_000));
        assert_eq!(rfc3339_ms("2026-12-04T10:00:00.5Z"), Some(1_796_378_400_500));
        assert_eq!(rfc3339_ms("2026-12-04t10:00:00.123456z"), Some(1_796_378_400_123));
        assert_eq!(rfc3339_ms("2024-02-29T00:00:00Z"), Some(1_709_164_800_000));
        for bad in ["2023-02-29T00:00:00Z", "2026-13-01T00:00:00Z", "2026-12-04T10:00:00", "2026-12-04T10:00:00.Z", "2026-12-04T24:00:00Z"]
        {
            assert_eq!(rfc3339_ms(bad), None, "{bad}");
        }
    }
}
