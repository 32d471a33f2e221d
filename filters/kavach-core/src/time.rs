//! Timestamps: RFC 3339 in a fixed UTC offset, from the host clock.

use std::time::{SystemTime, UNIX_EPOCH};

use chrono::{DateTime, FixedOffset, SecondsFormat, Utc};

use crate::config::{ConfigError, FieldPath};

/// Parses a UTC offset written `+05:30`, `-08:00`, `Z` or `UTC`.
pub fn parse_offset(at: &FieldPath, text: &str) -> Result<FixedOffset, ConfigError> {
    let bad = || {
        at.error(format!(
            "{text:?} is not a UTC offset like \"+05:30\" or \"Z\""
        ))
    };
    let t = text.trim();
    if t.eq_ignore_ascii_case("z") || t.eq_ignore_ascii_case("utc") {
        return FixedOffset::east_opt(0).ok_or_else(bad);
    }
    let bytes = t.as_bytes();
    if bytes.len() != 6 || bytes[3] != b':' {
        return Err(bad());
    }
    let sign = match bytes[0] {
        b'+' => 1,
        b'-' => -1,
        _ => return Err(bad()),
    };
    let hours: i32 = t[1..3].parse().map_err(|_| bad())?;
    let minutes: i32 = t[4..6].parse().map_err(|_| bad())?;
    if hours > 23 || minutes > 59 {
        return Err(bad());
    }
    FixedOffset::east_opt(sign * (hours * 3600 + minutes * 60)).ok_or_else(bad)
}

/// Nanoseconds since the Unix epoch (0 for a clock before it).
pub fn unix_nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// `2026-11-26T05:37:10.123456+05:30`: microsecond precision, in the given offset.
pub fn rfc3339(t: SystemTime, offset: FixedOffset) -> String {
    let nanos = unix_nanos(t);
    let secs = i64::try_from(nanos / 1_000_000_000).unwrap_or(i64::MAX);
    let sub = u32::try_from(nanos % 1_000_000_000).unwrap_or(0);
    let utc: DateTime<Utc> = DateTime::from_timestamp(secs, sub).unwrap_or_default();
    utc.with_timezone(&offset)
        .to_rfc3339_opts(SecondsFormat::Micros, false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn ist_offset_formats_as_expected() {
        let ist = parse_offset(&FieldPath::root(), "+05:30").unwrap();
        let t = UNIX_EPOCH + Duration::from_micros(1_764_115_030_123_456);
        assert_eq!(rfc3339(t, ist), "2025-11-26T05:27:10.123456+05:30");
        let utc = parse_offset(&FieldPath::root(), "Z").unwrap();
        assert_eq!(rfc3339(t, utc), "2025-11-25T23:57:10.123456+00:00");
    }

    #[test]
    fn bad_offsets_are_refused_with_the_value() {
        for bad in ["IST", "+5:30", "+24:00", "05:30", "+05:60", ""] {
            let err = parse_offset(&FieldPath::root().field("utc_offset"), bad).unwrap_err();
            assert!(err.to_string().starts_with("utc_offset: "), "{err}");
        }
        assert!(parse_offset(&FieldPath::root(), "-08:00").is_ok());
    }

    #[test]
    fn a_clock_before_the_epoch_does_not_panic() {
        let t = UNIX_EPOCH - Duration::from_secs(10);
        assert_eq!(unix_nanos(t), 0);
        assert!(rfc3339(t, FixedOffset::east_opt(0).unwrap()).starts_with("1970-01-01"));
    }
}
