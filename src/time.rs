//! UTC calendar fields of a point in time, for the timestamps the engine writes (SigV4 dates,
//! RFC 3339 in status records and control state), and RFC 3339 read back. No time-zone
//! database: UTC only.
//!
//! May call: nothing else in the crate.

use std::time::{SystemTime, UNIX_EPOCH};

/// A time broken into UTC calendar fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Utc {
    pub year: i64,
    pub month: i64,
    pub day: i64,
    pub hour: i64,
    pub minute: i64,
    pub second: i64,
    pub millis: i64,
}

impl Utc {
    /// Times before 1970 are taken as the epoch.
    pub fn of(t: SystemTime) -> Self {
        let ms = t
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        let (secs, millis) = (ms.div_euclid(1000), ms.rem_euclid(1000));
        let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
        // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        Self {
            year: yoe + era * 400 + i64::from(month <= 2),
            month,
            day,
            hour: rem / 3600,
            minute: rem / 60 % 60,
            second: rem % 60,
            millis,
        }
    }

    /// Days since 1970-01-01.
    pub fn days(t: SystemTime) -> u64 {
        t.duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() / 86_400)
            .unwrap_or(0)
    }

    /// The point in time these fields name (fields out of range are not checked).
    pub fn to_system_time(&self) -> SystemTime {
        // Days since 1970-01-01 from a civil date (Howard Hinnant's algorithm).
        let y = if self.month <= 2 {
            self.year - 1
        } else {
            self.year
        };
        let era = y.div_euclid(400);
        let yoe = y - era * 400;
        let mp = (self.month + 9) % 12;
        let doy = (153 * mp + 2) / 5 + self.day - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        let days = era * 146_097 + doe - 719_468;
        let secs = days * 86_400 + self.hour * 3600 + self.minute * 60 + self.second;
        let ms = (secs * 1000 + self.millis).max(0) as u64;
        UNIX_EPOCH + std::time::Duration::from_millis(ms)
    }
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ`.
pub fn rfc3339(t: SystemTime) -> String {
    let u = Utc::of(t);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        u.year, u.month, u.day, u.hour, u.minute, u.second, u.millis
    )
}

/// Parses `YYYY-MM-DDTHH:MM:SS[.fff]Z` (UTC only).
pub fn parse_rfc3339(s: &str) -> Option<SystemTime> {
    let b = s.as_bytes();
    // ASCII only: the slicing below is by byte (a forged record may carry anything).
    if !s.is_ascii()
        || b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || !s.ends_with('Z')
    {
        return None;
    }
    let n = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let frac = s[19..s.len() - 1].strip_prefix('.').unwrap_or("");
    if s.len() > 20 && frac.is_empty() || !frac.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let millis = format!("{:0<3}", &frac[..frac.len().min(3)]).parse().ok()?;
    let u = Utc {
        year: n(0..4)?,
        month: n(5..7)?,
        day: n(8..10)?,
        hour: n(11..13)?,
        minute: n(14..16)?,
        second: n(17..19)?,
        millis,
    };
    let valid = (1..=12).contains(&u.month) && (1..=31).contains(&u.day) && u.hour < 24;
    (valid && u.minute < 60 && u.second < 61).then(|| u.to_system_time())
}

/// Parses an HTTP date, `Thu, 01 Jan 2026 00:00:00 GMT` (IMF-fixdate, as S3 sends
/// `Last-Modified`).
pub fn parse_http_date(s: &str) -> Option<SystemTime> {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let mut parts = s.split_ascii_whitespace();
    let (_weekday, day, month, year, clock, zone) = (
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
    );
    let month = MONTHS.iter().position(|m| *m == month)? + 1;
    if zone != "GMT" || parts.next().is_some() {
        return None;
    }
    let iso = format!("{year:0>4}-{month:02}-{day:0>2}T{clock}Z");
    parse_rfc3339(&iso)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn http_dates_read_as_their_rfc3339_twins() {
        let a = parse_http_date("Thu, 01 Jan 2026 10:20:30 GMT");
        assert_eq!(a, parse_rfc3339("2026-01-01T10:20:30Z"));
        assert!(a.is_some());
        assert!(parse_http_date("Thu, 01 Foo 2026 10:20:30 GMT").is_none());
        assert!(parse_http_date("Thu, 01 Jan 2026 10:20:30 CET").is_none());
        assert!(parse_http_date("").is_none());
    }

    #[test]
    fn leap_days_and_centuries() {
        // Expected values from `date -u -d @SECS`.
        for (secs, want) in [
            (0u64, (1970, 1, 1, 0, 0, 0)),
            (951_782_400, (2000, 2, 29, 0, 0, 0)),
            (1_709_164_800, (2024, 2, 29, 0, 0, 0)),
            (4_102_444_800, (2100, 1, 1, 0, 0, 0)),
            (4_107_542_399, (2100, 2, 28, 23, 59, 59)),
        ] {
            let u = Utc::of(UNIX_EPOCH + Duration::from_secs(secs));
            assert_eq!(
                (u.year, u.month, u.day, u.hour, u.minute, u.second),
                want,
                "{secs}"
            );
        }
        let u = Utc::of(UNIX_EPOCH + Duration::from_millis(1_369_353_600_123));
        assert_eq!((u.year, u.month, u.day, u.millis), (2013, 5, 24, 123));
    }
    #[test]
    fn rfc3339_round_trip() {
        let t = parse_rfc3339("2026-11-25T10:00:00.250Z").unwrap();
        let ms = t.duration_since(UNIX_EPOCH).unwrap().as_millis();
        assert_eq!(ms, 1_795_600_800_250);
        assert_eq!(rfc3339(t), "2026-11-25T10:00:00.250Z");
        let whole = parse_rfc3339("2026-11-25T10:00:00Z").unwrap();
        assert_eq!(t.duration_since(whole).unwrap(), Duration::from_millis(250));
        for bad in [
            "yesterday",
            "2026-11-25T10:00:00",
            "2026-13-01T00:00:00Z",
            "2026-11-25T10:00:00.Z",
            "2024-01-01T00:00:0éZ",
            "2024-01-01T00:00:00.é0Z",
        ] {
            assert!(parse_rfc3339(bad).is_none(), "{bad}");
        }
        for ms in [
            0u64,
            951_782_400_000,
            1_709_164_800_999,
            4_102_444_800_000,
            4_107_542_399_000,
        ] {
            let t = UNIX_EPOCH + Duration::from_millis(ms);
            assert_eq!(parse_rfc3339(&rfc3339(t)), Some(t), "{}", rfc3339(t));
        }
    }
}
