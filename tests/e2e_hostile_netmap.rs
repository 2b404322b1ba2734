//! A hostile or broken netmap is refused whole: the cluster CIDR is pinned at join (kept in
//! `control.json`), and a netmap without it, with a wider one, or routing anything outside it
//! (the underlay, `0.0.0.0/1`) is never applied. Both ways such a netmap can arrive are tried:
//! a tampered cache (`netmap.json`) at a restart with the control plane down, and a control
//! plane whose state was tampered with so that it serves a wider cluster. Each time the host's
//! own routes are untouched (`ip route` identical before and after), traffic between the good
//! hosts keeps flowing, and `node list` shows the refusing hosts as behind, not in sync.
//! A reply that breaks off mid-body is not a refused netmap but an outage: shown as not
//! connected, not counted in `netmaps_refused`.

mod common;

use std::path::Path;
use std::time::Duration;

use common::control::{
    assert_list_each_other, control_and_joined_hosts, joined_host_prepared, lists_peer, render,
    ControlSpec,
};
use common::scenario::{assert_all_ping, assert_pings, workloads};
use common::*;
use serde_json::Value;

const PINNED: &str = "10.42.0.0/16";

/// The namespace's routes (every table, v4 and v6), without the IPv6 link-local ones the
/// kernel adds on its own a moment after an interface comes up.
fn routes(ns: &Netns) -> Vec<String> {
    ns.routes()
        .into_iter()
        .filter(|r| !r.contains("fe80::"))
        .collect()
}

fn read_json(path: &Path) -> Value {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON ({e})", path.display()))
}

/// How the cached netmap is tampered with, and what the refusal says.
struct Tamper {
    what: &'static str,
    edit: fn(&mut Value),
    says: &'static str,
}

const TAMPERS: [Tamper; 4] = [
    Tamper {
        what: "without a cluster CIDR",
        edit: |n| {
            n["netmap"].as_object_mut().unwrap().remove("cluster_cidr");
        },
        says: "the netmap names no cluster CIDR; this host joined the cluster 10.42.0.0/16",
    },
    Tamper {
        what: "with a wider cluster CIDR",
        edit: |n| n["netmap"]["cluster_cidr"] = "10.0.0.0/8".into(),
        says: "cluster CIDR 10.0.0.0/8 is not 10.42.0.0/16",
    },
    Tamper {
        what: "with a peer claiming the underlay",
        edit: |n| push_allowed_ip(n, "198.18.0.0/24"),
        says: "198.18.0.0/24 of \"host-b\" is outside the cluster CIDR 10.42.0.0/16",
    },
    Tamper {
        what: "with a peer claiming 0.0.0.0/1",
        edit: |n| push_allowed_ip(n, "0.0.0.0/1"),
        says: "0.0.0.0/1 of \"host-b\" is outside the cluster CIDR 10.42.0.0/16",
    },
];

fn push_allowed_ip(cache: &mut Value, net: &str) {
    let peer = &mut cache["netmap"]["peers"][0];
    assert_eq!(peer["name"], "host-b", "the cache's first peer: {peer}");
    peer["allowed_ips"].as_array_mut().unwrap().push(net.into());
}

#[test]
fn a_tampered_cached_netmap_is_refused_and_the_host_stays_closed() {
    let Some(c) = Cluster::new("a_tampered_cached_netmap_is_refused_and_the_host_stays_closed")
    else {
        return;
    };
    let (_bridge, cp, _token, hosts) =
        control_and_joined_hosts(&c, &["--reusable"], &["a", "b", "c"]);
    assert_list_each_other(&hosts, Duration::from_secs(10));
    let wls = workloads(&c, &hosts);
    assert_all_ping(&wls, Duration::from_secs(15));
    let a = &hosts[0];
    // The join pinned the cluster CIDR, with the credential.
    let credential = read_json(&a.agent.state_dir.join("control.json"));
    assert_eq!(credential["cluster_cidr"], PINNED, "control.json");
    assert_eq!(a.agent.status()["control"]["cluster_cidr"], PINNED);

    cp.stop().expect("control plane exit status");
    a.agent.stop().expect("agent exit status");
    let routes_before = routes(&a.ns);
    let cache = a.agent.state_dir.join("netmap.json");
    let good = read_json(&cache);
    assert_eq!(good["netmap"]["cluster_cidr"], PINNED, "the cached netmap");

    for t in &TAMPERS {
        let mut bad = good.clone();
        (t.edit)(&mut bad);
        let text = serde_json::to_string_pretty(&bad).unwrap();
        agent::write_private(&cache, &text);
        a.agent.start_no_wait();
        assert_eventually(
            Duration::from_secs(10),
            &format!("host-a refuses its cached netmap {}", t.what),
            || {
                let log = a.agent.current_log();
                log.contains("refusing the cached netmap") && log.contains(t.says)
            },
        );
        // It waits for the control plane, with nothing set up: not a route, not a device.
        assert!(a.agent.is_running(), "host-a gave up:\n{}", a.agent.log());
        assert_eq!(
            routes(&a.ns),
            routes_before,
            "host-a's routes after refusing a cached netmap {}",
            t.what
        );
        assert!(
            !a.ns.links().iter().any(|l| l.contains("wgm0")),
            "host-a created its TUN device from a refused netmap: {:?}",
            a.ns.links()
        );
        // The refused netmap is not cached over, nor is anything else written in its place.
        assert_eq!(std::fs::read_to_string(&cache).unwrap(), text);
        // The good hosts go on.
        assert_pings(&wls[1].0, &wls[2].1, Duration::from_secs(5));
        a.agent.stop().expect("agent exit status");
    }

    // With the control plane back, host-a starts from the control plane's netmap (the cache
    // still holds the last tampered one) and caches that instead.
    cp.restart();
    a.agent.start();
    assert_all_ping(&wls, Duration::from_secs(15));
    let cached = read_json(&cache);
    assert_eq!(cached["netmap"]["cluster_cidr"], PINNED);
    assert!(
        !cached.to_string().contains("0.0.0.0/1"),
        "the tampered cache was kept: {cached}"
    );
    assert!(
        !routes(&a.ns).iter().any(|r| r.starts_with("0.0.0.0/1")),
        "{:?}",
        routes(&a.ns)
    );
}

/// `netmaps_refused` in the host's status.
fn refused(h: &scenario::Host) -> u64 {
    h.agent
        .try_status()
        .ok()
        .and_then(|s| s["control"]["netmaps_refused"].as_u64())
        .unwrap_or(0)
}

fn in_sync(cp: &ControlPlane, name: &str) -> Option<bool> {
    cp.node(name).and_then(|n| n["in_sync"].as_bool())
}

#[test]
fn a_control_plane_serving_a_wider_cluster_is_refused_and_node_list_says_behind() {
    let Some(c) = Cluster::new(
        "a_control_plane_serving_a_wider_cluster_is_refused_and_node_list_says_behind",
    ) else {
        return;
    };
    let (bridge, cp, token, hosts) = control_and_joined_hosts(&c, &["--reusable"], &["a", "b"]);
    assert_list_each_other(&hosts, Duration::from_secs(10));
    let wls = workloads(&c, &hosts);
    assert_all_ping(&wls, Duration::from_secs(15));
    for h in ["host-a", "host-b"] {
        assert_eventually(Duration::from_secs(10), &format!("{h} is in sync"), || {
            in_sync(&cp, h) == Some(true)
        });
    }
    let routes_before: Vec<Vec<String>> = hosts.iter().map(|h| routes(&h.ns)).collect();

    // The control plane's state is tampered with: its cluster is widened to 10.0.0.0/8 (the
    // store and control.toml agree, so it starts and serves netmaps naming 10.0.0.0/8).
    cp.stop().expect("control plane exit status");
    let store = cp.state_dir.join("store.jsonl");
    let text = std::fs::read_to_string(&store).expect("store.jsonl");
    assert!(
        text.contains(PINNED),
        "the store names no {PINNED}:\n{text}"
    );
    std::fs::write(&store, text.replace(PINNED, "10.0.0.0/8")).expect("write store.jsonl");
    let wide = ControlSpec {
        cluster_cidr: "10.0.0.0/8".into(),
        ..cp.spec.clone()
    };
    cp.write_config(&render(&wide, cp.ip, &cp.state_dir, &cp.audit_log));
    cp.restart();
    // A new host joins the widened cluster: a new revision everyone is offered.
    let new = joined_host_prepared(&c, &bridge, &cp, "c", 3, &token).started();
    for h in &hosts {
        assert_eventually(
            Duration::from_secs(20),
            &format!("{} refuses the widened netmap", h.ns.name()),
            || {
                refused(h) >= 1
                    && h.agent
                        .current_log()
                        .contains("cluster CIDR 10.0.0.0/8 is not 10.42.0.0/16")
            },
        );
    }
    assert_eventually(
        Duration::from_secs(20),
        "the new host (which pinned 10.0.0.0/8) is in sync",
        || in_sync(&cp, "host-c") == Some(true),
    );
    // The refusing hosts hold their old netmap: behind, and they stay so.
    for _ in 0..3 {
        for (h, before) in hosts.iter().zip(&routes_before) {
            let name = h.agent.spec().name;
            assert_eq!(in_sync(&cp, &name), Some(false), "{name} in node list");
            assert!(!lists_peer(h, &new), "{name} applied the refused netmap");
            assert_eq!(&routes(&h.ns), before, "{name}'s routes after the refusal");
            let cached = read_json(&h.agent.state_dir.join("netmap.json"));
            assert_eq!(cached["netmap"]["cluster_cidr"], PINNED, "{name}'s cache");
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    let listing = cp.cli_ok(&["node", "list"]);
    for line in listing
        .lines()
        .filter(|l| l.contains("host-a") || l.contains("host-b"))
    {
        assert!(line.contains("behind"), "node list:\n{listing}");
    }
    // Traffic between the hosts that refused goes on.
    assert_all_ping(&wls, Duration::from_secs(5));
    for h in &hosts {
        assert!(h.agent.is_running(), "{}:\n{}", h.ns.name(), h.agent.log());
    }
}

#[test]
fn an_older_credential_pins_the_first_netmaps_cluster_and_never_trusts_the_cache() {
    let Some(c) = Cluster::new(
        "an_older_credential_pins_the_first_netmaps_cluster_and_never_trusts_the_cache",
    ) else {
        return;
    };
    let (_bridge, cp, _token, hosts) = control_and_joined_hosts(&c, &["--reusable"], &["a", "b"]);
    assert_list_each_other(&hosts, Duration::from_secs(10));
    let wls = workloads(&c, &hosts);
    assert_all_ping(&wls, Duration::from_secs(15));
    let a = &hosts[0];
    a.agent.stop().expect("agent exit status");
    // The credential as an agent from before the pin wrote it: no cluster CIDR.
    let path = a.agent.state_dir.join("control.json");
    let mut credential = read_json(&path);
    credential.as_object_mut().unwrap().remove("cluster_cidr");
    agent::write_private(&path, &serde_json::to_string_pretty(&credential).unwrap());

    // With the control plane down there is nothing to check the cache against: the agent
    // waits for the control plane rather than run on an unchecked netmap.
    cp.stop().expect("control plane exit status");
    let routes_before = routes(&a.ns);
    a.agent.start_no_wait();
    assert_eventually(
        Duration::from_secs(10),
        "host-a says it cannot check its cache without a pinned cluster CIDR",
        || {
            a.agent
                .current_log()
                .contains("no cluster CIDR is pinned yet")
        },
    );
    assert!(a.agent.is_running(), "host-a gave up:\n{}", a.agent.log());
    assert_eq!(
        routes(&a.ns),
        routes_before,
        "host-a's routes while it waits"
    );

    // The control plane answers: its netmap (over the pinned TLS connection) pins the cluster.
    cp.restart();
    assert!(
        a.agent.wait_ready(Duration::from_secs(25)),
        "host-a did not start once the control plane was back:\n{}",
        a.agent.log()
    );
    assert!(
        a.agent
            .current_log()
            .contains("the credential had no cluster CIDR"),
        "{}",
        a.agent.current_log()
    );
    assert_eq!(read_json(&path)["cluster_cidr"], PINNED, "control.json");
    assert_eq!(a.agent.status()["control"]["cluster_cidr"], PINNED);
    assert_all_ping(&wls, Duration::from_secs(15));
}

/// One hostile netmap for [`a_hostile_control_plane_cannot_route_outside_the_pinned_cluster`]:
/// how the good one is changed, and what host-a's log then says.
struct Served {
    what: &'static str,
    edit: fn(&mut Value),
    says: &'static str,
}

const SERVED: [Served; 6] = [
    Served {
        what: "without a cluster CIDR",
        edit: |n| {
            n.as_object_mut().unwrap().remove("cluster_cidr");
        },
        says: "the netmap names no cluster CIDR",
    },
    Served {
        what: "with a wider cluster CIDR",
        edit: |n| n["cluster_cidr"] = "10.0.0.0/8".into(),
        says: "cluster CIDR 10.0.0.0/8 is not 10.42.0.0/16",
    },
    Served {
        what: "with a peer claiming the underlay",
        edit: |n| claim(n, "198.18.0.0/24"),
        says: "198.18.0.0/24 of \"host-b\" is outside the cluster CIDR 10.42.0.0/16",
    },
    Served {
        what: "with a peer claiming 0.0.0.0/1",
        edit: |n| claim(n, "0.0.0.0/1"),
        says: "0.0.0.0/1 of \"host-b\" is outside the cluster CIDR 10.42.0.0/16",
    },
    Served {
        what: "with an IPv6 /128 host subnet",
        edit: |n| n["host"]["subnet"] = "fd42::1/128".into(),
        says: "the host subnet fd42::1/128 is too small",
    },
    Served {
        what: "with a low-order peer key",
        edit: |n| n["peers"][0]["public_keys"] = serde_json::json!([ZERO_KEY]),
        says: "low-order point (such as all zeros)",
    },
];

const ZERO_KEY: &str = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";

fn claim(netmap: &mut Value, net: &str) {
    netmap["peers"][0]["allowed_ips"]
        .as_array_mut()
        .unwrap()
        .push(net.into());
}

/// What host-a runs while a hostile control plane serves it netmaps: its good netmap, its
/// routes, and traffic from its workload `wa` to host-b's at `ip_b`.
struct Seen<'a> {
    a: &'a Agent,
    ns_a: &'a Netns,
    wa: &'a Netns,
    ip_b: &'a str,
    good: &'a Value,
    routes: Vec<String>,
}

impl Seen<'_> {
    /// `cp` serves `bad`: host-a refuses it (saying `served.says`), counts it, keeps polling
    /// with the revision it runs, shows the control plane as connected, keeps its routes, its
    /// cached netmap and its traffic, and keeps running.
    fn refuses(&self, cp: &scripted_control::ScriptedControl, bad: Value, served: &Served) {
        let (a, what) = (self.a, served.what);
        let refused_before = a.status()["control"]["netmaps_refused"].as_u64().unwrap();
        let mark = cp.serve(bad);
        // Offered it, host-a refuses it and polls again with the revision it still runs.
        assert_eventually(
            Duration::from_secs(15),
            &format!("host-a refuses a netmap {what} and says it holds revision 1"),
            || a.current_log().contains(served.says) && cp.polls_since(mark).contains(&1),
        );
        assert!(
            !cp.polls_since(mark).iter().any(|r| *r >= 10),
            "host-a reported a refused revision as held: {:?}",
            cp.polls_since(mark)
        );
        // Counted each time it is offered again (after a growing pause).
        let refused = a.status()["control"]["netmaps_refused"].as_u64().unwrap();
        assert!(
            refused > refused_before,
            "netmaps_refused after a netmap {what}: {refused_before} -> {refused}"
        );
        // The control plane answered: the link is not shown as down.
        assert_eq!(
            a.status()["control"]["connected"],
            true,
            "after a netmap {what}"
        );
        assert_eq!(
            routes(self.ns_a),
            self.routes,
            "host-a's routes after a netmap {what}"
        );
        assert_pings(self.wa, self.ip_b, Duration::from_secs(5));
        let cached = read_json(&a.state_dir.join("netmap.json"));
        assert_eq!(
            cached["netmap"], *self.good,
            "host-a cached a netmap {what}"
        );
        assert!(a.is_running(), "host-a:\n{}", a.log());
    }
}

#[test]
fn a_hostile_control_plane_cannot_route_outside_the_pinned_cluster() {
    use common::control::{host_ip, CONTROL_IP};
    use common::scenario::{workload, Host};
    use common::scripted_control::ScriptedControl;

    let Some(c) = Cluster::new("a_hostile_control_plane_cannot_route_outside_the_pinned_cluster")
    else {
        return;
    };
    let bridge = c.bridge();
    let cp_ns = c.netns("cp");
    bridge.plug(&cp_ns, CONTROL_IP);
    let cp = ScriptedControl::start(&cp_ns, CONTROL_IP, 7443);
    let (ns_a, ns_b) = (c.netns("a"), c.netns("b"));
    bridge.plug(&ns_a, host_ip(1));
    bridge.plug(&ns_b, host_ip(2));
    let a = c.agent_prepared(
        &ns_a,
        AgentSpec::joined(
            "host-a",
            51820,
            "198.18.0.1:51820",
            ControlRef::new(&cp.url, &cp.token),
        ),
    );
    // host-b is the good peer: a static agent that knows host-a.
    let b = c.agent(
        &ns_b,
        AgentSpec::new("host-b", "10.42.1.0/24", 51820).peer(
            PeerSpec::new(a.public_key(), &["10.42.0.0/24"])
                .name("host-a")
                .endpoint("198.18.0.1:51820"),
        ),
    );
    let good = serde_json::json!({
        "revision": 1, "epoch": 7, "cluster_cidr": PINNED,
        "host": {"name": "host-a", "public_key": a.public_key(), "subnet": "10.42.0.0/24",
                 "endpoint": "198.18.0.1:51820"},
        "peers": [{"name": "host-b", "public_keys": [b.public_key()],
                   "endpoint": "198.18.0.2:51820", "allowed_ips": ["10.42.1.0/24"]}],
    });
    cp.serve(good.clone());
    a.start();
    let host = |ns: &Netns, n: u8, agent: &std::sync::Arc<Agent>| Host {
        ns: ns.clone(),
        ip: host_ip(n),
        port: 51820,
        agent: agent.clone(),
    };
    let (wa, _) = workload(&c, &host(&ns_a, 1, &a), "wa");
    let (_wb, ip_b) = workload(&c, &host(&ns_b, 2, &b), "wb");
    assert_pings(&wa, &ip_b, Duration::from_secs(15));
    let routes_before = routes(&ns_a);
    assert_eventually(
        Duration::from_secs(5),
        "host-a polls with the revision it applied",
        || cp.polls_since(0).contains(&1),
    );

    let seen = Seen {
        a: &a,
        ns_a: &ns_a,
        wa: &wa,
        ip_b: &ip_b,
        good: &good,
        routes: routes_before,
    };
    for (i, served) in SERVED.iter().enumerate() {
        let mut bad = good.clone();
        (served.edit)(&mut bad);
        bad["revision"] = (10 + i as u64).into();
        seen.refuses(&cp, bad, served);
    }
    // A good netmap after all that is applied and held.
    let mut next = good.clone();
    next["revision"] = 100.into();
    let mark = cp.serve(next);
    assert_eventually(
        Duration::from_secs(15),
        "host-a applies a good netmap after the hostile ones and says it holds it",
        || cp.polls_since(mark).contains(&100),
    );
    assert_eq!(a.status()["control"]["revision"], 100);
    assert_pings(&wa, &ip_b, Duration::from_secs(5));
}

/// What a host that joined a scripted control plane, whose first netmap named `cluster_cidr`
/// (none when `None`), left behind when it stopped: its log, its routes before and after, and
/// its credential file.
struct RefusedJoin {
    out: String,
    routes_before: Vec<String>,
    routes_after: Vec<String>,
    credential: Value,
}

/// Joins host-a to a scripted control plane serving a netmap with `cluster_cidr`, and expects
/// the agent to stop with an error. `None` when the test cannot run here.
fn join_refused(test: &str, cluster_cidr: Option<&str>) -> Option<RefusedJoin> {
    use common::control::{host_ip, CONTROL_IP};
    use common::scripted_control::ScriptedControl;

    let c = Cluster::new(test)?;
    let bridge = c.bridge();
    let cp_ns = c.netns("cp");
    bridge.plug(&cp_ns, CONTROL_IP);
    let cp = ScriptedControl::start(&cp_ns, CONTROL_IP, 7443);
    let ns = c.netns("a");
    bridge.plug(&ns, host_ip(1));
    let routes_before = routes(&ns);
    let a = c.agent_prepared(
        &ns,
        AgentSpec::joined(
            "host-a",
            51820,
            "198.18.0.1:51820",
            ControlRef::new(&cp.url, &cp.token),
        ),
    );
    let mut netmap = serde_json::json!({
        "revision": 1, "epoch": 7,
        "host": {"name": "host-a", "public_key": a.public_key(), "subnet": "10.42.0.0/24"},
        "peers": [],
    });
    if let Some(cidr) = cluster_cidr {
        netmap["cluster_cidr"] = cidr.into();
    }
    cp.serve(netmap);
    let (status, out) = a.run_expect_exit(Duration::from_secs(20));
    assert!(
        !status.success() && status.code().is_some(),
        "{status}:\n{out}"
    );
    Some(RefusedJoin {
        out,
        routes_before,
        routes_after: routes(&ns),
        credential: read_json(&a.state_dir.join("control.json")),
    })
}

#[test]
fn a_join_reply_without_a_cluster_cidr_is_refused() {
    // An older (or hostile) control plane: a netmap with nothing to pin.
    let Some(r) = join_refused("a_join_reply_without_a_cluster_cidr_is_refused", None) else {
        return;
    };
    assert!(
        r.out.contains("sent a netmap without a cluster CIDR"),
        "the agent does not say why it stopped:\n{}",
        r.out
    );
    assert_eq!(
        r.routes_after, r.routes_before,
        "routes after a refused join"
    );
    assert_eq!(
        r.credential["joined"], false,
        "control.json: {}",
        r.credential
    );
    assert!(
        r.credential.get("cluster_cidr").is_none(),
        "{}",
        r.credential
    );
}

/// A control plane that pins a cluster CIDR wide enough to swallow the host's own traffic
/// (`0.0.0.0/1`, which holds the control plane's address) is refused before any route is made.
#[test]
fn a_pinned_cluster_that_would_cut_the_host_off_is_refused() {
    let test = "a_pinned_cluster_that_would_cut_the_host_off_is_refused";
    let Some(r) = join_refused(test, Some("0.0.0.0/1")) else {
        return;
    };
    assert!(
        r.out
            .contains("refusing to close the cluster CIDR 0.0.0.0/1"),
        "the agent does not say why it stopped:\n{}",
        r.out
    );
    assert_eq!(
        r.routes_after, r.routes_before,
        "routes after a refused cluster"
    );
}

#[test]
fn a_netmap_reply_that_breaks_off_is_an_outage_not_a_refused_netmap() {
    use common::control::{host_ip, CONTROL_IP};
    use common::scripted_control::ScriptedControl;

    let Some(c) = Cluster::new("a_netmap_reply_that_breaks_off_is_an_outage_not_a_refused_netmap")
    else {
        return;
    };
    let bridge = c.bridge();
    let cp_ns = c.netns("cp");
    bridge.plug(&cp_ns, CONTROL_IP);
    let cp = ScriptedControl::start(&cp_ns, CONTROL_IP, 7443);
    let ns = c.netns("a");
    bridge.plug(&ns, host_ip(1));
    let a = c.agent_prepared(
        &ns,
        AgentSpec::joined(
            "host-a",
            51820,
            "198.18.0.1:51820",
            ControlRef::new(&cp.url, &cp.token),
        ),
    );
    let good = serde_json::json!({
        "revision": 1, "epoch": 7, "cluster_cidr": PINNED,
        "host": {"name": "host-a", "public_key": a.public_key(), "subnet": "10.42.0.0/24",
                 "endpoint": "198.18.0.1:51820"},
        "peers": [],
    });
    cp.serve(good.clone());
    a.start();
    assert_eventually(
        Duration::from_secs(10),
        "host-a polls with the revision it applied",
        || cp.polls_since(0).contains(&1),
    );
    let control = |field: &str| a.status()["control"][field].clone();
    assert_eq!(control("connected"), true);

    // A new netmap whose every reply breaks off halfway: nothing was received to judge, so it
    // is not refused; the control plane is shown as unreachable, and the peers stay.
    cp.break_off(true);
    let mut next = good.clone();
    next["revision"] = 2.into();
    cp.serve(next);
    assert_eventually(
        Duration::from_secs(15),
        "host-a shows the control plane as unreachable",
        || control("connected") == false,
    );
    assert!(
        a.current_log().contains("control plane unreachable"),
        "{}",
        a.log()
    );
    assert_eq!(
        control("netmaps_refused"),
        0,
        "a broken-off reply was counted"
    );
    assert_eq!(control("revision"), 1);

    // Whole replies again: applied, connected, still nothing refused.
    cp.break_off(false);
    assert_eventually(
        Duration::from_secs(20),
        "host-a applies revision 2 once replies arrive whole",
        || control("revision") == 2 && control("connected") == true,
    );
    assert_eq!(control("netmaps_refused"), 0);
}
