use std::time::Instant;

use super::*;
use crate::peers::counters::PeerCounters;
use crate::peers::fixture::no_policy;
use crate::peers::peer::{Outbound, Received};
use crate::peers::settings::PeerKeys;
use crate::peers::table::GENERATION_SHIFT;
use wgmesh_config::PrivateKey;

fn settings(key: PublicKey, nets: &[&str]) -> PeerSettings {
    PeerSettings {
        name: None,
        keys: PeerKeys::one(key),
        endpoint: Some("198.18.0.2:51820".parse().unwrap()),
        allowed_ips: nets.iter().map(|n| n.parse().unwrap()).collect(),
        persistent_keepalive: None,
        preshared_key: None,
        pair_psks: Vec::new(),
        key_epoch: None,
    }
}

fn named(name: &str, keys: &[PublicKey], nets: &[&str]) -> PeerSettings {
    PeerSettings {
        name: Some(name.into()),
        keys: PeerKeys::new(keys).unwrap(),
        ..settings(keys[0], nets)
    }
}

fn set() -> PeerSet {
    PeerSet::new(
        Arc::new(LocalIdentity::new(&PrivateKey::generate())),
        7,
        HostNets::new(
            "10.42.1.0/24".parse().unwrap(),
            "10.42.0.0/16".parse().unwrap(),
            vec![],
        ),
    )
}

fn key() -> PublicKey {
    PrivateKey::generate().public_key()
}

fn id_of(s: &PeerSet, key: &PublicKey) -> PeerId {
    s.table().by_key(key).unwrap().id()
}

/// Seals one packet for the peer holding `key`, so that its counters move.
fn count_traffic(s: &PeerSet, key: &PublicKey) -> PeerCounters {
    let t = s.table();
    let peer = t.by_key(key).unwrap();
    let mut st = peer.lock();
    let mut out = [0u8; 256];
    assert!(matches!(
        st.handle_outbound(Instant::now(), &no_policy(), &[0x45; 20], &mut out),
        Outbound::Send(_)
    ));
    // A junk data message counts as a failed decryption.
    let mut junk = [0u8; 64];
    junk[0] = 4;
    let from = "198.18.0.9:1".parse().unwrap();
    assert!(matches!(
        st.handle_data(Instant::now(), &no_policy(), from, &junk, &mut out),
        Received::Drop(_)
    ));
    *st.counters()
}

#[test]
fn add_change_remove_reports_routes() {
    let mut s = set();
    let (b, c) = (key(), key());
    let ch = s
        .apply(&[
            settings(b, &["10.42.2.0/24"]),
            settings(c, &["10.42.3.0/24"]),
        ])
        .unwrap();
    assert_eq!(ch.added.len(), 2);
    assert_eq!(ch.routes_added.len(), 2);
    let before = s.table().by_key(&b).unwrap().clone();
    let (id_b, id_c) = (id_of(&s, &b), id_of(&s, &c));

    let ch = s
        .apply(&[settings(b, &["10.42.2.0/24", "10.42.9.0/24"])])
        .unwrap();
    assert_eq!(ch.removed, vec![id_c]);
    assert_eq!(ch.changed, vec![id_b]);
    assert_eq!(ch.routes_added, vec!["10.42.9.0/24".parse().unwrap()]);
    assert_eq!(ch.routes_removed, vec!["10.42.3.0/24".parse().unwrap()]);
    // The changed peer is the same object: its session survives.
    let after = s.table().by_key(&b).unwrap().clone();
    assert!(Arc::ptr_eq(&before, &after));
    assert_eq!(after.lock().allowed_ips().len(), 2);

    assert!(s
        .apply(&[settings(b, &["10.42.2.0/24", "10.42.9.0/24"])])
        .unwrap()
        .is_empty());
}

#[test]
fn lookups_by_index_key_and_route() {
    let mut s = set();
    let b = key();
    s.apply(&[settings(b, &["10.42.2.0/24"])]).unwrap();
    let t = s.table();
    let peer = t.by_key(&b).unwrap();
    assert!(Arc::ptr_eq(t.by_index(peer.index()).unwrap(), peer));
    assert!(t.by_index(peer.index() ^ (1 << GENERATION_SHIFT)).is_none());
    // Either lane of the peer's index is the peer's.
    assert!(Arc::ptr_eq(
        t.by_index(peer.index() | crate::peers::lanes::LANE_BIT)
            .unwrap(),
        peer
    ));
    assert!(Arc::ptr_eq(
        t.route("10.42.2.9".parse().unwrap()).unwrap(),
        peer
    ));
    assert!(t.route("10.42.3.9".parse().unwrap()).is_none());
    assert_eq!(t.peers().count(), 1);
}

#[test]
fn reused_slot_gets_a_new_index_and_a_new_id() {
    let mut s = set();
    let (b, c) = (key(), key());
    s.apply(&[settings(b, &[])]).unwrap();
    let old = s.table().by_key(&b).unwrap().clone();
    s.apply(&[settings(c, &[])]).unwrap();
    let t = s.table();
    let new = t.by_key(&c).unwrap();
    assert_eq!(old.index() & SLOT_MASK, new.index() & SLOT_MASK);
    assert_ne!(old.index(), new.index());
    assert_ne!(old.id(), new.id());
    assert!(t.by_index(old.index()).is_none());
    assert!(new.index() < (1 << 24));
}

#[test]
fn own_key_is_refused_and_nothing_changes() {
    let mut s = set();
    let own = s.identity().public_key();
    let b = key();
    let err = s
        .apply(&[settings(b, &[]), settings(own, &[])])
        .unwrap_err();
    assert_eq!(err, PeerSetError::OwnKey { key: own });
    assert_eq!(s.table().peers().count(), 0);
    // Also as a second key of a peer.
    let err = s.apply(&[named("b", &[b, own], &[])]).unwrap_err();
    assert_eq!(err, PeerSetError::OwnKey { key: own });
}

#[test]
fn a_key_held_by_two_peers_is_refused() {
    let mut s = set();
    let (b, c) = (key(), key());
    let err = s
        .apply(&[named("b", &[b], &[]), named("c", &[c, b], &[])])
        .unwrap_err();
    assert_eq!(err, PeerSetError::SharedKey { key: b });
    assert_eq!(s.table().peers().count(), 0);
}

#[test]
fn every_key_of_a_peer_finds_it() {
    let mut s = set();
    let (old, new) = (key(), key());
    s.apply(&[named("host-b", &[old, new], &["10.42.2.0/24"])])
        .unwrap();
    let t = s.table();
    assert!(Arc::ptr_eq(
        t.by_key(&old).unwrap(),
        t.by_key(&new).unwrap()
    ));
    assert_eq!(t.by_key(&old).unwrap().lock().keys().current(), &old);
}

/// The rotation seam: a peer that moves from its old key to old + new, then to the new key alone,
/// stays the same peer with the same routes and counters.
#[test]
fn a_key_change_keeps_the_peer_its_routes_and_counters() {
    let mut s = set();
    let (old, new) = (key(), key());
    s.apply(&[settings(old, &["10.42.2.0/24"])]).unwrap();
    let id = id_of(&s, &old);
    let counted = count_traffic(&s, &old);
    assert_eq!(counted.dropped.decrypt_failed, 1);

    let ch = s
        .apply(&[PeerSettings {
            keys: PeerKeys::new(&[old, new]).unwrap(),
            ..settings(old, &["10.42.2.0/24"])
        }])
        .unwrap();
    assert_eq!((ch.changed.clone(), ch.added.len()), (vec![id], 0));
    assert!(ch.routes_added.is_empty() && ch.routes_removed.is_empty());

    let ch = s.apply(&[settings(new, &["10.42.2.0/24"])]).unwrap();
    assert_eq!(
        (ch.changed, ch.added, ch.removed),
        (vec![id], vec![], vec![])
    );
    assert!(ch.routes_added.is_empty() && ch.routes_removed.is_empty());
    let t = s.table();
    assert!(t.by_key(&old).is_none());
    let peer = t.by_key(&new).unwrap();
    assert_eq!(peer.id(), id);
    assert!(Arc::ptr_eq(
        t.route("10.42.2.7".parse().unwrap()).unwrap(),
        peer
    ));
    assert_eq!(peer.lock().counters(), &counted);
    assert_eq!(peer.lock().keys().current(), &new);
}

/// A removed host that joins again under its name with a new key is a new peer: nothing of the
/// old one (endpoint learned by roaming, counters, index) carries over.
#[test]
fn a_name_alone_carries_no_identity() {
    let mut s = set();
    let (old, new) = (key(), key());
    s.apply(&[named("host-b", &[old], &["10.42.2.0/24"])])
        .unwrap();
    let before = s.table().by_key(&old).unwrap().clone();
    count_traffic(&s, &old);
    let ch = s
        .apply(&[PeerSettings {
            endpoint: None,
            ..named("host-b", &[new], &["10.42.2.0/24"])
        }])
        .unwrap();
    assert_eq!(
        (ch.added.len(), ch.removed, ch.changed),
        (1, vec![before.id()], vec![])
    );
    let t = s.table();
    let after = t.by_key(&new).unwrap();
    assert!(!Arc::ptr_eq(&before, after));
    assert_ne!(after.index(), before.index());
    assert_eq!(after.lock().counters(), &PeerCounters::default());
    assert_eq!(after.lock().endpoint(), None);
}

#[test]
fn the_current_key_changing_resets_the_learned_endpoint_to_the_configured_one() {
    let mut s = set();
    let (old, new) = (key(), key());
    s.apply(&[PeerSettings {
        endpoint: None,
        ..settings(old, &[])
    }])
    .unwrap();
    // Keys listed new first, old second: the same peer, now handshaking with the new key.
    let both = PeerSettings {
        keys: PeerKeys::new(&[new, old]).unwrap(),
        endpoint: None,
        ..settings(old, &[])
    };
    s.apply(&[both]).unwrap();
    let t = s.table();
    let peer = t.by_key(&new).unwrap();
    assert_eq!(peer.lock().keys().current(), &new);
    assert_eq!(peer.lock().endpoint(), None);
}

#[test]
fn a_new_host_identity_keeps_peers_routes_and_counters() {
    let mut s = set();
    let b_private = PrivateKey::generate();
    let b = b_private.public_key();
    s.apply(&[settings(b, &["10.42.2.0/24"])]).unwrap();
    let id = id_of(&s, &b);
    let counted = count_traffic(&s, &b);

    // An identity whose key a peer holds is refused, and nothing changes.
    let before = s.identity().public_key();
    assert_eq!(
        s.set_host_keys(HostKeys::one(Arc::new(LocalIdentity::new(&b_private)))),
        Err(PeerSetError::OwnKey { key: b })
    );
    assert_eq!(s.identity().public_key(), before);

    let new_identity = Arc::new(LocalIdentity::new(&PrivateKey::generate()));
    s.set_host_keys(HostKeys::one(new_identity.clone()))
        .unwrap();
    assert_eq!(s.identity().public_key(), new_identity.public_key());
    let t = s.table();
    let peer = t.by_key(&b).unwrap();
    assert_eq!(peer.id(), id);
    assert!(Arc::ptr_eq(
        t.route("10.42.2.1".parse().unwrap()).unwrap(),
        peer
    ));
    assert_eq!(peer.lock().counters(), &counted);
    // The host's new key is now refused as a peer's, the old one no longer is.
    let err = s
        .apply(&[settings(new_identity.public_key(), &[])])
        .unwrap_err();
    assert!(matches!(err, PeerSetError::OwnKey { .. }));
}

#[test]
fn a_policy_reaches_every_table_with_a_guard_for_every_peer_and_a_generation_per_change() {
    use wgmesh_config::netmap::{FilterRule, HostFilter};
    use wgmesh_config::policy::Action;
    let policy = |port: &str| HostFilter {
        default: Action::Deny,
        rules: vec![FilterRule {
            name: "web".into(),
            action: Action::Allow,
            from: vec!["10.42.0.0/16".parse().unwrap()],
            to: vec!["10.42.1.0/24".parse().unwrap()],
            ports: vec![port.parse().unwrap()],
        }],
    };
    let mut s = set();
    let (b, c) = (key(), key());
    s.apply(&[settings(b, &["10.42.2.0/24"])]).unwrap();
    let t0 = Instant::now();
    // No policy: nothing enforced, no guard allocated.
    assert!(!s.apply_policy(t0, None));
    assert!(!s.table().filter().enforces());
    assert!(s.table().by_key(&b).unwrap().lock().guard().is_none());

    assert!(s.apply_policy(t0, Some(&policy("tcp/80"))));
    let g1 = s.filter().generation();
    assert!(s.table().filter().enforces());
    assert_eq!(s.table().filter().generation(), g1);
    assert!(s.table().by_key(&b).unwrap().lock().guard().is_some());
    // The same policy again changes nothing; a peer added later gets a guard too.
    assert!(!s.apply_policy(t0, Some(&policy("tcp/80"))));
    assert_eq!(s.filter().generation(), g1);
    s.apply(&[
        settings(b, &["10.42.2.0/24"]),
        settings(c, &["10.42.3.0/24"]),
    ])
    .unwrap();
    assert!(s.table().by_key(&c).unwrap().lock().guard().is_some());
    // Every change is a new generation, back to no policy included; guards stay allocated.
    assert!(s.apply_policy(t0, Some(&policy("tcp/81"))));
    let g2 = s.filter().generation();
    assert_ne!(g1, g2);
    assert!(s.apply_policy(t0, None));
    assert!(!s.table().filter().enforces());
    assert!(s.policy().is_none());
    assert!(s.apply_policy(t0, Some(&policy("tcp/80"))));
    assert!(![g1, g2].contains(&s.filter().generation()));
    assert!(s.table().by_key(&b).unwrap().lock().guard().is_some());
}
