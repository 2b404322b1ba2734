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
//! Determinism: the control plane emits peers sorted by name, each peer's keys and allowed IPs
//! sorted, so equal registries give byte-identical JSON ([`Netmap::normalize`] puts any netmap
//! in that form, [`Netmap::check`] verifies the invariants an agent relies on).
//!
//! Netmaps are responses, so unknown fields are ignored rather than refused: an older agent can
//! read a newer control plane's netmap. This module performs no I/O.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::control::{MAX_HOST_PREFIX_V4, MAX_HOST_PREFIX_V6};
use crate::key::PublicKey;

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
}

/// One remote host in a netmap.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetmapPeer {
    /// The peer's name, unique in the cluster.
    pub name: String,
    /// The peer's WireGuard public keys, sorted; at least one. More than one while the peer
    /// rotates its key, so that both the old and the new key are accepted.
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
    /// The host's subnet has no room for a gateway and a workload.
    #[error("the host subnet {subnet} is too small; a host subnet is /{max} or shorter")]
    SubnetTooSmall {
        /// The subnet.
        subnet: IpNet,
        /// The longest prefix a host subnet may have in its family.
        max: u8,
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
    /// Puts the netmap in canonical form: peers sorted by name, every peer's keys and allowed
    /// IPs sorted and deduplicated.
    pub fn normalize(&mut self) {
        for peer in &mut self.peers {
            peer.public_keys.sort();
            peer.public_keys.dedup();
            peer.allowed_ips.sort();
            peer.allowed_ips.dedup();
        }
        self.peers.sort_by(|a, b| a.name.cmp(&b.name));
    }

    /// Checks the invariants an agent relies on before applying a netmap: the host's subnet
    /// has room for a gateway and a workload, no peer is the host itself, every peer has a key,
    /// names and keys are unique, and no allowed IP overlaps the host's subnet or another
    /// allowed IP (so every address routes to exactly one peer).
    pub fn check(&self) -> Result<(), NetmapError> {
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
        if let Some(cluster) = self.cluster_cidr {
            let all = std::iter::once((&self.host.subnet, &self.host.name)).chain(
                self.peers
                    .iter()
                    .flat_map(|p| p.allowed_ips.iter().map(move |n| (n, &p.name))),
            );
            for (net, owner) in all {
                if !cluster.contains(net) {
                    return Err(NetmapError::OutsideCluster {
                        net: *net,
                        owner: owner.clone(),
                        cluster,
                    });
                }
            }
        }
        let mut names = BTreeMap::new();
        let mut keys: BTreeMap<PublicKey, &str> = BTreeMap::new();
        let mut nets: Vec<(IpNet, &str)> = vec![(self.host.subnet, &self.host.name)];
        for peer in &self.peers {
            let name = peer.name.as_str();
            if name == self.host.name || peer.public_keys.contains(&self.host.public_key) {
                return Err(NetmapError::SelfPeer { peer: name.into() });
            }
            if peer.public_keys.is_empty() {
                return Err(NetmapError::NoKey { peer: name.into() });
            }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> PublicKey {
        PublicKey::from_bytes([n; 32])
    }

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn sample() -> Netmap {
        Netmap {
            revision: 7,
            host: HostIdentity {
                name: "host-a".into(),
                public_key: key(1),
                subnet: net("10.42.0.0/24"),
                endpoint: Some("198.18.0.1:51820".parse().unwrap()),
            },
            peers: vec![
                NetmapPeer {
                    name: "host-b".into(),
                    public_keys: vec![key(2)],
                    endpoint: Some("198.18.0.2:51820".parse().unwrap()),
                    allowed_ips: vec![net("10.42.1.0/24")],
                    labels: BTreeMap::from([("zone".into(), "a".into())]),
                },
                NetmapPeer {
                    name: "host-c".into(),
                    public_keys: vec![key(3), key(4)],
                    endpoint: None,
                    allowed_ips: vec![net("10.42.2.0/24"), net("fd42::/64")],
                    labels: BTreeMap::new(),
                },
            ],
            cluster_cidr: None,
            epoch: 0,
        }
    }

    fn delta(
        from: u64,
        upsert: Vec<NetmapPeer>,
        remove: &[&str],
        peer_count: usize,
    ) -> NetmapDelta {
        let base = sample();
        NetmapDelta {
            from,
            revision: from + 3,
            host: base.host,
            upsert,
            remove: remove.iter().map(|s| (*s).to_owned()).collect(),
            peer_count,
            cluster_cidr: None,
            epoch: 0,
        }
    }

    fn peer(name: &str, k: u8, net_: &str) -> NetmapPeer {
        NetmapPeer {
            name: name.into(),
            public_keys: vec![key(k)],
            endpoint: None,
            allowed_ips: vec![net(net_)],
            labels: BTreeMap::new(),
        }
    }

    #[test]
    fn a_delta_removes_then_upserts_by_name_and_gives_a_checked_netmap() {
        let base = sample();
        // host-b leaves and its name is taken by a new host; host-d joins; host-c moves.
        let mut moved = base.peers[1].clone();
        moved.endpoint = Some("198.18.0.33:51820".parse().unwrap());
        let d = delta(
            7,
            vec![
                peer("host-d", 9, "10.42.3.0/24"),
                peer("host-b", 8, "10.42.1.0/24"),
                moved.clone(),
            ],
            &["host-b"],
            3,
        );
        let next = base.apply_delta(&d).unwrap();
        assert_eq!(next.revision, 10);
        let names: Vec<&str> = next.peers.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["host-b", "host-c", "host-d"]);
        assert_eq!(next.peers[0].public_keys, [key(8)]);
        assert_eq!(next.peers[1], moved);
        // The same changes as a full netmap compare equal.
        let mut full = next.clone();
        full.normalize();
        assert_eq!(full, next);
    }

    #[test]
    fn a_delta_for_another_revision_or_with_the_wrong_count_is_refused() {
        let base = sample();
        let err = base.apply_delta(&delta(6, vec![], &[], 2)).unwrap_err();
        assert_eq!(err, DeltaError::WrongBase { have: 7, from: 6 });
        let err = base
            .apply_delta(&delta(7, vec![], &["host-b"], 2))
            .unwrap_err();
        assert_eq!(
            err,
            DeltaError::PeerCount {
                got: 1,
                expected: 2
            }
        );
        // A delta giving a peer the host's own subnet is refused like a full netmap would be.
        let err = base
            .apply_delta(&delta(7, vec![peer("host-x", 9, "10.42.0.0/25")], &[], 3))
            .unwrap_err();
        assert!(
            matches!(err, DeltaError::Invalid(NetmapError::Overlap { .. })),
            "{err:?}"
        );
    }

    #[test]
    fn updates_are_tagged_json() {
        let full = serde_json::to_value(NetmapUpdate::Full(sample())).unwrap();
        assert!(full["full"]["peers"].is_array());
        let d = serde_json::to_value(NetmapUpdate::Delta(delta(7, vec![], &[], 2))).unwrap();
        assert_eq!(d["delta"]["from"], 7);
    }

    #[test]
    fn nothing_outside_the_cluster_cidr_is_routed_into_the_tunnel() {
        let mut map = sample();
        map.peers[1].allowed_ips = vec![net("10.42.2.0/24")];
        map.cluster_cidr = Some(net("10.42.0.0/16"));
        map.check().unwrap();
        // A peer claiming the underlay (or a default route) would cut the host off.
        map.peers[0].allowed_ips.push(net("198.18.0.0/15"));
        let err = map.check().unwrap_err();
        assert_eq!(
            err.to_string(),
            "198.18.0.0/15 of \"host-b\" is outside the cluster CIDR 10.42.0.0/16"
        );
        map.peers[0].allowed_ips.pop();
        map.host.subnet = net("10.43.0.0/24");
        assert!(matches!(
            map.check(),
            Err(NetmapError::OutsideCluster { .. })
        ));
    }

    #[test]
    fn json_round_trip() {
        let map = sample();
        let json = serde_json::to_string(&map).unwrap();
        let back: Netmap = serde_json::from_str(&json).unwrap();
        assert_eq!(back, map);
        assert_eq!(serde_json::to_string(&back).unwrap(), json);
        map.check().unwrap();
    }

    #[test]
    fn json_shape_is_stable() {
        let json = serde_json::to_value(sample()).unwrap();
        assert_eq!(json["revision"], 7);
        assert_eq!(json["host"]["subnet"], "10.42.0.0/24");
        assert_eq!(json["host"]["public_key"], key(1).to_base64());
        assert_eq!(json["peers"][0]["endpoint"], "198.18.0.2:51820");
        assert_eq!(json["peers"][0]["labels"]["zone"], "a");
        // Absent optionals are left out rather than written as null.
        assert!(json["peers"][1].get("endpoint").is_none());
        assert!(json["peers"][1].get("labels").is_none());
    }

    #[test]
    fn unknown_fields_are_ignored_and_missing_optionals_default() {
        let json = format!(
            r#"{{"revision":1,"future":true,
                "host":{{"name":"h","public_key":"{}","subnet":"10.0.0.0/24"}},
                "peers":[{{"name":"p","public_keys":["{}"],"preshared_key":"x"}}]}}"#,
            key(1),
            key(2)
        );
        let map: Netmap = serde_json::from_str(&json).unwrap();
        assert_eq!(map.host.endpoint, None);
        assert_eq!(map.peers[0].allowed_ips, vec![]);
        assert!(map.peers[0].labels.is_empty());
    }

    #[test]
    fn bad_key_or_prefix_is_refused() {
        let bad_key =
            r#"{"revision":1,"host":{"name":"h","public_key":"nope","subnet":"10.0.0.0/24"}}"#;
        let err = serde_json::from_str::<Netmap>(bad_key).unwrap_err();
        assert!(err.to_string().contains("base64"), "{err}");
        let bad_net = format!(
            r#"{{"revision":1,"host":{{"name":"h","public_key":"{}","subnet":"10.0.0.0/33"}}}}"#,
            key(1)
        );
        assert!(serde_json::from_str::<Netmap>(&bad_net).is_err());
    }

    #[test]
    fn normalize_sorts_and_dedups() {
        let mut map = sample();
        map.peers.reverse();
        map.peers[0].public_keys = vec![key(4), key(3), key(4)];
        map.peers[0].allowed_ips = vec![net("fd42::/64"), net("10.42.2.0/24")];
        map.normalize();
        assert_eq!(map, sample());
    }

    #[test]
    fn check_finds_broken_invariants() {
        let mut map = sample();
        map.peers[1].public_keys.push(key(1));
        assert!(matches!(map.check(), Err(NetmapError::SelfPeer { .. })));

        let mut map = sample();
        map.peers[1].public_keys.clear();
        assert!(matches!(map.check(), Err(NetmapError::NoKey { .. })));

        let mut map = sample();
        map.peers[1].public_keys = vec![key(2)];
        assert!(matches!(map.check(), Err(NetmapError::DuplicateKey { .. })));

        let mut map = sample();
        map.peers[1].name = "host-b".into();
        assert!(matches!(
            map.check(),
            Err(NetmapError::DuplicateName { .. })
        ));

        let mut map = sample();
        map.peers[1].allowed_ips = vec![net("10.42.1.128/25")];
        let err = map.check().unwrap_err();
        assert_eq!(
            err.to_string(),
            "allowed IP 10.42.1.128/25 of \"host-c\" overlaps 10.42.1.0/24 of \"host-b\""
        );

        let mut map = sample();
        map.peers[0].allowed_ips = vec![net("10.42.0.0/16")];
        assert!(matches!(map.check(), Err(NetmapError::Overlap { .. })));
    }

    #[test]
    fn peer_by_key_finds_any_of_the_keys() {
        let map = sample();
        assert_eq!(
            map.peer_by_key(&key(4)).map(|p| p.name.as_str()),
            Some("host-c")
        );
        assert!(map.peer_by_key(&key(9)).is_none());
    }
}
