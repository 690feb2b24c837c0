//! Wall-clock helpers without a date crate: RFC 3339 timestamps (as in `creationTimestamp`)
//! and kubectl-style short ages (`45s`, `12m`, `3h`, `2d`).

use std::time::{SystemTime, UNIX_EPOCH};

pub fn unix_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

/// `2024-05-01T12:34:56Z` for a Unix time.
pub fn rfc3339(unix: i64) -> String {
    let (days, secs) = (unix.div_euclid(86_400), unix.rem_euclid(86_400));
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// Parses the `YYYY-MM-DDTHH:MM:SSZ` form this server writes (fractions and offsets are
/// not produced by it, so they are not accepted).
pub fn parse_rfc3339(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    if b.len() != 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[19] != b'Z' {
        return None;
    }
    let field = |range: std::ops::Range<usize>| text.get(range)?.parse::<i64>().ok();
    let days = days_from_civil(field(0..4)?, field(5..7)?, field(8..10)?);
    Some(days * 86_400 + field(11..13)? * 3600 + field(14..16)? * 60 + field(17..19)?)
}

/// `2024-05-01T12:34:56.123456Z`, the `MicroTime` form (Lease renewTime).
pub fn rfc3339_micros(unix: i64, micros: u32) -> String {
    let seconds = rfc3339(unix);
    format!("{}.{micros:06}Z", &seconds[..seconds.len() - 1])
}

/// Parses the `MicroTime` form: whole seconds and six fraction digits.
pub fn parse_rfc3339_micros(text: &str) -> Option<(i64, u32)> {
    let (seconds, fraction) = text.strip_suffix('Z')?.split_once('.')?;
    if fraction.len() != 6 || !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((parse_rfc3339(&format!("{seconds}Z"))?, fraction.parse().ok()?))
}

/// kubectl's short human duration for the Age column.
pub fn short_age(seconds: i64) -> String {
    match seconds {
        s if s < 0 => "0s".into(),
        s if s < 120 => format!("{s}s"),
        s if s < 60 * 60 => format!("{}m", s / 60),
        s if s < 48 * 3600 => format!("{}h", s / 3600),
        s if s < 365 * 2 * 86_400 => format!("{}d", s / 86_400),
        s => format!("{}y", s / (365 * 86_400)),
    }
}

// Howard Hinnant's days<->civil algorithms (proleptic Gregorian calendar).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn micro_times_round_trip_and_other_forms_are_refused() {
        let text = "2024-05-01T10:00:00.012345Z";
        let (seconds, micros) = parse_rfc3339_micros(text).expect("a MicroTime");
        assert_eq!((seconds, micros), (parse_rfc3339("2024-05-01T10:00:00Z").unwrap(), 12_345));
        assert_eq!(rfc3339_micros(seconds, micros), text);
        for bad in
            ["2024-05-01T10:00:00Z", "2024-05-01T10:00:00.123Z", "2024-05-01T10:00:00.12345xZ"]
        {
            assert_eq!(parse_rfc3339_micros(bad), None, "{bad}");
        }
    }
}
