//! The `policy` part of `wgmesh status`: the policy in force, its denied packets by rule and
//! reason, and the conntrack tables' fill. In `status --json`:
//!
//! ```json
//! "policy": {"rules": 3, "default": "deny", "generation": 2,
//!            "denied": [{"rule": "no-ssh", "reason": "denied", "packets": 4},
//!                       {"rule": null, "reason": "default", "packets": 17}],
//!            "conntrack": {"entries": 12, "capacity": 8192, "refused": 0},
//!            "audit_lost": 0}
//! ```
//!
//! `denied` lists only what denied something: a rule (`denied`), the default (`default`), and the
//! reasons that are no rule's (`conntrack_full`, `untracked`, `malformed`), summed over peers.
//!
//! Pure: built from values already read.

use std::fmt::Write;

use serde::{Deserialize, Serialize};

use crate::peers::counters::PeerDrops;
use crate::peers::filter::Filter;

/// The policy in force, as `status` shows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PolicyStatus {
    /// Rules in this host's filter.
    pub rules: usize,
    /// What a flow no rule matches gets: `allow` or `deny`.
    pub default: String,
    /// Changes with every new policy.
    pub generation: u32,
    /// Denied packets by rule and reason; only those that denied something.
    pub denied: Vec<DeniedCount>,
    /// The flows tracked, over all peers.
    pub conntrack: ConntrackStatus,
    /// Refused flows missing from the audit log: its queue was full, or its file could not be
    /// written.
    #[serde(default)]
    pub audit_lost: u64,
}

/// Packets denied for one rule or reason.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DeniedCount {
    /// The rule that denied them; `null` for the default and the reasons that are no rule's.
    pub rule: Option<String>,
    /// `denied` (by `rule`), `default`, `conntrack_full`, `untracked` or `malformed`.
    pub reason: String,
    /// How many.
    pub packets: u64,
}

/// The conntrack tables of all peers.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ConntrackStatus {
    /// Flows live now.
    pub entries: u64,
    /// Flows the tables hold at most (each peer has its own table).
    pub capacity: u64,
    /// New flows refused because a table had no room.
    pub refused: u64,
}

impl PolicyStatus {
    /// The status of `filter`, with the peers' drops summed in `drops`, their tables in
    /// `conntrack`, and the audit events lost.
    pub fn of(
        filter: &Filter,
        drops: &PeerDrops,
        conntrack: ConntrackStatus,
        audit_lost: u64,
    ) -> Self {
        let mut denied: Vec<DeniedCount> = filter
            .denied()
            .filter(|(_, packets)| *packets > 0)
            .map(|(rule, packets)| DeniedCount {
                reason: if rule.is_some() { "denied" } else { "default" }.into(),
                rule: rule.map(str::to_owned),
                packets,
            })
            .collect();
        for (reason, packets) in [
            ("conntrack_full", drops.conntrack_full),
            ("untracked", drops.policy_untracked),
            ("malformed", drops.policy_malformed),
        ] {
            if packets > 0 {
                denied.push(DeniedCount {
                    rule: None,
                    reason: reason.into(),
                    packets,
                });
            }
        }
        Self {
            rules: filter.rule_count(),
            default: filter.default_action().to_string(),
            generation: filter.generation(),
            denied,
            conntrack,
            audit_lost,
        }
    }

    /// Appends the policy's lines of `status` to `s`.
    pub fn render(&self, s: &mut String) {
        let c = &self.conntrack;
        let _ = writeln!(
            s,
            "  policy: {} rules, default {} (generation {}); {} flows tracked of {}, {} refused (table full)",
            self.rules, self.default, self.generation, c.entries, c.capacity, c.refused
        );
        for d in &self.denied {
            let _ = match (&d.rule, d.reason.as_str()) {
                (Some(rule), _) => {
                    writeln!(s, "    denied: {} packets by rule {rule:?}", d.packets)
                }
                (None, "default") => {
                    writeln!(s, "    denied: {} packets by the default", d.packets)
                }
                (None, reason) => writeln!(
                    s,
                    "    denied: {} packets, {}",
                    d.packets,
                    reason.replace('_', " ")
                ),
            };
        }
        if self.audit_lost > 0 {
            let _ = writeln!(
                s,
                "    audit log: {} refused flows lost (queue full)",
                self.audit_lost
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use wgmesh_config::netmap::{FilterRule, HostFilter};
    use wgmesh_config::policy::Action;

    use super::*;
    use crate::peers::filter::RuleRef;

    #[test]
    fn lists_what_denied_something_and_renders_it() {
        let host = HostFilter {
            default: Action::Deny,
            rules: vec![
                FilterRule {
                    name: "web".into(),
                    action: Action::Allow,
                    from: vec![],
                    to: vec![],
                    ports: vec![],
                },
                FilterRule {
                    name: "no-ssh".into(),
                    action: Action::Deny,
                    from: vec![],
                    to: vec![],
                    ports: vec![],
                },
            ],
        };
        let filter = Filter::new(&host, 4, None);
        filter.count_denied(RuleRef::Rule(1));
        filter.count_denied(RuleRef::Default);
        filter.count_denied(RuleRef::Default);
        let drops = PeerDrops {
            conntrack_full: 3,
            ..PeerDrops::default()
        };
        let conntrack = ConntrackStatus {
            entries: 5,
            capacity: 4096,
            refused: 3,
        };
        let st = PolicyStatus::of(&filter, &drops, conntrack, 0);
        let json = serde_json::to_value(&st).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "rules": 2, "default": "deny", "generation": 4,
                "denied": [
                    {"rule": "no-ssh", "reason": "denied", "packets": 1},
                    {"rule": null, "reason": "default", "packets": 2},
                    {"rule": null, "reason": "conntrack_full", "packets": 3},
                ],
                "conntrack": {"entries": 5, "capacity": 4096, "refused": 3},
                "audit_lost": 0,
            })
        );
        let mut out = String::new();
        st.render(&mut out);
        assert!(
            out.contains(
                "policy: 2 rules, default deny (generation 4); 5 flows tracked of 4096, 3 refused"
            ),
            "{out}"
        );
        assert!(
            out.contains("denied: 1 packets by rule \"no-ssh\""),
            "{out}"
        );
        assert!(out.contains("denied: 2 packets by the default"), "{out}");
        assert!(out.contains("denied: 3 packets, conntrack full"), "{out}");
    }
}
