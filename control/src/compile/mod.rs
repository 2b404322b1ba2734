//! The netmap compiler: [`netmap`], [`netmaps`] and [`delta`] turn the [`Registry`] and the
//! [`Policy`] in force into the [`Netmap`] each host should have: its peers, and its filter.
//!
//! Pure, no I/O, deterministic and total: the same registry and policy always give equal
//! netmaps (peers sorted by name, each peer's keys current first, allowed IPs sorted, filter rules in policy order with
//! sorted prefixes), and every registry gives one. A host never appears in its own netmap, and
//! every allowed IP belongs to exactly one peer (host subnets are unique in the registry).
//!
//! With no policy (`None`), every host is every other's peer and netmaps have no filter. With a
//! policy (the meaning is [`Policy::decide`]'s; how labels become addresses is
//! `endpoints`'s):
//! - a host's filter holds every rule one of whose sides holds one of its addresses, with each
//!   selector turned into the merged prefixes of the endpoints it matches (`{}`: the whole
//!   cluster CIDR), in policy order (`rules`, `prefixes`);
//! - an address of a host's subnet that is neither its gateway nor a registered workload (an
//!   unregistered address: a workload not reported yet, or a tampered host sending from an
//!   address it was never given) carries its host's labels and `host=<name>` for deny rules and
//!   none for allow rules, so both fail closed: a deny rule's side holds, for each host whose
//!   host labels its selector matches, the host's whole subnet but its registered workloads
//!   the selector does not match (their own labels may override the host's); an allow rule's
//!   side holds only the endpoints it matches, and only `{}` allows an unregistered address;
//! - hosts A and B are peers iff some allow rule matches a flow from an address of one to an
//!   address of the other, or the default allows, so unrelated hosts never learn each other's
//!   keys.
//!
//! [`Compiled::check_filters`] runs each host's filter through the agent's own check, so the
//! control plane never commits a state some agent would refuse.
//!
//! [`Compiled`] does the work once for every host (the free functions build one per call); its
//! costly part, [`CompiledPolicy`], can be kept while the registry's netmap revision stays
//! ([`Compiled::with`]); `explain` answers `policy explain`.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};

use wgmesh_config::netmap::{
    FilterError, FilterUpdate, HostFilter, HostIdentity, KeyRotationOrder, Netmap, NetmapDelta,
    NetmapPeer,
};
pub use wgmesh_config::policy::Policy;

use crate::changelog::Changes;
use crate::registry::{Host, HostId, Registry, RotationPhase};

mod endpoints;
mod explain;
mod prefixes;
mod rules;

pub use endpoints::endpoint_labels;
use endpoints::Endpoints;
pub use explain::{decide, explain, EndpointRef, ExplainError, Explanation};
use rules::CompiledRules;

/// A host whose compiled filter its agent would refuse ([`Compiled::check_filters`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("host {host}'s filter would be refused by its agent: {source}")]
pub struct FilterRefused {
    /// The host's name.
    pub host: String,
    /// What its agent's check says.
    pub source: FilterError,
}

/// The registry and a policy compiled together: every host's peers and filter.
#[derive(Debug)]
pub struct Compiled<'a> {
    registry: &'a Registry,
    policy: Option<&'a Policy>,
    compiled: Cow<'a, CompiledPolicy>,
}

/// What compiling spends its time on: the policy's selectors turned into addresses, and each
/// host's peers. Owned, so a caller may keep it for as long as the registry's netmap revision
/// does not move (every change that can alter a netmap moves it) and build [`Compiled`]s from it
/// ([`Compiled::with`]) without compiling again.
#[derive(Debug, Clone)]
pub struct CompiledPolicy {
    /// The registry's netmap revision it was compiled at.
    netmap_revision: u64,
    /// The hosts' ids, in registry order: a host's position is its index here.
    ids: Vec<HostId>,
    rules: Option<CompiledRules>,
}

impl CompiledPolicy {
    /// Compiles `policy` (`None`: no policy, everything allowed) against `registry`.
    pub fn new(registry: &Registry, policy: Option<&Policy>) -> Self {
        let ids: Vec<HostId> = registry.hosts().keys().copied().collect();
        let rules = policy.map(|p| {
            let endpoints = Endpoints::new(registry);
            CompiledRules::new(p, &endpoints, ids.len(), registry.ipam().map(|i| i.cidr()))
        });
        Self {
            netmap_revision: registry.netmap_revision(),
            ids,
            rules,
        }
    }

    /// The registry's netmap revision it was compiled at.
    pub fn netmap_revision(&self) -> u64 {
        self.netmap_revision
    }

    /// Whether it was compiled from `registry` as it is now (at its netmap revision, with its
    /// hosts) and with a policy exactly when `policy` is one.
    fn fits(&self, registry: &Registry, policy: Option<&Policy>) -> bool {
        self.netmap_revision == registry.netmap_revision()
            && self.ids.len() == registry.hosts().len()
            && self.rules.is_some() == policy.is_some()
    }
}

impl<'a> Compiled<'a> {
    /// Compiles `policy` (`None`: no policy, everything allowed) against `registry`.
    pub fn new(registry: &'a Registry, policy: Option<&'a Policy>) -> Self {
        Self {
            registry,
            policy,
            compiled: Cow::Owned(CompiledPolicy::new(registry, policy)),
        }
    }

    /// [`Compiled::new`] from `compiled`, kept from an earlier call. It must be of this
    /// registry's current netmap revision and of `policy` (the one in force at that revision);
    /// one of another revision is not used, and the registry is compiled anew.
    pub fn with(
        registry: &'a Registry,
        policy: Option<&'a Policy>,
        compiled: &'a CompiledPolicy,
    ) -> Self {
        if !compiled.fits(registry, policy) {
            return Self::new(registry, policy);
        }
        Self {
            registry,
            policy,
            compiled: Cow::Borrowed(compiled),
        }
    }

    /// The netmap of host `id`, or `None` when there is no such host.
    pub fn netmap(&self, id: HostId) -> Option<Netmap> {
        let (at, host) = self.position(id)?;
        let mut map = Netmap {
            revision: self.registry.netmap_revision(),
            host: identity(host),
            peers: self
                .registry
                .hosts()
                .values()
                .enumerate()
                .filter(|&(j, _)| self.connects(at, j))
                .map(|(_, p)| peer(p))
                .collect(),
            cluster_cidr: self.registry.ipam().map(|i| i.cidr()),
            epoch: 0,
            filter: self.filter(at),
        };
        map.normalize();
        Some(map)
    }

    /// The netmap of every host.
    pub fn netmaps(&self) -> BTreeMap<HostId, Netmap> {
        self.compiled
            .ids
            .iter()
            .filter_map(|&id| Some((id, self.netmap(id)?)))
            .collect()
    }

    /// What changed in host `id`'s netmap since revision `from`, given what changed since
    /// then (from a [`ChangeLog`](crate::changelog::ChangeLog)); `None` when there is no such
    /// host. Equal, once applied, to [`Compiled::netmap`].
    ///
    /// Each host whose entry changed is sent again (or removed, if it left or is no longer a
    /// peer). Every peer is looked at again when the policy changed, or when this host's own
    /// addresses did under a policy (whom it may reach depends on them). The filter is sent
    /// when the policy changed or an endpoint changed under it.
    pub fn delta(&self, id: HostId, from: u64, changes: &Changes<'_>) -> Option<NetmapDelta> {
        let (at, host) = self.position(id)?;
        let mut names: BTreeSet<&str> = changes.hosts.clone();
        let own_changed = self.policy.is_some() && changes.hosts.contains(host.name.as_str());
        if changes.policy || own_changed {
            names.extend(self.registry.hosts().values().map(|h| h.name.as_str()));
        }
        let mut upsert = Vec::new();
        let mut remove = Vec::new();
        for name in names {
            if name == host.name.as_str() {
                continue;
            }
            match self.registry.host_by_name(name) {
                Some(p)
                    if self
                        .position(p.id)
                        .is_some_and(|(j, _)| self.connects(at, j)) =>
                {
                    upsert.push(peer(p));
                }
                _ => remove.push(name.to_owned()),
            }
        }
        let filter = (changes.policy || changes.filters).then(|| FilterUpdate {
            filter: self.filter(at),
        });
        Some(NetmapDelta {
            from,
            revision: self.registry.netmap_revision(),
            host: identity(host),
            upsert,
            remove,
            peer_count: self.peer_count(at),
            cluster_cidr: self.registry.ipam().map(|i| i.cidr()),
            epoch: 0,
            filter,
        })
    }

    /// Checks every host's filter as its agent will ([`HostFilter::check`]: its size limits
    /// and its invariants): the first host whose filter its agent would refuse, in registry
    /// order, and why. `Ok` without a policy (there are no filters). Builds one filter at a
    /// time, so it costs what compiling every host's netmap does, and holds one filter at most.
    pub fn check_filters(&self) -> Result<(), FilterRefused> {
        for (at, host) in self.registry.hosts().values().enumerate() {
            let Some(filter) = self.filter(at) else {
                return Ok(());
            };
            filter.check().map_err(|source| FilterRefused {
                host: host.name.to_string(),
                source,
            })?;
        }
        Ok(())
    }

    fn position(&self, id: HostId) -> Option<(usize, &'a Host)> {
        let at = self.compiled.ids.binary_search(&id).ok()?;
        Some((at, self.registry.host(id)?))
    }

    fn connects(&self, a: usize, b: usize) -> bool {
        match &self.compiled.rules {
            None => a != b,
            Some(rules) => rules.connects(a, b),
        }
    }

    fn peer_count(&self, a: usize) -> usize {
        match &self.compiled.rules {
            None => self.compiled.ids.len().saturating_sub(1),
            Some(rules) => rules.peer_count(a),
        }
    }

    fn filter(&self, a: usize) -> Option<HostFilter> {
        let (rules, policy) = self.compiled.rules.as_ref().zip(self.policy)?;
        Some(rules.filter(policy, a))
    }
}

/// The netmap of host `id` under `policy` (`None`: no policy), or `None` when there is no such
/// host.
pub fn netmap(registry: &Registry, policy: Option<&Policy>, id: HostId) -> Option<Netmap> {
    Compiled::new(registry, policy).netmap(id)
}

/// The netmap of every host under `policy`.
pub fn netmaps(registry: &Registry, policy: Option<&Policy>) -> BTreeMap<HostId, Netmap> {
    Compiled::new(registry, policy).netmaps()
}

/// What changed in host `id`'s netmap since revision `from` ([`Compiled::delta`]).
pub fn delta(
    registry: &Registry,
    policy: Option<&Policy>,
    id: HostId,
    from: u64,
    changes: &Changes<'_>,
) -> Option<NetmapDelta> {
    Compiled::new(registry, policy).delta(id, from, changes)
}

/// The host's own identity: its registered key and epoch, and the order of its running
/// rotation (none while it is only queued).
fn identity(host: &Host) -> HostIdentity {
    let rotation = host.rotation.as_ref().and_then(|r| match r.phase {
        RotationPhase::Queued => None,
        RotationPhase::Requested { .. } => Some(KeyRotationOrder {
            epoch: r.epoch,
            new_key: None,
        }),
        RotationPhase::Announced { new_key, .. } => Some(KeyRotationOrder {
            epoch: r.epoch,
            new_key: Some(new_key),
        }),
    });
    HostIdentity {
        name: host.name.to_string(),
        public_key: host.public_key,
        subnet: host.subnet,
        endpoint: host.endpoint,
        key_epoch: host.key_epoch,
        rotation,
    }
}

/// The host as its peers see it: while its new key is announced, `[new, old]` at the new
/// key's epoch (the agent takes the first key as the current one), else its registered key.
fn peer(host: &Host) -> NetmapPeer {
    let (public_keys, key_epoch) = match (host.announced_key(), &host.rotation) {
        (Some(new_key), Some(r)) => (vec![new_key, host.public_key], r.epoch),
        _ => (vec![host.public_key], host.key_epoch),
    };
    NetmapPeer {
        name: host.name.to_string(),
        public_keys,
        endpoint: host.endpoint,
        allowed_ips: vec![host.subnet],
        labels: host.labels.clone(),
        key_epoch,
        preshared_keys: Vec::new(),
    }
}

#[cfg(test)]
mod tests;
