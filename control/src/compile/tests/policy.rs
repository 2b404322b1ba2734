//! The compiler under random registries and policies: the compiled filters decide every flow as
//! `Policy::decide` does on the endpoints' labels, at both ends, and as the naive reference
//! (`gen::reference_decide`) does for unregistered addresses (their host's labels for deny
//! rules, none for allow rules); hosts are peers exactly when an
//! allow rule connects them; deltas give the new netmap, filter included; output is
//! deterministic.

use std::net::IpAddr;

use proptest::prelude::*;
use wgmesh_config::policy::{Action, DecidedBy, Flow};

use super::gen::{
    at, evaluate, history, op, plan, policy, reference_connected, reference_decide,
    reference_labels, Op, FLOWS,
};
use super::*;
use crate::changelog::{touched, ChangeLog};

/// An address picked among a registry's: (host, kind, index). Kind 0 is the host's gateway, 1
/// one of its workloads (the gateway if it has none), 2 an address of its subnet that is no
/// endpoint (an unregistered address), 3 any address of its subnet: its network or broadcast
/// address, an unregistered one between its workloads, a workload's or the gateway.
type Pick = (u8, u8, u8);

fn resolve(r: &Registry, (h, kind, i): Pick) -> Option<(HostId, IpAddr)> {
    let hosts: Vec<&Host> = r.hosts().values().collect();
    let host = *hosts.get(usize::from(h) % hosts.len().max(1))?;
    let workloads = r.workloads_of(host.id);
    let addr = match kind % 4 {
        1 if !workloads.is_empty() => workloads[usize::from(i) % workloads.len()].ip,
        2 => at(host, 200 + i % 50),
        3 => at(host, i),
        _ => at(host, 1),
    };
    Some((host.id, addr))
}

/// Whether `addr` is an endpoint of `r`: a host's gateway or a registered workload.
fn endpoint(r: &Registry, addr: IpAddr) -> bool {
    r.hosts()
        .values()
        .any(|h| at(h, 1) == addr || r.workloads_of(h.id).iter().any(|w| w.ip == addr))
}

fn pick() -> impl Strategy<Value = Pick> {
    (any::<u8>(), any::<u8>(), any::<u8>())
}

/// A registry built by `setup` (joins and workload reports; refused steps skipped).
fn setup() -> impl Strategy<Value = Vec<Op>> {
    prop::collection::vec(op(), 1..30).prop_map(|ops| {
        ops.into_iter()
            .filter(|o| !matches!(o, Op::Policy(_) | Op::RemovePolicy))
            .collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn compiled_filters_decide_as_the_policy_at_both_ends(
        ops in setup(),
        policy in policy(),
        flows in prop::collection::vec((pick(), pick(), prop::sample::select(FLOWS)), 1..40),
    ) {
        let (r, _) = history(&ops);
        let maps = netmaps(&r, Some(&policy));
        for map in maps.values() {
            map.check().map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert!(map.filter.is_some());
        }
        for (src, dst, flow) in flows {
            let (Some((sh, src)), Some((dh, dst))) = (resolve(&r, src), resolve(&r, dst)) else {
                continue;
            };
            let flow: Flow = flow.parse().unwrap();
            let want = reference_decide(&r, &policy, src, dst, flow);
            // At an endpoint (both label sets agree) the reference is the policy's own meaning.
            if endpoint(&r, src) && endpoint(&r, dst) {
                let labels = |a| reference_labels(&r, a, Action::Allow);
                let decided = policy.decide(&labels(src), &labels(dst), flow);
                let by = match decided.by {
                    DecidedBy::Rule(name) => Some(name),
                    DecidedBy::Default => None,
                };
                prop_assert_eq!((decided.action, by), want);
            }
            let egress = evaluate(maps[&sh].filter.as_ref(), src, dst, flow);
            let ingress = evaluate(maps[&dh].filter.as_ref(), src, dst, flow);
            prop_assert_eq!(egress, want, "egress {} -> {} {}", src, dst, flow);
            prop_assert_eq!(ingress, egress, "ingress {} -> {} {}", src, dst, flow);
            // A flow allowed between two hosts needs them to be peers, both ways.
            if want.0 == Action::Allow && sh != dh {
                let (a, b) = (&r.hosts()[&sh], &r.hosts()[&dh]);
                prop_assert!(maps[&sh].peers.iter().any(|p| p.name == b.name.as_str()));
                prop_assert!(maps[&dh].peers.iter().any(|p| p.name == a.name.as_str()));
            }
        }
    }

    #[test]
    fn hosts_are_peers_exactly_when_an_allow_rule_connects_them(
        ops in setup(),
        policy in policy(),
    ) {
        let (r, _) = history(&ops);
        let maps = netmaps(&r, Some(&policy));
        for (id, map) in &maps {
            let a = &r.hosts()[id];
            prop_assert!(map.peers.iter().all(|p| p.name != a.name.as_str()));
            for b in r.hosts().values().filter(|b| b.id != *id) {
                let peer = map.peers.iter().any(|p| p.name == b.name.as_str());
                prop_assert_eq!(peer, reference_connected(&r, &policy, a, b), "{} - {}", a.name, b.name);
            }
        }
    }

    #[test]
    fn a_delta_applied_to_an_old_netmap_gives_the_new_netmap_filter_included(
        before in prop::collection::vec(op(), 0..25),
        after in prop::collection::vec(op(), 0..25),
    ) {
        let (r, _) = history(&before);
        check_deltas(r, &after)?;
    }

    #[test]
    fn deltas_follow_workload_reports_and_joins_under_a_policy(
        before in setup(),
        mut policy in policy(),
        after in setup(),
    ) {
        // Default deny: whom a host may reach depends on its endpoints.
        policy.default = Action::Deny;
        let (mut r, _) = history(&before);
        if let Some(m) = plan(&r, &Op::Policy(policy)) {
            r.apply(&m).unwrap();
        }
        check_deltas(r, &after)?;
    }

    #[test]
    fn equal_registries_and_policies_give_byte_identical_netmaps(
        ops in prop::collection::vec(op(), 0..40),
    ) {
        let (r, applied) = history(&ops);
        let mut replayed = registry();
        for m in &applied {
            replayed.apply(m).unwrap();
        }
        prop_assert_eq!(&replayed, &r);
        let policy = r.policy().map(|p| &p.policy);
        let a = serde_json::to_string(&netmaps(&r, policy)).unwrap();
        let b = serde_json::to_string(&netmaps(&replayed, replayed.policy().map(|p| &p.policy)))
            .unwrap();
        prop_assert_eq!(a, b);
    }
}

/// Applies `after` to `r`, logging the changes; then the delta of every host's netmap from
/// before is checked against its netmap after.
fn check_deltas(mut r: Registry, after: &[Op]) -> Result<(), TestCaseError> {
    let policy_of = |r: &Registry| r.policy().map(|p| p.policy.clone());
    let old = netmaps(&r, policy_of(&r).as_ref());
    let mut log = ChangeLog::new(r.netmap_revision(), 1024);
    for op in after {
        let Some(m) = plan(&r, op) else { continue };
        let touched = touched(&r, &m);
        r.apply(&m).unwrap();
        log.record(r.netmap_revision(), touched);
    }
    let policy = policy_of(&r);
    let new = netmaps(&r, policy.as_ref());
    for (id, old_map) in &old {
        let Some(expected) = new.get(id) else {
            continue;
        };
        let changes = log.since(old_map.revision, r.netmap_revision()).unwrap();
        let d = delta(&r, policy.as_ref(), *id, old_map.revision, &changes).unwrap();
        // The filter is sent exactly when it may have changed; when not, it did not.
        let may_change = changes.policy || changes.filters;
        prop_assert_eq!(d.filter.is_some(), may_change);
        if !may_change {
            prop_assert_eq!(&old_map.filter, &expected.filter);
        }
        let got = old_map
            .apply_delta(&d)
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(&got, expected);
    }
    Ok(())
}
