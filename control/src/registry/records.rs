//! The registry's records: a [`Host`], a join [`Token`] (and the rules for using one,
//! [`Token::check_usable`]), a [`Workload`], and the [`JoinRequest`] a host joins with.

use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use wgmesh_config::token::SecretHash;
use wgmesh_config::{HostName, PublicKey};

use super::error::TokenRefused;
use crate::ids::{HostId, TokenId};

/// Labels of a host or workload: `key = value`, sorted by key (config's type, whose rules
/// [`wgmesh_config::labels::check_labels`] checks).
pub use wgmesh_config::labels::Labels;

/// A joined host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Host {
    /// The host's id.
    pub id: HostId,
    /// The host's name, unique in the registry.
    pub name: HostName,
    /// The host's WireGuard public key, unique in the registry.
    pub public_key: PublicKey,
    /// Where other hosts should send to, if the host gave an address.
    pub endpoint: Option<SocketAddr>,
    /// The host's subnet of the cluster CIDR, unique in the registry.
    pub subnet: IpNet,
    /// The host's labels: its join token's labels over its own.
    pub labels: Labels,
    /// The hash of the credential the host authenticates with.
    pub credential_hash: SecretHash,
    /// The token the host joined with.
    pub token: Option<TokenId>,
    /// When the host joined (unix seconds).
    pub joined_at: u64,
    /// When the host was last heard from (unix seconds). Kept in memory by
    /// [`Registry::touch`](super::Registry::touch); only persisted with the state it is part of.
    pub last_seen: u64,
}

/// A join token, as the registry keeps it (only the hash of its secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Token {
    /// The token's id.
    pub id: TokenId,
    /// The hash of the token's secret.
    pub secret_hash: SecretHash,
    /// When the token was created (unix seconds).
    pub created_at: u64,
    /// The first second at which the token is no longer valid (unix seconds).
    pub expires_at: u64,
    /// Whether more than one host may join with it.
    pub reusable: bool,
    /// Labels given to every host that joins with it.
    pub labels: Labels,
    /// The hosts that joined with it, in join order.
    pub used_by: Vec<HostId>,
    /// Whether an admin revoked it.
    pub revoked: bool,
}

impl Token {
    /// Whether a host may join with this token, or why not: the one statement of the token
    /// rules, asked by joins, by replayed joins and by `token list`. In this order: revoked,
    /// single-use and already used, expired at `now`. `now` is `None` where there is no clock
    /// (a mutation checked on replay): expiry was checked when the join was planned.
    pub fn check_usable(&self, now: Option<u64>) -> Result<(), TokenRefused> {
        if self.revoked {
            return Err(TokenRefused::Revoked { id: self.id });
        }
        if let (false, Some(&by)) = (self.reusable, self.used_by.first()) {
            return Err(TokenRefused::Used { id: self.id, by });
        }
        match now {
            Some(now) if now >= self.expires_at => Err(TokenRefused::Expired {
                id: self.id,
                expired_at: self.expires_at,
            }),
            _ => Ok(()),
        }
    }
}

/// A workload (container) on a host. A placeholder: workloads are registered by a later issue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Workload {
    /// The host it runs on.
    pub host: HostId,
    /// Its overlay address, inside the host's subnet.
    pub ip: IpAddr,
    /// Its labels, for policy.
    pub labels: Labels,
}

/// What a host sends to join, once its token is checked (see [`Registry::plan_join`](super::Registry::plan_join)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinRequest {
    /// The host's name.
    pub name: HostName,
    /// The host's public key.
    pub public_key: PublicKey,
    /// The host's endpoint.
    pub endpoint: Option<SocketAddr>,
    /// The host's own labels (its token's labels override them).
    pub labels: Labels,
}
