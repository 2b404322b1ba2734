//! Random registries and policies for the compiler's property tests, and the naive reference
//! the compiled netmaps are checked against: endpoint labels as the brief defines them, and an
//! evaluator of a [`HostFilter`] with the meaning of `Policy::decide`.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use proptest::prelude::*;
use wgmesh_config::netmap::HostFilter;
use wgmesh_config::policy::{Action, Flow, Policy, Rule, Selector};

use crate::registry::tests::policy::labels;
use crate::registry::tests::workloads::workload;
use crate::registry::tests::{key, registry};
use crate::registry::{CheckedPolicy, Host, JoinRequest, Labels, Mutation, Registry, SecretHash};

/// Host names are `h0` to `h{HOSTS - 1}`.
pub(super) const HOSTS: u8 = 5;

const HOST_LABELS: &[(&str, &str)] = &[
    ("zone", "a"),
    ("zone", "b"),
    ("role", "frontend"),
    ("role", "backend"),
];
const WORKLOAD_LABELS: &[(&str, &str)] = &[
    ("app", "web"),
    ("app", "db"),
    ("role", "frontend"),
    ("role", "backend"),
    ("zone", "a"),
    ("zone", "b"),
];
const SELECTOR_LABELS: &[(&str, &str)] = &[
    ("app", "web"),
    ("app", "db"),
    ("role", "frontend"),
    ("role", "backend"),
    ("zone", "a"),
    ("zone", "b"),
    ("host", "h0"),
    ("host", "h1"),
    ("host", "h2"),
];
const PORTS: &[&str] = &[
    "tcp/80",
    "tcp/22",
    "tcp/8000-8100",
    "tcp",
    "udp/53",
    "udp",
    "icmp",
];
pub(super) const FLOWS: &[&str] = &[
    "tcp/80", "tcp/22", "tcp/8000", "tcp/8100", "tcp/8101", "tcp/443", "udp/53", "udp/80", "icmp",
];

fn label_set(vocabulary: &'static [(&'static str, &'static str)]) -> impl Strategy<Value = Labels> {
    prop::collection::vec(prop::sample::select(vocabulary), 0..=2).prop_map(|pairs| labels(&pairs))
}

fn rule() -> impl Strategy<Value = Rule> {
    (
        prop::bool::weighted(0.3),
        label_set(SELECTOR_LABELS),
        label_set(SELECTOR_LABELS),
        prop::collection::vec(prop::sample::select(PORTS), 0..=2),
    )
        .prop_map(|(deny, from, to, ports)| Rule {
            name: String::new(),
            action: if deny { Action::Deny } else { Action::Allow },
            from: Selector(from),
            to: Selector(to),
            ports: ports.iter().map(|p| p.parse().unwrap()).collect(),
        })
}

/// A policy of up to 6 rules, named `r0`, `r1`, ...
pub(super) fn policy() -> impl Strategy<Value = Policy> {
    (
        prop::bool::weighted(0.25),
        prop::collection::vec(rule(), 0..6),
    )
        .prop_map(|(allow, rules)| Policy {
            default: if allow { Action::Allow } else { Action::Deny },
            rules: rules
                .into_iter()
                .enumerate()
                .map(|(i, r)| Rule {
                    name: format!("r{i}"),
                    ..r
                })
                .collect(),
            tests: Vec::new(),
        })
}

/// A host's workloads: address offsets in its subnet (2 to 23) and their labels.
pub(super) fn workload_list() -> impl Strategy<Value = BTreeMap<u8, Labels>> {
    prop::collection::btree_map(2u8..24, label_set(WORKLOAD_LABELS), 0..4)
}

/// One step of a registry's history.
#[derive(Debug, Clone)]
pub(super) enum Op {
    Join(u8, Labels),
    Remove(u8),
    Endpoint(u8, Option<u16>),
    Workloads(u8, BTreeMap<u8, Labels>),
    Policy(Policy),
    RemovePolicy,
}

pub(super) fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..HOSTS, label_set(HOST_LABELS)).prop_map(|(n, l)| Op::Join(n, l)),
        1 => (0..HOSTS).prop_map(Op::Remove),
        1 => (0..HOSTS, proptest::option::of(1u16..)).prop_map(|(n, p)| Op::Endpoint(n, p)),
        4 => (0..HOSTS, workload_list()).prop_map(|(n, w)| Op::Workloads(n, w)),
        2 => policy().prop_map(Op::Policy),
        1 => Just(Op::RemovePolicy),
    ]
}

/// The mutation `op` plans on `r`; `None` when refused or a no-op.
pub(super) fn plan(r: &Registry, op: &Op) -> Option<Mutation> {
    let host = |n: u8| r.host_by_name(&format!("h{n}"));
    match op {
        Op::Join(n, labels) => {
            let name = format!("h{n}");
            let request = JoinRequest {
                name: name.parse().unwrap(),
                public_key: key(n + 1),
                endpoint: None,
                labels: labels.clone(),
            };
            let credential = SecretHash::of(name.as_bytes());
            r.plan_join(request, &SecretHash::of(b"t"), credential, 10)
                .ok()
        }
        Op::Remove(n) => r.plan_remove(&format!("h{n}")).ok(),
        Op::Endpoint(n, port) => host(*n).and_then(|h| {
            let ep = port.map(|p| std::net::SocketAddr::from(([198, 18, 0, *n], p)));
            r.plan_endpoint(h.id, ep).ok().flatten()
        }),
        Op::Workloads(n, list) => host(*n).and_then(|h| {
            let list = workloads_on(h, list);
            r.plan_workloads(h.id, list).ok().flatten()
        }),
        Op::Policy(p) => CheckedPolicy::new(p.clone(), String::new(), "p.toml".into())
            .ok()
            .map(|p| r.plan_policy(p)),
        Op::RemovePolicy => r.plan_remove_policy().ok(),
    }
}

/// The workloads `list` stands for on `host`: `w{offset}` at that offset of its subnet.
fn workloads_on(host: &Host, list: &BTreeMap<u8, Labels>) -> Vec<crate::registry::Workload> {
    list.iter()
        .map(|(&offset, labels)| {
            let pairs: Vec<(&str, &str)> = labels
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            workload(&format!("w{offset}"), &at(host, offset).to_string(), &pairs)
        })
        .collect()
}

/// The address at `offset` in `host`'s (IPv4) subnet.
pub(super) fn at(host: &Host, offset: u8) -> IpAddr {
    let IpAddr::V4(net) = host.subnet.network() else {
        unreachable!("the test cluster is IPv4")
    };
    IpAddr::V4(Ipv4Addr::from(u32::from(net) + u32::from(offset)))
}

/// Runs `ops` from `registry()`, skipping refused ones; returns the registry and the mutations
/// applied.
pub(super) fn history(ops: &[Op]) -> (Registry, Vec<Mutation>) {
    let mut r = registry();
    let mut applied = Vec::new();
    for op in ops {
        if let Some(m) = plan(&r, op) {
            r.apply(&m).unwrap();
            applied.push(m);
        }
    }
    (r, applied)
}

/// The labels the address `addr` carries for rules of `action`, as the policy's meaning has
/// them: a host's gateway (its first address) its host's labels and `host=<name>`; a workload
/// its own labels over its host's, and `host=<name>`; any other address of a host's subnet (an
/// unregistered address) its host's labels and `host=<name>` for deny rules and none for allow
/// rules; an address outside every host's subnet none.
pub(super) fn reference_labels(r: &Registry, addr: IpAddr, action: Action) -> Labels {
    for h in r.hosts().values() {
        let workload = r.workloads_of(h.id).iter().find(|w| w.ip == addr);
        let known = at(h, 1) == addr || workload.is_some();
        // An unregistered address is its host's for deny rules only.
        let carries = known || (action == Action::Deny && h.subnet.contains(&addr));
        if !carries {
            continue;
        }
        let mut labels = h.labels.clone();
        if let Some(w) = workload {
            labels.extend(w.labels.clone());
        }
        labels.insert("host".into(), h.name.to_string());
        return labels;
    }
    Labels::new()
}

/// What `policy` decides for a flow from `src` to `dst`, and the rule that decided (`None`: the
/// default), naively: the first deny rule matching the addresses' labels for deny rules, else
/// the first allow rule matching their labels for allow rules, else the default. Where the
/// two label sets agree (every endpoint) this is `Policy::decide`.
pub(super) fn reference_decide<'p>(
    r: &Registry,
    policy: &'p Policy,
    src: IpAddr,
    dst: IpAddr,
    flow: Flow,
) -> (Action, Option<&'p str>) {
    for action in [Action::Deny, Action::Allow] {
        let (from, to) = (
            reference_labels(r, src, action),
            reference_labels(r, dst, action),
        );
        let decided = policy
            .rules
            .iter()
            .filter(|rule| rule.action == action)
            .find(|rule| rule.matches(&from, &to, flow));
        if let Some(rule) = decided {
            return (action, Some(&rule.name));
        }
    }
    (policy.default, None)
}

/// What `filter` decides for a flow from `src` to `dst`, and the rule that decided (`None`:
/// the default); no filter allows everything. Naive: every rule, every prefix.
pub(super) fn evaluate(
    filter: Option<&HostFilter>,
    src: IpAddr,
    dst: IpAddr,
    flow: Flow,
) -> (Action, Option<&str>) {
    let Some(filter) = filter else {
        return (Action::Allow, None);
    };
    let holds = |side: &[ipnet::IpNet], a: IpAddr| side.iter().any(|n| n.contains(&a));
    let matching = || {
        filter.rules.iter().filter(move |r| {
            holds(&r.from, src)
                && holds(&r.to, dst)
                && (r.ports.is_empty() || r.ports.iter().any(|p| p.holds(flow)))
        })
    };
    if let Some(r) = matching().find(|r| r.action == Action::Deny) {
        return (Action::Deny, Some(&r.name));
    }
    match matching().next() {
        Some(r) => (Action::Allow, Some(&r.name)),
        None => (filter.default, None),
    }
}

/// Whether some allow rule of `policy` matches a flow between an endpoint of `a` and one of
/// `b` (either way), or the default allows: naively, over every endpoint of both.
pub(super) fn reference_connected(r: &Registry, policy: &Policy, a: &Host, b: &Host) -> bool {
    if policy.default == Action::Allow {
        return true;
    }
    let endpoints = |h: &Host| -> Vec<Labels> {
        std::iter::once(at(h, 1))
            .chain(r.workloads_of(h.id).iter().map(|w| w.ip))
            .map(|addr| reference_labels(r, addr, Action::Allow))
            .collect()
    };
    let (ea, eb) = (endpoints(a), endpoints(b));
    let meets = |s: &Selector, e: &[Labels]| s.is_all() || e.iter().any(|l| s.matches(l));
    policy
        .rules
        .iter()
        .filter(|rule| rule.action == Action::Allow)
        .any(|rule| {
            (meets(&rule.from, &ea) && meets(&rule.to, &eb))
                || (meets(&rule.from, &eb) && meets(&rule.to, &ea))
        })
}
