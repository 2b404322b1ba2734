//! Host names: the rule every part of wgmesh checks a host's name by (agent.toml's `name`, a
//! join's name, the admin CLI's `node remove NAME`).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::MAX_NAME_LEN;

/// A host name: 1 to 63 characters from `A-Z a-z 0-9 . _ -` (the agent.toml rule).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct HostName(String);

/// Why a string is not a [`HostName`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid host name: use 1 to 63 characters from A-Z, a-z, 0-9, '.', '_' and '-'")]
pub struct HostNameError;

impl HostName {
    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for HostName {
    type Err = HostNameError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let valid = !s.is_empty()
            && s.len() <= MAX_NAME_LEN
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        if valid {
            Ok(Self(s.to_owned()))
        } else {
            Err(HostNameError)
        }
    }
}

impl TryFrom<String> for HostName {
    type Error = HostNameError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<HostName> for String {
    fn from(name: HostName) -> Self {
        name.0
    }
}

impl std::borrow::Borrow<str> for HostName {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for HostName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
