//! No cleartext, ever: while workloads ping and stream across hosts, a peer removed by the
//! control plane (`node remove`), a SIGHUP that drops the peer, a `kill -9` of the agent and an
//! agent whose peer has not handshaken yet never let an overlay packet onto the underlay. Each
//! host's default route points at a sniffer namespace, so a packet that left the tunnel would
//! land there; captures on the sniffer and on both hosts' underlays must show no overlay
//! address, and every packet between the hosts must be WireGuard between their ports.
//!
//! The same holds for an IPv6 overlay (fd42::/64 subnets, cluster fd00::/8), whose packets
//! would follow the hosts' IPv6 default route to the sniffer.
//!
//! Also: the cluster's `unreachable` route is there after `kill -9`, taken over by the next
//! start, and gone after SIGTERM; a reload that changes `cluster_cidr` moves it while traffic
//! flows, without a leak.

mod common;

use std::time::Duration;

use common::control::{control_and_joined_hosts, lists_peer};
use common::pcap::{self, Capture};
use common::scenario::{assert_pings, workload, Host};
use common::sniffer::{
    received_some, static_pair_on_bridge, static_pair_with_subnets, Load, Sniffer, Watch,
};
use common::*;

/// How long traffic keeps trying after the break, for a leak to show.
const AFTER_BREAK: Duration = Duration::from_secs(3);

/// `ip route get DST` in `host`: how the kernel routes a packet there now.
fn route_to(host: &Host, dst: &str) -> String {
    let out = host.ns.exec(&["ip", "route", "get", dst]);
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Asserts `host` refuses to route to `dst` (the cluster's unreachable route answers).
#[track_caller]
fn assert_closed(host: &Host, dst: &str) {
    let shown = route_to(host, dst);
    assert!(
        shown.contains("No route to host") || shown.contains("unreachable"),
        "{} should refuse {dst}, but routes it: {shown}",
        host.ns.name()
    );
}

/// How many packets the kernel of `host` handed to its TUN device `wgm0` so far.
fn tun_tx_packets(host: &Host) -> u64 {
    let n = host
        .ns
        .run(&["cat", "/sys/class/net/wgm0/statistics/tx_packets"]);
    n.trim()
        .parse()
        .unwrap_or_else(|e| panic!("tx_packets of wgm0: {n:?}: {e}"))
}

/// The cluster routes of the agent (protocol 119, type unreachable) in `host`.
fn cluster_routes(host: &Host) -> String {
    host.ns
        .run(&["ip", "route", "show", "type", "unreachable", "proto", "119"])
}

/// Two static hosts on a bridge, both agents running, the sniffer as their default gateway, and
/// a workload on each that already reaches the other.
struct Running {
    _bridge: Bridge,
    a: Host,
    b: Host,
    sniffer: Sniffer,
    wa: Netns,
    wb: Netns,
    ipa: String,
    ipb: String,
}

fn running_pair(c: &Cluster) -> Running {
    let (bridge, a, b) = static_pair_on_bridge(c);
    a.agent.start();
    b.agent.start();
    let sniffer = Sniffer::plug(c, &bridge, &[&a, &b]);
    let (wa, ipa) = workload(c, &a, "wa");
    let (wb, ipb) = workload(c, &b, "wb");
    assert_pings(&wa, &ipb, Duration::from_secs(15));
    Running {
        _bridge: bridge,
        a,
        b,
        sniffer,
        wa,
        wb,
        ipa,
        ipb,
    }
}

#[test]
fn node_remove_of_the_peer_leaks_nothing() {
    let Some(c) = Cluster::new("node_remove_of_the_peer_leaks_nothing") else {
        return;
    };
    let (bridge, cp, _token, hosts) = control_and_joined_hosts(&c, &["--reusable"], &["a", "b"]);
    let (a, b) = (&hosts[0], &hosts[1]);
    let sniffer = Sniffer::plug(&c, &bridge, &[a, b]);
    let (wa, _ipa) = workload(&c, a, "wa");
    let (wb, ipb) = workload(&c, b, "wb");
    assert_pings(&wa, &ipb, Duration::from_secs(20));

    let watch = Watch::start(&c, &sniffer, &[a, b]);
    let load = Load::stream(&wa, &wb, &ipb);
    std::thread::sleep(Duration::from_secs(1));
    cp.node_remove("host-b");
    assert_eventually(
        Duration::from_secs(15),
        "A drops B after node remove",
        || !lists_peer(a, b),
    );
    std::thread::sleep(AFTER_BREAK);
    drop(load);
    let data = watch.finish("node remove");
    assert!(data > 0, "no WireGuard data was seen before the removal");
    assert_closed(a, &ipb);
}

#[test]
fn a_sighup_that_drops_the_peer_leaks_nothing() {
    let Some(c) = Cluster::new("a_sighup_that_drops_the_peer_leaks_nothing") else {
        return;
    };
    let Running {
        a,
        b,
        sniffer,
        wa,
        wb,
        ipa: _,
        ipb,
        ..
    } = running_pair(&c);

    let watch = Watch::start(&c, &sniffer, &[&a, &b]);
    let load = Load::stream(&wa, &wb, &ipb);
    std::thread::sleep(Duration::from_secs(1));
    let mut spec = a.agent.spec();
    spec.peers.clear();
    a.agent.set_spec(spec);
    a.agent.reload();
    assert_eventually(Duration::from_secs(10), "A drops B on SIGHUP", || {
        a.agent.peer_keys().is_empty()
    });
    std::thread::sleep(AFTER_BREAK);
    drop(load);
    let data = watch.finish("SIGHUP dropping the peer");
    assert!(data > 0, "no WireGuard data was seen before the reload");
    assert_closed(&a, &ipb);
}

#[test]
fn an_ipv6_overlay_leaks_nothing_on_sighup_or_kill9() {
    let Some(c) = Cluster::new("an_ipv6_overlay_leaks_nothing_on_sighup_or_kill9") else {
        return;
    };
    let (bridge, a, b) = static_pair_with_subnets(&c, ["fd42:1::/64", "fd42:2::/64"]);
    a.agent.start();
    b.agent.start();
    let sniffer = Sniffer::plug(&c, &bridge, &[&a, &b]);
    let (wa, ipa) = workload(&c, &a, "wa");
    let (wb, ipb) = workload(&c, &b, "wb");
    assert_eq!((ipa.as_str(), ipb.as_str()), ("fd42:1::2", "fd42:2::2"));
    assert_pings(&wa, &ipb, Duration::from_secs(15));
    // The hosts route IPv6 to the sniffer by default: only the tunnel and the cluster's
    // `unreachable` route keep overlay packets from following it.
    let via = route_to(&b, "2001:db8::1");
    assert!(via.contains("via 2001:2::fe"), "{via}");

    let watch = Watch::start(&c, &sniffer, &[&a, &b]);
    let load = Load::stream(&wa, &wb, &ipb);
    let back = Load::pings(&wb, &ipa);
    std::thread::sleep(Duration::from_secs(1));
    // A drops B on SIGHUP; B is killed.
    let mut spec = a.agent.spec();
    spec.peers.clear();
    a.agent.set_spec(spec);
    a.agent.reload();
    assert_eventually(Duration::from_secs(10), "A drops B on SIGHUP", || {
        a.agent.peer_keys().is_empty()
    });
    b.agent.kill9();
    std::thread::sleep(AFTER_BREAK);
    drop(load);
    drop(back);
    let data = watch.finish("IPv6 overlay: SIGHUP on A, kill -9 of B");
    assert!(data > 0, "no WireGuard data was seen before the break");
    assert_closed(&a, &ipb);
    assert_closed(&b, &ipa);
}

#[test]
fn kill9_of_the_agent_leaks_nothing_and_leaves_the_host_closed() {
    let Some(c) = Cluster::new("kill9_of_the_agent_leaks_nothing_and_leaves_the_host_closed")
    else {
        return;
    };
    let Running {
        a,
        b,
        sniffer,
        wa,
        wb,
        ipa,
        ipb,
        ..
    } = running_pair(&c);
    let running = cluster_routes(&a);

    let watch = Watch::start(&c, &sniffer, &[&a, &b]);
    let load = Load::stream(&wa, &wb, &ipb);
    let back = Load::pings(&wb, &ipa);
    std::thread::sleep(Duration::from_secs(1));
    a.agent.kill9();
    std::thread::sleep(AFTER_BREAK);
    drop(load);
    drop(back);
    let data = watch.finish("kill -9 of the agent");
    assert!(data > 0, "no WireGuard data was seen before the kill");
    assert!(
        running.contains("unreachable 10.0.0.0/8"),
        "a running agent closes the cluster: {running}"
    );
    // The TUN device and its routes died with the agent; the bridge and the workload stayed.
    // The cluster route holds.
    assert!(
        !a.ns.links().iter().any(|l| l == "wgm0"),
        "{:?}",
        a.ns.links()
    );
    assert!(
        cluster_routes(&a).contains("unreachable 10.0.0.0/8"),
        "kill -9 must leave the cluster route: {}",
        a.ns.routes().join("\n")
    );
    assert_closed(&a, &ipb);

    // The next start takes the route over (one route, no error) and traffic resumes.
    a.agent.restart();
    let log = a.agent.current_log();
    assert!(
        log.contains("took over the cluster route"),
        "the restart does not say it took the route over:\n{log}"
    );
    assert_eq!(
        cluster_routes(&a).lines().count(),
        1,
        "{}",
        cluster_routes(&a)
    );
    assert_pings(&wa, &ipb, Duration::from_secs(30));

    // A clean stop removes it with everything else.
    a.agent.stop();
    assert_eq!(
        cluster_routes(&a).trim(),
        "",
        "SIGTERM must remove the cluster route: {}",
        a.ns.routes().join("\n")
    );
    assert!(
        !a.ns.routes().iter().any(|r| r.contains("proto 119")),
        "routes of the agent left after SIGTERM: {:?}",
        a.ns.routes()
    );
}

#[test]
fn traffic_before_the_peer_handshakes_leaks_nothing() {
    let Some(c) = Cluster::new("traffic_before_the_peer_handshakes_leaks_nothing") else {
        return;
    };
    let (bridge, a, b) = static_pair_on_bridge(&c);
    let sniffer = Sniffer::plug(&c, &bridge, &[&a, &b]);
    let watch = Watch::start(&c, &sniffer, &[&a, &b]);
    let early = Capture::start(&a.ns, UNDERLAY_IF);
    a.agent.start();
    let (wa, _ipa) = workload(&c, &a, "wa");
    // B's agent is not running: nothing answers A's handshakes, and the workload's packets
    // wait in (or are dropped from) A's tunnel, never sent in the clear.
    let ipb = "10.42.2.2";
    let into_tunnel = tun_tx_packets(&a);
    let load = Load::pings(&wa, ipb);
    std::thread::sleep(AFTER_BREAK);
    let shown = route_to(&a, ipb);
    assert!(
        shown.contains("dev wgm0"),
        "A routes B's subnet into the tunnel: {shown}"
    );
    drop(load);
    // A did try: the workload's pings went into the tunnel (a ping every 20 ms and a large one
    // every 10 ms for 3 s), A sent B handshake initiations, and nothing else (no data: there
    // is no session).
    let sent = tun_tx_packets(&a) - into_tunnel;
    assert!(sent >= 100, "only {sent} packets went into A's tunnel");
    let frames = pcap::parse(&early.stop()).expect("parse capture");
    let tried = pcap::check_wireguard_only(&frames, (a.ip, a.port), (b.ip, b.port))
        .unwrap_or_else(|e| panic!("A sent B more than WireGuard: {e:?}"));
    assert!(
        tried.initiations > 0 && tried.data == 0,
        "before B started, A should have sent handshake initiations and no data: {tried:?}"
    );
    // Then B starts: the same traffic flows, encrypted.
    b.agent.start();
    let (_wb, ipb2) = workload(&c, &b, "wb");
    assert_eq!(ipb2, ipb);
    let load = Load::pings(&wa, ipb);
    assert_pings(&wa, ipb, Duration::from_secs(20));
    std::thread::sleep(Duration::from_secs(1));
    drop(load);
    let data = watch.finish("before the handshake");
    assert!(data > 0, "no WireGuard data was seen once B started");
}

#[test]
fn a_reload_that_moves_the_cluster_cidr_leaves_no_window() {
    let Some(c) = Cluster::new("a_reload_that_moves_the_cluster_cidr_leaves_no_window") else {
        return;
    };
    let Running {
        a,
        b,
        sniffer,
        wa,
        wb,
        ipa: _,
        ipb,
        ..
    } = running_pair(&c);

    let watch = Watch::start(&c, &sniffer, &[&a, &b]);
    let load = Load::stream(&wa, &wb, &ipb);
    // Narrow, then back: each reload adds the new cluster route before removing the old one.
    for cluster in ["10.42.0.0/16", "10.0.0.0/8"] {
        let mut spec = a.agent.spec();
        spec.cluster_cidr = Some(cluster.into());
        a.agent.set_spec(spec);
        a.agent.reload();
        // `ip route show proto 119` leaves the protocol out of its lines.
        let want = format!("unreachable {cluster}");
        assert_eventually(
            Duration::from_secs(10),
            &format!("A closes {cluster}"),
            || cluster_routes(&a).trim() == want,
        );
        assert_pings(&wa, &ipb, Duration::from_secs(5));
    }
    // Nothing leaked meanwhile.
    drop(load);
    let data = watch.finish("moving the cluster CIDR");
    assert!(data > 0, "no WireGuard data was seen");
}

/// The check behind [`Load::stream`]: an iperf3 server interval with data counts, an empty one
/// or the banner does not.
#[test]
fn the_stream_check_reads_iperf3_intervals() {
    let got =
        "[ ID] Interval           Transfer     Bitrate         Jitter    Lost/Total Datagrams\n\
               [  5]   0.00-1.00   sec   489 KBytes  4.00 Mbits/sec  0.012 ms  0/417 (0%)\n";
    assert!(received_some(got));
    let none = "Server listening on 5201\n\
                [  5]   0.00-1.00   sec  0.00 Bytes  0.00 bits/sec  0.000 ms  0/0 (0%)\n";
    assert!(!received_some(none));
}

/// After a kill -9, a start with a changed `cluster_cidr` that then fails (its UDP port is
/// taken) leaves the old cluster's route in place, so the killed run's bridge stays closed;
/// the next start that succeeds removes it.
#[test]
fn a_failed_start_with_a_new_cluster_cidr_keeps_the_old_one_closed() {
    let Some(c) = Cluster::new("a_failed_start_with_a_new_cluster_cidr_keeps_the_old_one_closed")
    else {
        return;
    };
    let (_bridge, a, b) = static_pair_on_bridge(&c);
    a.agent.start();
    b.agent.start();
    let (_wa, _ipa) = workload(&c, &a, "wa");
    a.agent.kill9();
    assert!(cluster_routes(&a).contains("unreachable 10.0.0.0/8"));

    let mut spec = a.agent.spec();
    spec.cluster_cidr = Some("10.42.0.0/16".into());
    let port = spec.listen_port;
    a.agent.set_spec(spec);
    let log = a.agent.dir().join("socat.log");
    let holder = a.ns.spawn(
        &["socat", &format!("UDP4-RECVFROM:{port},fork"), "/dev/null"],
        &[],
        &log,
    );
    std::thread::sleep(Duration::from_millis(300));
    let (status, out) = a.agent.run_expect_exit(Duration::from_secs(20));
    assert!(
        !status.success(),
        "the start should fail on the taken port:\n{out}"
    );
    let routes = cluster_routes(&a);
    assert!(
        routes.contains("unreachable 10.0.0.0/8"),
        "a failed start removed the killed run's cluster route:\n{routes}\n{out}"
    );
    drop(holder);

    a.agent.restart();
    assert_eventually(
        Duration::from_secs(10),
        "only the new cluster route",
        || {
            cluster_routes(&a).trim() == "unreachable 10.42.0.0/16 proto 119"
                || cluster_routes(&a).trim() == "unreachable 10.42.0.0/16"
        },
    );
}
