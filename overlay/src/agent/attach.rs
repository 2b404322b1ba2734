//! Putting workloads on the running host: `attach` gives a network namespace an address of the
//! host's subnet and a veth on the bridge (its port guarded against spoofing and isolated, the
//! bridge's neighbour entry for it pinned) and its labels, `detach` takes them away, and at
//! start-up the workloads of the state file are put back, guarded again. An attach of an
//! attached namespace only replaces its labels (same address, same veth). The address list is
//! [`super::workloads`]; the netlink work is [`crate::host`].
//!
//! Local first: every change is made and saved here, then the whole list is published for the
//! control plane ([`Agent::publish_workloads`]), which a background task reports; an attach or
//! detach never waits for the control plane, nor fails because it is down.

use std::net::IpAddr;
use std::path::Path;

use wgmesh_config::labels::{self, LabelError, Labels};

use super::statefile::StateFileError;
use super::workloads::docker::CONTAINER_PREFIX;
use super::workloads::{AttachPlan, Workload, WorkloadError};
use super::Agent;
use crate::error::Chain;
use crate::host::{self, HostError, NETNS_DIR};

/// Why `attach` or `detach` failed. The local API answers with the error and its causes
/// ([`Chain`]), so each variant shows exactly what its cause shows.
#[derive(Debug, thiserror::Error)]
pub(super) enum AttachError {
    /// The labels asked for break the label rules, or set the reserved `host` label.
    #[error("labels")]
    Labels(#[from] LabelError),
    /// No address for the namespace, or it is not attached.
    #[error(transparent)]
    Address(#[from] WorkloadError),
    /// The veth pair could not be made or removed.
    #[error(transparent)]
    Host(#[from] HostError),
    /// The workloads' state file could not be written.
    #[error(transparent)]
    Store(#[from] StateFileError),
    /// A namespace name that Docker containers' names begin with.
    #[error("network namespace {netns:?}: names beginning with {CONTAINER_PREFIX:?} are reserved for Docker containers; rename the namespace")]
    ReservedName {
        /// The namespace.
        netns: String,
    },
}

impl Agent {
    /// Puts the network namespace `netns` on the bridge with `ip`, or the lowest free address,
    /// and `labels`, and records it; for an attached namespace, only replaces its labels. The
    /// labels are checked first (the local API is input too): a refused attach changes nothing.
    pub(super) async fn attach(
        &mut self,
        netns: &str,
        ip: Option<IpAddr>,
        labels: Labels,
    ) -> Result<Workload, AttachError> {
        labels::check_reported_labels(netns, &labels)?;
        if netns.starts_with(CONTAINER_PREFIX) {
            // The control plane knows containers by such names: an attach must not shadow one.
            return Err(AttachError::ReservedName {
                netns: netns.to_owned(),
            });
        }
        self.settle_addresses();
        let addr = match self.workloads.plan_attach(netns, ip, &labels)? {
            AttachPlan::Wire(addr) => addr,
            AttachPlan::Relabel => return self.relabel(netns, labels),
            AttachPlan::Unchanged => {
                let w = self.workloads.get(netns).cloned();
                return w.ok_or_else(|| not_attached(netns));
            }
        };
        let workload = Workload {
            netns: netns.to_owned(),
            ip: addr,
            host_ifname: host::host_ifname_for(netns),
            labels,
        };
        self.wire(&workload).await?;
        self.workloads.insert(workload.clone());
        if let Err(e) = self.store.save(&self.workloads) {
            // Without the record the address could be handed out twice: undo.
            let _ = self.host.detach(&workload.host_ifname).await;
            self.unpin(&workload).await;
            self.workloads.remove(netns).ok();
            return Err(e.into());
        }
        self.share_workload_names();
        self.publish_workloads();
        tracing::info!(netns, ip = %workload.ip, labels = ?workload.labels, "workload attached");
        Ok(workload)
    }

    /// Gives the attached workload in `netns` new labels and saves them; its address and veth
    /// stay.
    fn relabel(&mut self, netns: &str, labels: Labels) -> Result<Workload, AttachError> {
        let old = self.workloads.relabel(netns, labels)?;
        if let Err(e) = self.store.save(&self.workloads) {
            // Refused whole: the labels it had stay, in memory as on disk.
            self.workloads.relabel(netns, old)?;
            return Err(e.into());
        }
        self.publish_workloads();
        let w = self
            .workloads
            .get(netns)
            .cloned()
            .ok_or_else(|| not_attached(netns))?;
        tracing::info!(netns, ip = %w.ip, labels = ?w.labels, previous = ?old, "workload relabelled");
        Ok(w)
    }

    /// Publishes the whole workload list for the control plane (control mode); returns at
    /// once, the report goes in the background.
    pub(super) fn publish_workloads(&mut self) {
        if let Some(reports) = self.reports.as_mut() {
            let list = self.workloads.report();
            let generation = reports.publish(list.clone());
            self.workloads.published(generation, &list);
        }
        self.settle_addresses();
    }

    /// Frees the cooled addresses: call before giving one out.
    pub(super) fn settle_addresses(&mut self) {
        if let Some(reports) = &self.reports {
            self.workloads
                .settle(reports.held(), super::docker::unix_now());
        }
    }

    /// Takes the network namespace `netns` off the bridge and forgets its address.
    pub(super) async fn detach(&mut self, netns: &str) -> Result<Workload, AttachError> {
        let workload = self
            .workloads
            .get(netns)
            .cloned()
            .ok_or_else(|| not_attached(netns))?;
        self.host.detach(&workload.host_ifname).await?;
        self.unpin(&workload).await;
        self.workloads.remove(netns).ok();
        self.share_workload_names();
        // The workload is gone from the host whether or not the file can be written: the
        // control plane is told so either way.
        self.publish_workloads();
        self.store.save(&self.workloads)?;
        tracing::info!(netns, ip = %workload.ip, "workload detached");
        Ok(workload)
    }

    /// Tells the audit log which namespace (or container) each workload address is.
    pub(super) fn share_workload_names(&self) {
        let containers = self.workloads.containers().map(|c| {
            let name = if c.name.is_empty() {
                c.report_name()
            } else {
                format!("container {}", c.name)
            };
            (c.ip.addr(), name)
        });
        self.names.set(
            self.workloads
                .iter()
                .map(|w| (w.ip.addr(), w.netns.clone()))
                .chain(containers),
        );
    }

    /// Creates the workload's veth pair and pins the bridge's neighbour entry for it; undoes
    /// both on failure.
    async fn wire(&self, w: &Workload) -> Result<(), HostError> {
        self.host
            .attach_netns(
                &w.netns,
                &w.host_ifname,
                self.bridge_index,
                w.ip,
                self.workloads.gateway(),
                self.config.agent.mtu,
            )
            .await?;
        let addr = w.ip.addr();
        if let Err(e) = self
            .host
            .pin_neighbour(self.bridge_index, addr, host::workload_mac(addr))
            .await
        {
            let _ = self.host.detach(&w.host_ifname).await;
            self.unpin(w).await;
            return Err(e);
        }
        Ok(())
    }

    /// Guards a workload whose veth a killed agent left: its MAC as the agent sets it, its
    /// port's filters and isolation, the bridge's neighbour entry.
    async fn rewire(&self, w: &Workload, index: u32) -> Result<(), HostError> {
        let addr = w.ip.addr();
        self.host.reset_workload_mac(&w.netns, addr).await?;
        self.host
            .secure_port(index, &w.host_ifname, self.bridge_index, addr)
            .await?;
        self.host
            .pin_neighbour(self.bridge_index, addr, host::workload_mac(addr))
            .await
    }

    /// Removes the bridge's neighbour entries for a workload that is gone (best effort: a
    /// stale entry only matters until its address is given out again, which replaces it).
    async fn unpin(&self, w: &Workload) {
        if let Err(e) = self
            .host
            .unpin_neighbour(self.bridge_index, w.ip.addr())
            .await
        {
            tracing::warn!(netns = %w.netns, "cannot remove the workload's neighbour entry: {}", Chain(&e));
        }
    }

    /// Puts the workloads of the state file back on the bridge: after kill -9 their veths still
    /// exist and are guarded again on the (possibly new) bridge; after a clean stop they are
    /// wired anew. Namespaces that no longer exist are forgotten.
    pub(super) async fn restore_workloads(&mut self) {
        let saved: Vec<Workload> = self.workloads.iter().cloned().collect();
        let mut changed = false;
        for w in saved {
            if !Path::new(NETNS_DIR).join(&w.netns).exists() {
                tracing::warn!(netns = %w.netns, ip = %w.ip, "namespace is gone; forgetting its workload");
                self.unpin(&w).await;
                self.workloads.remove(&w.netns).ok();
                changed = true;
                continue;
            }
            let result = match self.host.link_index(&w.host_ifname).await {
                Ok(Some(index)) => self.rewire(&w, index).await,
                Ok(None) => self.wire(&w).await,
                Err(e) => Err(e),
            };
            match result {
                Ok(()) => tracing::info!(netns = %w.netns, ip = %w.ip, "workload restored"),
                Err(e) => {
                    tracing::error!(netns = %w.netns, "cannot restore workload: {}", Chain(&e))
                }
            }
        }
        if changed {
            if let Err(e) = self.store.save(&self.workloads) {
                tracing::error!("{}", Chain(&e));
            }
        }
    }
}

fn not_attached(netns: &str) -> AttachError {
    WorkloadError::NotAttached {
        netns: netns.into(),
    }
    .into()
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::path::PathBuf;

    use super::*;

    #[test]
    fn attach_errors_read_as_their_cause_with_its_chain() {
        let e = AttachError::from(WorkloadError::NotAttached { netns: "w1".into() });
        assert_eq!(
            Chain(&e).to_string(),
            "network namespace \"w1\" is not attached"
        );
        let host = Labels::from([("host".to_owned(), "x".to_owned())]);
        let e = AttachError::from(labels::check_workload_labels(&host).unwrap_err());
        assert!(
            Chain(&e)
                .to_string()
                .starts_with("labels: the label key \"host\" is reserved"),
            "{}",
            Chain(&e)
        );
        let e = AttachError::from(StateFileError::Io {
            what: "state file",
            path: PathBuf::from("/state/workloads.json"),
            source: io::Error::other("disk full"),
        });
        assert_eq!(
            Chain(&e).to_string(),
            "state file /state/workloads.json: disk full"
        );
    }
}
