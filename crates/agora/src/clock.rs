//! Wall-clock time as the wire format carries it.

use std::time::{SystemTime, UNIX_EPOCH};

/// Now, in Unix microseconds (0 if the clock is before 1970, which only a broken host has).
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// Now, in Unix milliseconds.
pub fn now_ms() -> u64 {
    now_us() / 1000
}
