//! The `wgmesh agent` under test, run in a host namespace.

use std::fmt::Write as _;
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use nix::sys::signal::Signal;
use serde_json::Value;

use super::daemon::{tail, Daemon};
use super::keys::KeyPair;
use super::netns::Netns;
use super::wait_until;

pub const BIN: &str = env!("CARGO_BIN_EXE_wgmesh");

/// How long an agent may take to answer `status` after it starts.
pub const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// One `[[peer]]` table.
#[derive(Clone, Debug, Default)]
pub struct PeerSpec {
    pub name: Option<String>,
    pub public_key: String,
    pub endpoint: Option<String>,
    pub allowed_ips: Vec<String>,
    pub persistent_keepalive: Option<u16>,
    pub preshared_key_file: Option<PathBuf>,
}

impl PeerSpec {
    pub fn new(public_key: &str, allowed_ips: &[&str]) -> Self {
        Self {
            public_key: public_key.to_string(),
            allowed_ips: allowed_ips.iter().map(|s| s.to_string()).collect(),
            ..Self::default()
        }
    }

    pub fn name(mut self, n: &str) -> Self {
        self.name = Some(n.to_string());
        self
    }

    pub fn endpoint(mut self, e: &str) -> Self {
        self.endpoint = Some(e.to_string());
        self
    }

    pub fn keepalive(mut self, k: u16) -> Self {
        self.persistent_keepalive = Some(k);
        self
    }
}

/// The `[control]` table of an agent joined to a control plane.
#[derive(Clone, Debug)]
pub struct ControlRef {
    /// `https://IP:PORT`.
    pub url: String,
    /// The join token (`WGM1-...`).
    pub join_token: String,
    /// Written into the config as `join_token` instead of a `join_token_file`.
    pub inline_token: bool,
    /// Where `join_token_file` points; [`Agent`] fills it in (and writes the file, 0600).
    pub join_token_file: Option<PathBuf>,
}

impl ControlRef {
    pub fn new(url: &str, join_token: &str) -> Self {
        Self {
            url: url.to_string(),
            join_token: join_token.to_string(),
            inline_token: false,
            join_token_file: None,
        }
    }
}

/// The `[agent]` table (paths are filled in by [`Agent`]), the peers, and for an agent joined
/// to a control plane its `[control]` table.
#[derive(Clone, Debug)]
pub struct AgentSpec {
    pub name: String,
    /// Empty: no `subnet` key (a joined agent gets its subnet from the control plane).
    pub subnet: String,
    /// `cluster_cidr` for a static agent (one with a subnet); `None` writes 10.0.0.0/8 for an
    /// IPv4 subnet and fd00::/8 for an IPv6 one.
    pub cluster_cidr: Option<String>,
    pub listen_port: u16,
    pub peers: Vec<PeerSpec>,
    pub offload: Option<bool>,
    /// `endpoint`: where other hosts reach this one (reported to the control plane).
    pub endpoint: Option<String>,
    /// `labels = { k = "v", ... }`.
    pub labels: Vec<(String, String)>,
    /// `[control]`: join the control plane instead of using static peers.
    pub control: Option<ControlRef>,
    /// `[docker]`: serve Docker's network and IPAM plugin.
    pub docker: Option<DockerRef>,
}

/// The `[docker]` table.
#[derive(Clone, Debug, Default)]
pub struct DockerRef {
    pub plugin_dir: PathBuf,
    pub socket: PathBuf,
    pub networks: Vec<String>,
}

impl AgentSpec {
    pub fn new(name: &str, subnet: &str, listen_port: u16) -> Self {
        Self {
            name: name.to_string(),
            subnet: subnet.to_string(),
            cluster_cidr: None,
            listen_port,
            peers: Vec::new(),
            offload: None,
            endpoint: None,
            labels: Vec::new(),
            control: None,
            docker: None,
        }
    }

    /// An agent joined to a control plane: no subnet, no peers, `endpoint` and `[control]`.
    pub fn joined(name: &str, listen_port: u16, endpoint: &str, control: ControlRef) -> Self {
        Self {
            endpoint: Some(endpoint.to_string()),
            control: Some(control),
            ..Self::new(name, "", listen_port)
        }
    }

    pub fn label(mut self, k: &str, v: &str) -> Self {
        self.labels.push((k.to_string(), v.to_string()));
        self
    }

    pub fn peer(mut self, p: PeerSpec) -> Self {
        self.peers.push(p);
        self
    }
}

/// `s` as a quoted TOML string.
pub fn q(s: &str) -> String {
    serde_json::to_string(s).expect("quote")
}

/// Renders a config file. Kept simple and line-predictable so tests can name lines.
pub fn render(spec: &AgentSpec, key_file: &Path, socket: &Path, state_dir: &Path) -> String {
    let mut t = String::new();
    writeln!(t, "[agent]").unwrap();
    writeln!(t, "name = {}", q(&spec.name)).unwrap();
    writeln!(t, "private_key_file = {}", q(key_file.to_str().unwrap())).unwrap();
    writeln!(t, "listen_port = {}", spec.listen_port).unwrap();
    writeln!(t, "interface = \"wgm0\"").unwrap();
    if !spec.subnet.is_empty() {
        writeln!(t, "subnet = {}", q(&spec.subnet)).unwrap();
        let default = if spec.subnet.contains(':') {
            "fd00::/8"
        } else {
            "10.0.0.0/8"
        };
        let cluster = spec.cluster_cidr.as_deref().unwrap_or(default);
        writeln!(t, "cluster_cidr = {}", q(cluster)).unwrap();
    }
    writeln!(t, "socket = {}", q(socket.to_str().unwrap())).unwrap();
    writeln!(t, "state_dir = {}", q(state_dir.to_str().unwrap())).unwrap();
    if let Some(o) = spec.offload {
        writeln!(t, "offload = {o}").unwrap();
    }
    if let Some(e) = &spec.endpoint {
        writeln!(t, "endpoint = {}", q(e)).unwrap();
    }
    if !spec.labels.is_empty() {
        let kv: Vec<String> = spec
            .labels
            .iter()
            .map(|(k, v)| format!("{} = {}", q(k), q(v)))
            .collect();
        writeln!(t, "labels = {{ {} }}", kv.join(", ")).unwrap();
    }
    for p in &spec.peers {
        writeln!(t, "\n[[peer]]").unwrap();
        if let Some(n) = &p.name {
            writeln!(t, "name = {}", q(n)).unwrap();
        }
        writeln!(t, "public_key = {}", q(&p.public_key)).unwrap();
        if let Some(e) = &p.endpoint {
            writeln!(t, "endpoint = {}", q(e)).unwrap();
        }
        let ips: Vec<String> = p.allowed_ips.iter().map(|s| q(s)).collect();
        writeln!(t, "allowed_ips = [{}]", ips.join(", ")).unwrap();
        if let Some(k) = p.persistent_keepalive {
            writeln!(t, "persistent_keepalive = {k}").unwrap();
        }
        if let Some(f) = &p.preshared_key_file {
            writeln!(t, "preshared_key_file = {}", q(f.to_str().unwrap())).unwrap();
        }
    }
    if let Some(c) = &spec.control {
        writeln!(t, "\n[control]").unwrap();
        writeln!(t, "url = {}", q(&c.url)).unwrap();
        match &c.join_token_file {
            Some(f) if !c.inline_token => {
                writeln!(t, "join_token_file = {}", q(f.to_str().unwrap())).unwrap();
            }
            _ => writeln!(t, "join_token = {}", q(&c.join_token)).unwrap(),
        }
    }
    if let Some(d) = &spec.docker {
        writeln!(t, "\n[docker]").unwrap();
        writeln!(t, "plugin_dir = {}", q(d.plugin_dir.to_str().unwrap())).unwrap();
        writeln!(t, "socket = {}", q(d.socket.to_str().unwrap())).unwrap();
        let nets: Vec<String> = d.networks.iter().map(|n| q(n)).collect();
        writeln!(t, "networks = [{}]", nets.join(", ")).unwrap();
    }
    t
}

/// A `wgmesh agent` with its own directory (config, key, socket, state, logs). Its process
/// (start, stop, logs) is the [`Daemon`] it dereferences to.
pub struct Agent {
    pub ns: Netns,
    pub keys: KeyPair,
    pub config_path: PathBuf,
    pub socket: PathBuf,
    pub key_file: PathBuf,
    pub state_dir: PathBuf,
    spec: Mutex<AgentSpec>,
    // Before `dir`: the process is stopped before its directory goes.
    daemon: Daemon,
    dir: tempfile::TempDir,
}

impl Deref for Agent {
    type Target = Daemon;

    fn deref(&self) -> &Daemon {
        &self.daemon
    }
}

impl Agent {
    /// Writes the key and config; does not start the agent.
    pub fn prepare(ns: &Netns, spec: AgentSpec) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("wgm-agent")
            .tempdir()
            .expect("tempdir");
        let keys = KeyPair::generate();
        let key_file = dir.path().join("private.key");
        keys.write_private(&key_file);
        let state_dir = dir.path().join("state");
        std::fs::create_dir(&state_dir).expect("state dir");
        let config_path = dir.path().join("agent.toml");
        let daemon = Daemon::new(
            ns,
            "agent",
            format!("agent {}", ns.name()),
            "agent",
            &config_path,
            dir.path(),
        );
        let agent = Self {
            ns: ns.clone(),
            keys,
            config_path,
            socket: dir.path().join("agent.sock"),
            key_file,
            state_dir,
            spec: Mutex::new(spec.clone()),
            daemon,
            dir,
        };
        agent.set_spec(spec);
        agent
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn public_key(&self) -> &str {
        &self.keys.public
    }

    pub fn spec(&self) -> AgentSpec {
        self.spec
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// A `[[peer]]` entry describing this agent, for another host's config.
    pub fn as_peer(&self, endpoint: Option<&str>) -> PeerSpec {
        let s = self.spec();
        let mut p = PeerSpec::new(self.public_key(), &[&s.subnet]).name(&s.name);
        p.endpoint = endpoint.map(str::to_string);
        p
    }

    /// Rewrites the config file from `spec` (takes effect on start or [`Agent::reload`]). A
    /// `[control]` join token goes into the file `join-token` (0600) next to the config
    /// unless it is inline.
    pub fn set_spec(&self, mut spec: AgentSpec) {
        if let Some(c) = spec.control.as_mut() {
            if !c.inline_token {
                let f = c
                    .join_token_file
                    .get_or_insert_with(|| self.dir.path().join("join-token"))
                    .clone();
                write_private(&f, &format!("{}\n", c.join_token));
            }
        }
        let text = render(&spec, &self.key_file, &self.socket, &self.state_dir);
        self.write_config(&text);
        *self.spec.lock().unwrap_or_else(PoisonError::into_inner) = spec;
    }

    /// Waits until `status` answers; false after `timeout` or when the agent has exited.
    pub fn wait_ready(&self, timeout: Duration) -> bool {
        wait_until(timeout, || !self.is_running() || self.try_status().is_ok()) && self.is_running()
    }

    /// The subnet `status --json` reports.
    pub fn subnet(&self) -> String {
        let st = self.status();
        st["subnet"]
            .as_str()
            .unwrap_or_else(|| panic!("status has no subnet: {st}"))
            .to_string()
    }

    /// The public keys of the peers `status --json` lists (empty when status fails).
    pub fn peer_keys(&self) -> Vec<String> {
        self.try_status()
            .ok()
            .and_then(|st| {
                st["peers"].as_array().map(|ps| {
                    ps.iter()
                        .filter_map(|p| p["public_key"].as_str().map(str::to_string))
                        .collect()
                })
            })
            .unwrap_or_default()
    }

    /// The `peers[]` entry with this public key, if `status` lists it.
    pub fn try_peer_status(&self, public_key: &str) -> Option<Value> {
        let st = self.try_status().ok()?;
        st["peers"]
            .as_array()?
            .iter()
            .find(|p| p["public_key"] == public_key)
            .cloned()
    }

    /// The config text `spec` renders to, with this agent's paths.
    pub fn render(&self, spec: &AgentSpec) -> String {
        render(spec, &self.key_file, &self.socket, &self.state_dir)
    }

    pub fn write_config(&self, text: &str) {
        // Write then rename, so a reload never sees half a file.
        let tmp = self.dir.path().join("agent.toml.new");
        std::fs::write(&tmp, text).expect("write config");
        std::fs::rename(&tmp, &self.config_path).expect("rename config");
    }

    /// Starts the agent and waits until `status` answers. Panics (with the log) otherwise.
    pub fn start(&self) {
        self.daemon
            .start_until(READY_TIMEOUT, "answer `status`", |_| {
                self.try_status().map(drop)
            });
    }

    /// SIGHUP.
    pub fn reload(&self) {
        self.signal(Signal::SIGHUP);
    }

    /// Starts again with the same config (after [`Daemon::kill9`] or [`Daemon::stop`]).
    pub fn restart(&self) {
        self.start();
    }

    /// `wgmesh status --json --socket S`.
    pub fn try_status(&self) -> Result<Value, String> {
        let out = Command::new(BIN)
            .args(["status", "--json", "--socket"])
            .arg(&self.socket)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("run wgmesh status: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "wgmesh status: {}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        serde_json::from_slice(&out.stdout).map_err(|e| {
            format!(
                "status --json is not JSON ({e}): {}",
                String::from_utf8_lossy(&out.stdout)
            )
        })
    }

    pub fn status(&self) -> Value {
        self.try_status()
            .unwrap_or_else(|e| panic!("status of agent in {}: {e}", self.ns.name()))
    }

    /// The `peers[]` entry with this public key.
    pub fn peer_status(&self, public_key: &str) -> Value {
        let st = self.status();
        st["peers"]
            .as_array()
            .unwrap_or_else(|| panic!("status has no peers array: {st}"))
            .iter()
            .find(|p| p["public_key"] == public_key)
            .cloned()
            .unwrap_or_else(|| panic!("status lists no peer {public_key}: {st}"))
    }

    /// `wgmesh attach --netns NAME --socket S` (run in the host namespace). Returns the
    /// printed address, e.g. "10.42.1.2/24".
    pub fn try_attach(&self, workload: &Netns) -> Result<String, String> {
        self.try_attach_with(workload, None, &[])
    }

    /// `wgmesh attach --netns NAME [--ip IP] [--label K=V]... --socket S` (run in the host
    /// namespace). Returns the printed address, or the exit status and output.
    pub fn try_attach_with(
        &self,
        workload: &Netns,
        ip: Option<&str>,
        labels: &[&str],
    ) -> Result<String, String> {
        let mut args = vec![BIN, "attach", "--netns", workload.name()];
        if let Some(ip) = ip {
            args.extend(["--ip", ip]);
        }
        for l in labels {
            args.extend(["--label", l]);
        }
        args.extend(["--socket", self.socket.to_str().unwrap()]);
        let out = self.ns.exec(&args);
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
        } else {
            Err(format!(
                "wgmesh {}: {}: {}{}",
                args[1..].join(" "),
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }

    pub fn attach(&self, workload: &Netns) -> String {
        let a = self.try_attach(workload).unwrap_or_else(|e| panic!("{e}"));
        assert!(
            a.contains('/') && ip_of(&a).parse::<std::net::IpAddr>().is_ok(),
            "attach printed {a:?}, expected an address with prefix like 10.42.1.2/24"
        );
        a
    }

    pub fn diagnostics(&self) -> String {
        let status = match self.try_status() {
            Ok(v) => serde_json::to_string_pretty(&v).unwrap(),
            Err(e) => e,
        };
        format!(
            "===== agent in {} (pid {:?}) =====\n--- config {}\n{}\n--- status\n{}\n--- log (last 300 lines)\n{}\n",
            self.ns.name(),
            self.pid(),
            self.config_path.display(),
            std::fs::read_to_string(&self.config_path).unwrap_or_default(),
            status,
            tail(&self.log(), 300)
        )
    }
}

/// Writes `text` to `path` with mode 0600 (created so, never world-readable).
pub fn write_private(path: &Path, text: &str) {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let _ = std::fs::remove_file(path);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
    f.write_all(text.as_bytes())
        .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// "10.42.1.2/24" -> "10.42.1.2".
pub fn ip_of(cidr: &str) -> &str {
    cidr.split('/').next().unwrap_or(cidr)
}

/// A peer's counter from a `peers[]` entry of `status --json`.
pub fn counter(peer: &Value, key: &str) -> u64 {
    peer[key]
        .as_u64()
        .unwrap_or_else(|| panic!("peer status has no numeric {key}: {peer}"))
}
