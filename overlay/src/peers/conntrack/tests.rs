use std::time::Duration;

use super::*;
use crate::peers::packet::UDP;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn key(proto: u8, lport: u16, rport: u16) -> FlowKey {
    FlowKey::new(proto, ip("10.42.1.2"), lport, ip("10.42.2.2"), rport)
}

fn secs(t0: Instant, s: u64) -> Instant {
    t0 + Duration::from_secs(s)
}

#[test]
fn a_key_knows_its_ends() {
    let k = FlowKey::new(TCP, ip("fd42::1"), 1, ip("fd42::2"), 2);
    assert_eq!((k.local(), k.remote()), (ip("fd42::1"), ip("fd42::2")));
    assert_eq!((k.local_port(), k.remote_port(), k.proto()), (1, 2, TCP));
    let k = key(UDP, 3, 4);
    assert_eq!((k.local(), k.remote()), (ip("10.42.1.2"), ip("10.42.2.2")));
    // The same addresses as IPv4 and as IPv4-mapped IPv6 are different flows.
    let mapped = FlowKey::new(UDP, ip("::ffff:10.42.1.2"), 3, ip("::ffff:10.42.2.2"), 4);
    assert_ne!(k, mapped);
    assert_eq!(mapped.local(), ip("::ffff:10.42.1.2"));
}

#[test]
fn inserted_flows_are_found_with_origin_and_generation() {
    let t0 = Instant::now();
    let mut ct = Conntrack::new(64, [1, 2], t0);
    assert_eq!(ct.capacity(), 64);
    let k = key(TCP, 40000, 80);
    assert!(ct.find(t0, &k).is_none());
    let flow = ct.insert(t0, k, Direction::Egress, 7).unwrap();
    let (found, tracked) = ct.find(t0, &k).unwrap();
    assert_eq!(found, flow);
    assert_eq!(
        tracked,
        Tracked {
            origin: Direction::Egress,
            generation: 7
        }
    );
    ct.set_generation(flow, 8);
    assert_eq!(ct.find(t0, &k).unwrap().1.generation, 8);
    assert!(ct.find(t0, &key(TCP, 40001, 80)).is_none());
    assert_eq!(ct.live(t0), 1);
    ct.remove(flow);
    assert!(ct.find(t0, &k).is_none());
    assert_eq!(ct.live(t0), 0);
}

#[test]
fn tcp_timeouts_follow_the_flows_state() {
    let t0 = Instant::now();
    let mut ct = Conntrack::new(64, [3, 4], t0);
    let k = key(TCP, 40000, 80);
    // A SYN alone lives TCP_UNREPLIED.
    let f = ct.insert(t0, k, Direction::Egress, 1).unwrap();
    ct.touch(t0, f, Direction::Egress, TCP_SYN);
    assert!(ct.find(secs(t0, TCP_UNREPLIED.into()), &k).is_some());
    assert!(ct
        .find(secs(t0, u64::from(TCP_UNREPLIED) + 1), &k)
        .is_none());

    // Answered but never acknowledged (half-open), it lives TCP_UNREPLIED too.
    let f = ct.insert(t0, k, Direction::Egress, 1).unwrap();
    ct.touch(t0, f, Direction::Egress, TCP_SYN);
    ct.touch(t0, f, Direction::Ingress, TCP_SYN | TCP_ACK);
    ct.touch(t0, f, Direction::Egress, TCP_SYN);
    assert!(ct.find(secs(t0, TCP_UNREPLIED.into()), &k).is_some());
    assert!(
        ct.find(secs(t0, u64::from(TCP_UNREPLIED) + 1), &k)
            .is_none(),
        "a half-open flow outlived TCP_UNREPLIED"
    );

    // Answered and acknowledged, it lives TCP_ESTABLISHED after its last packet.
    let f = ct.insert(t0, k, Direction::Egress, 1).unwrap();
    ct.touch(t0, f, Direction::Egress, TCP_SYN);
    ct.touch(t0, f, Direction::Ingress, TCP_SYN | TCP_ACK);
    ct.touch(t0, f, Direction::Egress, TCP_ACK);
    let t = secs(t0, 200);
    let (f, _) = ct.find(t, &k).unwrap();
    ct.touch(t, f, Direction::Egress, TCP_ACK);
    assert!(ct
        .find(secs(t0, 200 + u64::from(TCP_ESTABLISHED)), &k)
        .is_some());
    assert!(ct
        .find(secs(t0, 201 + u64::from(TCP_ESTABLISHED)), &k)
        .is_none());

    // A FIN shortens it, an RST more; a new SYN from the origin starts it again.
    let f = ct.insert(t0, k, Direction::Egress, 1).unwrap();
    ct.touch(t0, f, Direction::Ingress, TCP_ACK);
    ct.touch(t0, f, Direction::Egress, TCP_FIN | TCP_ACK);
    assert!(ct.find(secs(t0, TCP_CLOSING.into()), &k).is_some());
    assert!(ct.find(secs(t0, u64::from(TCP_CLOSING) + 1), &k).is_none());
    let f = ct.insert(t0, k, Direction::Egress, 1).unwrap();
    ct.touch(t0, f, Direction::Ingress, TCP_RST);
    assert!(ct.find(secs(t0, TCP_RESET.into()), &k).is_some());
    ct.touch(t0, f, Direction::Egress, TCP_SYN);
    assert!(
        ct.find(secs(t0, u64::from(TCP_RESET) + 1), &k).is_some(),
        "started again"
    );
}

#[test]
fn udp_and_icmp_timeouts() {
    let t0 = Instant::now();
    let mut ct = Conntrack::new(64, [5, 6], t0);
    let k = key(UDP, 5353, 53);
    let f = ct.insert(t0, k, Direction::Ingress, 1).unwrap();
    ct.touch(t0, f, Direction::Ingress, 0);
    assert!(ct
        .find(secs(t0, u64::from(UDP_UNREPLIED) + 1), &k)
        .is_none());
    let f = ct.insert(t0, k, Direction::Ingress, 1).unwrap();
    ct.touch(t0, f, Direction::Egress, 0);
    assert!(ct.find(secs(t0, UDP_REPLIED.into()), &k).is_some());
    assert!(ct.find(secs(t0, u64::from(UDP_REPLIED) + 1), &k).is_none());
    let echo = key(ICMP, 77, 0);
    let f = ct.insert(t0, echo, Direction::Egress, 1).unwrap();
    ct.touch(t0, f, Direction::Ingress, 0);
    assert!(ct.find(secs(t0, ICMP_ECHO.into()), &echo).is_some());
    assert!(ct.find(secs(t0, u64::from(ICMP_ECHO) + 1), &echo).is_none());
}

#[test]
fn the_bound_holds_under_a_flood_and_established_flows_keep_working() {
    let t0 = Instant::now();
    let mut ct = Conntrack::new(1024, [7, 8], t0);
    let established = key(TCP, 40000, 5432);
    let f = ct.insert(t0, established, Direction::Egress, 1).unwrap();
    ct.touch(t0, f, Direction::Ingress, TCP_ACK);
    // A flood of 100,000 new flows over 25 s (each UDP from another address, never answered).
    let mut refused_seen = 0;
    for i in 0..100_000u32 {
        let t = t0 + Duration::from_micros(u64::from(i) * 250);
        let from = IpAddr::V4(std::net::Ipv4Addr::from(0x0a2a_0000 | i));
        let k = FlowKey::new(UDP, ip("10.42.1.2"), 53, from, 5353);
        match ct.insert(t, k, Direction::Ingress, 1) {
            Some(f) => ct.touch(t, f, Direction::Ingress, 0),
            None => refused_seen += 1,
        }
        if i % 1000 == 0 {
            let (f, _) = ct
                .find(t, &established)
                .expect("the established flow is never evicted");
            ct.touch(t, f, Direction::Egress, TCP_ACK);
            assert!(ct.live(t) <= ct.capacity());
        }
    }
    assert!(refused_seen > 90_000, "{refused_seen} refused");
    assert_eq!(ct.refused(), refused_seen);
    let t = t0 + Duration::from_secs(25);
    assert!(ct.live(t) <= 1024);
    assert!(ct.find(t, &established).is_some());
    // Once the flood's flows expire, their slots take new flows again.
    let later = t + Duration::from_secs(u64::from(UDP_UNREPLIED) + 1);
    assert!(ct
        .insert(later, key(UDP, 1, 1), Direction::Egress, 1)
        .is_some());
    assert!(ct.find(later, &established).is_some());
}

#[test]
fn later_fragments_follow_a_first_that_passed() {
    let t0 = Instant::now();
    let mut ct = Conntrack::new(64, [9, 10], t0);
    let of = |id| FragmentOf {
        src: ip("10.42.2.2"),
        dst: ip("10.42.1.2"),
        proto: UDP,
        id,
    };
    assert!(!ct.fragment_follows(t0, of(1), 1));
    ct.note_fragment(t0, of(1), 1);
    assert!(ct.fragment_follows(t0, of(1), 1));
    assert!(!ct.fragment_follows(t0, of(2), 1));
    assert!(!ct.fragment_follows(t0, of(1), 2), "another generation");
    assert!(!ct.fragment_follows(secs(t0, u64::from(FRAGMENT_TIMEOUT) + 1), of(1), 1));
    // The ring keeps the latest FRAGMENTS packets.
    for id in 100..100 + FRAGMENTS as u32 {
        ct.note_fragment(t0, of(id), 1);
    }
    assert!(!ct.fragment_follows(t0, of(1), 1));
    assert!(ct.fragment_follows(t0, of(100), 1));
}
