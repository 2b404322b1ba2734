//! [`Origin`]: the name of the file a policy came from, as `policy apply` sends it and the
//! control plane keeps it (in errors, `policy show` and the audit log).
//!
//! Pure: no I/O.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Longest origin, in bytes.
pub const MAX_ORIGIN_LEN: usize = 1024;

/// What a valid origin looks like, for error messages.
pub const ORIGIN_RULE: &str = "an origin is the policy file's name, such as \"policy.toml\" or \
                               \"/etc/wgmesh/policy.toml\": 1 to 1024 bytes without control \
                               characters";

/// The name of the file a policy came from: 1 to [`MAX_ORIGIN_LEN`] bytes without control
/// characters (so an error or an audit line that names it stays one line).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Origin(String);

/// Why a text is not an [`Origin`]; the message says what would be valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OriginError {
    /// The text is empty.
    #[error("the origin is empty; {ORIGIN_RULE}")]
    Empty,
    /// The text is longer than [`MAX_ORIGIN_LEN`] bytes.
    #[error("the origin is {len} bytes long; {ORIGIN_RULE}")]
    TooLong {
        /// Its length in bytes.
        len: usize,
    },
    /// The text holds a control character.
    #[error("the origin contains the control character {0:?}; {ORIGIN_RULE}")]
    Control(char),
}

impl Origin {
    /// The origin's text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Origin {
    type Err = OriginError;

    fn from_str(text: &str) -> Result<Self, OriginError> {
        if text.is_empty() {
            return Err(OriginError::Empty);
        }
        if text.len() > MAX_ORIGIN_LEN {
            return Err(OriginError::TooLong { len: text.len() });
        }
        if let Some(c) = text.chars().find(|c| c.is_control()) {
            return Err(OriginError::Control(c));
        }
        Ok(Self(text.to_owned()))
    }
}

impl TryFrom<String> for Origin {
    type Error = OriginError;

    fn try_from(text: String) -> Result<Self, OriginError> {
        text.parse()
    }
}

impl From<Origin> for String {
    fn from(origin: Origin) -> Self {
        origin.0
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_are_origins_and_control_characters_are_not() {
        for ok in [
            "policy.toml",
            "/etc/wgmesh/policy.toml",
            "my policy (v2).toml",
            "é.toml",
        ] {
            assert_eq!(ok.parse::<Origin>().unwrap().as_str(), ok);
        }
        assert_eq!("".parse::<Origin>(), Err(OriginError::Empty));
        let e = "a\nb".parse::<Origin>().unwrap_err();
        assert_eq!(e, OriginError::Control('\n'));
        assert!(e.to_string().contains("such as \"policy.toml\""), "{e}");
        let long = "x".repeat(MAX_ORIGIN_LEN + 1);
        assert!(matches!(
            long.parse::<Origin>(),
            Err(OriginError::TooLong { len }) if len == MAX_ORIGIN_LEN + 1
        ));
        assert!("x".repeat(MAX_ORIGIN_LEN).parse::<Origin>().is_ok());
        // Deserialising checks the rule too.
        assert!(serde_json::from_str::<Origin>("\"a\\u0007\"").is_err());
        let o: Origin = serde_json::from_str("\"seed.toml\"").unwrap();
        assert_eq!(serde_json::to_string(&o).unwrap(), "\"seed.toml\"");
    }
}
