use std::collections::BTreeMap;

use wgmesh_client::api::{ApiReason, WorkloadReport, WorkloadsBody};

use crate::registry::MAX_WORKLOADS_PER_HOST;
use crate::service::tests::{fixture, join, reason, token, Fixture};
use crate::service::Caller;

fn report(name: &str, ip: &str, labels: &[(&str, &str)]) -> WorkloadReport {
    WorkloadReport {
        name: name.to_owned(),
        ip: ip.parse().unwrap(),
        labels: labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
    }
}

fn body(workloads: Vec<WorkloadReport>) -> WorkloadsBody {
    WorkloadsBody { workloads }
}

/// host-a (10.42.0.0/24) and host-b (10.42.1.0/24) joined; host-a's caller.
fn two_hosts() -> (Fixture, Caller) {
    let mut f = fixture();
    let t = token(&mut f, 3600, true);
    let a = join(&mut f, &t, "host-a", 1).unwrap();
    assert_eq!(a.netmap.host.subnet.to_string(), "10.42.0.0/24");
    let b = join(&mut f, &t, "host-b", 2).unwrap();
    assert_eq!(b.netmap.host.subnet.to_string(), "10.42.1.0/24");
    let host_a = f.control.authenticate(Some(&a.credential));
    (f, host_a)
}

/// The workloads `node list` shows for `host`.
fn listed(f: &mut Fixture, host: &str) -> Vec<WorkloadReport> {
    let nodes = f.control.list_nodes(&Caller::Admin, 2000, None).unwrap();
    nodes
        .into_iter()
        .find(|n| n.name == host)
        .unwrap()
        .workloads
}

/// The audit log's `(action, result)` pairs of workload reports.
fn audited(f: &Fixture) -> Vec<String> {
    std::fs::read_to_string(&f.audit)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|l| l["action"] == "workloads_report")
        .map(|l| l["result"].to_string())
        .collect()
}

#[test]
fn only_the_host_itself_may_report_its_workloads() {
    let (mut f, host_a) = two_hosts();
    let admin = Caller::Admin;
    let anon = f.control.authenticate(None);
    let w = || body(vec![report("web", "10.42.0.2", &[])]);
    let c = &mut f.control;
    assert_eq!(
        reason(c.report_workloads(&anon, "host-a", w(), 1, None)),
        ApiReason::Unauthenticated
    );
    let e = c
        .report_workloads(&admin, "host-a", w(), 1, None)
        .unwrap_err();
    assert_eq!(e.reason, ApiReason::Forbidden);
    assert!(
        e.message.contains("the admin token cannot act as a host"),
        "{}",
        e.message
    );
    // host-a names host-b: refused, even with an address of host-b's subnet.
    let theirs = body(vec![report("web", "10.42.1.2", &[])]);
    let e = c
        .report_workloads(&host_a, "host-b", theirs, 1, None)
        .unwrap_err();
    assert_eq!(e.reason, ApiReason::Forbidden);
    assert!(e.message.contains("not \"host-b\"'s"), "{}", e.message);
    assert!(c.registry().workloads().is_empty());
    assert!(listed(&mut f, "host-b").is_empty());
}

#[test]
fn a_report_replaces_the_list_and_a_repeat_commits_nothing() {
    let (mut f, host_a) = two_hosts();
    let first = body(vec![
        report("db", "10.42.0.9", &[("role", "backend")]),
        report("web", "10.42.0.2", &[("role", "frontend"), ("tier", "")]),
    ]);
    let before = f.control.revision();
    let reply = f
        .control
        .report_workloads(&host_a, "host-a", first.clone(), 5010, None)
        .unwrap();
    assert_eq!(f.control.revision(), before + 1, "one commit");
    // Without a policy a workload changes no netmap.
    assert_eq!(reply.revision, f.control.registry().netmap_revision());
    let mut sorted = first.workloads.clone();
    sorted.sort_by_key(|w| w.ip);
    assert_eq!(listed(&mut f, "host-a"), sorted, "kept, sorted by address");
    assert_eq!(
        f.control
            .registry()
            .host_by_name("host-a")
            .unwrap()
            .last_seen,
        5010,
        "a report is a sign of life"
    );

    // The same list again (an agent reports after every reconnect): nothing committed, no line.
    let again = f
        .control
        .report_workloads(&host_a, "host-a", first, 11, None)
        .unwrap();
    assert_eq!(again, reply);
    assert_eq!(f.control.revision(), before + 1, "a repeat commits nothing");
    assert_eq!(audited(&f), ["\"ok\""]);

    // Relabelled, one gone: the new list replaces the old one.
    let relabelled = body(vec![report("web", "10.42.0.2", &[("role", "admin")])]);
    f.control
        .report_workloads(&host_a, "host-a", relabelled.clone(), 12, None)
        .unwrap();
    assert_eq!(listed(&mut f, "host-a"), relabelled.workloads);
    // All detached: none left.
    f.control
        .report_workloads(&host_a, "host-a", body(vec![]), 13, None)
        .unwrap();
    assert!(listed(&mut f, "host-a").is_empty());
    assert!(f.control.registry().workloads().is_empty());
    assert_eq!(audited(&f), ["\"ok\"", "\"ok\"", "\"ok\""]);
}

#[test]
fn a_refused_report_says_what_is_wrong_and_changes_nothing() {
    let (mut f, host_a) = two_hosts();
    let kept = body(vec![report("web", "10.42.0.2", &[("role", "frontend")])]);
    f.control
        .report_workloads(&host_a, "host-a", kept.clone(), 10, None)
        .unwrap();
    let revision = f.control.revision();
    let many: Vec<WorkloadReport> = (0..=MAX_WORKLOADS_PER_HOST)
        .map(|i| report(&format!("w{i}"), "10.42.0.3", &[]))
        .collect();
    let cases: Vec<(Vec<WorkloadReport>, &str)> = vec![
        (
            vec![report("stolen", "10.42.1.7", &[])],
            "10.42.1.7 is not a usable address of the host's subnet 10.42.0.0/24",
        ),
        (
            vec![report("gw", "10.42.0.1", &[])],
            "the gateway 10.42.0.1",
        ),
        (
            vec![report("web", "10.42.0.2", &[("host", "host-b")])],
            "the label \"host\" is reserved",
        ),
        (
            vec![report("web", "10.42.0.2", &[("role", "front end")])],
            "label value \"front end\" contains ' '",
        ),
        (
            vec![report("a/b", "10.42.0.2", &[])],
            "\"a/b\" is not a file name",
        ),
        (
            vec![report("a", "10.42.0.2", &[]), report("b", "10.42.0.2", &[])],
            "both have the address 10.42.0.2",
        ),
        (
            many,
            "4097 workloads is too many; a host reports at most 4096",
        ),
    ];
    for (workloads, needle) in cases {
        let e = f
            .control
            .report_workloads(&host_a, "host-a", body(workloads), 11, None)
            .unwrap_err();
        assert_eq!(e.reason, ApiReason::BadRequest, "{needle}: {}", e.message);
        assert!(
            e.message.contains(needle),
            "{needle:?} not in {:?}",
            e.message
        );
        assert!(
            e.message.contains("host-a"),
            "names the host: {}",
            e.message
        );
        assert_eq!(
            f.control.revision(),
            revision,
            "{needle}: nothing committed"
        );
        assert_eq!(
            listed(&mut f, "host-a"),
            kept.workloads,
            "{needle}: the old list stays"
        );
    }
    let refused = audited(&f);
    assert_eq!(refused.len(), 8, "{refused:?}");
    assert!(
        refused[1..]
            .iter()
            .all(|r| r == r#"{"refused":"bad_request"}"#),
        "{refused:?}"
    );
    // No workload of host-b's came from host-a.
    let none: BTreeMap<_, _> = f.control.registry().workloads().clone();
    assert_eq!(none.len(), 1);
}
