//! Key rotation through the control plane: `wgmesh key rotate --all` three times while a
//! workload pings another host's every millisecond and streams to it (no ping lost, every
//! stream intact); afterwards no netmap holds an old key and a peer holding a host's old private
//! key cannot handshake. The automatic interval rotates keys on schedule. A control plane killed
//! with -9 in the middle of a rotation finishes it after its restart; an agent killed with -9 in
//! the middle comes back with both keys and ends with the registered one.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::control::{control_with_hosts as setup, host_keys as keys, wait_epoch, ControlPlane};
use common::scenario::{assert_pings, workload};
use common::*;
use nix::sys::signal::Signal;
use serde_json::Value;

fn public_keys_in(netmap_file: &std::path::Path) -> Vec<String> {
    let text = std::fs::read_to_string(netmap_file).unwrap_or_default();
    let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    let netmap = v.get("netmap").unwrap_or(&v);
    let mut keys = vec![netmap["host"]["public_key"]
        .as_str()
        .unwrap_or("")
        .to_owned()];
    for p in netmap["peers"].as_array().into_iter().flatten() {
        for k in p["public_keys"].as_array().into_iter().flatten() {
            keys.push(k.as_str().unwrap_or("").to_owned());
        }
    }
    keys
}

#[test]
fn rotate_all_three_times_loses_no_packet_and_old_keys_are_gone() {
    let Some(c) = Cluster::new("rotate_all_three_times_loses_no_packet") else {
        return;
    };
    let (_bridge, cp, hosts) = setup(&c, &[], &["a", "b", "c"]);
    let (wa, ipa) = workload(&c, &hosts[0], "wa");
    let (wb, _) = workload(&c, &hosts[1], "wb");
    assert_pings(&wb, &ipa, Duration::from_secs(15));
    let b_old_private = std::fs::read_to_string(&hosts[1].agent.key_file).unwrap();
    let mut old_keys: Vec<String> = keys(&cp).values().map(|k| k.1.clone()).collect();

    let stop = AtomicBool::new(false);
    let mut rounds = Vec::new();
    let (pings, streams) = std::thread::scope(|s| {
        let traffic = s.spawn(|| pings_and_streams_until(&stop, &wb, &wa, &ipa));
        std::thread::sleep(Duration::from_secs(1));
        for epoch in 1..=3 {
            let t0 = Instant::now();
            let out = cp.cli_ok(&["key", "rotate", "--all"]);
            assert!(out.contains("host-a"), "{out}");
            wait_epoch(&cp, epoch, Duration::from_secs(60));
            rounds.push(t0.elapsed());
            old_keys.extend(keys(&cp).values().map(|k| k.1.clone()));
        }
        std::thread::sleep(Duration::from_secs(1));
        stop.store(true, Ordering::Relaxed);
        traffic.join().unwrap()
    });
    eprintln!(
        "rotate --all (3 hosts): {:?}; pings {}/{} answered; {streams} intact streams",
        rounds, pings.1, pings.0
    );
    assert!(pings.0 > 3000 && streams >= 1, "{pings:?} {streams}");
    assert_eq!(pings.1, pings.0, "pings lost across the rotations");

    // Only the current keys are left: in every host's netmap and status.
    let current: Vec<String> = keys(&cp).values().map(|k| k.1.clone()).collect();
    old_keys.retain(|k| !current.contains(k));
    assert_eq!(
        old_keys.len(),
        9,
        "three keys retired per host: {old_keys:?}"
    );
    for h in &hosts {
        assert_eventually(Duration::from_secs(5), "no old key in the netmap", || {
            let held = public_keys_in(&h.agent.state_dir.join("netmap.json"));
            !held.iter().any(|k| old_keys.contains(k)) && held.len() == 3
        });
        // The old tunnels drain for a few seconds, then go.
        assert_eventually(
            Duration::from_secs(10),
            "only current keys in status",
            || {
                let st = h.agent.status();
                st.get("key_rotation").is_none()
                    && st["peers"].as_array().unwrap().iter().all(|p| {
                        !old_keys.contains(&p["public_key"].as_str().unwrap().to_owned())
                            && p["key_epoch"] == 3
                            && p["lanes"].as_array().map(Vec::len) == Some(1)
                    })
            },
        );
    }
    assert_pings(&wb, &ipa, Duration::from_secs(5));

    // Someone holding B's first private key (stolen, say) cannot handshake with A any more.
    let thief_ns = c.netns("thief");
    _bridge.plug(&thief_ns, std::net::Ipv4Addr::new(198, 18, 0, 99));
    let thief = c.wggo(&thief_ns, 51820);
    let key_file = thief_ns.name().to_owned() + "-old.key";
    let path = std::env::temp_dir().join(key_file);
    agent::write_private(&path, &b_old_private);
    thief.wg(&["set", &thief.ifname, "private-key", path.to_str().unwrap()]);
    let _ = std::fs::remove_file(&path);
    let a_key = hosts[0].agent.status()["public_key"]
        .as_str()
        .unwrap()
        .to_owned();
    thief.set_peer(&a_key, &["10.42.0.0/24"], Some("198.18.0.1:51820"), None);
    thief.addr_add(&format!(
        "{}/24",
        hosts[1].agent.subnet().replace(".0/24", ".200")
    ));
    thief.up();
    thief.route_add("10.42.0.0/24");
    assert!(
        !wait_until(Duration::from_secs(4), || ping(&thief_ns, &ipa)),
        "B's retired key still reaches A"
    );
    assert_eq!(
        thief.latest_handshake(&a_key),
        0,
        "a handshake with a retired key"
    );
}

#[test]
fn the_interval_rotates_keys_on_schedule_and_traffic_flows() {
    let Some(c) = Cluster::new("the_interval_rotates_keys_on_schedule") else {
        return;
    };
    let (_bridge, cp, hosts) = setup(&c, &["key_rotation_interval = \"8s\""], &["a", "b"]);
    let (wa, ipa) = workload(&c, &hosts[0], "wa");
    let (wb, _) = workload(&c, &hosts[1], "wb");
    assert_pings(&wb, &ipa, Duration::from_secs(15));
    let stop = AtomicBool::new(false);
    let t0 = Instant::now();
    let (pings, _) = std::thread::scope(|s| {
        let traffic = s.spawn(|| pings_and_streams_until(&stop, &wb, &wa, &ipa));
        // Twice each, one host at a time: epoch 2 everywhere within about two intervals.
        assert_eventually(
            Duration::from_secs(45),
            "two rotations of every host",
            || keys(&cp).values().all(|(e, _, _)| *e >= 2),
        );
        stop.store(true, Ordering::Relaxed);
        traffic.join().unwrap()
    });
    let took = t0.elapsed();
    eprintln!(
        "interval 8s: two rotations of both hosts in {took:?}; pings {}/{}",
        pings.1, pings.0
    );
    assert!(
        took >= Duration::from_secs(14),
        "rotated faster than the interval: {took:?}"
    );
    assert_eq!(pings.1, pings.0, "pings lost across the rotations");
    let audit = std::fs::read_to_string(&cp.audit_log).unwrap();
    assert!(
        audit.contains("key_retire"),
        "the audit log has the rotations"
    );
}

#[test]
fn a_rotation_survives_a_killed_control_plane_and_a_killed_agent() {
    let Some(c) = Cluster::new("a_rotation_survives_kills") else {
        return;
    };
    let (_bridge, cp, hosts) = setup(&c, &[], &["a", "b", "c"]);
    let (wa, ipa) = workload(&c, &hosts[0], "wa");
    let (wb, ipb) = workload(&c, &hosts[1], "wb");
    let (wc, _) = workload(&c, &hosts[2], "wc");
    assert_pings(&wb, &ipa, Duration::from_secs(15));
    assert_pings(&wc, &ipa, Duration::from_secs(15));
    assert_pings(&wc, &ipb, Duration::from_secs(15));

    // C's agent frozen with a session to A: A's rotation waits for C to move (announced).
    hosts[2].agent.signal(Signal::SIGSTOP);
    cp.cli_ok(&["key", "rotate", "--node", "host-a"]);
    assert_eventually(Duration::from_secs(20), "A's new key announced", || {
        keys(&cp)["host-a"].2.as_deref() == Some("announced")
    });
    cp.kill9();
    assert_pings(&wb, &ipa, Duration::from_secs(5));
    cp.restart();
    hosts[2].agent.signal(Signal::SIGCONT);
    wait_epoch_of(&cp, "host-a", 1);
    assert_pings(&wb, &ipa, Duration::from_secs(10));
    assert_pings(&wc, &ipa, Duration::from_secs(10));
    let a_key = keys(&cp)["host-a"].1.clone();
    assert_eq!(hosts[0].agent.status()["public_key"], a_key.as_str());

    // B is killed with -9 while its rotation waits for C: it comes back with both keys, and
    // ends with the one the control plane registered.
    hosts[2].agent.signal(Signal::SIGSTOP);
    cp.cli_ok(&["key", "rotate", "--node", "host-b"]);
    assert_eventually(Duration::from_secs(20), "B's new key announced", || {
        keys(&cp)["host-b"].2.as_deref() == Some("announced")
    });
    let b_new = hosts[1].agent.status()["public_key"]
        .as_str()
        .unwrap()
        .to_owned();
    hosts[1].agent.kill9();
    hosts[1].agent.restart();
    assert!(hosts[1].agent.wait_ready(Duration::from_secs(15)));
    let st = hosts[1].agent.status();
    assert_eq!(st["public_key"], b_new.as_str(), "{st}");
    assert!(
        st["key_rotation"]["retiring_public_key"].is_string(),
        "{st}"
    );
    hosts[2].agent.signal(Signal::SIGCONT);
    wait_epoch_of(&cp, "host-b", 1);
    assert_eq!(keys(&cp)["host-b"].1, b_new);
    assert_eventually(Duration::from_secs(10), "B retired its old key", || {
        hosts[1].agent.status().get("key_rotation").is_none()
    });
    let on_disk = std::fs::read_to_string(&hosts[1].agent.key_file).unwrap();
    assert_eq!(keys::wg_pubkey(on_disk.trim()), b_new);
    assert!(!hosts[1].agent.state_dir.join("key-rotation.json").exists());
    assert_pings(&wa, &ipb, Duration::from_secs(10));
    assert_pings(&wc, &ipb, Duration::from_secs(10));
}

fn wait_epoch_of(cp: &ControlPlane, host: &str, epoch: u64) {
    assert_eventually(
        Duration::from_secs(60),
        &format!("{host} at key epoch {epoch}"),
        || {
            keys(cp)
                .get(host)
                .is_some_and(|(e, _, state)| *e == epoch && state.is_none())
        },
    );
}
