//! The wall clock as unix seconds: the one place the control plane's server and the CLI read
//! it (the pure modules take the time as an argument).

use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds since the unix epoch; 0 if the clock is set before it.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
