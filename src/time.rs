//! Date-time parsing and formatting shared by config, state and records.

use chrono::{DateTime, NaiveDate, NaiveDateTime, SecondsFormat, TimeZone, Utc};

/// Parses the date-time forms users and older taps write: RFC 3339 with an
/// offset, a plain `YYYY-MM-DD` (midnight UTC), or a date-time without an
/// offset (`YYYY-MM-DDTHH:MM:SS[.fff]`, also with a space), taken as UTC.
/// The last form is what the Python tap-fullstory 1.x wrote into its state.
pub fn parse_datetime(text: &str) -> Option<DateTime<Utc>> {
    let text = text.trim();
    if let Ok(dt) = DateTime::parse_from_rfc3339(text) {
        return Some(dt.with_timezone(&Utc));
    }
    if let Ok(date) = NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        return date.and_hms_opt(0, 0, 0).map(|n| Utc.from_utc_datetime(&n));
    }
    for fmt in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"] {
        if let Ok(naive) = NaiveDateTime::parse_from_str(text, fmt) {
            return Some(Utc.from_utc_datetime(&naive));
        }
    }
    None
}

/// RFC 3339 in UTC with a `Z`, to the second when there is no fraction.
pub fn format_rfc3339(dt: DateTime<Utc>) -> String {
    dt.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// RFC 3339 in UTC with microseconds, the form Singer's `time_extracted` uses.
pub fn format_micros(dt: DateTime<Utc>) -> String {
    dt.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// How far ahead of our clock a server's (or a state's) instant may be before
/// it is treated as impossible: clocks drift, but bundles are published only
/// after they end.
pub(crate) const CLOCK_SKEW_SECS: i64 = 3600;

/// A unix timestamp in seconds as a UTC date-time.
pub fn from_unix(secs: i64) -> Option<DateTime<Utc>> {
    Utc.timestamp_opt(secs, 0).single()
}

/// Whether `text` is an RFC 3339 date-time (`YYYY-MM-DDTHH:MM:SS[.f](Z|±HH:MM)`)
/// that names a real instant: month 1-12, a day the month has (leap years
/// included), hour 0-23, minute and second 0-59, offset under 24 hours, year
/// 1 or later. Leap second `:60` and year 0 are refused because Python's
/// `datetime` (and so most loaders) cannot hold them.
///
/// Checked on every timestamp field of every event, so it looks at bytes and
/// never allocates; it accepts lower-case `t`/`z` as RFC 3339 does.
pub fn is_rfc3339(text: &[u8]) -> bool {
    /// The two- or four-digit number at `b`, or `None` if any byte is not a digit.
    fn num(b: &[u8]) -> Option<u32> {
        b.iter().try_fold(0u32, |n, &d| {
            d.is_ascii_digit().then(|| n * 10 + u32::from(d - b'0'))
        })
    }
    if text.len() < 20 || text[4] != b'-' || text[7] != b'-' {
        return false;
    }
    let (Some(year), Some(month), Some(day)) =
        (num(&text[0..4]), num(&text[5..7]), num(&text[8..10]))
    else {
        return false;
    };
    if year == 0 || !(1..=days_in_month(year, month)).contains(&day) {
        return false;
    }
    if !matches!(text[10], b'T' | b't' | b' ') {
        return false;
    }
    let time = &text[11..];
    if time.len() < 9 || time[2] != b':' || time[5] != b':' {
        return false;
    }
    match (num(&time[0..2]), num(&time[3..5]), num(&time[6..8])) {
        (Some(0..=23), Some(0..=59), Some(0..=59)) => {}
        _ => return false,
    }
    let mut tail = &time[8..];
    if tail.first() == Some(&b'.') {
        let frac = tail[1..].iter().take_while(|b| b.is_ascii_digit()).count();
        if frac == 0 {
            return false;
        }
        tail = &tail[1 + frac..];
    }
    match tail {
        [b'Z' | b'z'] => true,
        [b'+' | b'-', h @ .., b':', m1, m2] if h.len() == 2 => {
            matches!((num(h), num(&[*m1, *m2])), (Some(0..=23), Some(0..=59)))
        }
        _ => false,
    }
}

/// Days in `month` of `year` (proleptic Gregorian); 0 for a month that does not exist.
fn days_in_month(year: u32, month: u32) -> u32 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if year.is_multiple_of(4) && (!year.is_multiple_of(100) || year.is_multiple_of(400)) => {
            29
        }
        2 => 28,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_accepted_forms() {
        let want = Utc.with_ymd_and_hms(2024, 3, 1, 0, 0, 0).unwrap();
        assert_eq!(parse_datetime("2024-03-01"), Some(want));
        assert_eq!(parse_datetime("2024-03-01T00:00:00Z"), Some(want));
        assert_eq!(parse_datetime("2024-03-01T01:00:00+01:00"), Some(want));
        assert_eq!(parse_datetime("2024-03-01T00:00:00"), Some(want));
        assert_eq!(parse_datetime("2024-03-01T00:00:00.000000"), Some(want));
        assert_eq!(parse_datetime("2024-03-01 00:00:00"), Some(want));
        assert_eq!(parse_datetime("yesterday"), None);
        assert_eq!(parse_datetime("2024-13-01"), None);
    }

    #[test]
    fn formats_in_utc() {
        let dt = Utc.with_ymd_and_hms(2024, 3, 1, 12, 30, 5).unwrap();
        assert_eq!(format_rfc3339(dt), "2024-03-01T12:30:05Z");
        assert_eq!(format_micros(dt), "2024-03-01T12:30:05.000000Z");
    }

    #[test]
    fn recognises_rfc3339() {
        for ok in [
            "2020-08-27T06:20:26.900Z",
            "2020-08-27T06:20:26Z",
            "2020-08-27T06:20:26.123456789+02:00",
            "0001-01-01T00:00:00Z",
        ] {
            assert!(is_rfc3339(ok.as_bytes()), "{ok}");
        }
        for bad in [
            "2020-08-27",
            "2020-08-27T06:20:26",
            "2020-08-27T06:20:26.Z",
            "2020/08/27T06:20:26Z",
            "2020-08-27T06:20:26+0200",
            "",
        ] {
            assert!(!is_rfc3339(bad.as_bytes()), "{bad}");
        }
    }

    #[test]
    fn impossible_dates_are_not_rfc3339() {
        for ok in [
            "2024-02-29T23:59:59Z",
            "2000-02-29T00:00:00Z",
            "2023-12-31T00:00:00.5-23:59",
            "2023-01-31T12:00:00+14:00",
        ] {
            assert!(is_rfc3339(ok.as_bytes()), "{ok}");
        }
        for bad in [
            "2023-13-45T99:99:99Z",
            "2023-00-10T00:00:00Z",
            "2023-01-00T00:00:00Z",
            "2023-02-29T00:00:00Z",
            "1900-02-29T00:00:00Z",
            "2023-04-31T00:00:00Z",
            "2023-01-01T24:00:00Z",
            "2023-01-01T00:60:00Z",
            "2023-01-01T00:00:60Z",
            "2023-01-01T00:00:00+24:00",
            "2023-01-01T00:00:00+01:60",
            "0000-01-01T00:00:00Z",
            "2023-01-01T00:00:00+1:000",
        ] {
            assert!(!is_rfc3339(bad.as_bytes()), "{bad}");
        }
    }
}
