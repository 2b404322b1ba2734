//! What the underlay carries: a marker sent through the overlay (TCP and UDP, both
//! ways) never appears on the wire, and every IPv4 packet between the two hosts is a
//! WireGuard message in UDP between the two listen ports.

mod common;

use std::time::Duration;

use common::pcap::{self, Capture};
use common::scenario::{assert_pings, two_hosts_prepared, workload};
use common::traffic::udp_send;
use common::*;

const PORT_A: u16 = 51820;
const PORT_B: u16 = 51821;

#[test]
fn underlay_carries_only_wireguard_messages() {
    let Some(c) = Cluster::new("underlay_carries_only_wireguard_messages") else {
        return;
    };
    // The capture starts before the agents, so it sees their first handshake.
    let (a, b) = two_hosts_prepared(&c, PORT_A, PORT_B);
    let (a, b) = (&a, &b);
    // Segment any GSO batch before it reaches either end of the veth, so the capture
    // shows the datagrams a real wire would carry.
    c.force_segmentation(&a.ns);
    c.force_segmentation(&b.ns);
    let cap = Capture::start(&a.ns, UNDERLAY_IF);
    a.agent.start();
    b.agent.start();
    let (wa, ipa) = workload(&c, a, "wa");
    let (wb, ipb) = workload(&c, b, "wb");

    let marker: Vec<u8> = format!("WGMESH-MARKER-{:08x}-plaintext", std::process::id()).into();

    assert_pings(&wa, &ipb, Duration::from_secs(15));
    assert_pings(&wb, &ipa, Duration::from_secs(5));

    for (from, to, ip, port) in [(&wa, &wb, &ipb, 5001), (&wb, &wa, &ipa, 5002)] {
        TcpTransfer::new(from, to, ip, port, 8 << 20)
            .pattern(Pattern::Repeat(marker.clone()))
            .run()
            .expect("TCP with marker")
            .assert_intact("marker stream");
    }
    let mut dgram = Vec::new();
    for _ in 0..20 {
        dgram.extend_from_slice(&marker);
    }
    for (from, to, ip) in [(&wa, &wb, &ipb), (&wb, &wa, &ipa)] {
        let sink = UdpSink::bind(to, &format!("{ip}:7000"));
        udp_send(from, None, &format!("{ip}:7000"), &dgram, 50);
        assert_eventually(
            Duration::from_secs(5),
            "UDP marker datagrams arrive through the overlay",
            || sink.count() >= 25,
        );
        assert!(sink.received().iter().all(|(_, d)| *d == dgram));
    }

    let bytes = cap.stop();
    assert!(
        !pcap::contains(&bytes, &marker),
        "the marker crossed the underlay in plaintext"
    );
    let frames = pcap::parse(&bytes).expect("parse capture");
    let sum = pcap::check_wireguard_only(&frames, (a.ip, PORT_A), (b.ip, PORT_B)).unwrap_or_else(
        |errors| {
            panic!(
                "{} packets between the hosts are not WireGuard messages; first ones:\n{}",
                errors.len(),
                errors[..errors.len().min(30)].join("\n")
            )
        },
    );
    eprintln!("wire summary: {sum:?}");
    assert!(
        sum.initiations >= 1 && sum.responses >= 1,
        "no handshake seen on the wire: {sum:?}"
    );
    assert!(
        sum.data_bytes as u64 >= 16 << 20,
        "less encrypted data on the wire than was sent: {sum:?}"
    );
}
