//! Which peer prefixes the agent routes into the tunnel: the cluster CIDR it enforces, the
//! addresses a tunnel route may never take (the control plane, endpoints), and screening a
//! set of peer settings against the host's routes, so that a prefix overriding a route the
//! agent did not create is refused (logged once, counted) while the rest applies.
//!
//! [`screen`] is pure; [`Agent::host_routes`] and the cluster-route steps do netlink I/O.

use std::net::IpAddr;
use std::path::Path;

use ipnet::IpNet;
use wgmesh_config::AgentConfig;

use super::{Agent, AgentError};
use crate::api::status::{RefusedRoute, RouteStatus};
use crate::host::{self, Conflict, Guarded, HostNet, HostRoute};
use crate::peers::settings::PeerSettings;

/// What the agent enforces about routes: the cluster CIDR, the addresses no tunnel route may
/// contain, what it refused last and how many refusals it made since it started.
#[derive(Debug)]
pub(super) struct RouteGuard {
    /// The cluster CIDR, closed on the host by an `unreachable` route.
    pub(super) cluster: IpNet,
    /// The control plane's and this host's own underlay addresses (the peers' endpoints are
    /// added per screening, from their settings).
    pub(super) guarded: Vec<Guarded>,
    /// The prefixes refused by the last screening.
    pub(super) refused: Vec<Refused>,
    /// Refusals since start (each screening counts each refused prefix once).
    pub(super) refused_total: u64,
}

/// A peer prefix that is not routed, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Refused {
    /// The peer's name, or its key's short form.
    pub(super) peer: String,
    /// Index of the peer in the settings, and of the prefix in its `allowed_ips`.
    pub(super) at: (usize, usize),
    /// The refused prefix.
    pub(super) prefix: IpNet,
    /// What it would override.
    pub(super) conflict: Conflict,
}

impl RouteGuard {
    /// The guard for `cluster`, with the control plane's address (when `control` is an IP, or
    /// resolves to some) and this host's endpoint guarded.
    pub(super) fn new(cluster: IpNet, config: &AgentConfig, control: &[IpAddr]) -> Self {
        let mut guarded: Vec<Guarded> = control
            .iter()
            .map(|&addr| Guarded {
                addr,
                what: "the control plane's address".into(),
            })
            .collect();
        if let Some(e) = config.agent.endpoint {
            guarded.push(Guarded {
                addr: e.ip(),
                what: "this host's endpoint".into(),
            });
        }
        Self {
            cluster,
            guarded,
            refused: Vec::new(),
            refused_total: 0,
        }
    }

    /// The guard a static reload to `config` would leave: `cluster` (the reloaded file's),
    /// this host's endpoint from `config`, nothing refused yet, and the count so far. Static
    /// mode has no control plane to guard.
    pub(super) fn reloaded(&self, config: &AgentConfig, cluster: IpNet) -> Self {
        let mut next = Self::new(cluster, config, &[]);
        next.refused_total = self.refused_total;
        next
    }

    /// Screens `settings` against the guard's cluster and addresses (see [`screen`]). Pure:
    /// the guard remembers nothing until [`Self::record`], so a reload or netmap that fails
    /// after screening leaves it as it was. Returns the settings to apply and what was refused.
    pub(super) fn screen(
        &self,
        settings: &[PeerSettings],
        routes: &[HostRoute],
    ) -> (Vec<PeerSettings>, Vec<Refused>) {
        screen(settings, self.cluster, routes, &self.guarded)
    }

    /// Remembers and counts what the screening of settings now applied refused, and logs one
    /// line per refused prefix.
    pub(super) fn record(&mut self, refused: Vec<Refused>) {
        for r in &refused {
            tracing::error!(
                peer = %r.peer,
                prefix = %r.prefix,
                "refusing to route {} to peer {} into the tunnel: {}",
                r.prefix,
                r.peer,
                r.conflict
            );
        }
        self.refused_total += refused.len() as u64;
        self.refused = refused;
    }

    /// What `status` shows.
    pub(super) fn status(&self) -> RouteStatus {
        RouteStatus {
            cluster: self.cluster.to_string(),
            refused_total: self.refused_total,
            refused: self
                .refused
                .iter()
                .map(|r| RefusedRoute {
                    peer: r.peer.clone(),
                    prefix: r.prefix.to_string(),
                    reason: r.conflict.to_string(),
                })
                .collect(),
        }
    }
}

/// Splits `settings` into what may be routed and what may not: every allowed prefix is checked
/// with [`host::conflict`] against `routes` (the host's main table), `cluster`, `guarded` and
/// every peer's endpoint. A refused prefix is taken out of its peer's `allowed_ips` (so it is
/// neither routed to the peer nor accepted from it); the peer itself stays. Pure.
pub(super) fn screen(
    settings: &[PeerSettings],
    cluster: IpNet,
    routes: &[HostRoute],
    guarded: &[Guarded],
) -> (Vec<PeerSettings>, Vec<Refused>) {
    let mut all = guarded.to_vec();
    all.extend(settings.iter().filter_map(|s| {
        s.endpoint.map(|e| Guarded {
            addr: e.ip(),
            what: format!("the endpoint of peer {}", peer_name(s)),
        })
    }));
    let mut refused = Vec::new();
    let accepted = settings
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let name = peer_name(s);
            let mut s = s.clone();
            let mut j = 0;
            s.allowed_ips.retain(|&prefix| {
                let at = (i, j);
                j += 1;
                match host::conflict(prefix, cluster, routes, &all) {
                    None => true,
                    Some(conflict) => {
                        refused.push(Refused {
                            peer: name.clone(),
                            at,
                            prefix,
                            conflict,
                        });
                        false
                    }
                }
            });
            s
        })
        .collect();
    (accepted, refused)
}

/// A peer as log lines name it: its name, or its current key's short form.
fn peer_name(s: &PeerSettings) -> String {
    s.name
        .clone()
        .unwrap_or_else(|| s.keys.current().short().to_string())
}

/// The control plane's addresses, for [`RouteGuard::new`]: the URL's IP, or what its DNS name
/// resolves to now (nothing if it does not resolve within a second).
pub(super) async fn control_addrs(config: &AgentConfig) -> Vec<IpAddr> {
    let Some(control) = &config.control else {
        return Vec::new();
    };
    let host = control.url.host().to_string();
    if let Ok(ip) = host.trim_matches(['[', ']']).parse::<IpAddr>() {
        return vec![ip];
    }
    let lookup = tokio::net::lookup_host((host, control.url.port()));
    match tokio::time::timeout(std::time::Duration::from_secs(1), lookup).await {
        Ok(Ok(addrs)) => addrs.map(|a| a.ip()).collect(),
        _ => Vec::new(),
    }
}

impl Agent {
    /// The host's main table now.
    pub(super) async fn host_routes(&self) -> Result<Vec<HostRoute>, AgentError> {
        Ok(self.host.main_routes().await?)
    }
}

/// In static mode a refused prefix is an error in agent.toml: the first one, at its
/// `peer[i].allowed_ips[j]` entry of `text`, the file at `config_path` the settings were
/// parsed from.
pub(super) fn refuse_static(
    config_path: &Path,
    text: &str,
    refused: &[Refused],
) -> Result<(), AgentError> {
    let Some(first) = refused.first() else {
        return Ok(());
    };
    let (peer, index) = first.at;
    let message = format!(
        "{} would not be routed into the tunnel: {}; a peer's allowed IPs may not override a \
         route this agent did not create (remove that route, or this prefix)",
        first.prefix, first.conflict
    );
    Err(AgentConfig::allowed_ip_error(text, config_path, peer, index, message).into())
}

/// Closes `cluster` on the host before anything is routed into the tunnel: refuses if closing
/// it would cut the host off ([`host::cluster_hazard`]: too wide, or holding the control plane
/// or this host's endpoint), or if a route that is not the agent's has
/// exactly that destination, then creates (or takes over) the
/// cluster's `unreachable` route. Cluster routes of earlier runs for other prefixes are removed
/// by the caller once the new one is in place ([`HostNet::remove_cluster_routes`]). Returns
/// whether the route was created (false: taken over).
pub(super) async fn close_cluster(
    host: &HostNet,
    cluster: IpNet,
    guarded: &[Guarded],
    routes: &[HostRoute],
) -> Result<bool, AgentError> {
    if let Some(why) = host::cluster_hazard(cluster, guarded) {
        return Err(AgentError::ClusterUnsafe { cluster, why });
    }
    if let Some(taken) = host::cluster_conflict(cluster, routes) {
        return Err(AgentError::ClusterRouteTaken {
            cluster,
            route: taken.to_string(),
        });
    }
    let created = host.ensure_cluster_route(cluster).await?;
    if created {
        tracing::info!(%cluster, "closed the cluster CIDR: unreachable {cluster} proto {}", host::ROUTE_PROTOCOL);
    } else {
        tracing::info!(%cluster, "took over the cluster route left by an earlier run");
    }
    Ok(created)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::{RouteKind, MAIN_TABLE};
    use crate::peers::settings::PeerKeys;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn peer(name: &str, endpoint: Option<&str>, allowed: &[&str]) -> PeerSettings {
        PeerSettings {
            name: Some(name.into()),
            keys: PeerKeys::one(wgmesh_config::PrivateKey::generate().public_key()),
            endpoint: endpoint.map(|e| e.parse().unwrap()),
            allowed_ips: allowed.iter().map(|s| net(s)).collect(),
            persistent_keepalive: None,
            preshared_key: None,
            pair_psks: Vec::new(),
            key_epoch: None,
        }
    }

    fn foreign(dst: &str) -> HostRoute {
        HostRoute {
            dst: net(dst),
            protocol: 2,
            table: MAIN_TABLE,
            kind: RouteKind::Unicast,
            device: Some("dummy0".into()),
            gateway: None,
        }
    }

    #[test]
    fn a_conflicting_prefix_is_taken_out_and_the_rest_stays() {
        let settings = [
            peer(
                "b",
                Some("198.18.0.2:51820"),
                &["10.42.2.0/24", "10.9.0.0/24"],
            ),
            peer("c", None, &["10.42.3.0/24"]),
        ];
        let routes = [foreign("10.9.0.0/24"), foreign("198.18.0.0/24")];
        let (accepted, refused) = screen(&settings, net("10.0.0.0/8"), &routes, &[]);
        assert_eq!(accepted[0].allowed_ips, vec![net("10.42.2.0/24")]);
        assert_eq!(accepted[1].allowed_ips, vec![net("10.42.3.0/24")]);
        assert_eq!(accepted.len(), 2, "the peer stays, only its prefix goes");
        assert_eq!(refused.len(), 1);
        assert_eq!(refused[0].peer, "b");
        assert_eq!(refused[0].at, (0, 1));
        assert_eq!(refused[0].conflict, Conflict::Route(foreign("10.9.0.0/24")));
    }

    #[test]
    fn a_prefix_holding_an_endpoint_or_the_control_plane_is_refused() {
        let settings = [
            peer("b", Some("10.42.3.9:51820"), &["10.42.2.0/24"]),
            peer("c", None, &["10.42.3.0/24", "10.7.0.0/16"]),
        ];
        let control = [Guarded {
            addr: "10.7.0.10".parse().unwrap(),
            what: "the control plane's address".into(),
        }];
        let (accepted, refused) = screen(&settings, net("10.0.0.0/8"), &[], &control);
        assert!(accepted[1].allowed_ips.is_empty());
        let reasons: Vec<String> = refused.iter().map(|r| r.conflict.to_string()).collect();
        assert_eq!(
            reasons,
            vec![
                "it contains 10.42.3.9, the endpoint of peer b".to_owned(),
                "it contains 10.7.0.10, the control plane's address".to_owned(),
            ]
        );
        assert_eq!(refused[1].at, (1, 1));
    }

    #[test]
    fn the_guard_counts_every_refusal_and_shows_the_last() {
        let config = AgentConfig::from_toml(
            "[agent]\nname = \"a\"\nsubnet = \"10.42.1.0/24\"\ncluster_cidr = \"10.42.0.0/16\"\n",
            Path::new("agent.toml"),
        )
        .unwrap();
        let mut guard = RouteGuard::new(net("10.42.0.0/16"), &config, &[]);
        let settings = [peer("b", None, &["10.42.2.0/24", "10.43.0.0/24"])];
        for round in 0..2 {
            let (accepted, refused) = guard.screen(&settings, &[]);
            assert_eq!(accepted[0].allowed_ips, vec![net("10.42.2.0/24")]);
            assert_eq!(guard.refused_total, round, "screening records nothing");
            guard.record(refused);
        }
        let status = guard.status();
        assert_eq!(status.refused_total, 2);
        assert_eq!(status.refused.len(), 1);
        assert_eq!(status.refused[0].prefix, "10.43.0.0/24");
        assert!(status.refused[0]
            .reason
            .contains("outside the cluster CIDR"));
    }

    #[test]
    fn a_reloaded_guard_takes_the_new_cluster_and_endpoint_and_keeps_the_count() {
        let config = |cluster: &str, endpoint: &str| {
            let text = format!(
                "[agent]\nname = \"a\"\nsubnet = \"10.42.1.0/24\"\ncluster_cidr = \"{cluster}\"\n\
                 endpoint = \"{endpoint}\"\n"
            );
            AgentConfig::from_toml(&text, Path::new("agent.toml")).unwrap()
        };
        let old = config("10.42.0.0/16", "198.18.0.1:51820");
        let mut guard = RouteGuard::new(net("10.42.0.0/16"), &old, &[]);
        let (_, refused) = guard.screen(&[peer("b", None, &["10.43.0.0/24"])], &[]);
        guard.record(refused);
        let new = config("10.0.0.0/8", "198.18.0.7:51820");
        let next = guard.reloaded(&new, net("10.0.0.0/8"));
        assert_eq!(next.cluster, net("10.0.0.0/8"));
        assert_eq!(next.refused_total, 1);
        assert!(next.refused.is_empty());
        let addrs: Vec<IpAddr> = next.guarded.iter().map(|g| g.addr).collect();
        assert_eq!(addrs, vec!["198.18.0.7".parse::<IpAddr>().unwrap()]);
        // The running guard is untouched.
        assert_eq!(guard.cluster, net("10.42.0.0/16"));
    }

    #[test]
    fn a_static_refusal_names_the_line_of_the_text_it_is_given() {
        let text =
            "[agent]\nname = \"a\"\nsubnet = \"10.42.1.0/24\"\ncluster_cidr = \"10.42.0.0/16\"\n\n\
                    [[peer]]\npublic_key = \"3/p3fb4ZcxQHYwqHcetro79Do7qwCZun+9vYGxlRD10=\"\n\
                    allowed_ips = [\"10.42.2.0/24\", \"10.42.9.0/24\"]\n";
        let refused = [Refused {
            peer: "b".into(),
            at: (0, 1),
            prefix: net("10.42.9.0/24"),
            conflict: Conflict::Route(foreign("10.42.9.0/24")),
        }];
        // The path does not exist: the position comes from the text, not from the file.
        let e = refuse_static(Path::new("/nonexistent/agent.toml"), text, &refused).unwrap_err();
        let e = e.to_string();
        assert!(
            e.starts_with("/nonexistent/agent.toml:8:32: peer[0].allowed_ips[1]:"),
            "{e}"
        );
        assert!(refuse_static(Path::new("agent.toml"), text, &[]).is_ok());
    }
}
