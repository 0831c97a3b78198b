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

/// Whether `text` is an RFC 3339 date-time (`YYYY-MM-DDTHH:MM:SS[.f](Z|±HH:MM)`).
///
/// Checked on every timestamp field of every event, so it looks at bytes and
/// never allocates; it accepts lower-case `t`/`z` as RFC 3339 does.
pub fn is_rfc3339(text: &[u8]) -> bool {
    fn digits(b: &[u8]) -> bool {
        b.iter().all(u8::is_ascii_digit)
    }
    if text.len() < 20 {
        return false;
    }
    let (date, rest) = text.split_at(10);
    if !(digits(&date[0..4])
        && date[4] == b'-'
        && digits(&date[5..7])
        && date[7] == b'-'
        && digits(&date[8..10]))
    {
        return false;
    }
    if !matches!(rest[0], b'T' | b't' | b' ') {
        return false;
    }
    let time = &rest[1..];
    if time.len() < 9
        || !(digits(&time[0..2])
            && time[2] == b':'
            && digits(&time[3..5])
            && time[5] == b':'
            && digits(&time[6..8]))
    {
        return false;
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
        [b'+' | b'-', h1, h2, b':', m1, m2] => digits(&[*h1, *h2, *m1, *m2]),
        _ => false,
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
}
