//! Secrets stay with their process and their owner: the agent and the control plane are not
//! dumpable (killed by SIGABRT with no core-file limit, neither writes a core);
//! every file the agent keeps in its state directory is 0600; a join-token file others may
//! read is refused; a low-order public key (such as all zeros) is refused in agent.toml with
//! its position, and at join with a clear 400.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::process::Command;
use std::time::Duration;

use common::control::{control_on_bridge, joined_host_prepared, ControlSpec, CONTROL_IP};
use common::files::assert_private_tree;
use common::scenario::workload;
use common::*;
use nix::sys::signal::Signal;

/// The all-zero public key, the simplest low-order point.
const ZERO_KEY: &str = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";

/// Whether a process killed by SIGABRT dumped core: its core-file limit is raised (with
/// `prlimit`), it is sent SIGABRT, and its wait status says whether the kernel wrote a core.
/// A core file it wrote (into its working directory, as `core_pattern` here says) is removed.
fn dumps_core(who: &str, daemon: &Daemon) -> bool {
    let pid = daemon.pid().unwrap_or_else(|| panic!("{who} has no pid"));
    let cwd = std::fs::read_link(format!("/proc/{pid}/cwd")).expect("the process's cwd");
    let core = cwd.join("core");
    let existed = core.exists();
    let st = Command::new("prlimit")
        .args(["--core=unlimited", "--pid", &pid.to_string()])
        .status()
        .expect("run prlimit (util-linux)");
    assert!(st.success(), "prlimit --pid {pid}: {st}");
    daemon.signal(Signal::SIGABRT);
    let st = daemon.stop().unwrap_or_else(|| panic!("{who} did not end"));
    assert_eq!(
        st.signal(),
        Some(libc::SIGABRT),
        "{who} ended otherwise: {st}"
    );
    if !existed {
        let _ = std::fs::remove_file(&core);
    }
    st.core_dumped()
}

/// The same check on a process known to be dumpable, so that a "no" above means something:
/// `sleep` under an unlimited core-file limit, sent SIGABRT once it runs (`prlimit` exec'd it),
/// must end with a core dumped, wherever `core_pattern` sends cores. Where the pattern is a
/// plain file name, the file must be in its working directory too.
fn a_dumpable_process_dumps_core() -> bool {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut child = Command::new("prlimit")
        .args(["--core=unlimited", "sleep", "30"])
        .current_dir(dir.path())
        .spawn()
        .expect("spawn sleep");
    let comm = format!("/proc/{}/comm", child.id());
    let running = wait_until(Duration::from_secs(10), || {
        std::fs::read_to_string(&comm).is_ok_and(|c| c.trim() == "sleep")
    });
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, Signal::SIGABRT).expect("kill sleep");
    let st = child.wait().expect("wait sleep");
    assert!(running, "prlimit did not exec sleep within 10 s");
    let pattern = std::fs::read_to_string("/proc/sys/kernel/core_pattern").expect("core_pattern");
    let pattern = pattern.trim();
    // "|helper" pipes the core to a program (systemd-coredump); a path with '/' or '%' writes
    // it elsewhere or under another name. Only a bare "core" lands in the working directory.
    let in_cwd = pattern == "core";
    st.core_dumped() && (!in_cwd || dir.path().join("core").exists())
}

#[test]
fn daemons_are_not_dumpable_and_agent_state_files_are_private() {
    let Some(c) = Cluster::new("daemons_are_not_dumpable_and_agent_state_files_are_private") else {
        return;
    };
    let (bridge, cp) = control_on_bridge(&c, ControlSpec::default());
    let token = cp.token_create(&[]);
    let a = joined_host_prepared(&c, &bridge, &cp, "a", 1, &token).started();
    // A workload, so that the workloads' file exists too.
    let _w = workload(&c, &a, "w");

    assert_eq!(a.agent.status()["dumpable"], false, "status: dumpable");
    let dir = &a.agent.state_dir;
    assert_private_tree(dir, 3);
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("read state_dir")
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    for expected in ["control.json", "netmap.json", "workloads.json"] {
        assert!(
            names.iter().any(|n| n == expected),
            "state_dir holds {names:?}"
        );
    }

    // Neither daemon dumps core, though a dumpable process here does.
    assert!(
        a_dumpable_process_dumps_core(),
        "a dumpable process did not dump core here: the check below would tell nothing"
    );
    assert!(!dumps_core("the agent", &a.agent), "the agent dumped core");
    assert!(
        !dumps_core("the control plane", &cp),
        "the control plane dumped core"
    );
}

#[test]
fn a_join_token_file_others_can_read_is_refused() {
    let Some(c) = Cluster::new("a_join_token_file_others_can_read_is_refused") else {
        return;
    };
    let (bridge, cp) = control_on_bridge(&c, ControlSpec::default());
    let token = cp.token_create(&[]);
    let a = joined_host_prepared(&c, &bridge, &cp, "a", 1, &token);
    let file = a.agent.spec().control.unwrap().join_token_file.unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (status, out) = a.agent.run_expect_exit(Duration::from_secs(20));
    assert!(
        !status.success() && status.code().is_some(),
        "{status}:\n{out}"
    );
    let path = file.display();
    for expect in [
        format!("control.join_token_file: {path}: mode 0644"),
        format!("chmod 600 {path}"),
    ] {
        assert!(
            out.contains(&expect),
            "the error does not say {expect:?}:\n{out}"
        );
    }
    assert!(cp.node_names().is_empty(), "a host joined with the token");
    // Made private, the same file joins.
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    a.agent.start();
    assert_eq!(cp.node_names(), ["host-a"]);
}

#[test]
fn a_low_order_public_key_is_refused_in_agent_toml_and_at_join() {
    let Some(c) = Cluster::new("a_low_order_public_key_is_refused_in_agent_toml_and_at_join")
    else {
        return;
    };
    let ns = c.netns("a");
    let far = c.netns("b");
    c.veth_underlay(&ns, &far);
    let routes_before = ns.routes();
    let agent = c.agent_prepared(
        &ns,
        AgentSpec::new("host-a", "10.42.1.0/24", 51820)
            .peer(PeerSpec::new(ZERO_KEY, &["10.42.2.0/24"]).name("host-b")),
    );
    let text = agent.render(&agent.spec());
    let (line, column) = text
        .lines()
        .enumerate()
        .find_map(|(i, l)| l.find(ZERO_KEY).map(|col| (i + 1, col)))
        .expect("the key in the config");
    let (status, out) = agent.run_expect_exit(Duration::from_secs(20));
    assert!(
        !status.success() && status.code().is_some(),
        "{status}:\n{out}"
    );
    // The column is the value's opening quote.
    let place = format!(
        "{}:{line}:{column}: peer[0].public_key",
        agent.config_path.display()
    );
    assert!(
        out.contains(&place),
        "the error does not say {place:?}:\n{out}"
    );
    assert!(out.contains("low-order point"), "{out}");
    assert_eq!(ns.routes(), routes_before, "routes after a refused config");

    // At join, the control plane refuses it with a 400 that says why, and registers nothing.
    let bridge = c.bridge();
    let cp = c.control(&bridge, CONTROL_IP, ControlSpec::default());
    let token = cp.token_create(&[]);
    let (status, body) = cp.join_raw(&token, "host-z", ZERO_KEY, None);
    assert_eq!(status, 400, "{body}");
    assert_eq!(control::reason(&body), "bad_request", "{body}");
    assert!(body.contains("low-order point"), "{body}");
    assert!(cp.node_names().is_empty());
}
