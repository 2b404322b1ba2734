//! Host names: the rule every part of wgmesh checks a host's name by (agent.toml's `name`, a
//! join's name, the admin CLI's `node remove NAME`): [`check_host_name`] is the rule,
//! [`HostName`] a string that passed it.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Longest accepted host or peer name.
pub const MAX_NAME_LEN: usize = 63;

/// The host-name rule in words, for error messages.
pub(crate) const NAME_RULE: &str = "use 1 to 63 characters from A-Z, a-z, 0-9, '.', '_' and '-'";

/// What a valid host name looks like, in agent.toml's messages for a value of the wrong type.
pub(crate) const NAME_EXPECTED: &str = "a string of 1 to 63 characters from A-Z a-z 0-9 . _ -";

/// Which part of the host-name rule a string breaks (the first one, in the order empty,
/// characters, length).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NameFault {
    /// The name is empty.
    #[error("the name is empty")]
    Empty,
    /// The name has a character outside `A-Z a-z 0-9 . _ -`.
    #[error("the name contains {0:?}")]
    Contains(char),
    /// The name is longer than [`MAX_NAME_LEN`].
    #[error("the name is {len} characters long")]
    TooLong {
        /// Its length in bytes (every allowed character is one byte).
        len: usize,
    },
}

/// Checks `s` against the host-name rule: 1 to [`MAX_NAME_LEN`] characters from
/// `A-Z a-z 0-9 . _ -`. Agent and peer names in agent.toml and [`HostName`] use it.
pub fn check_host_name(s: &str) -> Result<(), NameFault> {
    if s.is_empty() {
        return Err(NameFault::Empty);
    }
    if let Some(c) = s
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(NameFault::Contains(c));
    }
    if s.len() > MAX_NAME_LEN {
        return Err(NameFault::TooLong { len: s.len() });
    }
    Ok(())
}

/// A host name: 1 to 63 characters from `A-Z a-z 0-9 . _ -` (the agent.toml rule).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct HostName(String);

/// Why a string is not a [`HostName`]. `Display` states the rule; [`HostNameError::fault`]
/// says which part of it the string breaks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid host name: {}", NAME_RULE)]
pub struct HostNameError {
    fault: NameFault,
}

impl HostNameError {
    /// Which part of the rule the string breaks.
    pub fn fault(&self) -> NameFault {
        self.fault
    }
}

impl HostName {
    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for HostName {
    type Err = HostNameError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        check_host_name(s).map_err(|fault| HostNameError { fault })?;
        Ok(Self(s.to_owned()))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_rule_for_host_names() {
        let long = "a".repeat(MAX_NAME_LEN + 1);
        for (bad, fault) in [
            ("", NameFault::Empty),
            ("host a", NameFault::Contains(' ')),
            ("héte", NameFault::Contains('é')),
            (long.as_str(), NameFault::TooLong { len: 64 }),
        ] {
            assert_eq!(check_host_name(bad), Err(fault), "{bad:?}");
            let error = bad.parse::<HostName>().expect_err(bad);
            assert_eq!(error.fault(), fault);
            assert_eq!(
                error.to_string(),
                "invalid host name: use 1 to 63 characters from A-Z, a-z, 0-9, '.', '_' and '-'"
            );
        }
        for good in ["host-a", "a", "web_1.example", &long[1..]] {
            assert_eq!(check_host_name(good), Ok(()));
            assert_eq!(good.parse::<HostName>().unwrap().as_str(), good);
        }
    }

    #[test]
    fn the_rule_in_words_says_the_longest_name() {
        let length = format!("1 to {MAX_NAME_LEN} characters");
        assert!(NAME_RULE.contains(&length), "{NAME_RULE}");
        assert!(NAME_EXPECTED.contains(&length), "{NAME_EXPECTED}");
    }
}
