//! A host's workload report ([`Registry::plan_workloads`]) and the rules a host's workloads
//! keep ([`Registry::check_workloads`]), which replay and snapshots check too.
//!
//! A host reports only addresses of its own subnet: the registry gives labels to addresses,
//! and policy trusts them, so a host must never be able to label another host's address.

use std::collections::{BTreeMap, BTreeSet};

use wgmesh_config::labels::{self, LabelError};

use super::error::{RegistryError, WorkloadRefused};
use super::mutation::Mutation;
use super::records::{assignable, gateway, Host, Workload};
use super::Registry;
use crate::ids::HostId;

/// Most workloads one host may report.
pub const MAX_WORKLOADS_PER_HOST: usize = 4096;

/// Longest workload name, in bytes (a file name's limit, as `/run/netns/NAME` is one).
const MAX_NAME_LEN: usize = 255;

impl Registry {
    /// Plans host `host`'s workload report: its whole list, which replaces the one it had.
    /// `None` when the list is the one the registry already holds (reports are repeated).
    ///
    /// Refuses the whole report when one workload has an address that is not a usable one of
    /// the host's own subnet (another host's, the gateway, the network or broadcast address),
    /// when two share an address or a name, when a name is no network namespace's, when
    /// labels break the label rules or set the reserved `host` label, or when there are more
    /// than [`MAX_WORKLOADS_PER_HOST`].
    pub fn plan_workloads(
        &self,
        host: HostId,
        mut workloads: Vec<Workload>,
    ) -> Result<Option<Mutation>, RegistryError> {
        let h = self
            .hosts
            .get(&host)
            .ok_or_else(|| RegistryError::NoSuchHost(host.to_string()))?;
        let refused = |reason| RegistryError::Workloads {
            host: h.name.clone(),
            reason,
        };
        if workloads.len() > MAX_WORKLOADS_PER_HOST {
            return Err(refused(WorkloadRefused::TooMany {
                count: workloads.len(),
            }));
        }
        for w in &workloads {
            check_name(&w.name).map_err(refused)?;
            check_labels(w).map_err(refused)?;
        }
        workloads.sort_by_key(|w| w.ip);
        if self.workloads_of(host) == workloads.as_slice() {
            return Ok(None);
        }
        let m = Mutation::WorkloadsReported { host, workloads };
        self.check(&m)?;
        Ok(Some(m))
    }

    /// Checks what every host's workload list keeps, on every mutation and snapshot: usable
    /// addresses of the host's own subnet, no address or name twice.
    pub(super) fn check_workloads(
        &self,
        host: HostId,
        workloads: &[Workload],
    ) -> Result<(), RegistryError> {
        let h = self
            .hosts
            .get(&host)
            .ok_or_else(|| RegistryError::NoSuchHost(host.to_string()))?;
        check_list(h, workloads).map_err(|reason| RegistryError::Workloads {
            host: h.name.clone(),
            reason,
        })
    }
}

fn check_list(host: &Host, workloads: &[Workload]) -> Result<(), WorkloadRefused> {
    let mut addresses = BTreeMap::new();
    let mut names = BTreeSet::new();
    for w in workloads {
        if !assignable(host.subnet, w.ip) {
            return Err(WorkloadRefused::NotAssignable {
                name: w.name.clone(),
                ip: w.ip,
                subnet: host.subnet,
                gateway: gateway(host.subnet),
            });
        }
        if let Some(first) = addresses.insert(w.ip, &w.name) {
            return Err(WorkloadRefused::DuplicateAddress {
                ip: w.ip,
                first: first.clone(),
                second: w.name.clone(),
            });
        }
        if !names.insert(&w.name) {
            return Err(WorkloadRefused::DuplicateName {
                name: w.name.clone(),
            });
        }
    }
    Ok(())
}

/// A workload's name is its network namespace's (as `/run/netns/NAME`), and `HOST/NAME` must
/// name it unambiguously.
fn check_name(name: &str) -> Result<(), WorkloadRefused> {
    let reason = if name.is_empty() {
        "empty"
    } else if name.len() > MAX_NAME_LEN {
        "too long"
    } else if name == "." || name == ".." {
        "reserved"
    } else if name.chars().any(|c| c == '/' || c.is_control()) {
        "not a file name"
    } else {
        return Ok(());
    };
    Err(WorkloadRefused::Name {
        name: name.to_owned(),
        reason,
    })
}

fn check_labels(w: &Workload) -> Result<(), WorkloadRefused> {
    labels::check_reported_labels(&w.name, &w.labels).map_err(|source| match source {
        LabelError::Reserved { .. } => WorkloadRefused::ReservedLabel {
            name: w.name.clone(),
        },
        source => WorkloadRefused::Label {
            name: w.name.clone(),
            source,
        },
    })
}
