//! Forward only what is ours (issue 9): the agent turns forwarding on for its bridge and TUN
//! device only, never host-wide (IPv6 too, where the kernel has `force_forwarding`), puts every
//! sysctl it changed back at SIGTERM (also after a kill -9 and a restart), and a peer's
//! packets reach only this host's overlay subnet — not its underlay address, not a network
//! behind it. And the bridge keeps one MAC for its life.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use common::forwarding::{bridge_ports, changed, icmp_in_echos, mac, neighbour, sysctl, sysctls};
use common::scenario::{
    self, assert_pings, hosts_prepared, two_hosts, workload, IPV6_PAIR, IPV6_PAIR_LINKS,
};
use common::*;

const BRIDGE: &str = "wgmbr0";
const TUN: &str = "wgm0";

fn v4_forwarding(ns: &Netns, iface: &str) -> String {
    sysctl(ns, &format!("/proc/sys/net/ipv4/conf/{iface}/forwarding"))
}

#[test]
fn forwarding_is_on_for_the_bridge_and_tun_only_and_restored_at_stop() {
    let Some(c) = Cluster::new("forwarding_is_on_for_the_bridge_and_tun_only_and_restored_at_stop")
    else {
        return;
    };
    let (a, b) = scenario::two_hosts_prepared(&c, 51820, 51820);
    // An interface the agent has nothing to do with, forwarding off, and one with it on.
    a.ns.run(&[
        "ip", "link", "add", "xtra0", "type", "veth", "peer", "name", "xtra1",
    ]);
    a.ns.run(&["sysctl", "-qw", "net.ipv4.conf.xtra0.forwarding=1"]);
    let before = sysctls(&a.ns);
    assert_eq!(before["/proc/sys/net/ipv4/ip_forward"], "0");
    a.agent.start();
    b.agent.start();

    let after = sysctls(&a.ns);
    assert_eq!(
        changed(&before, &after),
        vec![],
        "the agent changed host sysctls"
    );
    assert_eq!(v4_forwarding(&a.ns, BRIDGE), "1");
    assert_eq!(v4_forwarding(&a.ns, TUN), "1");
    let record = a.agent.state_dir.join("sysctls.json");
    let mode = std::fs::metadata(&record)
        .expect("the sysctl record exists while the agent runs")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "{}", record.display());

    // Workloads still reach each other through the host's per-interface forwarding.
    let (wa, _ipa) = workload(&c, &a, "wa");
    let (_wb, ipb) = workload(&c, &b, "wb");
    assert_pings(&wa, &ipb, Duration::from_secs(15));

    let status = a.agent.stop().expect("agent exited");
    assert!(status.success(), "SIGTERM should exit 0, got {status}");
    assert_eq!(sysctls(&a.ns), before, "sysctls after SIGTERM");
    assert!(!record.exists(), "the record is removed after a clean stop");
}

/// Where the kernel has `net.ipv6.conf.<iface>.force_forwarding` (Linux 6.17+), IPv6 forwards
/// on the bridge and the TUN device only, like IPv4; elsewhere (the documented fallback)
/// `all.forwarding` goes on and the underlay keeps honouring router advertisements.
#[test]
fn ipv6_forwarding_is_per_interface_and_restored_after_kill9() {
    let Some(c) = Cluster::new("ipv6_forwarding_is_per_interface_and_restored_after_kill9") else {
        return;
    };
    let hosts = hosts_prepared(&c, &IPV6_PAIR, &IPV6_PAIR_LINKS);
    let (a, b) = (&hosts[0], &hosts[1]);
    let ul_ra = "/proc/sys/net/ipv6/conf/ul0/accept_ra";
    let all = "/proc/sys/net/ipv6/conf/all/forwarding";
    let per_interface =
        std::path::Path::new("/proc/sys/net/ipv6/conf/all/force_forwarding").exists();
    a.ns.run(&["sysctl", "-qw", "net.ipv6.conf.ul0.accept_ra=1"]);
    let before = sysctls(&a.ns);
    assert_eq!(before[all], "0");
    a.agent.start();
    b.agent.start();
    let check_running = || {
        let now = sysctls(&a.ns);
        if per_interface {
            assert_eq!(
                changed(&before, &now),
                vec![],
                "the agent changed host sysctls"
            );
            for dev in [BRIDGE, TUN] {
                let path = format!("/proc/sys/net/ipv6/conf/{dev}/force_forwarding");
                assert_eq!(now[&path], "1", "{path}");
            }
        } else {
            // The fallback: host-wide, the underlay still honours router advertisements.
            assert_eq!(now[all], "1");
            assert_eq!(now[ul_ra], "2");
        }
        assert_eq!(
            now["/proc/sys/net/ipv4/ip_forward"], "0",
            "IPv4 stays off host-wide"
        );
    };
    check_running();
    let (wa, _ipa) = workload(&c, a, "wa");
    let (_wb, ipb) = workload(&c, b, "wb");
    assert_pings(&wa, &ipb, Duration::from_secs(15));

    // Killed: the host stays as the agent left it, and the record says what it changed.
    a.agent.kill9();
    let left = sysctls(&a.ns);
    let bridge_ff = format!("/proc/sys/net/ipv6/conf/{BRIDGE}/force_forwarding");
    let (setting, value) = if per_interface {
        (bridge_ff.as_str(), left[&bridge_ff].as_str())
    } else {
        (all, left[all].as_str())
    };
    assert_eq!(value, "1", "{setting} after kill -9");
    assert!(a.agent.state_dir.join("sysctls.json").exists());
    // The next agent restores it first, changes it again, and restores it all at SIGTERM.
    a.agent.restart();
    check_running();
    assert_pings(&wa, &ipb, Duration::from_secs(15));
    let status = a.agent.stop().expect("agent exited");
    assert!(status.success(), "SIGTERM should exit 0, got {status}");
    let after = sysctls(&a.ns);
    assert_eq!(
        changed(&before, &after),
        vec![],
        "sysctls after kill -9, restart, SIGTERM"
    );
}

/// A (wgmesh, 10.42.1.0/24, a workload; a namespace "behind" it on 198.19.5.0/24) and B
/// (wireguard-go, 10.42.2.1) whose `wg` config sends A's underlay address and the network
/// behind A through the tunnel for packets from 10.42.2.1.
#[test]
fn a_peer_reaches_only_the_host_subnet_through_the_tunnel() {
    let Some(c) = Cluster::new("a_peer_reaches_only_the_host_subnet_through_the_tunnel") else {
        return;
    };
    let ha = c.netns("a");
    let hb = c.netns("b");
    let behind = c.netns("behind");
    let (ip_a, ip_b) = c.veth_underlay(&ha, &hb);
    // The network behind A, routed by A (forwarding on for it, as a router host would have).
    ha.run(&[
        "ip", "link", "add", "bh0", "type", "veth", "peer", "name", "bh1",
    ]);
    ha.run(&["ip", "link", "set", "bh1", "netns", behind.name()]);
    ha.run(&["ip", "addr", "add", "198.19.5.1/24", "dev", "bh0"]);
    ha.run(&["ip", "link", "set", "bh0", "up"]);
    ha.run(&["sysctl", "-qw", "net.ipv4.conf.bh0.forwarding=1"]);
    behind.run(&["ip", "addr", "add", "198.19.5.2/24", "dev", "bh1"]);
    behind.run(&["ip", "link", "set", "bh1", "up"]);
    behind.run(&["ip", "route", "add", "default", "via", "198.19.5.1"]);
    assert!(ping(&ha, "198.19.5.2"), "A reaches the namespace behind it");

    let wg = c.wggo(&hb, 51821);
    let peer_b = PeerSpec::new(wg.public_key(), &["10.42.2.0/24"])
        .name("wggo-b")
        .endpoint(&format!("{ip_b}:51821"));
    let a = c.agent(
        &ha,
        AgentSpec::new("host-a", "10.42.1.0/24", 51820).peer(peer_b),
    );
    wg.set_peer(
        a.public_key(),
        &["10.42.1.0/24", &format!("{ip_a}/32"), "198.19.5.0/24"],
        None,
        None,
    );
    wg.addr_add("10.42.2.1/24");
    wg.up();
    wg.route_add("10.42.1.0/24");
    // Only B's overlay address uses the tunnel for A's underlay address and the network behind
    // A (wireguard-go's own UDP to A keeps the main table).
    for net in [format!("{ip_a}/32"), "198.19.5.0/24".into()] {
        hb.run(&[
            "ip", "route", "add", &net, "dev", &wg.ifname, "table", "100",
        ]);
    }
    hb.run(&["ip", "rule", "add", "from", "10.42.2.1", "lookup", "100"]);
    let host_a = scenario::Host {
        ns: ha.clone(),
        ip: ip_a,
        port: 51820,
        agent: a.clone(),
    };
    let (_wa, ipa) = workload(&c, &host_a, "wa");

    // A workload in A's subnet, and A's gateway, are reachable.
    assert_pings(&hb, &ipa, Duration::from_secs(15));
    assert!(ping_from(&hb, "10.42.2.1", "10.42.1.1"), "A's gateway");
    let dropped = || {
        a.peer_status(wg.public_key())["dropped"]["destination_not_local"]
            .as_u64()
            .expect("status shows dropped.destination_not_local")
    };
    assert_eq!(dropped(), 0);

    // A's underlay address and the namespace behind A are not.
    let echos_a = icmp_in_echos(&ha);
    let echos_behind = icmp_in_echos(&behind);
    for dst in [ip_a.to_string(), "198.19.5.2".into()] {
        for _ in 0..3 {
            assert!(
                !ping_from(&hb, "10.42.2.1", &dst),
                "B reached {dst} through the tunnel"
            );
        }
    }
    assert!(
        dropped() >= 6,
        "A counts the packets it dropped: {}",
        a.peer_status(wg.public_key())
    );
    assert_eq!(
        icmp_in_echos(&behind),
        echos_behind,
        "echoes reached behind A"
    );
    assert_eq!(icmp_in_echos(&ha), echos_a, "echoes reached A's own stack");
    // And the subnet still works afterwards.
    assert_pings(&hb, &ipa, Duration::from_secs(5));
}

#[test]
fn the_bridge_mac_is_fixed_across_restarts_and_port_changes() {
    let Some(c) = Cluster::new("the_bridge_mac_is_fixed_across_restarts_and_port_changes") else {
        return;
    };
    let (a, _b) = two_hosts(&c, 51820, 51820);
    let first = mac(&a.ns, BRIDGE);
    let b0 = u8::from_str_radix(&first[..2], 16).unwrap();
    assert_eq!(b0 & 0x03, 0x02, "{first}: locally administered unicast");

    let (w1, _ip1) = workload(&c, &a, "w1");
    let w1_port = bridge_ports(&a.ns, BRIDGE);
    assert_eq!(w1_port.len(), 1, "{w1_port:?}");
    // w1's port gets the lowest MAC there is: a bridge without its own MAC would take it.
    a.ns.run(&[
        "ip",
        "link",
        "set",
        "dev",
        &w1_port[0],
        "address",
        "02:00:00:00:00:01",
    ]);
    let (w2, _ip2) = workload(&c, &a, "w2");
    assert_eq!(mac(&a.ns, BRIDGE), first, "a port changed the bridge's MAC");
    assert_pings(&w2, "10.42.1.1", Duration::from_secs(5));
    assert_eq!(neighbour(&w2, "10.42.1.1").as_deref(), Some(first.as_str()));

    // The workload with the lowest MAC leaves: nothing changes for w2.
    let sock = a.agent.socket.to_str().unwrap().to_string();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_wgmesh"))
        .args(["detach", "--netns", w1.name(), "--socket", &sock])
        .output()
        .expect("run wgmesh detach");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        mac(&a.ns, BRIDGE),
        first,
        "the bridge's MAC changed at detach"
    );
    assert!(ping(&w2, "10.42.1.1"));
    assert_eq!(neighbour(&w2, "10.42.1.1").as_deref(), Some(first.as_str()));

    // A restart (the bridge is deleted and made again) gives it the same MAC.
    a.agent.stop();
    a.agent.start();
    assert_eq!(
        mac(&a.ns, BRIDGE),
        first,
        "the bridge's MAC after a restart"
    );
    // And after a kill -9, the bridge found and reused keeps it too.
    a.agent.kill9();
    a.agent.restart();
    assert_eq!(mac(&a.ns, BRIDGE), first, "the bridge's MAC after kill -9");
    assert_pings(&w2, "10.42.1.1", Duration::from_secs(10));
}

/// A wireguard-go peer whose datagrams suddenly come from an address inside A's own subnet (as
/// a packet looped through our own tunnel, or a replay with a forged source, would): A keeps
/// the peer's real endpoint, counts the refusal, and traffic keeps flowing.
#[test]
fn a_peer_never_roams_into_the_overlay() {
    let Some(c) = Cluster::new("a_peer_never_roams_into_the_overlay") else {
        return;
    };
    let ha = c.netns("a");
    let hb = c.netns("b");
    let (ip_a, ip_b) = c.veth_underlay(&ha, &hb);
    let wg = c.wggo(&hb, 51821);
    let peer_b = PeerSpec::new(wg.public_key(), &["10.42.2.0/24"]).name("wggo-b");
    let a = c.agent(
        &ha,
        AgentSpec::new("host-a", "10.42.1.0/24", 51820).peer(peer_b),
    );
    let ep_a = format!("{ip_a}:51820");
    wg.set_peer(a.public_key(), &["10.42.1.0/24"], Some(&ep_a), None);
    wg.addr_add("10.42.2.1/24");
    wg.up();
    wg.route_add("10.42.1.0/24");
    let host_a = scenario::Host {
        ns: ha.clone(),
        ip: ip_a,
        port: 51820,
        agent: a.clone(),
    };
    let (_wa, ipa) = workload(&c, &host_a, "wa");
    assert_pings(&hb, &ipa, Duration::from_secs(15));
    let real = format!("{ip_b}:51821");
    let peer = || a.peer_status(wg.public_key());
    assert_eq!(peer()["endpoint"], real.as_str());
    assert_eq!(peer()["roams_refused"], 0);
    let rx_before = counter(&peer(), "rx_packets");

    // B's datagrams to A now leave with a source inside A's subnet (a new listen port makes
    // wireguard-go forget its cached source address).
    let to_a = format!("{ip_a}/32");
    hb.run(&["ip", "addr", "add", "10.42.1.200/32", "dev", UNDERLAY_IF]);
    hb.run(&[
        "ip",
        "route",
        "add",
        &to_a,
        "dev",
        UNDERLAY_IF,
        "src",
        "10.42.1.200",
    ]);
    wg.wg(&["set", &wg.ifname, "listen-port", "51822"]);
    assert_eventually(
        Duration::from_secs(10),
        "A refuses to roam to 10.42.1.200",
        || {
            ping(&hb, &ipa);
            counter(&peer(), "roams_refused") >= 1
        },
    );
    let st = peer();
    assert_eq!(
        st["endpoint"],
        real.as_str(),
        "A roamed into its own subnet: {st}"
    );
    assert!(
        counter(&st, "rx_packets") > rx_before,
        "A received B's packets from there (before: {rx_before}): {st}"
    );
    // Back to B's own address and port: traffic flows as before.
    hb.run(&["ip", "route", "del", &to_a]);
    wg.wg(&["set", &wg.ifname, "listen-port", "51821"]);
    assert_pings(&hb, &ipa, Duration::from_secs(10));
}
