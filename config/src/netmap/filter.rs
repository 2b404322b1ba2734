//! [`HostFilter`]: the policy compiled for one host, as its netmap carries it. Labels are gone:
//! each rule names the addresses its `from` and `to` selectors stood for, so the agent decides a
//! flow from addresses alone. Only the rules that concern one of the host's addresses are sent,
//! in policy order, with the policy's meaning ([`crate::policy::Policy::decide`]): a matching
//! deny wins, else a matching allow, else `default`.
//!
//! A netmap without a filter means no policy was applied: everything is allowed.

use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::policy::{Action, PortSpec};

/// Most rules one host's filter may have.
pub const MAX_FILTER_RULES: usize = 10_000;
/// Most prefixes one host's filter may name, over all its rules' `from` and `to`.
pub const MAX_FILTER_NETS: usize = 1_000_000;

/// The policy compiled for one host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostFilter {
    /// What happens to a flow no rule matches.
    pub default: Action,
    /// The rules concerning this host's addresses, in policy order.
    #[serde(default)]
    pub rules: Vec<FilterRule>,
}

/// One rule, with its selectors turned into addresses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FilterRule {
    /// The policy rule's name.
    pub name: String,
    /// Allow or deny.
    pub action: Action,
    /// Sources that may start (or are denied starting) the flow: sorted, not overlapping.
    #[serde(default)]
    pub from: Vec<IpNet>,
    /// Destinations: sorted, not overlapping.
    #[serde(default)]
    pub to: Vec<IpNet>,
    /// Protocols and destination ports; empty = any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<PortSpec>,
}

/// Why a filter breaks an invariant the agent relies on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    /// More rules than an agent accepts.
    #[error(
        "the filter has {rules} rules; at most {MAX_FILTER_RULES} (MAX_FILTER_RULES) are accepted"
    )]
    TooManyRules {
        /// Rules given.
        rules: usize,
    },
    /// More prefixes, over all rules' `from` and `to`, than an agent accepts.
    #[error(
        "the filter's rules name {nets} prefixes in all (their from and to); at most \
         {MAX_FILTER_NETS} (MAX_FILTER_NETS) are accepted"
    )]
    TooManyNets {
        /// Prefixes given.
        nets: usize,
    },
    /// A rule's prefixes are not sorted, or overlap.
    #[error("rule {rule:?}: its {side} prefixes are not sorted and disjoint ({net})")]
    Unsorted {
        /// The rule's name.
        rule: String,
        /// `from` or `to`.
        side: &'static str,
        /// The first prefix out of place.
        net: IpNet,
    },
    /// A rule has a prefix with host bits set.
    #[error("rule {rule:?}: {net} has host bits set")]
    HostBits {
        /// The rule's name.
        rule: String,
        /// The prefix.
        net: IpNet,
    },
    /// A port range ends before it starts.
    #[error("rule {rule:?}: port entry {port} is empty")]
    EmptyPorts {
        /// The rule's name.
        rule: String,
        /// The entry.
        port: PortSpec,
    },
}

impl HostFilter {
    /// Checks the invariants an agent relies on: bounded size, each side's prefixes sorted,
    /// disjoint and without host bits, port ranges not empty. Agents run it on every netmap
    /// (through [`Netmap::check`](super::Netmap::check)), and the control plane on every
    /// host's filter before it commits a policy or a workload report, so that it never
    /// stores a state some agent would refuse.
    pub fn check(&self) -> Result<(), FilterError> {
        if self.rules.len() > MAX_FILTER_RULES {
            return Err(FilterError::TooManyRules {
                rules: self.rules.len(),
            });
        }
        let nets: usize = self.rules.iter().map(|r| r.from.len() + r.to.len()).sum();
        if nets > MAX_FILTER_NETS {
            return Err(FilterError::TooManyNets { nets });
        }
        for rule in &self.rules {
            check_side(rule, "from", &rule.from)?;
            check_side(rule, "to", &rule.to)?;
            if let Some(port) = rule.ports.iter().find(|p| p.first > p.last) {
                return Err(FilterError::EmptyPorts {
                    rule: rule.name.clone(),
                    port: *port,
                });
            }
        }
        Ok(())
    }
}

impl FilterRule {
    /// Whether `addr` lies in `side` (one of this rule's sorted, disjoint prefix lists).
    pub fn side_holds(side: &[IpNet], addr: IpAddr) -> bool {
        // The last prefix starting at or before `addr` is the only one that can hold it.
        let i = side.partition_point(|n| n.network() <= addr);
        i > 0 && side[i - 1].contains(&addr)
    }
}

fn check_side(rule: &FilterRule, side: &'static str, nets: &[IpNet]) -> Result<(), FilterError> {
    for (i, net) in nets.iter().enumerate() {
        if net.trunc() != *net {
            return Err(FilterError::HostBits {
                rule: rule.name.clone(),
                net: *net,
            });
        }
        if let Some(prev) = i.checked_sub(1).map(|j| nets[j]) {
            if prev >= *net || prev.contains(&net.network()) {
                return Err(FilterError::Unsorted {
                    rule: rule.name.clone(),
                    side,
                    net: *net,
                });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(from: &[&str], to: &[&str]) -> FilterRule {
        FilterRule {
            name: "r".into(),
            action: Action::Allow,
            from: from.iter().map(|s| s.parse().unwrap()).collect(),
            to: to.iter().map(|s| s.parse().unwrap()).collect(),
            ports: vec!["tcp/80".parse().unwrap()],
        }
    }

    #[test]
    fn sorted_disjoint_sides_pass_and_lookups_find_them() {
        let r = rule(
            &["10.42.1.5/32", "10.42.2.0/24", "fd00::/64"],
            &["10.42.3.1/32"],
        );
        let f = HostFilter {
            default: Action::Deny,
            rules: vec![r.clone()],
        };
        f.check().unwrap();
        for (addr, inside) in [
            ("10.42.1.5", true),
            ("10.42.1.6", false),
            ("10.42.2.200", true),
            ("10.42.3.0", false),
            ("fd00::9", true),
            ("fd01::", false),
            ("0.0.0.0", false),
        ] {
            let a: IpAddr = addr.parse().unwrap();
            assert_eq!(FilterRule::side_holds(&r.from, a), inside, "{addr}");
        }
    }

    #[test]
    fn overlapping_unsorted_or_host_bits_are_refused() {
        for (from, want) in [
            (&["10.42.2.0/24", "10.42.1.0/24"][..], "not sorted"),
            (&["10.42.0.0/16", "10.42.1.0/24"][..], "not sorted"),
            (&["10.42.1.0/24", "10.42.1.0/24"][..], "not sorted"),
            (&["10.42.1.1/24"][..], "host bits"),
        ] {
            let f = HostFilter {
                default: Action::Deny,
                rules: vec![rule(from, &[])],
            };
            let e = f.check().unwrap_err().to_string();
            assert!(e.contains(want), "{from:?}: {e}");
        }
    }

    #[test]
    fn a_filter_past_either_limit_is_refused_naming_that_limit() {
        let wide = FilterRule {
            from: (0..MAX_FILTER_NETS as u32)
                .map(|i| IpNet::from(IpAddr::from((0x0a00_0000 + 2 * i).to_be_bytes())))
                .collect(),
            ..rule(&[], &["10.0.0.0/8"])
        };
        let f = HostFilter {
            default: Action::Deny,
            rules: vec![wide],
        };
        let e = f.check().unwrap_err();
        assert_eq!(
            e,
            FilterError::TooManyNets {
                nets: MAX_FILTER_NETS + 1
            }
        );
        assert!(
            e.to_string().contains("at most 1000000 (MAX_FILTER_NETS)"),
            "{e}"
        );
        let f = HostFilter {
            default: Action::Deny,
            rules: vec![rule(&[], &[]); MAX_FILTER_RULES + 1],
        };
        let e = f.check().unwrap_err();
        assert!(
            e.to_string().contains("at most 10000 (MAX_FILTER_RULES)"),
            "{e}"
        );
        let f = HostFilter {
            default: Action::Deny,
            rules: vec![rule(&[], &[]); MAX_FILTER_RULES],
        };
        f.check().unwrap();
    }
}
