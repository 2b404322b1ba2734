//! The labels of selectors and of tests' endpoints: the rule each `key = value` follows (the
//! label rules of [`crate::labels`], except that the value of `host` is a host name), and the
//! text form of a [`Selector`] (`k=v,k=v`, `{}`), as `policy explain --from` takes it and
//! reports print it.
//!
//! Pure: no I/O.

use std::fmt;
use std::str::FromStr;

use super::{Selector, HOST_LABEL};
use crate::labels::{self, LabelError, Labels};
use crate::name::{check_host_name, NameFault, NAME_RULE};

/// What a valid selector text looks like, for error messages.
pub const SELECTOR_RULE: &str = "a selector is key=value pairs separated by commas, such as \
                                 \"role=frontend,zone=a\" (an endpoint must carry every one), \
                                 or \"{}\" (or \"\") for every endpoint";

/// Why a label of a selector or of a test's endpoint is not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectorError {
    /// The key or the value breaks the label rules.
    #[error(transparent)]
    Label(#[from] LabelError),
    /// The value of `host` is not a host name.
    #[error("label \"host\" holds a host's name, and {value:?} is not one ({fault}); {NAME_RULE}")]
    HostName {
        /// The value as given.
        value: String,
        /// Which part of the host-name rule it breaks.
        fault: NameFault,
    },
    /// A selector text gives one key twice.
    #[error("names the label {key:?} twice; give each key once")]
    Twice {
        /// The key.
        key: String,
    },
}

/// Why a selector text (`--from role=frontend`) is not valid; the message quotes the text and
/// says what a valid one looks like.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("selector {text:?}: {error}; {SELECTOR_RULE}")]
pub struct SelectorParseError {
    /// The text as given.
    pub text: String,
    /// What is wrong with it (its text is part of this error's message, so it is no `source`).
    pub error: SelectorError,
}

/// Checks a label's value where `key` has already passed [`labels::check_key`]: the value of
/// `host` must be a host name, any other the label value rule.
pub(crate) fn check_value(key: &str, value: &str) -> Result<(), SelectorError> {
    if key != HOST_LABEL {
        return Ok(labels::check_value(value)?);
    }
    check_host_name(value).map_err(|fault| SelectorError::HostName {
        value: value.to_owned(),
        fault,
    })
}

/// Checks a key and its value; a value error names the key.
pub(crate) fn check_label(key: &str, value: &str) -> Result<(), SelectorError> {
    labels::check_key(key)?;
    match key {
        HOST_LABEL => check_value(key, value),
        _ => Ok(labels::check_label(key, value)?),
    }
}

/// Labels shown as a selector is written: `{role=frontend,zone=a}`, `{}` when empty.
#[derive(Debug, Clone, Copy)]
pub struct ShowLabels<'a>(pub &'a Labels);

impl fmt::Display for ShowLabels<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("{")?;
        for (i, (k, v)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{k}={v}")?;
        }
        f.write_str("}")
    }
}

impl fmt::Display for Selector {
    /// `{role=frontend,zone=a}`, `{}` for the selector of every endpoint; [`FromStr`] reads it
    /// back.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        ShowLabels(&self.0).fmt(f)
    }
}

impl FromStr for Selector {
    type Err = SelectorParseError;

    /// Reads `k=v,k=v` (spaces around keys and values are ignored, braces around the whole are
    /// allowed); `""` and `"{}"` are the selector of every endpoint. The `HOST/NETNS` form of
    /// `policy explain` is its caller's to resolve.
    fn from_str(text: &str) -> Result<Self, SelectorParseError> {
        let fail = |error: SelectorError| SelectorParseError {
            text: text.to_owned(),
            error,
        };
        let trimmed = text.trim();
        let inner = trimmed
            .strip_prefix('{')
            .and_then(|s| s.strip_suffix('}'))
            .unwrap_or(trimmed)
            .trim();
        let mut out = Labels::new();
        if inner.is_empty() {
            return Ok(Self(out));
        }
        for item in inner.split(',') {
            let Some((key, value)) = item.split_once('=') else {
                let text = item.trim().to_owned();
                return Err(fail(LabelError::Assignment { text }.into()));
            };
            let (key, value) = (key.trim(), value.trim());
            check_label(key, value).map_err(fail)?;
            if out.insert(key.to_owned(), value.to_owned()).is_some() {
                let key = key.to_owned();
                return Err(fail(SelectorError::Twice { key }));
            }
        }
        Ok(Self(out))
    }
}
