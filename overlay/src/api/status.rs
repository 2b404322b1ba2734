//! What `wgmesh status` shows: the agent's interface, key and port, every peer with its endpoint,
//! allowed IPs, latest handshake, counters and drops, and the attached workloads. The JSON form
//! (`wgmesh status --json`) is a stable interface, documented in README.md.
//!
//! Pure: building a [`Status`] takes already-read values, rendering it returns a string.

use std::collections::BTreeMap;
use std::fmt::Write;

use serde::{Deserialize, Serialize};

use crate::peers::counters::{HostDropCounts, PeerCounters};

pub use super::status_docker::{ContainerStatus, DockerNetworkStatus, DockerStatus, EngineStatus};
pub use super::status_policy::{ConntrackStatus, DeniedCount, PolicyStatus};

/// The agent's state, as `status` reports it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Status {
    /// The host's name.
    pub name: String,
    /// The TUN device.
    pub interface: String,
    /// The host's public key.
    pub public_key: String,
    /// The UDP port.
    pub listen_port: u16,
    /// The host's workload subnet.
    pub subnet: String,
    /// Which offloads are on.
    pub offload: OffloadStatus,
    /// Peers, sorted by public key.
    pub peers: Vec<PeerStatus>,
    /// Host-wide drops.
    pub dropped: HostDropCounts,
    /// Attached workloads, sorted by namespace.
    pub workloads: Vec<WorkloadStatus>,
    /// The control plane link; absent in static mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control: Option<ControlStatus>,
    /// The cluster CIDR the agent closes and the peer prefixes it refused to route.
    #[serde(default)]
    pub routes: RouteStatus,
    /// Whether the process may be core-dumped or have its memory read by other processes of
    /// its user (`PR_GET_DUMPABLE`); the agent turns it off at start, as it holds keys.
    #[serde(default)]
    pub dumpable: bool,
    /// The policy enforced; absent when none was applied (static mode, or no policy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<PolicyStatus>,
    /// Docker containers on this host's wgmesh networks, by endpoint.
    #[serde(default)]
    pub containers: Vec<ContainerStatus>,
    /// The Docker plugin; absent without a `[docker]` table.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub docker: Option<DockerStatus>,
    /// The host's key rotation in progress; absent when none runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_rotation: Option<KeyRotationStatus>,
}

/// A rotation of this host's key: the old key is still accepted.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct KeyRotationStatus {
    /// The key being retired.
    pub retiring_public_key: String,
    /// When it is retired (Unix seconds); absent when the control plane ends the rotation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retire_at: Option<u64>,
    /// The control plane's epoch of the new key (control mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<u64>,
}

/// One of a peer's tunnels: one per pair of keys while either side rotates.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct LaneStatus {
    /// Our key on it.
    pub local_key: String,
    /// The peer's key on it.
    pub remote_key: String,
    /// Whether it has a session.
    pub established: bool,
    /// `current` (both sides' current keys), `previous` (an older pair, still valid) or
    /// `draining` (the peer's key on it is gone: it only opens what is in flight).
    pub role: String,
}

/// What the agent enforces about routes.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct RouteStatus {
    /// The cluster CIDR, closed on the host by an `unreachable` route of protocol 119.
    pub cluster: String,
    /// Peer prefixes refused since the agent started (each reload or netmap counts each
    /// refused prefix once).
    pub refused_total: u64,
    /// The prefixes the last reload or netmap refused, and why.
    pub refused: Vec<RefusedRoute>,
}

/// A peer prefix the agent does not route into the tunnel.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RefusedRoute {
    /// The peer's name (or its key's short form).
    pub peer: String,
    /// The prefix.
    pub prefix: String,
    /// What routing it would override.
    pub reason: String,
}

/// The agent's link to its control plane.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ControlStatus {
    /// The control plane's URL.
    pub url: String,
    /// The revision of the netmap applied last.
    pub revision: u64,
    /// Whether the last call to the control plane succeeded (false: running on the last
    /// netmap, fail-static).
    pub connected: bool,
    /// The cluster CIDR pinned at join, which every netmap must name. The agent closes this
    /// same CIDR on the host, so it always equals `routes.cluster`; it is repeated here so that
    /// the control section says on its own which cluster this host trusts. (Optional in the
    /// JSON for agents that predate the pin.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_cidr: Option<String>,
    /// Netmaps refused since the agent started (each kept the running peers).
    #[serde(default)]
    pub netmaps_refused: u64,
    /// Whether the control plane acknowledged the agent's current list of workloads (false
    /// while a report is due or being retried).
    #[serde(default)]
    pub workloads_reported: bool,
}

/// Offloads in use.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct OffloadStatus {
    /// TUN TSO/GRO (virtio-net header).
    pub tun: bool,
    /// UDP GSO on send.
    pub udp_gso: bool,
    /// UDP GRO on receive.
    pub udp_gro: bool,
}

/// One peer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PeerStatus {
    /// Configured name.
    pub name: Option<String>,
    /// Public key, base64.
    pub public_key: String,
    /// Current endpoint.
    pub endpoint: Option<String>,
    /// Allowed IPs.
    pub allowed_ips: Vec<String>,
    /// Keepalive interval, seconds.
    pub persistent_keepalive: Option<u16>,
    /// Unix time of the latest handshake.
    pub latest_handshake: Option<u64>,
    /// Whether its tunnels use a preshared key.
    #[serde(default)]
    pub preshared_key: bool,
    /// The epoch of its current key (control mode: 0 at join, one more per rotation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_epoch: Option<u64>,
    /// Its tunnels, the current one first.
    #[serde(default)]
    pub lanes: Vec<LaneStatus>,
    /// Traffic and drops, as the data path counts them (flattened into the peer's object).
    #[serde(flatten)]
    pub counters: PeerCounters,
}

/// One attached workload.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct WorkloadStatus {
    /// Network namespace.
    pub netns: String,
    /// Address with prefix length.
    pub ip: String,
    /// Host-side veth.
    pub host_ifname: String,
    /// Its labels, as attached (the policy also gives it `host=<name>` and the host's labels).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

impl Status {
    /// Renders the status for people, in the manner of `wg show`. `now` is the current Unix time.
    pub fn render(&self, now: u64) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "interface: {} ({})", self.interface, self.name);
        let _ = writeln!(s, "  public key: {}", self.public_key);
        let _ = writeln!(s, "  listening port: {}", self.listen_port);
        let _ = writeln!(s, "  subnet: {}", self.subnet);
        if let Some(r) = &self.key_rotation {
            let until = r.retire_at.map_or_else(
                || "until the control plane ends the rotation".to_owned(),
                |t| format!("for {} more", ago(t.saturating_sub(now))),
            );
            let _ = writeln!(
                s,
                "  key rotation: the old key {} is still accepted {until}",
                r.retiring_public_key
            );
        }
        if let Some(c) = &self.control {
            let _ = writeln!(
                s,
                "  control: {} (netmap revision {}, {})",
                c.url,
                c.revision,
                if c.connected {
                    "connected"
                } else {
                    "unreachable: running on the last netmap"
                }
            );
            if let Some(cluster) = &c.cluster_cidr {
                let _ = writeln!(s, "  cluster: {cluster} (pinned at join)");
            }
            if c.netmaps_refused > 0 {
                let _ = writeln!(
                    s,
                    "  netmaps refused: {} (the agent's log says why)",
                    c.netmaps_refused
                );
            }
            if !c.workloads_reported {
                let _ = writeln!(
                    s,
                    "  workloads: not yet reported to the control plane (retrying)"
                );
            }
        }
        let _ = writeln!(
            s,
            "  offload: tun {}, udp gso {}, udp gro {}",
            on_off(self.offload.tun),
            on_off(self.offload.udp_gso),
            on_off(self.offload.udp_gro)
        );
        let _ = writeln!(s, "  cluster: {}", self.routes.cluster);
        if self.routes.refused_total > 0 {
            let _ = writeln!(
                s,
                "  routes refused: {} since start",
                self.routes.refused_total
            );
            for r in &self.routes.refused {
                let _ = writeln!(s, "    {} (peer {}): {}", r.prefix, r.peer, r.reason);
            }
        }
        let d = &self.dropped;
        if d.no_route + d.unknown_peer + d.malformed > 0 {
            let _ = writeln!(
                s,
                "  dropped: {} no route, {} unknown peer, {} malformed",
                d.no_route, d.unknown_peer, d.malformed
            );
        }
        let handshakes = d.handshake_rate_limited + d.handshake_queue_full + d.handshake_under_load;
        if handshakes > 0 {
            let _ = writeln!(
                s,
                "  handshakes dropped: {} over their source's share, {} queue full, {} under load \
                 (cookie sent)",
                d.handshake_rate_limited, d.handshake_queue_full, d.handshake_under_load
            );
        }
        if d.handshake_bad_mac > 0 {
            let _ = writeln!(s, "  handshakes dropped: {} bad mac1", d.handshake_bad_mac);
        }
        if let Some(p) = &self.policy {
            p.render(&mut s);
        }
        for p in &self.peers {
            p.render(&mut s, now);
        }
        if !self.workloads.is_empty() {
            let _ = writeln!(s);
            let _ = writeln!(s, "workloads:");
            for w in &self.workloads {
                let labels: Vec<String> =
                    w.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
                let line = format!(
                    "  {:<20} {:<18} {:<16} {}",
                    w.netns,
                    w.ip,
                    w.host_ifname,
                    labels.join(",")
                );
                let _ = writeln!(s, "{}", line.trim_end());
            }
        }
        if let Some(d) = &self.docker {
            d.render(&mut s, &self.containers);
        }
        s
    }
}

impl PeerStatus {
    /// Appends the peer's block of [`Status::render`] to `s`.
    fn render(&self, s: &mut String, now: u64) {
        let _ = writeln!(s);
        match &self.name {
            Some(n) => {
                let _ = writeln!(s, "peer: {} ({n})", self.public_key);
            }
            None => {
                let _ = writeln!(s, "peer: {}", self.public_key);
            }
        }
        if let Some(e) = &self.endpoint {
            let _ = writeln!(s, "  endpoint: {e}");
        }
        let allowed = if self.allowed_ips.is_empty() {
            "(none)".to_string()
        } else {
            self.allowed_ips.join(", ")
        };
        let _ = writeln!(s, "  allowed ips: {allowed}");
        if let Some(t) = self.latest_handshake {
            let _ = writeln!(s, "  latest handshake: {} ago", ago(now.saturating_sub(t)));
        }
        if let Some(epoch) = self.key_epoch {
            let _ = writeln!(s, "  key epoch: {epoch}");
        }
        if self.preshared_key {
            let _ = writeln!(s, "  preshared key: in use");
        }
        if self.lanes.len() > 1 {
            for l in &self.lanes {
                let _ = writeln!(
                    s,
                    "  tunnel {} -> {}: {}, {}",
                    l.local_key,
                    l.remote_key,
                    l.role,
                    if l.established { "up" } else { "no session" }
                );
            }
        }
        let _ = writeln!(
            s,
            "  transfer: {} received ({} packets), {} sent ({} packets)",
            bytes(self.counters.rx_bytes),
            self.counters.rx_packets,
            bytes(self.counters.tx_bytes),
            self.counters.tx_packets
        );
        if let Some(k) = self.persistent_keepalive {
            let _ = writeln!(s, "  persistent keepalive: every {k} seconds");
        }
        let d = &self.counters.dropped;
        if d.source_not_allowed + d.decrypt_failed + d.no_endpoint + d.no_session > 0 {
            let _ = writeln!(
                s,
                "  dropped: {} source not allowed, {} decrypt failed, {} no endpoint, {} no session",
                d.source_not_allowed, d.decrypt_failed, d.no_endpoint, d.no_session
            );
        }
        if d.destination_not_local > 0 {
            let _ = writeln!(
                s,
                "  dropped: {} addressed outside this host's subnet",
                d.destination_not_local
            );
        }
        if d.policy_denied + d.conntrack_full + d.policy_untracked + d.policy_malformed > 0 {
            let _ = writeln!(
                s,
                "  policy dropped: {} denied, {} conntrack full, {} untracked, {} malformed",
                d.policy_denied, d.conntrack_full, d.policy_untracked, d.policy_malformed
            );
        }
        if self.counters.roams_refused > 0 {
            let _ = writeln!(
                s,
                "  endpoint changes refused: {} (overlay, own or non-unicast address)",
                self.counters.roams_refused
            );
        }
    }
}

fn on_off(b: bool) -> &'static str {
    if b {
        "on"
    } else {
        "off"
    }
}

fn ago(secs: u64) -> String {
    match secs {
        0..=59 => format!("{secs} seconds"),
        60..=3599 => format!("{} minutes, {} seconds", secs / 60, secs % 60),
        _ => format!("{} hours, {} minutes", secs / 3600, (secs % 3600) / 60),
    }
}

fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.2} {}", UNITS[u])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::peers::counters::PeerDrops;

    #[test]
    fn renders_peers_and_drops() {
        let st = Status {
            name: "host-a".into(),
            interface: "wgm0".into(),
            public_key: "PUB".into(),
            listen_port: 51820,
            subnet: "10.42.1.0/24".into(),
            offload: OffloadStatus {
                tun: true,
                udp_gso: true,
                udp_gro: false,
            },
            peers: vec![PeerStatus {
                name: Some("host-b".into()),
                public_key: "PEER".into(),
                endpoint: Some("198.18.0.2:51820".into()),
                allowed_ips: vec!["10.42.2.0/24".into()],
                persistent_keepalive: Some(25),
                latest_handshake: Some(1000),
                preshared_key: true,
                key_epoch: Some(2),
                lanes: vec![
                    LaneStatus {
                        local_key: "NEW".into(),
                        remote_key: "PEER".into(),
                        established: true,
                        role: "current".into(),
                    },
                    LaneStatus {
                        local_key: "OLD".into(),
                        remote_key: "PEER".into(),
                        established: false,
                        role: "previous".into(),
                    },
                ],
                counters: PeerCounters {
                    rx_bytes: 2048,
                    tx_bytes: 10,
                    rx_packets: 2,
                    tx_packets: 1,
                    dropped: PeerDrops {
                        source_not_allowed: 3,
                        ..Default::default()
                    },
                    ..Default::default()
                },
            }],
            dropped: HostDropCounts::default(),
            workloads: vec![WorkloadStatus {
                netns: "web".into(),
                ip: "10.42.1.2/24".into(),
                host_ifname: "wgm-web".into(),
                labels: [
                    ("role".to_owned(), "frontend".to_owned()),
                    ("tier".to_owned(), "a".to_owned()),
                ]
                .into(),
            }],
            control: Some(ControlStatus {
                url: "https://198.18.0.10:7443".into(),
                revision: 7,
                connected: false,
                cluster_cidr: Some("10.42.0.0/16".into()),
                netmaps_refused: 2,
                workloads_reported: false,
            }),
            routes: RouteStatus {
                cluster: "10.42.0.0/16".into(),
                refused_total: 2,
                refused: vec![RefusedRoute {
                    peer: "host-b".into(),
                    prefix: "10.42.9.0/24".into(),
                    reason: "it would override the route `10.42.9.0/24 dev dummy0 proto kernel`"
                        .into(),
                }],
            },
            dumpable: false,
            policy: None,
            containers: Vec::new(),
            docker: None,
            key_rotation: Some(KeyRotationStatus {
                retiring_public_key: "OLD".into(),
                retire_at: Some(1125),
                epoch: None,
            }),
        };
        let out = st.render(1065);
        assert!(
            out.contains(
                "key rotation: the old key OLD is still accepted for 1 minutes, 0 seconds more"
            ),
            "{out}"
        );
        assert!(out.contains("preshared key: in use"), "{out}");
        assert!(out.contains("key epoch: 2"), "{out}");
        assert!(out.contains("tunnel NEW -> PEER: current, up"), "{out}");
        assert!(
            out.contains("tunnel OLD -> PEER: previous, no session"),
            "{out}"
        );
        assert!(out.contains("cluster: 10.42.0.0/16"), "{out}");
        assert!(out.contains("routes refused: 2 since start"), "{out}");
        assert!(
            out.contains("10.42.9.0/24 (peer host-b): it would override the route"),
            "{out}"
        );
        assert!(out.contains("peer: PEER (host-b)"), "{out}");
        assert!(
            out.contains("latest handshake: 1 minutes, 5 seconds ago"),
            "{out}"
        );
        assert!(out.contains("2.00 KiB received (2 packets)"), "{out}");
        assert!(out.contains("3 source not allowed"), "{out}");
        assert!(out.contains("udp gro off"), "{out}");
        assert!(out.contains("netmaps refused: 2"), "{out}");
        assert!(out.contains("workloads: not yet reported"), "{out}");
        assert!(
            out.contains(
                "web                  10.42.1.2/24       wgm-web          role=frontend,tier=a"
            ),
            "{out}"
        );
        assert!(
            out.contains("control: https://198.18.0.10:7443 (netmap revision 7, unreachable"),
            "{out}"
        );
        let json = serde_json::to_string(&st).unwrap();
        assert_eq!(serde_json::from_str::<Status>(&json).unwrap(), st);
        // The counters sit directly in the peer's object, as `status --json` has always shown.
        let value = serde_json::to_value(&st).unwrap();
        assert_eq!(value["peers"][0]["rx_bytes"], 2048);
        assert_eq!(value["peers"][0]["dropped"]["source_not_allowed"], 3);
        assert_eq!(value["peers"][0]["dropped"]["destination_not_local"], 0);
        assert_eq!(value["peers"][0]["roams_refused"], 0);
        assert_eq!(value["dropped"]["no_route"], 0);
        assert_eq!(value["routes"]["refused_total"], 2);
        assert_eq!(value["workloads"][0]["labels"]["role"], "frontend");
        assert_eq!(value["control"]["workloads_reported"], false);
    }
}
