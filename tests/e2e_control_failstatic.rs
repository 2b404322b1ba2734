//! Fail-static: with the control plane stopped, traffic between joined hosts keeps flowing, and
//! an agent restarted meanwhile comes back from its cached netmap. Once the control plane runs
//! again, a new host's join reaches everyone, the restarted agent included.

mod common;

use std::time::{Duration, Instant};

use common::control::{
    assert_list_each_other, control_and_joined_hosts, control_on_bridge, joined_host_prepared,
    lists_peer,
};
use common::scenario::{assert_all_ping, assert_pings, workload, workloads, Host};
use common::*;

/// `control.connected` of the host's `status --json`.
fn connected(h: &Host) -> Option<bool> {
    h.agent.try_status().ok()?["control"]["connected"].as_bool()
}

#[test]
fn traffic_survives_control_plane_outage_and_agent_restart() {
    let Some(c) = Cluster::new("traffic_survives_control_plane_outage_and_agent_restart") else {
        return;
    };
    let (bridge, cp, token, hosts) =
        control_and_joined_hosts(&c, &["--reusable"], &["a", "b", "c"]);
    assert_list_each_other(&hosts, Duration::from_secs(10));
    let wls = workloads(&c, &hosts);
    assert_all_ping(&wls, Duration::from_secs(15));
    let b = &hosts[1];
    assert!(
        b.agent.state_dir.join("netmap.json").exists(),
        "host-b has no cached netmap in {}",
        b.agent.state_dir.display()
    );

    // The control plane goes away.
    let st = cp.stop().expect("control plane exit status");
    assert!(
        !cp.is_running(),
        "the control plane is still running after SIGTERM"
    );
    eprintln!("control plane stopped ({st})");
    // Status says so (README: `control.connected` false = running on the last netmap).
    for h in &hosts {
        assert_eventually(
            Duration::from_secs(10),
            &format!("{}'s status shows the control plane link down", h.ns.name()),
            || connected(h) == Some(false),
        );
    }
    // Traffic keeps flowing: a sustained ping loses at most one packet.
    let (sent, got) = ping_count(&wls[0].0, &wls[2].1, 20, "0.1");
    assert!(
        got + 1 >= sent,
        "with the control plane down, {got} of {sent} pings a -> c came back"
    );
    assert_all_ping(&wls, Duration::from_secs(5));

    // host-b restarts while the control plane is down: it starts from its cached netmap.
    b.agent.stop();
    assert!(!b.agent.is_running());
    let t0 = Instant::now();
    b.agent.start();
    eprintln!(
        "host-b restarted without a control plane: status answered after {:?}",
        t0.elapsed()
    );
    assert_eq!(b.agent.subnet(), "10.42.1.0/24", "host-b's cached subnet");
    for o in [&hosts[0], &hosts[2]] {
        assert!(
            lists_peer(b, o),
            "host-b restarted from its cached netmap does not list {}: {}",
            o.ns.name(),
            b.agent.status()
        );
    }
    let st = b.agent.status();
    let wl = st["workloads"].as_array().expect("workloads");
    assert!(
        wl.iter().any(|w| w["netns"] == wls[1].0.name()),
        "host-b's workload is not wired again after the restart: {st}"
    );
    assert_all_ping(&wls, Duration::from_secs(15));
    assert!(
        b.agent.is_running(),
        "host-b gave up without a control plane"
    );

    // The control plane comes back; a new host joins and everyone learns it, host-b included
    // (which reconnects with its credential, not a new join).
    cp.restart();
    let t0 = Instant::now();
    // Reconnecting shows in status within the retry backoff (at most 10 s), not after a long
    // poll's 25 s.
    for h in &hosts {
        assert_eventually(
            Duration::from_secs(13),
            &format!(
                "{}'s status shows the control plane link up again",
                h.ns.name()
            ),
            || connected(h) == Some(true),
        );
    }
    eprintln!(
        "all links up {:?} after the control plane's restart",
        t0.elapsed()
    );
    let t0 = Instant::now();
    let d = joined_host_prepared(&c, &bridge, &cp, "d", 4, &token).started();
    let joined = t0.elapsed();
    assert_eq!(d.agent.subnet(), "10.42.3.0/24");
    let t1 = Instant::now();
    assert_eventually(
        Duration::from_secs(30),
        "every host lists host-d after the control plane's restart",
        || hosts.iter().all(|h| lists_peer(h, &d)),
    );
    eprintln!(
        "after the control plane's restart: host-d joined in {joined:?}; all 3 others listed \
         it {:?} later",
        t1.elapsed()
    );
    // Their links are up again: the long poll that brought host-d succeeded.
    for h in &hosts {
        assert_eq!(
            connected(h),
            Some(true),
            "{}'s status after a netmap from the restarted control plane: {}",
            h.ns.name(),
            h.agent.status()["control"]
        );
    }
    let (wd, ipd) = workload(&c, &d, "wd");
    for (w, ip) in &wls {
        assert_pings(w, &ipd, Duration::from_secs(15));
        assert_pings(&wd, ip, Duration::from_secs(5));
    }
    let names = cp.node_names();
    assert_eq!(names, ["host-a", "host-b", "host-c", "host-d"], "node list");
    // host-b did not join again under a new identity: same key, same subnet.
    let nb = cp.node("host-b").unwrap();
    assert_eq!(nb["public_key"], b.agent.public_key());
    assert_eq!(nb["subnet"], "10.42.1.0/24");
    assert_eventually(
        Duration::from_secs(30),
        "host-b is online again in node list (it polls the restarted control plane)",
        || cp.node("host-b").is_some_and(|n| n["online"] == true),
    );
}

/// An agent whose control plane is unreachable and that never joined keeps retrying, and joins
/// as soon as the control plane is up.
#[test]
fn agent_that_never_joined_waits_for_the_control_plane() {
    let Some(c) = Cluster::new("agent_that_never_joined_waits_for_the_control_plane") else {
        return;
    };
    let (bridge, cp) = control_on_bridge(&c, ControlSpec::default());
    let token = cp.token_create(&[]);
    cp.stop();
    let h = joined_host_prepared(&c, &bridge, &cp, "a", 1, &token);
    h.agent.start_no_wait();
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        h.agent.is_running(),
        "the agent gave up while the control plane was unreachable:\n{}",
        h.agent.log()
    );
    assert!(
        h.agent.try_status().is_err(),
        "the agent answers status without ever having had a netmap: {:?}",
        h.agent.try_status()
    );
    // A reload (systemd's ExecReload) while it waits is not fatal.
    h.agent.reload();
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        h.agent.is_running(),
        "SIGHUP killed the agent while it waited for the control plane:\n{}",
        h.agent.log()
    );
    cp.restart();
    assert!(
        h.agent.wait_ready(Duration::from_secs(30)),
        "the agent did not join within 30 s of the control plane's start:\n{}",
        h.agent.log()
    );
    assert_eq!(h.agent.subnet(), "10.42.0.0/24");
    assert_eq!(cp.node_names(), ["host-a"]);
}
