//! The per-packet decisions, driven by hand between two hosts' peer sets: no sockets.

use std::net::SocketAddr;
use std::time::Instant;

use wgmesh_config::PrivateKey;

use super::*;
use crate::peers::counters::PeerDrop;
use crate::peers::fixture::{addr, ipv4, no_policy, settings, Pair, A_ADDR, B_ADDR};
use crate::peers::noise::{LocalIdentity, Tunnel};
use crate::peers::settings::{PeerKeys, PeerSettings};

/// `datagram` from `from` handled by `peer` as a data message, with no policy.
fn receive(peer: &Peer, from: SocketAddr, datagram: &[u8], plain: &mut [u8]) -> Received {
    peer.lock()
        .handle_data(Instant::now(), &no_policy(), from, datagram, plain)
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
    let Outbound::Send(t) =
        pb.lock()
            .handle_outbound(Instant::now(), &no_policy(), &back, &mut out)
    else {
        panic!("expected data");
    };
    assert_eq!((t.dst, t.len), (addr(A_ADDR), back.len() + 32));
    assert_eq!(pb.lock().counters().tx_packets, 1);
    let ta = pair.a.table();
    let pa = Pair::only(&ta);
    let mut plain = [0u8; 256];
    assert_eq!(
        receive(&pa, addr(B_ADDR), &out[..t.len], &mut plain),
        Received::Deliver(back.len())
    );
    // A replay is rejected and counted.
    assert_eq!(
        receive(&pa, addr(B_ADDR), &out[..t.len], &mut plain),
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
        receive(&pb, moved, &junk, &mut plain),
        Received::Drop(PeerDrop::DecryptFailed)
    );
    assert_eq!(pb.lock().endpoint(), Some(addr(A_ADDR)));

    // A genuine packet from the new address moves the endpoint there.
    let packet = ipv4([10, 42, 1, 2], [10, 42, 2, 2]);
    let Outbound::Send(t) =
        pa.lock()
            .handle_outbound(Instant::now(), &no_policy(), &packet, &mut out)
    else {
        panic!("expected data");
    };
    assert_eq!(
        receive(&pb, moved, &out[..t.len], &mut plain),
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
        pb.lock().handle_outbound(
            Instant::now(),
            &no_policy(),
            &ipv4([10, 42, 2, 2], [10, 42, 1, 2]),
            &mut out
        ),
        Outbound::Drop(PeerDrop::NoEndpoint)
    );
    assert_eq!(pb.lock().counters().dropped.no_endpoint, 1);
    assert!(pb.lock().initiate_if_new(&mut out).is_none());
    // A, which knows B's endpoint, initiates; once a handshake is in flight, not again.
    let ta = pair.a.table();
    let pa = Pair::only(&ta);
    let t = pa.lock().initiate_if_new(&mut out).expect("an initiation");
    assert_eq!((t.dst, t.len), (addr(B_ADDR), 148));
    assert!(pa.lock().initiate_if_new(&mut out).is_none());
    // Nor once a session is up.
    let pair = Pair::new();
    pair.handshake_with(&ipv4([10, 42, 1, 2], [10, 42, 2, 2]));
    let ta = pair.a.table();
    assert!(Pair::only(&ta).lock().initiate_if_new(&mut out).is_none());
}

#[test]
fn handshakes_from_strangers_and_removed_keys_are_dropped_as_unknown() {
    use crate::peers::counters::HostDrop;
    use crate::peers::table::HandshakeFrom;
    use crate::peers::wire::MessageKind;

    let pair = Pair::new();
    let tb = pair.b.table();
    let mut init = [0u8; 256];
    let mut out = [0u8; 256];
    let from = addr(A_ADDR).ip();
    let unknown = |d: HandshakeFrom<'_>| {
        matches!(
            d,
            HandshakeFrom::Drop {
                why: HostDrop::UnknownPeer,
                ..
            }
        )
    };

    // A stranger's valid initiation to B: identified, but no peer holds its key.
    let stranger = LocalIdentity::new(&PrivateKey::generate());
    let mut to_b = Tunnel::new(&stranger, &pair.b.identity().public_key(), None, None, 9);
    let n = to_b.initiate(&mut init).unwrap();
    let d = tb.handshake_from(from, MessageKind::HandshakeInit, &init[..n], &mut out);
    assert!(matches!(d, HandshakeFrom::Drop { error: None, .. }) && unknown(d));

    // An initiation meant for another host is invalid, with boringtun's reason.
    let other = LocalIdentity::new(&PrivateKey::generate());
    let mut to_other = Tunnel::new(&stranger, &other.public_key(), None, None, 9);
    let n = to_other.initiate(&mut init).unwrap();
    let d = tb.handshake_from(from, MessageKind::HandshakeInit, &init[..n], &mut out);
    assert!(matches!(d, HandshakeFrom::Drop { error: Some(_), .. }) && unknown(d));

    // A response for an index nobody has.
    let mut response = [0u8; 92];
    response[0] = 2;
    response[8..12].copy_from_slice(&0xffff_ff00u32.to_le_bytes());
    let d = tb.handshake_from(from, MessageKind::HandshakeResponse, &response, &mut out);
    assert!(unknown(d));

    // A peer's second key (it is rotating) has a lane of its own, beside the current key's.
    let second = PrivateKey::generate();
    let mut b_with_two = pair.b;
    let a_key = Pair::only(&tb).lock().keys().current().to_owned();
    let two = PeerSettings {
        keys: PeerKeys::new(&[a_key, second.public_key()]).unwrap(),
        ..settings("host-a", a_key, "10.42.1.0/24", None)
    };
    b_with_two.apply(&[two]).unwrap();
    let tb = b_with_two.table();
    let second = LocalIdentity::new(&second);
    let mut from_second = Tunnel::new(&second, &b_with_two.identity().public_key(), None, None, 9);
    let n = from_second.initiate(&mut init).unwrap();
    let d = tb.handshake_from(from, MessageKind::HandshakeInit, &init[..n], &mut out);
    let current = Pair::only(&tb).lock().lanes().next().unwrap().slot();
    assert!(matches!(d, HandshakeFrom::Peer(_, slot) if slot != current));

    // Once the key is gone from the peer's keys, its initiations are a stranger's.
    b_with_two
        .apply(&[settings("host-a", a_key, "10.42.1.0/24", None)])
        .unwrap();
    let tb = b_with_two.table();
    let d = tb.handshake_from(from, MessageKind::HandshakeInit, &init[..n], &mut out);
    assert!(unknown(d));
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

/// Seals `packet` on A for B and has B open it, as arriving from `from`.
fn a_to_b(pair: &Pair, packet: &[u8], from: SocketAddr) -> Received {
    let (ta, tb) = (pair.a.table(), pair.b.table());
    let mut out = [0u8; 256];
    let Outbound::Send(t) =
        Pair::only(&ta)
            .lock()
            .handle_outbound(Instant::now(), &no_policy(), packet, &mut out)
    else {
        panic!("expected data");
    };
    let mut plain = [0u8; 256];
    receive(&Pair::only(&tb), from, &out[..t.len], &mut plain)
}

#[test]
fn a_destination_outside_the_host_subnet_is_dropped_and_counted() {
    let pair = Pair::new();
    pair.handshake_with(&ipv4([10, 42, 1, 2], [10, 42, 2, 2]));
    let from = addr(A_ADDR);
    // B's underlay address, a network beyond B, another peer's subnet, broadcast: not B's.
    for dst in [
        [198, 18, 0, 2],
        [192, 0, 2, 1],
        [10, 42, 3, 1],
        [255, 255, 255, 255],
    ] {
        assert_eq!(
            a_to_b(&pair, &ipv4([10, 42, 1, 2], dst), from),
            Received::Drop(PeerDrop::DestinationNotLocal),
            "{dst:?}"
        );
    }
    // The gateway and a workload of B's subnet are.
    for dst in [[10, 42, 2, 1], [10, 42, 2, 200]] {
        let packet = ipv4([10, 42, 1, 2], dst);
        assert_eq!(
            a_to_b(&pair, &packet, from),
            Received::Deliver(packet.len())
        );
    }
    // A spoofed source is still the first reason.
    assert_eq!(
        a_to_b(&pair, &ipv4([10, 42, 9, 9], [198, 18, 0, 2]), from),
        Received::Drop(PeerDrop::SourceNotAllowed)
    );
    let tb = pair.b.table();
    let c = *Pair::only(&tb).lock().counters();
    assert_eq!(c.dropped.destination_not_local, 4);
    assert_eq!(c.dropped.source_not_allowed, 1);
    assert_eq!(
        c.rx_packets, 3,
        "the handshake's packet and the two delivered"
    );
}

#[test]
fn roaming_into_the_overlay_or_to_our_own_address_is_refused_and_counted() {
    let pair = Pair::new();
    pair.handshake_with(&ipv4([10, 42, 1, 2], [10, 42, 2, 2]));
    let packet = ipv4([10, 42, 1, 2], [10, 42, 2, 2]);
    // Inside the cluster (a packet loop through our own tunnel), B's own address, loopback: the
    // packet is authentic and delivered, but the endpoint stays where it was.
    for bad in [
        "10.42.1.7:51820",
        "10.42.200.1:51820",
        "198.18.0.2:51820",
        "127.0.0.1:51820",
        "[::ffff:198.18.0.2]:51820",
    ] {
        assert_eq!(
            a_to_b(&pair, &packet, addr(bad)),
            Received::Deliver(packet.len()),
            "{bad}"
        );
        let tb = pair.b.table();
        assert_eq!(
            Pair::only(&tb).lock().endpoint(),
            Some(addr(A_ADDR)),
            "{bad}"
        );
    }
    let tb = pair.b.table();
    assert_eq!(Pair::only(&tb).lock().counters().roams_refused, 5);
    // A real move still roams.
    let moved = addr("198.18.0.77:40000");
    a_to_b(&pair, &packet, moved);
    assert_eq!(Pair::only(&tb).lock().endpoint(), Some(moved));
}

#[test]
fn a_completed_handshake_from_a_refused_address_does_not_set_the_endpoint() {
    let pair = Pair::new();
    let (ta, tb) = (pair.a.table(), pair.b.table());
    let (pa, pb) = (Pair::only(&ta), Pair::only(&tb));
    let mut init = [0u8; 256];
    let Outbound::Send(t) = pa.lock().handle_outbound(
        Instant::now(),
        &no_policy(),
        &ipv4([10, 42, 1, 2], [10, 42, 2, 2]),
        &mut init,
    ) else {
        panic!("expected an initiation");
    };
    let mut out = [0u8; 256];
    let looped = addr("10.42.1.1:51820");
    assert!(matches!(
        pb.lock()
            .handle_handshake(LaneSlot::FIRST, looped, &init[..t.len], &mut out),
        HandshakeReceived::Reply(_)
    ));
    assert_eq!(pb.lock().endpoint(), None);
    assert_eq!(pb.lock().counters().roams_refused, 1);
}

#[test]
fn new_host_networks_reach_running_peers() {
    let mut pair = Pair::new();
    pair.handshake_with(&ipv4([10, 42, 1, 2], [10, 42, 2, 2]));
    let packet = ipv4([10, 42, 1, 2], [10, 42, 2, 2]);
    let new_addr = "198.18.5.5:51820";
    // B's host gains the address 198.18.5.5: a roam there is now refused.
    let mut nets = pair.b.host_nets().clone();
    assert_eq!(nets.roam_refusal(addr(new_addr).ip()), None);
    nets = HostNets::new(
        nets.subnet(),
        "10.42.0.0/16".parse().unwrap(),
        vec![addr(B_ADDR).ip(), addr(new_addr).ip()],
    );
    pair.b.set_host_nets(nets);
    a_to_b(&pair, &packet, addr(new_addr));
    let tb = pair.b.table();
    assert_eq!(Pair::only(&tb).lock().endpoint(), Some(addr(A_ADDR)));
    // Routed prefixes count as overlay too, also outside the cluster CIDR: B adds a peer for
    // 192.0.2.0/24 and A's packets from there do not move A's endpoint.
    let a_key = Pair::only(&tb).lock().keys().current().to_owned();
    let c_key = PrivateKey::generate().public_key();
    pair.b.set_host_nets(HostNets::new(
        "10.42.2.0/24".parse().unwrap(),
        "10.42.0.0/16".parse().unwrap(),
        vec![],
    ));
    pair.b
        .apply(&[
            settings("host-a", a_key, "10.42.1.0/24", None),
            settings("host-c", c_key, "192.0.2.0/24", None),
        ])
        .unwrap();
    a_to_b(&pair, &packet, addr("192.0.2.9:51820"));
    assert_eq!(Pair::only(&tb).lock().endpoint(), Some(addr(A_ADDR)));
    assert_eq!(Pair::only(&tb).lock().counters().roams_refused, 2);
}
