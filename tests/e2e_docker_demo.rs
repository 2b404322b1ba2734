//! The README's Docker demo: `scripts/demo-docker.sh` runs the main demo with a real dockerd per
//! host (the agents create `appnet`, two labelled containers per host), every container reaches
//! every container on the other hosts, and it leaves no namespace, process or file behind.

mod common;

use std::process::Command;

#[test]
fn docker_demo_runs_and_cleans_up() {
    if !common::dockerd::can_run_docker("docker_demo_runs_and_cleans_up") {
        return;
    }
    let before = Command::new("ip").args(["netns", "list"]).output().unwrap();
    let out = Command::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/scripts/demo-docker.sh"
    ))
    .arg("--no-wait")
    .env("WGMESH_BIN", env!("CARGO_BIN_EXE_wgmesh"))
    .output()
    .expect("run scripts/demo-docker.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the Docker demo failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    for want in [
        "agents: 3 joined with the token",
        "dockerd: one per host",
        "docker network: appnet (driver wgmesh, IPAM wgmesh) on every host",
        "cross-host pings: 24 ok, 0 failed",
        "latest handshake",
        "stopped 3 dockerd",
    ] {
        assert!(stdout.contains(want), "no {want:?} in:\n{stdout}\n{stderr}");
    }
    // Six containers, each with an address of 10.42.0.0/16.
    let line = stdout
        .lines()
        .find(|l| l.starts_with("==> containers: "))
        .unwrap_or_else(|| panic!("no containers line:\n{stdout}"));
    let ips: Vec<&str> = line
        .split_whitespace()
        .filter_map(|w| w.split_once('=').map(|(_, ip)| ip))
        .filter(|ip| ip.starts_with("10.42."))
        .collect();
    assert_eq!(ips.len(), 6, "{line}");
    // Its directory is gone, and no process of it is left.
    common::demo::assert_left_nothing(&stdout, &before, "wgk");
}
