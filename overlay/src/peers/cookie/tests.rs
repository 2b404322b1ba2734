//! The checker against boringtun itself (through the overlay's own tunnels): boringtun takes our
//! cookie reply, and the initiation it sends next carries a mac2 the checker accepts — from that
//! address and port only, and only while the secret is current.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use wgmesh_config::PrivateKey;

use super::*;
use crate::peers::noise::{Decapsulated, Encapsulated, LocalIdentity, Tunnel};

const FROM: &str = "198.18.0.7:51820";

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// A responder's identity and checker, and an initiator's tunnel to it.
fn setup(now: Instant) -> (LocalIdentity, CookieChecker, Tunnel) {
    let responder = LocalIdentity::new(&PrivateKey::generate());
    let initiator = LocalIdentity::new(&PrivateKey::generate());
    let checker = CookieChecker::new(responder.public_key().as_bytes(), [9; 32], now);
    let tunnel = Tunnel::new(&initiator, &responder.public_key(), None, None, 5);
    (responder, checker, tunnel)
}

fn first_initiation(tunnel: &mut Tunnel) -> Vec<u8> {
    let mut buf = [0u8; 256];
    let Encapsulated::HandshakeInit(n) = tunnel.encapsulate(&[0x45; 20], &mut buf) else {
        panic!("expected an initiation");
    };
    buf[..n].to_vec()
}

/// The cookie dance: our reply to `init`, boringtun's next initiation (sent at once).
fn with_cookie(checker: &mut CookieChecker, tunnel: &mut Tunnel, now: Instant) -> Vec<u8> {
    let init = first_initiation(tunnel);
    assert!(without_cookie(&init));
    assert_eq!(checker.check(now, addr(FROM), &init), Macs::Mac1);
    let mut reply = [0u8; 128];
    let len = checker
        .reply(now, addr(FROM), &init, &mut reply)
        .expect("room");
    assert_eq!((len, reply[0], &reply[4..8]), (64, 3, &init[4..8]));
    let mut out = [0u8; 256];
    match tunnel.decapsulate(addr(FROM).ip(), &reply[..len], &mut out) {
        Decapsulated::Reply(n) => {
            assert_eq!((n, out[0]), (148, 1), "not an initiation");
            out[..n].to_vec()
        }
        other => panic!("boringtun did not take the cookie and initiate again: {other:?}"),
    }
}

#[test]
fn boringtun_takes_our_cookie_and_its_next_initiation_has_a_mac2_we_accept() {
    let now = Instant::now();
    let (_responder, mut checker, mut tunnel) = setup(now);
    let again = with_cookie(&mut checker, &mut tunnel, now);
    assert_eq!(checker.check(now, addr(FROM), &again), Macs::Mac2);
    // Still within the secret's two minutes.
    let later = now + SECRET_LIFETIME - Duration::from_secs(1);
    assert_eq!(checker.check(later, addr(FROM), &again), Macs::Mac2);
}

#[test]
fn a_cookie_is_good_only_for_its_address_and_port_and_its_two_minutes() {
    let now = Instant::now();
    let (_responder, mut checker, mut tunnel) = setup(now);
    let again = with_cookie(&mut checker, &mut tunnel, now);
    for other in [
        "198.18.0.8:51820",
        "198.18.0.7:51821",
        "[2001:db8::7]:51820",
    ] {
        assert_eq!(
            checker.check(now, addr(other), &again),
            Macs::Mac1,
            "{other}"
        );
    }
    // A stale secret: the cookie is refused (mac1 still good).
    assert_eq!(
        checker.check(now + SECRET_LIFETIME, addr(FROM), &again),
        Macs::Mac1
    );
    // Time going backwards is the first period, not a new one.
    assert_eq!(
        checker.check(now - Duration::from_secs(1), addr(FROM), &again),
        Macs::Mac2
    );
}

#[test]
fn a_wrong_mac1_is_refused_before_anything_else() {
    let now = Instant::now();
    let (_responder, mut checker, mut tunnel) = setup(now);
    let init = first_initiation(&mut tunnel);
    // For someone else's key.
    let stranger = LocalIdentity::new(&PrivateKey::generate());
    let mut theirs = CookieChecker::new(stranger.public_key().as_bytes(), [1; 32], now);
    assert_eq!(theirs.check(now, addr(FROM), &init), Macs::BadMac1);
    // Any changed byte before mac2.
    for i in [0, 8, 100, 116, 131] {
        let mut bad = init.clone();
        bad[i] ^= 1;
        assert_eq!(
            checker.check(now, addr(FROM), &bad),
            Macs::BadMac1,
            "byte {i}"
        );
    }
    // Too short to hold the MACs.
    assert_eq!(checker.check(now, addr(FROM), &init[..31]), Macs::BadMac1);
    // A changed mac2 is only a missing cookie.
    let mut bad = init.clone();
    bad[140] ^= 1;
    assert_eq!(checker.check(now, addr(FROM), &bad), Macs::Mac1);
}

#[test]
fn a_forged_or_replayed_cookie_reply_is_refused_by_boringtun() {
    let now = Instant::now();
    let (_responder, mut checker, mut tunnel) = setup(now);
    let init = first_initiation(&mut tunnel);
    let mut reply = [0u8; 64];
    checker.reply(now, addr(FROM), &init, &mut reply).unwrap();
    let mut forged = reply;
    forged[40] ^= 1;
    let mut out = [0u8; 256];
    assert!(matches!(
        tunnel.decapsulate(addr(FROM).ip(), &forged, &mut out),
        Decapsulated::Error(_)
    ));
    // The real one works once; after the new initiation (a new mac1) it is stale.
    assert!(matches!(
        tunnel.decapsulate(addr(FROM).ip(), &reply, &mut out),
        Decapsulated::Reply(148)
    ));
    assert!(matches!(
        tunnel.decapsulate(addr(FROM).ip(), &reply, &mut out),
        Decapsulated::Error(_)
    ));
}

#[test]
fn nonces_differ_between_replies_and_seeds() {
    let now = Instant::now();
    let (responder, mut checker, mut tunnel) = setup(now);
    let init = first_initiation(&mut tunnel);
    let (mut r1, mut r2) = ([0u8; 64], [0u8; 64]);
    checker.reply(now, addr(FROM), &init, &mut r1).unwrap();
    checker.reply(now, addr(FROM), &init, &mut r2).unwrap();
    assert_ne!(r1[8..32], r2[8..32]);
    let mut other = CookieChecker::new(responder.public_key().as_bytes(), [10; 32], now);
    other.reply(now, addr(FROM), &init, &mut r2).unwrap();
    assert_ne!(r1[8..32], r2[8..32]);
    assert!(checker
        .reply(now, addr(FROM), &init, &mut [0u8; 63])
        .is_none());
}

#[test]
fn a_message_without_a_cookie_is_seen_without_computing_one() {
    let now = Instant::now();
    let (_responder, mut checker, mut tunnel) = setup(now);
    // `with_cookie` sees the first initiation without one.
    let again = with_cookie(&mut checker, &mut tunnel, now);
    assert!(!without_cookie(&again));
    assert!(without_cookie(&[]));
}
