//! The agent's life cycle as an operator sees it: SIGTERM removes everything the agent created
//! and the next start wires the attached workloads again with the same addresses; detach frees
//! an address; a peer that moves to a new underlay address is followed (roaming).

mod common;

use std::time::Duration;

use common::netns::Netns;
use common::scenario::{assert_pings, two_hosts, two_hosts_prepared, workload};
use common::*;

#[test]
fn sigterm_removes_everything_and_the_next_start_restores_workloads() {
    let Some(c) = Cluster::new("sigterm_removes_everything_and_the_next_start_restores_workloads")
    else {
        return;
    };
    let (a, b) = two_hosts(&c, 51820, 51820);
    // What the namespace had before the agent: after a clean stop it must look the same.
    a.agent.stop();
    let links_before = a.ns.links();
    let routes_before = a.ns.routes();
    a.agent.start();

    let (wa, ipa) = workload(&c, &a, "wa");
    let (wb, ipb) = workload(&c, &b, "wb");
    assert_pings(&wa, &ipb, Duration::from_secs(15));

    let status = a.agent.stop().expect("agent exited");
    assert!(status.success(), "SIGTERM should exit 0, got {status}");
    assert_eq!(a.ns.links(), links_before, "links left after SIGTERM");
    assert_eq!(a.ns.routes(), routes_before, "routes left after SIGTERM");
    assert!(
        !a.agent.socket.exists(),
        "the API socket {} is left after SIGTERM",
        a.agent.socket.display()
    );
    assert!(
        !wa.run(&["ip", "-o", "link"]).contains("eth0"),
        "the workload's eth0 is left after SIGTERM"
    );

    a.agent.start();
    assert!(
        wa.run(&["ip", "-o", "-4", "addr", "show", "dev", "eth0"])
            .contains(&format!("inet {ipa}/")),
        "the workload did not get its address {ipa} back"
    );
    assert_pings(&wa, &ipb, Duration::from_secs(30));
    assert_pings(&wb, &ipa, Duration::from_secs(30));
}

#[test]
fn detach_frees_the_address_and_unknown_namespaces_are_refused() {
    let Some(c) = Cluster::new("detach_frees_the_address_and_unknown_namespaces_are_refused")
    else {
        return;
    };
    let (a, _b) = two_hosts(&c, 51820, 51820);
    let (w1, ip1) = workload(&c, &a, "w1");
    let (_w2, ip2) = workload(&c, &a, "w2");
    assert_ne!(ip1, ip2);
    let sock = a.agent.socket.to_str().unwrap().to_string();

    let out = wgmesh(&["detach", "--netns", w1.name(), "--socket", &sock]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!w1.run(&["ip", "-o", "link"]).contains("eth0"));
    let st = a.agent.status();
    assert!(
        !st["workloads"].to_string().contains(w1.name()),
        "detached workload still listed: {st}"
    );

    // The freed address is the lowest free one again.
    let (_w3, ip3) = workload(&c, &a, "w3");
    assert_eq!(ip3, ip1, "the freed address was not reused");

    let out = wgmesh(&["detach", "--netns", w1.name(), "--socket", &sock]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not attached"), "{err}");

    let out = wgmesh(&["attach", "--netns", "wgm-no-such-ns", "--socket", &sock]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("wgm-no-such-ns") && err.contains("not found"),
        "{err}"
    );
    // The failed attach handed out nothing.
    let (_w4, ip4) = workload(&c, &a, "w4");
    assert!(ip4 != ip2 && ip4 != ip3, "{ip4} given twice");
}

#[test]
fn a_peer_that_moves_is_followed() {
    let Some(c) = Cluster::new("a_peer_that_moves_is_followed") else {
        return;
    };
    let (a, b) = two_hosts(&c, 51820, 51820);
    let (wa, ipa) = workload(&c, &a, "wa");
    let (wb, ipb) = workload(&c, &b, "wb");
    assert_pings(&wa, &ipb, Duration::from_secs(15));
    let a_key = a.agent.public_key().to_string();
    assert_eq!(b.agent.peer_status(&a_key)["endpoint"], "198.18.0.1:51820");

    // A's underlay address changes (a new DHCP lease, a moved VM). Deleting the old address
    // first: deleting a primary address would take a secondary of the same prefix with it.
    a.ns.run(&["ip", "addr", "del", "198.18.0.1/24", "dev", UNDERLAY_IF]);
    a.ns.run(&["ip", "addr", "add", "198.18.0.101/24", "dev", UNDERLAY_IF]);

    // A keeps sending; B learns the new endpoint from authenticated packets and answers there.
    assert_pings(&wa, &ipb, Duration::from_secs(30));
    assert_eventually(
        Duration::from_secs(10),
        "B follows A to its new address",
        || b.agent.peer_status(&a_key)["endpoint"] == "198.18.0.101:51820",
    );
    assert_pings(&wb, &ipa, Duration::from_secs(10));
}

/// Packets `ul0` of `ns` has sent so far.
fn underlay_tx_packets(ns: &Netns) -> u64 {
    let json = ns.run(&["ip", "-s", "-j", "link", "show", UNDERLAY_IF]);
    let v: serde_json::Value = serde_json::from_str(&json).expect("ip -j output");
    v[0]["stats64"]["tx"]["packets"]
        .as_u64()
        .expect("tx packet counter")
}

#[test]
fn persistent_keepalive_sends_while_idle_and_only_where_configured() {
    let Some(c) = Cluster::new("persistent_keepalive_sends_while_idle_and_only_where_configured")
    else {
        return;
    };
    let (a, b) = two_hosts_prepared(&c, 51820, 51820);
    let (a, b) = (&a, &b);
    // Only the tunnel should send: no IPv6 router solicitations on the underlay.
    for h in [a, b] {
        h.ns.run(&["sysctl", "-qw", "net.ipv6.conf.ul0.disable_ipv6=1"]);
    }
    let mut spec = a.agent.spec();
    spec.peers[0].persistent_keepalive = Some(1);
    a.agent.set_spec(spec);
    a.agent.start();
    b.agent.start();
    let b_key = b.agent.public_key().to_string();
    assert_eventually(Duration::from_secs(10), "a handshake", || {
        !a.agent.peer_status(&b_key)["latest_handshake"].is_null()
    });
    assert_eq!(a.agent.peer_status(&b_key)["persistent_keepalive"], 1);
    // Let the handshake's own packets pass, then watch an idle tunnel for 4 seconds.
    std::thread::sleep(Duration::from_millis(500));
    let (a0, b0) = (underlay_tx_packets(&a.ns), underlay_tx_packets(&b.ns));
    std::thread::sleep(Duration::from_secs(4));
    let (a1, b1) = (underlay_tx_packets(&a.ns), underlay_tx_packets(&b.ns));
    assert!(
        (3..=8).contains(&(a1 - a0)),
        "A (keepalive 1 s) sent {} packets in 4 idle seconds",
        a1 - a0
    );
    assert!(
        b1 - b0 <= 1, // an ARP exchange at most
        "B (no keepalive) sent {} packets in 4 idle seconds",
        b1 - b0
    );
}
