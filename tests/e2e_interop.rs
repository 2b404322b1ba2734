//! Interoperability with the reference implementation: host A runs wgmesh, host B runs
//! wireguard-go configured with `wg`. Whichever side knows the other's endpoint starts
//! the handshake; the other must wait to be contacted, then traffic flows both ways.
//!
//! Each scenario runs with wgmesh's offloads at their default (on) and with `offload = false`.
//! wireguard-go answers only well-formed messages (and its kernel only well-formed inner
//! packets), so the traffic checks — every UDP size intact both ways, ICMP at the edge sizes,
//! TCP with hashes, no IP fragments and no checksum errors on B — are what shows that wgmesh's
//! batching, GSO and splitting produce what the reference expects in both modes.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::scenario::{self, assert_offload_status, assert_pings, workload};
use common::sweep::{
    assert_ping_sizes, assert_snmp_zero, assert_sweep_both_ways, End, Schedule, CLEAN_RECEIVE,
    MAX_PING_PAYLOAD, MAX_UDP_PAYLOAD,
};
use common::*;

const PORT_A: u16 = 51820;
const PORT_B: u16 = 51821;
const B_ADDR: &str = "10.42.2.1";

struct Setup {
    hb: Netns,
    a: Arc<Agent>,
    wg: Arc<WgGo>,
    wa: Netns,
    ipa: String,
    // Last: dropped after the handles above.
    _c: Cluster,
}

/// A (wgmesh, 10.42.1.0/24, one attached workload) and B (wireguard-go, 10.42.2.1/24).
/// `a_knows_b`: A's config has B's endpoint; otherwise B's `wg` config has A's.
/// `offload`: A's `offload` setting (None: the key is absent, so on).
fn setup(test: &str, a_knows_b: bool, offload: Option<bool>) -> Option<Setup> {
    let c = Cluster::new(test)?;
    let ha = c.netns("a");
    let hb = c.netns("b");
    let (ip_a, ip_b) = c.veth_underlay(&ha, &hb);
    let wg = c.wggo(&hb, PORT_B);
    let mut peer_b = PeerSpec::new(wg.public_key(), &["10.42.2.0/24"]).name("wggo-b");
    if a_knows_b {
        peer_b = peer_b.endpoint(&format!("{ip_b}:{PORT_B}"));
    }
    let mut spec = AgentSpec::new("host-a", "10.42.1.0/24", PORT_A).peer(peer_b);
    spec.offload = offload;
    let a = c.agent(&ha, spec);
    assert_offload_status(&a, offload.unwrap_or(true));
    let ep_a = format!("{ip_a}:{PORT_A}");
    wg.set_peer(
        a.public_key(),
        &["10.42.1.0/24"],
        (!a_knows_b).then_some(ep_a.as_str()),
        None,
    );
    wg.addr_add(&format!("{B_ADDR}/24"));
    wg.up();
    wg.route_add("10.42.1.0/24");
    let host_a = scenario::Host {
        ns: ha.clone(),
        ip: ip_a,
        port: PORT_A,
        agent: a.clone(),
    };
    let (wa, ipa) = workload(&c, &host_a, "wa");
    Some(Setup {
        hb,
        a,
        wg,
        wa,
        ipa,
        _c: c,
    })
}

/// After the first contact: pings (also at the edge sizes, with DF), every UDP payload size,
/// and TCP transfers, both ways; nothing fragmented or damaged on either side; and both sides
/// report the handshake.
fn traffic_both_ways(s: &Setup) {
    assert_pings(&s.wa, B_ADDR, Duration::from_secs(5));
    assert_pings(&s.hb, &s.ipa, Duration::from_secs(5));
    let sizes = [0, 1, 100, 1000, MAX_PING_PAYLOAD];
    assert_ping_sizes(&s.wa, B_ADDR, &sizes);
    assert_ping_sizes(&s.hb, &s.ipa, &sizes);
    assert_sweep_both_ways(
        &End::new(&s.wa, &s.ipa),
        &End::new(&s.hb, B_ADDR),
        7001,
        &Arc::new(Schedule::new(MAX_UDP_PAYLOAD, true)),
    );
    // Enough for many TSO super-packets on A's TUN and coalesced writes of B's segments.
    TcpTransfer::new(&s.wa, &s.hb, B_ADDR, 5001, 16 << 20)
        .run()
        .expect("TCP wgmesh workload -> wireguard-go")
        .assert_intact("A workload -> B");
    TcpTransfer::new(&s.hb, &s.wa, &s.ipa, 5002, 16 << 20)
        .run()
        .expect("TCP wireguard-go -> wgmesh workload")
        .assert_intact("B -> A workload");
    // B's namespace holds both wireguard-go's underlay socket and the overlay endpoint.
    assert_snmp_zero(&s.hb, &CLEAN_RECEIVE);
    assert_snmp_zero(
        &s.wa,
        &[&CLEAN_RECEIVE[..], &["Udp.InErrors", "Udp.RcvbufErrors"]].concat(),
    );
    assert!(
        s.wg.latest_handshake(s.a.public_key()) > 0,
        "wireguard-go reports no handshake with A:\n{}",
        s.wg.wg(&["show", &s.wg.ifname])
    );
    let p = s.a.peer_status(s.wg.public_key());
    assert!(
        p["latest_handshake"].as_u64().is_some(),
        "A's status shows no handshake with B: {p}"
    );
}

fn wgmesh_initiates(test: &str, offload: Option<bool>) {
    let Some(s) = setup(test, true, offload) else {
        return;
    };
    // B cannot reach A before A has contacted it: it has no endpoint for A.
    assert_eq!(s.wg.latest_handshake(s.a.public_key()), 0);
    // A starts: the first ping from A's workload triggers A's handshake initiation.
    assert_pings(&s.wa, B_ADDR, Duration::from_secs(15));
    let endpoint =
        s.wg.peers()
            .into_iter()
            .find(|p| p.0 == s.a.public_key())
            .map(|p| p.1)
            .unwrap_or_default();
    assert_eq!(
        endpoint,
        format!("198.18.0.1:{PORT_A}"),
        "wireguard-go did not learn A's endpoint from A's handshake"
    );
    traffic_both_ways(&s);
}

fn wireguard_go_initiates(test: &str, offload: Option<bool>) {
    let Some(s) = setup(test, false, offload) else {
        return;
    };
    let p = s.a.peer_status(s.wg.public_key());
    assert!(
        p["endpoint"].is_null(),
        "A knows no endpoint for B yet, but status says {}",
        p["endpoint"]
    );
    // A has no endpoint for B: its workload cannot reach B until B makes contact.
    assert!(
        !ping(&s.wa, B_ADDR),
        "A reached B although it has no endpoint for it"
    );
    // B starts: its first ping makes wireguard-go initiate the handshake.
    assert_pings(&s.hb, &s.ipa, Duration::from_secs(15));
    let p = s.a.peer_status(s.wg.public_key());
    assert_eq!(
        p["endpoint"],
        format!("198.18.0.2:{PORT_B}"),
        "A did not learn B's endpoint from B's handshake: {p}"
    );
    traffic_both_ways(&s);
}

#[test]
fn wgmesh_initiates_to_wireguard_go() {
    wgmesh_initiates("wgmesh_initiates_to_wireguard_go", None);
}

#[test]
fn wgmesh_initiates_to_wireguard_go_without_offload() {
    wgmesh_initiates(
        "wgmesh_initiates_to_wireguard_go_without_offload",
        Some(false),
    );
}

#[test]
fn wireguard_go_initiates_to_wgmesh() {
    wireguard_go_initiates("wireguard_go_initiates_to_wgmesh", None);
}

#[test]
fn wireguard_go_initiates_to_wgmesh_without_offload() {
    wireguard_go_initiates(
        "wireguard_go_initiates_to_wgmesh_without_offload",
        Some(false),
    );
}
