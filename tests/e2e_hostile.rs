//! Datagrams anyone can send to the WireGuard port — empty, junk, truncated or forged messages,
//! a flood of handshake initiations — are dropped and counted, and never stop the agent or its
//! tunnels.

mod common;

use std::time::Duration;

use common::scenario::{assert_pings, two_hosts, workload};
use common::traffic::udp_send;
use common::*;

#[test]
fn hostile_datagrams_are_dropped_and_traffic_goes_on() {
    let Some(c) = Cluster::new("hostile_datagrams_are_dropped_and_traffic_goes_on") else {
        return;
    };
    let (a, b) = two_hosts(&c, 51820, 51820);
    let (wa, ipa) = workload(&c, &a, "wa");
    let (wb, ipb) = workload(&c, &b, "wb");
    assert_pings(&wa, &ipb, Duration::from_secs(15));
    let b_key = b.agent.public_key().to_string();
    let endpoint_before = a.agent.peer_status(&b_key)["endpoint"].clone();
    let malformed_before = a.agent.status()["dropped"]["malformed"].as_u64().unwrap();

    // From a third address on B's side of the underlay: B's namespace with a new address.
    b.ns.run(&["ip", "addr", "add", "198.18.0.66/24", "dev", UNDERLAY_IF]);
    let target = "198.18.0.1:51820";
    let mut forged_response = vec![0u8; 92];
    forged_response[0] = 2;
    forged_response[8] = 0x55; // some receiver index
    let mut truncated_data = vec![0u8; 20];
    truncated_data[0] = 4;
    let mut forged_data = vec![0u8; 200];
    forged_data[0] = 4;
    forged_data[4..8].copy_from_slice(&0x0000_0100u32.to_le_bytes());
    let mut junk_init = vec![0u8; 148];
    junk_init[0] = 1;
    for payload in [
        &b""[..],
        b"GET / HTTP/1.1\r\n\r\n",
        &truncated_data,
        &forged_data,
        &forged_response,
    ] {
        udp_send(&b.ns, Some("198.18.0.66"), target, payload, 5);
    }
    // Initiations with a bad mac1, as fast as the sender goes.
    udp_send(&b.ns, Some("198.18.0.66"), target, &junk_init, 300);

    // The agent is alive, counted the junk, kept B's endpoint, and still carries traffic.
    assert!(a.agent.is_running(), "agent died:\n{}", a.agent.log());
    let st = a.agent.status();
    let malformed = st["dropped"]["malformed"].as_u64().unwrap();
    assert!(
        malformed >= malformed_before + 10,
        "empty/junk/truncated datagrams not counted as malformed: {st}"
    );
    assert_eq!(
        a.agent.peer_status(&b_key)["endpoint"],
        endpoint_before,
        "unauthenticated datagrams moved the peer's endpoint"
    );
    assert_pings(&wa, &ipb, Duration::from_secs(5));
    assert_pings(&wb, &ipa, Duration::from_secs(5));
}
