//! The registry's records: a [`Host`], a join [`Token`] (and the rules for using one,
//! [`Token::check_usable`]), a [`Workload`], the [`StoredPolicy`], and the [`JoinRequest`] a
//! host joins with.

use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use wgmesh_config::policy::Policy;
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
    /// The epoch of `public_key`: 0 at join, one more at each completed rotation (absent in
    /// stores written before rotations: 0).
    #[serde(default)]
    pub key_epoch: u64,
    /// When `public_key` was registered (unix seconds): `joined_at`, then the completion of
    /// each rotation. The rotation interval counts from it; being in the store, a restart of
    /// the control plane neither skips nor repeats a rotation. (Absent in older stores: then
    /// `joined_at`.)
    #[serde(default)]
    pub key_since: u64,
    /// The key rotation queued or running for this host, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotation: Option<KeyRotation>,
    /// When this host's last rotation was abandoned (it did not report a new key in time),
    /// until one completes: the interval does not queue it again before a whole interval
    /// after that, so a host that cannot rotate does not loop.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotation_abandoned_at: Option<u64>,
}

impl Host {
    /// The new key announced for this host, while its rotation is in that phase.
    pub fn announced_key(&self) -> Option<PublicKey> {
        match self.rotation.as_ref()?.phase {
            RotationPhase::Announced { new_key, .. } => Some(new_key),
            _ => None,
        }
    }

    /// Whether `key` is this host's: its registered key or the new one announced for it. A key
    /// is unique in the registry in both roles.
    pub fn holds_key(&self, key: &PublicKey) -> bool {
        self.public_key == *key || self.announced_key().as_ref() == Some(key)
    }

    /// Whether this host's rotation is running (requested or announced, not only queued).
    pub fn is_rotating(&self) -> bool {
        self.rotation.as_ref().is_some_and(KeyRotation::is_running)
    }
}

/// A key rotation of one host, queued or running (see `registry::rotation`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyRotation {
    /// The epoch the new key gets: the host's `key_epoch` + 1.
    pub epoch: u64,
    /// Who asked for it.
    pub reason: RotationReason,
    /// When it was queued (unix seconds): queued rotations start oldest first.
    pub queued_at: u64,
    /// Where it is.
    pub phase: RotationPhase,
}

impl KeyRotation {
    /// Whether it runs (requested or announced): one rotation runs at a time in the cluster.
    pub fn is_running(&self) -> bool {
        !matches!(self.phase, RotationPhase::Queued)
    }
}

/// Why a host's key is rotated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RotationReason {
    /// An admin asked (`wgmesh key rotate`).
    Admin,
    /// The key reached `key_rotation_interval`.
    Interval,
}

/// Where a key rotation is. Deadlines are absolute (unix seconds), so a restart of the control
/// plane keeps them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case", deny_unknown_fields)]
pub enum RotationPhase {
    /// Waiting for the running rotation (another host's) to end.
    Queued,
    /// The host is asked for a new key; abandoned at `deadline` if it has not reported one.
    Requested {
        /// When it was asked.
        at: u64,
        /// When the request is abandoned.
        deadline: u64,
    },
    /// The host's new key is in its peers' netmaps (first, before the old one); registered at
    /// `deadline` at the latest.
    Announced {
        /// The new key, as the host reported it.
        new_key: PublicKey,
        /// When it was announced.
        at: u64,
        /// When it is registered even if the host did not report that its peers moved.
        deadline: u64,
    },
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

/// A workload (a container's network namespace) on a host, as its agent reports it. The registry
/// keeps each host's workloads (see [`Registry::workloads_of`](super::Registry::workloads_of)).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Workload {
    /// Its name on its host: the network namespace's, as `ip netns` names it (`HOST/NAME`
    /// names it in the cluster).
    pub name: String,
    /// Its overlay address, a usable address of its host's subnet.
    pub ip: IpAddr,
    /// Its own labels, for policy (its host's labels and `host=<name>` are added to them).
    #[serde(default, skip_serializing_if = "Labels::is_empty")]
    pub labels: Labels,
}

/// The policy in force, as `policy apply` stored it.
///
/// The parsed [`Policy`] is what counts: replay and compilation use it, never `text`. The TOML
/// is not read again, so a later version's policy-file syntax (its keys, its defaults, how
/// selectors and tests are written there) cannot change what a stored policy means. Its
/// stored JSON is still read through parsers, though: port entries and test flows are stored
/// as their text (`"tcp/8000-8100"`, `"icmp"`) and read back by [`PortSpec`]'s and
/// [`Flow`]'s `FromStr` (selectors' labels, actions and the default are plain JSON); a later
/// version that read those texts differently would read the stored policy differently. Those texts are part of the store's
/// format (the registry's tests pin them), to be changed only with a store migration. `text`
/// and `origin` are kept for `policy show`.
///
/// [`PortSpec`]: wgmesh_config::policy::PortSpec
/// [`Flow`]: wgmesh_config::policy::Flow
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoredPolicy {
    /// The policy file's text, as applied.
    pub text: String,
    /// The name of the file it came from.
    pub origin: String,
    /// The policy.
    pub policy: Policy,
    /// The registry revision that applied it.
    pub revision: u64,
}

/// The first host address of `subnet`, the gateway: held by the host's bridge, the address of
/// the host's own traffic, never a workload's (as the agent's `workloads::gateway`).
pub fn gateway(subnet: IpNet) -> Option<IpAddr> {
    // IPv4's `hosts()` leave out the network and broadcast addresses; IPv6's begin with the
    // network address, the subnet-router anycast address, which no host may use as its own.
    let skip = usize::from(subnet.addr().is_ipv6());
    subnet.hosts().nth(skip)
}

/// Whether `ip` may be a workload's address on a host with `subnet`: inside it, not the
/// network address, the gateway or (IPv4) the broadcast address.
pub fn assignable(subnet: IpNet, ip: IpAddr) -> bool {
    subnet.contains(&ip)
        && ip != subnet.network()
        && Some(ip) != gateway(subnet)
        && !(matches!(subnet, IpNet::V4(_)) && ip == subnet.broadcast())
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
