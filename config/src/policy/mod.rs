//! The network policy: who may talk to whom, by labels, protocols and ports.
//!
//! A policy file (TOML) has a `default` action, `[[rule]]`s and `[[test]]`s:
//!
//! ```toml
//! default = "deny"                # or "allow": what happens to a flow no rule matches
//!
//! [[rule]]
//! name = "frontend-to-app"
//! from = { role = "frontend" }    # label selector: every label given must match; {} matches all
//! to   = { app = "secure-app" }
//! ports = ["tcp/80"]              # "tcp/5432", "udp/53", "tcp/8000-8100", "icmp"; omitted = any
//!
//! [[rule]]
//! name = "no-ssh"
//! action = "deny"                 # "allow" (default) or "deny"; a matching deny wins over allows
//! from = {}
//! to   = { role = "backend" }
//! ports = ["tcp/22"]
//!
//! [[test]]
//! from = { role = "frontend" }
//! to   = { app = "secure-app" }
//! port = "tcp/80"
//! expect = "allow"
//! ```
//!
//! The meaning, in one place ([`Policy::decide`]): a flow from an endpoint with labels `F` to one
//! with labels `T`, of protocol and port `P`, is denied if some deny rule matches it, else
//! allowed if some allow rule matches it, else gets `default`. A rule matches when its `from`
//! selector matches `F`, its `to` selector matches `T`, and one of its ports holds `P` (or it
//! names no ports). "Which rule decided" is the first matching deny rule, else the first
//! matching allow rule (in file order), else the default.
//!
//! An endpoint is a workload or a host. A workload's labels are its own, plus its host's labels
//! and `host=<name>` (its own win on a clash; `host` is reserved and always the host's name);
//! a host's own traffic carries its host's labels and `host=<name>`. The compiler
//! (`wgmesh-control`) turns labels into addresses; this module knows only labels. An address of
//! a host's subnet that is no endpoint (no registered workload, not the gateway) carries, there,
//! its host's labels and `host=<name>` for deny rules and no labels for allow rules: fail closed
//! both ways.
//!
//! Beside the types and [`Policy::decide`] (this file):
//! - `parse`: the file's serde shape and its checks ([`Policy::from_toml`], [`Policy::load`]);
//! - `port`: the text forms of port entries and flows;
//! - `selector`: the label rule of selectors and tests' endpoints, and the text form of a
//!   [`Selector`] (`role=frontend,zone=a`);
//! - `run`: running the tests ([`Policy::run_tests`], [`Policy::check_tests`]);
//! - `render`: how decisions and test results read ([`render_test_report`]);
//! - `origin`: the name of the file a policy came from ([`Origin`]).
//!
//! Pure: no I/O except [`Policy::load`] and [`Policy::load_with_text`], which read the one file
//! they are given.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::labels::Labels;

mod origin;
mod parse;
mod port;
mod render;
mod run;
mod selector;
#[cfg(test)]
mod tests;

pub use origin::{Origin, OriginError, MAX_ORIGIN_LEN, ORIGIN_RULE};
pub use parse::{
    check_rule_name, ActionError, RuleNameError, MAX_RULES, MAX_RULE_NAME_LEN, MAX_TESTS,
    RULE_NAME_RULE,
};
pub use port::{PortError, FLOW_RULE, PORT_RULE};
pub use render::{render_test_report, ShowFlow};
pub use run::TestOutcome;
pub use selector::{SelectorError, SelectorParseError, ShowLabels, SELECTOR_RULE};

/// The label every endpoint carries with its host's name; reserved (a workload cannot set it).
pub const HOST_LABEL: &str = "host";

/// What a rule, a test's expectation or the default does with a flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// The flow may start; its replies pass.
    Allow,
    /// The flow is dropped.
    Deny,
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Allow => "allow",
            Self::Deny => "deny",
        })
    }
}

/// A transport protocol a rule can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    /// TCP (IP protocol 6).
    Tcp,
    /// UDP (IP protocol 17).
    Udp,
    /// ICMP (ICMP for IPv4, ICMPv6 for IPv6): echo requests, tracked so that their replies
    /// pass, and the other informational types, untracked. Errors pass only when they are
    /// about a tracked flow, whatever the rules.
    Icmp,
}

impl Proto {
    /// The IP protocol numbers this protocol covers: (IPv4, IPv6).
    pub const fn ip_protocols(self) -> (u8, u8) {
        match self {
            Self::Tcp => (6, 6),
            Self::Udp => (17, 17),
            Self::Icmp => (1, 58),
        }
    }
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Tcp => "tcp",
            Self::Udp => "udp",
            Self::Icmp => "icmp",
        })
    }
}

/// A rule's port entry: a protocol and, for TCP and UDP, an inclusive port range
/// (`tcp/80` is `80..=80`, `tcp` alone is every port, `icmp` has none).
///
/// Serialised (in netmaps and the API) as its text form, the one the policy file uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PortSpec {
    /// The protocol.
    pub proto: Proto,
    /// First port of the range (0 for ICMP).
    pub first: u16,
    /// Last port of the range, at least `first` (0 for ICMP).
    pub last: u16,
}

/// One concrete flow's protocol and destination port, as a test or `policy explain` names it
/// (`tcp/80`, `udp/53`, `icmp`). The port of an ICMP flow is 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Flow {
    /// The protocol.
    pub proto: Proto,
    /// The destination port (0 for ICMP).
    pub port: u16,
}

impl PortSpec {
    /// Every port of `proto` (ICMP: echo).
    pub const fn any(proto: Proto) -> Self {
        let last = match proto {
            Proto::Icmp => 0,
            _ => u16::MAX,
        };
        Self {
            proto,
            first: 0,
            last,
        }
    }

    /// Whether `flow` is within this entry.
    pub fn holds(&self, flow: Flow) -> bool {
        self.proto == flow.proto && (self.first..=self.last).contains(&flow.port)
    }
}

/// A label selector: every label given must be carried, with that value; the empty selector
/// (`{}`) matches every endpoint, known or not.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Selector(pub Labels);

impl Selector {
    /// Whether an endpoint carrying `labels` is selected.
    pub fn matches(&self, labels: &Labels) -> bool {
        self.0.iter().all(|(k, v)| labels.get(k) == Some(v))
    }

    /// Whether this is `{}`, which matches everything.
    pub fn is_all(&self) -> bool {
        self.0.is_empty()
    }
}

/// One `[[rule]]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rule {
    /// The rule's name, unique in the policy; names the rule in `explain`, counters and logs.
    pub name: String,
    /// Allow (the default) or deny.
    pub action: Action,
    /// Who starts the flow.
    pub from: Selector,
    /// Who it goes to.
    pub to: Selector,
    /// Which protocols and destination ports; empty = any (every protocol, every port).
    pub ports: Vec<PortSpec>,
}

impl Rule {
    /// Whether this rule names `flow`'s protocol and port.
    pub fn covers(&self, flow: Flow) -> bool {
        self.ports.is_empty() || self.ports.iter().any(|p| p.holds(flow))
    }

    /// Whether this rule matches a flow from `from` to `to`.
    pub fn matches(&self, from: &Labels, to: &Labels, flow: Flow) -> bool {
        self.covers(flow) && self.from.matches(from) && self.to.matches(to)
    }
}

/// One `[[test]]`: a flow and what the policy must decide for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyTest {
    /// The labels of the endpoint that starts the flow.
    pub from: Labels,
    /// The labels of the endpoint it goes to.
    pub to: Labels,
    /// The flow's protocol and port.
    pub port: Flow,
    /// What the policy must decide.
    pub expect: Action,
    /// The test's 1-based line in its file, for reports (0 when not from a file).
    #[serde(default)]
    pub line: usize,
}

/// A whole, validated policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    /// What happens to a flow no rule matches.
    pub default: Action,
    /// The rules, in file order.
    pub rules: Vec<Rule>,
    /// The tests, in file order.
    pub tests: Vec<PolicyTest>,
}

impl Default for Policy {
    /// The policy in force when none was applied: everything is allowed.
    fn default() -> Self {
        Self {
            default: Action::Allow,
            rules: Vec::new(),
            tests: Vec::new(),
        }
    }
}

/// What decided a flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecidedBy<'a> {
    /// The rule of this name.
    Rule(&'a str),
    /// No rule matched: the policy's default.
    Default,
}

impl fmt::Display for DecidedBy<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Rule(name) => write!(f, "rule {name:?}"),
            Self::Default => f.write_str("the default"),
        }
    }
}

/// A policy's verdict on one flow, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision<'a> {
    /// Allow or deny.
    pub action: Action,
    /// The rule that decided, or the default.
    pub by: DecidedBy<'a>,
}

impl Policy {
    /// The policy's verdict on a flow from an endpoint labelled `from` to one labelled `to`:
    /// the statement of the policy's meaning, which the compiled filters must agree with.
    pub fn decide(&self, from: &Labels, to: &Labels, flow: Flow) -> Decision<'_> {
        let matching = || self.rules.iter().filter(|r| r.matches(from, to, flow));
        if let Some(rule) = matching().find(|r| r.action == Action::Deny) {
            return Decision {
                action: Action::Deny,
                by: DecidedBy::Rule(&rule.name),
            };
        }
        match matching().next() {
            Some(rule) => Decision {
                action: Action::Allow,
                by: DecidedBy::Rule(&rule.name),
            },
            None => Decision {
                action: self.default,
                by: DecidedBy::Default,
            },
        }
    }
}
