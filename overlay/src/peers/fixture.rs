//! Two hosts' peer sets for tests that drive the per-packet decisions by hand, without sockets.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use wgmesh_config::{PrivateKey, PublicKey};

use super::counters::HostDrop;
use super::filter::Filter;
use super::lanes::{LaneRole, LaneSlot};
use super::local::HostNets;
use super::noise::LocalIdentity;
use super::peer::{HandshakeReceived, Outbound, Peer, Received};
use super::set::PeerSet;
use super::settings::{PeerKeys, PeerSettings};
use super::table::{HandshakeFrom, Inbound, PeerTable};
use super::wire::{self, MessageKind};

pub(crate) const A_ADDR: &str = "198.18.0.1:51820";
pub(crate) const B_ADDR: &str = "198.18.0.2:51820";

/// No policy: everything passes.
pub(crate) fn no_policy() -> Arc<Filter> {
    Arc::new(Filter::allow_all())
}

pub(crate) fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

pub(crate) fn settings(
    name: &str,
    key: PublicKey,
    net: &str,
    endpoint: Option<&str>,
) -> PeerSettings {
    PeerSettings {
        name: Some(name.into()),
        keys: PeerKeys::one(key),
        endpoint: endpoint.map(addr),
        allowed_ips: vec![net.parse().unwrap()],
        persistent_keepalive: None,
        preshared_key: None,
        pair_psks: Vec::new(),
        key_epoch: None,
    }
}

/// A host of the cluster 10.42.0.0/16 with `subnet`, whose underlay address is `endpoint`'s.
pub(crate) fn host_nets(subnet: &str, endpoint: &str) -> HostNets {
    HostNets::new(
        subnet.parse().unwrap(),
        "10.42.0.0/16".parse().unwrap(),
        vec![addr(endpoint).ip()],
    )
}

/// Host A (10.42.1.0/24) and host B (10.42.2.0/24), each with the other as its one peer. A knows
/// B's endpoint; B learns A's from the handshake.
pub(crate) struct Pair {
    pub(crate) a: PeerSet,
    pub(crate) b: PeerSet,
}

impl Pair {
    pub(crate) fn new() -> Self {
        let ia = Arc::new(LocalIdentity::new(&PrivateKey::generate()));
        let ib = Arc::new(LocalIdentity::new(&PrivateKey::generate()));
        let mut a = PeerSet::new(ia.clone(), 1, host_nets("10.42.1.0/24", A_ADDR));
        let mut b = PeerSet::new(ib.clone(), 2, host_nets("10.42.2.0/24", B_ADDR));
        a.apply(&[settings(
            "host-b",
            ib.public_key(),
            "10.42.2.0/24",
            Some(B_ADDR),
        )])
        .unwrap();
        b.apply(&[settings("host-a", ia.public_key(), "10.42.1.0/24", None)])
            .unwrap();
        Self { a, b }
    }

    pub(crate) fn only(table: &PeerTable) -> Arc<Peer> {
        table.peers().next().unwrap().clone()
    }

    /// A sends `packet` to B, which has no session yet: the whole handshake runs, and B receives
    /// what A's tunnel queued. Returns B's decision on that queued packet.
    pub(crate) fn handshake_with(&self, packet: &[u8]) -> Received {
        let (ta, tb) = (self.a.table(), self.b.table());
        let (pa, pb) = (Self::only(&ta), Self::only(&tb));
        let mut init = [0u8; 256];
        let Outbound::Send(t) =
            pa.lock()
                .handle_outbound(Instant::now(), &no_policy(), packet, &mut init)
        else {
            panic!("expected an initiation");
        };
        assert_eq!((t.dst, t.len), (addr(B_ADDR), 148));
        let mut out = [0u8; 256];
        let from_a: SocketAddr = addr(A_ADDR);
        let sender = tb.handshake_from(
            from_a.ip(),
            MessageKind::HandshakeInit,
            &init[..t.len],
            &mut out,
        );
        let HandshakeFrom::Peer(p, slot) = sender else {
            panic!("expected host A");
        };
        assert!(Arc::ptr_eq(p, &pb));
        let HandshakeReceived::Reply(r) =
            pb.lock()
                .handle_handshake(slot, from_a, &init[..t.len], &mut out)
        else {
            panic!("expected a response");
        };
        // B learned A's endpoint from the completed handshake.
        assert_eq!(pb.lock().endpoint(), Some(from_a));
        let mut keepalive = [0u8; 256];
        let HandshakeReceived::Reply(k) =
            pa.lock()
                .handle_handshake(LaneSlot::FIRST, addr(B_ADDR), &out[..r], &mut keepalive)
        else {
            panic!("expected a keepalive");
        };
        let mut queued = [0u8; 2048];
        let q = pa
            .lock()
            .poll_queued(LaneSlot::FIRST, &mut queued)
            .expect("the queued packet");
        assert!(pa.lock().poll_queued(LaneSlot::FIRST, &mut out).is_none());
        let mut plain = [0u8; 2048];
        assert_eq!(
            pb.lock().handle_data(
                Instant::now(),
                &no_policy(),
                from_a,
                &keepalive[..k],
                &mut plain
            ),
            Received::Nothing
        );
        let received = pb.lock().handle_data(
            Instant::now(),
            &no_policy(),
            from_a,
            &queued[..q],
            &mut plain,
        );
        received
    }
}

/// One of the pair's hosts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    A,
    B,
}

impl Side {
    fn other(self) -> Self {
        match self {
            Self::A => Self::B,
            Self::B => Self::A,
        }
    }

    fn addr(self) -> SocketAddr {
        addr(match self {
            Self::A => A_ADDR,
            Self::B => B_ADDR,
        })
    }
}

/// What one side's data path made of the datagrams it received in [`Pair::deliver`].
#[derive(Debug, Default)]
pub(crate) struct Arrived {
    /// Inner packets written to TUN.
    pub(crate) delivered: Vec<Vec<u8>>,
    /// Host-level drops (unknown peer, …).
    pub(crate) host_drops: Vec<HostDrop>,
    /// Per-peer drops (decrypt failures, …).
    pub(crate) peer_drops: usize,
}

/// The pair driven as a network: datagrams one side sends are delivered to the other, as the
/// data path and the handshake thread would handle them.
impl Pair {
    pub(crate) fn set(&mut self, side: Side) -> &mut PeerSet {
        match side {
            Side::A => &mut self.a,
            Side::B => &mut self.b,
        }
    }

    /// `side` seals `packet` for its one peer: the datagrams to send (data, or an initiation).
    pub(crate) fn send(&mut self, side: Side, packet: &[u8]) -> Vec<Vec<u8>> {
        let table = self.set(side).table();
        let peer = Self::only(&table);
        let mut out = vec![0u8; packet.len() + 256];
        let sealed = peer
            .lock()
            .handle_outbound(Instant::now(), &no_policy(), packet, &mut out);
        match sealed {
            Outbound::Send(t) => vec![out[..t.len].to_vec()],
            Outbound::Queued | Outbound::Drop(_) => Vec::new(),
        }
    }

    /// One round of `side`'s timers (both lanes of every peer): the datagrams they send.
    pub(crate) fn tick(&mut self, side: Side) -> Vec<Vec<u8>> {
        let table = self.set(side).table();
        let mut sent = Vec::new();
        let mut out = vec![0u8; 2048];
        for peer in table.peers() {
            for role in [LaneRole::Current, LaneRole::Other] {
                if let Some(t) = peer.lock().handle_timeout(role, &mut out) {
                    sent.push(out[..t.len].to_vec());
                }
            }
        }
        sent
    }

    /// Delivers `datagrams` (sent by the other side) to `side`, and everything sent in answer
    /// back and forth until the wire is quiet: what each side made of what it received.
    pub(crate) fn deliver(&mut self, side: Side, datagrams: Vec<Vec<u8>>) -> [Arrived; 2] {
        let mut arrived = [Arrived::default(), Arrived::default()];
        let mut wire: std::collections::VecDeque<(Side, Vec<u8>)> =
            datagrams.into_iter().map(|d| (side, d)).collect();
        while let Some((to, datagram)) = wire.pop_front() {
            let got = &mut arrived[to as usize];
            for answer in self.receive(to, &datagram, got) {
                wire.push_back((to.other(), answer));
            }
        }
        arrived
    }

    /// `side` receives one datagram from the other side: what it sends back.
    fn receive(&mut self, side: Side, datagram: &[u8], got: &mut Arrived) -> Vec<Vec<u8>> {
        let from = side.other().addr();
        let table = self.set(side).table();
        let mut out = vec![0u8; datagram.len().max(256)];
        let mut answers = Vec::new();
        match table.inbound(datagram) {
            Inbound::Drop(why) => got.host_drops.push(why),
            Inbound::Open(peer) => {
                let received =
                    peer.lock()
                        .handle_data(Instant::now(), &no_policy(), from, datagram, &mut out);
                match received {
                    Received::Deliver(len) => got.delivered.push(out[..len].to_vec()),
                    Received::Reply(len) => answers.push(out[..len].to_vec()),
                    Received::Nothing => {}
                    Received::Drop(_) => got.peer_drops += 1,
                }
            }
            Inbound::Handshake(kind) => {
                match table.handshake_from(from.ip(), kind, datagram, &mut out) {
                    HandshakeFrom::Peer(peer, slot) => {
                        let mut state = peer.lock();
                        if let HandshakeReceived::Reply(len) | HandshakeReceived::Cookie(len) =
                            state.handle_handshake(slot, from, datagram, &mut out)
                        {
                            answers.push(out[..len].to_vec());
                        }
                        while let Some(len) = state.poll_queued(slot, &mut out) {
                            answers.push(out[..len].to_vec());
                        }
                    }
                    HandshakeFrom::CookieReply(len) => answers.push(out[..len].to_vec()),
                    HandshakeFrom::Drop { why, .. } => got.host_drops.push(why),
                }
            }
        }
        answers
    }
}

/// The receiver index's lane bit of a data message, to tell which lane sealed it.
pub(crate) fn lane_of(datagram: &[u8]) -> Option<LaneSlot> {
    wire::peer_index(MessageKind::Data, datagram).map(LaneSlot::of_index)
}

pub(crate) fn ipv4(src: [u8; 4], dst: [u8; 4]) -> Vec<u8> {
    let mut p = vec![0u8; 28];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&28u16.to_be_bytes());
    p[8] = 64;
    p[9] = 17;
    p[12..16].copy_from_slice(&src);
    p[16..20].copy_from_slice(&dst);
    p
}

/// Inner packets for the policy's tests: an IP header (the family of `src`) carrying `l4`.
pub(crate) fn ip(src: &str, dst: &str, proto: u8, l4: &[u8]) -> Vec<u8> {
    let (src, dst): (std::net::IpAddr, std::net::IpAddr) =
        (src.parse().unwrap(), dst.parse().unwrap());
    match (src, dst) {
        (std::net::IpAddr::V4(s), std::net::IpAddr::V4(d)) => {
            let total = 20 + l4.len();
            let mut p = vec![0u8; 20];
            p[0] = 0x45;
            p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
            p[8] = 64;
            p[9] = proto;
            p[12..16].copy_from_slice(&s.octets());
            p[16..20].copy_from_slice(&d.octets());
            p.extend_from_slice(l4);
            p
        }
        (std::net::IpAddr::V6(s), std::net::IpAddr::V6(d)) => {
            let mut p = vec![0u8; 40];
            p[0] = 0x60;
            p[4..6].copy_from_slice(&(l4.len() as u16).to_be_bytes());
            p[6] = proto;
            p[7] = 64;
            p[8..24].copy_from_slice(&s.octets());
            p[24..40].copy_from_slice(&d.octets());
            p.extend_from_slice(l4);
            p
        }
        _ => panic!("addresses of one family"),
    }
}

/// A TCP header with these ports and flags.
pub(crate) fn tcp(sport: u16, dport: u16, flags: u8) -> Vec<u8> {
    let mut h = vec![0u8; 20];
    h[0..2].copy_from_slice(&sport.to_be_bytes());
    h[2..4].copy_from_slice(&dport.to_be_bytes());
    h[12] = 5 << 4;
    h[13] = flags;
    h
}

/// A UDP header with these ports and 4 bytes of payload.
pub(crate) fn udp(sport: u16, dport: u16) -> Vec<u8> {
    let mut h = vec![0u8; 12];
    h[0..2].copy_from_slice(&sport.to_be_bytes());
    h[2..4].copy_from_slice(&dport.to_be_bytes());
    h[4..6].copy_from_slice(&12u16.to_be_bytes());
    h
}

/// An ICMP (or ICMPv6) header of `kind` with identifier `id`, then `rest` (a quoted packet).
pub(crate) fn icmp(kind: u8, id: u16, rest: &[u8]) -> Vec<u8> {
    let mut h = vec![0u8; 8];
    h[0] = kind;
    h[4..6].copy_from_slice(&id.to_be_bytes());
    h.extend_from_slice(rest);
    h
}
