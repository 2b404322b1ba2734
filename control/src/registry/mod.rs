//! The control plane's state: [`Registry`] of hosts, join tokens, workloads and the policy, and
//! the [`Mutation`]s that change it.
//!
//! Pure, no I/O, no clock: every time is a `now` in unix seconds passed in by the caller.
//!
//! Changes follow one pattern so that every acknowledged change is durable and replayable:
//! a `plan_*` method checks a request against the current state and returns the [`Mutation`]
//! that records its outcome (with every choice made, such as the subnet and the host id);
//! the caller commits it to the [`Store`](crate::store::Store), then [`Registry::apply`]s it.
//! Replaying the committed mutations from an empty registry gives the same state.
//! [`Registry::apply`] checks everything before it changes anything, so a refused mutation
//! leaves the registry as it was.
//!
//! - `records`: what it holds ([`Host`], [`Token`] and the token rules, [`Workload`],
//!   [`StoredPolicy`]);
//! - `mutation`: the [`Mutation`]s, as the store keeps them;
//! - `error`: why a request or mutation is refused ([`RegistryError`], [`TokenRefused`],
//!   [`WorkloadRefused`], [`PolicyTestFailed`]);
//! - `plan`: the `plan_*` methods of hosts and tokens, `workloads`: a host's workload report,
//!   `rotation`: key rotations (queued by an admin or the interval, stepped by a scheduler
//!   with [`Registry::next_rotation_step`], and the host's key reports),
//!   `policy`: applying ([`CheckedPolicy`], the checks a policy passes on its own) and removing
//!   the policy; `apply`: [`Registry::check`] and
//!   [`Registry::apply`];
//! - this module: [`Registry`] itself, its lookups, and its snapshot (the store's compacted form).

use std::collections::BTreeMap;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use wgmesh_config::HostName;

mod apply;
mod error;
mod mutation;
mod plan;
mod policy;
mod records;
mod rotation;
mod workloads;

pub use error::{KeyRefusal, PolicyTestFailed, RegistryError, TokenRefused, WorkloadRefused};
pub use mutation::{Mutation, QueuedRotation};
pub use policy::CheckedPolicy;
pub use records::{
    assignable, gateway, Host, JoinRequest, KeyRotation, Labels, RotationPhase, RotationReason,
    StoredPolicy, Token, Workload,
};
pub use rotation::{KeyReport, RotationSettings, RotationTarget};
/// The hash of a secret (a join token's, a host credential's): the registry and the store hold
/// only these, never the secrets.
pub use wgmesh_config::token::SecretHash;
pub use workloads::MAX_WORKLOADS_PER_HOST;

pub use crate::ids::{HostId, TokenId};
use crate::ipam::Ipam;

/// The registry: every host, token and workload, the policy, and a revision that grows with
/// every change.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "Snapshot", into = "Snapshot")]
pub struct Registry {
    ipam: Option<Ipam>,
    hosts: BTreeMap<HostId, Host>,
    tokens: BTreeMap<TokenId, Token>,
    /// Each host's workloads, sorted by address; a host without any has no entry.
    workloads: BTreeMap<HostId, Vec<Workload>>,
    policy: Option<StoredPolicy>,
    next_host_id: u64,
    next_token_id: u64,
    revision: u64,
    netmap_revision: u64,
    /// Index of `hosts` by credential hash (derived; not serialised).
    credentials: BTreeMap<[u8; 32], HostId>,
    /// Index of `hosts` by name (derived; not serialised).
    names: BTreeMap<HostName, HostId>,
}

/// The serialised form of a [`Registry`]: the IPAM table is rebuilt from the hosts.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Snapshot {
    network: Option<Network>,
    hosts: Vec<Host>,
    tokens: Vec<Token>,
    /// Absent in snapshots written before workloads were reported.
    #[serde(default)]
    workloads: Vec<HostWorkloads>,
    /// Absent in snapshots written before policies existed, and when none is applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    policy: Option<StoredPolicy>,
    next_host_id: u64,
    next_token_id: u64,
    revision: u64,
    /// Absent in snapshots written before it existed: then the revision.
    #[serde(default)]
    netmap_revision: Option<u64>,
}

/// One host's workloads in a [`Snapshot`].
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct HostWorkloads {
    host: HostId,
    workloads: Vec<Workload>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Network {
    cluster_cidr: IpNet,
    host_prefix: u8,
}

impl From<Registry> for Snapshot {
    fn from(r: Registry) -> Self {
        Self {
            network: r.ipam.as_ref().map(|i| Network {
                cluster_cidr: i.cidr(),
                host_prefix: i.host_prefix(),
            }),
            hosts: r.hosts.into_values().collect(),
            tokens: r.tokens.into_values().collect(),
            workloads: r
                .workloads
                .into_iter()
                .map(|(host, workloads)| HostWorkloads { host, workloads })
                .collect(),
            policy: r.policy,
            next_host_id: r.next_host_id,
            next_token_id: r.next_token_id,
            revision: r.revision,
            netmap_revision: Some(r.netmap_revision),
        }
    }
}

impl TryFrom<Snapshot> for Registry {
    type Error = RegistryError;

    /// Rebuilds a registry, checking the invariants `apply` keeps (unique ids, names, keys
    /// (registered and announced) and subnets; ids below the next ids; at most one rotation
    /// running, each for its key's next epoch).
    fn try_from(s: Snapshot) -> Result<Self, Self::Error> {
        let mut r = Self {
            next_host_id: s.next_host_id,
            next_token_id: s.next_token_id,
            revision: s.revision,
            netmap_revision: s.netmap_revision.unwrap_or(s.revision),
            policy: s.policy,
            ..Self::default()
        };
        if let Some(n) = s.network {
            r.ipam = Some(Ipam::new(n.cluster_cidr, n.host_prefix)?);
        }
        for token in s.tokens {
            if token.id.0 >= r.next_token_id || r.tokens.contains_key(&token.id) {
                return Err(RegistryError::IdInUse {
                    what: "token",
                    id: token.id.0,
                });
            }
            r.tokens.insert(token.id, token);
        }
        for mut host in s.hosts {
            if host.id.0 >= r.next_host_id || r.hosts.contains_key(&host.id) {
                return Err(RegistryError::IdInUse {
                    what: "host",
                    id: host.id.0,
                });
            }
            // Snapshots written before rotations have no key_since: the key is the join's.
            host.key_since = host.key_since.max(host.joined_at);
            r.check_unique(host.id, &host.name, &host.public_key)?;
            r.check_rotation_record(&host)?;
            r.check_credential_free(&host.credential_hash)?;
            r.ipam
                .as_mut()
                .ok_or(RegistryError::NotInitialized)?
                .reserve(host.subnet, host.id)?;
            r.insert_host(host);
        }
        for HostWorkloads {
            host,
            mut workloads,
        } in s.workloads
        {
            r.check_workloads(host, &workloads)?;
            if r.workloads.contains_key(&host) {
                return Err(RegistryError::IdInUse {
                    what: "workloads of host",
                    id: host.0,
                });
            }
            workloads.sort_by_key(|w| w.ip);
            if !workloads.is_empty() {
                r.workloads.insert(host, workloads);
            }
        }
        Ok(r)
    }
}

impl Registry {
    /// The revision: the number of mutations applied since the registry was empty.
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// The revision of the last mutation that can change a netmap (a host joined, left or
    /// moved; not a token). Netmaps carry it, and long polls wait for it to move, so admin
    /// actions that change no netmap do not send every host a new one.
    pub fn netmap_revision(&self) -> u64 {
        self.netmap_revision
    }

    /// The cluster's host-subnet allocator, once initialised.
    pub fn ipam(&self) -> Option<&Ipam> {
        self.ipam.as_ref()
    }

    /// Every host, by id.
    pub fn hosts(&self) -> &BTreeMap<HostId, Host> {
        &self.hosts
    }

    /// Every join token, by id.
    pub fn tokens(&self) -> &BTreeMap<TokenId, Token> {
        &self.tokens
    }

    /// Every host's workloads, each host's sorted by address (hosts without any are absent).
    pub fn workloads(&self) -> &BTreeMap<HostId, Vec<Workload>> {
        &self.workloads
    }

    /// Host `id`'s workloads, sorted by address.
    pub fn workloads_of(&self, id: HostId) -> &[Workload] {
        self.workloads.get(&id).map_or(&[], Vec::as_slice)
    }

    /// The workload called `name` on the host called `host` (`HOST/NAME`), with its host.
    pub fn workload(&self, host: &str, name: &str) -> Option<(&Host, &Workload)> {
        let h = self.host_by_name(host)?;
        let w = self.workloads_of(h.id).iter().find(|w| w.name == name)?;
        Some((h, w))
    }

    /// The policy in force, if one was applied.
    pub fn policy(&self) -> Option<&StoredPolicy> {
        self.policy.as_ref()
    }

    /// A host by id.
    pub fn host(&self, id: HostId) -> Option<&Host> {
        self.hosts.get(&id)
    }

    /// A host by name.
    pub fn host_by_name(&self, name: &str) -> Option<&Host> {
        let id = self.names.get(name)?;
        self.hosts.get(id)
    }

    /// The host a credential belongs to, given the credential's hash.
    pub fn host_by_credential(&self, hash: &SecretHash) -> Option<&Host> {
        // An ordered lookup by hash, as a database index would do: its timing can only tell
        // about hashes of 256-bit random secrets, which do not lead back to the secrets.
        let id = self.credentials.get(hash.as_bytes())?;
        self.hosts.get(id)
    }

    /// Records that a host was heard from at `now`. In memory only: not a mutation.
    pub fn touch(&mut self, id: HostId, now: u64) {
        if let Some(host) = self.hosts.get_mut(&id) {
            host.last_seen = host.last_seen.max(now);
        }
    }
}

#[cfg(test)]
pub(crate) mod tests;
