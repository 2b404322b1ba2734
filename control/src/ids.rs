//! The ids the registry hands out: [`HostId`] and [`TokenId`], assigned in order and never
//! reused. A leaf: the registry, IPAM, the audit log and the API all name hosts and tokens by
//! them, and this module depends on none of them.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A host's id: assigned by the registry at join, never reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct HostId(pub u64);

impl fmt::Display for HostId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A join token's id: assigned by the registry at creation, never reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TokenId(pub u64);

impl fmt::Display for TokenId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}
