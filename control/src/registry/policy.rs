//! Applying and removing the policy: [`Registry::plan_policy`] and
//! [`Registry::plan_remove_policy`].

use wgmesh_config::netmap::MAX_FILTER_RULES;
use wgmesh_config::policy::Policy;

use super::error::{PolicyTestFailed, RegistryError};
use super::mutation::Mutation;
use super::Registry;

impl Registry {
    /// Plans applying `policy` (parsed from `text`, read from the file `origin`): refused when
    /// one of its own `[[test]]`s fails (the first failing one is named) or when it has more
    /// rules than an agent's filter accepts. Applying the policy in force again is a change
    /// like any other (it is audited, and every host is sent its filter again).
    pub fn plan_policy(
        &self,
        policy: Policy,
        text: String,
        origin: String,
    ) -> Result<Mutation, RegistryError> {
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
        Ok(Mutation::PolicyApplied {
            text,
            origin,
            policy,
        })
    }

    /// Plans removing the policy in force, after which everything is allowed (as before any
    /// policy was applied); refused when there is none.
    pub fn plan_remove_policy(&self) -> Result<Mutation, RegistryError> {
        let m = Mutation::PolicyRemoved;
        self.check(&m)?;
        Ok(m)
    }
}
