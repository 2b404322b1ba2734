//! Target `datagram`: what the receive path does with a datagram from anyone, and the send
//! path with a packet from TUN — classification ([`wire::classify`], [`wire::peer_index`]),
//! peer lookup ([`PeerTable::inbound`], [`PeerTable::handshake_from`]), the peer's handling of
//! a data or handshake message, and routing by inner destination
//! ([`PeerTable::route_packet`]), and the policy's verdict on it as an inner packet in both
//! directions ([`FlowGuard::check`]: header parsing, filter, conntrack).
//!
//! Input: one byte choosing the sender's address, then the datagram (also read as an inner
//! packet). Invariants: a message handed to a peer carries that peer's index; a packet routed
//! to a peer has its destination inside that peer's allowed IPs; a dropped one has no route;
//! a packet the policy passes parses.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use wgmesh_config::netmap::{FilterRule, HostFilter};
use wgmesh_config::policy::Action;
use wgmesh_config::PrivateKey;
use wgmesh_overlay::peers::conntrack::Direction;
use wgmesh_overlay::peers::enforce::{Checked, FlowGuard};
use wgmesh_overlay::peers::filter::Filter;
use wgmesh_overlay::peers::lanes::{LaneSlot, LANE_BIT};
use wgmesh_overlay::peers::local::HostNets;
use wgmesh_overlay::peers::noise::LocalIdentity;
use wgmesh_overlay::peers::packet;
use wgmesh_overlay::peers::peer::Transmit;
use wgmesh_overlay::peers::set::PeerSet;
use wgmesh_overlay::peers::settings::{PeerKeys, PeerSettings};
use wgmesh_overlay::peers::table::{HandshakeFrom, Inbound, PeerTable, Route};
use wgmesh_overlay::peers::wire::{self, MessageKind};

const SENDERS: [&str; 4] = [
    "198.18.0.2:51820",
    "198.18.0.3:40000",
    "[2001:db8::3]:51820",
    "[::ffff:198.18.0.4]:51820",
];

/// The host (key 1) and its three peers (keys 2, 3, 4), and a policy with its guard.
struct Fixture {
    table: PeerTable,
    filter: Arc<Filter>,
    guard: Mutex<FlowGuard>,
    now: Instant,
}

fn key(n: u8) -> PrivateKey {
    PrivateKey::from_bytes([n; 32])
}

fn peer(name: &str, n: u8, nets: &[&str], endpoint: Option<&str>) -> PeerSettings {
    PeerSettings {
        name: Some(name.into()),
        keys: PeerKeys::one(key(n).public_key()),
        endpoint: endpoint.map(|e| e.parse().expect("endpoint")),
        allowed_ips: nets.iter().map(|n| n.parse().expect("prefix")).collect(),
        persistent_keepalive: None,
        preshared_key: None,
        pair_psks: Vec::new(),
        key_epoch: None,
    }
}

/// The networks of a host on subnet `subnet` of the cluster 10.42.0.0/16 (the fixture's).
fn host_nets(subnet: &str) -> HostNets {
    HostNets::new(
        subnet.parse().expect("subnet"),
        "10.42.0.0/16".parse().expect("cluster"),
        vec![],
    )
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let mut set = PeerSet::new(
            Arc::new(LocalIdentity::new(&key(1))),
            0,
            host_nets("10.42.1.0/24"),
        );
        set.apply(&[
            peer("host-b", 2, &["10.42.2.0/24"], Some(SENDERS[0])),
            peer(
                "host-c",
                3,
                &["10.42.3.0/24", "fd42:3::/64"],
                Some(SENDERS[2]),
            ),
            peer("host-d", 4, &["10.42.4.0/24", "10.99.0.0/16"], None),
        ])
        .expect("fixture peers");
        let now = Instant::now();
        let rule = |name: &str, action, ports: &[&str]| FilterRule {
            name: name.into(),
            action,
            from: vec![
                "10.42.0.0/16".parse().expect("from"),
                "fd42::/16".parse().expect("from"),
            ],
            to: vec![
                "10.42.1.0/24".parse().expect("to"),
                "fd42:1::/64".parse().expect("to"),
            ],
            ports: ports.iter().map(|p| p.parse().expect("port")).collect(),
        };
        let policy = HostFilter {
            default: Action::Deny,
            rules: vec![
                rule("web", Action::Allow, &["tcp/80", "udp/53", "icmp"]),
                rule("no-ssh", Action::Deny, &["tcp/22"]),
            ],
        };
        Fixture {
            table: set.table(),
            filter: Arc::new(Filter::new(&policy, 1, None)),
            guard: Mutex::new(FlowGuard::new(64, [1, 2], now)),
            now,
        }
    })
}

/// Runs one input.
pub fn run(data: &[u8]) {
    let Some((&sender, datagram)) = data.split_first() else {
        return;
    };
    let from: SocketAddr = SENDERS[usize::from(sender) % SENDERS.len()]
        .parse()
        .expect("sender");
    let table = &fixture().table;
    let mut out = vec![0u8; datagram.len() + 256];
    receive(table, from, datagram, &mut out);
    send(table, datagram);
    police(datagram);
}

fn police(packet: &[u8]) {
    let f = fixture();
    let mut guard = f.guard.lock().expect("guard lock");
    for dir in [Direction::Ingress, Direction::Egress] {
        if guard.check(&f.filter, f.now, dir, packet) == Checked::Pass {
            assert!(
                packet::parse(packet).is_ok(),
                "a packet that does not parse passed"
            );
        }
    }
}

fn receive(table: &PeerTable, from: SocketAddr, datagram: &[u8], out: &mut [u8]) {
    let kind = wire::classify(datagram);
    match table.inbound(datagram) {
        Inbound::Open(peer) => {
            assert_eq!(kind, Some(MessageKind::Data));
            assert_eq!(
                wire::peer_index(MessageKind::Data, datagram).map(|i| i & !LANE_BIT),
                Some(peer.index())
            );
            let now = fixture().now;
            let _ = peer
                .lock()
                .handle_data(now, table.filter(), from, datagram, out);
        }
        Inbound::Handshake(k) => {
            assert_eq!(kind, Some(k));
            assert_ne!(k, MessageKind::Data);
            match table.handshake_from(from.ip(), k, datagram, out) {
                HandshakeFrom::Peer(peer, slot) => {
                    if k != MessageKind::HandshakeInit {
                        let index = wire::peer_index(k, datagram).expect("an index");
                        assert_eq!(index & !LANE_BIT, peer.index());
                        assert_eq!(LaneSlot::of_index(index), slot);
                    }
                    let _ = peer.lock().handle_handshake(slot, from, datagram, out);
                }
                HandshakeFrom::CookieReply(len) => assert!(len <= out.len()),
                HandshakeFrom::Drop { .. } => {}
            }
        }
        Inbound::Drop(_) => {
            if kind == Some(MessageKind::Data) {
                let index = wire::peer_index(MessageKind::Data, datagram).expect("index");
                assert!(table.by_index(index).is_none());
            }
        }
    }
}

fn send(table: &PeerTable, packet: &[u8]) {
    let dst = wire::inner_destination(packet);
    let _ = wire::inner_source(packet);
    match table.route_packet(packet) {
        Route::Seal(peer) => {
            let dst = dst.expect("a routed packet has a destination");
            let state = peer.lock();
            assert!(
                state.allowed_ips().iter().any(|n| n.contains(&dst)),
                "{dst} routed to a peer whose allowed IPs do not hold it"
            );
        }
        Route::Discard => assert!(dst.is_some_and(|d| d.is_multicast())),
        Route::Local => assert!(table.is_local(packet)),
        Route::Drop(_) => assert!(dst.is_none_or(|d| table.route(d).is_none())),
    }
}

/// Seeds: a real handshake initiation from host-b, data messages and a response for every
/// peer's index, a cookie reply, and inner IPv4 and IPv6 packets to each peer.
pub fn seeds() -> Vec<Vec<u8>> {
    let mut seeds = Vec::new();
    // host-b's side, with the host as its peer: its first initiation is valid for the host.
    let mut b = PeerSet::new(
        Arc::new(LocalIdentity::new(&key(2))),
        7,
        host_nets("10.42.2.0/24"),
    );
    let host = PeerSettings {
        name: Some("host-a".into()),
        keys: PeerKeys::one(key(1).public_key()),
        endpoint: Some("198.18.0.1:51820".parse().expect("endpoint")),
        allowed_ips: vec!["10.42.1.0/24".parse().expect("prefix")],
        persistent_keepalive: None,
        preshared_key: None,
        pair_psks: Vec::new(),
        key_epoch: None,
    };
    b.apply(&[host]).expect("host-b's peers");
    let mut buf = [0u8; 256];
    if let Some(peer) = b.table().peers().next() {
        if let Some(Transmit { len, .. }) = peer.lock().initiate_if_new(&mut buf) {
            seeds.push([&[0u8][..], &buf[..len]].concat());
        }
    }
    for peer in fixture().table.peers() {
        let index = (peer.index() << 8).to_le_bytes();
        let mut data = vec![4, 0, 0, 0];
        data.extend_from_slice(&index);
        data.extend_from_slice(&[0u8; 8 + 16 + 20]);
        seeds.push([&[1u8][..], &data].concat());
        let mut response = vec![0u8; wire::HANDSHAKE_RESPONSE_LEN];
        response[0] = 2;
        response[8..12].copy_from_slice(&index);
        seeds.push([&[2u8][..], &response].concat());
    }
    let mut cookie = vec![0u8; wire::COOKIE_REPLY_LEN];
    cookie[0] = 3;
    seeds.push([&[0u8][..], &cookie].concat());
    for dst in [
        "10.42.2.7",
        "10.42.3.1",
        "10.99.1.1",
        "10.42.9.9",
        "224.0.0.251",
    ] {
        let IpAddr::V4(dst) = dst.parse().expect("address") else {
            unreachable!()
        };
        let mut p = vec![0u8; 28];
        p[0] = 0x45;
        p[12..16].copy_from_slice(&[10, 42, 1, 2]);
        p[16..20].copy_from_slice(&dst.octets());
        seeds.push([&[0u8][..], &p].concat());
    }
    for dst in ["fd42:3::1", "fd42:4::1", "ff02::2"] {
        let IpAddr::V6(dst) = dst.parse().expect("address") else {
            unreachable!()
        };
        let mut p = vec![0u8; 48];
        p[0] = 0x60;
        p[24..40].copy_from_slice(&dst.octets());
        seeds.push([&[3u8][..], &p].concat());
    }
    seeds
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seed_initiation_is_host_bs() {
        let seed = &seeds()[0];
        let table = &fixture().table;
        let mut out = [0u8; 256];
        let from = SENDERS[0].parse::<SocketAddr>().expect("sender");
        let who = table.handshake_from(from.ip(), MessageKind::HandshakeInit, &seed[1..], &mut out);
        let HandshakeFrom::Peer(peer, _) = who else {
            panic!("the seed initiation is not identified");
        };
        assert_eq!(peer.lock().name(), Some("host-b"));
    }
}
