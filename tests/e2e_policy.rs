//! The policy of issue 10, end to end: a control plane and hosts A, B, C on one underlay
//! bridge, workloads attached with labels, `wgmesh policy apply` of the users' seed policy.
//! Allowed flows work with their replies; every other flow fails; hosts no rule connects are
//! not even peers; a stricter policy stops a running flow within 2 s; an agent restarted
//! while the control plane is down enforces the cached policy from its first packet; bad
//! policy files change nothing.

mod common;

use std::time::{Duration, Instant};

use common::control::control_and_joined_hosts;
use common::policy::{
    labelled_workload, policy_file, tcp_talks, RunningFlow, Services, SEED_POLICY,
};
use common::scenario::Host;
use common::traffic::in_netns;
use common::*;

/// How long a policy change may take to reach every host.
const PROPAGATION: Duration = Duration::from_secs(2);

/// The seed scene: A runs `app=secure-app` (TCP 80 and 8080), B runs `role=frontend` and an
/// unlabelled workload (both serving TCP 80), C runs `role=backend` (TCP 5432 and 22).
struct Scene {
    cp: std::sync::Arc<ControlPlane>,
    hosts: Vec<Host>,
    app: (Netns, String),
    front: (Netns, String),
    unlabelled: (Netns, String),
    back: (Netns, String),
    _services: Vec<Services>,
}

fn scene(c: &Cluster) -> Scene {
    let (_bridge, cp, _token, hosts) =
        control_and_joined_hosts(c, &["--reusable", "--ttl", "1h"], &["a", "b", "c"]);
    let app = labelled_workload(c, &hosts[0].agent, "app", &["app=secure-app"]);
    let front = labelled_workload(c, &hosts[1].agent, "front", &["role=frontend"]);
    let unlabelled = labelled_workload(c, &hosts[1].agent, "unl", &[]);
    let back = labelled_workload(c, &hosts[2].agent, "back", &["role=backend"]);
    let services = vec![
        Services::start(&app.0, &app.1, &[80, 8080]),
        Services::start(&front.0, &front.1, &[80]),
        Services::start(&unlabelled.0, &unlabelled.1, &[80]),
        Services::start(&back.0, &back.1, &[5432, 22]),
    ];
    Scene {
        cp,
        hosts,
        app,
        front,
        unlabelled,
        back,
        _services: services,
    }
}

/// The seed scene with the seed policy applied and its frontend -> app flow working.
fn seeded_scene(c: &Cluster) -> Scene {
    let s = scene(c);
    apply_ok(&s.cp, "seed.toml", SEED_POLICY);
    assert_flow("frontend -> app tcp/80", true, PROPAGATION, || {
        tcp_talks(&s.front.0, &s.app.1, 80)
    });
    s
}

/// `wgmesh policy apply` of `text`; returns (success, stdout + stderr).
fn apply(cp: &ControlPlane, name: &str, text: &str) -> (bool, String) {
    let path = policy_file(cp.dir(), name, text);
    let out = cp.cli(&["policy", "apply", path.to_str().unwrap()]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn apply_ok(cp: &ControlPlane, name: &str, text: &str) {
    let (ok, out) = apply(cp, name, text);
    assert!(ok, "policy apply {name} failed:\n{out}");
}

/// [`apply_ok`], then waits until every host of `s` enforces the new policy (its filter's
/// generation moved), within [`PROPAGATION`].
fn apply_everywhere(s: &Scene, name: &str, text: &str) {
    let generation = |h: &Host| h.agent.status()["policy"]["generation"].clone();
    let before: Vec<_> = s.hosts.iter().map(generation).collect();
    apply_ok(&s.cp, name, text);
    for (h, was) in s.hosts.iter().zip(before) {
        assert_eventually(
            PROPAGATION,
            &format!("{} enforces {name}", h.agent.ns.name()),
            || {
                let now = generation(h);
                !now.is_null() && now != was
            },
        );
    }
}

/// Waits until `talks()` is `want` (within `timeout`); panics naming `what` otherwise.
fn assert_flow(what: &str, want: bool, timeout: Duration, mut talks: impl FnMut() -> bool) {
    let t0 = Instant::now();
    loop {
        let got = talks();
        if got == want {
            return;
        }
        assert!(
            t0.elapsed() < timeout,
            "{what}: expected {}, but it {} for {timeout:?}",
            if want { "to work" } else { "to fail" },
            if got { "kept working" } else { "kept failing" }
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The names of the peers `h`'s agent has.
fn peer_names(h: &Host) -> Vec<String> {
    let st = h.agent.status();
    let mut names: Vec<String> = st["peers"]
        .as_array()
        .map(|ps| {
            ps.iter()
                .filter_map(|p| p["name"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[test]
fn seed_policy_allows_exactly_its_flows() {
    let Some(c) = Cluster::new("seed_policy_allows_exactly_its_flows") else {
        return;
    };
    let s = scene(&c);
    // No policy applied: everything is allowed, as on a Docker overlay.
    assert_flow(
        "unlabelled -> app:8080 before any policy",
        true,
        PROPAGATION * 5,
        || tcp_talks(&s.unlabelled.0, &s.app.1, 8080),
    );
    apply_ok(&s.cp, "seed.toml", SEED_POLICY);

    let (front, app, back, unl) = (&s.front, &s.app, &s.back, &s.unlabelled);
    assert_flow("frontend -> app tcp/80", true, PROPAGATION, || {
        tcp_talks(&front.0, &app.1, 80)
    });
    assert_flow("app -> backend tcp/5432", true, PROPAGATION, || {
        tcp_talks(&app.0, &back.1, 5432)
    });
    // Every other flow fails.
    let denied: [(&str, &Netns, &str, u16); 6] = [
        (
            "frontend -> app tcp/8080 (another port)",
            &front.0,
            &app.1,
            8080,
        ),
        (
            "unlabelled -> app tcp/80 (another label)",
            &unl.0,
            &app.1,
            80,
        ),
        (
            "app -> frontend tcp/80 (the reverse direction)",
            &app.0,
            &front.1,
            80,
        ),
        ("backend -> app tcp/80 (another label)", &back.0, &app.1, 80),
        (
            "app -> backend tcp/22 (the no-ssh deny)",
            &app.0,
            &back.1,
            22,
        ),
        (
            "frontend -> unlabelled tcp/80 (same host)",
            &front.0,
            &unl.1,
            80,
        ),
    ];
    for (what, from, to, port) in denied {
        assert_flow(what, false, PROPAGATION, || tcp_talks(from, to, port));
    }
    assert!(
        !ping(&front.0, &app.1),
        "ICMP frontend -> app must be denied"
    );
    assert!(!ping(&app.0, &back.1), "ICMP app -> backend must be denied");

    // The denials are counted by the receiving host, per rule or reason.
    let st = s.hosts[0].agent.status();
    assert!(
        st["policy"]["denied"]
            .as_array()
            .is_some_and(|d| !d.is_empty()),
        "status.policy.denied of host a is empty: {st}"
    );
    // ... and written to the audit log of the host that refused them (the sender's, for
    // egress), one line per flow.
    let audit =
        std::fs::read_to_string(s.hosts[1].agent.state_dir.join("audit.jsonl")).unwrap_or_default();
    assert!(
        audit
            .lines()
            .any(|l| l.contains(&s.unlabelled.1) && l.contains("\"port\":80")),
        "host b's audit log names no denied flow from {}:\n{audit}",
        s.unlabelled.1
    );
}

#[test]
fn hosts_no_rule_connects_are_not_peers() {
    let Some(c) = Cluster::new("hosts_no_rule_connects_are_not_peers") else {
        return;
    };
    let s = scene(&c);
    apply_ok(&s.cp, "seed.toml", SEED_POLICY);
    // A-B (frontend -> app) and A-C (app -> backend) are connected; B-C by no allow rule.
    let want: [(usize, &[&str]); 3] = [
        (0, &["host-b", "host-c"]),
        (1, &["host-a"]),
        (2, &["host-a"]),
    ];
    for (i, peers) in want {
        let h = &s.hosts[i];
        assert_eventually(
            PROPAGATION,
            &format!("peers of {}", h.agent.ns.name()),
            || peer_names(h) == peers,
        );
    }
    // Not in the netmap either: the cached netmap of B names no host-c.
    let cached = std::fs::read_to_string(s.hosts[1].agent.state_dir.join("netmap.json"))
        .expect("host b's cached netmap");
    assert!(
        !cached.contains("host-c"),
        "host b's netmap names host-c:\n{cached}"
    );
}

#[test]
fn a_stricter_policy_stops_a_running_flow_and_the_old_one_restores_it() {
    let Some(c) =
        Cluster::new("a_stricter_policy_stops_a_running_flow_and_the_old_one_restores_it")
    else {
        return;
    };
    let s = seeded_scene(&c);
    let flow = RunningFlow::start(&s.front.0, &s.app.1, 80);
    assert_eventually(PROPAGATION, "the running flow's first round trip", || {
        flow.last_ok().is_some()
    });
    let strict = SEED_POLICY
        .replace("ports = [\"tcp/80\"]", "ports = [\"tcp/81\"]")
        .replace(
            "port = \"tcp/80\"\nexpect = \"allow\"",
            "port = \"tcp/81\"\nexpect = \"allow\"",
        );
    let applied = Instant::now();
    apply_ok(&s.cp, "strict.toml", &strict);
    std::thread::sleep(PROPAGATION + Duration::from_millis(500));
    let last = flow.last_ok().unwrap();
    assert!(
        last < applied + PROPAGATION,
        "the established flow still had a round trip {:?} after the stricter policy",
        last - applied
    );
    assert!(
        !tcp_talks(&s.front.0, &s.app.1, 80),
        "a new flow to tcp/80 still works"
    );
    apply_ok(&s.cp, "seed-again.toml", SEED_POLICY);
    assert_flow(
        "frontend -> app tcp/80 after the old policy",
        true,
        PROPAGATION,
        || tcp_talks(&s.front.0, &s.app.1, 80),
    );
}

#[test]
fn an_agent_restarted_during_an_outage_enforces_the_cached_policy_at_once() {
    let Some(c) =
        Cluster::new("an_agent_restarted_during_an_outage_enforces_the_cached_policy_at_once")
    else {
        return;
    };
    let s = seeded_scene(&c);
    assert_flow("unlabelled -> app tcp/80", false, PROPAGATION, || {
        tcp_talks(&s.unlabelled.0, &s.app.1, 80)
    });
    s.cp.stop();
    let a = &s.hosts[0].agent;
    a.kill9();
    a.restart();
    // The first status it answers already has the cached policy: the data path starts with it.
    assert!(
        a.wait_ready(Duration::from_secs(20)),
        "the agent did not come back"
    );
    let first = a.status();
    assert!(
        first["policy"]["rules"].as_u64().unwrap_or(0) > 0,
        "the restarted agent's first status has no policy: {}",
        first["policy"]
    );
    // From its first packet: the denied flow never gets through, the allowed one does.
    assert!(
        !tcp_talks(&s.unlabelled.0, &s.app.1, 80),
        "right after the restart, unlabelled -> app tcp/80 got through"
    );
    assert_flow(
        "frontend -> app tcp/80 after the restart",
        true,
        PROPAGATION * 5,
        || tcp_talks(&s.front.0, &s.app.1, 80),
    );
    assert!(!tcp_talks(&s.unlabelled.0, &s.app.1, 80));
}

#[test]
fn bad_policy_files_change_nothing_and_say_what_is_wrong() {
    let Some(c) = Cluster::new("bad_policy_files_change_nothing_and_say_what_is_wrong") else {
        return;
    };
    let s = scene(&c);
    apply_ok(&s.cp, "seed.toml", SEED_POLICY);
    assert_flow(
        "unlabelled -> app tcp/80 under the seed",
        false,
        PROPAGATION,
        || tcp_talks(&s.unlabelled.0, &s.app.1, 80),
    );
    let before = s.cp.cli_ok(&["policy", "show", "--json"]);
    let cases: [(&str, String, &str); 4] = [
        (
            "port.toml",
            SEED_POLICY.replace("\"tcp/5432\"]", "\"tcp:5432\"]"),
            "rule[1].ports[0]",
        ),
        (
            "key.toml",
            SEED_POLICY.replace("name = \"app-to-db\"", "name = \"app-to-db\"\nprots = []"),
            "prots",
        ),
        (
            "test.toml",
            format!("{SEED_POLICY}\n[[test]]\nfrom = {{ role = \"frontend\" }}\nto = {{ role = \"backend\" }}\nport = \"tcp/5432\"\nexpect = \"allow\"\n"),
            "expected allow",
        ),
        (
            "to.toml",
            SEED_POLICY.replace("to   = { role = \"backend\" }\nports = [\"tcp/5432\"]", "ports = [\"tcp/5432\"]"),
            "to",
        ),
    ];
    for (name, text, needle) in cases {
        let (ok, out) = apply(&s.cp, name, &text);
        assert!(!ok, "policy apply {name} succeeded:\n{out}");
        assert!(
            out.contains(name),
            "the error does not name the file {name}:\n{out}"
        );
        assert!(
            out.contains(needle),
            "the error for {name} does not say {needle:?}:\n{out}"
        );
    }
    assert_eq!(
        s.cp.cli_ok(&["policy", "show", "--json"]),
        before,
        "a bad file changed the policy"
    );
    assert_flow(
        "frontend -> app tcp/80 after the bad files",
        true,
        PROPAGATION,
        || tcp_talks(&s.front.0, &s.app.1, 80),
    );
    assert!(!tcp_talks(&s.unlabelled.0, &s.app.1, 80));
}

/// The policy of `s` plus a rule that lets the frontend send UDP to the app's port 9000.
fn seed_with_udp() -> String {
    format!(
        "{SEED_POLICY}\n[[rule]]\nname = \"frontend-udp\"\nfrom = {{ role = \"frontend\" }}\n\
         to   = {{ app = \"secure-app\" }}\nports = [\"udp/9000\"]\n"
    )
}

/// The packets `h`'s policy dropped for `reason` (summed over rules).
fn denied(h: &Host, reason: &str) -> u64 {
    let st = h.agent.status();
    st["policy"]["denied"]
        .as_array()
        .map(|d| {
            d.iter()
                .filter(|e| e["reason"] == reason)
                .filter_map(|e| e["packets"].as_u64())
                .sum()
        })
        .unwrap_or(0)
}

#[test]
fn a_flood_of_new_flows_fills_one_peers_table_and_nothing_else() {
    let Some(c) = Cluster::new("a_flood_of_new_flows_fills_one_peers_table_and_nothing_else")
    else {
        return;
    };
    let s = scene(&c);
    apply_everywhere(&s, "udp.toml", &seed_with_udp());
    assert_flow("frontend -> app tcp/80", true, PROPAGATION, || {
        tcp_talks(&s.front.0, &s.app.1, 80)
    });
    let flow = RunningFlow::start(&s.front.0, &s.app.1, 80);
    assert_eventually(PROPAGATION, "the running flow's first round trip", || {
        flow.last_ok().is_some()
    });

    // 6,000 new UDP flows (one per source port) from the frontend: more than a peer's table holds.
    let (src, dst) = (s.front.1.clone(), s.app.1.clone());
    let sent = in_netns(&s.front.0, move || {
        let mut sent = 0;
        for (i, port) in (20_000u16..26_000).enumerate() {
            let sock = std::net::UdpSocket::bind((src.as_str(), port));
            if sock
                .and_then(|sock| sock.send_to(b"x", (dst.as_str(), 9000)))
                .is_ok()
            {
                sent += 1;
            }
            if i % 100 == 99 {
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        sent
    });
    assert!(
        sent > 5_000,
        "only {sent} of 6000 flood datagrams were sent"
    );

    let flooded = Instant::now();
    let b = &s.hosts[1];
    let full = wait_until(PROPAGATION, || denied(b, "conntrack_full") > 0);
    assert!(
        full,
        "host b counted no flow refused for a full table: {}",
        b.agent.status()["policy"]
    );
    let st = b.agent.status();
    let ct = &st["policy"]["conntrack"];
    assert!(
        ct["refused"].as_u64().unwrap_or(0) > 0
            && ct["entries"].as_u64() <= ct["capacity"].as_u64(),
        "host b's conntrack after the flood: {ct}"
    );
    // While the table is full: the established flow goes on, a new flow between the same two
    // hosts is refused (closed, not open), and flows with another peer are untouched.
    std::thread::sleep(Duration::from_millis(500));
    let last = flow.last_ok().unwrap();
    assert!(
        last > flooded,
        "the established flow had no round trip since the flood"
    );
    assert!(
        !tcp_talks(&s.front.0, &s.app.1, 80),
        "a new frontend -> app flow got through a full table"
    );
    assert!(
        tcp_talks(&s.app.0, &s.back.1, 5432),
        "app -> backend (another peer's table) stopped working during the flood"
    );
    // The flood's flows expire (30 s unreplied): new flows work again.
    assert_flow(
        "frontend -> app tcp/80 once the flood's flows expired",
        true,
        Duration::from_secs(45),
        || tcp_talks(&s.front.0, &s.app.1, 80),
    );
}

#[test]
fn a_tampered_sender_with_its_hosts_key_is_stopped_by_the_receiver() {
    let Some(c) = Cluster::new("a_tampered_sender_with_its_hosts_key_is_stopped_by_the_receiver")
    else {
        return;
    };
    let s = scene(&c);
    apply_everywhere(&s, "seed.toml", SEED_POLICY);
    assert_flow("frontend -> app tcp/80", true, PROPAGATION, || {
        tcp_talks(&s.front.0, &s.app.1, 80)
    });
    // Host B is taken over: its agent goes, and wireguard-go with B's own private key sends
    // from B's workloads' addresses, with no egress policy at all.
    let (a, b) = (&s.hosts[0], &s.hosts[1]);
    b.agent.stop();
    let wg = WgGo::start(&b.ns, b.port);
    let key = b.agent.key_file.to_str().unwrap().to_owned();
    wg.wg(&["set", &wg.ifname, "private-key", &key]);
    let a_subnet = a.agent.subnet();
    wg.set_peer(
        a.agent.public_key(),
        &[&a_subnet],
        Some(&a.endpoint()),
        None,
    );
    wg.addr_add(&format!("{}/32", s.front.1));
    wg.addr_add(&format!("{}/32", s.unlabelled.1));
    // And an address of host C's range, which B's key does not hold.
    wg.addr_add(&format!("{}/32", s.back.1));
    wg.up();
    wg.route_add(&a_subnet);
    // `socat` from a chosen source address: the answer comes back only if A let the flow in.
    let talks = |src: &str, port: u16| {
        let cmd = format!(
            "echo hi | timeout 4 socat -T2 - TCP:{}:{port},bind={src},connect-timeout=2",
            s.app.1
        );
        let out = b.ns.exec(&["sh", "-c", &cmd]);
        String::from_utf8_lossy(&out.stdout).contains("ok")
    };
    // The tunnel works, with B's key: the allowed flow gets through, decided by A alone.
    // A takes wireguard-go's initiations only once their TAI64N timestamps pass the last one
    // B's agent sent (replay protection): boringtun counts from TAI64 + 37 s, wireguard-go from
    // TAI64 + 10 s, so for up to 27 s after B's last handshake they look old.
    assert_flow(
        "frontend address -> app tcp/80 through wireguard-go",
        true,
        Duration::from_secs(45),
        || talks(&s.front.1, 80),
    );
    // What B's egress would have stopped, A's ingress stops.
    assert!(
        !talks(&s.unlabelled.1, 80),
        "unlabelled address -> app tcp/80 got through A from a tampered B"
    );
    assert!(
        !talks(&s.front.1, 8080),
        "frontend address -> app tcp/8080 got through A from a tampered B"
    );
    assert!(
        denied(a, "default") > 0,
        "host a counted no default-denied packet: {}",
        a.agent.status()["policy"]
    );
    // Another host's workload address through B's tunnel: the cryptokey check drops it first.
    let spoofed_before = a.agent.peer_status(b.agent.public_key())["dropped"]["source_not_allowed"]
        .as_u64()
        .unwrap_or(0);
    assert!(
        !talks(&s.back.1, 80),
        "host c's workload address got through B's tunnel"
    );
    let spoofed = a.agent.peer_status(b.agent.public_key())["dropped"]["source_not_allowed"]
        .as_u64()
        .unwrap_or(0);
    assert!(
        spoofed > spoofed_before,
        "host a did not count the packets from C's range as source_not_allowed"
    );
    // An address of B's own subnet that no workload holds: a rule denying host b covers it,
    // even where everything else is allowed.
    let unused = format!("{}.200", s.front.1.rsplit_once('.').unwrap().0);
    wg.addr_add(&format!("{unused}/32"));
    let deny_b = "default = \"allow\"\n\n[[rule]]\nname = \"no-b\"\naction = \"deny\"\n\
                  from = { host = \"host-b\" }\nto = {}\n";
    apply_ok(&s.cp, "deny-b.toml", deny_b);
    assert_flow(
        "backend -> app tcp/80 under default allow",
        true,
        PROPAGATION,
        || tcp_talks(&s.back.0, &s.app.1, 80),
    );
    assert!(
        !talks(&unused, 80),
        "B's unregistered address {unused} got through a rule denying host b"
    );
    drop(wg);
}
