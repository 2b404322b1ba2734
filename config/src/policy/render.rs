//! How decisions and test results read, for `policy test` (and `policy explain`): one line per
//! test,
//!
//! ```text
//! ok   line 23: {role=frontend} -> {app=secure-app} tcp/80: allow (rule "frontend-to-app")
//! FAIL line 30: {} -> {role=backend} tcp/22: expected allow, got deny (rule "no-ssh")
//! 2 tests: 1 passed, 1 failed
//! ```
//!
//! Pure: returns text, prints nothing.

use std::fmt::{self, Write as _};

use super::selector::ShowLabels;
use super::{Decision, Flow, PolicyTest, TestOutcome};
use crate::labels::Labels;

impl fmt::Display for Decision<'_> {
    /// `allow (rule "frontend-to-app")`, `deny (the default)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.action, self.by)
    }
}

/// A flow between two endpoints, as reports show it: `{role=frontend} -> {app=secure-app}
/// tcp/80`.
#[derive(Debug, Clone, Copy)]
pub struct ShowFlow<'a> {
    /// The labels of the endpoint that starts the flow.
    pub from: &'a Labels,
    /// The labels of the endpoint it goes to.
    pub to: &'a Labels,
    /// Its protocol and port.
    pub flow: Flow,
}

impl<'a> ShowFlow<'a> {
    /// A test's flow.
    pub fn of(test: &'a PolicyTest) -> Self {
        Self {
            from: &test.from,
            to: &test.to,
            flow: test.port,
        }
    }
}

impl fmt::Display for ShowFlow<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (from, to) = (ShowLabels(self.from), ShowLabels(self.to));
        write!(f, "{from} -> {to} {}", self.flow)
    }
}

impl fmt::Display for TestOutcome<'_> {
    /// One line of the report, without a newline: `ok   line 23: ...: allow (rule "x")` or
    /// `FAIL line 30: ...: expected deny, got allow (rule "x")`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mark = if self.passed { "ok  " } else { "FAIL" };
        write!(
            f,
            "{mark} line {}: {}: ",
            self.test.line,
            ShowFlow::of(self.test)
        )?;
        if !self.passed {
            write!(f, "expected {}, got ", self.test.expect)?;
        }
        self.decision.fmt(f)
    }
}

/// The report of `policy test`: one line per outcome, then a summary line
/// (`3 tests: 3 passed`, `3 tests: 2 passed, 1 failed`, or a line saying there are none).
pub fn render_test_report(outcomes: &[TestOutcome<'_>]) -> String {
    let mut out = String::new();
    for outcome in outcomes {
        // Writing to a String cannot fail.
        let _ = writeln!(out, "{outcome}");
    }
    let failed = outcomes.iter().filter(|o| !o.passed).count();
    let passed = outcomes.len() - failed;
    let _ = match (outcomes.len(), failed) {
        (0, _) => writeln!(out, "no tests: the file has no [[test]] tables"),
        (1, 0) => writeln!(out, "1 test: passed"),
        (1, _) => writeln!(out, "1 test: failed"),
        (n, 0) => writeln!(out, "{n} tests: {passed} passed"),
        (n, _) => writeln!(out, "{n} tests: {passed} passed, {failed} failed"),
    };
    out
}
