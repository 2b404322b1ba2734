//! Two hosts on a veth underlay, two attached workloads on each: ping across hosts,
//! 64 MiB TCP each way with matching hashes, and `status --json` reflecting it.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::scenario::{
    assert_pings, hosts_prepared, two_hosts, two_hosts_offload, workload, IPV6_PAIR,
    IPV6_PAIR_LINKS,
};
use common::*;

const LEN: u64 = 64 << 20;

fn in_subnet(ip: &str, prefix: &str) -> bool {
    ip.starts_with(prefix)
}

#[test]
fn workloads_on_two_hosts_reach_each_other() {
    let Some(c) = Cluster::new("workloads_on_two_hosts_reach_each_other") else {
        return;
    };
    let (a, b) = two_hosts(&c, 51820, 51820);
    let (wa1, ipa1) = workload(&c, &a, "wa1");
    let (wa2, ipa2) = workload(&c, &a, "wa2");
    let (wb1, ipb1) = workload(&c, &b, "wb1");
    let (wb2, ipb2) = workload(&c, &b, "wb2");
    for ip in [&ipa1, &ipa2] {
        assert!(in_subnet(ip, "10.42.1."), "{ip} not in 10.42.1.0/24");
    }
    for ip in [&ipb1, &ipb2] {
        assert!(in_subnet(ip, "10.42.2."), "{ip} not in 10.42.2.0/24");
    }
    assert_ne!(ipa1, ipa2, "two workloads got the same address");
    assert_ne!(ipb1, ipb2, "two workloads got the same address");

    // The first packet waits for a handshake.
    assert_pings(&wa1, &ipb1, Duration::from_secs(15));
    for (from, to) in [
        (&wa1, &ipb2),
        (&wa2, &ipb1),
        (&wa2, &ipb2),
        (&wb1, &ipa1),
        (&wb1, &ipa2),
        (&wb2, &ipa1),
        (&wb2, &ipa2),
    ] {
        assert_pings(from, to, Duration::from_secs(5));
    }

    let peer_b = a.agent.peer_status(b.agent.public_key());
    let hs = peer_b["latest_handshake"]
        .as_u64()
        .unwrap_or_else(|| panic!("no handshake in status after ping: {peer_b}"));
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(
        hs <= now + 5 && now - hs.min(now) < 120,
        "latest_handshake {hs} is not recent (now {now})"
    );
    assert_eq!(
        peer_b["endpoint"],
        b.endpoint(),
        "endpoint of host b in a's status"
    );
    assert_eq!(peer_b["allowed_ips"], serde_json::json!(["10.42.2.0/24"]));
    let a_before = peer_b;
    let b_before = b.agent.peer_status(a.agent.public_key());

    TcpTransfer::new(&wa1, &wb1, &ipb1, 5001, LEN)
        .run()
        .expect("TCP a->b")
        .assert_intact("wa1 -> wb1");
    TcpTransfer::new(&wb2, &wa2, &ipa2, 5002, LEN)
        .run()
        .expect("TCP b->a")
        .assert_intact("wb2 -> wa2");

    let a_after = a.agent.peer_status(b.agent.public_key());
    let b_after = b.agent.peer_status(a.agent.public_key());
    for (who, before, after) in [("a", &a_before, &a_after), ("b", &b_before, &b_after)] {
        for key in ["tx_bytes", "rx_bytes"] {
            let (x, y) = (counter(before, key), counter(after, key));
            assert!(
                y >= x + LEN,
                "{who}'s {key} for its peer grew from {x} to {y}, less than the {LEN} bytes sent"
            );
        }
        for key in ["tx_packets", "rx_packets"] {
            let (x, y) = (counter(before, key), counter(after, key));
            assert!(y > x + 1000, "{who}'s {key} grew only from {x} to {y}");
        }
    }
    let st = a.agent.status();
    let workloads = st["workloads"].as_array().expect("workloads array");
    for (ns, ip) in [(&wa1, &ipa1), (&wa2, &ipa2)] {
        assert!(
            workloads
                .iter()
                .any(|w| w["netns"] == ns.name() && w["ip"].as_str().map(ip_of) == Some(ip)),
            "status of a does not list workload {} with {ip}: {st}",
            ns.name()
        );
    }
}

/// The same path with `offload = false` (plain per-packet TUN and UDP I/O).
#[test]
fn workloads_reach_each_other_without_offloads() {
    let Some(c) = Cluster::new("workloads_reach_each_other_without_offloads") else {
        return;
    };
    let (a, b) = two_hosts_offload(&c, 51820, 51820, Some(false));
    for h in [&a, &b] {
        let st = h.agent.status();
        assert_eq!(
            st["offload"],
            serde_json::json!({"tun": false, "udp_gso": false, "udp_gro": false}),
            "offload = false but status reports offloads in use: {st}"
        );
    }
    let (wa, ipa) = workload(&c, &a, "wa");
    let (wb, ipb) = workload(&c, &b, "wb");
    assert_pings(&wa, &ipb, Duration::from_secs(15));
    assert_pings(&wb, &ipa, Duration::from_secs(5));
    TcpTransfer::new(&wa, &wb, &ipb, 5001, 16 << 20)
        .run()
        .expect("TCP a->b")
        .assert_intact("wa -> wb (no offload)");
    TcpTransfer::new(&wb, &wa, &ipa, 5002, 16 << 20)
        .run()
        .expect("TCP b->a")
        .assert_intact("wb -> wa (no offload)");
}

#[test]
fn an_ipv6_overlay_with_static_peers_carries_traffic() {
    let Some(c) = Cluster::new("an_ipv6_overlay_with_static_peers_carries_traffic") else {
        return;
    };
    let hosts = hosts_prepared(&c, &IPV6_PAIR, &IPV6_PAIR_LINKS);
    for h in &hosts {
        h.agent.start();
    }
    let (wa, ipa) = workload(&c, &hosts[0], "wa");
    let (wb, ipb) = workload(&c, &hosts[1], "wb");
    assert_eq!((ipa.as_str(), ipb.as_str()), ("fd42:1::2", "fd42:2::2"));
    assert_pings(&wa, &ipb, Duration::from_secs(15));
    assert_pings(&wb, &ipa, Duration::from_secs(5));
    // TCP over IPv6 through the offloaded path (TSO super-packets, GRO), both ways.
    TcpTransfer::new(&wa, &wb, &ipb, 5001, 16 << 20)
        .run()
        .expect("TCP a->b over IPv6")
        .assert_intact("wa -> wb (IPv6)");
    TcpTransfer::new(&wb, &wa, &ipa, 5002, 16 << 20)
        .run()
        .expect("TCP b->a over IPv6")
        .assert_intact("wb -> wa (IPv6)");
}
