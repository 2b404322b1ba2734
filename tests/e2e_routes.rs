//! The agent never replaces or removes a route it did not create. A peer prefix that overlaps
//! a route of the host's own (here a connected network on a bridge of its own) is refused,
//! logged and counted, while the other peers' routes apply and carry traffic, and `ip route`
//! keeps the foreign route as it was. In static mode such a `[[peer]]` entry stops the agent
//! at start with file:line:column, leaving the host's routes as they were.

mod common;

use std::time::Duration;

use common::control::{control_on_bridge, joined_host_prepared, lists_peer, CONTROL_IP};
use common::scenario::{assert_pings, two_hosts, workload};
use common::*;

/// The routes of `ns` to `dst` (`ip route show DST`), one per line.
fn routes_to(ns: &Netns, dst: &str) -> String {
    ns.run(&["ip", "route", "show", "table", "main", dst])
}

/// `a.b.c.0/24` -> `a.b.c.1/24`.
fn first_address(subnet: &str) -> String {
    let (net, len) = subnet.split_once('/').expect("prefix");
    let base = net.rsplit_once('.').expect("IPv4").0;
    format!("{base}.1/{len}")
}

/// Where the error about `entry` (an `allowed_ips` value) in the agent.toml `text` at `path`
/// must point: `path:line:column:` of its opening quote.
fn place_of(path: &std::path::Path, text: &str, entry: &str) -> String {
    let quoted = format!("\"{entry}\"");
    let (line, column) = text
        .lines()
        .enumerate()
        .find_map(|(i, l)| l.find(&quoted).map(|c| (i + 1, c + 1)))
        .unwrap_or_else(|| panic!("{quoted} is not in\n{text}"));
    format!("{}:{line}:{column}:", path.display())
}

#[test]
fn a_netmap_prefix_over_a_foreign_route_is_refused_and_the_rest_applies() {
    let Some(c) =
        Cluster::new("a_netmap_prefix_over_a_foreign_route_is_refused_and_the_rest_applies")
    else {
        return;
    };
    let (bridge, cp) = control_on_bridge(&c, ControlSpec::default());
    let token = cp.token_create(&["--reusable"]);
    let b = joined_host_prepared(&c, &bridge, &cp, "b", 2, &token).started();
    let d = joined_host_prepared(&c, &bridge, &cp, "d", 3, &token).started();
    let a = joined_host_prepared(&c, &bridge, &cp, "a", 1, &token);
    // Host A already has a network of its own where the control plane put D's subnet.
    let taken = d.agent.subnet();
    a.ns.run(&["ip", "link", "add", "lan0", "type", "bridge"]);
    a.ns.run(&["ip", "addr", "add", &first_address(&taken), "dev", "lan0"]);
    a.ns.run(&["ip", "link", "set", "lan0", "up"]);
    let foreign_before = routes_to(&a.ns, &taken);
    assert!(
        foreign_before.contains("dev lan0 proto kernel"),
        "{foreign_before}"
    );
    let underlay_before = routes_to(&a.ns, "198.18.0.0/24");
    let a = a.started();

    // B's prefix is routed and carries traffic; D is a peer, but not routed.
    let (wa, _ipa) = workload(&c, &a, "wa");
    let (_wb, ipb) = workload(&c, &b, "wb");
    assert_eventually(Duration::from_secs(15), "A lists B and D", || {
        lists_peer(&a, &b) && lists_peer(&a, &d)
    });
    assert_pings(&wa, &ipb, Duration::from_secs(20));
    assert_eq!(
        routes_to(&a.ns, &taken),
        foreign_before,
        "the foreign route changed"
    );
    assert_eq!(routes_to(&a.ns, "198.18.0.0/24"), underlay_before);
    assert!(
        !a.ns
            .routes()
            .iter()
            .any(|r| r.starts_with(&taken) && r.contains("wgm0")),
        "D's prefix was routed into the tunnel over lan0: {:?}",
        a.ns.routes()
    );
    let b_subnet = b.agent.subnet();
    assert!(
        routes_to(&a.ns, &b_subnet).contains("dev wgm0 proto 119"),
        "{}",
        a.ns.routes().join("\n")
    );

    // Counted and shown, with the route it would have overridden; logged once.
    let st = a.agent.status();
    let routes = &st["routes"];
    assert!(routes["refused_total"].as_u64() >= Some(1), "{routes}");
    let refused = routes["refused"].as_array().expect("refused list");
    assert_eq!(refused.len(), 1, "{routes}");
    assert_eq!(refused[0]["prefix"], taken.as_str());
    assert_eq!(refused[0]["peer"], "host-d");
    assert!(
        refused[0]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("dev lan0 proto kernel")),
        "{routes}"
    );
    let d_status = a.agent.peer_status(d.agent.public_key());
    assert_eq!(d_status["allowed_ips"], serde_json::json!([]), "{d_status}");
    let log = a.agent.current_log();
    assert!(
        log.contains(&format!("refusing to route {taken} to peer host-d")),
        "no log line for the refused prefix:\n{log}"
    );
    // The control plane's address is never routed into the tunnel either.
    let to_control = a.ns.run(&["ip", "route", "get", &CONTROL_IP.to_string()]);
    assert!(to_control.contains("dev ul0"), "{to_control}");
}

#[test]
fn a_static_peer_over_a_foreign_route_refuses_start_at_its_line() {
    let Some(c) = Cluster::new("a_static_peer_over_a_foreign_route_refuses_start_at_its_line")
    else {
        return;
    };
    let ns = c.netns("a");
    let far = c.netns("b");
    c.veth_underlay(&ns, &far);
    ns.run(&["ip", "link", "add", "lan0", "type", "bridge"]);
    ns.run(&["ip", "addr", "add", "10.9.0.1/24", "dev", "lan0"]);
    ns.run(&["ip", "link", "set", "lan0", "up"]);
    let peer = keys::KeyPair::generate();
    let agent = c.agent_prepared(
        &ns,
        AgentSpec::new("host-a", "10.42.1.0/24", 51820).peer(
            PeerSpec::new(&peer.public, &["10.42.2.0/24", "10.9.0.0/24"])
                .name("host-b")
                .endpoint("198.18.0.2:51820"),
        ),
    );
    let routes_before = ns.routes();
    let place = place_of(
        &agent.config_path,
        &agent.render(&agent.spec()),
        "10.9.0.0/24",
    );

    let (status, out) = agent.run_expect_exit(Duration::from_secs(20));
    assert!(!status.success(), "the agent started:\n{out}");
    assert!(!out.contains("panicked at"), "{out}");
    for want in [
        place.as_str(),
        "peer[0].allowed_ips[1]",
        "10.9.0.0/24 dev lan0 proto kernel",
    ] {
        assert!(out.contains(want), "the error lacks {want:?}:\n{out}");
    }
    assert_eq!(
        ns.routes(),
        routes_before,
        "the refused start changed the routes"
    );
    assert!(!ns.links().iter().any(|l| l == "wgm0" || l == "wgmbr0"));
}

#[test]
fn a_sighup_adding_a_prefix_over_a_foreign_route_is_refused_at_its_line() {
    let Some(c) =
        Cluster::new("a_sighup_adding_a_prefix_over_a_foreign_route_is_refused_at_its_line")
    else {
        return;
    };
    let (a, b) = two_hosts(&c, 51820, 51820);
    let (wa, _) = workload(&c, &a, "wa");
    let (_wb, ipb) = workload(&c, &b, "wb");
    assert_pings(&wa, &ipb, Duration::from_secs(15));
    a.ns.run(&["ip", "link", "add", "lan0", "type", "bridge"]);
    a.ns.run(&["ip", "addr", "add", "10.9.0.1/24", "dev", "lan0"]);
    a.ns.run(&["ip", "link", "set", "lan0", "up"]);
    let routes_before = a.ns.routes();

    let mut spec = a.agent.spec();
    spec.peers[0].allowed_ips.push("10.9.0.0/25".into());
    let place = place_of(&a.agent.config_path, &a.agent.render(&spec), "10.9.0.0/25");
    a.agent.set_spec(spec);
    let refused_before = a.agent.status()["routes"].clone();
    let before = a.agent.current_log();
    a.agent.reload();
    let mut log = String::new();
    assert!(
        wait_until(Duration::from_secs(10), || {
            log = a.agent.current_log();
            log[before.len().min(log.len())..].contains("reload failed")
        }),
        "no reload failure logged:\n{log}"
    );
    let new = &log[before.len()..];
    assert!(
        new.contains(&format!("{place} peer[0].allowed_ips[1]:")),
        "the reload error does not name the entry:\n{new}"
    );
    assert_eq!(
        a.ns.routes(),
        routes_before,
        "the refused reload changed the routes"
    );
    assert_pings(&wa, &ipb, Duration::from_secs(5));
    // A failed reload leaves the route guard as it was: nothing refused, nothing counted.
    assert_eq!(a.agent.status()["routes"], refused_before);
}
