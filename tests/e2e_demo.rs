//! The README's first command: the local multi-host demo runs through, every workload reaches
//! every workload on the other hosts, and it leaves no namespace behind.

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
    // The demo's namespaces are named after its PID; none may be left.
    let after = Command::new("ip").args(["netns", "list"]).output().unwrap();
    let after = String::from_utf8_lossy(&after.stdout);
    let before = String::from_utf8_lossy(&before.stdout);
    for line in after.lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        assert!(
            !name.starts_with("wgd") || before.contains(name),
            "the demo left namespace {name} behind"
        );
    }
}
