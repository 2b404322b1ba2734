//! Cryptokey routing on receive: a peer may only send from the inner addresses it is
//! allowed. A wireguard-go peer B, allowed 10.42.2.0/24 by A, sends from 10.99.0.1
//! (its own `wg` config for A is wider): A drops those packets and counts them.

mod common;

use std::time::Duration;

use common::scenario::{self, assert_pings, workload};
use common::traffic::udp_send;
use common::*;

#[test]
fn packets_from_a_source_the_peer_is_not_allowed_are_dropped() {
    let Some(c) = Cluster::new("packets_from_a_source_the_peer_is_not_allowed_are_dropped") else {
        return;
    };
    let ha = c.netns("a");
    let hb = c.netns("b");
    let (ip_a, ip_b) = c.veth_underlay(&ha, &hb);
    let wg = c.wggo(&hb, 51821);
    let a = c.agent(
        &ha,
        AgentSpec::new("host-a", "10.42.1.0/24", 51820).peer(
            PeerSpec::new(wg.public_key(), &["10.42.2.0/24"])
                .name("b")
                .endpoint(&format!("{ip_b}:51821")),
        ),
    );
    // B sends anything in 10.0.0.0/8 to A, from either of its addresses.
    wg.set_peer(
        a.public_key(),
        &["10.0.0.0/8"],
        Some(&format!("{ip_a}:51820")),
        None,
    );
    wg.addr_add("10.42.2.1/24");
    wg.addr_add("10.99.0.1/32");
    wg.up();
    wg.route_add("10.42.1.0/24");
    let host_a = scenario::Host {
        ns: ha.clone(),
        ip: ip_a,
        port: 51820,
        agent: a.clone(),
    };
    let (wa, ipa) = workload(&c, &host_a, "wa");
    let sink = UdpSink::bind(&wa, &format!("{ipa}:7000"));
    let dst = format!("{ipa}:7000");

    // Control: from an allowed source, datagrams and pings arrive.
    assert_pings(&hb, &ipa, Duration::from_secs(15));
    udp_send(&hb, Some("10.42.2.1"), &dst, b"allowed-1", 10);
    assert_eventually(
        Duration::from_secs(5),
        "datagrams from allowed 10.42.2.1 arrive",
        || sink.count() >= 5,
    );
    let before = a.peer_status(wg.public_key());
    let dropped_before = before["dropped"]["source_not_allowed"]
        .as_u64()
        .unwrap_or_else(|| panic!("no dropped.source_not_allowed in {before}"));

    // From 10.99.0.1, outside what A allows B: encrypted and sent by B, dropped by A.
    const SPOOFED: usize = 20;
    udp_send(&hb, Some("10.99.0.1"), &dst, b"not-allowed", SPOOFED);
    let pings_ok = (0..3).filter(|_| ping_from(&hb, "10.99.0.1", &ipa)).count();
    let (_, _, _, b_tx_after, _) = wg
        .peers()
        .into_iter()
        .find(|p| p.0 == a.public_key())
        .expect("wireguard-go lists A");
    assert!(b_tx_after > 0, "wireguard-go sent nothing to A");
    let want = dropped_before + SPOOFED as u64;
    let mut last = dropped_before;
    let counted = wait_until(Duration::from_secs(10), || {
        last = a.peer_status(wg.public_key())["dropped"]["source_not_allowed"]
            .as_u64()
            .unwrap_or(0);
        last >= want
    });
    // Control again, so the spoofed datagrams had every chance to arrive before we look.
    let n = sink.count();
    udp_send(&hb, Some("10.42.2.1"), &dst, b"allowed-2", 10);
    assert_eventually(
        Duration::from_secs(5),
        "datagrams from allowed 10.42.2.1 still arrive",
        || sink.count() >= n + 5,
    );
    let got = sink.received();
    let leaked: Vec<_> = got
        .iter()
        .filter(|(from, d)| d.as_slice() == b"not-allowed" || from.ip().to_string() == "10.99.0.1")
        .collect();
    assert!(
        leaked.is_empty(),
        "{} datagrams from the not-allowed source reached the workload (from {:?})",
        leaked.len(),
        leaked.first().map(|l| l.0)
    );
    assert!(
        counted,
        "source_not_allowed went from {dropped_before} to {last}, expected at least {want}"
    );
    assert_eq!(pings_ok, 0, "pings from 10.99.0.1 were answered");
}
