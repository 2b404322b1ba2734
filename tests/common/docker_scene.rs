//! Docker scenes: a control plane and hosts joined to it, each host with a dockerd of its own
//! ([`Dockerd`]) and an agent whose `[docker]` table points at it; and probes run inside
//! containers (busybox: `ping`, `wget` against `httpd`).

use std::sync::Arc;
use std::time::Duration;

use super::agent::DockerRef;
use super::control::{control_on_bridge, joined_host_prepared, ControlPlane, ControlSpec};
use super::dockerd::Dockerd;
use super::scenario::Host;
use super::{assert_eventually, wait_until, Bridge, Cluster};

/// One host: its dockerd is dropped (its containers removed, through the plugin) while its
/// agent still runs.
pub struct DockerHost {
    pub dockerd: Dockerd,
    pub host: Host,
}

/// A control plane and Docker hosts on one underlay bridge.
pub struct DockerScene {
    pub hosts: Vec<DockerHost>,
    pub cp: Arc<ControlPlane>,
    pub bridge: Bridge,
}

impl DockerScene {
    /// Hosts `tags` joined with one token, each with its dockerd (started first) and an agent
    /// with `[docker] networks = NETWORKS`; waits until every host knows how each network is (`ready`, unless a test made it otherwise).
    /// `before_agent` runs on each dockerd before its agent starts.
    pub fn new(
        c: &Cluster,
        tags: &[&str],
        networks: &[&str],
        before_agent: impl Fn(&Dockerd),
    ) -> Self {
        let (bridge, cp) = control_on_bridge(c, ControlSpec::default());
        let token = cp.token_create(&["--reusable", "--ttl", "1h"]);
        let mut hosts = Vec::new();
        for (i, tag) in tags.iter().enumerate() {
            let host = joined_host_prepared(c, &bridge, &cp, tag, i as u8 + 1, &token);
            let dockerd = Dockerd::start(&host.ns);
            before_agent(&dockerd);
            let mut spec = host.agent.spec();
            spec.docker = Some(DockerRef {
                plugin_dir: dockerd.plugin_dir(),
                socket: dockerd.socket(),
                networks: networks.iter().map(|n| (*n).to_owned()).collect(),
            });
            host.agent.set_spec(spec);
            host.agent.start();
            hosts.push(DockerHost { dockerd, host });
        }
        let s = Self { hosts, cp, bridge };
        for h in &s.hosts {
            for n in networks {
                h.wait_network_settled(n);
            }
        }
        s
    }
}

impl DockerHost {
    /// Waits until the agent's status shows network `name` in `state`.
    pub fn wait_network(&self, name: &str, state: &str) {
        assert_eventually(
            Duration::from_secs(30),
            &format!("network {name} {state} on {}", self.host.ns.name()),
            || self.network_state(name).as_deref() == Some(state),
        );
    }

    /// Waits until the agent knows how network `name` is (not `waiting` any more).
    pub fn wait_network_settled(&self, name: &str) {
        assert_eventually(
            Duration::from_secs(30),
            &format!("network {name} settled on {}", self.host.ns.name()),
            || self.network_state(name).is_some_and(|s| s != "waiting"),
        );
    }

    /// The state the agent's status gives network `name`.
    pub fn network_state(&self, name: &str) -> Option<String> {
        let st = self.host.agent.try_status().ok()?;
        st["docker"]["networks"]
            .as_array()?
            .iter()
            .find(|n| n["name"] == name)
            .and_then(|n| n["state"].as_str().map(str::to_owned))
    }

    /// `status.containers` of the agent.
    pub fn containers(&self) -> Vec<serde_json::Value> {
        self.host.agent.status()["containers"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// A container `name` on `network` with `labels`, running `sleep`; returns its address.
    pub fn sleeper(&self, name: &str, network: &str, labels: &[&str], extra: &[&str]) -> String {
        self.dockerd
            .run(name, network, labels, extra, &["sleep", "100000"]);
        self.dockerd.ip_of(name, network)
    }

    /// Whether `ping -c1 -W1 IP` from container `from` gets an answer.
    pub fn pings(&self, from: &str, ip: &str) -> bool {
        self.dockerd
            .exec(from, &["ping", "-c1", "-W1", ip])
            .status
            .success()
    }

    /// Starts httpd in container `name` on each of `ports`, serving `/www/ok`.
    pub fn serve(&self, name: &str, ports: &[u16]) {
        let mut script = "mkdir -p /www && echo ok > /www/ok".to_owned();
        for p in ports {
            script.push_str(&format!(" && httpd -p {p} -h /www"));
        }
        let out = self.dockerd.exec(name, &["sh", "-c", &script]);
        assert!(
            out.status.success(),
            "httpd in {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Whether container `from` gets `/ok` from `ip:port` within 2 s.
    pub fn fetches(&self, from: &str, ip: &str, port: u16) -> bool {
        let url = format!("http://{ip}:{port}/ok");
        // busybox's own `wget -T` crashes (SIGSEGV) in Debian's build: `timeout` instead.
        let out = self
            .dockerd
            .exec(from, &["timeout", "2", "wget", "-q", "-O", "-", &url]);
        out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "ok"
    }
}

/// Waits until `ping` from container `from` on `h` reaches `ip` (within 20 s).
pub fn assert_pings(h: &DockerHost, from: &str, ip: &str) {
    assert!(
        wait_until(Duration::from_secs(20), || h.pings(from, ip)),
        "{from} on {} cannot ping {ip}\nagent log:\n{}",
        h.host.ns.name(),
        h.host.agent.log()
    );
}
