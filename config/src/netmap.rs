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

    /// Checks the invariants an agent relies on before applying a netmap: no peer is the host
    /// itself, every peer has a key, names and keys are unique, and no allowed IP overlaps the
    /// host's subnet or another allowed IP (so every address routes to exactly one peer).
    pub fn check(&self) -> Result<(), NetmapError> {
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
        }
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
