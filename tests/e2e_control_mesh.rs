//! Hosts joined to a control plane form a mesh from its netmaps alone: three hosts joined with
//! one reusable token reach each other; a fourth that joins reaches everyone, and everyone lists
//! it within 2 s; `node remove` takes it out of everyone's peers within 2 s and cuts its
//! traffic; a host that changes its endpoint has the new one in everyone's status within 2 s.

mod common;

use std::time::{Duration, Instant};

use common::control::{
    assert_list_each_other, control_and_joined_hosts, control_on_bridge, joined_host_prepared,
    lists_peer,
};
use common::scenario::{assert_all_ping, assert_pings, workload, workloads, Host};
use common::*;

/// How long a netmap change may take to reach every host's `status`.
const PROPAGATION: Duration = Duration::from_secs(2);

/// Polls `f` every 10 ms until true or `timeout`; returns the time it took (None on timeout).
fn time_until(timeout: Duration, mut f: impl FnMut() -> bool) -> Option<Duration> {
    let t0 = Instant::now();
    loop {
        if f() {
            return Some(t0.elapsed());
        }
        if t0.elapsed() >= timeout {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn status_names(h: &Host) -> Vec<String> {
    h.agent
        .try_status()
        .ok()
        .and_then(|st| {
            st["peers"].as_array().map(|ps| {
                ps.iter()
                    .map(|p| p["name"].as_str().unwrap_or("?").to_string())
                    .collect()
            })
        })
        .unwrap_or_default()
}

#[test]
fn joined_hosts_mesh_join_and_remove_propagate() {
    let Some(c) = Cluster::new("joined_hosts_mesh_join_and_remove_propagate") else {
        return;
    };
    // Joined one after the other: each gets the lowest free /24 of 10.42.0.0/16.
    let (bridge, cp, token, hosts) = control_and_joined_hosts(
        &c,
        &["--reusable", "--ttl", "1h", "--label", "env=e2e"],
        &["a", "b", "c"],
    );
    for (i, h) in hosts.iter().enumerate() {
        assert_eq!(
            h.agent.subnet(),
            format!("10.42.{i}.0/24"),
            "subnet of the {}th host to join",
            i + 1
        );
    }
    assert_list_each_other(&hosts, PROPAGATION * 5);
    // The netmap's peers as status shows them: name, endpoint, allowed IPs.
    let pb = hosts[0].agent.peer_status(hosts[1].agent.public_key());
    assert_eq!(pb["name"], "host-b", "{pb}");
    assert_eq!(pb["endpoint"], hosts[1].endpoint(), "{pb}");
    assert_eq!(
        pb["allowed_ips"],
        serde_json::json!(["10.42.1.0/24"]),
        "{pb}"
    );

    // The admin CLI over the underlay, from a host's namespace.
    let out = cp.cli_in(&hosts[0].ns, &["node", "list", "--json"]);
    assert!(
        out.status.success(),
        "node list from host-a's namespace: {out:?}"
    );
    let nodes: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).expect("JSON");
    let names: Vec<&str> = nodes.iter().filter_map(|n| n["name"].as_str()).collect();
    assert_eq!(
        names,
        ["host-a", "host-b", "host-c"],
        "node list: {nodes:?}"
    );
    for (n, h) in nodes.iter().zip(&hosts) {
        assert_eq!(n["public_key"], h.agent.public_key(), "{n}");
        assert_eq!(n["endpoint"], h.endpoint(), "{n}");
        assert_eq!(n["subnet"], h.agent.subnet(), "{n}");
        assert_eq!(
            n["labels"]["zone"],
            h.ns.name().rsplit('-').next().unwrap(),
            "{n}"
        );
        assert_eq!(n["labels"]["env"], "e2e", "the token's label: {n}");
        assert_eq!(n["online"], true, "{n}");
    }

    let wls = workloads(&c, &hosts);
    assert_all_ping(&wls, Duration::from_secs(15));

    // A fourth host joins.
    let d = joined_host_prepared(&c, &bridge, &cp, "d", 4, &token);
    let t0 = Instant::now();
    d.agent.start();
    let ready = t0.elapsed();
    assert_eq!(d.agent.subnet(), "10.42.3.0/24", "subnet of the 4th host");
    let netmap = time_until(Duration::from_secs(10), || {
        hosts.iter().all(|h| lists_peer(h, &d))
    });
    let from_start = t0.elapsed();
    let not_yet: Vec<&str> = hosts
        .iter()
        .filter(|h| !lists_peer(h, &d))
        .map(|h| h.ns.name())
        .collect();
    let netmap = netmap.unwrap_or_else(|| {
        panic!("after 10 s these hosts still do not list host-d as a peer: {not_yet:?}")
    });
    for h in &hosts {
        assert!(lists_peer(&d, h), "host-d does not list {}", h.ns.name());
    }
    let (wd, ipd) = workload(&c, &d, "wd");
    let t_ping = Instant::now();
    for (w, _) in &wls {
        assert_pings(w, &ipd, Duration::from_secs(15));
    }
    let pings = t_ping.elapsed();
    eprintln!(
        "propagation: join of host-d: agent start -> its status answers (joined, netmap \
         applied) {ready:?}; -> all 3 other hosts list it {netmap:?} later ({from_start:?} after \
         start); first ping from every workload to host-d's new workload succeeded within \
         {pings:?} of attaching it"
    );
    assert!(
        netmap <= PROPAGATION,
        "the other hosts listed host-d only {netmap:?} after it had its netmap (limit \
         {PROPAGATION:?})"
    );
    for (_, ip) in &wls {
        assert_pings(&wd, ip, Duration::from_secs(5));
    }

    // host-d is removed.
    let t0 = Instant::now();
    cp.node_remove("host-d");
    let cli = t0.elapsed();
    let gone = time_until(Duration::from_secs(10), || {
        hosts.iter().all(|h| !lists_peer(h, &d))
    });
    let still: Vec<(String, Vec<String>)> = hosts
        .iter()
        .map(|h| (h.ns.name().to_string(), status_names(h)))
        .collect();
    let gone = gone.unwrap_or_else(|| {
        panic!("10 s after `node remove host-d` some hosts still list it: {still:?}")
    });
    eprintln!(
        "propagation: `node remove host-d` took {cli:?}; all 3 other hosts dropped it \
         {gone:?} after the command returned ({:?} after it started)",
        cli + gone
    );
    assert!(
        gone <= PROPAGATION,
        "the other hosts dropped host-d only {gone:?} after `node remove` (limit {PROPAGATION:?})"
    );
    for (w, ip) in &wls {
        assert!(
            !ping(w, &ipd),
            "{} still reaches removed host-d's workload {ipd}",
            w.name()
        );
        assert!(
            !ping(&wd, ip),
            "removed host-d's workload still reaches {ip} ({})",
            w.name()
        );
    }
    assert!(
        !cp.node_names().iter().any(|n| n == "host-d"),
        "node list still has host-d: {:?}",
        cp.node_list_json()
    );
    // The others still reach each other, and hold the current netmap.
    assert_pings(&wls[0].0, &wls[2].1, Duration::from_secs(5));
    assert_eventually(Duration::from_secs(2), "every host is in sync", || {
        cp.node_list_json().iter().all(|n| n["in_sync"] == true)
    });
    // Restarted, the removed host stops and says how to join again, although its token is
    // reusable: a removal is an admin's decision, not undone by a restart.
    d.agent.stop();
    let (st, out) = d.agent.run_expect_exit(Duration::from_secs(20));
    assert!(!st.success(), "removed host-d started again:\n{out}");
    assert!(
        out.contains("refuses this host's credential") && out.contains("control.json"),
        "host-d's error does not say what happened and what to do:\n{out}"
    );
    assert!(!cp.node_names().iter().any(|n| n == "host-d"));
}

#[test]
fn endpoint_change_reaches_every_host() {
    let Some(c) = Cluster::new("endpoint_change_reaches_every_host") else {
        return;
    };
    let (_bridge, cp, _token, hosts) =
        control_and_joined_hosts(&c, &["--reusable"], &["a", "b", "c"]);
    let wls = workloads(&c, &hosts);
    for i in 0..2 {
        assert_pings(&wls[i].0, &wls[2].1, Duration::from_secs(15));
    }
    let moved = &hosts[2];
    for h in &hosts[..2] {
        assert_eq!(
            h.agent.peer_status(moved.agent.public_key())["endpoint"],
            "198.18.0.3:51820"
        );
    }

    // host-c moves to another underlay address and says so in its config.
    let new_ep = "198.18.0.33:51820";
    // (Old address first: deleting a primary address also deletes its secondaries.)
    moved
        .ns
        .run(&["ip", "addr", "del", "198.18.0.3/24", "dev", UNDERLAY_IF]);
    moved
        .ns
        .run(&["ip", "addr", "add", "198.18.0.33/24", "dev", UNDERLAY_IF]);
    let mut spec = moved.agent.spec();
    spec.endpoint = Some(new_ep.to_string());
    moved.agent.set_spec(spec);
    moved.agent.reload();
    let seen = time_until(Duration::from_secs(10), || {
        hosts[..2].iter().all(|h| {
            h.agent
                .try_peer_status(moved.agent.public_key())
                .is_some_and(|p| p["endpoint"] == new_ep)
        })
    });
    let eps: Vec<String> = hosts[..2]
        .iter()
        .map(|h| format!("{:?}", h.agent.try_peer_status(moved.agent.public_key())))
        .collect();
    let seen = seen.unwrap_or_else(|| panic!("10 s after SIGHUP the others still have: {eps:?}"));
    eprintln!(
        "propagation: endpoint change of host-c (SIGHUP) reached both other hosts in {seen:?}"
    );
    assert!(
        seen <= PROPAGATION,
        "the new endpoint reached the other hosts only after {seen:?} (limit {PROPAGATION:?})"
    );
    let node = cp.node("host-c").expect("host-c in node list");
    assert_eq!(node["endpoint"], new_ep, "node list: {node}");
    // Traffic goes to the new address.
    for i in 0..2 {
        assert_pings(&wls[i].0, &wls[2].1, Duration::from_secs(10));
        assert_pings(&wls[2].0, &wls[i].1, Duration::from_secs(5));
    }
}

#[test]
fn an_ipv6_cluster_meshes_workloads() {
    let Some(c) = Cluster::new("an_ipv6_cluster_meshes_workloads") else {
        return;
    };
    let spec = ControlSpec {
        cluster_cidr: "fd42:42::/48".into(),
        host_prefix: Some(64),
        ..ControlSpec::default()
    };
    let (bridge, cp) = control_on_bridge(&c, spec);
    let token = cp.token_create(&["--reusable"]);
    let hosts: Vec<Host> = ["a", "b"]
        .iter()
        .enumerate()
        .map(|(i, tag)| joined_host_prepared(&c, &bridge, &cp, tag, i as u8 + 1, &token).started())
        .collect();
    assert_eq!(hosts[0].agent.subnet(), "fd42:42::/64");
    assert_eq!(hosts[1].agent.subnet(), "fd42:42:0:1::/64");
    assert_list_each_other(&hosts, Duration::from_secs(2));
    let wls = workloads(&c, &hosts);
    // The first workload address follows the gateway (::1), never the subnet-router anycast (::).
    assert_eq!(wls[0].1, "fd42:42::2");
    assert_all_ping(&wls, Duration::from_secs(5));
}
