//! The data path with offloads on (TUN TSO/USO super-packets split on read, GRO-coalesced TUN
//! writes, UDP GSO/GRO on the underlay) and off (one packet per syscall), with traffic chosen
//! to exercise them: UDP datagrams of every size that fits the tunnel (in orders and trains
//! that get batched, coalesced and split), ICMP at the edge sizes, and TCP super-packets;
//! and `status --json` reporting the offloads as configured.
//!
//! How a broken data path shows here: a packet dropped while splitting or coalescing is a
//! missing datagram (or a stalled TCP stream); two datagrams merged, or one cut or padded, is
//! a datagram whose length and first byte name no scheduled datagram or whose bytes differ;
//! a bad checksum is a kernel error counter in the workload (or, for TCP, a retransmission
//! that the counters still show); fragmentation is `Ip.FragCreates`/`Ip.ReasmReqds`; and a
//! packet the peer cannot parse is a non-zero `malformed` or `decrypt_failed` drop.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::scenario::{assert_offload_status, assert_pings, two_hosts_offload, workload};
use common::sweep::{
    assert_ping_sizes, assert_snmp_zero, assert_sweep_both_ways, End, Schedule, CLEAN_RECEIVE,
    MAX_PING_PAYLOAD, MAX_UDP_PAYLOAD,
};
use common::*;

/// Bytes of each TCP transfer (each direction).
const TCP_LEN: u64 = 64 << 20;

/// Two hosts with `offload` configured, one workload each, and every kind of traffic both ways.
fn mixed_traffic(test: &str, offload: bool) {
    let Some(c) = Cluster::new(test) else {
        return;
    };
    let (a, b) = two_hosts_offload(&c, 51820, 51821, Some(offload));
    // Without this the test would not be testing what it says.
    assert_offload_status(&a.agent, offload);
    assert_offload_status(&b.agent, offload);
    let (wa, ipa) = workload(&c, &a, "wa");
    let (wb, ipb) = workload(&c, &b, "wb");
    assert_pings(&wa, &ipb, Duration::from_secs(15));
    assert_pings(&wb, &ipa, Duration::from_secs(5));

    // ICMP at the edges: empty, 1 byte, small, large, and exactly the tunnel MTU, with DF.
    let sizes = [0, 1, 100, 1000, MAX_PING_PAYLOAD];
    assert_ping_sizes(&wa, &ipb, &sizes);
    assert_ping_sizes(&wb, &ipa, &sizes);

    // Every UDP payload size from 0 to 1392, both ways at once.
    let schedule = Arc::new(Schedule::new(MAX_UDP_PAYLOAD, true));
    assert_sweep_both_ways(&End::new(&wa, &ipa), &End::new(&wb, &ipb), 7001, &schedule);

    // TCP: with offloads the sender's TUN hands over 64 KB super-packets and the receiver's
    // TUN takes coalesced ones. Both directions at once.
    std::thread::scope(|s| {
        let ab = s.spawn(|| TcpTransfer::new(&wa, &wb, &ipb, 5001, TCP_LEN).run());
        let ba = s.spawn(|| TcpTransfer::new(&wb, &wa, &ipa, 5002, TCP_LEN).run());
        let (ab, ba) = (ab.join().expect("TCP a->b"), ba.join().expect("TCP b->a"));
        ab.expect("TCP wa -> wb").assert_intact("TCP wa -> wb");
        ba.expect("TCP wb -> wa").assert_intact("TCP wb -> wa");
    });

    // Nothing was damaged, fragmented or refused on the way.
    for ns in [&wa, &wb] {
        assert_snmp_zero(
            ns,
            &[&CLEAN_RECEIVE[..], &["Udp.InErrors", "Udp.RcvbufErrors"]].concat(),
        );
    }
    for ns in [&a.ns, &b.ns] {
        assert_snmp_zero(ns, &["Ip.FragCreates", "Ip.ReasmReqds"]);
    }
    for (host, peer) in [(&a, &b), (&b, &a)] {
        let st = host.agent.status();
        assert_eq!(
            st["dropped"]["malformed"],
            0,
            "agent in {} dropped malformed packets: {st}",
            host.ns.name()
        );
        let p = host.agent.peer_status(peer.agent.public_key());
        for key in ["decrypt_failed", "source_not_allowed"] {
            assert_eq!(
                p["dropped"][key],
                0,
                "agent in {} counted {key} drops from its peer: {p}",
                host.ns.name()
            );
        }
    }
}

#[test]
fn mixed_sizes_with_offload() {
    mixed_traffic("mixed_sizes_with_offload", true);
}

#[test]
fn mixed_sizes_without_offload() {
    mixed_traffic("mixed_sizes_without_offload", false);
}

/// `status --json` reports the offloads the config asks for: on by default (no key), on with
/// `offload = true`, off with `offload = false`. This machine's kernel supports all three
/// offloads, so "on" means all of them.
#[test]
fn status_reports_offload_as_configured() {
    let Some(c) = Cluster::new("status_reports_offload_as_configured") else {
        return;
    };
    for (tag, offload, on) in [
        ("dflt", None, true),
        ("on", Some(true), true),
        ("off", Some(false), false),
    ] {
        let ns = c.netns(tag);
        let mut spec = AgentSpec::new(&format!("host-{tag}"), "10.42.1.0/24", 51820);
        spec.offload = offload;
        let agent = c.agent(&ns, spec);
        let config = std::fs::read_to_string(&agent.config_path).expect("config");
        assert_eq!(
            config.contains("offload"),
            offload.is_some(),
            "config of {tag}:\n{config}"
        );
        assert_offload_status(&agent, on);
    }
}
