//! The Docker part of `wgmesh status`: the containers on this host's wgmesh networks, and
//! whether the plugin can work (dockerd reachable, plugin socket present, the configured
//! networks there with our driver). In `status --json`:
//!
//! ```json
//! "containers": [{"id": "4f1c...", "name": "web1", "endpoint": "9a0b...", "network": "77aa...",
//!                 "ip": "10.42.1.3/24", "host_ifname": "wgmd9a0b1c2d3e",
//!                 "labels": {"container": "web1", "role": "frontend"}, "labels_known": true}],
//! "docker": {"plugin_socket": "/run/docker/plugins/wgmesh.sock", "plugin_socket_present": true,
//!            "engine": {"socket": "/var/run/docker.sock", "reachable": true, "error": null},
//!            "networks": [{"name": "appnet", "state": "ready", "detail": "77aa..."}],
//!            "problems": []}
//! ```
//!
//! `problems` is what `wgmesh doctor docker` prints: empty when all is well. Pure.

use std::collections::BTreeMap;
use std::fmt::Write;

use serde::{Deserialize, Serialize};

/// A container's endpoint on a wgmesh network of this host.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ContainerStatus {
    /// Docker's container id; empty until the Docker API showed it.
    pub id: String,
    /// The container's name; empty until known.
    pub name: String,
    /// Docker's endpoint id.
    pub endpoint: String,
    /// Docker's network id.
    pub network: String,
    /// Its address, with prefix length.
    pub ip: String,
    /// The host end of its veth.
    pub host_ifname: String,
    /// Its labels for the policy.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Whether its labels are known yet (until then it is unlabelled for the policy).
    pub labels_known: bool,
}

/// The Docker plugin's health.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DockerStatus {
    /// The plugin socket.
    pub plugin_socket: String,
    /// Whether the socket file exists.
    pub plugin_socket_present: bool,
    /// The Docker API.
    pub engine: EngineStatus,
    /// The networks of `[docker] networks`.
    #[serde(default)]
    pub networks: Vec<DockerNetworkStatus>,
    /// What is wrong, one line each; empty when all is well.
    #[serde(default)]
    pub problems: Vec<String>,
}

/// Whether dockerd answers.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct EngineStatus {
    /// The Docker API socket.
    pub socket: String,
    /// Whether it answered last time; `None` before the first try.
    pub reachable: Option<bool>,
    /// The last error, when it did not.
    pub error: Option<String>,
}

/// A network the agent keeps on its dockerd.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DockerNetworkStatus {
    /// Its name.
    pub name: String,
    /// `waiting`, `ready`, `wrong_driver` or `failed`.
    pub state: String,
    /// The network id (ready), the driver it has (wrong_driver) or the error (failed).
    #[serde(default)]
    pub detail: Option<String>,
}

impl DockerStatus {
    /// The problems of this status: filled in by the agent from its other fields.
    pub fn find_problems(&mut self) {
        let mut p = Vec::new();
        if !self.plugin_socket_present {
            p.push(format!(
                "the plugin socket {} is missing: Docker cannot reach wgmesh (is another agent \
                 or dockerd's plugin folder in the way?)",
                self.plugin_socket
            ));
        }
        if self.engine.reachable == Some(false) {
            p.push(format!(
                "dockerd is unreachable at {}: {}",
                self.engine.socket,
                self.engine.error.as_deref().unwrap_or("no answer")
            ));
        }
        for n in &self.networks {
            let detail = n.detail.as_deref().unwrap_or("");
            match n.state.as_str() {
                "ready" => {}
                "waiting" => p.push(format!("network {}: waiting for dockerd to create it", n.name)),
                "wrong_driver" => p.push(format!(
                    "network {}: its driver is {detail}, not wgmesh: remove it (docker network rm {}) \
                     and the agent creates it with ours",
                    n.name, n.name
                )),
                _ => p.push(format!("network {}: cannot create it: {detail}", n.name)),
            }
        }
        self.problems = p;
    }

    /// Appends the Docker block of `wgmesh status` to `s`.
    pub fn render(&self, s: &mut String, containers: &[ContainerStatus]) {
        let _ = writeln!(s);
        let engine = match self.engine.reachable {
            Some(true) => "reachable",
            Some(false) => "unreachable",
            None => "not tried yet",
        };
        let _ = writeln!(
            s,
            "docker: plugin {} ({}), dockerd {} ({engine})",
            self.plugin_socket,
            if self.plugin_socket_present {
                "present"
            } else {
                "missing"
            },
            self.engine.socket
        );
        for n in &self.networks {
            let _ = writeln!(s, "  network {}: {}", n.name, n.state.replace('_', " "));
        }
        for problem in &self.problems {
            let _ = writeln!(s, "  problem: {problem}");
        }
        if !containers.is_empty() {
            let _ = writeln!(s, "containers:");
        }
        for c in containers {
            let labels = if c.labels_known {
                c.labels
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(",")
            } else {
                "(labels not known yet: unlabelled)".to_owned()
            };
            let name = if c.name.is_empty() { "?" } else { &c.name };
            let id = if c.id.is_empty() { &c.endpoint } else { &c.id };
            let line = format!(
                "  {:<12} {:<20} {:<18} {:<16} {labels}",
                id.get(..12).unwrap_or(id),
                name,
                c.ip,
                c.host_ifname
            );
            let _ = writeln!(s, "{}", line.trim_end());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status() -> DockerStatus {
        DockerStatus {
            plugin_socket: "/run/docker/plugins/wgmesh.sock".into(),
            plugin_socket_present: true,
            engine: EngineStatus {
                socket: "/var/run/docker.sock".into(),
                reachable: Some(true),
                error: None,
            },
            networks: vec![DockerNetworkStatus {
                name: "appnet".into(),
                state: "ready".into(),
                detail: Some("77aa".into()),
            }],
            problems: Vec::new(),
        }
    }

    #[test]
    fn problems_name_what_is_wrong() {
        let mut s = status();
        s.find_problems();
        assert!(s.problems.is_empty(), "{:?}", s.problems);
        s.plugin_socket_present = false;
        s.engine.reachable = Some(false);
        s.engine.error = Some("connection refused".into());
        s.networks.push(DockerNetworkStatus {
            name: "othernet".into(),
            state: "wrong_driver".into(),
            detail: Some("bridge".into()),
        });
        s.find_problems();
        assert_eq!(s.problems.len(), 3, "{:?}", s.problems);
        assert!(s.problems[0].contains("plugin socket /run/docker/plugins/wgmesh.sock is missing"));
        assert!(s.problems[1].contains("unreachable at /var/run/docker.sock: connection refused"));
        assert!(s.problems[2].contains("othernet: its driver is bridge, not wgmesh"));
        let mut out = String::new();
        s.render(&mut out, &[]);
        assert!(out.contains("network othernet: wrong driver"), "{out}");
        assert!(out.contains("problem: dockerd is unreachable"), "{out}");
    }

    #[test]
    fn containers_render_with_labels_or_say_they_are_not_known() {
        let c = ContainerStatus {
            id: "4f1c2d3e4f5a6b7c".into(),
            name: "web1".into(),
            endpoint: "9a0b".into(),
            network: "77aa".into(),
            ip: "10.42.1.3/24".into(),
            host_ifname: "wgmd9a0b1c2d3e".into(),
            labels: BTreeMap::from([("role".to_owned(), "frontend".to_owned())]),
            labels_known: true,
        };
        let unknown = ContainerStatus {
            labels_known: false,
            labels: BTreeMap::new(),
            name: String::new(),
            id: String::new(),
            ..c.clone()
        };
        let mut out = String::new();
        status().render(&mut out, &[c, unknown]);
        assert!(out.contains("4f1c2d3e4f5a web1"), "{out}");
        assert!(out.contains("role=frontend"), "{out}");
        assert!(out.contains("(labels not known yet: unlabelled)"), "{out}");
    }
}
