use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use super::*;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn passes(l: &mut SourceLimiter, now: Instant, source: IpAddr, n: usize) -> usize {
    (0..n)
        .filter(|_| l.allow(now, source) == Limit::Pass)
        .count()
}

#[test]
fn a_source_gets_its_burst_then_its_rate() {
    let t0 = Instant::now();
    let mut l = SourceLimiter::new([1, 2], t0);
    let a = ip("198.18.0.9");
    assert_eq!(passes(&mut l, t0, a, 1000), BURST as usize);
    // Half a second later: half a second's worth, no more.
    let t1 = t0 + Duration::from_millis(500);
    assert_eq!(passes(&mut l, t1, a, 1000), PACKETS_PER_SECOND as usize / 2);
    // A long pause refills only up to the burst.
    let t2 = t1 + Duration::from_secs(3600);
    assert_eq!(passes(&mut l, t2, a, 1000), BURST as usize);
    // Time going backwards earns nothing.
    assert_eq!(passes(&mut l, t0, a, 10), 0);
}

#[test]
fn one_flooding_source_does_not_spend_anothers_share() {
    let t0 = Instant::now();
    let mut l = SourceLimiter::new([3, 4], t0);
    let flooder = ip("198.18.0.66");
    let peer = ip("198.18.0.2");
    let mut peer_passed = 0;
    let mut flood_passed = 0;
    for ms in 0..10_000u64 {
        let now = t0 + Duration::from_millis(ms);
        flood_passed += passes(&mut l, now, flooder, 100);
        // The peer re-handshakes every 5 s, as WireGuard's retry does.
        if ms % 5000 == 0 {
            peer_passed += passes(&mut l, now, peer, 1);
        }
    }
    assert_eq!(peer_passed, 2);
    // 10 s of a million messages: the burst plus 20 a second.
    let most = BURST as usize + 10 * PACKETS_PER_SECOND as usize;
    assert!((most - 2..=most).contains(&flood_passed), "{flood_passed}");
}

#[test]
fn ipv6_shares_a_bucket_per_64_and_ipv4_per_address() {
    let t0 = Instant::now();
    let mut l = SourceLimiter::new([5, 6], t0);
    let burst = BURST as usize;
    assert_eq!(passes(&mut l, t0, ip("2001:db8:1:2::1"), burst), burst);
    assert_eq!(passes(&mut l, t0, ip("2001:db8:1:2:ffff::9"), 1), 0);
    assert_eq!(passes(&mut l, t0, ip("2001:db8:1:3::1"), 1), 1);
    assert_eq!(passes(&mut l, t0, ip("198.18.0.1"), burst), burst);
    assert_eq!(passes(&mut l, t0, ip("::ffff:198.18.0.1"), 1), 0);
    assert_eq!(passes(&mut l, t0, ip("198.18.0.2"), 1), 1);
    assert_ne!(source_key(ip("::")), source_key(ip("0.0.0.0")));
}

#[test]
fn the_table_keeps_its_size_and_evicts_the_least_recently_seen() {
    let t0 = Instant::now();
    let mut l = SourceLimiter::new([7, 8], t0);
    let busy = ip("198.18.0.2");
    assert_eq!(passes(&mut l, t0, busy, 100), BURST as usize);
    // Many more sources than slots, each seen once, after the busy one.
    for i in 0..(4 * SETS * WAYS) as u32 {
        let now = t0 + Duration::from_micros(u64::from(i));
        let src = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i));
        assert_eq!(l.allow(now, src), Limit::Pass);
    }
    assert_eq!(l.slots.len(), SETS * WAYS);
    // The busy source was evicted (it was the least recently seen) and starts over.
    let later = t0 + Duration::from_millis(100);
    assert_eq!(passes(&mut l, later, busy, 100), BURST as usize);
}

#[test]
fn sources_spread_over_the_sets_with_the_seed() {
    let t0 = Instant::now();
    let a = SourceLimiter::new([9, 10], t0);
    let b = SourceLimiter::new([11, 12], t0);
    let sets = |l: &SourceLimiter| -> Vec<usize> {
        (0..64u32)
            .map(|i| l.set_of(source_key(IpAddr::V4(Ipv4Addr::from(0xc612_0000 + i)))))
            .collect()
    };
    let (sa, sb) = (sets(&a), sets(&b));
    assert_ne!(sa, sb);
    let mut distinct = sa.clone();
    distinct.sort_unstable();
    distinct.dedup();
    assert!(
        distinct.len() > 48,
        "{} sets for 64 sources",
        distinct.len()
    );
}

#[test]
fn the_host_bucket_passes_its_burst_then_its_rate() {
    let t0 = Instant::now();
    let mut b = Bucket::new(1_000, 5, t0);
    let passed = (0..20).filter(|_| b.allow(t0) == Limit::Pass).count();
    assert_eq!(passed, 5);
    // 10 ms earn 10 more (capped at the burst of 5).
    let t1 = t0 + Duration::from_millis(10);
    let passed = (0..20).filter(|_| b.allow(t1) == Limit::Pass).count();
    assert_eq!(passed, 5);
    let t2 = t1 + Duration::from_millis(2);
    let passed = (0..20).filter(|_| b.allow(t2) == Limit::Pass).count();
    assert_eq!(passed, 2);
    // Time going backwards earns nothing.
    assert_eq!(b.allow(t0), Limit::Drop);
}

#[test]
fn looking_at_the_host_bucket_takes_nothing() {
    let t0 = Instant::now();
    let mut b = Bucket::new(1_000, 2, t0);
    assert!(b.has_credit(t0) && b.has_credit(t0));
    assert_eq!(b.allow(t0), Limit::Pass);
    assert_eq!(b.allow(t0), Limit::Pass);
    assert!(!b.has_credit(t0));
}
