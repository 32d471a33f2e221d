//! Timestamps: RFC 3339 in a fixed UTC offset, from the host clock.

use std::time::{SystemTime, UNIX_EPOCH};

use std::fmt::Write;

use chrono::FixedOffset;

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
///
/// Written by hand (days-to-civil conversion) because it runs on every request: this is several
/// times cheaper in wasm than going through chrono's time-zone machinery.
pub fn rfc3339(t: SystemTime, offset: FixedOffset) -> String {
    let nanos = unix_nanos(t);
    let offset_secs = i64::from(offset.local_minus_utc());
    let local = i64::try_from(nanos / 1_000_000_000).unwrap_or(i64::MAX / 2) + offset_secs;
    let micros = (nanos % 1_000_000_000) / 1000;
    let days = local.div_euclid(86_400);
    let secs_of_day = local.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    let mut out = String::with_capacity(32);
    let sign = if offset_secs < 0 { '-' } else { '+' };
    let off = offset_secs.unsigned_abs();
    let _ = write!(
        out,
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{micros:06}{sign}{:02}:{:02}",
        secs_of_day / 3600,
        secs_of_day % 3600 / 60,
        secs_of_day % 60,
        off / 3600,
        off % 3600 / 60
    );
    out
}

/// (year, month, day) of a day count since 1970-01-01 (proleptic Gregorian calendar).
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
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
    fn the_hand_written_formatter_agrees_with_chrono() {
        use chrono::{DateTime, SecondsFormat, Utc};
        let offsets = ["+05:30", "Z", "-08:00", "+14:00", "-00:30"];
        // Leap days, year ends, the epoch, far future.
        let mut instants: Vec<u64> =
            vec![0, 951_782_400, 951_868_799, 1_709_164_800, 4_102_444_799];
        let mut x: u64 = 12345;
        for _ in 0..2000 {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            instants.push(x % 4_102_444_800);
        }
        for o in offsets {
            let offset = parse_offset(&FieldPath::root(), o).unwrap();
            for secs in &instants {
                let t = UNIX_EPOCH + Duration::new(*secs, 123_456_789);
                let expected =
                    DateTime::<Utc>::from_timestamp(i64::try_from(*secs).unwrap(), 123_456_789)
                        .unwrap()
                        .with_timezone(&offset)
                        .to_rfc3339_opts(SecondsFormat::Micros, false);
                assert_eq!(rfc3339(t, offset), expected, "{secs} {o}");
            }
        }
    }

    #[test]
    fn a_clock_before_the_epoch_does_not_panic() {
        let t = UNIX_EPOCH - Duration::from_secs(10);
        assert_eq!(unix_nanos(t), 0);
        assert!(rfc3339(t, FixedOffset::east_opt(0).unwrap()).starts_with("1970-01-01"));
    }
}
