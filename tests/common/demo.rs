//! What both demo scripts must leave behind: nothing.

use std::process::Output;

/// Asserts that the demo whose output is `stdout` removed its directory (it names it as the
/// folder of `admin.toml`), left no process whose command line names it, and no namespace
/// whose name starts with `prefix` that was not in `before` (`ip netns list` before it ran).
pub fn assert_left_nothing(stdout: &str, before: &Output, prefix: &str) {
    let dir = stdout
        .split("admin.toml in ")
        .nth(1)
        .and_then(|r| r.split("/control)").next())
        .unwrap_or_else(|| panic!("the demo did not say where its files are:\n{stdout}"));
    assert!(
        dir.starts_with("/tmp/") && !std::path::Path::new(dir).exists(),
        "the demo left {dir} behind"
    );
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(cmd) = std::fs::read(entry.path().join("cmdline")) {
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            assert!(!cmd.contains(dir), "the demo left a process running: {cmd}");
        }
    }
    let after = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .unwrap();
    let after = String::from_utf8_lossy(&after.stdout);
    let before = String::from_utf8_lossy(&before.stdout);
    for line in after.lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        assert!(
            !name.starts_with(prefix) || before.contains(name),
            "the demo left namespace {name} behind"
        );
    }
}
