//! Changing what the running agent does without a restart: a SIGHUP reload of agent.toml, or a
//! new netmap from the control plane. Both end in [`Agent::apply_peers`]; both are all or
//! nothing (an invalid file or netmap leaves the running peers untouched), and settings that
//! need a restart are refused by name. A peer prefix that would override a route the agent did
//! not create makes a static reload fail (at its line in agent.toml); in a netmap it is left
//! out, logged and counted, and the rest applies.

use std::sync::Arc;
use std::time::Instant;

use wgmesh_config::netmap::{HostFilter, Netmap};
use wgmesh_config::{AgentConfig, AgentSection};

use super::control_link::check_ours;
use super::netmap_cache::NetmapCache;
use super::routes;
use super::source::peer_settings;
use super::{workloads, Agent, AgentError};
use crate::error::Chain;
use crate::peers::settings::{self, PeerSettings};

impl Agent {
    pub(super) async fn reload(&mut self) -> Result<String, AgentError> {
        let (new, text) = AgentConfig::load_with_text(&self.config_path)?;
        let mut fixed = fixed_fields_changed(&self.config.agent, &new.agent);
        fixed.extend(mode_changed(&self.config, &new));
        fixed.extend((self.config.docker != new.docker).then_some("[docker]"));
        if !fixed.is_empty() {
            return Err(AgentError::NeedsRestart {
                fields: fixed.join(", "),
            });
        }
        if new.control.is_some() {
            self.refresh_host_nets().await;
            // Peers come from the control plane; what agent.toml may change is the endpoint.
            if let Some(tx) = &self.endpoint {
                tx.send_replace(new.agent.endpoint);
            }
            let labels_changed = new.agent.labels != self.config.agent.labels;
            self.config = new;
            return Ok(format!(
                "reloaded {}: control mode, endpoint {}{}",
                self.config_path.display(),
                self.config
                    .agent
                    .endpoint
                    .map_or_else(|| "none".to_owned(), |e| e.to_string()),
                if labels_changed {
                    "; labels are sent when joining and do not change afterwards"
                } else {
                    ""
                }
            ));
        }
        self.reload_static(new, &text).await
    }

    /// A static reload of `new`, parsed from `text`: screened against the host's routes first
    /// (a refused prefix fails the reload at its line, and the route guard is left as it was),
    /// then a moved cluster is closed before the old one opens, then the peers apply. If they
    /// do not, the running cluster, its guard and its single cluster route stay.
    async fn reload_static(&mut self, new: AgentConfig, text: &str) -> Result<String, AgentError> {
        let settings = peer_settings(&new)?;
        let cluster = new
            .agent
            .cluster_cidr
            .expect("agent.toml without [control] has a cluster_cidr");
        let present = self.host_routes().await?;
        let next = self.route_guard.reloaded(&new, cluster);
        let (settings, refused) = next.screen(&settings, &present);
        routes::refuse_static(&self.config_path, text, &refused)?;
        let old = self.route_guard.cluster;
        let moved = cluster != old;
        if moved {
            // The new cluster is closed before the old one opens: no window.
            let _created =
                routes::close_cluster(&self.host, cluster, &next.guarded, &present).await?;
        }
        let running = std::mem::replace(&mut self.route_guard, next);
        self.refresh_host_nets().await;
        // Static mode has no policy: everything is allowed.
        let summary = match self.apply_peers(&settings, None).await {
            Ok(summary) => summary,
            Err(e) => {
                self.route_guard = running;
                self.refresh_host_nets().await;
                if moved {
                    if let Err(e) = self.host.remove_cluster_routes(Some(old)).await {
                        tracing::error!(%cluster, "cannot remove the new cluster route: {}", Chain(&e));
                    }
                }
                return Err(e);
            }
        };
        if moved {
            match self.host.remove_cluster_routes(Some(cluster)).await {
                Ok(_) => tracing::info!(%old, %cluster, "moved the cluster route"),
                Err(e) => {
                    tracing::error!(%old, "cannot remove the old cluster route: {}", Chain(&e))
                }
            }
        }
        self.config = new;
        Ok(format!(
            "reloaded {}: {summary}",
            self.config_path.display()
        ))
    }

    /// Applies a netmap from the control plane: its peers replace the running ones (unchanged
    /// peers keep their sessions), and it becomes the cached netmap.
    pub(super) async fn apply_netmap(&mut self, netmap: Netmap) -> Result<String, AgentError> {
        let keys: Vec<_> = self
            .peers
            .host_keys()
            .all()
            .map(|k| k.public_key())
            .collect();
        check_ours(&netmap, &self.config.agent.name, &keys)?;
        let pinned = self.route_guard.cluster;
        let settings = settings::from_netmap(&netmap, pinned)?;
        if netmap.host.subnet != self.subnet {
            return Err(AgentError::NeedsRestart {
                fields: format!(
                    "the subnet (the control plane moved it from {} to {})",
                    self.subnet, netmap.host.subnet
                ),
            });
        }
        self.refresh_host_nets().await;
        let present = self.host_routes().await?;
        let (settings, refused) = self.route_guard.screen(&settings, &present);
        let mut summary = self.apply_peers(&settings, netmap.filter.as_ref()).await?;
        if !refused.is_empty() {
            summary = format!("{summary}, {} prefixes refused", refused.len());
        }
        self.route_guard.record(refused);
        self.revision = Some(netmap.revision);
        if let Err(e) = NetmapCache::new(&self.config.agent.state_dir).save(&netmap) {
            tracing::error!("{}", Chain(&e));
        }
        Ok(format!(
            "applied netmap revision {}: {summary}",
            netmap.revision
        ))
    }

    /// Replaces the running peers with `settings` (already screened by the route guard) and the
    /// policy with `policy`, and routes their new prefixes (never replacing a route) and
    /// unroutes the old ones (only the agent's own).
    async fn apply_peers(
        &mut self,
        settings: &[PeerSettings],
        policy: Option<&HostFilter>,
    ) -> Result<String, AgentError> {
        let changes = self.peers.apply(settings)?;
        let policy_changed = self.peers.apply_policy(Instant::now(), policy);
        // The data path learns the new peers and policy together, in one snapshot, before the
        // kernel routes anything to them; flows the new policy forbids stop at their next
        // packet.
        self.shared.table.store(Arc::new(self.peers.table()));
        let gateway = workloads::gateway(self.subnet);
        for net in &changes.routes_added {
            if let Err(e) = self
                .host
                .add_route(*net, self.tun_index, Some(gateway))
                .await
            {
                tracing::error!(%net, "cannot add route: {}", Chain(&e));
            }
        }
        for net in &changes.routes_removed {
            if let Err(e) = self.host.delete_route(*net, self.tun_index).await {
                tracing::error!(%net, "cannot remove route: {}", Chain(&e));
            }
        }
        if let Some(dp) = &self.datapath {
            dp.initiate_all();
        }
        Ok(format!(
            "{} peers added, {} removed, {} changed{}",
            changes.added.len(),
            changes.removed.len(),
            changes.changed.len(),
            if policy_changed {
                format!(", policy generation {}", self.peers.filter().generation())
            } else {
                String::new()
            }
        ))
    }
}

fn fixed_fields_changed(old: &AgentSection, new: &AgentSection) -> Vec<&'static str> {
    let mut out = Vec::new();
    let mut check = |changed: bool, name: &'static str| {
        if changed {
            out.push(name);
        }
    };
    check(old.name != new.name, "agent.name");
    check(
        old.private_key_file != new.private_key_file,
        "agent.private_key_file",
    );
    check(old.listen_port != new.listen_port, "agent.listen_port");
    check(old.interface != new.interface, "agent.interface");
    check(old.bridge != new.bridge, "agent.bridge");
    check(old.mtu != new.mtu, "agent.mtu");
    check(old.subnet != new.subnet, "agent.subnet");
    check(old.socket != new.socket, "agent.socket");
    check(old.state_dir != new.state_dir, "agent.state_dir");
    check(old.audit_log != new.audit_log, "agent.audit_log");
    check(old.offload != new.offload, "agent.offload");
    out
}

fn mode_changed(old: &AgentConfig, new: &AgentConfig) -> Option<&'static str> {
    match (&old.control, &new.control) {
        (None, None) => None,
        (Some(a), Some(b)) if a.url == b.url => None,
        (Some(_), Some(_)) => Some("control.url"),
        _ => Some("[control] (static and control mode)"),
    }
}
