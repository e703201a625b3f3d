//! UTC calendar fields of a point in time, for the timestamps the engine writes (SigV4 dates,
//! RFC 3339 in status records). No time-zone database: UTC only.
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

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
}
