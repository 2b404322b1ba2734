//! The control plane under load and abuse, end to end: 2,000 idle connections from one address
//! leave agents and the admin served (the per-address cap closes the excess at once, the
//! handshake timeout the rest); a joined host flapping its endpoint is answered 429 once over
//! its budget and costs another agent at most a netmap or two; endpoints no host can be
//! reached at are refused at join and in endpoint reports; the audit log rotates at
//! `audit_max_bytes`, keeping `audit_keep` old files; every state file is 0600; refused
//! requests from many addresses of one IPv6 /64 are limited as one address's; a joined host
//! looping forbidden calls is answered 429 after its budget while other hosts join and poll.

mod common;

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt as _;
use std::time::{Duration, Instant};

use common::control::{fresh_public_key, host_ip, joined_host_prepared, reason, CONTROL_IP};
use common::control_limits::{
    control_with, curl_many, hold_connections, netmaps_applied, still_open,
};
use common::control_refusals::{add_v6, control_dual_stack, curl_from};
use common::files::{allow_open_files, assert_private_tree};
use common::*;
use common::{control, daemon};

/// Connections the flood opens from its one address.
const FLOOD: usize = 2000;
/// The cap configured for the test (the default is 64 too).
const PER_ADDRESS: usize = 64;

#[test]
fn idle_connection_flood_from_one_address_leaves_agents_and_admins_served() {
    let Some(c) =
        Cluster::new("idle_connection_flood_from_one_address_leaves_agents_and_admins_served")
    else {
        return;
    };
    allow_open_files(FLOOD as u64 + 512);
    let bridge = c.bridge();
    let cp = control_with(
        &c,
        &bridge,
        &format!("max_connections_per_address = {PER_ADDRESS}\nhandshake_timeout_secs = 4"),
    );
    let token = cp.token_create(&["--reusable"]);
    let flood_ns = c.netns("flood");
    bridge.plug(&flood_ns, host_ip(66));
    let started = Instant::now();
    let held = hold_connections(&flood_ns, SocketAddr::from((CONTROL_IP, 7443)), FLOOD);
    eprintln!(
        "{} of {FLOOD} idle connections established in {:?}",
        held.len(),
        started.elapsed()
    );
    assert!(
        held.len() >= FLOOD * 9 / 10,
        "the kernel completed only {} of {FLOOD} connections",
        held.len()
    );
    // Beyond the cap, connections are closed at once, not left holding a slot.
    assert_eventually(
        Duration::from_secs(5),
        "the excess connections are closed",
        || still_open(&held) <= PER_ADDRESS,
    );

    // While the flood's connections are held: a host joins and gets peers, the admin lists.
    let t = Instant::now();
    let a = joined_host_prepared(&c, &bridge, &cp, "a", 1, &token).started();
    let b = joined_host_prepared(&c, &bridge, &cp, "b", 2, &token).started();
    assert_eventually(Duration::from_secs(10), "host a lists host b", || {
        control::lists_peer(&a, &b)
    });
    let joined = t.elapsed();
    let t = Instant::now();
    let names = cp.node_names();
    let listed = t.elapsed();
    assert_eq!(names.len(), 2, "{names:?}");
    eprintln!("two joins and a netmap poll took {joined:?}, node list {listed:?}");
    assert!(listed < Duration::from_secs(5), "node list took {listed:?}");
    let open = still_open(&held);
    assert!(
        open <= PER_ADDRESS,
        "{open} flood connections are still open, over the cap of {PER_ADDRESS}"
    );

    // The handshake timeout (4 s) closes those within the cap too.
    assert_eventually(
        Duration::from_secs(10),
        "the idle connections within the cap time out",
        || still_open(&held) == 0,
    );
    let log = cp.log();
    assert!(
        log.contains("closing new connections at once"),
        "the control plane did not log the refused connections:\n{}",
        daemon::tail(&log, 40)
    );
}

#[test]
fn a_flapping_endpoint_is_refused_429_and_barely_moves_other_agents() {
    let Some(c) = Cluster::new("a_flapping_endpoint_is_refused_429_and_barely_moves_other_agents")
    else {
        return;
    };
    let bridge = c.bridge();
    let cp = control_with(&c, &bridge, "");
    let token = cp.token_create(&["--reusable"]);
    let watcher = joined_host_prepared(&c, &bridge, &cp, "watch", 1, &token).started();
    // The flapper: a host joined with curl, whose credential reports endpoints in a loop.
    let flap_ns = c.netns("flap");
    bridge.plug(&flap_ns, host_ip(77));
    let flap_key = fresh_public_key();
    let (credential, _) = cp.join_ok(&token, "host-flap", &flap_key);
    assert_eventually(
        Duration::from_secs(10),
        "the watcher lists the flapper",
        || watcher.agent.try_peer_status(&flap_key).is_some(),
    );
    // Let the watcher settle (its own endpoint report, the flapper's join).
    std::thread::sleep(Duration::from_secs(2));
    let before = netmaps_applied(&watcher.agent.log());

    let (accepted, flapped) = flap(&cp, &flap_ns, &credential);

    // The watcher ends on the last accepted endpoint (latest state wins), having applied a
    // netmap or two for the whole burst, not one per change.
    let last = *accepted.last().unwrap();
    let wanted = format!("198.18.0.77:{}", 20000 + last);
    assert_eventually(
        Duration::from_secs(10),
        "the watcher has the flapper's last accepted endpoint",
        || {
            watcher
                .agent
                .try_peer_status(&flap_key)
                .is_some_and(|p| p["endpoint"] == wanted.as_str())
        },
    );
    std::thread::sleep(Duration::from_secs(1));
    let applied = netmaps_applied(&watcher.agent.log()) - before;
    eprintln!("the watcher applied {applied} netmaps during the flapping");
    // The budget's first 10 changes come at once and make at most three netmaps (one at once,
    // then one per 500 ms window while they last); each change accepted later (one per 6 s)
    // at most one more. Unpaced, the watcher would apply close to one netmap per change.
    let later = accepted.len() - 10;
    assert!(
        (1..=3 + later).contains(&applied),
        "the watcher applied {applied} netmaps for {} endpoint changes in {flapped:?} \
         (at most 3 for the first 10, one per 500 ms window, expected)",
        accepted.len()
    );
    assert_polls_are_paced(&cp, &flap_ns, &credential);
}

/// 300 endpoint reports for host-flap from `ns`, as fast as curl sends them: each is accepted
/// or refused 429 with a Retry-After of 1 to 6 s, and at most the budget (10 at once, then one
/// per 6 s) is accepted. Returns which were accepted, and how long the reports took.
fn flap(cp: &ControlPlane, ns: &Netns, credential: &str) -> (Vec<usize>, Duration) {
    let bodies: Vec<String> = (0..300)
        .map(|i| format!(r#"{{"endpoint": "198.18.0.77:{}"}}"#, 20000 + i))
        .collect();
    let t = Instant::now();
    let path = "/v1/hosts/host-flap/endpoint";
    let answers = curl_many(cp, ns, "PUT", path, credential, &bodies, 0);
    let flapped = t.elapsed();
    let accepted: Vec<usize> = (0..answers.len())
        .filter(|i| answers[*i].status == 200)
        .collect();
    let limited = answers.iter().filter(|a| a.status == 429).count();
    eprintln!(
        "300 endpoint reports in {flapped:?}: {} accepted, {limited} answered 429",
        accepted.len()
    );
    assert_eq!(
        accepted.len() + limited,
        answers.len(),
        "every report is accepted or 429: {answers:?}"
    );
    let budget = 10 + (flapped.as_secs() / 6) as usize + 1;
    assert!(
        accepted.len() <= budget && accepted.len() >= 10,
        "{} reports accepted; the budget is 10 at once, then one per 6 s",
        accepted.len()
    );
    assert!(limited >= 250, "only {limited} reports were refused");
    let retry: Vec<&str> = answers
        .iter()
        .filter(|a| a.status == 429)
        .map(|a| a.retry_after.as_str())
        .collect();
    assert!(
        retry
            .iter()
            .all(|r| r.parse::<u64>().is_ok_and(|s| (1..=6).contains(&s))),
        "429s without a Retry-After of 1 to 6 s: {retry:?}"
    );
    // The refusal body names the reason.
    let body = r#"{"endpoint": "198.18.0.77:1"}"#;
    let (st, body) = cp.curl_in(ns, "PUT", path, Some(credential), Some(body));
    assert_eq!(
        (st, reason(&body).as_str()),
        (429, "too_many_requests"),
        "{body}"
    );
    (accepted, flapped)
}

/// A host polling in a loop (a stale revision, no wait) gets one netmap per 500 ms window.
fn assert_polls_are_paced(cp: &ControlPlane, ns: &Netns, credential: &str) {
    let t = Instant::now();
    let path = "/v1/hosts/host-flap/netmap?revision=0&wait=0";
    let polls = curl_many(cp, ns, "GET", path, credential, &[], 9);
    let polled = t.elapsed();
    assert!(polls.iter().all(|a| a.status == 200), "{polls:?}");
    eprintln!("9 netmap polls in a loop took {polled:?}");
    assert!(
        polled >= Duration::from_millis(3900),
        "9 polls in a loop got 9 netmaps in {polled:?}: not paced to one per 500 ms"
    );
}

#[test]
fn unreachable_endpoints_are_refused_at_join_and_report_and_state_files_are_private() {
    let Some(c) = Cluster::new(
        "unreachable_endpoints_are_refused_at_join_and_report_and_state_files_are_private",
    ) else {
        return;
    };
    let bridge = c.bridge();
    let cp = control_with(&c, &bridge, "");
    let token = cp.token_create(&["--reusable"]);
    let refused = [
        ("127.0.0.1:51820", "loopback"),
        ("[::1]:51820", "loopback"),
        ("224.0.0.1:51820", "multicast"),
        ("[ff02::1]:51820", "multicast"),
        ("0.0.0.0:51820", "unspecified"),
        ("[::]:51820", "unspecified"),
        ("169.254.7.7:51820", "link-local"),
        ("[fe80::1]:51820", "link-local"),
        ("255.255.255.255:51820", "broadcast"),
        ("10.42.3.4:51820", "cluster CIDR 10.42.0.0/16"),
    ];
    for (endpoint, class) in refused {
        let (st, body) = cp.join_raw(&token, "host-bad", &fresh_public_key(), Some(endpoint));
        assert_eq!(
            (st, reason(&body).as_str()),
            (400, "bad_endpoint"),
            "join with {endpoint}: {body}"
        );
        assert!(body.contains(class), "join with {endpoint}: {body}");
        assert!(
            body.contains("198.18.0.5:51820"),
            "says what is valid: {body}"
        );
    }
    assert!(cp.node_names().is_empty(), "a refused join joined");
    let (st, body) = cp.join_raw(
        &token,
        "host-ok",
        &fresh_public_key(),
        Some("198.18.0.5:51820"),
    );
    assert_eq!(st, 200, "{body}");
    let credential = serde_json::from_str::<serde_json::Value>(&body).unwrap()["credential"]
        .as_str()
        .unwrap()
        .to_string();
    for (endpoint, class) in refused {
        let (st, body) = cp.curl(
            "PUT",
            "/v1/hosts/host-ok/endpoint",
            Some(&credential),
            Some(&format!(r#"{{"endpoint": "{endpoint}"}}"#)),
        );
        assert_eq!(
            (st, reason(&body).as_str()),
            (400, "bad_endpoint"),
            "report of {endpoint}: {body}"
        );
        assert!(body.contains(class), "report of {endpoint}: {body}");
    }
    let node = cp.node("host-ok").expect("host-ok is listed");
    assert_eq!(node["endpoint"], "198.18.0.5:51820", "{node}");

    // Every file under the state directory is 0600 (the directory 0700), whatever the umask;
    // so is the audit log; a file made wider by hand is narrowed at the next start.
    assert_private_tree(&cp.state_dir, 3);
    let audit_mode = std::fs::metadata(&cp.audit_log)
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(audit_mode & 0o777, 0o600, "audit log mode {audit_mode:o}");
    let store = cp.state_dir.join("store.jsonl");
    cp.stop();
    std::fs::set_permissions(&store, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::set_permissions(&cp.state_dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    cp.restart();
    assert_private_tree(&cp.state_dir, 3);
}

#[test]
fn the_audit_log_rotates_at_audit_max_bytes_keeping_audit_keep_files() {
    let Some(c) = Cluster::new("the_audit_log_rotates_at_audit_max_bytes_keeping_audit_keep_files")
    else {
        return;
    };
    let bridge = c.bridge();
    let max = 2048u64;
    let keep = 2;
    let cp = control_with(
        &c,
        &bridge,
        &format!("audit_max_bytes = {max}\naudit_keep = {keep}"),
    );
    // Each token created is one audit line (about 150 bytes): 200 lines rotate about 15 times.
    let bodies = vec![r#"{"ttl_secs": 60}"#.to_string(); 200];
    let answers = curl_many(
        &cp,
        &cp.ns,
        "POST",
        "/v1/tokens",
        &cp.admin_token(),
        &bodies,
        0,
    );
    assert!(answers.iter().all(|a| a.status == 200), "{answers:?}");
    let dir = cp.audit_log.parent().unwrap();
    let name = cp.audit_log.file_name().unwrap().to_str().unwrap();
    let mut files: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with(name))
        .collect();
    files.sort();
    assert_eq!(
        files,
        [name.to_string(), format!("{name}.1"), format!("{name}.2")],
        "audit_keep = {keep} old files beside the current one"
    );
    let mut total = 0;
    for f in &files {
        let path = dir.join(f);
        let meta = std::fs::metadata(&path).unwrap();
        assert!(meta.len() <= max, "{f} is {} bytes, over {max}", meta.len());
        assert_eq!(meta.permissions().mode() & 0o777, 0o600, "{f}");
        total += meta.len();
        // Rotation never splits a line.
        for line in std::fs::read_to_string(&path).unwrap().lines() {
            let v: serde_json::Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("{f}: a line that is not JSON ({e}): {line}"));
            assert_eq!(v["action"], "token_create", "{line}");
        }
    }
    assert!(
        total <= (keep + 1) * max,
        "{total} bytes in the audit files"
    );
    assert!(
        cp.log().contains("rotated the audit log"),
        "no rotation logged:\n{}",
        daemon::tail(&cp.log(), 20)
    );
}

#[test]
fn an_unauthenticated_flood_from_many_addresses_of_one_ipv6_64_is_limited_as_one() {
    let Some(c) = Cluster::new(
        "an_unauthenticated_flood_from_many_addresses_of_one_ipv6_64_is_limited_as_one",
    ) else {
        return;
    };
    let bridge = c.bridge();
    // The control plane has an address in each of two /64s; the flood has eight addresses in
    // the first, a ninth that sends nothing until the end, and one in the second.
    let ctl = "2001:db8:9:9::1";
    let cp = control_dual_stack(&c, &bridge, &["2001:db8:9:9::1/64", "2001:db8:9:a::1/64"]);
    let flood_ns = c.netns("flood6");
    bridge.plug(&flood_ns, host_ip(66));
    let sources: Vec<String> = (1..=8).map(|i| format!("2001:db8:9:9::a{i}")).collect();
    let fresh = "2001:db8:9:9:ffff::1";
    let other_64 = "2001:db8:9:a::a1";
    let mut with_len: Vec<String> = sources.iter().map(|s| format!("{s}/64")).collect();
    with_len.extend([format!("{fresh}/64"), format!("{other_64}/64")]);
    add_v6(
        &flood_ns,
        &with_len.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    // A host in the same /64 as the flood.
    let token = cp.token_create(&[]);
    let (credential, _) = cp.join_ok(&token, "host-six", &fresh_public_key());

    // 8 addresses x 15 requests with a bearer nobody holds: 120 refusals of one /64.
    let bogus = Some("not-a-credential");
    let nodes = ("GET", "/v1/nodes");
    let t = Instant::now();
    let answers: Vec<_> = sources
        .iter()
        .flat_map(|s| curl_from(&cp, &flood_ns, (s, ctl), nodes, bogus, 15))
        .collect();
    let flooded = t.elapsed();
    let refused = answers.iter().filter(|a| a.status == 401).count();
    let limited = answers.iter().filter(|a| a.status == 429).count();
    eprintln!("120 refused requests from 8 addresses in {flooded:?}: {refused} 401, {limited} 429");
    assert!(
        flooded < Duration::from_secs(9),
        "the flood took {flooded:?}, longer than the limiter's 10 s window"
    );
    assert_eq!(
        (refused, limited),
        (100, 20),
        "100 refusals per 10 s for the whole /64, then 429: {answers:?}"
    );
    // An address of the /64 that sent nothing yet is limited at once; one of another /64 is
    // not; the host's credential is still served from the limited /64.
    let first = curl_from(&cp, &flood_ns, (fresh, ctl), nodes, bogus, 1);
    assert_eq!(first[0].status, 429, "{first:?}");
    assert!(
        first[0]
            .retry_after
            .parse::<u64>()
            .is_ok_and(|s| (1..=10).contains(&s)),
        "{first:?}"
    );
    let other = curl_from(&cp, &flood_ns, (other_64, ctl), nodes, bogus, 1);
    assert_eq!(
        other[0].status, 401,
        "another /64 has its own window: {other:?}"
    );
    let poll = ("GET", "/v1/hosts/host-six/netmap?revision=0&wait=0");
    let served = curl_from(&cp, &flood_ns, (fresh, ctl), poll, Some(&credential), 1);
    assert_eq!(served[0].status, 200, "{served:?}");
    // The limited requests reached neither the audit log nor the control plane's lock: only
    // the 100 refusals (and the other /64's one) left a line.
    let audit = std::fs::read_to_string(&cp.audit_log).unwrap();
    let lines = |prefix: &str| {
        audit
            .lines()
            .filter(|l| l.contains(prefix) && l.contains("unauthenticated"))
            .count()
    };
    assert_eq!(
        (
            lines("\"from\":\"2001:db8:9:9:"),
            lines("\"from\":\"2001:db8:9:a:")
        ),
        (100, 1),
        "{audit}"
    );
}

#[test]
fn a_host_looping_forbidden_calls_gets_429_while_other_hosts_join_and_poll() {
    let Some(c) =
        Cluster::new("a_host_looping_forbidden_calls_gets_429_while_other_hosts_join_and_poll")
    else {
        return;
    };
    /// Forbidden calls the looper makes, on one connection.
    const CALLS: usize = 1500;
    let bridge = c.bridge();
    let cp = control_with(&c, &bridge, "");
    let token = cp.token_create(&["--reusable"]);
    let watcher = joined_host_prepared(&c, &bridge, &cp, "watch", 1, &token).started();
    // The looper: a host joined with curl, whose credential reads another host's netmap in a
    // loop on one connection.
    let loop_ns = c.netns("loop");
    bridge.plug(&loop_ns, host_ip(88));
    let (credential, _) = cp.join_ok(&token, "host-loop", &fresh_public_key());
    let looping = {
        let (cp, ns) = (cp.clone(), loop_ns.clone());
        std::thread::spawn(move || {
            let t = Instant::now();
            let path = "/v1/hosts/host-watch/netmap?revision=0&wait=0";
            let answers = curl_many(&cp, &ns, "GET", path, &credential, &[], CALLS);
            (answers, t.elapsed(), Instant::now())
        })
    };
    std::thread::sleep(Duration::from_millis(200));
    // Meanwhile a host joins (its agent polls and lists the watcher) and another joins by hand.
    let t = Instant::now();
    let (st, body) = cp.join_raw(&token, "host-quick", &fresh_public_key(), None);
    let quick = t.elapsed();
    let joined_at = Instant::now();
    assert_eq!(st, 200, "{body}");
    let late = joined_host_prepared(&c, &bridge, &cp, "late", 2, &token).started();
    assert_eventually(
        Duration::from_secs(10),
        "the late host and the watcher list each other",
        || control::lists_peer(&late, &watcher) && control::lists_peer(&watcher, &late),
    );
    let meshed = t.elapsed();
    let (answers, looped, loop_ended) = looping.join().unwrap();
    assert!(
        joined_at < loop_ended,
        "the join did not happen while the host looped"
    );
    let forbidden = answers.iter().filter(|a| a.status == 403).count();
    let limited: Vec<&str> = answers
        .iter()
        .filter(|a| a.status == 429)
        .map(|a| a.retry_after.as_str())
        .collect();
    eprintln!(
        "{CALLS} forbidden calls in {looped:?}: {forbidden} refused 403, {} answered 429; \
         meanwhile a join took {quick:?}, a started agent meshed in {meshed:?}",
        limited.len()
    );
    assert!(quick < Duration::from_secs(2), "a join took {quick:?}");
    assert_eq!(forbidden + limited.len(), answers.len(), "{answers:?}");
    assert!(
        answers[..20].iter().all(|a| a.status == 403),
        "the first 20 are refused 403: {answers:?}"
    );
    let refills = looped.as_secs() as usize;
    assert!(
        (20..=21 + refills).contains(&forbidden),
        "{forbidden} calls refused 403 in {looped:?}: the budget is 20 at once, then one per s"
    );
    assert!(
        limited.iter().all(|r| *r == "1"),
        "429s without a Retry-After of 1 s: {limited:?}"
    );
    // Only the refusals within the budget left an audit line.
    let audit = std::fs::read_to_string(&cp.audit_log).unwrap();
    let audited = audit
        .lines()
        .filter(|l| l.contains("host-loop") && l.contains("\"refused\":\"forbidden\""))
        .count();
    assert_eq!(audited, forbidden, "{audit}");
}
