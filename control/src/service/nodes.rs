//! The admin's host calls: list the hosts (with whether each is online and holds the current
//! netmap, the workloads it reported, its key's epoch and age and its key rotation), remove
//! one.

use std::net::IpAddr;

use wgmesh_client::api::{NodeInfo, RemovedReply, ONLINE_WITHIN_SECS};

use super::caller::{host_target, require_admin, Caller};
use super::refusal::{registry_error, ApiError};
use super::rotation::info_of;
use super::workloads::report_of;
use super::Control;
use crate::audit::Action;

impl Control {
    /// `GET /v1/nodes`.
    pub fn list_nodes(
        &mut self,
        caller: &Caller,
        now: u64,
        from: Option<IpAddr>,
    ) -> Result<Vec<NodeInfo>, ApiError> {
        self.admin_only(caller, Action::NodeList, now, from)?;
        let mut nodes: Vec<NodeInfo> = self
            .registry
            .hosts()
            .values()
            .map(|h| NodeInfo {
                name: h.name.to_string(),
                subnet: h.subnet,
                endpoint: h.endpoint,
                public_key: h.public_key,
                labels: h.labels.clone(),
                joined_at: h.joined_at,
                last_seen: h.last_seen,
                online: h.last_seen != 0 && now.saturating_sub(h.last_seen) <= ONLINE_WITHIN_SECS,
                netmap_revision: self.held.get(&h.id).copied(),
                in_sync: self.held.get(&h.id) == Some(&self.registry.netmap_revision()),
                workloads: self
                    .registry
                    .workloads_of(h.id)
                    .iter()
                    .map(report_of)
                    .collect(),
                key_epoch: h.key_epoch,
                key_since: h.key_since,
                rotation: h.rotation.as_ref().map(info_of),
                rotation_abandoned_at: h.rotation_abandoned_at,
            })
            .collect();
        nodes.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(nodes)
    }

    /// `DELETE /v1/nodes/{name}`.
    pub fn remove_node(
        &mut self,
        caller: &Caller,
        name: &str,
        now: u64,
        from: Option<IpAddr>,
    ) -> Result<RemovedReply, ApiError> {
        // The target is named before the removal, while the host still has its id.
        let target = host_target(name, &self.registry);
        let result = self.try_remove_node(caller, name);
        self.audited(caller, Action::NodeRemove, target, result, now, from)
    }

    fn try_remove_node(&mut self, caller: &Caller, name: &str) -> Result<RemovedReply, ApiError> {
        require_admin(caller)?;
        let m = self.registry.plan_remove(name).map_err(registry_error)?;
        self.commit(&m)?;
        tracing::info!(%name, "host removed");
        Ok(RemovedReply {
            removed: name.to_owned(),
            revision: self.registry.netmap_revision(),
        })
    }
}
