//! Workload reports: what a host may report, replacement, removal with the host, snapshots.

use std::net::IpAddr;

use super::*;
use crate::registry::{CheckedPolicy, Workload, WorkloadRefused, MAX_WORKLOADS_PER_HOST};

pub(crate) fn workload(name: &str, ip: &str, labels: &[(&str, &str)]) -> Workload {
    Workload {
        name: name.into(),
        ip: ip.parse().unwrap(),
        labels: labels
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect(),
    }
}

/// A registry with hosts a (10.42.0.0/24) and b (10.42.1.0/24).
fn two_hosts() -> Registry {
    let mut r = registry();
    join(&mut r, "a", 1).unwrap();
    join(&mut r, "b", 2).unwrap();
    r
}

fn refusal(r: &Registry, list: Vec<Workload>) -> WorkloadRefused {
    match r.plan_workloads(HostId(0), list) {
        Err(RegistryError::Workloads { host, reason }) => {
            assert_eq!(host.as_str(), "a");
            reason
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn a_report_replaces_the_hosts_list_sorted_and_a_repeat_changes_nothing() {
    let mut r = two_hosts();
    let list = vec![
        workload("web", "10.42.0.9", &[("app", "web")]),
        workload("db", "10.42.0.3", &[]),
    ];
    let m = r.plan_workloads(HostId(0), list.clone()).unwrap().unwrap();
    r.apply(&m).unwrap();
    let names: Vec<&str> = r.workloads_of(HostId(0)).iter().map(|w| &*w.name).collect();
    assert_eq!(names, ["db", "web"]);
    assert_eq!(r.workload("a", "web").unwrap().1.labels["app"], "web");
    assert!(r.workload("b", "web").is_none());
    // The same list in another order is no change.
    let mut again = list;
    again.reverse();
    assert_eq!(r.plan_workloads(HostId(0), again), Ok(None));
    // A new list replaces the old one whole; an empty one clears it.
    let m = r
        .plan_workloads(
            HostId(0),
            vec![workload("web", "10.42.0.9", &[("app", "v2")])],
        )
        .unwrap()
        .unwrap();
    r.apply(&m).unwrap();
    assert_eq!(r.workloads_of(HostId(0)).len(), 1);
    let m = r.plan_workloads(HostId(0), Vec::new()).unwrap().unwrap();
    r.apply(&m).unwrap();
    assert!(r.workloads().is_empty());
    assert_eq!(r.plan_workloads(HostId(0), Vec::new()), Ok(None));
}

#[test]
fn a_host_cannot_report_addresses_outside_its_own_subnet_or_reserved_ones() {
    let r = two_hosts();
    for ip in [
        "10.42.1.5",
        "10.43.0.5",
        "10.42.0.0",
        "10.42.0.1",
        "10.42.0.255",
        "fd00::5",
    ] {
        let reason = refusal(&r, vec![workload("w", ip, &[])]);
        assert!(
            matches!(&reason, WorkloadRefused::NotAssignable { ip: got, .. } if *got == ip.parse::<IpAddr>().unwrap()),
            "{ip}: {reason}"
        );
        let shown = reason.to_string();
        assert!(
            shown.contains("10.42.0.0/24") && shown.contains("gateway 10.42.0.1"),
            "{shown}"
        );
    }
}

#[test]
fn bad_reports_are_refused_whole_with_the_reason() {
    let r = two_hosts();
    let dup_ip = vec![
        workload("x", "10.42.0.5", &[]),
        workload("y", "10.42.0.5", &[]),
    ];
    assert!(matches!(
        refusal(&r, dup_ip),
        WorkloadRefused::DuplicateAddress { first, second, .. } if first == "x" && second == "y"
    ));
    let dup_name = vec![
        workload("x", "10.42.0.5", &[]),
        workload("x", "10.42.0.6", &[]),
    ];
    assert_eq!(
        refusal(&r, dup_name),
        WorkloadRefused::DuplicateName { name: "x".into() }
    );
    let reserved = refusal(&r, vec![workload("x", "10.42.0.5", &[("host", "b")])]);
    assert!(
        reserved.to_string().contains("\"host\" is reserved"),
        "{reserved}"
    );
    let bad = refusal(&r, vec![workload("x", "10.42.0.5", &[("bad key", "v")])]);
    assert!(matches!(bad, WorkloadRefused::Label { .. }), "{bad}");
    for name in ["", ".", "..", "a/b", "a\nb", &"n".repeat(256)] {
        let reason = refusal(&r, vec![workload(name, "10.42.0.5", &[])]);
        assert!(
            matches!(reason, WorkloadRefused::Name { .. }),
            "{name:?}: {reason}"
        );
    }
    let many: Vec<Workload> = (0..=MAX_WORKLOADS_PER_HOST)
        .map(|i| workload(&format!("w{i}"), "10.42.0.5", &[]))
        .collect();
    assert_eq!(
        refusal(&r, many),
        WorkloadRefused::TooMany {
            count: MAX_WORKLOADS_PER_HOST + 1
        }
    );
    assert!(matches!(
        r.plan_workloads(HostId(7), Vec::new()),
        Err(RegistryError::NoSuchHost(_))
    ));
    // A mutation that bypassed planning is refused on apply (and replay) all the same.
    let mut r = r;
    let forged = Mutation::WorkloadsReported {
        host: HostId(1),
        workloads: vec![workload("x", "10.42.0.5", &[])],
    };
    assert!(matches!(
        r.apply(&forged),
        Err(RegistryError::Workloads { .. })
    ));
}

#[test]
fn removing_a_host_removes_its_workloads_and_snapshots_keep_them() {
    let mut r = two_hosts();
    for (id, ip) in [(0, "10.42.0.5"), (1, "10.42.1.5")] {
        let m = r
            .plan_workloads(HostId(id), vec![workload("w", ip, &[("app", "x")])])
            .unwrap()
            .unwrap();
        r.apply(&m).unwrap();
    }
    // A snapshot giving a host another host's address is refused.
    assert_snapshot_round_trips(&r, ("10.42.1.5", "10.42.0.6"), "not a usable address");
    let m = r.plan_remove("a").unwrap();
    r.apply(&m).unwrap();
    assert!(r.workloads_of(HostId(0)).is_empty());
    assert_eq!(r.workloads_of(HostId(1)).len(), 1);
}

#[test]
fn workloads_change_netmaps_only_under_a_policy() {
    let mut r = two_hosts();
    let before = r.netmap_revision();
    let m = r
        .plan_workloads(HostId(0), vec![workload("w", "10.42.0.5", &[])])
        .unwrap()
        .unwrap();
    assert!(m.changes_netmaps() && !r.changes_netmaps(&m));
    r.apply(&m).unwrap();
    assert_eq!(r.netmap_revision(), before);
    let p = r.plan_policy(
        CheckedPolicy::new(Default::default(), String::new(), "p.toml".into()).unwrap(),
    );
    r.apply(&p).unwrap();
    let m = r.plan_workloads(HostId(0), Vec::new()).unwrap().unwrap();
    assert!(r.changes_netmaps(&m));
    r.apply(&m).unwrap();
    assert_eq!(r.netmap_revision(), r.revision());
}

#[test]
fn stores_written_before_workloads_and_policies_still_load() {
    // The snapshot shape of the previous release: `workloads` (always empty), no `policy`.
    let old = r#"{"network":{"cluster_cidr":"10.42.0.0/16","host_prefix":24},"hosts":[],
        "tokens":[],"workloads":[],"next_host_id":0,"next_token_id":0,"revision":1,
        "netmap_revision":1}"#;
    let r: Registry = serde_json::from_str(old).unwrap();
    assert!(r.workloads().is_empty() && r.policy().is_none());
    let older = r#"{"network":null,"hosts":[],"tokens":[],"next_host_id":0,"next_token_id":0,
        "revision":0}"#;
    serde_json::from_str::<Registry>(older).unwrap();
    // And a registry without workloads or policy is written as before.
    let json = serde_json::to_value(two_hosts()).unwrap();
    assert_eq!(json["workloads"], serde_json::json!([]));
    assert!(json.get("policy").is_none());
}
