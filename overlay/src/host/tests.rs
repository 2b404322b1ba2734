//! Real netlink in real network namespaces.
//!
//! Every test creates its own namespaces (`wgmh-<pid>-<n>`) with `ip netns add`, runs its body on
//! a thread that has `setns(2)`ed into one of them, and checks the result with `ip -n`. A guard
//! deletes the namespaces (and with them every link made in them) even when the test panics, so
//! nothing ever touches the machine's root namespace. Only 10.x addresses are used, and the only
//! traffic is a ping between two of the test's own namespaces.
//!
//! Needs root and `/dev/net/tun`. Without them a test skips with a message, unless `CI=true`, in
//! which case it fails.

use std::fs::File;
use std::future::Future;
use std::net::IpAddr;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use ipnet::IpNet;
use nix::sched::{setns, CloneFlags};

use super::link::check_ifname;
use super::route::device_route;
use super::*;
use wgmesh_config::ifname::MAX_IFNAME_LEN;

static NEXT_NETNS: AtomicUsize = AtomicUsize::new(0);

/// Whether this test may run; panics instead of skipping under `CI=true`.
pub(super) fn privileged(test: &str) -> bool {
    let problem = if !nix::unistd::geteuid().is_root() {
        Some("not running as root")
    } else if !Path::new("/dev/net/tun").exists() {
        Some("/dev/net/tun is missing")
    } else if Command::new("ip").arg("-V").output().is_err() {
        Some("`ip` is not installed")
    } else {
        None
    };
    match problem {
        None => true,
        Some(problem) if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("{test}: {problem}, and CI=true does not allow skipping")
        }
        Some(problem) => {
            eprintln!("skipping {test}: {problem}");
            false
        }
    }
}

fn unique_netns_name() -> String {
    format!(
        "wgmh-{}-{}",
        std::process::id(),
        NEXT_NETNS.fetch_add(1, Ordering::Relaxed)
    )
}

/// Owns the namespaces a test made; deletes them on drop, after dumping their state if the test
/// is failing.
#[derive(Default)]
pub(super) struct Namespaces {
    names: Vec<String>,
}

impl Namespaces {
    pub(super) fn create(&mut self) -> String {
        let name = unique_netns_name();
        ip(&["netns", "add", &name]);
        self.names.push(name.clone());
        name
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for name in &self.names {
            if std::thread::panicking() {
                for what in [&["-d", "link"][..], &["addr"], &["route"]] {
                    let output = Command::new("ip").args(["-n", name]).args(what).output();
                    if let Ok(output) = output {
                        eprintln!(
                            "--- ip -n {name} {}\n{}",
                            what.join(" "),
                            String::from_utf8_lossy(&output.stdout)
                        );
                    }
                }
            }
            match Command::new("ip").args(["netns", "del", name]).status() {
                Ok(status) if status.success() => {}
                other => eprintln!("cannot delete network namespace {name}: {other:?}"),
            }
        }
    }
}

/// Runs `ip ARGS`, asserts success and returns stdout.
pub(super) fn ip(args: &[&str]) -> String {
    let output = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        output.status.success(),
        "ip {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("ip prints UTF-8")
}

/// Whether `ip ARGS` succeeds (for "does this link exist").
fn ip_ok(args: &[&str]) -> bool {
    Command::new("ip")
        .args(args)
        .output()
        .expect("run ip")
        .status
        .success()
}

/// Runs `body` on a thread inside the namespace `netns`, on a current-thread runtime, and
/// re-raises its panic here so the caller's guards still run.
pub(super) fn in_netns<F, Fut>(netns: &str, body: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = ()>,
{
    let path = Path::new(NETNS_DIR).join(netns);
    let result = std::thread::spawn(move || {
        let file = File::open(&path).expect("open test namespace");
        setns(&file, CloneFlags::CLONE_NEWNET).expect("enter test namespace");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("build runtime");
        runtime.block_on(body());
    })
    .join();
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}

pub(super) fn net(s: &str) -> IpNet {
    s.parse().expect("valid prefix")
}

fn addr(s: &str) -> IpAddr {
    s.parse().expect("valid address")
}

fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[test]
fn host_ifname_is_stable_and_short() {
    // FNV-1a reference values: the names must not change between versions.
    assert_eq!(host_ifname_for(""), "wgmv811c9dc5");
    assert_eq!(host_ifname_for("a"), "wgmve40c292c");
    assert_eq!(host_ifname_for("web-1"), host_ifname_for("web-1"));
    assert_ne!(host_ifname_for("web-1"), host_ifname_for("web-2"));
    let long = "x".repeat(200);
    assert_eq!(host_ifname_for(&long).len(), 12);
    assert!(check_ifname(&host_ifname_for(&long)).is_ok());
}

#[test]
fn peer_ifname_differs_from_host_ifname() {
    assert_eq!(peer_ifname("wgmv12345678"), "wgmv12345678p");
    assert_eq!(peer_ifname("abcdefghijklmno"), "abcdefghijklmnp");
    assert_eq!(peer_ifname("abcdefghijklmnp"), "abcdefghijklmnq");
    for host in [
        "a",
        "wgmv12345678",
        "abcdefghijklmno",
        "abcdefghijklmnp",
        "ééééééé",
    ] {
        let peer = peer_ifname(host);
        assert_ne!(peer, host);
        assert!(peer.len() <= MAX_IFNAME_LEN, "{peer}");
    }
}

#[test]
fn interface_names_are_checked() {
    for bad in ["", "a/b", "a:b", "a b", ".", "..", "sixteen-bytes-xx"] {
        assert!(
            matches!(check_ifname(bad), Err(HostError::InvalidIfname { .. })),
            "{bad:?} accepted"
        );
    }
    assert!(check_ifname("wgmbr0").is_ok());
    assert!(check_ifname("fifteen-bytes-x").is_ok());
}

#[test]
fn route_families_must_match() {
    let error = device_route(net("10.99.0.0/16"), 1, Some("fd00::1".parse().expect("v6")))
        .expect_err("v6 source for v4 route");
    assert!(matches!(error, HostError::FamilyMismatch { .. }), "{error}");
}

#[test]
fn connect_needs_a_runtime() {
    assert!(matches!(HostNet::connect(), Err(HostError::NoRuntime(_))));
}

#[test]
fn ensure_bridge_is_idempotent() {
    if !privileged("ensure_bridge_is_idempotent") {
        return;
    }
    let mut namespaces = Namespaces::default();
    let host = namespaces.create();
    in_netns(&host, || async {
        let host_net = HostNet::connect().expect("connect");
        assert_eq!(host_net.link_index("wgmbr0").await.expect("look up"), None);
        let first = host_net
            .ensure_bridge("wgmbr0", net("10.42.1.1/24"), 1420)
            .await
            .expect("create bridge");
        let second = host_net
            .ensure_bridge("wgmbr0", net("10.42.1.1/24"), 1420)
            .await
            .expect("reuse bridge");
        assert_eq!(first, second);
        assert_eq!(
            host_net.link_index("wgmbr0").await.expect("look up"),
            Some(first)
        );

        // A link that is not a bridge is not taken over.
        let error = host_net
            .ensure_bridge("lo", net("10.42.9.1/24"), 1420)
            .await
            .expect_err("lo is not a bridge");
        assert!(matches!(error, HostError::NotABridge { .. }), "{error}");
        assert!(matches!(
            host_net.link_index("no/such").await,
            Err(HostError::InvalidIfname { .. })
        ));
    });
    let addresses = ip(&["-n", &host, "-o", "addr", "show", "dev", "wgmbr0"]);
    assert_eq!(
        addresses.matches("inet 10.42.1.1/24 ").count(),
        1,
        "{addresses}"
    );
    let link = ip(&["-n", &host, "link", "show", "wgmbr0"]);
    assert!(link.contains("mtu 1420"), "{link}");
    assert!(link.contains(",UP"), "{link}");
    assert!(!ip(&["-n", &host, "-o", "addr", "show", "dev", "lo"]).contains("10.42.9.1"));

    // A restarted agent with a new MTU applies it to the bridge it finds.
    in_netns(&host, || async {
        let host_net = HostNet::connect().expect("connect");
        host_net
            .ensure_bridge("wgmbr0", net("10.42.1.1/24"), 1380)
            .await
            .expect("reuse bridge");
    });
    assert!(ip(&["-n", &host, "link", "show", "wgmbr0"]).contains("mtu 1380"));
}

#[test]
fn routes_are_ours_and_never_replace_or_remove_others() {
    if !privileged("routes_are_ours_and_never_replace_or_remove_others") {
        return;
    }
    let mut namespaces = Namespaces::default();
    let host = namespaces.create();
    let ns = host.clone();
    in_netns(&host, move || async move {
        let routes = |dst: &str| {
            ip(&["-n", &ns, "route", "show", "table", "main", dst])
                .lines()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        };
        let host_net = HostNet::connect().expect("connect");
        let bridge = host_net
            .ensure_bridge("wgmbr0", net("10.42.1.1/24"), 1420)
            .await
            .expect("bridge");
        let dst = net("10.99.0.0/16");

        host_net
            .add_route(dst, bridge, Some(addr("10.42.1.1")))
            .await
            .expect("add");
        let lines = routes("10.99.0.0/16");
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(
            lines[0].contains("dev wgmbr0 proto 119 scope link src 10.42.1.1"),
            "{lines:?}"
        );
        // Never replaces, not even its own route.
        host_net
            .add_route(dst, bridge, None)
            .await
            .expect_err("a second add is refused");

        // Someone else's route: not replaced, not deleted, listed as theirs.
        ip(&["-n", &ns, "route", "add", "10.97.0.0/16", "dev", "wgmbr0"]);
        host_net
            .add_route(net("10.97.0.0/16"), bridge, None)
            .await
            .expect_err("a foreign route is never replaced");
        assert!(!host_net
            .delete_route(net("10.97.0.0/16"), bridge)
            .await
            .expect("delete foreign"));
        assert_eq!(routes("10.97.0.0/16").len(), 1);
        let dump = host_net.main_routes().await.expect("dump");
        let foreign = dump
            .iter()
            .find(|r| r.dst == net("10.97.0.0/16"))
            .expect("listed");
        assert!(!foreign.is_ours(), "{foreign}");
        assert_eq!(foreign.device.as_deref(), Some("wgmbr0"));
        assert!(dump.iter().any(|r| r.dst == dst && r.is_ours()));
        assert!(dump
            .iter()
            .any(|r| r.dst == net("10.42.1.0/24") && r.protocol == 2));

        assert!(host_net.delete_route(dst, bridge).await.expect("delete"));
        assert!(routes("10.99.0.0/16").is_empty());
        assert!(!host_net.delete_route(dst, bridge).await.expect("again"));
    });
}

#[test]
fn the_cluster_route_is_created_taken_over_moved_and_removed() {
    if !privileged("the_cluster_route_is_created_taken_over_moved_and_removed") {
        return;
    }
    let mut namespaces = Namespaces::default();
    let host = namespaces.create();
    let ns = host.clone();
    in_netns(&host, move || async move {
        let unreachable = || ip(&["-n", &ns, "route", "show", "type", "unreachable"]);
        let host_net = HostNet::connect().expect("connect");
        ip(&["-n", &ns, "route", "add", "unreachable", "10.200.0.0/16"]);
        assert!(host_net
            .ensure_cluster_route(net("10.0.0.0/8"))
            .await
            .expect("create"));
        assert!(!host_net
            .ensure_cluster_route(net("10.0.0.0/8"))
            .await
            .expect("take over"));
        assert!(
            unreachable().contains("unreachable 10.0.0.0/8 proto 119"),
            "{}",
            unreachable()
        );
        // Moving: the new one first, then the old one goes; a foreign one stays.
        host_net
            .ensure_cluster_route(net("10.64.0.0/10"))
            .await
            .expect("new");
        let removed = host_net
            .remove_cluster_routes(Some(net("10.64.0.0/10")))
            .await
            .expect("remove old");
        assert_eq!(removed, vec![net("10.0.0.0/8")]);
        host_net
            .ensure_cluster_route(net("fd42::/16"))
            .await
            .expect("v6");
        let shown = ip(&["-n", &ns, "-6", "route", "show", "type", "unreachable"]);
        assert!(shown.contains("unreachable fd42::/16"), "{shown}");
        let mut removed = host_net.remove_cluster_routes(None).await.expect("all");
        removed.sort();
        assert_eq!(removed, vec![net("10.64.0.0/10"), net("fd42::/16")]);
        assert_eq!(unreachable().trim(), "unreachable 10.200.0.0/16");
    });
}

#[test]
fn enslave_and_delete_link() {
    if !privileged("enslave_and_delete_link") {
        return;
    }
    let mut namespaces = Namespaces::default();
    let host = namespaces.create();
    ip(&[
        "-n", &host, "link", "add", "wgmd0", "type", "veth", "peer", "name", "wgmd1",
    ]);
    in_netns(&host, || async {
        let host_net = HostNet::connect().expect("connect");
        let bridge = host_net
            .ensure_bridge("wgmbr0", net("10.42.1.1/24"), 1420)
            .await
            .expect("bridge");
        let port = host_net
            .link_index("wgmd0")
            .await
            .expect("look up")
            .expect("exists");
        host_net.enslave(port, bridge).await.expect("enslave");
        host_net.enslave(port, bridge).await.expect("enslave again");
    });
    let link = ip(&["-n", &host, "link", "show", "wgmd0"]);
    assert!(
        link.contains("master wgmbr0") && link.contains(",UP"),
        "{link}"
    );
    in_netns(&host, || async {
        let host_net = HostNet::connect().expect("connect");
        assert!(host_net.delete_link("wgmd0").await.expect("delete"));
        assert!(!host_net.delete_link("wgmd0").await.expect("delete again"));
    });
    assert!(!ip_ok(&["-n", &host, "link", "show", "wgmd0"]));
    assert!(!ip_ok(&["-n", &host, "link", "show", "wgmd1"]));
}

#[test]
fn attach_netns_then_detach() {
    if !privileged("attach_netns_then_detach") {
        return;
    }
    let mut namespaces = Namespaces::default();
    let host = namespaces.create();
    let workload = namespaces.create();
    let host_ifname = host_ifname_for(&workload);

    let (ns, veth) = (workload.clone(), host_ifname.clone());
    in_netns(&host, move || async move {
        let host_net = HostNet::connect().expect("connect");
        attach_on_default_bridge(&host_net, &ns, &veth)
            .await
            .expect("attach");
    });

    let eth0 = ip(&["-n", &workload, "-o", "addr", "show", "dev", "eth0"]);
    assert!(eth0.contains("inet 10.42.1.2/24 "), "{eth0}");
    let link = ip(&["-n", &workload, "link", "show", "eth0"]);
    assert!(link.contains("mtu 1420") && link.contains(",UP"), "{link}");
    assert!(ip(&["-n", &workload, "link", "show", "lo"]).contains(",UP"));
    let default = ip(&["-n", &workload, "route", "show", "default"]);
    assert!(
        default.contains("default via 10.42.1.1 dev eth0"),
        "{default}"
    );
    assert!(!ip(&["-n", &workload, "-o", "link"]).contains(&peer_ifname(&host_ifname)));
    let host_side = ip(&["-n", &host, "link", "show", &host_ifname]);
    assert!(host_side.contains("master wgmbr0"), "{host_side}");
    assert!(
        host_side.contains("mtu 1420") && host_side.contains(",UP"),
        "{host_side}"
    );

    // The workload reaches its gateway over the bridge (the only traffic in these tests).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let ping = Command::new("ip")
            .args([
                "netns",
                "exec",
                &workload,
                "ping",
                "-c",
                "1",
                "-W",
                "1",
                "10.42.1.1",
            ])
            .output()
            .expect("run ping");
        if ping.status.success() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "workload cannot ping its gateway: {}",
            String::from_utf8_lossy(&ping.stdout)
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    let veth = host_ifname.clone();
    in_netns(&host, move || async move {
        let host_net = HostNet::connect().expect("connect");
        assert!(host_net.detach(&veth).await.expect("detach"));
        assert!(!host_net.detach(&veth).await.expect("detach again"));
    });
    assert!(!ip_ok(&["-n", &host, "link", "show", &host_ifname]));
    assert!(!ip_ok(&["-n", &workload, "link", "show", "eth0"]));
}

#[test]
fn attach_to_missing_netns_fails_cleanly() {
    if !privileged("attach_to_missing_netns_fails_cleanly") {
        return;
    }
    let mut namespaces = Namespaces::default();
    let host = namespaces.create();
    let missing = unique_netns_name();
    let host_ifname = host_ifname_for(&missing);

    let (ns, veth) = (missing.clone(), host_ifname.clone());
    in_netns(&host, move || async move {
        let host_net = HostNet::connect().expect("connect");
        let error = attach_on_default_bridge(&host_net, &ns, &veth)
            .await
            .expect_err("namespace is missing");
        assert!(
            matches!(error, HostError::NetnsNotFound { .. }),
            "{error:?}"
        );
        assert_eq!(
            error.to_string(),
            format!("network namespace \"{ns}\" not found (/run/netns/{ns})")
        );
        assert_eq!(host_net.link_index(&veth).await.expect("look up"), None);
    });
    let links = ip(&["-n", &host, "-o", "link"]);
    assert!(!links.contains("wgmv"), "{links}");
}

#[test]
fn attach_failure_inside_netns_removes_the_veth() {
    if !privileged("attach_failure_inside_netns_removes_the_veth") {
        return;
    }
    let mut namespaces = Namespaces::default();
    let host = namespaces.create();
    let workload = namespaces.create();
    let host_ifname = host_ifname_for(&workload);
    // The rename to eth0 will fail.
    ip(&[
        "-n", &workload, "link", "add", "eth0", "type", "veth", "peer", "name", "eth1",
    ]);

    let (ns, veth) = (workload.clone(), host_ifname.clone());
    in_netns(&host, move || async move {
        let host_net = HostNet::connect().expect("connect");
        let error = attach_on_default_bridge(&host_net, &ns, &veth)
            .await
            .expect_err("eth0 is taken");
        assert!(matches!(error, HostError::InNetns { .. }), "{error:?}");
        let chain = error_chain(&error);
        assert!(chain.contains("rename") && chain.contains(&ns), "{chain}");
    });
    assert!(!ip_ok(&["-n", &host, "link", "show", &host_ifname]));
    let links = ip(&["-n", &workload, "-o", "link"]);
    assert!(!links.contains("wgmv"), "{links}");
    // What the namespace had before is left alone.
    assert!(ip(&["-n", &workload, "-d", "link", "show", "eth0"]).contains("veth"));
}

#[test]
fn attach_leaves_an_existing_host_link_alone() {
    if !privileged("attach_leaves_an_existing_host_link_alone") {
        return;
    }
    let mut namespaces = Namespaces::default();
    let host = namespaces.create();
    let workload = namespaces.create();
    let host_ifname = host_ifname_for(&workload);
    ip(&[
        "-n",
        &host,
        "link",
        "add",
        &host_ifname,
        "type",
        "veth",
        "peer",
        "name",
        "wgmtest0",
    ]);

    let (ns, veth) = (workload.clone(), host_ifname.clone());
    in_netns(&host, move || async move {
        let host_net = HostNet::connect().expect("connect");
        let error = attach_on_default_bridge(&host_net, &ns, &veth)
            .await
            .expect_err("host link exists");
        assert!(
            matches!(error, HostError::Netlink { op: "create", .. }),
            "{error:?}"
        );
    });
    assert!(ip(&["-n", &host, "link", "show", &host_ifname]).contains("wgmtest0"));
    assert!(!ip(&["-n", &workload, "-o", "link"]).contains("wgmv"));
}

#[test]
fn forwarding_is_set_on_the_targets_only_and_restored() {
    if !privileged("forwarding_is_set_on_the_targets_only_and_restored") {
        return;
    }
    let mut namespaces = Namespaces::default();
    let host = namespaces.create();
    let read = |path: &str| {
        let output = Command::new("ip")
            .args(["netns", "exec", &host, "cat", path])
            .output()
            .expect("run cat");
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    };
    let fwd = |iface: &str| read(&format!("/proc/sys/net/ipv4/conf/{iface}/forwarding"));
    in_netns(&host, || async {
        // A new namespace inherits IPv4 forwarding from the root one: start from "off".
        std::fs::write("/proc/sys/net/ipv4/ip_forward", "0").expect("ip_forward");
        let host_net = HostNet::connect().expect("connect");
        for (name, gateway) in [("wgmbr0", "10.42.1.1/24"), ("wgmbr1", "10.43.1.1/24")] {
            host_net
                .ensure_bridge(name, net(gateway), 1420)
                .await
                .expect("bridge");
        }
        let targets = forwarding::ForwardingTargets {
            bridge: "wgmbr0",
            tun: "wgmbr1",
            v6: false,
        };
        let changes = forwarding::plan_forwarding(&targets).expect("plan");
        assert_eq!(changes.len(), 2, "{changes:?}");
        changes
            .iter()
            .for_each(|c| forwarding::apply(c).expect("apply"));
        let again = forwarding::plan_forwarding(&targets).expect("plan");
        assert!(again.is_empty(), "{again:?}");
        let on = |iface: &str| {
            std::fs::read_to_string(format!("/proc/sys/net/ipv4/conf/{iface}/forwarding"))
                .expect("read")
                .trim()
                .to_owned()
        };
        assert_eq!(
            (on("wgmbr0"), on("wgmbr1"), on("lo"), on("all")),
            ("1".into(), "1".into(), "0".into(), "0".into())
        );
        for c in forwarding::restore_order(&changes) {
            assert!(forwarding::restore(c).expect("restore"));
        }
        let gone = forwarding::SysctlChange {
            sysctl: forwarding::Sysctl::new(
                forwarding::Family::Ipv4,
                "wgmgone0",
                forwarding::Knob::Forwarding,
            ),
            old: 0,
            new: 1,
        };
        assert!(!forwarding::restore(&gone).expect("an interface that is gone is skipped"));
    });
    assert_eq!(
        (
            fwd("wgmbr0"),
            fwd("wgmbr1"),
            read("/proc/sys/net/ipv4/ip_forward")
        ),
        ("0".into(), "0".into(), "0".into())
    );
}

/// Ensures bridge `wgmbr0` with 10.42.1.1/24 and attaches `ns` to it as 10.42.1.2/24.
async fn attach_on_default_bridge(
    host_net: &HostNet,
    ns: &str,
    veth: &str,
) -> Result<(), HostError> {
    let bridge = host_net
        .ensure_bridge("wgmbr0", net("10.42.1.1/24"), 1420)
        .await
        .expect("bridge");
    host_net
        .attach_netns(
            ns,
            veth,
            bridge,
            net("10.42.1.2/24"),
            addr("10.42.1.1"),
            1420,
        )
        .await
}

/// `iptables -S CHAIN` in `netns`.
fn chain_rules(netns: &str, chain: &str) -> Vec<String> {
    let out = Command::new("ip")
        .args(["netns", "exec", netns, "iptables", "-w", "5", "-S", chain])
        .output()
        .expect("run iptables");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with("-A "))
        .map(str::to_owned)
        .collect()
}

#[test]
fn forwarding_rules_stay_first_in_docker_user_and_forward_and_all_copies_go_on_close() {
    if !privileged("forwarding_rules_stay_first") {
        return;
    }
    if Command::new("iptables").arg("-V").output().is_err() {
        eprintln!("skipping forwarding_rules_stay_first: no iptables");
        return;
    }
    let mut nss = Namespaces::default();
    let ns = nss.create();
    let ours = |rules: &[String]| -> Vec<usize> {
        rules
            .iter()
            .enumerate()
            .filter(|(_, r)| r.contains(firewall::RULE_COMMENT))
            .map(|(i, _)| i + 1)
            .collect()
    };
    in_netns(&ns.clone(), move || async move {
        assert!(firewall::open_forwarding("wgmbr0", "wgm0").unwrap());
        for chain in firewall::CHAINS {
            assert_eq!(
                ours(&chain_rules(&ns, chain)),
                [1, 2, 3, 4, 5, 6],
                "{chain}"
            );
        }
        // As dockerd does: an accept at the top of both chains.
        for chain in firewall::CHAINS {
            let ok = Command::new("iptables")
                .args(["-w", "5", "-I", chain, "1", "-i", "docker0", "-j", "ACCEPT"])
                .status()
                .unwrap();
            assert!(ok.success());
        }
        assert!(firewall::open_forwarding("wgmbr0", "wgm0").unwrap());
        for chain in firewall::CHAINS {
            let rules = chain_rules(&ns, chain);
            assert_eq!(ours(&rules), [1, 2, 3, 4, 5, 6], "{chain}: {rules:?}");
            assert_eq!(rules.len(), 7, "the old copies went: {rules:?}");
        }
        assert!(!firewall::open_forwarding("wgmbr0", "wgm0").unwrap());
        firewall::close_forwarding("wgmbr0", "wgm0").unwrap();
        for chain in firewall::CHAINS {
            assert!(ours(&chain_rules(&ns, chain)).is_empty(), "{chain}");
        }
    });
}
