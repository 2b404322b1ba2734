//! The admin's policy calls: apply (the control plane parses the file's text and runs its tests
//! itself), show, remove, and explain what the policy in force decides for one flow.
//!
//! A refused apply changes nothing: the text is parsed, checked and tested
//! ([`PreparedPolicy`], outside the control plane's lock) before the one commit that stores it.

use std::net::IpAddr;
use std::path::Path;

use wgmesh_client::api::{
    ApiReason, ExplainEndpoint, ExplainQuery, ExplainReply, PolicyAppliedReply, PolicyBody,
    PolicyInfo, PolicyRemovedReply, PolicyReply,
};
use wgmesh_config::policy::{DecidedBy, Flow, Origin, Policy};

use super::caller::{require_admin, Caller};
use super::refusal::{registry_error, ApiError};
use super::Control;
use crate::audit::{Action, Target};
use crate::compile::{self, EndpointRef, ExplainError};
use crate::registry::{CheckedPolicy, StoredPolicy};

/// A `PUT /v1/policy` body made ready for [`Control::apply_policy`]: its text parsed and its
/// tests run ([`PreparedPolicy::prepare`]). Pure and independent of the registry, so the HTTP
/// layer prepares it before taking the control plane's lock, which only the commit needs.
#[derive(Debug, Clone)]
pub struct PreparedPolicy {
    /// The file name the body gives, when it is one (the audit line's target).
    origin: Option<Origin>,
    /// The policy, or why it is refused.
    checked: Result<CheckedPolicy, ApiError>,
}

impl PreparedPolicy {
    /// Parses `body`'s origin and text and runs the policy's tests. A refusal is kept, to be
    /// answered (and audited) by [`Control::apply_policy`] once the caller is known to be the
    /// admin: anyone else is told only that.
    pub fn prepare(body: PolicyBody) -> Self {
        let origin = body.origin.parse::<Origin>();
        let checked = match &origin {
            Ok(origin) => check(origin, body.text),
            Err(e) => Err(ApiError::bad_request(format!("origin: {e}"))),
        };
        Self {
            origin: origin.ok(),
            checked,
        }
    }
}

/// The policy `text` from the file `origin`, parsed and tested.
fn check(origin: &Origin, text: String) -> Result<CheckedPolicy, ApiError> {
    let policy = Policy::from_toml(&text, Path::new(origin.as_str()))
        .map_err(|e| ApiError::new(ApiReason::BadPolicy, e.to_string()))?;
    CheckedPolicy::new(policy, text, origin.to_string()).map_err(registry_error)
}

impl Control {
    /// `PUT /v1/policy`, with the body already [prepared](PreparedPolicy::prepare): only the
    /// admin may apply, then a refused body is answered, else the policy is committed.
    pub fn apply_policy(
        &mut self,
        caller: &Caller,
        prepared: PreparedPolicy,
        now: u64,
        from: Option<IpAddr>,
    ) -> Result<PolicyAppliedReply, ApiError> {
        let target = prepared.origin.clone();
        let result = self.try_apply_policy(caller, prepared);
        let target = target.map(|origin| Target::Policy {
            origin,
            revision: result.as_ref().ok().map(|r| r.revision),
        });
        self.audited(caller, Action::PolicyApply, target, result, now, from)
    }

    fn try_apply_policy(
        &mut self,
        caller: &Caller,
        prepared: PreparedPolicy,
    ) -> Result<PolicyAppliedReply, ApiError> {
        require_admin(caller)?;
        let checked = prepared.checked?;
        let (rules, tests) = (checked.policy().rules.len(), checked.policy().tests.len());
        let origin = checked.origin().to_owned();
        let m = self.registry.plan_policy(checked);
        self.commit_within_filters(&m, |e| {
            ApiError::new(
                ApiReason::BadPolicy,
                format!(
                    "{e}; the policy is not applied (fewer rules, or selectors matching fewer \
                     or adjacent addresses, make smaller filters)"
                ),
            )
        })?;
        let revision = self.registry.revision();
        tracing::info!(%origin, revision, rules, tests, "policy applied");
        Ok(PolicyAppliedReply {
            revision,
            rules,
            tests,
        })
    }

    /// `GET /v1/policy`.
    pub fn show_policy(
        &mut self,
        caller: &Caller,
        now: u64,
        from: Option<IpAddr>,
    ) -> Result<PolicyReply, ApiError> {
        self.admin_only(caller, Action::PolicyShow, now, from)?;
        Ok(PolicyReply {
            policy: self.registry.policy().map(policy_info),
        })
    }

    /// `DELETE /v1/policy`: everything is allowed again. Removing when none is applied changes
    /// nothing and writes nothing, but is audited as the admin's action.
    pub fn remove_policy(
        &mut self,
        caller: &Caller,
        now: u64,
        from: Option<IpAddr>,
    ) -> Result<PolicyRemovedReply, ApiError> {
        // The target is named before the removal, while the policy is still there.
        let target = self.registry.policy().and_then(|p| {
            Some(Target::Policy {
                origin: p.origin.parse().ok()?,
                revision: Some(p.revision),
            })
        });
        let result = self.try_remove_policy(caller);
        self.audited(caller, Action::PolicyRemove, target, result, now, from)
    }

    fn try_remove_policy(&mut self, caller: &Caller) -> Result<PolicyRemovedReply, ApiError> {
        require_admin(caller)?;
        let removed = self.registry.policy().is_some();
        if removed {
            let m = self.registry.plan_remove_policy().map_err(registry_error)?;
            self.commit(&m)?;
            tracing::info!(
                revision = self.registry.revision(),
                "policy removed: everything is allowed"
            );
        }
        Ok(PolicyRemovedReply {
            removed,
            revision: self.registry.revision(),
        })
    }

    /// `GET /v1/policy/explain`: what the policy in force decides for the flow `query.port`
    /// from `query.from` to `query.to`. A refusal is audited; an answer is not (a read).
    pub fn explain_policy(
        &mut self,
        caller: &Caller,
        query: &ExplainQuery,
        now: u64,
        from: Option<IpAddr>,
    ) -> Result<ExplainReply, ApiError> {
        self.try_explain_policy(caller, query).inspect_err(|e| {
            self.refused_request(caller, Action::PolicyExplain, e, now, from);
        })
    }

    fn try_explain_policy(
        &self,
        caller: &Caller,
        query: &ExplainQuery,
    ) -> Result<ExplainReply, ApiError> {
        require_admin(caller)?;
        let from = self.explain_endpoint("from", &query.from)?;
        let to = self.explain_endpoint("to", &query.to)?;
        let port: Flow = query
            .port
            .parse()
            .map_err(|e| ApiError::bad_request(format!("port: {e}")))?;
        let stored = self.registry.policy();
        let decision = compile::decide(stored.map(|p| &p.policy), &from.labels, &to.labels, port);
        Ok(ExplainReply {
            verdict: decision.action,
            rule: match decision.by {
                DecidedBy::Rule(name) => Some(name.to_owned()),
                DecidedBy::Default => None,
            },
            from,
            to,
            port,
            revision: stored.map(|p| p.revision),
        })
    }

    /// The endpoint `text` (the query's `field`) and the labels it carries: 400 for a text
    /// that is no endpoint, 404 for a host or workload the registry does not know.
    fn explain_endpoint(&self, field: &str, text: &str) -> Result<ExplainEndpoint, ApiError> {
        let refused = |e: ExplainError| {
            let reason = match e {
                ExplainError::NoSuchHost(_) | ExplainError::NoSuchWorkload { .. } => {
                    ApiReason::NotFound
                }
                ExplainError::Selector { .. } | ExplainError::HostName { .. } => {
                    ApiReason::BadRequest
                }
            };
            ApiError::new(reason, format!("{field}: {e}"))
        };
        let endpoint: EndpointRef = text.parse().map_err(refused)?;
        let labels = endpoint.labels(&self.registry).map_err(refused)?;
        Ok(ExplainEndpoint {
            endpoint: endpoint.to_string(),
            labels,
        })
    }
}

/// The policy in force as `GET /v1/policy` shows it.
fn policy_info(stored: &StoredPolicy) -> PolicyInfo {
    PolicyInfo {
        origin: stored.origin.clone(),
        revision: stored.revision,
        default: stored.policy.default,
        rules: stored.policy.rules.len(),
        tests: stored.policy.tests.len(),
        text: stored.text.clone(),
    }
}
