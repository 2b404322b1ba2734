//! A policy's rules with their selectors turned into addresses ([`CompiledRules`]): for each
//! rule, the prefixes each side stands for and the hosts holding them; from these, each host's
//! [`HostFilter`] and the hosts it must have as peers. It owns what it computed and names the
//! policy's rules by index, so it can be kept beside the registry (see
//! [`CompiledPolicy`](super::CompiledPolicy)) and asked with the policy it was compiled from.

use ipnet::IpNet;
use wgmesh_config::netmap::{FilterRule, HostFilter};
use wgmesh_config::policy::{Action, Policy, Rule, Selector};

use super::endpoints::{Endpoints, HostSet, Selected};

#[derive(Debug, Clone)]
struct CompiledRule {
    /// The rule's index in the policy.
    rule: usize,
    /// What its `from` side stands for.
    from: Selected,
    /// What its `to` side stands for.
    to: Selected,
}

/// A policy compiled against the registry's endpoints.
#[derive(Debug, Clone)]
pub(crate) struct CompiledRules {
    rules: Vec<CompiledRule>,
    /// Each host's peers, by host position.
    peers: Vec<HostSet>,
}

impl CompiledRules {
    /// Compiles `policy` for `hosts` hosts whose endpoints are `endpoints`, in a cluster of
    /// `cluster` (what `{}` stands for; `None` before the registry is initialised, when there
    /// are no hosts).
    pub(crate) fn new(
        policy: &Policy,
        endpoints: &Endpoints<'_>,
        hosts: usize,
        cluster: Option<IpNet>,
    ) -> Self {
        // An unregistered address of a host is the host's on a deny rule's side and no one's
        // on an allow rule's (`endpoints`): both fail closed.
        let side = |selector: &Selector, action: Action| -> Selected {
            if selector.is_all() {
                return Selected {
                    nets: cluster.into_iter().collect(),
                    hosts: HostSet::all(hosts),
                };
            }
            match action {
                Action::Allow => endpoints.allowed(selector),
                Action::Deny => endpoints.denied(selector),
            }
        };
        let rules: Vec<CompiledRule> = policy
            .rules
            .iter()
            .enumerate()
            .map(|(i, rule)| CompiledRule {
                rule: i,
                from: side(&rule.from, rule.action),
                to: side(&rule.to, rule.action),
            })
            .collect();
        let peers = peers(policy, &rules, hosts);
        Self { rules, peers }
    }

    /// Whether the hosts at positions `a` and `b` must be peers: some allow rule matches a
    /// flow from an address of one to an address of the other (or the default allows).
    pub(crate) fn connects(&self, a: usize, b: usize) -> bool {
        a != b && self.peers[a].contains(b)
    }

    /// How many peers the host at position `a` has.
    pub(crate) fn peer_count(&self, a: usize) -> usize {
        self.peers[a].len()
    }

    /// The filter of the host at position `host`: every rule one of whose sides holds one of
    /// its addresses, in policy order. `policy` is the one these rules were compiled from.
    pub(crate) fn filter(&self, policy: &Policy, host: usize) -> HostFilter {
        HostFilter {
            default: policy.default,
            rules: self
                .rules
                .iter()
                .filter(|r| r.from.hosts.contains(host) || r.to.hosts.contains(host))
                .map(|r| {
                    let rule: &Rule = &policy.rules[r.rule];
                    FilterRule {
                        name: rule.name.clone(),
                        action: rule.action,
                        from: r.from.nets.clone(),
                        to: r.to.nets.clone(),
                        ports: rule.ports.clone(),
                    }
                })
                .collect(),
        }
    }
}

/// Each host's peers: with default allow, every other host; else the hosts an allow rule
/// connects it with, in either direction. Never the host itself.
fn peers(policy: &Policy, rules: &[CompiledRule], hosts: usize) -> Vec<HostSet> {
    let mut peers = if policy.default == Action::Allow {
        vec![HostSet::all(hosts); hosts]
    } else {
        vec![HostSet::empty(hosts); hosts]
    };
    if policy.default == Action::Deny {
        for r in rules
            .iter()
            .filter(|r| policy.rules[r.rule].action == Action::Allow)
        {
            for a in r.from.hosts.iter() {
                peers[a].union_with(&r.to.hosts);
            }
            for b in r.to.hosts.iter() {
                peers[b].union_with(&r.from.hosts);
            }
        }
    }
    for (i, set) in peers.iter_mut().enumerate() {
        set.remove(i);
    }
    peers
}
