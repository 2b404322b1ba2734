//! What the configuration says about each peer ([`PeerSettings`]), and how a control plane's
//! [`Netmap`] becomes them ([`from_netmap`]).
//!
//! A netmap that breaks the invariants of [`Netmap::check_pinned`] (among them: it names the
//! cluster CIDR pinned at join, and routes nothing outside it) is refused as a whole with a
//! [`NetmapApplyError`], so a bad netmap never replaces a running configuration.
//!
//! No I/O, no clock.

use std::net::SocketAddr;

use ipnet::IpNet;
use wgmesh_config::netmap::{Netmap, NetmapError};
use wgmesh_config::{PresharedKey, PublicKey};

/// What the configuration says about a peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerSettings {
    /// Optional human name (a netmap peer's host name).
    pub name: Option<String>,
    /// The peer's static public keys.
    pub keys: PeerKeys,
    /// Where to reach it; `None` until it contacts us.
    pub endpoint: Option<SocketAddr>,
    /// Inner addresses it may send from and that are routed to it.
    pub allowed_ips: Vec<IpNet>,
    /// Keepalive interval in seconds.
    pub persistent_keepalive: Option<u16>,
    /// Optional preshared key (the key itself, already read from its file), for every tunnel.
    pub preshared_key: Option<PresharedKeyBytes>,
    /// Preshared keys by pair of keys (ours, the peer's), from the control plane: each tunnel
    /// takes its pair's ([`PeerSettings::psk_for`]).
    pub pair_psks: Vec<(PublicKey, PublicKey, PresharedKeyBytes)>,
    /// The epoch of its current key, as the control plane counts them (`None` in static mode).
    pub key_epoch: Option<u64>,
}

impl PeerSettings {
    /// The preshared key of the tunnel between our key `local` and the peer's key `remote`:
    /// the pair's, else the one for every tunnel.
    pub fn psk_for(&self, local: &PublicKey, remote: &PublicKey) -> Option<&PresharedKeyBytes> {
        self.pair_psks
            .iter()
            .find(|(l, r, _)| l == local && r == remote)
            .map(|(_, _, k)| k)
            .or(self.preshared_key.as_ref())
    }
}

/// A peer's static public keys: at least one. The first ([`PeerKeys::current`]) is the one its
/// tunnel handshakes with; any others are keys the same peer holds while it rotates (a netmap
/// sends both the old and the new key during a rotation). Every key identifies the peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerKeys(Vec<PublicKey>);

impl PeerKeys {
    /// A peer with one key.
    pub fn one(key: PublicKey) -> Self {
        Self(vec![key])
    }

    /// The keys in this order, the first being the current one; `None` when `keys` is empty.
    /// Repeated keys are kept once.
    pub fn new(keys: &[PublicKey]) -> Option<Self> {
        let mut list: Vec<PublicKey> = Vec::with_capacity(keys.len());
        for key in keys {
            if !list.contains(key) {
                list.push(*key);
            }
        }
        (!list.is_empty()).then_some(Self(list))
    }

    /// The key the peer's tunnel handshakes with.
    pub fn current(&self) -> &PublicKey {
        &self.0[0]
    }

    /// Every key, the current one first.
    pub fn all(&self) -> &[PublicKey] {
        &self.0
    }

    /// Whether `key` is one of them.
    pub fn contains(&self, key: &PublicKey) -> bool {
        self.0.contains(key)
    }
}

/// A preshared key compared by value, so a changed key file is noticed on reload.
#[derive(Clone)]
pub struct PresharedKeyBytes(pub PresharedKey);

impl PartialEq for PresharedKeyBytes {
    fn eq(&self, other: &Self) -> bool {
        self.0.as_bytes() == other.0.as_bytes()
    }
}
impl Eq for PresharedKeyBytes {}
impl std::fmt::Debug for PresharedKeyBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PresharedKey(<redacted>)")
    }
}

/// Why a netmap cannot be applied. The running configuration is kept.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NetmapApplyError {
    /// The netmap breaks an invariant the agent relies on.
    #[error("refusing netmap revision {revision}")]
    Invalid {
        /// The refused netmap's revision.
        revision: u64,
        /// What is wrong with it.
        #[source]
        source: NetmapError,
    },
}

/// The peers a netmap asks for, after checking it with [`Netmap::check_pinned`] against
/// `pinned`, the cluster CIDR this host learnt when it joined.
///
/// One [`PeerSettings`] per netmap peer, in the netmap's order, with the peer's name, every one
/// of its keys (the first is the one its tunnel uses), its endpoint and allowed IPs. No
/// preshared keys and no persistent keepalive yet: netmaps carry neither.
pub fn from_netmap(netmap: &Netmap, pinned: IpNet) -> Result<Vec<PeerSettings>, NetmapApplyError> {
    let invalid = |source| NetmapApplyError::Invalid {
        revision: netmap.revision,
        source,
    };
    netmap.check_pinned(pinned).map_err(invalid)?;
    netmap
        .peers
        .iter()
        .map(|p| {
            let keys = PeerKeys::new(&p.public_keys).ok_or_else(|| {
                invalid(NetmapError::NoKey {
                    peer: p.name.clone(),
                })
            })?;
            Ok(PeerSettings {
                name: Some(p.name.clone()),
                keys,
                endpoint: p.endpoint,
                allowed_ips: p.allowed_ips.clone(),
                persistent_keepalive: None,
                preshared_key: None,
                pair_psks: p
                    .preshared_keys
                    .iter()
                    .map(|k| (k.local_key, k.remote_key, PresharedKeyBytes(k.key.clone())))
                    .collect(),
                key_epoch: Some(p.key_epoch),
            })
        })
        .collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use std::collections::BTreeMap;

    use wgmesh_config::netmap::{HostIdentity, NetmapPeer};

    use super::*;

    fn key(n: u8) -> PublicKey {
        PublicKey::from_bytes([n; 32])
    }

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    /// A valid netmap for host-a with two peers, host-c holding two keys.
    pub(crate) fn sample() -> Netmap {
        Netmap {
            revision: 3,
            host: HostIdentity {
                name: "host-a".into(),
                public_key: key(1),
                subnet: net("10.42.0.0/24"),
                endpoint: Some("198.18.0.1:51820".parse().unwrap()),
                key_epoch: 0,
                rotation: None,
            },
            peers: vec![
                NetmapPeer {
                    name: "host-b".into(),
                    public_keys: vec![key(2)],
                    endpoint: Some("198.18.0.2:51820".parse().unwrap()),
                    allowed_ips: vec![net("10.42.1.0/24")],
                    labels: BTreeMap::from([("zone".into(), "a".into())]),
                    key_epoch: 0,
                    preshared_keys: Vec::new(),
                },
                NetmapPeer {
                    name: "host-c".into(),
                    public_keys: vec![key(3), key(4)],
                    endpoint: None,
                    allowed_ips: vec![net("10.42.2.0/24")],
                    labels: BTreeMap::new(),
                    key_epoch: 0,
                    preshared_keys: Vec::new(),
                },
            ],
            cluster_cidr: Some(cluster()),
            epoch: 0,
            filter: None,
        }
    }

    /// The cluster CIDR [`sample`] is pinned to.
    pub(crate) fn cluster() -> IpNet {
        net("10.42.0.0/16")
    }

    #[test]
    fn valid_netmap_converts_with_every_key() {
        let map = sample();
        let settings = from_netmap(&map, cluster()).unwrap();
        assert_eq!(
            settings,
            vec![
                PeerSettings {
                    name: Some("host-b".into()),
                    keys: PeerKeys::one(key(2)),
                    endpoint: Some("198.18.0.2:51820".parse().unwrap()),
                    allowed_ips: vec![net("10.42.1.0/24")],
                    persistent_keepalive: None,
                    preshared_key: None,
                    pair_psks: Vec::new(),
                    key_epoch: Some(0),
                },
                PeerSettings {
                    name: Some("host-c".into()),
                    keys: PeerKeys::new(&[key(3), key(4)]).unwrap(),
                    endpoint: None,
                    allowed_ips: vec![net("10.42.2.0/24")],
                    persistent_keepalive: None,
                    preshared_key: None,
                    pair_psks: Vec::new(),
                    key_epoch: Some(0),
                },
            ]
        );
        assert_eq!(settings[1].keys.current(), &key(3));
        assert!(settings[1].keys.contains(&key(4)));
    }

    #[test]
    fn peer_keys_are_never_empty_and_kept_once() {
        assert!(PeerKeys::new(&[]).is_none());
        let k = PeerKeys::new(&[key(5), key(6), key(5)]).unwrap();
        assert_eq!(k.all(), &[key(5), key(6)]);
        assert!(k.contains(&key(6)) && !k.contains(&key(7)));
    }

    #[test]
    fn empty_netmap_gives_no_peers() {
        let mut map = sample();
        map.peers.clear();
        assert_eq!(from_netmap(&map, cluster()).unwrap(), vec![]);
    }

    #[test]
    fn netmap_failing_check_is_refused() {
        let mut map = sample();
        map.peers[1].allowed_ips = vec![net("10.42.1.128/25")];
        let err = from_netmap(&map, cluster()).unwrap_err();
        assert!(matches!(
            err,
            NetmapApplyError::Invalid {
                revision: 3,
                source: NetmapError::Overlap { .. }
            }
        ));
        assert_eq!(err.to_string(), "refusing netmap revision 3");

        let mut map = sample();
        map.peers[0].public_keys.clear();
        assert!(matches!(
            from_netmap(&map, cluster()),
            Err(NetmapApplyError::Invalid {
                source: NetmapError::NoKey { .. },
                ..
            })
        ));
    }

    #[test]
    fn netmap_listing_own_key_as_peer_is_refused() {
        let mut map = sample();
        map.peers[0].public_keys = vec![key(1)];
        let err = from_netmap(&map, cluster()).unwrap_err();
        assert_eq!(
            err,
            NetmapApplyError::Invalid {
                revision: 3,
                source: NetmapError::SelfPeer {
                    peer: "host-b".into()
                },
            }
        );
    }

    #[test]
    fn a_netmap_outside_the_pinned_cluster_is_refused_whole() {
        let pinned = cluster();
        let refused = |map: &Netmap| match from_netmap(map, pinned) {
            Err(NetmapApplyError::Invalid { source, .. }) => source,
            Ok(_) => panic!("accepted {map:?}"),
        };
        let mut map = sample();
        map.cluster_cidr = None;
        assert_eq!(refused(&map), NetmapError::NoClusterCidr { pinned });
        map.cluster_cidr = Some(net("10.0.0.0/8"));
        assert!(matches!(refused(&map), NetmapError::ClusterChanged { .. }));
        for bad in ["198.18.0.0/24", "0.0.0.0/1", "fd42::/64"] {
            let mut map = sample();
            map.peers[1].allowed_ips.push(net(bad));
            assert!(
                matches!(refused(&map), NetmapError::OutsideCluster { .. }),
                "{bad}"
            );
        }
        let mut map = sample();
        map.peers[0].public_keys = vec![key(0)];
        assert!(matches!(refused(&map), NetmapError::LowOrderKey { .. }));
    }

    #[test]
    fn a_host_subnet_too_small_for_a_gateway_is_an_error_not_a_panic() {
        for subnet in ["fd42::1/128", "fd42::/127", "10.42.0.1/32", "10.42.0.0/31"] {
            let mut map = sample();
            map.cluster_cidr = Some(net(if subnet.contains(':') {
                "fd42::/16"
            } else {
                "10.42.0.0/16"
            }));
            map.peers.clear();
            map.host.subnet = net(subnet);
            let pinned = map.cluster_cidr.unwrap();
            assert!(
                matches!(
                    from_netmap(&map, pinned),
                    Err(NetmapApplyError::Invalid {
                        source: NetmapError::SubnetTooSmall { .. },
                        ..
                    })
                ),
                "{subnet}"
            );
        }
    }
}
