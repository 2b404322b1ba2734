//! The receive thread's verdicts on handshake messages, driven by hand with a real checker and
//! real initiations (boringtun's, through the overlay's tunnels).

use std::net::SocketAddr;
use std::time::Instant;

use wgmesh_config::PrivateKey;

use crate::peers::fixture::{addr, Pair};
use crate::peers::limiter::BURST;
use crate::peers::noise::{Decapsulated, LocalIdentity, Tunnel};

use super::*;

const VICTIM: &str = "198.18.0.9:51821";

fn handshakes(
    pair: &Pair,
    now: Instant,
) -> (Handshakes, crossbeam_channel::Receiver<HandshakeMessage>) {
    let (tx, rx) = crossbeam_channel::bounded(QUEUE);
    let public = *pair.b.table().identity().public_key().as_bytes();
    (Handshakes::new(tx, &public, [4; 32], now), rx)
}

/// An initiation to B from a fresh random key (valid mac1, no cookie), and its tunnel.
fn initiation(pair: &Pair, index: u32) -> (Tunnel, Vec<u8>) {
    let me = LocalIdentity::new(&PrivateKey::generate());
    let mut t = Tunnel::new(
        &me,
        &pair.b.table().identity().public_key(),
        None,
        None,
        index,
    );
    let mut buf = [0u8; 256];
    let n = t.initiate(&mut buf).expect("an initiation");
    (t, buf[..n].to_vec())
}

fn judge(
    h: &mut Handshakes,
    pair: &Pair,
    now: Instant,
    from: SocketAddr,
    m: &[u8],
    long: bool,
) -> Verdict {
    h.judge(
        &pair.b.table(),
        now,
        from,
        MessageKind::HandshakeInit,
        m,
        long,
    )
}

#[test]
fn not_under_load_messages_are_queued_charged_to_no_source_within_the_host_budget() {
    let pair = Pair::new();
    let now = Instant::now();
    let (mut h, _rx) = handshakes(&pair, now);
    let (_t, init) = initiation(&pair, 1);
    let from = addr(VICTIM);
    for _ in 0..HANDSHAKES_PER_SECOND {
        assert_eq!(
            judge(&mut h, &pair, now, from, &init, false),
            Verdict::Queue
        );
    }
    // The budget spent: under load, and this one has no cookie.
    assert_eq!(
        judge(&mut h, &pair, now, from, &init, false),
        Verdict::Cookie { retiring: false }
    );
    // A wrong mac1 is dropped whatever the load.
    let mut bad = init.clone();
    bad[20] ^= 1;
    for long in [false, true] {
        assert_eq!(
            judge(&mut h, &pair, now, from, &bad, long),
            Verdict::Drop(HostDrop::HandshakeBadMac)
        );
    }
}

#[test]
fn a_flood_faked_from_a_peers_address_does_not_spend_its_share() {
    let pair = Pair::new();
    let now = Instant::now();
    let (mut h, _rx) = handshakes(&pair, now);
    let victim = addr(VICTIM);
    let (_t, spoofed) = initiation(&pair, 2);
    // Under load, thousands faked from the victim's address: cookie replies, then nothing.
    let verdicts: Vec<Verdict> = (0..5_000)
        .map(|_| judge(&mut h, &pair, now, victim, &spoofed, true))
        .collect();
    assert!(verdicts.contains(&Verdict::Cookie { retiring: false }));
    assert!(verdicts.contains(&Verdict::Drop(HostDrop::HandshakeRateLimited)));
    assert!(!verdicts.contains(&Verdict::Queue));

    // The real peer at that address got its cookie (from an earlier reply): its initiations
    // with mac2 are queued, charged to its share alone.
    let (mut real, first) = initiation(&pair, 3);
    let mut reply = [0u8; 64];
    let later = now + std::time::Duration::from_secs(1);
    h.cookies.reply(later, victim, &first, &mut reply).unwrap();
    let mut again = [0u8; 256];
    let Decapsulated::Reply(n) = real.decapsulate(victim.ip(), &reply, &mut again) else {
        panic!("boringtun did not take the cookie");
    };
    let with_cookie = &again[..n];
    for _ in 0..BURST {
        assert_eq!(
            judge(&mut h, &pair, later, victim, with_cookie, true),
            Verdict::Queue
        );
    }
    // Past its own share it is limited like anyone.
    assert_eq!(
        judge(&mut h, &pair, later, victim, with_cookie, true),
        Verdict::Drop(HostDrop::HandshakeRateLimited)
    );
    // The same cookie from another address or port is no cookie there.
    assert_eq!(
        judge(
            &mut h,
            &pair,
            later,
            addr("198.18.0.9:51822"),
            with_cookie,
            true
        ),
        Verdict::Cookie { retiring: false }
    );
}

#[test]
fn a_flood_from_other_addresses_leaves_a_peer_its_cookie() {
    let pair = Pair::new();
    let now = Instant::now();
    let (mut h, _rx) = handshakes(&pair, now);
    let (_t, flood) = initiation(&pair, 4);
    let flooder = addr("198.18.0.40:40000");
    for _ in 0..10_000 {
        judge(&mut h, &pair, now, flooder, &flood, true);
    }
    let (_t, real) = initiation(&pair, 5);
    assert_eq!(
        judge(&mut h, &pair, now, addr(VICTIM), &real, true),
        Verdict::Cookie { retiring: false }
    );
}

#[test]
fn cookie_replies_for_no_index_of_ours_are_dropped_uncharged() {
    let pair = Pair::new();
    let now = Instant::now();
    let (mut h, _rx) = handshakes(&pair, now);
    let mut reply = [0u8; 64];
    reply[0] = 3;
    reply[4..8].copy_from_slice(&0x00ab_cd00u32.to_le_bytes());
    let table = pair.b.table();
    for _ in 0..100 {
        assert_eq!(
            h.judge(
                &table,
                now,
                addr(VICTIM),
                MessageKind::CookieReply,
                &reply,
                true
            ),
            Verdict::Drop(HostDrop::UnknownPeer)
        );
    }
}

#[test]
fn while_a_key_is_retired_initiations_for_either_key_pass_and_cookies_come_from_its_checker() {
    use crate::peers::identity::HostKeys;
    use std::sync::Arc;

    let mut pair = Pair::new();
    let now = Instant::now();
    let (mut h, _rx) = handshakes(&pair, now);
    // An initiation made for B's key, which B then starts to retire.
    let (_t, for_old) = initiation(&pair, 1);
    let old = pair.b.identity().clone();
    let new = Arc::new(LocalIdentity::new(&PrivateKey::generate()));
    let rotating = HostKeys {
        current: new.clone(),
        retiring: Some(old.clone()),
    };
    pair.b.set_host_keys(rotating).unwrap();
    let (_t, for_new) = initiation(&pair, 2);
    let from = addr(VICTIM);
    for m in [&for_old, &for_new] {
        assert_eq!(judge(&mut h, &pair, now, from, m, false), Verdict::Queue);
    }
    // Under load, each is answered by the checker of the key it was made for.
    assert_eq!(
        judge(&mut h, &pair, now, from, &for_old, true),
        Verdict::Cookie { retiring: true }
    );
    assert_eq!(
        judge(&mut h, &pair, now, from, &for_new, true),
        Verdict::Cookie { retiring: false }
    );
    // Once retired, the old key's initiations have a bad mac1.
    pair.b.set_host_keys(HostKeys::one(new)).unwrap();
    assert_eq!(
        judge(&mut h, &pair, now, from, &for_old, false),
        Verdict::Drop(HostDrop::HandshakeBadMac)
    );
}
