//! Wire types the control plane sends to an agent: the [`Netmap`], this host's
//! [`HostIdentity`] and its [`NetmapPeer`]s. Serialised as JSON.
//!
//! A netmap is everything an agent joined to a control plane needs to configure its tunnels: its
//! own name, key, subnet and endpoint, and the peers it may reach. `revision` grows with every
//! change in the control plane's registry; agents long-poll with the revision they hold and
//! apply every newer one.
//!
//! The types are shaped for what later issues add without a rewrite: a peer has a list of
//! public keys (more than one during a hitless key rotation) and labels (for label-based
//! policy), and a per-pair preshared key will become one more optional field.
//!
//! Key rotation (the control plane's side is `wgmesh_control::registry`'s rotation): a host's
//! [`HostIdentity::key_epoch`] counts its registered keys (0 at join, +1 per rotation), and
//! [`HostIdentity::rotation`] is the control plane's order while one runs: a
//! [`KeyRotationOrder`] without `new_key` asks the host to make a new key and report it; with
//! `new_key` it says that the key was announced to the host's peers, which then list it first
//! in their entry of the host (`public_keys = [new, old]`, [`NetmapPeer::public_keys`]). When
//! the order is gone, `public_key` is the registered key: the new one if the rotation
//! completed, the old one if it was abandoned (the host then goes back to its old key).
//!
//! Determinism: the control plane emits peers sorted by name, each peer's keys in its order
//! (the current key first) and allowed IPs sorted, so equal registries give byte-identical JSON
//! ([`Netmap::normalize`] puts any netmap in that form, [`Netmap::check`] verifies the
//! invariants an agent relies on).
//!
//! Netmaps are responses, so unknown fields are ignored rather than refused: an older agent can
//! read a newer control plane's netmap. This module performs no I/O.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::control::{MAX_HOST_PREFIX_V4, MAX_HOST_PREFIX_V6};
use crate::key::{PresharedKey, PublicKey};

mod filter;
pub use filter::{FilterError, FilterRule, HostFilter, MAX_FILTER_NETS, MAX_FILTER_RULES};

/// The map of peers one host should have, as the control plane computed it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Netmap {
    /// The registry revision this netmap was computed from; grows with every change.
    pub revision: u64,
    /// The host this netmap is for.
    pub host: HostIdentity,
    /// The hosts this one may reach, sorted by name. Never contains `host` itself.
    #[serde(default)]
    pub peers: Vec<NetmapPeer>,
    /// The cluster CIDR every host subnet is taken from. When given, the agent refuses a netmap
    /// that routes anything outside it into the tunnel (the underlay, the control plane), so a
    /// bad netmap cannot cut a host off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_cidr: Option<IpNet>,
    /// Which run of the control plane issued it (random at every start; 0 when unknown).
    /// Deltas are only computed against netmaps of the same run, whose history the control
    /// plane knows for certain.
    #[serde(default)]
    pub epoch: u64,
    /// The policy compiled for this host; `None` when no policy was applied (everything is
    /// allowed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<HostFilter>,
}

/// The identity the control plane holds for the host a netmap is addressed to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostIdentity {
    /// The host's name, unique in the cluster.
    pub name: String,
    /// The host's WireGuard public key, as it registered it.
    pub public_key: PublicKey,
    /// The overlay prefix the control plane assigned to this host's workloads.
    pub subnet: IpNet,
    /// The address other hosts are told to send to, if the host gave one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<SocketAddr>,
    /// The epoch of `public_key`: 0 at join, one more at each completed rotation.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub key_epoch: u64,
    /// The key rotation the control plane runs for this host, if any; absent: none, and
    /// `public_key` is the key registered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotation: Option<KeyRotationOrder>,
}

/// The control plane's order to a host about its key rotation ([`HostIdentity::rotation`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRotationOrder {
    /// The epoch the new key will have: the host's `key_epoch` + 1. The host's key report names
    /// it.
    pub epoch: u64,
    /// `None` (phase *requested*): make a new key, keep it on disk, report its public key.
    /// `Some` (phase *announced*): this key, reported by the host, is in its peers' netmaps
    /// (first, before the old one); the host accepts both until the rotation ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_key: Option<PublicKey>,
}

/// One remote host in a netmap.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetmapPeer {
    /// The peer's name, unique in the cluster.
    pub name: String,
    /// The peer's WireGuard public keys, in order, the current one first; at least one, none
    /// twice. Two while the peer rotates its key (`[new, old]`, once its new key is announced),
    /// so that both are accepted while tunnels move to the new one.
    pub public_keys: Vec<PublicKey>,
    /// Where to send the first handshake; `None` waits for the peer to connect first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<SocketAddr>,
    /// Prefixes routed to this peer and accepted from it, sorted; host bits are zero.
    #[serde(default)]
    pub allowed_ips: Vec<IpNet>,
    /// The peer's labels (from its join token and its agent.toml).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// The epoch of `public_keys[0]` (its host's `key_epoch`, one more while a new key is
    /// announced).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub key_epoch: u64,
    /// With `preshared_keys = true` on the control plane: the preshared key of each pair of
    /// keys (one of this host's, one of the peer's) that a tunnel between them may use. Only
    /// the two hosts of a pair are ever sent its key.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub preshared_keys: Vec<PairKey>,
}

/// The preshared key of one pair of keys: this host's `local_key` and the peer's `remote_key`.
#[derive(Clone, Serialize, Deserialize)]
pub struct PairKey {
    /// One of this host's public keys.
    pub local_key: PublicKey,
    /// One of the peer's public keys.
    pub remote_key: PublicKey,
    /// The pair's preshared key, base64.
    #[serde(with = "psk_base64")]
    pub key: PresharedKey,
}

impl PartialEq for PairKey {
    fn eq(&self, other: &Self) -> bool {
        self.local_key == other.local_key
            && self.remote_key == other.remote_key
            && self.key.as_bytes() == other.key.as_bytes()
    }
}
impl Eq for PairKey {}

impl std::fmt::Debug for PairKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PairKey")
            .field("local_key", &self.local_key)
            .field("remote_key", &self.remote_key)
            .field("key", &"<redacted>")
            .finish()
    }
}

/// A preshared key as a base64 string in JSON.
mod psk_base64 {
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::PresharedKey;

    pub(super) fn serialize<S: Serializer>(key: &PresharedKey, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&key.to_base64())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<PresharedKey, D::Error> {
        let text = zeroize::Zeroizing::new(String::deserialize(d)?);
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Why a netmap breaks an invariant agents rely on (see [`Netmap::check`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NetmapError {
    /// A peer has the host's own name or public key.
    #[error("peer {peer:?} is the host itself")]
    SelfPeer {
        /// The offending peer's name.
        peer: String,
    },
    /// A peer has no public key.
    #[error("peer {peer:?} has no public key")]
    NoKey {
        /// The offending peer's name.
        peer: String,
    },
    /// Two peers have the same name.
    #[error("two peers are named {peer:?}")]
    DuplicateName {
        /// The repeated name.
        peer: String,
    },
    /// Two peers (or one peer twice) have the same public key.
    #[error("public key {key} is given to {first:?} and {second:?}")]
    DuplicateKey {
        /// The repeated key.
        key: PublicKey,
        /// The first peer holding it.
        first: String,
        /// The second peer holding it.
        second: String,
    },
    /// The host's subnet or a peer's allowed IP is outside the cluster CIDR.
    #[error("{net} of {owner:?} is outside the cluster CIDR {cluster}")]
    OutsideCluster {
        /// The offending prefix.
        net: IpNet,
        /// The host or peer it belongs to.
        owner: String,
        /// The cluster CIDR.
        cluster: IpNet,
    },
    /// The host's or a peer's public key is a low-order point (see
    /// [`PublicKey::is_low_order`]).
    #[error("{owner:?} has the low-order public key {key}, which no real host has")]
    LowOrderKey {
        /// The host or peer it belongs to.
        owner: String,
        /// The key.
        key: PublicKey,
    },
    /// A prefix has host bits set (`10.42.1.7/24`): the kernel would refuse its route, and it
    /// does not say which of two readings was meant.
    #[error("{net} of {owner:?} has host bits set (write {trunc})")]
    HostBits {
        /// The offending prefix.
        net: IpNet,
        /// Its network form.
        trunc: IpNet,
        /// The host or peer it belongs to.
        owner: String,
    },
    /// The host's subnet has no room for a gateway and a workload.
    #[error("the host subnet {subnet} is too small; a host subnet is /{max} or shorter")]
    SubnetTooSmall {
        /// The subnet.
        subnet: IpNet,
        /// The longest prefix a host subnet may have in its family.
        max: u8,
    },
    /// The netmap names no cluster CIDR, though this host pinned one when it joined.
    #[error("the netmap names no cluster CIDR; this host joined the cluster {pinned}")]
    NoClusterCidr {
        /// The cluster CIDR pinned at join.
        pinned: IpNet,
    },
    /// The netmap's cluster CIDR is not the one this host pinned when it joined.
    #[error("the netmap's cluster CIDR {got} is not {pinned}, the one this host joined")]
    ClusterChanged {
        /// The netmap's cluster CIDR.
        got: IpNet,
        /// The cluster CIDR pinned at join.
        pinned: IpNet,
    },
    /// The compiled policy filter is malformed.
    #[error("the netmap's filter is invalid: {0}")]
    Filter(FilterError),
    /// A peer's preshared key is for a pair that is not one of this host's keys and one of
    /// the peer's.
    #[error("peer {peer:?} has a preshared key for {local_key} and {remote_key}, which is not a pair of this host's key and the peer's")]
    PresharedKeyPair {
        /// The peer.
        peer: String,
        /// The pair's first key.
        local_key: PublicKey,
        /// The pair's second key.
        remote_key: PublicKey,
    },
    /// The host's rotation order announces the key it already has.
    #[error("the rotation of {host:?} announces its current key {key} as its new one")]
    RotationKeyUnchanged {
        /// The host's name.
        host: String,
        /// The key.
        key: PublicKey,
    },
    /// The host's rotation order announces a key a peer has.
    #[error("the rotation of {host:?} announces {key}, a key of peer {peer:?}")]
    RotationKeyTaken {
        /// The host's name.
        host: String,
        /// The key.
        key: PublicKey,
        /// The peer holding it.
        peer: String,
    },
    /// The host's rotation order is not for the epoch after its key's.
    #[error("the rotation of {host:?} is for key epoch {epoch}, not {} (its key's epoch + 1)", key_epoch + 1)]
    RotationEpoch {
        /// The host's name.
        host: String,
        /// The order's epoch.
        epoch: u64,
        /// The host's key epoch.
        key_epoch: u64,
    },
    /// An allowed IP overlaps the host's subnet or another peer's allowed IP.
    #[error("allowed IP {net} of {peer:?} overlaps {other} of {owner:?}")]
    Overlap {
        /// The offending prefix.
        net: IpNet,
        /// The peer it belongs to.
        peer: String,
        /// The prefix it overlaps.
        other: IpNet,
        /// Who holds `other`: a peer's name, or the host's own name for its subnet.
        owner: String,
    },
}

impl Netmap {
    /// Puts the netmap in canonical form: peers sorted by name, every peer's keys deduplicated
    /// (in their order: the first is the current one) and allowed IPs sorted and deduplicated.
    pub fn normalize(&mut self) {
        for peer in &mut self.peers {
            let mut seen = Vec::with_capacity(peer.public_keys.len());
            peer.public_keys.retain(|k| {
                if seen.contains(k) {
                    return false;
                }
                seen.push(*k);
                true
            });
            peer.allowed_ips.sort();
            peer.allowed_ips.dedup();
        }
        self.peers.sort_by(|a, b| a.name.cmp(&b.name));
    }

    /// [`Netmap::check`], and the netmap is for the cluster `pinned` (the cluster CIDR this
    /// host learnt when it joined): it names that cluster CIDR exactly, so everything it routes
    /// is inside it. A netmap without a cluster CIDR, or with another (wider) one, is refused.
    pub fn check_pinned(&self, pinned: IpNet) -> Result<(), NetmapError> {
        match self.cluster_cidr {
            None => return Err(NetmapError::NoClusterCidr { pinned }),
            Some(got) if got != pinned => return Err(NetmapError::ClusterChanged { got, pinned }),
            Some(_) => {}
        }
        self.check()
    }

    /// Checks the invariants an agent relies on before applying a netmap: the host's subnet
    /// has room for a gateway and a workload, no peer is the host itself, every peer has a key
    /// and none is low-order, names and keys are unique, and no allowed IP overlaps the
    /// host's subnet or another allowed IP (so every address routes to exactly one peer). The
    /// host's own key is not low-order either, and a rotation order is for the epoch after the
    /// host's key's and announces a key that is not low-order, not the host's current one and
    /// no peer's.
    /// When the netmap names a cluster CIDR, everything is inside it; that the cluster CIDR is
    /// the right one is [`Netmap::check_pinned`]'s job.
    pub fn check(&self) -> Result<(), NetmapError> {
        self.check_subnet_size()?;
        self.check_prefixes()?;
        if let Some(filter) = &self.filter {
            filter.check().map_err(NetmapError::Filter)?;
        }
        // Parsing refuses a low-order key already; a netmap built in-process is checked too,
        // the host's own key as much as the peers'.
        if self.host.public_key.is_low_order() {
            return Err(NetmapError::LowOrderKey {
                owner: self.host.name.clone(),
                key: self.host.public_key,
            });
        }
        self.check_rotation()?;
        let mut names = BTreeMap::new();
        let mut keys: BTreeMap<PublicKey, &str> = BTreeMap::new();
        let mut nets: Vec<(IpNet, &str)> = vec![(self.host.subnet, &self.host.name)];
        for peer in &self.peers {
            self.check_peer_keys(peer)?;
            let name = peer.name.as_str();
            if names.insert(name, ()).is_some() {
                return Err(NetmapError::DuplicateName { peer: name.into() });
            }
            for key in &peer.public_keys {
                if let Some(first) = keys.insert(*key, name) {
                    return Err(NetmapError::DuplicateKey {
                        key: *key,
                        first: first.into(),
                        second: name.into(),
                    });
                }
            }
            for net in &peer.allowed_ips {
                if let Some((other, owner)) = nets
                    .iter()
                    .find(|(other, _)| other.contains(net) || net.contains(other))
                {
                    return Err(NetmapError::Overlap {
                        net: *net,
                        peer: name.into(),
                        other: *other,
                        owner: (*owner).into(),
                    });
                }
                nets.push((*net, name));
            }
        }
        Ok(())
    }

    /// The host's rotation order, if any, is for the next epoch, and its new key is not
    /// low-order, not the host's current key and no peer's.
    fn check_rotation(&self) -> Result<(), NetmapError> {
        let Some(order) = &self.host.rotation else {
            return Ok(());
        };
        let host = &self.host;
        if Some(order.epoch) != host.key_epoch.checked_add(1) {
            return Err(NetmapError::RotationEpoch {
                host: host.name.clone(),
                epoch: order.epoch,
                key_epoch: host.key_epoch,
            });
        }
        let Some(key) = order.new_key else {
            return Ok(());
        };
        if key.is_low_order() {
            return Err(NetmapError::LowOrderKey {
                owner: host.name.clone(),
                key,
            });
        }
        if key == host.public_key {
            return Err(NetmapError::RotationKeyUnchanged {
                host: host.name.clone(),
                key,
            });
        }
        if let Some(peer) = self.peer_by_key(&key) {
            return Err(NetmapError::RotationKeyTaken {
                host: host.name.clone(),
                key,
                peer: peer.name.clone(),
            });
        }
        Ok(())
    }

    /// The host's subnet has room for a gateway and a workload.
    fn check_subnet_size(&self) -> Result<(), NetmapError> {
        let max = match self.host.subnet {
            IpNet::V4(_) => MAX_HOST_PREFIX_V4,
            IpNet::V6(_) => MAX_HOST_PREFIX_V6,
        };
        if self.host.subnet.prefix_len() > max {
            return Err(NetmapError::SubnetTooSmall {
                subnet: self.host.subnet,
                max,
            });
        }
        Ok(())
    }

    /// Every prefix (the host's subnet and each allowed IP) has no host bits and, when the
    /// netmap names a cluster CIDR, is inside it.
    fn check_prefixes(&self) -> Result<(), NetmapError> {
        let prefixes = std::iter::once((&self.host.subnet, &self.host.name)).chain(
            self.peers
                .iter()
                .flat_map(|p| p.allowed_ips.iter().map(move |n| (n, &p.name))),
        );
        for (net, owner) in prefixes {
            if net.trunc() != *net {
                return Err(NetmapError::HostBits {
                    net: *net,
                    trunc: net.trunc(),
                    owner: owner.clone(),
                });
            }
            if let Some(cluster) = self.cluster_cidr.filter(|c| !c.contains(net)) {
                return Err(NetmapError::OutsideCluster {
                    net: *net,
                    owner: owner.clone(),
                    cluster,
                });
            }
        }
        Ok(())
    }

    /// `peer` is not the host itself, has a key, and none is low-order; its preshared keys are
    /// for pairs of this host's keys (the registered one, or the new one of its rotation) and
    /// the peer's.
    fn check_peer_keys(&self, peer: &NetmapPeer) -> Result<(), NetmapError> {
        let name = peer.name.as_str();
        let ours = |k: &PublicKey| {
            *k == self.host.public_key || self.host.rotation.and_then(|r| r.new_key) == Some(*k)
        };
        if let Some(p) = peer
            .preshared_keys
            .iter()
            .find(|p| !ours(&p.local_key) || !peer.public_keys.contains(&p.remote_key))
        {
            return Err(NetmapError::PresharedKeyPair {
                peer: name.into(),
                local_key: p.local_key,
                remote_key: p.remote_key,
            });
        }
        if name == self.host.name || peer.public_keys.contains(&self.host.public_key) {
            return Err(NetmapError::SelfPeer { peer: name.into() });
        }
        if peer.public_keys.is_empty() {
            return Err(NetmapError::NoKey { peer: name.into() });
        }
        if let Some(key) = peer.public_keys.iter().find(|k| k.is_low_order()) {
            return Err(NetmapError::LowOrderKey {
                owner: name.into(),
                key: *key,
            });
        }
        Ok(())
    }

    /// The peer holding `key` among its public keys, if any.
    pub fn peer_by_key(&self, key: &PublicKey) -> Option<&NetmapPeer> {
        self.peers.iter().find(|p| p.public_keys.contains(key))
    }

    /// The netmap `delta` turns this one into: its peers removed, then its peers added or
    /// replaced (by name), its host identity and cluster CIDR taken over. Refused when the delta
    /// is for another revision, or when the result does not have the peer count the delta
    /// promises (the agent then asks for a full netmap); the result is normalized and checked.
    pub fn apply_delta(&self, delta: &NetmapDelta) -> Result<Self, DeltaError> {
        if delta.from != self.revision || delta.epoch != self.epoch {
            return Err(DeltaError::WrongBase {
                have: self.revision,
                from: delta.from,
            });
        }
        let mut peers: BTreeMap<&str, &NetmapPeer> =
            self.peers.iter().map(|p| (p.name.as_str(), p)).collect();
        for name in &delta.remove {
            peers.remove(name.as_str());
        }
        for peer in &delta.upsert {
            peers.insert(peer.name.as_str(), peer);
        }
        if peers.len() != delta.peer_count {
            return Err(DeltaError::PeerCount {
                got: peers.len(),
                expected: delta.peer_count,
            });
        }
        let mut next = Self {
            revision: delta.revision,
            host: delta.host.clone(),
            peers: peers.into_values().cloned().collect(),
            cluster_cidr: delta.cluster_cidr,
            epoch: delta.epoch,
            filter: match &delta.filter {
                Some(update) => update.filter.clone(),
                None => self.filter.clone(),
            },
        };
        next.normalize();
        next.check().map_err(DeltaError::Invalid)?;
        Ok(next)
    }
}

/// What changed in a host's netmap between two revisions: sent instead of the whole netmap
/// when the host already holds `from`, so one change costs every host a few hundred bytes
/// rather than its whole peer list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetmapDelta {
    /// The revision the delta applies to.
    pub from: u64,
    /// The revision it gives.
    pub revision: u64,
    /// The host's identity at `revision`.
    pub host: HostIdentity,
    /// Peers added or changed (whole entries), by name.
    #[serde(default)]
    pub upsert: Vec<NetmapPeer>,
    /// Names of peers removed. Applied before `upsert`, so a name removed and taken again by
    /// a new host is in both.
    #[serde(default)]
    pub remove: Vec<String>,
    /// How many peers the netmap has at `revision`: a check on the result.
    pub peer_count: usize,
    /// The cluster CIDR, as in [`Netmap::cluster_cidr`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_cidr: Option<IpNet>,
    /// The control plane's run, as in [`Netmap::epoch`].
    #[serde(default)]
    pub epoch: u64,
    /// The host's new filter, when it changed since `from`; absent when it did not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<FilterUpdate>,
}

/// A changed filter in a [`NetmapDelta`]: the whole new one, or `None` when the policy was
/// removed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FilterUpdate {
    /// The filter from the delta's revision on.
    pub filter: Option<HostFilter>,
}

/// A host's netmap update: the whole netmap, or what changed since the revision it holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NetmapUpdate {
    /// The whole netmap.
    Full(Netmap),
    /// The changes since the host's revision.
    Delta(NetmapDelta),
}

/// Why a delta cannot be applied; the agent then asks for the whole netmap.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeltaError {
    /// The delta is for another revision (or another run of the control plane) than the
    /// netmap held.
    #[error("the delta applies to revision {from} of another netmap than the one held (revision {have})")]
    WrongBase {
        /// The held revision.
        have: u64,
        /// The delta's base.
        from: u64,
    },
    /// The result does not have the promised number of peers.
    #[error("the delta gives {got} peers where the control plane has {expected}")]
    PeerCount {
        /// Peers after applying.
        got: usize,
        /// Peers the delta promises.
        expected: usize,
    },
    /// The result breaks a netmap invariant.
    #[error("the delta gives an invalid netmap: {0}")]
    Invalid(NetmapError),
}

/// Epoch 0 (a key never rotated) is left out of the JSON, as netmaps before rotations had it.
fn is_zero(n: &u64) -> bool {
    *n == 0
}

#[cfg(test)]
mod tests;
