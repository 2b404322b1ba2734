//! The per-packet decisions, driven by hand between two hosts' peer sets: no sockets.

use std::net::SocketAddr;
use std::sync::Arc;

use wgmesh_config::{PrivateKey, PublicKey};

use super::*;
use crate::peers::counters::PeerDrop;
use crate::peers::noise::LocalIdentity;
use crate::peers::set::PeerSet;
use crate::peers::settings::{PeerKeys, PeerSettings};
use crate::peers::table::{HandshakeSender, PeerTable};
use crate::peers::wire::MessageKind;

const A_ADDR: &str = "198.18.0.1:51820";
const B_ADDR: &str = "198.18.0.2:51820";

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn settings(name: &str, key: PublicKey, net: &str, endpoint: Option<&str>) -> PeerSettings {
    PeerSettings {
        name: Some(name.into()),
        keys: PeerKeys::one(key),
        endpoint: endpoint.map(addr),
        allowed_ips: vec![net.parse().unwrap()],
        persistent_keepalive: None,
        preshared_key: None,
    }
}

/// Host A (10.42.1.0/24) and host B (10.42.2.0/24), each with the other as its one peer. A knows
/// B's endpoint; B learns A's from the handshake.
struct Pair {
    a: PeerSet,
    b: PeerSet,
}

impl Pair {
    fn new() -> Self {
        let ia = Arc::new(LocalIdentity::new(&PrivateKey::generate()));
        let ib = Arc::new(LocalIdentity::new(&PrivateKey::generate()));
        let mut a = PeerSet::new(ia.clone(), 1);
        let mut b = PeerSet::new(ib.clone(), 2);
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

    fn only(table: &PeerTable) -> Arc<Peer> {
        table.peers().next().unwrap().clone()
    }

    /// A sends `packet` to B, which has no session yet: the whole handshake runs, and B receives
    /// what A's tunnel queued. Returns B's decision on that queued packet.
    fn handshake_with(&self, packet: &[u8]) -> Received {
        let (ta, tb) = (self.a.table(), self.b.table());
        let (pa, pb) = (Self::only(&ta), Self::only(&tb));
        let mut init = [0u8; 256];
        let Outbound::Send(t) = pa.lock().handle_outbound(packet, &mut init) else {
            panic!("expected an initiation");
        };
        assert_eq!((t.dst, t.len), (addr(B_ADDR), 148));
        let mut out = [0u8; 256];
        let from_a: SocketAddr = addr(A_ADDR);
        let sender = tb.handshake_sender(
            self.b.identity(),
            from_a.ip(),
            MessageKind::HandshakeInit,
            &init[..t.len],
            &mut out,
        );
        assert!(matches!(sender, HandshakeSender::Peer(p) if Arc::ptr_eq(p, &pb)));
        let HandshakeReceived::Reply(r) =
            pb.lock().handle_handshake(from_a, &init[..t.len], &mut out)
        else {
            panic!("expected a response");
        };
        // B learned A's endpoint from the completed handshake.
        assert_eq!(pb.lock().endpoint(), Some(from_a));
        let mut keepalive = [0u8; 256];
        let HandshakeReceived::Reply(k) =
            pa.lock()
                .handle_handshake(addr(B_ADDR), &out[..r], &mut keepalive)
        else {
            panic!("expected a keepalive");
        };
        let mut queued = [0u8; 2048];
        let q = pa
            .lock()
            .poll_queued(&mut queued)
            .expect("the queued packet");
        assert!(pa.lock().poll_queued(&mut out).is_none());
        let mut plain = [0u8; 2048];
        assert_eq!(
            pb.lock().handle_data(from_a, &keepalive[..k], &mut plain),
            Received::Nothing
        );
        let received = pb.lock().handle_data(from_a, &queued[..q], &mut plain);
        received
    }
}

fn ipv4(src: [u8; 4], dst: [u8; 4]) -> Vec<u8> {
    let mut p = vec![0u8; 28];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&28u16.to_be_bytes());
    p[8] = 64;
    p[9] = 17;
    p[12..16].copy_from_slice(&src);
    p[16..20].copy_from_slice(&dst);
    p
}

#[test]
fn handshake_then_data_is_delivered_and_counted() {
    let pair = Pair::new();
    let packet = ipv4([10, 42, 1, 2], [10, 42, 2, 2]);
    assert_eq!(
        pair.handshake_with(&packet),
        Received::Deliver(packet.len())
    );
    let tb = pair.b.table();
    let pb = Pair::only(&tb);
    let c = *pb.lock().counters();
    assert_eq!((c.rx_packets, c.rx_bytes), (1, packet.len() as u64));

    // And back: B seals for A's learned endpoint.
    let back = ipv4([10, 42, 2, 2], [10, 42, 1, 2]);
    let mut out = [0u8; 256];
    let Outbound::Send(t) = pb.lock().handle_outbound(&back, &mut out) else {
        panic!("expected data");
    };
    assert_eq!((t.dst, t.len), (addr(A_ADDR), back.len() + 32));
    assert_eq!(pb.lock().counters().tx_packets, 1);
    let ta = pair.a.table();
    let pa = Pair::only(&ta);
    let mut plain = [0u8; 256];
    assert_eq!(
        pa.lock()
            .handle_data(addr(B_ADDR), &out[..t.len], &mut plain),
        Received::Deliver(back.len())
    );
    // A replay is rejected and counted.
    assert_eq!(
        pa.lock()
            .handle_data(addr(B_ADDR), &out[..t.len], &mut plain),
        Received::Drop(PeerDrop::DecryptFailed)
    );
    assert_eq!(pa.lock().counters().dropped.decrypt_failed, 1);
}

#[test]
fn a_source_outside_the_allowed_ips_is_dropped_and_counted() {
    let pair = Pair::new();
    // A's workload claims an address of B's subnet: B must not deliver it.
    let spoofed = ipv4([10, 42, 2, 99], [10, 42, 2, 2]);
    assert_eq!(
        pair.handshake_with(&spoofed),
        Received::Drop(PeerDrop::SourceNotAllowed)
    );
    let tb = pair.b.table();
    let c = *Pair::only(&tb).lock().counters();
    assert_eq!((c.rx_packets, c.dropped.source_not_allowed), (0, 1));
}

#[test]
fn authenticated_data_roams_junk_does_not() {
    let pair = Pair::new();
    pair.handshake_with(&ipv4([10, 42, 1, 2], [10, 42, 2, 2]));
    let (ta, tb) = (pair.a.table(), pair.b.table());
    let (pa, pb) = (Pair::only(&ta), Pair::only(&tb));
    let mut out = [0u8; 256];
    let mut plain = [0u8; 256];
    let moved = addr("198.18.0.77:40000");

    // Junk from another address is rejected and moves nothing.
    let mut junk = [0u8; 64];
    junk[0] = 4;
    assert_eq!(
        pb.lock().handle_data(moved, &junk, &mut plain),
        Received::Drop(PeerDrop::DecryptFailed)
    );
    assert_eq!(pb.lock().endpoint(), Some(addr(A_ADDR)));

    // A genuine packet from the new address moves the endpoint there.
    let packet = ipv4([10, 42, 1, 2], [10, 42, 2, 2]);
    let Outbound::Send(t) = pa.lock().handle_outbound(&packet, &mut out) else {
        panic!("expected data");
    };
    assert_eq!(
        pb.lock().handle_data(moved, &out[..t.len], &mut plain),
        Received::Deliver(packet.len())
    );
    assert_eq!(pb.lock().endpoint(), Some(moved));
}

#[test]
fn without_an_endpoint_nothing_is_sent_and_the_drop_is_counted() {
    let pair = Pair::new();
    let tb = pair.b.table();
    let pb = Pair::only(&tb);
    let mut out = [0u8; 256];
    assert_eq!(
        pb.lock()
            .handle_outbound(&ipv4([10, 42, 2, 2], [10, 42, 1, 2]), &mut out),
        Outbound::Drop(PeerDrop::NoEndpoint)
    );
    assert_eq!(pb.lock().counters().dropped.no_endpoint, 1);
    assert!(pb.lock().initiate_if_new(&mut out).is_none());
    // A, which knows B's endpoint, initiates; once a handshake is in flight, not again.
    let ta = pair.a.table();
    let pa = Pair::only(&ta);
    let t = pa.lock().initiate_if_new(&mut out).expect("an initiation");
    assert_eq!(t.dst, addr(B_ADDR));
}

#[test]
fn a_peer_run_holds_one_lock_at_a_time() {
    let pair = Pair::new();
    let ta = pair.a.table();
    let tb = pair.b.table();
    let (pa, pb) = (Pair::only(&ta), Pair::only(&tb));
    let mut run = PeerRun::new();
    run.lock(&pa);
    run.lock(&pa); // the same peer: no second lock (it would deadlock)
    assert!(pa.state.try_lock().is_none());
    run.lock(&pb);
    assert!(
        pa.state.try_lock().is_some(),
        "the previous peer is released"
    );
    assert!(pb.state.try_lock().is_none());
    run.release();
    assert!(pb.state.try_lock().is_some());
}

#[test]
fn after_the_host_identity_is_replaced_handshakes_use_the_new_key() {
    let mut pair = Pair::new();
    pair.handshake_with(&ipv4([10, 42, 1, 2], [10, 42, 2, 2]));
    // B gets a new key; A is told (as a netmap would) and keeps B as the same peer.
    let new_b = Arc::new(LocalIdentity::new(&PrivateKey::generate()));
    pair.b.replace_identity(new_b.clone());
    let id = Pair::only(&pair.a.table()).id();
    pair.a
        .apply(&[settings(
            "host-b",
            new_b.public_key(),
            "10.42.2.0/24",
            Some(B_ADDR),
        )])
        .unwrap();
    assert_eq!(Pair::only(&pair.a.table()).id(), id);
    let packet = ipv4([10, 42, 1, 2], [10, 42, 2, 3]);
    assert_eq!(
        pair.handshake_with(&packet),
        Received::Deliver(packet.len())
    );
    // Counters went on from before the change.
    let tb = pair.b.table();
    assert_eq!(Pair::only(&tb).lock().counters().rx_packets, 2);
}
