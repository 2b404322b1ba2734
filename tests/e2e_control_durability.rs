//! Durability of the embedded store: a burst of concurrent joins, the control plane killed with
//! SIGKILL in the middle of it; after a restart every join that was acknowledged (200) is in
//! `node list` with its key and subnet, and no two hosts share a subnet.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::control::{control_on_bridge, fresh_public_key};
use common::*;
use serde_json::Value;

/// Joins offered in all (the burst is cut by the kill long before they are all done).
const JOINS: usize = 80;
/// Concurrent clients.
const CLIENTS: usize = 8;
/// Acknowledged joins to wait for before the kill.
const KILL_AFTER: usize = 15;

#[test]
fn acknowledged_joins_survive_kill9() {
    let Some(c) = Cluster::new("acknowledged_joins_survive_kill9") else {
        return;
    };
    let (_bridge, cp) = control_on_bridge(&c, ControlSpec::default());
    let token = cp.token_create(&["--reusable"]);
    let keys: Vec<String> = (0..JOINS).map(|_| fresh_public_key()).collect();

    let next = AtomicUsize::new(0);
    // name -> (public key, subnet from the join's netmap)
    let acked: Mutex<BTreeMap<String, (String, String)>> = Mutex::new(BTreeMap::new());
    let unanswered = AtomicUsize::new(0);
    let refused: Mutex<Vec<(String, u16, String)>> = Mutex::new(Vec::new());
    let t0 = Instant::now();
    let killed_at = std::thread::scope(|s| {
        for _ in 0..CLIENTS {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= JOINS {
                    break;
                }
                let name = format!("burst-{i:02}");
                let ep = format!("198.18.1.{}:51820", i + 1);
                let (st, body) = cp.join_raw(&token, &name, &keys[i], Some(&ep));
                match st {
                    200 => {
                        let v: Value = serde_json::from_str(&body).unwrap_or_else(|e| {
                            panic!("join {name}: 200 with a body that is not JSON ({e}): {body}")
                        });
                        let subnet = v["netmap"]["host"]["subnet"]
                            .as_str()
                            .unwrap_or_else(|| panic!("join {name}: no netmap.host.subnet: {body}"))
                            .to_string();
                        acked
                            .lock()
                            .unwrap()
                            .insert(name, (keys[i].clone(), subnet));
                    }
                    0 => {
                        unanswered.fetch_add(1, Ordering::SeqCst);
                    }
                    _ => refused.lock().unwrap().push((name, st, body)),
                }
            });
        }
        let enough = wait_until(Duration::from_secs(60), || {
            acked.lock().unwrap().len() >= KILL_AFTER
        });
        assert!(
            enough,
            "only {} joins acknowledged in 60 s",
            acked.lock().unwrap().len()
        );
        cp.kill9();
        t0.elapsed()
    });
    let acked = acked.into_inner().unwrap();
    let refused = refused.into_inner().unwrap();
    let unanswered = unanswered.into_inner();
    eprintln!(
        "burst: {} joins acknowledged, {unanswered} unanswered (killed after {killed_at:?}), {} \
         refused",
        acked.len(),
        refused.len()
    );
    assert!(
        refused.is_empty(),
        "joins refused with an HTTP status while the control plane ran: {refused:?}"
    );
    assert!(
        acked.len() < JOINS,
        "all {JOINS} joins finished before the kill: the kill did not land in the burst"
    );
    let subnets: BTreeSet<&String> = acked.values().map(|(_, s)| s).collect();
    assert_eq!(
        subnets.len(),
        acked.len(),
        "two acknowledged joins got the same subnet: {acked:?}"
    );

    let ca = std::fs::read(cp.ca_pem()).expect("ca.pem");
    let admin = cp.admin_token();
    cp.restart();
    // A restart keeps the CA (joined agents pin it) and the admin token.
    assert_eq!(
        std::fs::read(cp.ca_pem()).unwrap(),
        ca,
        "ca.pem changed on restart"
    );
    assert_eq!(
        cp.admin_token(),
        admin,
        "the admin token changed on restart"
    );
    let nodes = cp.node_list_json();
    let by_name: BTreeMap<String, &Value> = nodes
        .iter()
        .map(|n| (n["name"].as_str().unwrap_or("?").to_string(), n))
        .collect();
    for (name, (key, subnet)) in &acked {
        let n = by_name.get(name).unwrap_or_else(|| {
            panic!(
                "acknowledged join {name} is missing after kill -9 and restart; node list has {} \
                 nodes: {:?}",
                nodes.len(),
                by_name.keys().collect::<Vec<_>>()
            )
        });
        assert_eq!(n["public_key"], key.as_str(), "{name}: {n}");
        assert_eq!(n["subnet"], subnet.as_str(), "{name}: {n}");
    }
    let all: Vec<&str> = nodes.iter().filter_map(|n| n["subnet"].as_str()).collect();
    let distinct: BTreeSet<&str> = all.iter().copied().collect();
    assert_eq!(
        distinct.len(),
        nodes.len(),
        "node list after restart has shared or missing subnets: {nodes:?}"
    );
    for s in &all {
        assert!(s.starts_with("10.42.") && s.ends_with("/24"), "subnet {s}");
    }
    eprintln!(
        "after restart: node list has {} nodes ({} acknowledged + {} joined but unacknowledged)",
        nodes.len(),
        acked.len(),
        nodes.len() - acked.len()
    );
    // The store goes on: a new join gets a subnet nobody has.
    let (_, netmap) = cp.join_ok(&token, "after-restart", &fresh_public_key());
    let s = netmap["host"]["subnet"]
        .as_str()
        .expect("subnet")
        .to_string();
    assert!(
        !distinct.contains(s.as_str()),
        "the join after the restart got {s}, which another host holds"
    );
}

#[test]
fn a_second_control_plane_on_the_same_state_dir_refuses_to_start() {
    let Some(c) = Cluster::new("a_second_control_plane_on_the_same_state_dir_refuses_to_start")
    else {
        return;
    };
    let (_bridge, cp) = control_on_bridge(&c, ControlSpec::default());
    let nodes_before = cp.node_names();
    // The same state_dir, another port (so the port is not what stops it).
    let config = std::fs::read_to_string(&cp.config_path)
        .unwrap()
        .replace("0.0.0.0:7443", "0.0.0.0:7444");
    let dir = tempfile::tempdir().unwrap();
    let second = dir.path().join("control.toml");
    std::fs::write(&second, config).unwrap();
    let out = cp
        .ns
        .exec(&[agent::BIN, "control", "--config", second.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "a second control plane started:\n{stderr}"
    );
    assert!(
        stderr.contains("another `wgmesh control` uses this state directory"),
        "it does not say why:\n{stderr}"
    );
    // The first one is untouched and still answers.
    assert!(cp.is_running());
    assert_eq!(cp.node_names(), nodes_before);
    // Once the first has stopped (even killed), the directory is free again.
    cp.kill9();
    cp.restart();
    assert_eq!(cp.node_names(), nodes_before);
}
