//! Same host (issue 10): workloads on one host reach each other only through the agent (their
//! bridge ports are isolated, the host answers their ARP, a policy routing rule sends their
//! traffic into the TUN device), a workload cannot send with another workload's address nor
//! take it over by ARP, and the rule, the table and the port filters come and go with the
//! agent and its workloads, also across a kill -9.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::forwarding::{icmp_in_echos, mac, neighbour};
use common::same_host::*;
use common::scenario::{
    assert_pings, hosts, two_hosts, two_hosts_offload, workload, IPV6_PAIR, IPV6_PAIR_LINKS,
};
use common::traffic::{udp_send, UdpSink};
use common::*;

#[test]
fn same_host_workloads_reach_each_other_through_the_agent() {
    let Some(c) = Cluster::new("same_host_workloads_reach_each_other_through_the_agent") else {
        return;
    };
    let (a, b) = two_hosts(&c, 51820, 51820);
    let (w1, ip1) = workload(&c, &a, "w1");
    let (w2, ip2) = workload(&c, &a, "w2");
    let (w3, ip3) = workload(&c, &b, "w3");
    for w in [&w1, &w2] {
        let port = host_ifname(w);
        assert!(is_isolated(&a.ns, &port), "{port} is not isolated");
    }
    assert_eq!(
        mac(&w1, "eth0"),
        format!(
            "0a:58:0a:2a:01:{:02x}",
            ip1.rsplit('.').next().unwrap().parse::<u8>().unwrap()
        ),
        "the agent sets the workload's MAC from its address"
    );

    assert_pings(&w1, &ip2, Duration::from_secs(10));
    // Through the agent: every echo and every reply goes into the TUN device and back out.
    let (to_before, from_before) = tun_counters(&a.ns, TUN);
    let (sent, received) = ping_count(&w1, &ip2, 20, "0.05");
    assert_eq!((sent, received), (20, 20), "pings from {ip1} to {ip2}");
    let (to_after, from_after) = tun_counters(&a.ns, TUN);
    assert!(
        to_after - to_before >= 40 && from_after - from_before >= 40,
        "40 packets went between two workloads of one host, but the TUN device passed \
         {} to the agent and {} back",
        to_after - to_before,
        from_after - from_before
    );
    // TCP, with TSO super-packets split on the way through.
    TcpTransfer::new(&w1, &w2, &ip2, 5201, 4 << 20)
        .run()
        .expect("TCP between two workloads of one host")
        .assert_intact("same-host TCP");
    // The gateway and the other host are still reached.
    assert!(ping(&w1, "10.42.1.1"), "the gateway");
    assert_pings(&w1, &ip3, Duration::from_secs(15));
    assert_pings(&w3, &ip2, Duration::from_secs(15));
}

/// Without TUN offloads the agent writes same-host packets back without a virtio-net header.
#[test]
fn same_host_traffic_passes_without_offloads() {
    let Some(c) = Cluster::new("same_host_traffic_passes_without_offloads") else {
        return;
    };
    let (a, _b) = two_hosts_offload(&c, 51820, 51820, Some(false));
    let (w1, _) = workload(&c, &a, "w1");
    let (w2, ip2) = workload(&c, &a, "w2");
    assert_pings(&w1, &ip2, Duration::from_secs(10));
    TcpTransfer::new(&w1, &w2, &ip2, 5201, 1 << 20)
        .run()
        .expect("TCP between two workloads of one host, offloads off")
        .assert_intact("same-host TCP without offloads");
}

#[test]
fn a_workload_cannot_send_with_another_workloads_address() {
    let Some(c) = Cluster::new("a_workload_cannot_send_with_another_workloads_address") else {
        return;
    };
    let (a, b) = two_hosts(&c, 51820, 51820);
    let (attacker, ip_attacker) = workload(&c, &a, "evil");
    let (_victim, ip_victim) = workload(&c, &a, "victim");
    let (local, ip_local) = workload(&c, &a, "local");
    let (remote, ip_remote) = workload(&c, &b, "remote");
    assert_pings(&attacker, &ip_remote, Duration::from_secs(15));
    assert_pings(&attacker, &ip_local, Duration::from_secs(10));

    let local_sink = UdpSink::bind(&local, &format!("{ip_local}:9000"));
    let remote_sink = UdpSink::bind(&remote, &format!("{ip_remote}:9000"));
    // Its own address passes: the sinks and the paths work.
    for to in [&ip_local, &ip_remote] {
        udp_send(
            &attacker,
            Some(&ip_attacker),
            &format!("{to}:9000"),
            b"own",
            5,
        );
    }
    assert!(
        wait_until(Duration::from_secs(5), || local_sink.count() > 0
            && remote_sink.count() > 0),
        "datagrams from the attacker's own address did not arrive"
    );
    // The victim's address, added to the attacker's own eth0, does not.
    attacker.run(&[
        "ip",
        "addr",
        "add",
        &format!("{ip_victim}/32"),
        "dev",
        "eth0",
    ]);
    for to in [&ip_local, &ip_remote] {
        udp_send(
            &attacker,
            Some(&ip_victim),
            &format!("{to}:9000"),
            b"spoofed",
            20,
        );
    }
    std::thread::sleep(Duration::from_millis(500));
    for (sink, whom) in [(&local_sink, "same host"), (&remote_sink, "other host")] {
        let from: Vec<SocketAddr> = sink.received().into_iter().map(|(from, _)| from).collect();
        assert!(
            from.iter().all(|f| f.ip().to_string() == ip_attacker),
            "the {whom} received datagrams from {from:?}: only {ip_attacker} may arrive"
        );
    }
}

#[test]
fn a_workload_answering_arp_for_another_takes_over_nothing() {
    let Some(c) = Cluster::new("a_workload_answering_arp_for_another_takes_over_nothing") else {
        return;
    };
    if !has_arping() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "arping is not installed"
        );
        eprintln!("SKIPPED: arping is not installed");
        return;
    }
    let (a, b) = two_hosts(&c, 51820, 51820);
    let (attacker, _) = workload(&c, &a, "evil");
    let (victim, ip_victim) = workload(&c, &a, "victim");
    let (local, _) = workload(&c, &a, "local");
    let (remote, _) = workload(&c, &b, "remote");
    let victim_mac = mac(&victim, "eth0");
    assert_pings(&remote, &ip_victim, Duration::from_secs(15));

    claim_by_arp(&attacker, &ip_victim, 24);
    assert_eq!(
        neighbour(&a.ns, &ip_victim).as_deref(),
        Some(victim_mac.as_str()),
        "the host's neighbour entry for {ip_victim} moved"
    );
    // Echoes to the victim's address from the host, from another workload of the host and from
    // the other host reach the victim, and none reaches the attacker.
    let (victim_before, attacker_before) = (icmp_in_echos(&victim), icmp_in_echos(&attacker));
    for (from, who) in [
        (&a.ns, "host a"),
        (&local, "a workload on a"),
        (&remote, "a workload on b"),
    ] {
        let (sent, received) = ping_count(from, &ip_victim, 5, "0.05");
        assert_eq!((sent, received), (5, 5), "pings from {who} to {ip_victim}");
    }
    assert_eq!(
        icmp_in_echos(&attacker) - attacker_before,
        0,
        "the attacker received echoes for {ip_victim}"
    );
    assert!(icmp_in_echos(&victim) - victim_before >= 15);
}

#[test]
fn ipv6_same_host_workloads_reach_each_other_through_the_agent() {
    let Some(c) = Cluster::new("ipv6_same_host_workloads_reach_each_other_through_the_agent")
    else {
        return;
    };
    let hs = hosts(&c, &IPV6_PAIR, &IPV6_PAIR_LINKS);
    let (w1, _ip1) = workload(&c, &hs[0], "w1");
    let (_w2, ip2) = workload(&c, &hs[0], "w2");
    let (w3, ip3) = workload(&c, &hs[1], "w3");
    assert_pings(&w1, &ip2, Duration::from_secs(10));
    let (to_before, from_before) = tun_counters(&hs[0].ns, TUN);
    let (sent, received) = ping_count(&w1, &ip2, 10, "0.05");
    assert_eq!((sent, received), (10, 10));
    let (to_after, from_after) = tun_counters(&hs[0].ns, TUN);
    assert!(to_after - to_before >= 20 && from_after - from_before >= 20);
    assert_pings(&w1, &ip3, Duration::from_secs(15));
    assert_pings(&w3, &ip2, Duration::from_secs(15));
}

#[test]
fn rule_table_and_filters_follow_the_agent_and_its_workloads() {
    let Some(c) = Cluster::new("rule_table_and_filters_follow_the_agent_and_its_workloads") else {
        return;
    };
    let (a, _b) = two_hosts(&c, 51820, 51820);
    let (w1, _) = workload(&c, &a, "w1");
    let (w2, ip2) = workload(&c, &a, "w2");
    let rule = vec!["119:\tfrom all to 10.42.1.0/24 iif wgmbr0 lookup 119 proto 119".to_owned()];
    let table = vec![
        "10.42.1.0/24 dev wgm0 proto 119 scope link metric 1024".to_owned(),
        "unreachable 10.42.1.0/24 proto 119 metric 4096".to_owned(),
    ];
    assert_eq!(our_rules(&a.ns), rule);
    assert_eq!(table_119(&a.ns), table);
    let port2 = host_ifname(&w2);
    let filters = ingress_filters(&a.ns, &port2);
    assert!(
        filters.contains(" bpf ") && filters.contains("direct-action"),
        "{filters}"
    );
    assert_eq!(neighbour(&a.ns, &ip2), Some(mac(&w2, "eth0")));
    // The port learns nothing and gets no flooded frames: a static entry forwards to it.
    let flags = a.ns.run(&["bridge", "-d", "link", "show", "dev", &port2]);
    for off in [
        "learning off",
        "flood off",
        "mcast_flood off",
        "isolated on",
    ] {
        assert!(flags.contains(off), "port {port2}: no {off:?} in {flags}");
    }
    let fdb = a.ns.run(&["bridge", "fdb", "show", "dev", &port2]);
    assert!(
        fdb.lines().any(|l| l.starts_with(&mac(&w2, "eth0"))
            && l.contains("master")
            && l.contains("static")),
        "no static forwarding entry for {} on {port2}: {fdb}",
        mac(&w2, "eth0")
    );

    // Detach: the veth (and with it its filters) and the neighbour entry go.
    let sock = a.agent.socket.to_str().unwrap().to_owned();
    let out = wgmesh(&["detach", "--netns", w2.name(), "--socket", &sock]);
    assert!(out.status.success(), "{out:?}");
    assert!(
        !a.ns.links().contains(&port2),
        "{port2} is left after detach"
    );
    assert_eq!(neighbour(&a.ns, &ip2), None, "the neighbour entry is left");

    // kill -9: the rule stays and the table is closed (the TUN device's route went with it).
    let port1 = host_ifname(&w1);
    a.agent.kill9();
    assert_eq!(our_rules(&a.ns), rule);
    assert_eq!(table_119(&a.ns), table[1..]);
    // A filter lost meanwhile is back after the restart, and nothing is doubled.
    a.ns.run(&[
        "tc", "filter", "del", "dev", &port1, "ingress", "pref", "10",
    ]);
    assert_eq!(ingress_filters(&a.ns, &port1), "");
    a.agent.restart();
    assert_eq!(our_rules(&a.ns), rule);
    assert_eq!(table_119(&a.ns), table);
    let filters = ingress_filters(&a.ns, &port1);
    assert_eq!(filters.matches("direct-action").count(), 1, "{filters}");
    let (w3, ip3) = workload(&c, &a, "w3");
    assert_pings(&w1, &ip3, Duration::from_secs(10));
    assert_pings(&w3, "10.42.1.1", Duration::from_secs(10));

    // SIGTERM: rule and table are gone.
    let status = a.agent.stop().expect("agent exited");
    assert!(status.success(), "{status}");
    assert_eq!(our_rules(&a.ns), Vec::<String>::new());
    assert_eq!(table_119(&a.ns), Vec::<String>::new());
}
