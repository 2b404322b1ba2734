//! Putting workloads on the running host: `attach` gives a network namespace an address of the
//! host's subnet and a veth on the bridge, `detach` takes them away, and at start-up the
//! workloads of the state file are put back. The address list is [`super::workloads`]; the
//! netlink work is [`crate::host`].

use std::net::IpAddr;
use std::path::Path;

use super::workloads::{Workload, WorkloadError};
use super::Agent;
use crate::error::Chain;
use crate::host::{self, HostError};

impl Agent {
    pub(super) async fn attach(
        &mut self,
        netns: &str,
        ip: Option<IpAddr>,
    ) -> Result<Workload, String> {
        let addr = self
            .workloads
            .allocate(netns, ip)
            .map_err(|e| Chain(&e).to_string())?;
        let workload = Workload {
            netns: netns.to_owned(),
            ip: addr,
            host_ifname: host::host_ifname_for(netns),
        };
        self.wire(&workload)
            .await
            .map_err(|e| Chain(&e).to_string())?;
        self.workloads.insert(workload.clone());
        if let Err(e) = self.store.save(&self.workloads) {
            // Without the record the address could be handed out twice: undo.
            let _ = self.host.detach(&workload.host_ifname).await;
            self.workloads.remove(netns).ok();
            return Err(Chain(&e).to_string());
        }
        tracing::info!(netns, ip = %workload.ip, "workload attached");
        Ok(workload)
    }

    pub(super) async fn detach(&mut self, netns: &str) -> Result<Workload, String> {
        let workload = self.workloads.get(netns).cloned().ok_or_else(|| {
            WorkloadError::NotAttached {
                netns: netns.into(),
            }
            .to_string()
        })?;
        self.host
            .detach(&workload.host_ifname)
            .await
            .map_err(|e| Chain(&e).to_string())?;
        self.workloads.remove(netns).ok();
        self.store
            .save(&self.workloads)
            .map_err(|e| Chain(&e).to_string())?;
        tracing::info!(netns, ip = %workload.ip, "workload detached");
        Ok(workload)
    }

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
            .await
    }

    /// Puts the workloads of the state file back on the bridge: after kill -9 their veths still
    /// exist and only need the (possibly new) bridge; after a clean stop they are wired anew.
    /// Namespaces that no longer exist are forgotten.
    pub(super) async fn restore_workloads(&mut self) {
        let saved: Vec<Workload> = self.workloads.iter().cloned().collect();
        let mut changed = false;
        for w in saved {
            if !Path::new("/run/netns").join(&w.netns).exists() {
                tracing::warn!(netns = %w.netns, ip = %w.ip, "namespace is gone; forgetting its workload");
                self.workloads.remove(&w.netns).ok();
                changed = true;
                continue;
            }
            let result = match self.host.link_index(&w.host_ifname).await {
                Ok(Some(index)) => self.host.enslave(index, self.bridge_index).await,
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
