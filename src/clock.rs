//! Wall-clock time in unix seconds: the unit of JWT claims, certificate dates and cache
//! ages. One place, so every part of the proxy reads the same clock the same way.

use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds since the epoch (0 for a clock set before it).
pub fn unix_seconds() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |elapsed| elapsed.as_secs())
}

/// The same, signed, as JWT claims and certificate validity are.
pub fn unix_now() -> i64 {
    i64::try_from(unix_seconds()).unwrap_or(i64::MAX)
}
