//! Running a policy's `[[test]]`s: each test's flow decided by [`Policy::decide`], compared
//! with what the test expects. `policy test` prints every outcome; `policy apply` refuses a
//! policy whose [`Policy::check_tests`] fails.
//!
//! Pure: no I/O.

use std::path::Path;

use super::render::ShowFlow;
use super::{Decision, Policy, PolicyTest};
use crate::error::ConfigError;

/// One test's result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TestOutcome<'a> {
    /// The test.
    pub test: &'a PolicyTest,
    /// What the policy decided for the test's flow, and which rule (or the default) decided.
    pub decision: Decision<'a>,
    /// Whether the decision is what the test expects.
    pub passed: bool,
}

impl PolicyTest {
    /// Runs this test against `policy`.
    pub fn run<'a>(&'a self, policy: &'a Policy) -> TestOutcome<'a> {
        let decision = policy.decide(&self.from, &self.to, self.port);
        TestOutcome {
            test: self,
            decision,
            passed: decision.action == self.expect,
        }
    }
}

impl Policy {
    /// Runs every test of the policy, in file order.
    pub fn run_tests(&self) -> Vec<TestOutcome<'_>> {
        self.tests.iter().map(|t| t.run(self)).collect()
    }

    /// `Ok` when every test passes; else an error about the first failing test, naming
    /// `origin`, the test's line (when it has one) and field (`test[3]`), its flow, what it
    /// expects, what the policy decided and which rule decided.
    pub fn check_tests(&self, origin: &Path) -> Result<(), ConfigError> {
        let Some((i, failed)) = self
            .tests
            .iter()
            .map(|t| t.run(self))
            .enumerate()
            .find(|(_, outcome)| !outcome.passed)
        else {
            return Ok(());
        };
        let test = failed.test;
        let mut error = ConfigError::new(
            origin,
            format!(
                "the test fails: {}: expected {}, but the policy decides {}; change the rules \
                 or the test",
                ShowFlow::of(test),
                test.expect,
                failed.decision,
            ),
        )
        .with_field(format!("test[{i}]"));
        // Tests keep their line only; the column is unknown.
        error.line = (test.line > 0).then_some(test.line);
        Err(error)
    }
}
