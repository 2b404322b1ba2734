//! End-to-end harness: hosts are network namespaces on a veth or bridge underlay
//! (198.18.0.0/15), workloads are namespaces attached with `wgmesh attach`.
//!
//! Every object a test creates is owned by a guard; a [`Cluster`] owns them all and,
//! when the test panics, prints `ip addr`/`ip route`/logs/`wg show` of everything it
//! owns before anything is torn down.
#![allow(dead_code, unused_imports, unreachable_pub)]

pub mod agent;
pub mod control;
pub mod control_limits;
pub mod control_refusals;
pub mod daemon;
pub mod demo;
pub mod docker_scene;
pub mod dockerd;
pub mod files;
pub mod flood;
pub mod forwarding;
pub mod keys;
pub mod netns;
pub mod pcap;
pub mod policy;
pub mod same_host;
pub mod scenario;
pub mod scripted_control;
pub mod sniffer;
pub mod spoof;
pub mod sweep;
pub mod traffic;
pub mod wggo;

use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use agent::{counter, ip_of, Agent, AgentSpec, ControlRef, PeerSpec};
pub use control::{ControlPlane, ControlSpec};
pub use daemon::Daemon;
pub use netns::{Netns, Proc};
pub use traffic::{
    ping, ping_count, ping_from, pings_and_streams_until, Pattern, TcpTransfer, UdpSink,
};
pub use wggo::WgGo;

/// Runs the `wgmesh` binary under test with `args` in this process's namespace.
pub fn wgmesh(args: &[&str]) -> std::process::Output {
    std::process::Command::new(agent::BIN)
        .args(args)
        .output()
        .expect("run wgmesh")
}

/// The underlay interface name in every host namespace.
pub const UNDERLAY_IF: &str = "ul0";

/// Polls `f` (every 50 ms) until it returns true or `timeout` passes. Returns the last result.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Why this machine cannot run the namespace tests, if it cannot.
pub fn missing_privileges() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("not running as root (needs CAP_NET_ADMIN and CAP_SYS_ADMIN)".into());
    }
    if !std::path::Path::new("/dev/net/tun").exists() {
        return Some("/dev/net/tun is missing".into());
    }
    for tool in ["ip", "ping", "wg", "wireguard-go", "tcpdump"] {
        let found = std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).exists()))
            .unwrap_or(false);
        if !found {
            return Some(format!("`{tool}` is not installed"));
        }
    }
    None
}

/// True when the test may run. Otherwise prints why and returns false, or panics
/// under `CI=true` (a green CI must mean the end-to-end tests ran).
pub fn can_run(test: &str) -> bool {
    match missing_privileges() {
        None => true,
        Some(why) => {
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("{test}: cannot run end-to-end test under CI=true: {why}");
            }
            eprintln!("SKIPPED {test}: {why}");
            false
        }
    }
}

/// Owns the namespaces, agents and wireguard-go peers of one test.
pub struct Cluster {
    test: String,
    // Dropped in this order: processes first, then namespaces.
    agents: Mutex<Vec<Arc<Agent>>>,
    wggos: Mutex<Vec<Arc<WgGo>>>,
    controls: Mutex<Vec<Arc<ControlPlane>>>,
    namespaces: Mutex<Vec<Netns>>,
}

impl Cluster {
    /// None (after printing why) when the test must be skipped.
    pub fn new(test: &str) -> Option<Self> {
        can_run(test).then(|| Self {
            test: test.to_string(),
            agents: Mutex::new(Vec::new()),
            wggos: Mutex::new(Vec::new()),
            controls: Mutex::new(Vec::new()),
            namespaces: Mutex::new(Vec::new()),
        })
    }

    /// A new namespace (lo up), torn down with the cluster.
    pub fn netns(&self, tag: &str) -> Netns {
        let ns = Netns::new(tag);
        self.namespaces.lock().unwrap().push(ns.clone());
        ns
    }

    /// Two hosts joined by one veth pair: `ul0` 198.18.0.1/24 in `a`, 198.18.0.2/24 in `b`.
    pub fn veth_underlay(&self, a: &Netns, b: &Netns) -> (Ipv4Addr, Ipv4Addr) {
        veth_to_underlay(a, UNDERLAY_IF, b);
        let ips = [Ipv4Addr::new(198, 18, 0, 1), Ipv4Addr::new(198, 18, 0, 2)];
        for (ns, ip) in [(a, ips[0]), (b, ips[1])] {
            underlay_up(ns, ip);
        }
        (ips[0], ips[1])
    }

    /// Hosts joined through a bridge in its own namespace: host i gets `ul0`
    /// 198.18.0.(i+1)/24.
    pub fn bridge_underlay(&self, hosts: &[&Netns]) -> Vec<Ipv4Addr> {
        let br = self.bridge();
        hosts
            .iter()
            .enumerate()
            .map(|(i, h)| {
                let ip = Ipv4Addr::new(198, 18, 0, i as u8 + 1);
                br.plug(h, ip);
                ip
            })
            .collect()
    }

    /// An empty bridge underlay in its own namespace; [`Bridge::plug`] adds hosts to it.
    pub fn bridge(&self) -> Bridge {
        let ns = self.netns("br");
        ns.run(&["ip", "link", "add", "br0", "type", "bridge"]);
        ns.run(&["ip", "link", "set", "br0", "up"]);
        Bridge {
            ns,
            ports: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    /// Prepares a control plane (config, state directory) in `ns`, reachable at `ip`, without
    /// starting it. The cluster stops it (by its PID) before removing namespaces and prints its
    /// log when the test fails.
    pub fn control_prepared(
        &self,
        ns: &Netns,
        ip: Ipv4Addr,
        spec: ControlSpec,
    ) -> Arc<ControlPlane> {
        let cp = Arc::new(ControlPlane::prepare(ns, ip, spec));
        self.controls.lock().unwrap().push(cp.clone());
        cp
    }

    /// A control plane in its own namespace `ctl`, plugged into `bridge` at `ip`, started
    /// (it has logged that it listens and written `admin.toml`).
    pub fn control(&self, bridge: &Bridge, ip: Ipv4Addr, spec: ControlSpec) -> Arc<ControlPlane> {
        let ns = self.netns("ctl");
        bridge.plug(&ns, ip);
        let cp = self.control_prepared(&ns, ip, spec);
        cp.start();
        cp
    }

    /// Makes the kernel segment GSO packets before they reach `ul0` of `ns` (so a
    /// capture there sees what a real wire would carry).
    pub fn force_segmentation(&self, ns: &Netns) {
        ns.run(&["ip", "link", "set", UNDERLAY_IF, "gso_max_segs", "1"]);
    }

    /// Prepares an agent (key + config) without starting it.
    pub fn agent_prepared(&self, ns: &Netns, spec: AgentSpec) -> Arc<Agent> {
        let a = Arc::new(Agent::prepare(ns, spec));
        self.agents.lock().unwrap().push(a.clone());
        a
    }

    /// Prepares and starts an agent; returns once `status` answers.
    pub fn agent(&self, ns: &Netns, spec: AgentSpec) -> Arc<Agent> {
        let a = self.agent_prepared(ns, spec);
        a.start();
        a
    }

    /// Starts `wireguard-go` in `ns` listening on `port`.
    pub fn wggo(&self, ns: &Netns, port: u16) -> Arc<WgGo> {
        let w = Arc::new(WgGo::start(ns, port));
        self.wggos.lock().unwrap().push(w.clone());
        w
    }

    /// Everything useful to debug a failure.
    pub fn diagnostics(&self) -> String {
        let mut s = format!("########## diagnostics of {} ##########\n", self.test);
        for a in self.agents.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            s += &a.diagnostics();
        }
        for w in self.wggos.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            s += &w.diagnostics();
        }
        for cp in self
            .controls
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            s += &cp.diagnostics();
        }
        for ns in self
            .namespaces
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            s += &ns.diagnostics();
        }
        s += &format!(
            "########## end of diagnostics of {} ##########\n",
            self.test
        );
        s
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.diagnostics());
        }
        // Processes before namespaces (the fields would drop in this order anyway).
        self.agents
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        self.wggos
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        self.controls
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        self.namespaces
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }
}

/// A bridge (`br0`) in its own namespace that host namespaces are plugged into, each with a
/// veth whose inner end is `ul0`.
pub struct Bridge {
    pub ns: Netns,
    ports: std::sync::atomic::AtomicUsize,
}

impl Bridge {
    /// Plugs `host` into the bridge: `ul0` in `host` with `ip`/24, up.
    pub fn plug(&self, host: &Netns, ip: Ipv4Addr) {
        let port = format!(
            "p{}",
            self.ports.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
        );
        veth_to_underlay(&self.ns, &port, host);
        self.ns.run(&["ip", "link", "set", &port, "master", "br0"]);
        self.ns.run(&["ip", "link", "set", &port, "up"]);
        underlay_up(host, ip);
    }
}

/// A veth pair: `name` in `ns`, its peer `ul0` in `host`.
fn veth_to_underlay(ns: &Netns, name: &str, host: &Netns) {
    ns.run(&[
        "ip",
        "link",
        "add",
        name,
        "type",
        "veth",
        "peer",
        "name",
        UNDERLAY_IF,
        "netns",
        host.name(),
    ]);
}

/// `ul0` in `host` gets `ip`/24 and goes up.
fn underlay_up(host: &Netns, ip: Ipv4Addr) {
    host.run(&["ip", "addr", "add", &format!("{ip}/24"), "dev", UNDERLAY_IF]);
    host.run(&["ip", "link", "set", UNDERLAY_IF, "up"]);
}

/// Asserts `f` becomes true within `timeout`, with a message naming what was awaited.
#[track_caller]
pub fn assert_eventually(timeout: Duration, what: &str, f: impl FnMut() -> bool) {
    assert!(
        wait_until(timeout, f),
        "timed out after {timeout:?}: {what}"
    );
}
