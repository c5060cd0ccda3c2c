//! UTC calendar periods from the host clock (milliseconds since the Unix epoch): the day,
//! ISO week and month keys that caps and frequencies count in, and RFC 3339 times.

const MS_PER_DAY: i64 = 86_400_000;

/// A civil UTC date.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Date {
    pub year: i64,
    pub month: u32,
    pub day: u32,
}

/// Days since 1970-01-01 to a civil date (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> Date {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    Date { year, month, day }
}

/// A civil date to days since 1970-01-01 (`days_from_civil`).
fn days_from_civil(date: Date) -> i64 {
    let y = date.year - i64::from(date.month <= 2);
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(date.month);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + i64::from(date.day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn days(ms: i64) -> i64 {
    ms.div_euclid(MS_PER_DAY)
}

pub fn date(ms: i64) -> Date {
    civil_from_days(days(ms))
}

/// `YYYY-MM-DD`, the UTC day.
pub fn day_key(ms: i64) -> String {
    let d = date(ms);
    format!("{:04}-{:02}-{:02}", d.year, d.month, d.day)
}

/// `YYYY-MM`, the UTC month.
pub fn month_key(ms: i64) -> String {
    let d = date(ms);
    format!("{:04}-{:02}", d.year, d.month)
}

/// `YYYY-Www`, the ISO 8601 week (Monday to Sunday, UTC; week 1 holds the first Thursday).
pub fn week_key(ms: i64) -> String {
    let day = days(ms);
    // 1970-01-01 was a Thursday: weekday 1 = Monday … 7 = Sunday.
    let weekday = (day + 3).rem_euclid(7) + 1;
    let thursday = day - weekday + 4;
    let year = civil_from_days(thursday).year;
    let jan1 = days_from_civil(Date {
        year,
        month: 1,
        day: 1,
    });
    let week = (thursday - jan1) / 7 + 1;
    format!("{year:04}-W{week:02}")
}

/// RFC 3339 in UTC with milliseconds, e.g. `2024-05-01T12:30:00.250Z`.
pub fn rfc3339(ms: i64) -> String {
    let d = date(ms);
    let in_day = ms.rem_euclid(MS_PER_DAY);
    let (h, m, s, milli) = (
        in_day / 3_600_000,
        in_day / 60_000 % 60,
        in_day / 1000 % 60,
        in_day % 1000,
    );
    format!(
        "{:04}-{:02}-{:02}T{h:02}:{m:02}:{s:02}.{milli:03}Z",
        d.year, d.month, d.day
    )
}

#[cfg(test)]
pub(crate) fn ms_of(year: i64, month: u32, day: u32, hour: i64, minute: i64) -> i64 {
    days_from_civil(Date { year, month, day }) * MS_PER_DAY + hour * 3_600_000 + minute * 60_000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn day_boundaries_are_utc_midnight() {
        let last = ms_of(2024, 2, 29, 23, 59) + 59_999;
        assert_eq!(day_key(last), "2024-02-29");
        assert_eq!(day_key(last + 1), "2024-03-01");
        assert_eq!(month_key(last), "2024-02");
        assert_eq!(month_key(last + 1), "2024-03");
        assert_eq!(day_key(0), "1970-01-01");
        assert_eq!(day_key(-1), "1969-12-31");
    }

    #[test]
    fn round_trips_days() {
        for d in [-800_000, -1, 0, 1, 10_957, 19_782, 2_932_896] {
            assert_eq!(days_from_civil(civil_from_days(d)), d);
        }
    }

    #[test]
    fn iso_weeks() {
        // 2024-12-30 (Monday) belongs to 2025-W01; 2021-01-03 (Sunday) to 2020-W53.
        assert_eq!(week_key(ms_of(2024, 12, 29, 23, 59)), "2024-W52");
        assert_eq!(week_key(ms_of(2024, 12, 30, 0, 0)), "2025-W01");
        assert_eq!(week_key(ms_of(2021, 1, 3, 12, 0)), "2020-W53");
        assert_eq!(week_key(ms_of(2021, 1, 4, 0, 0)), "2021-W01");
        // A week runs Monday 00:00 to Sunday 23:59:59.999 UTC.
        assert_eq!(week_key(ms_of(2024, 5, 6, 0, 0)), "2024-W19");
        assert_eq!(week_key(ms_of(2024, 5, 12, 23, 59)), "2024-W19");
        assert_eq!(week_key(ms_of(2024, 5, 13, 0, 0)), "2024-W20");
        assert_eq!(week_key(ms_of(2024, 5, 5, 23, 59)), "2024-W18");
    }

    #[test]
    fn formats_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            rfc3339(ms_of(2024, 5, 1, 12, 30) + 250),
            "2024-05-01T12:30:00.250Z"
        );
    }
}
