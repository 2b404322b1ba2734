//! Rotations of one side of a pair, driven packet by packet: no packet is lost while either
//! side's lanes change, and a retired or edited-out key stops working.

use std::sync::Arc;

use wgmesh_config::{PrivateKey, PublicKey};

use super::*;
use crate::peers::counters::HostDrop;
use crate::peers::fixture::{host_nets, ipv4, lane_of, settings, Pair, Side, B_ADDR};
use crate::peers::noise::{Encapsulated, LocalIdentity, Tunnel};
use crate::peers::peer::Received;
use crate::peers::set::PeerSet;
use crate::peers::settings::PeerKeys;

fn identity() -> Arc<LocalIdentity> {
    Arc::new(LocalIdentity::new(&PrivateKey::generate()))
}

fn packet(from: Side) -> Vec<u8> {
    match from {
        Side::A => ipv4([10, 42, 1, 2], [10, 42, 2, 2]),
        Side::B => ipv4([10, 42, 2, 2], [10, 42, 1, 2]),
    }
}

fn other(side: Side) -> Side {
    match side {
        Side::A => Side::B,
        Side::B => Side::A,
    }
}

/// `from` sends one packet and the other side must deliver it: the lane it went on.
fn must_arrive(pair: &mut Pair, from: Side) -> Option<LaneSlot> {
    let sent = pair.send(from, &packet(from));
    let lane = sent.first().and_then(|d| lane_of(d));
    let arrived = pair.deliver(other(from), sent);
    assert_eq!(
        arrived[other(from) as usize].delivered,
        vec![packet(from)],
        "a packet from {from:?} was lost: {:?}",
        arrived[other(from) as usize]
    );
    lane
}

/// Both ways, then a round of both sides' timers.
fn traffic_and_ticks(pair: &mut Pair) {
    must_arrive(pair, Side::A);
    must_arrive(pair, Side::B);
    for side in [Side::A, Side::B] {
        let sent = pair.tick(side);
        pair.deliver(other(side), sent);
    }
}

/// A's settings for B with these keys (the first is B's current one).
fn a_knows_b(pair: &mut Pair, keys: &[PublicKey]) {
    let s = PeerSettings {
        keys: PeerKeys::new(keys).unwrap(),
        ..settings("host-b", keys[0], "10.42.2.0/24", Some(B_ADDR))
    };
    pair.a.apply(&[s]).unwrap();
}

/// (local key, remote key, established, draining) of each of `side`'s lanes, current first.
fn lanes_of(pair: &mut Pair, side: Side) -> Vec<(PublicKey, PublicKey, bool, bool)> {
    let table = pair.set(side).table();
    let peer = Pair::only(&table);
    let state = peer.lock();
    state
        .lanes()
        .map(|l| (*l.local(), *l.remote(), l.established(), l.draining()))
        .collect()
}

fn started() -> Pair {
    let mut pair = Pair::new();
    assert!(matches!(
        pair.handshake_with(&packet(Side::A)),
        Received::Deliver(_)
    ));
    must_arrive(&mut pair, Side::B);
    pair
}

fn rotate(pair: &mut Pair, side: Side) -> (Arc<LocalIdentity>, Arc<LocalIdentity>) {
    let old = pair.set(side).identity().clone();
    let new = identity();
    pair.set(side)
        .set_host_keys(HostKeys {
            current: new.clone(),
            retiring: Some(old.clone()),
        })
        .unwrap();
    (old, new)
}

#[test]
fn a_rotating_host_loses_no_packet_and_its_old_key_is_refused_once_retired() {
    let mut pair = started();
    let id = Pair::only(&pair.a.table()).id();
    let (old_b, new_b) = rotate(&mut pair, Side::B);
    // A does not know the new key yet: B's kicks of its new lane are refused, the old lane
    // carries everything meanwhile.
    for _ in 0..3 {
        traffic_and_ticks(&mut pair);
    }
    // A learns it, as a netmap gives it (new key first), and keeps B as the same peer.
    a_knows_b(&mut pair, &[new_b.public_key(), old_b.public_key()]);
    assert_eq!(Pair::only(&pair.a.table()).id(), id);
    traffic_and_ticks(&mut pair);
    traffic_and_ticks(&mut pair);
    let current_a = lanes_of(&mut pair, Side::A)[0];
    assert_eq!(
        (current_a.1, current_a.2),
        (new_b.public_key(), true),
        "A's lane to the new key is up"
    );
    let lane_a = must_arrive(&mut pair, Side::A);
    let current_slot = Pair::only(&pair.a.table())
        .lock()
        .lanes()
        .next()
        .unwrap()
        .slot();
    assert_eq!(lane_a, Some(current_slot), "A sends on the new lane");
    let lanes_b = lanes_of(&mut pair, Side::B);
    assert_eq!((lanes_b[0].0, lanes_b[0].2), (new_b.public_key(), true));

    // B retires its old key; A's netmap drops it: A's old lane drains, then goes.
    pair.b.set_host_keys(HostKeys::one(new_b.clone())).unwrap();
    a_knows_b(&mut pair, &[new_b.public_key()]);
    assert_eq!(lanes_of(&mut pair, Side::B).len(), 1);
    assert!(lanes_of(&mut pair, Side::A)[1].3, "A's old lane drains");
    for _ in 0..DRAIN_TICKS {
        traffic_and_ticks(&mut pair);
    }
    assert_eq!(lanes_of(&mut pair, Side::A).len(), 1);

    // Someone holding B's old key in their config cannot handshake with B any more.
    let mut to_old = Tunnel::new(pair.a.identity(), &old_b.public_key(), None, None, 77);
    let mut init = [0u8; 256];
    let Encapsulated::HandshakeInit(n) = to_old.encapsulate(&packet(Side::A), &mut init) else {
        panic!("expected an initiation");
    };
    let arrived = pair.deliver(Side::B, vec![init[..n].to_vec()]);
    assert_eq!(
        arrived[Side::B as usize].host_drops,
        vec![HostDrop::UnknownPeer]
    );
}

#[test]
fn a_key_edited_in_place_is_the_same_peer_in_static_mode_and_loses_nothing() {
    let mut pair = started();
    pair.a.match_names(true);
    let id = Pair::only(&pair.a.table()).id();
    let (_, new_b) = rotate(&mut pair, Side::B);
    traffic_and_ticks(&mut pair);
    // A's config now names only the new key, under the same name and allowed IPs.
    a_knows_b(&mut pair, &[new_b.public_key()]);
    assert_eq!(Pair::only(&pair.a.table()).id(), id, "the same peer");
    assert!(
        lanes_of(&mut pair, Side::A)[1].3,
        "the old key's lane drains"
    );
    // The draining lane sends nothing: the first packet starts the new lane's handshake and is
    // delivered once it completes.
    for _ in 0..3 {
        traffic_and_ticks(&mut pair);
    }
    let current = lanes_of(&mut pair, Side::A)[0];
    assert_eq!((current.1, current.2), (new_b.public_key(), true));
}

#[test]
fn without_name_matching_an_edited_key_is_a_new_peer() {
    let mut pair = started();
    let id = Pair::only(&pair.a.table()).id();
    a_knows_b(&mut pair, &[identity().public_key()]);
    assert_ne!(Pair::only(&pair.a.table()).id(), id);
}

#[test]
fn a_rollback_swaps_back_to_the_old_lane_and_a_restarted_host_answers_on_its_retiring_key() {
    let mut pair = started();
    let (old_b, new_b) = rotate(&mut pair, Side::B);
    traffic_and_ticks(&mut pair);
    // Rolled back before anyone moved: the old key is current again, with its session.
    pair.b.set_host_keys(HostKeys::one(old_b.clone())).unwrap();
    let lanes = lanes_of(&mut pair, Side::B);
    assert_eq!(lanes.len(), 1);
    assert_eq!((lanes[0].0, lanes[0].2), (old_b.public_key(), true));
    traffic_and_ticks(&mut pair);

    // B restarts mid-rotation (both keys from disk, no session): A still knows only the old key
    // and handshakes with it; B answers on the lane of its retiring key.
    let mut fresh = PeerSet::new(new_b.clone(), 9, host_nets("10.42.2.0/24", B_ADDR));
    fresh
        .set_host_keys(HostKeys {
            current: new_b,
            retiring: Some(old_b.clone()),
        })
        .unwrap();
    let a_key = pair.a.identity().public_key();
    fresh
        .apply(&[settings("host-a", a_key, "10.42.1.0/24", None)])
        .unwrap();
    pair.b = fresh;
    pair.a.apply(&[]).unwrap();
    a_knows_b(&mut pair, &[old_b.public_key()]);
    let sent = pair.send(Side::A, &packet(Side::A));
    let arrived = pair.deliver(Side::B, sent);
    assert_eq!(arrived[Side::B as usize].delivered, vec![packet(Side::A)]);
    must_arrive(&mut pair, Side::B);
}
