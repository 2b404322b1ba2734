//! The README's first command: the local multi-host demo runs through (a control plane, hosts
//! that join it with one token), every workload reaches every workload on the other hosts, and
//! it leaves no namespace, process or file behind.

mod common;

use std::process::Command;

#[test]
fn demo_runs_and_cleans_up() {
    if !common::can_run("demo_runs_and_cleans_up") {
        return;
    }
    let before = Command::new("ip").args(["netns", "list"]).output().unwrap();
    let out = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/demo.sh"))
        .arg("--no-wait")
        .env("WGMESH_BIN", env!("CARGO_BIN_EXE_wgmesh"))
        .output()
        .expect("run scripts/demo.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "demo failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    assert!(
        stdout.contains("cross-host pings: 24 ok, 0 failed"),
        "{stdout}"
    );
    assert!(
        stdout.contains("latest handshake"),
        "status missing:\n{stdout}"
    );
    assert!(
        stdout.contains("control plane: https://198.18.0.254:7443")
            && stdout.contains("agents: 3 joined with the token"),
        "the demo did not run a control plane and join the agents to it:\n{stdout}"
    );
    // `wgmesh node list`: every host, online, each with its own subnet of 10.42.0.0/16.
    let mut subnets = Vec::new();
    for h in ["h1", "h2", "h3"] {
        let line = stdout
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("{h} ")))
            .unwrap_or_else(|| panic!("node list has no line for {h}:\n{stdout}"));
        let subnet = line
            .split_whitespace()
            .nth(1)
            .filter(|s| s.starts_with("10.42.") && s.ends_with("/24"))
            .unwrap_or_else(|| panic!("node list line for {h} has no 10.42.x.0/24: {line}"));
        assert!(line.contains("online"), "{h} is not online: {line}");
        subnets.push(subnet.to_string());
    }
    subnets.sort();
    subnets.dedup();
    assert_eq!(subnets.len(), 3, "hosts share a subnet:\n{stdout}");
    // Its directory (state, configs, logs) is gone, and no process of it is left.
    common::demo::assert_left_nothing(&stdout, &before, "wgd");
}
