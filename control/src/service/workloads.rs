//! `PUT /v1/hosts/{name}/workloads`: a host's report of its workloads (names, addresses,
//! labels), its whole list, which replaces the one the registry holds. Only the host itself may
//! report, only addresses of its own subnet ([`Registry::plan_workloads`](crate::registry::Registry::plan_workloads)),
//! and a refused report changes nothing. Under a policy, a report that would make some host's
//! filter larger than its agent accepts is refused too. A repeated report of the list held commits nothing and
//! leaves no audit line (agents report again after every reconnect).

use std::net::IpAddr;

use wgmesh_client::api::{RevisionReply, WorkloadReport, WorkloadsBody};

use super::caller::{authorize_host, host_target, Caller};
use super::refusal::{registry_error, ApiError};
use super::Control;
use crate::audit::{Action, Outcome};
use crate::registry::Workload;

impl Control {
    /// `PUT /v1/hosts/{name}/workloads`.
    pub fn report_workloads(
        &mut self,
        caller: &Caller,
        name: &str,
        body: WorkloadsBody,
        now: u64,
        from: Option<IpAddr>,
    ) -> Result<RevisionReply, ApiError> {
        let result = self.try_report_workloads(caller, name, body, now);
        let action = Action::WorkloadsReport;
        match &result {
            // The list the registry holds already: nothing changed, nothing to audit.
            Ok((_, false)) => {}
            Ok((_, true)) => {
                let target = host_target(name, &self.registry);
                self.audit(caller, action, target, Outcome::Ok, now, from);
            }
            Err(e) => {
                let target = host_target(name, &self.registry);
                let outcome = Outcome::Refused(e.reason);
                self.audit(caller, action, target, outcome, now, from);
            }
        }
        result.map(|(reply, _)| reply)
    }

    fn try_report_workloads(
        &mut self,
        caller: &Caller,
        name: &str,
        body: WorkloadsBody,
        now: u64,
    ) -> Result<(RevisionReply, bool), ApiError> {
        let id = authorize_host(&self.registry, caller, name)?;
        self.registry.touch(id, now);
        let count = body.workloads.len();
        let workloads = body.workloads.into_iter().map(workload_of).collect();
        let changed = match self
            .registry
            .plan_workloads(id, workloads)
            .map_err(registry_error)?
        {
            Some(m) => {
                self.commit_within_filters(&m, |e| {
                    ApiError::bad_request(format!(
                        "{e} under the policy in force with these workloads; the report is \
                         refused (the admin can apply a policy whose selectors match fewer of \
                         them)"
                    ))
                })?;
                tracing::info!(%name, workloads = count, "host workloads changed");
                true
            }
            None => false,
        };
        Ok((
            RevisionReply {
                revision: self.registry.netmap_revision(),
            },
            changed,
        ))
    }
}

/// A workload of a report, as the registry keeps it (checked by the registry's plan).
fn workload_of(w: WorkloadReport) -> Workload {
    Workload {
        name: w.name,
        ip: w.ip,
        labels: w.labels,
    }
}

/// A workload the registry holds, as `GET /v1/nodes` shows it.
pub(super) fn report_of(w: &Workload) -> WorkloadReport {
    WorkloadReport {
        name: w.name.clone(),
        ip: w.ip,
        labels: w.labels.clone(),
    }
}

#[cfg(test)]
mod tests;
