//! The set of peers: [`PeerSet`] is the master copy, owned by the agent's control side and changed
//! by configuration; [`PeerTable`] is an immutable snapshot of it that the data-path threads load
//! once per batch (through `arc-swap`, no lock) to find a peer by receiver index, public key or
//! inner destination.
//!
//! No I/O, no clock.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;
use wgmesh_config::PublicKey;

use crate::peers::noise::LocalIdentity;
use crate::peers::peer::{Peer, PeerSettings};
use crate::peers::route::AllowedIps;

/// Low bits of a peer index select a slot; the high bits are a generation, so that a message for
/// a removed peer never reaches the peer that took its slot.
const SLOT_BITS: u32 = 14;
const SLOT_MASK: u32 = (1 << SLOT_BITS) - 1;
const GENERATION_MASK: u32 = (1 << (24 - SLOT_BITS)) - 1;

/// Most peers one agent holds.
pub const MAX_PEERS: usize = 1 << SLOT_BITS;

/// An immutable snapshot of the peers, for the data path.
#[derive(Default)]
pub struct PeerTable {
    slots: Vec<Option<Arc<Peer>>>,
    by_key: HashMap<PublicKey, Arc<Peer>>,
    routes: AllowedIps<Arc<Peer>>,
}

impl PeerTable {
    /// The peer a receiver index (already shifted right by 8) belongs to.
    #[inline]
    pub fn by_index(&self, index: u32) -> Option<&Arc<Peer>> {
        let peer = self.slots.get((index & SLOT_MASK) as usize)?.as_ref()?;
        (peer.index() == index).then_some(peer)
    }

    /// The peer with this static public key.
    pub fn by_key(&self, key: &PublicKey) -> Option<&Arc<Peer>> {
        self.by_key.get(key)
    }

    /// The peer whose allowed IPs hold the longest prefix containing `dst`.
    #[inline]
    pub fn route(&self, dst: IpAddr) -> Option<&Arc<Peer>> {
        self.routes.lookup(dst)
    }

    /// All peers, in slot order.
    pub fn peers(&self) -> impl Iterator<Item = &Arc<Peer>> {
        self.slots.iter().flatten()
    }
}

/// What [`PeerSet::apply`] changed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct PeerChanges {
    /// Public keys of peers added.
    pub added: Vec<PublicKey>,
    /// Public keys of peers removed.
    pub removed: Vec<PublicKey>,
    /// Public keys of peers whose settings changed (sessions kept where possible).
    pub changed: Vec<PublicKey>,
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

/// Errors from [`PeerSet::apply`].
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
}

struct Entry {
    peer: Arc<Peer>,
    settings: PeerSettings,
}

/// The master copy of the peers.
pub struct PeerSet {
    identity: Arc<LocalIdentity>,
    entries: BTreeMap<PublicKey, Entry>,
    free_slots: BTreeSet<u32>,
    next_slot: u32,
    generation: u32,
}

impl PeerSet {
    /// An empty set. `seed` picks the first index generation, so that indexes differ between
    /// restarts (pass a random value).
    pub fn new(identity: Arc<LocalIdentity>, seed: u32) -> Self {
        Self {
            identity,
            entries: BTreeMap::new(),
            free_slots: BTreeSet::new(),
            next_slot: 0,
            generation: seed & GENERATION_MASK,
        }
    }

    /// The host's identity.
    pub fn identity(&self) -> &Arc<LocalIdentity> {
        &self.identity
    }

    /// Makes the set match `desired`: adds new peers, removes missing ones, and updates changed
    /// ones in place so that their sessions survive. Validates everything before changing
    /// anything.
    pub fn apply(&mut self, desired: &[PeerSettings]) -> Result<PeerChanges, PeerSetError> {
        if desired.len() > MAX_PEERS {
            return Err(PeerSetError::TooMany {
                count: desired.len(),
            });
        }
        let own = self.identity.public_key();
        if let Some(p) = desired.iter().find(|p| p.public_key == own) {
            return Err(PeerSetError::OwnKey { key: p.public_key });
        }
        let old_routes = self.routed_prefixes();
        let wanted: BTreeMap<PublicKey, &PeerSettings> =
            desired.iter().map(|p| (p.public_key, p)).collect();
        let mut changes = PeerChanges::default();

        let gone: Vec<PublicKey> = self
            .entries
            .keys()
            .filter(|k| !wanted.contains_key(k))
            .copied()
            .collect();
        for key in gone {
            if let Some(entry) = self.entries.remove(&key) {
                self.free_slots.insert(entry.peer.index() & SLOT_MASK);
            }
            changes.removed.push(key);
        }
        for (key, settings) in wanted {
            match self.entries.get_mut(&key) {
                Some(entry) if entry.settings == *settings => {}
                Some(entry) => {
                    entry.peer.update(&self.identity, &entry.settings, settings);
                    entry.settings = settings.clone();
                    changes.changed.push(key);
                }
                None => {
                    let index = self.allocate_index();
                    let peer = Arc::new(Peer::new(&self.identity, index, settings));
                    self.entries.insert(
                        key,
                        Entry {
                            peer,
                            settings: settings.clone(),
                        },
                    );
                    changes.added.push(key);
                }
            }
        }
        let new_routes = self.routed_prefixes();
        changes.routes_added = new_routes.difference(&old_routes).copied().collect();
        changes.routes_removed = old_routes.difference(&new_routes).copied().collect();
        Ok(changes)
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
            .iter()
            .map(|(k, e)| (*k, e.peer.clone()))
            .collect();
        let routes = AllowedIps::build(self.entries.values().flat_map(|e| {
            e.settings
                .allowed_ips
                .iter()
                .map(move |net| (*net, e.peer.clone()))
        }));
        PeerTable {
            slots,
            by_key,
            routes,
        }
    }

    /// Every prefix routed into the tunnel device.
    pub fn routed_prefixes(&self) -> BTreeSet<IpNet> {
        self.entries
            .values()
            .flat_map(|e| e.settings.allowed_ips.iter().copied())
            .collect()
    }

    /// The settings of every peer, by key.
    pub fn settings(&self) -> impl Iterator<Item = &PeerSettings> {
        self.entries.values().map(|e| &e.settings)
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
        (self.generation << SLOT_BITS) | slot
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wgmesh_config::PrivateKey;

    fn settings(key: PublicKey, nets: &[&str]) -> PeerSettings {
        PeerSettings {
            name: None,
            public_key: key,
            endpoint: Some("198.18.0.2:51820".parse().unwrap()),
            allowed_ips: nets.iter().map(|n| n.parse().unwrap()).collect(),
            persistent_keepalive: None,
            preshared_key: None,
        }
    }

    fn set() -> PeerSet {
        PeerSet::new(Arc::new(LocalIdentity::new(&PrivateKey::generate())), 7)
    }

    #[test]
    fn add_change_remove_reports_routes() {
        let mut s = set();
        let b = PrivateKey::generate().public_key();
        let c = PrivateKey::generate().public_key();
        let ch = s
            .apply(&[
                settings(b, &["10.42.2.0/24"]),
                settings(c, &["10.42.3.0/24"]),
            ])
            .unwrap();
        assert_eq!(ch.added.len(), 2);
        assert_eq!(ch.routes_added.len(), 2);
        let before = s.table().by_key(&b).unwrap().clone();

        let ch = s
            .apply(&[settings(b, &["10.42.2.0/24", "10.42.9.0/24"])])
            .unwrap();
        assert_eq!(ch.removed, vec![c]);
        assert_eq!(ch.changed, vec![b]);
        assert_eq!(ch.routes_added, vec!["10.42.9.0/24".parse().unwrap()]);
        assert_eq!(ch.routes_removed, vec!["10.42.3.0/24".parse().unwrap()]);
        // The changed peer is the same object: its session survives.
        let after = s.table().by_key(&b).unwrap().clone();
        assert!(Arc::ptr_eq(&before, &after));
        assert_eq!(after.lock().allowed_ips.len(), 2);

        assert!(s
            .apply(&[settings(b, &["10.42.2.0/24", "10.42.9.0/24"])])
            .unwrap()
            .is_empty());
    }

    #[test]
    fn lookups_by_index_key_and_route() {
        let mut s = set();
        let b = PrivateKey::generate().public_key();
        s.apply(&[settings(b, &["10.42.2.0/24"])]).unwrap();
        let t = s.table();
        let peer = t.by_key(&b).unwrap();
        assert!(Arc::ptr_eq(t.by_index(peer.index()).unwrap(), peer));
        assert!(t.by_index(peer.index() ^ (1 << SLOT_BITS)).is_none());
        assert!(Arc::ptr_eq(
            t.route("10.42.2.9".parse().unwrap()).unwrap(),
            peer
        ));
        assert!(t.route("10.42.3.9".parse().unwrap()).is_none());
        assert_eq!(t.peers().count(), 1);
    }

    #[test]
    fn reused_slot_gets_a_new_index() {
        let mut s = set();
        let b = PrivateKey::generate().public_key();
        let c = PrivateKey::generate().public_key();
        s.apply(&[settings(b, &[])]).unwrap();
        let old = s.table().by_key(&b).unwrap().index();
        s.apply(&[settings(c, &[])]).unwrap();
        let t = s.table();
        let new = t.by_key(&c).unwrap().index();
        assert_eq!(old & SLOT_MASK, new & SLOT_MASK);
        assert_ne!(old, new);
        assert!(t.by_index(old).is_none());
        assert!(new < (1 << 24));
    }

    #[test]
    fn own_key_is_refused_and_nothing_changes() {
        let mut s = set();
        let own = s.identity().public_key();
        let b = PrivateKey::generate().public_key();
        let err = s
            .apply(&[settings(b, &[]), settings(own, &[])])
            .unwrap_err();
        assert_eq!(err, PeerSetError::OwnKey { key: own });
        assert_eq!(s.table().peers().count(), 0);
    }
}
