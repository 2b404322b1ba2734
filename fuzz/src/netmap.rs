//! Target `netmap`: what an agent does with a netmap or a delta from the control plane (or
//! from its cache): parse it, [`Netmap::check`] it, [`Netmap::apply_delta`], turn it into peer
//! settings ([`from_netmap`]), its gateway address ([`gateway`]) and a peer set.
//!
//! Input: a mode byte, then either JSON (a [`Netmap`] or a [`NetmapUpdate`], as the agent
//! reads them) or choices that build a netmap and a delta from a few names, keys and prefixes
//! (so that duplicates, overlaps, prefixes outside the cluster and edge prefix lengths come up
//! often). Invariants: a netmap `check` accepts is accepted by the agent without a panic, lies
//! inside its cluster CIDR and has no two overlapping prefixes (host subnet, allowed IPs); a
//! delta's result passes `check`, is normalized, has the revision and peer count the delta
//! promised; normalize is idempotent; JSON round-trips.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, OnceLock};

use ipnet::IpNet;
use wgmesh_config::netmap::{HostIdentity, Netmap, NetmapDelta, NetmapPeer, NetmapUpdate};
use wgmesh_config::{PrivateKey, PublicKey};
use wgmesh_overlay::agent::workloads::gateway;
use wgmesh_overlay::peers::local::HostNets;
use wgmesh_overlay::peers::noise::LocalIdentity;
use wgmesh_overlay::peers::set::PeerSet;
use wgmesh_overlay::peers::settings::from_netmap;

use crate::Input;

/// Most peers given to a real peer set (each costs a tunnel).
const MAX_TUNNELS: usize = 16;

/// Runs one input.
pub fn run(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode.is_multiple_of(2) {
        if let Ok(netmap) = serde_json::from_slice::<Netmap>(rest) {
            accept(&netmap);
        }
        match serde_json::from_slice::<NetmapUpdate>(rest) {
            Ok(NetmapUpdate::Full(netmap)) => accept(&netmap),
            Ok(NetmapUpdate::Delta(delta)) => apply(&built(&mut Input::new(rest)), &delta),
            Err(_) => {}
        }
    } else {
        let mut input = Input::new(rest);
        let netmap = built(&mut input);
        accept(&netmap);
        let delta = delta(&mut input, &netmap);
        apply(&netmap, &delta);
    }
}

fn identity() -> &'static Arc<LocalIdentity> {
    static ID: OnceLock<Arc<LocalIdentity>> = OnceLock::new();
    ID.get_or_init(|| Arc::new(LocalIdentity::new(&PrivateKey::from_bytes([1; 32]))))
}

/// What the agent does with a netmap it received.
fn accept(netmap: &Netmap) {
    let text = serde_json::to_vec(netmap).expect("a netmap serialises");
    let low_order = std::iter::once(&netmap.host.public_key)
        .chain(netmap.peers.iter().flat_map(|p| &p.public_keys))
        .any(PublicKey::is_low_order);
    if low_order {
        // Built from raw bytes here; on the wire such a key never parses, and `check` refuses it.
        assert!(
            serde_json::from_slice::<Netmap>(&text).is_err(),
            "a low-order key parsed"
        );
        assert!(netmap.check().is_err(), "check accepted a low-order key");
        return;
    }
    let back: Netmap = serde_json::from_slice(&text).expect("a netmap parses back");
    assert_eq!(&back, netmap, "JSON round trip");
    let mut normal = netmap.clone();
    normal.normalize();
    let mut again = normal.clone();
    again.normalize();
    assert_eq!(again, normal, "normalize is idempotent");

    // The agent checks every netmap against the cluster it pinned at join.
    let pinned = netmap
        .cluster_cidr
        .unwrap_or_else(|| "10.42.0.0/16".parse().expect("cluster"));
    let checked = netmap.check_pinned(pinned);
    let settings = from_netmap(netmap, pinned);
    assert_eq!(
        checked.is_ok(),
        settings.is_ok(),
        "from_netmap and check disagree"
    );
    let Ok(settings) = settings else {
        return;
    };
    let nets: Vec<IpNet> = std::iter::once(netmap.host.subnet)
        .chain(
            netmap
                .peers
                .iter()
                .flat_map(|p| p.allowed_ips.iter().copied()),
        )
        .collect();
    if let Some(cluster) = netmap.cluster_cidr {
        assert!(
            nets.iter().all(|n| cluster.contains(n)),
            "a prefix outside {cluster} accepted"
        );
    }
    for (i, a) in nets.iter().enumerate() {
        for b in &nets[i + 1..] {
            assert!(!a.contains(b) && !b.contains(a), "{a} and {b} overlap");
        }
    }
    let gw = gateway(netmap.host.subnet);
    assert!(netmap.host.subnet.contains(&gw));
    if settings.len() <= MAX_TUNNELS {
        let mut set = PeerSet::new(identity().clone(), 0, host_nets(netmap, pinned));
        if set.apply(&settings).is_ok() {
            let table = set.table();
            for p in &netmap.peers {
                for net in &p.allowed_ips {
                    let routed = table
                        .route(net.network())
                        .and_then(|peer| peer.lock().name().map(str::to_owned));
                    assert_eq!(
                        routed.as_deref(),
                        Some(p.name.as_str()),
                        "{net} routes elsewhere"
                    );
                }
            }
        }
    }
}

fn apply(netmap: &Netmap, delta: &NetmapDelta) {
    let Ok(next) = netmap.apply_delta(delta) else {
        return;
    };
    assert!(
        next.check().is_ok(),
        "a delta gave a netmap that fails check"
    );
    assert_eq!(next.revision, delta.revision);
    assert_eq!(next.peers.len(), delta.peer_count);
    let mut normal = next.clone();
    normal.normalize();
    assert_eq!(normal, next, "a delta's result is not normalized");
    accept(&next);
}

const NAMES: [&str; 6] = ["host-a", "host-b", "host-c", "host-d", "host-e", ""];

fn key(input: &mut Input<'_>) -> PublicKey {
    match input.below(8) {
        0..=5 => PrivateKey::from_bytes([1 + input.below(5) as u8; 32]).public_key(),
        6 => PublicKey::from_bytes([0; 32]),
        _ => PublicKey::from_bytes([input.u8(); 32]),
    }
}

fn prefix(input: &mut Input<'_>) -> IpNet {
    let choice = input.u8();
    let (addr, max): (IpAddr, u8) = match choice % 6 {
        0..=2 => (Ipv4Addr::new(10, 42, input.u8() % 8, input.u8()).into(), 32),
        3 => (Ipv4Addr::from(input.u32()).into(), 32),
        4 => (
            Ipv6Addr::new(
                0xfd42,
                0,
                u16::from(input.u8() % 8),
                0,
                0,
                0,
                0,
                u16::from(input.u8()),
            )
            .into(),
            128,
        ),
        _ => (Ipv6Addr::from(u128::from(input.u32()) << 96).into(), 128),
    };
    let len = match choice >> 4 {
        0..=7 => [24, 16, 32, 28, 8, 64, 127, 128][usize::from(choice >> 4)].min(max),
        _ => input.u8() % (max + 1),
    };
    IpNet::new(addr, len).expect("length within range").trunc()
}

fn endpoint(input: &mut Input<'_>) -> Option<SocketAddr> {
    match input.below(4) {
        0 => None,
        1 => Some(SocketAddr::new(
            Ipv4Addr::new(198, 18, 0, input.u8()).into(),
            51820,
        )),
        2 => Some(SocketAddr::new(
            Ipv4Addr::from(input.u32()).into(),
            input.u16(),
        )),
        _ => Some(SocketAddr::new(Ipv6Addr::LOCALHOST.into(), input.u16())),
    }
}

fn peer(input: &mut Input<'_>) -> NetmapPeer {
    let name = NAMES[input.below(NAMES.len())].to_owned();
    let public_keys = (0..input.below(4)).map(|_| key(input)).collect();
    let allowed_ips = (0..input.below(4)).map(|_| prefix(input)).collect();
    let mut labels = BTreeMap::new();
    if input.below(4) == 0 {
        labels.insert("zone".to_owned(), format!("z{}", input.u8()));
    }
    NetmapPeer {
        name,
        public_keys,
        endpoint: endpoint(input),
        allowed_ips,
        labels,
        key_epoch: 0,
        preshared_keys: Vec::new(),
    }
}

fn host(input: &mut Input<'_>) -> HostIdentity {
    HostIdentity {
        name: NAMES[input.below(3)].to_owned(),
        public_key: key(input),
        subnet: prefix(input),
        endpoint: endpoint(input),
        key_epoch: 0,
        rotation: None,
    }
}

fn cluster(input: &mut Input<'_>) -> Option<IpNet> {
    match input.below(4) {
        0 => None,
        1 => Some(prefix(input)),
        _ => Some("10.42.0.0/16".parse().expect("prefix")),
    }
}

fn built(input: &mut Input<'_>) -> Netmap {
    let mut netmap = Netmap {
        revision: u64::from(input.u8()),
        host: host(input),
        peers: (0..input.below(6)).map(|_| peer(input)).collect(),
        cluster_cidr: cluster(input),
        epoch: u64::from(input.u8() % 2),
        filter: None,
    };
    if input.below(2) == 0 {
        netmap.normalize();
    }
    netmap
}

fn delta(input: &mut Input<'_>, base: &Netmap) -> NetmapDelta {
    let upsert: Vec<NetmapPeer> = (0..input.below(4)).map(|_| peer(input)).collect();
    let remove: Vec<String> = (0..input.below(3))
        .map(|_| NAMES[input.below(NAMES.len())].to_owned())
        .collect();
    let mut names: std::collections::BTreeSet<&str> =
        base.peers.iter().map(|p| p.name.as_str()).collect();
    for r in &remove {
        names.remove(r.as_str());
    }
    names.extend(upsert.iter().map(|p| p.name.as_str()));
    let peer_count = if input.below(8) == 0 {
        input.below(8)
    } else {
        names.len()
    };
    NetmapDelta {
        from: if input.below(8) == 0 {
            u64::from(input.u8())
        } else {
            base.revision
        },
        revision: base.revision + 1,
        host: if input.below(4) == 0 {
            host(input)
        } else {
            base.host.clone()
        },
        upsert,
        remove,
        peer_count,
        cluster_cidr: if input.below(4) == 0 {
            cluster(input)
        } else {
            base.cluster_cidr
        },
        epoch: base.epoch,
        filter: None,
    }
}

/// Seeds: a valid netmap and a delta as JSON, and a few built ones.
pub fn seeds() -> Vec<Vec<u8>> {
    let k = |n: u8| PrivateKey::from_bytes([n; 32]).public_key();
    let netmap = Netmap {
        revision: 3,
        host: HostIdentity {
            name: "host-a".into(),
            public_key: k(1),
            subnet: "10.42.1.0/24".parse().expect("prefix"),
            endpoint: Some("198.18.0.1:51820".parse().expect("endpoint")),
            key_epoch: 0,
            rotation: None,
        },
        peers: vec![NetmapPeer {
            name: "host-b".into(),
            public_keys: vec![k(2)],
            endpoint: Some("198.18.0.2:51820".parse().expect("endpoint")),
            allowed_ips: vec!["10.42.2.0/24".parse().expect("prefix")],
            labels: BTreeMap::from([("zone".into(), "a".into())]),
            key_epoch: 0,
            preshared_keys: Vec::new(),
        }],
        cluster_cidr: Some("10.42.0.0/16".parse().expect("prefix")),
        epoch: 9,
        filter: None,
    };
    let delta = NetmapDelta {
        from: 3,
        revision: 4,
        host: netmap.host.clone(),
        upsert: vec![NetmapPeer {
            name: "host-c".into(),
            public_keys: vec![k(3), k(4)],
            endpoint: None,
            allowed_ips: vec!["10.42.3.0/24".parse().expect("prefix")],
            labels: BTreeMap::new(),
            key_epoch: 0,
            preshared_keys: Vec::new(),
        }],
        remove: vec!["host-b".into()],
        peer_count: 1,
        cluster_cidr: netmap.cluster_cidr,
        epoch: 9,
        filter: None,
    };
    let json = |v: &dyn Fn() -> Vec<u8>| [&[0u8][..], &v()].concat();
    vec![
        json(&|| serde_json::to_vec(&netmap).expect("json")),
        json(&|| serde_json::to_vec(&NetmapUpdate::Full(netmap.clone())).expect("json")),
        json(&|| serde_json::to_vec(&NetmapUpdate::Delta(delta.clone())).expect("json")),
        vec![
            1, 3, 0, 0, 2, 0, 0, 1, 1, 1, 0, 0, 1, 2, 0, 2, 0, 0, 3, 0, 2, 0, 0,
        ],
        vec![
            1, 9, 1, 0, 0x12, 1, 0, 2, 1, 0, 1, 0x02, 2, 0, 0, 0, 3, 3, 0, 1, 1, 2, 0x03, 3, 9,
        ],
    ]
}

/// The networks of the netmap's host in the cluster `pinned`, for its peer set.
fn host_nets(netmap: &Netmap, pinned: IpNet) -> HostNets {
    HostNets::new(netmap.host.subnet, pinned, vec![])
}
