//! Why the registry refuses: [`RegistryError`], and [`TokenRefused`] for a join token that
//! cannot be used.

use ipnet::IpNet;
use wgmesh_config::{HostName, PublicKey};

use crate::ids::{HostId, TokenId};
use crate::ipam::IpamError;

/// Why a join token is refused; the message says which, as the issue asks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenRefused {
    /// No token has this secret.
    #[error("the join token is unknown")]
    Unknown,
    /// The token expired.
    #[error("the join token {id} expired at {expired_at} (unix seconds)")]
    Expired {
        /// The token.
        id: TokenId,
        /// When it expired.
        expired_at: u64,
    },
    /// A single-use token was already used.
    #[error("the join token {id} was already used by host {by}")]
    Used {
        /// The token.
        id: TokenId,
        /// The host that used it.
        by: HostId,
    },
    /// An admin revoked the token.
    #[error("the join token {id} was revoked")]
    Revoked {
        /// The token.
        id: TokenId,
    },
}

/// Why a request or mutation is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    /// The network was not initialised yet.
    #[error("the registry has no cluster network yet")]
    NotInitialized,
    /// The network was already initialised.
    #[error(
        "the registry's cluster network is already {cluster_cidr} with /{host_prefix} per host"
    )]
    AlreadyInitialized {
        /// The existing cluster CIDR.
        cluster_cidr: IpNet,
        /// The existing host prefix.
        host_prefix: u8,
    },
    /// The name is held by a joined host (with another key, or the same key and another
    /// credential).
    #[error(
        "the name {name} is held by host {held_by}; a host joins once and then uses its \
         credential, so an admin must remove it first (`wgmesh node remove {name}`)"
    )]
    NameTaken {
        /// The name.
        name: HostName,
        /// The host holding it.
        held_by: HostId,
    },
    /// The public key is held by a host with another name.
    #[error("the public key {} is already registered by host {held_by_name}", key.short())]
    KeyTaken {
        /// The key.
        key: PublicKey,
        /// The host holding it.
        held_by: HostId,
        /// That host's name.
        held_by_name: HostName,
    },
    /// No host has this id or name.
    #[error("no host {0}")]
    NoSuchHost(String),
    /// No token has this id.
    #[error("no join token {0}")]
    NoSuchToken(TokenId),
    /// The join token cannot be used.
    #[error(transparent)]
    Token(#[from] TokenRefused),
    /// A subnet problem (exhausted, taken, outside the CIDR).
    #[error(transparent)]
    Ipam(#[from] IpamError),
    /// An id is already in use (a mutation that does not fit the state).
    #[error("{what} id {id} is already in use")]
    IdInUse {
        /// "host" or "token".
        what: &'static str,
        /// The id.
        id: u64,
    },
    /// The credential is already another host's (credentials are chosen by agents; a clash means
    /// a copied state directory or a bug, never a coincidence).
    #[error("this credential is already host {0}'s; the agent must make a new one")]
    CredentialInUse(HostId),
}
