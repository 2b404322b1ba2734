//! Workload labels, from `wgmesh attach --label` to the control plane: the agent reports its
//! whole workload list (names, addresses, labels) after every attach, relabel and detach, at
//! start, and once the control plane is back after an outage; `node list --json` shows what the
//! control plane holds. Attaching never waits for the control plane. Bad labels, the reserved
//! `host` label and a re-attach with another address are refused, by the CLI and by the agent.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use common::control::{control_and_joined_hosts, ControlPlane};
use common::netns::Netns;
use common::scenario::Host;
use common::*;
use serde_json::{json, Value};

/// How long a report may take to show in `node list` (the agent reports at once; a retry
/// backs off to at most 10 s).
const REPORTED: Duration = Duration::from_secs(15);

/// The workloads the control plane holds for `host`, as `node list --json` shows them.
fn held(cp: &ControlPlane, host: &str) -> Value {
    cp.node(host)
        .unwrap_or_else(|| panic!("node list has no {host}"))["workloads"]
        .clone()
}

/// Waits until the control plane holds exactly `want` for `host`.
fn assert_held(cp: &ControlPlane, host: &str, want: &Value, what: &str) {
    let mut last = Value::Null;
    let deadline = Instant::now() + REPORTED;
    while Instant::now() < deadline {
        last = held(cp, host);
        if last == *want {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("{what}: the control plane holds {last} for {host}, expected {want}");
}

/// One workload as `node list --json` shows it.
fn entry(w: &Netns, ip: &str, labels: Value) -> Value {
    json!({"name": w.name(), "ip": ip, "labels": labels})
}

/// `control.workloads_reported` of the agent's `status --json`.
fn reported(h: &Host) -> Option<bool> {
    h.agent.try_status().ok()?["control"]["workloads_reported"].as_bool()
}

/// The agent's `status --json` entry for `w`.
fn status_entry(h: &Host, w: &Netns) -> Value {
    let st = h.agent.status();
    st["workloads"]
        .as_array()
        .expect("workloads")
        .iter()
        .find(|e| e["netns"] == w.name())
        .cloned()
        .unwrap_or_else(|| panic!("status lists no {}: {st}", w.name()))
}

/// The interface index of `ifname` in `ns`.
fn ifindex(ns: &Netns, ifname: &str) -> String {
    let out = ns.run(&["ip", "-o", "link", "show", "dev", ifname]);
    out.split(':').next().unwrap_or_default().trim().to_owned()
}

/// One raw request on the agent's local API socket: its JSON answer.
fn local_api(h: &Host, request: &Value) -> Value {
    let mut s = UnixStream::connect(&h.agent.socket).expect("connect to the agent's socket");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut line = request.to_string();
    line.push('\n');
    s.write_all(line.as_bytes()).unwrap();
    let mut answer = String::new();
    BufReader::new(&s).read_line(&mut answer).unwrap();
    serde_json::from_str(&answer).unwrap_or_else(|e| panic!("answer {answer:?}: {e}"))
}

#[test]
fn labels_reach_the_control_plane_through_attach_relabel_detach_and_restart() {
    let Some(c) =
        Cluster::new("labels_reach_the_control_plane_through_attach_relabel_detach_and_restart")
    else {
        return;
    };
    let (_bridge, cp, _token, hosts) = control_and_joined_hosts(&c, &[], &["a"]);
    let a = &hosts[0];
    assert_held(&cp, "host-a", &json!([]), "before any attach");

    // Attach with labels: the control plane gets them.
    let web = c.netns("web");
    let cidr = a
        .agent
        .try_attach_with(&web, None, &["role=frontend", "tier=web"])
        .unwrap_or_else(|e| panic!("{e}"));
    let ip = ip_of(&cidr).to_owned();
    let labels = json!({"role": "frontend", "tier": "web"});
    assert_held(
        &cp,
        "host-a",
        &json!([entry(&web, &ip, labels.clone())]),
        "after attach",
    );
    assert_eq!(
        status_entry(a, &web)["labels"],
        labels,
        "status shows the labels"
    );
    assert_eventually(REPORTED, "status says the list is reported", || {
        reported(a) == Some(true)
    });
    let text = String::from_utf8(
        a.ns.exec(&[
            agent::BIN,
            "status",
            "--socket",
            a.agent.socket.to_str().unwrap(),
        ])
        .stdout,
    )
    .unwrap();
    assert!(text.contains("role=frontend,tier=web"), "status:\n{text}");

    // Attaching again with other labels relabels in place: same address, same veth.
    let veth = status_entry(a, &web)["host_ifname"]
        .as_str()
        .unwrap()
        .to_owned();
    let index = ifindex(&a.ns, &veth);
    let again = a
        .agent
        .try_attach_with(&web, None, &["role=backend"])
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(again, cidr, "a relabel keeps the address");
    let relabelled = json!([entry(&web, &ip, json!({"role": "backend"}))]);
    assert_held(&cp, "host-a", &relabelled, "after the relabel");
    assert_eq!(ifindex(&a.ns, &veth), index, "the veth was not made anew");
    assert!(
        web.run(&["ip", "-o", "-4", "addr", "show", "dev", "eth0"])
            .contains(&format!("inet {cidr}")),
        "the workload lost its address in the relabel"
    );

    // Refused, by the CLI: another address for an attached namespace, the reserved `host`
    // label, a label that breaks the rules. Nothing changes.
    let other = a
        .agent
        .try_attach_with(&web, Some("10.42.0.77"), &["role=backend"])
        .unwrap_err();
    assert!(
        other.contains(&format!("already attached with {cidr}"))
            && other.contains("detach it first"),
        "{other}"
    );
    let host = a
        .agent
        .try_attach_with(&web, None, &["host=host-b"])
        .unwrap_err();
    assert!(
        host.contains("--label: the label key \"host\" is reserved"),
        "{host}"
    );
    let bad = a
        .agent
        .try_attach_with(&web, None, &["role=front end"])
        .unwrap_err();
    assert!(
        bad.contains("label value \"front end\" contains ' '"),
        "{bad}"
    );
    // And by the agent itself: the local API is input too.
    let answer = local_api(
        a,
        &json!({"op": "attach", "netns": web.name(), "labels": {"host": "host-b"}}),
    );
    assert_eq!(answer["ok"], false, "{answer}");
    assert!(
        answer["error"]
            .as_str()
            .is_some_and(|e| e.starts_with("labels: the label key \"host\" is reserved")),
        "{answer}"
    );
    let fresh = c.netns("fresh");
    let answer = local_api(
        a,
        &json!({"op": "attach", "netns": fresh.name(), "labels": {"Bad Key": "x"}}),
    );
    assert_eq!(answer["ok"], false, "{answer}");
    assert!(
        answer["error"]
            .as_str()
            .is_some_and(|e| e.contains("\"Bad Key\"")),
        "{answer}"
    );
    assert!(
        !fresh.run(&["ip", "-o", "link"]).contains("eth0"),
        "a refused attach wired the namespace"
    );
    assert_eq!(
        a.agent.status()["workloads"].as_array().unwrap().len(),
        1,
        "a refused attach recorded a workload"
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        held(&cp, "host-a"),
        relabelled,
        "the refusals changed nothing"
    );

    // Detach: gone from the control plane.
    let out = a.ns.exec(&[
        agent::BIN,
        "detach",
        "--netns",
        web.name(),
        "--socket",
        a.agent.socket.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_held(&cp, "host-a", &json!([]), "after detach");

    // A restart reports the list again: the control plane is made to forget it while the
    // agent is stopped (with the host's own credential), and holds it again after the start.
    let db = c.netns("db");
    let cidr = a
        .agent
        .try_attach_with(&db, None, &["role=backend", "app=db"])
        .unwrap_or_else(|e| panic!("{e}"));
    let want = json!([entry(
        &db,
        ip_of(&cidr),
        json!({"app": "db", "role": "backend"})
    )]);
    assert_held(&cp, "host-a", &want, "after attaching db");
    a.agent.stop();
    let saved: Value = serde_json::from_str(
        &std::fs::read_to_string(a.agent.state_dir.join("control.json")).unwrap(),
    )
    .unwrap();
    let credential = saved["credential"].as_str().expect("credential").to_owned();
    let (st, body) = cp.curl(
        "PUT",
        "/v1/hosts/host-a/workloads",
        Some(&credential),
        Some(r#"{"workloads": []}"#),
    );
    assert_eq!(st, 200, "{body}");
    assert_eq!(held(&cp, "host-a"), json!([]));
    a.agent.start();
    assert_held(&cp, "host-a", &want, "after the agent's restart");
    assert_eq!(
        status_entry(a, &db)["labels"]["app"],
        "db",
        "labels survive a restart"
    );
    let audit = std::fs::read_to_string(&cp.audit_log).unwrap();
    assert!(
        audit
            .lines()
            .filter(|l| l.contains("\"workloads_report\""))
            .count()
            >= 5,
        "every changed report is audited:\n{audit}"
    );
}

#[test]
fn attach_while_the_control_plane_is_down_is_reported_once_it_is_back() {
    let Some(c) =
        Cluster::new("attach_while_the_control_plane_is_down_is_reported_once_it_is_back")
    else {
        return;
    };
    let (_bridge, cp, _token, hosts) = control_and_joined_hosts(&c, &[], &["a"]);
    let a = &hosts[0];
    cp.stop();
    assert_eventually(
        Duration::from_secs(35),
        "host-a sees the control plane down",
        || {
            a.agent
                .try_status()
                .ok()
                .and_then(|s| s["control"]["connected"].as_bool())
                == Some(false)
        },
    );

    // Local first: the attach neither waits for nor fails on the control plane.
    let w = c.netns("app");
    let t0 = Instant::now();
    let cidr = a
        .agent
        .try_attach_with(&w, None, &["app=secure-app"])
        .unwrap_or_else(|e| panic!("{e}"));
    let took = t0.elapsed();
    assert!(
        took < Duration::from_secs(5),
        "attach took {took:?} with the control plane down"
    );
    assert_eq!(status_entry(a, &w)["labels"], json!({"app": "secure-app"}));
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        reported(a),
        Some(false),
        "status: not reported while the control plane is down"
    );

    cp.restart();
    let want = json!([entry(&w, ip_of(&cidr), json!({"app": "secure-app"}))]);
    assert_held(&cp, "host-a", &want, "once the control plane is back");
    assert_eventually(REPORTED, "status says the list is reported", || {
        reported(a) == Some(true)
    });
}
