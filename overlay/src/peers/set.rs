//! [`PeerSet`]: the master copy of the peers, owned by the agent's control side and changed by
//! configuration ([`PeerSet::apply`]) or by the host's keys ([`PeerSet::set_host_keys`]).
//! It hands the data path immutable [`PeerTable`] snapshots.
//!
//! Peers are identified by a stable [`PeerId`], not by their public key: a configured peer is the
//! same peer as a running one when they share a key, so a rotating peer that lists its new and
//! old key, then only the new one, stays the same peer. The same peer keeps its index, routes,
//! counters and, unless a tunnel parameter changed, its session. A name never carries identity:
//! a removed host that joins again under its old name with a new key is a new peer, and inherits
//! nothing (endpoint, session, counters) from the old one.
//!
//! The set also holds the policy in force ([`PeerSet::apply_policy`]): its [`Filter`] goes into
//! every table snapshot, and every peer gets a [`FlowGuard`] (its conntrack table, allocated
//! once) before the first snapshot that enforces a policy.
//!
//! No I/O, no clock (`now` is passed in).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use ipnet::IpNet;
use wgmesh_config::netmap::HostFilter;
use wgmesh_config::PublicKey;

use super::conntrack::ENTRIES_PER_PEER;
use super::enforce::FlowGuard;
use super::filter::Filter;
use super::identity::HostKeys;
use super::local::HostNets;
use super::noise::LocalIdentity;
use super::peer::{Peer, PeerId};
use super::route::AllowedIps;
use super::settings::PeerSettings;
use super::table::{PeerTable, GENERATION_SHIFT, MAX_PEERS, SLOT_MASK};

const GENERATION_MASK: u32 = (1 << (24 - GENERATION_SHIFT)) - 1;

/// What [`PeerSet::apply`] changed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct PeerChanges {
    /// Peers added.
    pub added: Vec<PeerId>,
    /// Peers removed.
    pub removed: Vec<PeerId>,
    /// Peers whose settings changed (sessions kept where possible).
    pub changed: Vec<PeerId>,
    /// Prefixes that must now be routed into the tunnel device.
    pub routes_added: Vec<IpNet>,
    /// Prefixes that must no longer be routed into the tunnel device.
    pub routes_removed: Vec<IpNet>,
}

impl PeerChanges {
    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.changed.is_empty()
    }
}

/// Errors from [`PeerSet::apply`]; nothing was changed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PeerSetError {
    /// More peers than slots.
    #[error("too many peers: {count} (at most {MAX_PEERS})")]
    TooMany {
        /// How many were asked for.
        count: usize,
    },
    /// A peer with the host's own public key.
    #[error("peer {key} has this host's own public key")]
    OwnKey {
        /// The key.
        key: PublicKey,
    },
    /// Two peers with the same public key.
    #[error("two peers have the public key {key}")]
    SharedKey {
        /// The key.
        key: PublicKey,
    },
}

struct Entry {
    peer: Arc<Peer>,
    settings: PeerSettings,
}

/// The master copy of the peers.
pub struct PeerSet {
    keys: HostKeys,
    /// Static mode: a configured peer with the name and allowed IPs of a running one is that
    /// peer, whatever its keys (its key was edited in place for a rotation).
    match_names: bool,
    /// The host's networks as the agent gave them.
    host_nets: HostNets,
    /// `host_nets` with the routed prefixes: the snapshot every peer holds.
    peer_nets: Arc<HostNets>,
    entries: BTreeMap<PeerId, Entry>,
    next_id: u64,
    free_slots: BTreeSet<u32>,
    next_slot: u32,
    generation: u32,
    /// The policy in force, as the netmap gave it (`None`: no policy).
    policy: Option<HostFilter>,
    /// The filter built from it, shared by every table snapshot.
    filter: Arc<Filter>,
    /// Bumped whenever the policy changes, so that flows tracked under the old one are decided
    /// again.
    policy_generation: u32,
    /// The epoch of the peers' flow guards: set when a policy is first applied.
    guard_epoch: Option<Instant>,
    /// Keys the guards' hashes.
    flow_seed: [u64; 2],
}

impl PeerSet {
    /// An empty set for the host whose networks are `nets`. `seed` picks the first index
    /// generation, so that indexes differ between restarts (pass a random value).
    pub fn new(identity: Arc<LocalIdentity>, seed: u32, nets: HostNets) -> Self {
        Self {
            keys: HostKeys::one(identity),
            match_names: false,
            peer_nets: Arc::new(nets.clone()),
            host_nets: nets,
            entries: BTreeMap::new(),
            next_id: 1,
            free_slots: BTreeSet::new(),
            next_slot: 0,
            generation: seed & GENERATION_MASK,
            policy: None,
            filter: Arc::new(Filter::allow_all()),
            policy_generation: 0,
            guard_epoch: None,
            flow_seed: [u64::from(seed), u64::from(seed).rotate_left(32)],
        }
    }

    /// Keys the hash of the peers' conntrack tables (pass 128 random bits before applying a
    /// policy), so that a peer cannot aim its flows at one place of a table.
    pub fn seed_flows(&mut self, seed: [u64; 2]) {
        self.flow_seed = seed;
    }

    /// Makes `policy` the one in force (`None`: none, everything is allowed): the next
    /// [`PeerSet::table`] carries its filter, of a new generation when it changed, and every
    /// peer has a flow guard by then if it enforces anything. `now` is the guards' epoch, the
    /// first time. Returns whether the policy changed.
    pub fn apply_policy(&mut self, now: Instant, policy: Option<&HostFilter>) -> bool {
        if self.policy.as_ref() == policy {
            return false;
        }
        self.policy_generation = self.policy_generation.wrapping_add(1);
        let allow_all = HostFilter {
            default: wgmesh_config::policy::Action::Allow,
            rules: Vec::new(),
        };
        let filter = Filter::new(
            policy.unwrap_or(&allow_all),
            self.policy_generation,
            Some(&self.filter),
        );
        self.filter = Arc::new(filter);
        self.policy = policy.cloned();
        if self.filter.enforces() {
            self.guard_epoch.get_or_insert(now);
            for entry in self.entries.values() {
                self.guard(&entry.peer);
            }
        }
        true
    }

    /// The filter in force.
    pub fn filter(&self) -> &Arc<Filter> {
        &self.filter
    }

    /// The policy in force, as applied; `None` when there is none.
    pub fn policy(&self) -> Option<&HostFilter> {
        self.policy.as_ref()
    }

    /// Gives `peer` a flow guard, once a policy has set the guards' epoch.
    fn guard(&self, peer: &Peer) {
        let Some(epoch) = self.guard_epoch else {
            return;
        };
        let seed = [
            self.flow_seed[0] ^ u64::from(peer.index()),
            self.flow_seed[1],
        ];
        peer.lock()
            .ensure_guard(|| FlowGuard::new(ENTRIES_PER_PEER, seed, epoch));
    }

    /// The host's current identity.
    pub fn identity(&self) -> &Arc<LocalIdentity> {
        &self.keys.current
    }

    /// The host's keys.
    pub fn host_keys(&self) -> &HostKeys {
        &self.keys
    }

    /// Static mode: match a configured peer to a running one by its name and allowed IPs too,
    /// so that a peer whose key was edited in place keeps its session until the new key's is up.
    pub fn match_names(&mut self, on: bool) {
        self.match_names = on;
    }

    /// Makes the set match `desired`: adds new peers, removes missing ones, and updates changed
    /// ones in place so that their sessions survive. Validates everything before changing
    /// anything.
    pub fn apply(&mut self, desired: &[PeerSettings]) -> Result<PeerChanges, PeerSetError> {
        self.check(desired)?;
        let old_routes = self.routed_prefixes();
        let matched = self.match_running(desired);
        let kept: BTreeSet<PeerId> = matched.iter().flatten().copied().collect();
        let mut changes = PeerChanges::default();

        let gone: Vec<PeerId> = self
            .entries
            .keys()
            .filter(|id| !kept.contains(id))
            .copied()
            .collect();
        for id in gone {
            if let Some(entry) = self.entries.remove(&id) {
                self.free_slots.insert(entry.peer.index() & SLOT_MASK);
            }
            changes.removed.push(id);
        }
        for (settings, id) in desired.iter().zip(matched) {
            match id {
                Some(id) => {
                    if self.update(id, settings) {
                        changes.changed.push(id);
                    }
                }
                None => changes.added.push(self.add(settings)),
            }
        }
        let new_routes = self.routed_prefixes();
        changes.routes_added = new_routes.difference(&old_routes).copied().collect();
        changes.routes_removed = old_routes.difference(&new_routes).copied().collect();
        self.share_nets();
        Ok(changes)
    }

    /// Replaces the host's networks (its addresses changed, or the cluster CIDR became known);
    /// every peer sees them from its next packet on.
    pub fn set_host_nets(&mut self, nets: HostNets) {
        self.host_nets = nets;
        self.share_nets();
    }

    /// The host's networks, as last given.
    pub fn host_nets(&self) -> &HostNets {
        &self.host_nets
    }

    /// Gives every peer the host's networks with the prefixes routed now.
    fn share_nets(&mut self) {
        let nets = Arc::new(self.host_nets.with_routed(self.routed_prefixes()));
        if nets == self.peer_nets {
            return;
        }
        for entry in self.entries.values() {
            entry.peer.lock().set_host_nets(nets.clone());
        }
        self.peer_nets = nets;
    }

    /// Makes the host's keys `keys` (a rotation of this host starts, ends or rolls back): every
    /// peer gets a lane for the new current key while the old one carries traffic, and loses
    /// the lanes of a key no longer held. Peers keep their ids, routes, endpoints and counters;
    /// the next [`PeerSet::table`] carries the keys to the data path together with the tunnels.
    /// Refused, changing nothing, when a peer holds one of the keys.
    pub fn set_host_keys(&mut self, keys: HostKeys) -> Result<(), PeerSetError> {
        for id in keys.all() {
            let key = id.public_key();
            if self
                .entries
                .values()
                .any(|e| e.settings.keys.contains(&key))
            {
                return Err(PeerSetError::OwnKey { key });
            }
        }
        for entry in self.entries.values() {
            entry
                .peer
                .lock()
                .relane(&keys, &entry.settings, entry.peer.index());
        }
        self.keys = keys;
        Ok(())
    }

    /// A snapshot for the data path.
    pub fn table(&self) -> PeerTable {
        let mut slots: Vec<Option<Arc<Peer>>> = Vec::new();
        for entry in self.entries.values() {
            let slot = (entry.peer.index() & SLOT_MASK) as usize;
            if slots.len() <= slot {
                slots.resize(slot + 1, None);
            }
            slots[slot] = Some(entry.peer.clone());
        }
        let by_key = self
            .entries
            .values()
            .flat_map(|e| e.settings.keys.all().iter().map(|k| (*k, e.peer.clone())))
            .collect();
        let routes = AllowedIps::build(self.entries.values().flat_map(|e| {
            e.settings
                .allowed_ips
                .iter()
                .map(move |net| (*net, e.peer.clone()))
        }));
        PeerTable {
            keys: self.keys.clone(),
            slots,
            by_key,
            routes,
            filter: self.filter.clone(),
            subnet: self.host_nets.subnet(),
        }
    }

    /// Every prefix routed into the tunnel device.
    pub fn routed_prefixes(&self) -> BTreeSet<IpNet> {
        self.entries
            .values()
            .flat_map(|e| e.settings.allowed_ips.iter().copied())
            .collect()
    }

    /// The settings of every peer, by id.
    pub fn settings(&self) -> impl Iterator<Item = (PeerId, &PeerSettings)> {
        self.entries.iter().map(|(id, e)| (*id, &e.settings))
    }

    fn check(&self, desired: &[PeerSettings]) -> Result<(), PeerSetError> {
        if desired.len() > MAX_PEERS {
            return Err(PeerSetError::TooMany {
                count: desired.len(),
            });
        }
        let mut seen = BTreeSet::new();
        for key in desired.iter().flat_map(|p| p.keys.all()) {
            if self.keys.holds(key) {
                return Err(PeerSetError::OwnKey { key: *key });
            }
            if !seen.insert(*key) {
                return Err(PeerSetError::SharedKey { key: *key });
            }
        }
        Ok(())
    }

    /// The running peer each desired one is, if any: the first not yet taken that holds one of
    /// its keys; in static mode ([`PeerSet::match_names`]) else the one not yet taken with its
    /// name and allowed IPs. Linear in the number of peers and keys.
    fn match_running(&self, desired: &[PeerSettings]) -> Vec<Option<PeerId>> {
        let running_keys: HashMap<PublicKey, PeerId> = self
            .entries
            .iter()
            .flat_map(|(id, e)| e.settings.keys.all().iter().map(move |k| (*k, *id)))
            .collect();
        let mut taken = HashSet::new();
        let mut matched: Vec<Option<PeerId>> = desired
            .iter()
            .map(|d| {
                let id = d
                    .keys
                    .all()
                    .iter()
                    .filter_map(|k| running_keys.get(k))
                    .find(|id| !taken.contains(*id))?;
                taken.insert(*id);
                Some(*id)
            })
            .collect();
        if self.match_names {
            for (d, m) in desired.iter().zip(matched.iter_mut()) {
                if m.is_some() || d.name.is_none() {
                    continue;
                }
                *m = self
                    .entries
                    .iter()
                    .find(|(id, e)| {
                        !taken.contains(*id)
                            && e.settings.name == d.name
                            && e.settings.allowed_ips == d.allowed_ips
                    })
                    .map(|(id, _)| *id);
                if let Some(id) = *m {
                    taken.insert(id);
                }
            }
        }
        matched
    }

    /// Applies `settings` to the running peer `id`; whether anything changed.
    fn update(&mut self, id: PeerId, settings: &PeerSettings) -> bool {
        let Some(entry) = self.entries.get_mut(&id) else {
            return false;
        };
        if entry.settings == *settings {
            return false;
        }
        entry.peer.update(&self.keys, &entry.settings, settings);
        entry.settings = settings.clone();
        true
    }

    fn add(&mut self, settings: &PeerSettings) -> PeerId {
        let id = PeerId::new(self.next_id);
        self.next_id += 1;
        let index = self.allocate_index();
        let peer = Arc::new(Peer::new(
            &self.keys,
            id,
            index,
            settings,
            self.peer_nets.clone(),
        ));
        if self.filter.enforces() {
            self.guard(&peer);
        }
        self.entries.insert(
            id,
            Entry {
                peer,
                settings: settings.clone(),
            },
        );
        id
    }

    fn allocate_index(&mut self) -> u32 {
        let slot = match self.free_slots.pop_first() {
            Some(s) => s,
            None => {
                let s = self.next_slot;
                self.next_slot += 1;
                s
            }
        };
        self.generation = (self.generation + 1) & GENERATION_MASK;
        (self.generation << GENERATION_SHIFT) | slot
    }
}

#[cfg(test)]
mod tests;
