//! The `wgmesh control` plane under test, run in its own namespace, with its admin CLI and raw
//! HTTPS calls (`curl --cacert`), and hosts whose agents join it.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::net::Ipv4Addr;
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use super::agent::{q, AgentSpec, ControlRef, BIN};
use super::daemon::{tail, Daemon};
use super::netns::Netns;
use super::scenario::Host;
use super::{assert_eventually, Bridge, Cluster};

/// How long the control plane may take to log that it listens.
pub const CONTROL_READY_TIMEOUT: Duration = Duration::from_secs(20);

/// What the log says once the control plane accepts connections.
pub const LISTENING: &str = "control plane listening";

/// The `[control]` table (paths are filled in by [`ControlPlane`]).
#[derive(Clone, Debug)]
pub struct ControlSpec {
    pub port: u16,
    pub cluster_cidr: String,
    pub host_prefix: Option<u8>,
    /// `advertise` entries; empty: the control plane's underlay address.
    pub advertise: Vec<String>,
    /// More `key = value` lines for the `[control]` table.
    pub extra: Vec<String>,
}

impl Default for ControlSpec {
    fn default() -> Self {
        Self {
            port: 7443,
            cluster_cidr: "10.42.0.0/16".into(),
            host_prefix: Some(24),
            advertise: Vec::new(),
            extra: Vec::new(),
        }
    }
}

/// `wgmesh control` with its own directory (config, state, audit log, logs). Its process
/// (start, stop, logs) is the [`Daemon`] it dereferences to.
pub struct ControlPlane {
    pub ns: Netns,
    pub ip: Ipv4Addr,
    pub spec: ControlSpec,
    pub config_path: PathBuf,
    pub state_dir: PathBuf,
    pub audit_log: PathBuf,
    // Before `dir`: the process is stopped before its directory goes.
    daemon: Daemon,
    dir: tempfile::TempDir,
}

impl Deref for ControlPlane {
    type Target = Daemon;

    fn deref(&self) -> &Daemon {
        &self.daemon
    }
}

/// Renders `control.toml`. One key per line, in this order: listen, advertise, state_dir,
/// cluster_cidr, host_prefix, store, audit_log.
pub fn render(spec: &ControlSpec, ip: Ipv4Addr, state_dir: &Path, audit_log: &Path) -> String {
    let mut t = String::new();
    writeln!(t, "[control]").unwrap();
    writeln!(t, "listen = {}", q(&format!("0.0.0.0:{}", spec.port))).unwrap();
    let advertise: Vec<String> = if spec.advertise.is_empty() {
        vec![q(&ip.to_string())]
    } else {
        spec.advertise.iter().map(|a| q(a)).collect()
    };
    writeln!(t, "advertise = [{}]", advertise.join(", ")).unwrap();
    writeln!(t, "state_dir = {}", q(state_dir.to_str().unwrap())).unwrap();
    writeln!(t, "cluster_cidr = {}", q(&spec.cluster_cidr)).unwrap();
    if let Some(p) = spec.host_prefix {
        writeln!(t, "host_prefix = {p}").unwrap();
    }
    writeln!(t, "store = \"embedded\"").unwrap();
    writeln!(t, "audit_log = {}", q(audit_log.to_str().unwrap())).unwrap();
    for line in &spec.extra {
        writeln!(t, "{line}").unwrap();
    }
    t
}

impl ControlPlane {
    /// Writes the config; does not start the control plane.
    pub fn prepare(ns: &Netns, ip: Ipv4Addr, spec: ControlSpec) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("wgm-control")
            .tempdir()
            .expect("tempdir");
        let state_dir = dir.path().join("state");
        let audit_log = dir.path().join("audit.jsonl");
        let config_path = dir.path().join("control.toml");
        let daemon = Daemon::new(
            ns,
            "control plane",
            format!("control plane in {}", ns.name()),
            "control",
            &config_path,
            dir.path(),
        );
        let cp = Self {
            ns: ns.clone(),
            ip,
            config_path,
            state_dir,
            audit_log,
            spec,
            daemon,
            dir,
        };
        cp.write_config(&render(&cp.spec, ip, &cp.state_dir, &cp.audit_log));
        cp
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn write_config(&self, text: &str) {
        std::fs::write(&self.config_path, text).expect("write control.toml");
    }

    /// `https://IP:PORT`.
    pub fn url(&self) -> String {
        format!("https://{}:{}", self.ip, self.spec.port)
    }

    /// `state_dir/admin.toml`.
    pub fn admin_file(&self) -> PathBuf {
        self.state_dir.join("admin.toml")
    }

    /// `state_dir/ca.pem`.
    pub fn ca_pem(&self) -> PathBuf {
        self.state_dir.join("ca.pem")
    }

    /// The admin token (`WGMA1-...`) from `admin.toml`.
    pub fn admin_token(&self) -> String {
        let text = std::fs::read_to_string(self.admin_file())
            .unwrap_or_else(|e| panic!("read {}: {e}", self.admin_file().display()));
        text.lines()
            .filter_map(|l| l.trim().strip_prefix("token"))
            .filter_map(|r| r.trim_start().strip_prefix('='))
            .map(|r| r.trim().trim_matches('"').to_string())
            .next()
            .unwrap_or_else(|| panic!("admin.toml has no token line:\n{text}"))
    }

    /// A [`ControlRef`] for an agent's `[control]` table, joining with `token`.
    pub fn control_ref(&self, token: &str) -> ControlRef {
        ControlRef::new(&self.url(), token)
    }

    /// Starts the control plane and waits until it logs that it listens (and `admin.toml`
    /// exists). Panics with its log otherwise.
    pub fn start(&self) {
        self.daemon.start_until(
            CONTROL_READY_TIMEOUT,
            &format!("log {LISTENING:?} and write admin.toml"),
            |proc| {
                if proc.log().contains(LISTENING) && self.admin_file().exists() {
                    Ok(())
                } else {
                    Err(String::new())
                }
            },
        );
    }

    /// Starts again with the same config and state.
    pub fn restart(&self) {
        self.start();
    }

    /// `wgmesh ARGS` with `WGMESH_ADMIN` set to this control plane's admin file, run in `ns`.
    pub fn cli_in(&self, ns: &Netns, args: &[&str]) -> Output {
        let mut full = vec![BIN];
        full.extend_from_slice(args);
        ns.command(&full)
            .env("WGMESH_ADMIN", self.admin_file())
            .output()
            .unwrap_or_else(|e| panic!("cannot run wgmesh {args:?} in {}: {e}", ns.name()))
    }

    /// `wgmesh ARGS` with the admin file, run in the control plane's namespace.
    pub fn cli(&self, args: &[&str]) -> Output {
        self.cli_in(&self.ns, args)
    }

    /// Like [`ControlPlane::cli`]; panics unless it exits 0. Returns stdout.
    pub fn cli_ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "`wgmesh {}` failed ({}): {}{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8 output")
    }

    /// `wgmesh token create ARGS`: the token, checked to be the only thing printed
    /// (`WGM1-<64 hex>-<secret>` and a newline).
    pub fn token_create(&self, args: &[&str]) -> String {
        let mut full = vec!["token", "create"];
        full.extend_from_slice(args);
        let out = self.cli_ok(&full);
        assert!(
            out.ends_with('\n') && out.lines().count() == 1,
            "`wgmesh {}` should print only the token and a newline, printed {out:?}",
            full.join(" ")
        );
        let token = out.trim_end().to_string();
        assert_join_token_shape(&token);
        token
    }

    /// `wgmesh node list --json`, parsed.
    pub fn node_list_json(&self) -> Vec<Value> {
        let out = self.cli_ok(&["node", "list", "--json"]);
        let v: Value = serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("node list --json is not JSON ({e}): {out}"));
        v.as_array()
            .unwrap_or_else(|| panic!("node list --json is not an array: {out}"))
            .clone()
    }

    /// The names in `node list --json`.
    pub fn node_names(&self) -> Vec<String> {
        self.node_list_json()
            .iter()
            .map(|n| {
                n["name"]
                    .as_str()
                    .unwrap_or_else(|| panic!("node without a name: {n}"))
                    .to_string()
            })
            .collect()
    }

    /// The `node list --json` entry called `name`.
    pub fn node(&self, name: &str) -> Option<Value> {
        self.node_list_json()
            .into_iter()
            .find(|n| n["name"] == name)
    }

    /// `wgmesh node remove NAME`; panics unless it exits 0.
    pub fn node_remove(&self, name: &str) {
        self.cli_ok(&["node", "remove", name]);
    }

    /// One HTTPS request with `curl --cacert ca.pem` from `ns`: returns (status, body);
    /// status 0 when no HTTP answer came (the body is then curl's error).
    pub fn curl_in(
        &self,
        ns: &Netns,
        method: &str,
        path: &str,
        bearer: Option<&str>,
        body: Option<&str>,
    ) -> (u16, String) {
        let url = format!("{}{path}", self.url());
        let ca = self.ca_pem();
        let mut args = vec![
            "curl",
            "-sS",
            "--max-time",
            "15",
            "--cacert",
            ca.to_str().unwrap(),
            "-X",
            method,
            "-w",
            "\n%{http_code}",
        ];
        let auth;
        if let Some(b) = bearer {
            auth = format!("Authorization: Bearer {b}");
            args.extend(["-H", &auth]);
        }
        if body.is_some() {
            args.extend([
                "-H",
                "Content-Type: application/json",
                "--data-binary",
                "@-",
            ]);
        }
        args.push(&url);
        let mut cmd = ns.command(&args);
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn curl");
        {
            let mut si = child.stdin.take().expect("stdin");
            let _ = si.write_all(body.unwrap_or("").as_bytes());
        }
        let out = child.wait_with_output().expect("wait curl");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (resp, code) = text.rsplit_once('\n').unwrap_or(("", &text));
        let code: u16 = code.trim().parse().unwrap_or(0);
        if code == 0 {
            return (0, String::from_utf8_lossy(&out.stderr).into_owned());
        }
        (code, resp.to_string())
    }

    /// [`ControlPlane::curl_in`] from the control plane's namespace.
    pub fn curl(
        &self,
        method: &str,
        path: &str,
        bearer: Option<&str>,
        body: Option<&str>,
    ) -> (u16, String) {
        self.curl_in(&self.ns, method, path, bearer, body)
    }

    /// `POST /v1/join` with this token, name, key and endpoint: (status, body).
    pub fn join_raw(
        &self,
        token: &str,
        name: &str,
        public_key: &str,
        endpoint: Option<&str>,
    ) -> (u16, String) {
        let mut body = serde_json::json!({"token": token, "name": name, "public_key": public_key});
        if let Some(e) = endpoint {
            body["endpoint"] = Value::from(e);
        }
        self.curl("POST", "/v1/join", None, Some(&body.to_string()))
    }

    /// A successful join: the credential (`WGMH1-...`) and the netmap.
    pub fn join_ok(&self, token: &str, name: &str, public_key: &str) -> (String, Value) {
        let (st, body) = self.join_raw(token, name, public_key, None);
        assert_eq!(st, 200, "join of {name} answered {st}: {body}");
        let v: Value = serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("join answer is not JSON ({e}): {body}"));
        let cred = v["credential"]
            .as_str()
            .unwrap_or_else(|| panic!("join answer has no credential: {body}"))
            .to_string();
        assert!(cred.starts_with("WGMH1-"), "credential {cred:?}");
        (cred, v["netmap"].clone())
    }

    pub fn diagnostics(&self) -> String {
        let audit = std::fs::read_to_string(&self.audit_log).unwrap_or_default();
        format!(
            "===== control plane in {} (pid {:?}) =====\n--- config {}\n{}\n--- log (last 300 \
             lines)\n{}\n--- audit log (last 50 lines)\n{}\n",
            self.ns.name(),
            self.pid(),
            self.config_path.display(),
            std::fs::read_to_string(&self.config_path).unwrap_or_default(),
            tail(&self.log(), 300),
            tail(&audit, 50)
        )
    }
}

/// Asserts `token` looks like `WGM1-<64 hex>-<secret>`.
#[track_caller]
pub fn assert_join_token_shape(token: &str) {
    let mut parts = token.splitn(3, '-');
    let (p, d, s) = (parts.next(), parts.next(), parts.next());
    assert!(
        p == Some("WGM1")
            && d.is_some_and(|d| d.len() == 64 && d.bytes().all(|b| b.is_ascii_hexdigit()))
            && s.is_some_and(|s| !s.is_empty()),
        "not a join token of the form WGM1-<64 hex>-<secret>: {token:?}"
    );
}

/// The token with its CA digest changed in one hex digit.
pub fn with_altered_digest(token: &str) -> String {
    let mut b = token.as_bytes().to_vec();
    // "WGM1-" is 5 bytes; change the first digest character.
    b[5] = if b[5] == b'0' { b'1' } else { b'0' };
    String::from_utf8(b).unwrap()
}

/// The `reason` of a refusal body.
pub fn reason(body: &str) -> String {
    serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| v["reason"].as_str().map(str::to_string))
        .unwrap_or_else(|| format!("<no reason in {body:?}>"))
}

/// A fresh public key from `wgmesh genkey | wgmesh pubkey`.
pub fn fresh_public_key() -> String {
    let out = std::process::Command::new(BIN)
        .arg("genkey")
        .stdin(Stdio::null())
        .output()
        .expect("wgmesh genkey");
    assert!(out.status.success(), "wgmesh genkey failed");
    let out = super::keys::run_with_stdin(BIN, &["pubkey"], &out.stdout);
    assert!(out.status.success(), "wgmesh pubkey failed");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// The underlay address of host number `n` (1-based): 198.18.0.n.
pub fn host_ip(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, 0, n)
}

/// The control plane's underlay address.
pub const CONTROL_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 10);

/// A host namespace `tag` plugged into `bridge` at 198.18.0.n with an agent `host-{tag}`
/// (port 51820, endpoint its underlay address) that joins `cp` with `token`; not started.
pub fn joined_host_prepared(
    c: &Cluster,
    bridge: &Bridge,
    cp: &ControlPlane,
    tag: &str,
    n: u8,
    token: &str,
) -> Host {
    let ns = c.netns(tag);
    let ip = host_ip(n);
    bridge.plug(&ns, ip);
    let port = 51820;
    let agent = c.agent_prepared(
        &ns,
        AgentSpec::joined(
            &format!("host-{tag}"),
            port,
            &format!("{ip}:{port}"),
            cp.control_ref(token),
        )
        .label("zone", tag),
    );
    Host {
        ns,
        ip,
        port,
        agent,
    }
}

/// The agent of `h` lists `other`'s public key among its peers.
pub fn lists_peer(h: &Host, other: &Host) -> bool {
    h.agent
        .peer_keys()
        .iter()
        .any(|k| k == other.agent.public_key())
}

/// Waits until every host lists every other as a peer (each pair within `timeout`).
pub fn assert_list_each_other(hosts: &[Host], timeout: Duration) {
    for h in hosts {
        for o in hosts.iter().filter(|o| o.ip != h.ip) {
            assert_eventually(
                timeout,
                &format!("{} lists {} as a peer", h.ns.name(), o.ns.name()),
                || lists_peer(h, o),
            );
        }
    }
}

/// A control plane on a fresh bridge, for tests that need only one.
pub fn control_on_bridge(c: &Cluster, spec: ControlSpec) -> (Bridge, Arc<ControlPlane>) {
    let bridge = c.bridge();
    let cp = c.control(&bridge, CONTROL_IP, spec);
    (bridge, cp)
}

/// [`control_on_bridge`] (default spec), a token from `token create TOKEN_ARGS`, and hosts
/// `tags` (numbered 1, 2, ... in order) that join with it one after the other, each started
/// (see [`Host::started`]).
pub fn control_and_joined_hosts(
    c: &Cluster,
    token_args: &[&str],
    tags: &[&str],
) -> (Bridge, Arc<ControlPlane>, String, Vec<Host>) {
    let (bridge, cp) = control_on_bridge(c, ControlSpec::default());
    let token = cp.token_create(token_args);
    let hosts = tags
        .iter()
        .enumerate()
        .map(|(i, t)| joined_host_prepared(c, &bridge, &cp, t, i as u8 + 1, &token).started())
        .collect();
    (bridge, cp, token, hosts)
}

/// Each host's (key epoch, registered public key, rotation state) from `node list --json`.
pub fn host_keys(cp: &ControlPlane) -> BTreeMap<String, (u64, String, Option<String>)> {
    cp.node_list_json()
        .iter()
        .map(|n| {
            (
                n["name"].as_str().unwrap_or_default().to_owned(),
                (
                    n["key_epoch"].as_u64().unwrap_or(0),
                    n["public_key"].as_str().unwrap_or_default().to_owned(),
                    n["rotation"]["state"].as_str().map(str::to_owned),
                ),
            )
        })
        .collect()
}

/// Waits until every host's key epoch is `epoch` and none rotates.
pub fn wait_epoch(cp: &ControlPlane, epoch: u64, timeout: Duration) {
    assert_eventually(timeout, &format!("every host at key epoch {epoch}"), || {
        host_keys(cp)
            .values()
            .all(|(e, _, state)| *e == epoch && state.is_none())
    });
}

/// A control plane whose `[control]` table has the `extra` lines, and hosts `tags` joined to
/// it with one reusable token, started.
pub fn control_with_hosts(
    c: &Cluster,
    extra: &[&str],
    tags: &[&str],
) -> (Bridge, Arc<ControlPlane>, Vec<Host>) {
    let spec = ControlSpec {
        extra: extra.iter().map(|s| (*s).to_owned()).collect(),
        ..ControlSpec::default()
    };
    let (bridge, cp) = control_on_bridge(c, spec);
    let token = cp.token_create(&["--reusable"]);
    let hosts: Vec<Host> = tags
        .iter()
        .enumerate()
        .map(|(i, t)| joined_host_prepared(c, &bridge, &cp, t, i as u8 + 1, &token).started())
        .collect();
    (bridge, cp, hosts)
}
