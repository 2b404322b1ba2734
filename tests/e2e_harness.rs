//! Checks of the harness itself, against the reference implementation
//! (wireguard-go configured with `wg`), so a failure elsewhere points at wgmesh.

mod common;

use std::time::Duration;

use common::keys;
use common::pcap::{self, Capture};
use common::traffic::{self, Hash64};
use common::*;

#[test]
fn ping_summary_and_hash_helpers() {
    let t = "--- 10.0.0.1 ping statistics ---\n10 packets transmitted, 9 received, 10% packet loss, time 903ms\n";
    assert_eq!(traffic::parse_ping_summary(t), Some((10, 9)));
    let mut a = Hash64::new();
    a.update(b"hello world");
    let mut b = Hash64::new();
    b.update(b"hello worle");
    assert_ne!(a.value(), b.value());
    assert_eq!(
        keys::base64_decode("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="),
        Some((0u8..32).collect::<Vec<u8>>())
    );
    assert_eq!(keys::base64_decode("not base64!"), None);
}

#[test]
fn namespaces_are_created_and_removed() {
    let Some(c) = Cluster::new("namespaces_are_created_and_removed") else {
        return;
    };
    let name;
    {
        let ns = Netns::new("tmp");
        name = ns.name().to_string();
        assert!(ns.path().exists());
        assert!(ns.links().contains(&"lo".to_string()));
    }
    assert!(
        !std::path::Path::new("/run/netns").join(&name).exists(),
        "{name} still exists after drop"
    );
    drop(c);
}

/// wireguard-go <-> wireguard-go over a veth underlay: ping, TCP both ways, and the
/// wire checks the wgmesh tests use must accept what the reference puts on the wire.
#[test]
fn reference_wireguard_pair_passes_the_harness_checks() {
    let Some(c) = Cluster::new("reference_wireguard_pair") else {
        return;
    };
    let a = c.netns("a");
    let b = c.netns("b");
    let (ip_a, ip_b) = c.veth_underlay(&a, &b);
    c.force_segmentation(&a);
    c.force_segmentation(&b);
    assert!(ping(&a, &ip_b.to_string()), "underlay ping");

    let cap = Capture::start(&a, UNDERLAY_IF);

    // A plaintext canary on the underlay must be visible in the capture (capture works).
    let canary = b"wgmesh-harness-canary-0123456789";
    let sink = UdpSink::bind(&b, "198.18.0.2:4000");
    traffic::udp_send(&a, None, "198.18.0.2:4000", canary, 3);
    assert_eventually(Duration::from_secs(5), "canary received", || {
        sink.count() >= 1
    });
    drop(sink);

    let wa = c.wggo(&a, 51820);
    let wb = c.wggo(&b, 51821);
    wa.set_peer(
        wb.public_key(),
        &["10.42.2.0/24"],
        Some(&format!("{ip_b}:51821")),
        None,
    );
    wb.set_peer(wa.public_key(), &["10.42.1.0/24"], None, None);
    wa.addr_add("10.42.1.1/24");
    wb.addr_add("10.42.2.1/24");
    wa.up();
    wb.up();
    wa.route_add("10.42.2.0/24");
    wb.route_add("10.42.1.0/24");

    assert_eventually(Duration::from_secs(15), "ping over wireguard-go", || {
        ping(&a, "10.42.2.1")
    });
    assert!(ping(&b, "10.42.1.1"));

    let marker = b"MARKER-harness-7f3a9c-plaintext!".to_vec();
    TcpTransfer::new(&a, &b, "10.42.2.1", 5001, 4 << 20)
        .pattern(Pattern::Repeat(marker.clone()))
        .run()
        .expect("tcp a->b")
        .assert_intact("wireguard-go a->b");
    TcpTransfer::new(&b, &a, "10.42.1.1", 5002, 4 << 20)
        .run()
        .expect("tcp b->a")
        .assert_intact("wireguard-go b->a");

    let bytes = cap.stop();
    assert!(
        pcap::contains(&bytes, canary),
        "plaintext canary missing: capture does not work"
    );
    assert!(
        !pcap::contains(&bytes, &marker),
        "marker visible on the wire"
    );
    let frames = pcap::parse(&bytes).expect("parse pcap");
    // The canary packet is plaintext UDP between the hosts; leave it out of the check.
    let frames: Vec<_> = frames
        .into_iter()
        .filter(|f| {
            f.ipv4
                .as_ref()
                .and_then(|p| p.udp().map(|u| u.1 != 4000))
                .unwrap_or(true)
        })
        .collect();
    let sum = pcap::check_wireguard_only(&frames, (ip_a, 51820), (ip_b, 51821))
        .unwrap_or_else(|e| panic!("wire check failed:\n{}", e.join("\n")));
    eprintln!("{sum:?}");
    assert!(sum.initiations >= 1 && sum.responses >= 1 && sum.data > 1000);
    assert!(wa.latest_handshake(wb.public_key()) > 0);
}
