//! Applying and removing the policy: [`CheckedPolicy`] (the checks a policy passes on its own,
//! before any registry is asked), [`Registry::plan_policy`] and [`Registry::plan_remove_policy`].

use wgmesh_config::netmap::MAX_FILTER_RULES;
use wgmesh_config::policy::Policy;

use super::error::{PolicyTestFailed, RegistryError};
use super::mutation::Mutation;
use super::Registry;

/// A policy that passed every check that needs no registry: it has no more rules than an
/// agent's filter accepts, and its own `[[test]]`s pass. [`Registry::plan_policy`] takes only
/// these, so a policy is never applied untested; making one reads no registry, so the control
/// plane makes it before taking its lock (a policy of thousands of rules and tests is the
/// costliest request it gets).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedPolicy {
    policy: Policy,
    text: String,
    origin: String,
}

impl CheckedPolicy {
    /// Checks `policy` (parsed from `text`, read from the file `origin`): refused when it has
    /// more rules than an agent's filter accepts, or when one of its own `[[test]]`s fails
    /// (the first failing one is named). Pure.
    pub fn new(policy: Policy, text: String, origin: String) -> Result<Self, RegistryError> {
        if policy.rules.len() > MAX_FILTER_RULES {
            return Err(RegistryError::PolicyTooLarge {
                rules: policy.rules.len(),
            });
        }
        for test in &policy.tests {
            let decision = policy.decide(&test.from, &test.to, test.port);
            if decision.action != test.expect {
                return Err(Box::new(PolicyTestFailed {
                    origin,
                    line: test.line,
                    from: test.from.clone(),
                    to: test.to.clone(),
                    port: test.port,
                    expect: test.expect,
                    got: decision.action,
                    by: decision.by.to_string(),
                })
                .into());
            }
        }
        Ok(Self {
            policy,
            text,
            origin,
        })
    }

    /// The policy.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// The name of the file it came from.
    pub fn origin(&self) -> &str {
        &self.origin
    }
}

impl Registry {
    /// Plans applying `policy`. Applying the policy in force again is a change like any other
    /// (it is audited, and every host is sent its filter again). Whether every host's filter
    /// stays within what its agent accepts depends on the registry's endpoints, so it is
    /// checked on the compiled result ([`crate::compile::Compiled::check_filters`]).
    pub fn plan_policy(&self, policy: CheckedPolicy) -> Mutation {
        let CheckedPolicy {
            policy,
            text,
            origin,
        } = policy;
        Mutation::PolicyApplied {
            text,
            origin,
            policy,
        }
    }

    /// Plans removing the policy in force, after which everything is allowed (as before any
    /// policy was applied); refused when there is none.
    pub fn plan_remove_policy(&self) -> Result<Mutation, RegistryError> {
        let m = Mutation::PolicyRemoved;
        self.check(&m)?;
        Ok(m)
    }
}
