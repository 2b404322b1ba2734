//! Durations as people write them on the command line and in `control.toml`: `90s`, `15m`,
//! `1h`, `7d`, or a plain number of seconds ([`parse_duration`]). The one parser of `--ttl`,
//! `--grace`, `key_rotation_interval` and `key_rotation_grace`. Pure.

use std::num::ParseIntError;

/// Why a text is not a duration. `Display` is the message printed after the option or field
/// (`--ttl: `, `control.key_rotation_grace: `).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    /// The unit after the number is not `s`, `m`, `h` or `d`.
    #[error("{text:?} is not a duration; use a number with s, m, h or d, such as 1h")]
    Unit {
        /// The text given, trimmed.
        text: String,
    },
    /// The number before the unit is missing or does not fit in 64 bits.
    #[error("{text:?} is not a duration; use a number with s, m, h or d, such as 1h")]
    Number {
        /// The text given, trimmed.
        text: String,
        /// Why the digits are not a number.
        #[source]
        source: ParseIntError,
    },
    /// The duration is zero.
    #[error("the duration must be at least 1s")]
    Zero,
    /// The duration in seconds does not fit in 64 bits.
    #[error("{text:?} is too long")]
    TooLong {
        /// The text given, trimmed.
        text: String,
    },
}

/// Parses a duration such as `90s`, `15m`, `1h`, `7d` or a plain number of seconds, into
/// seconds (at least 1).
pub fn parse_duration(s: &str) -> Result<u64, DurationError> {
    let s = s.trim();
    let (digits, unit) = s
        .find(|c: char| !c.is_ascii_digit())
        .map_or((s, ""), |i| s.split_at(i));
    let multiplier = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => return Err(DurationError::Unit { text: s.to_owned() }),
    };
    let n: u64 = digits.parse().map_err(|source| DurationError::Number {
        text: s.to_owned(),
        source,
    })?;
    match n.checked_mul(multiplier) {
        Some(0) => Err(DurationError::Zero),
        Some(secs) => Ok(secs),
        None => Err(DurationError::TooLong { text: s.to_owned() }),
    }
}
