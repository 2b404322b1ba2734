//! Unregistered addresses (the review's finding): an address of a host's subnet that is neither
//! its gateway nor a registered workload is the host's for deny rules, so a tampered host
//! sending from one is still denied by a rule naming it, and no one's for allow rules.

use std::net::IpAddr;

use wgmesh_config::netmap::HostFilter;
use wgmesh_config::policy::{Action, Flow, Policy};

use super::gen::evaluate;
use super::*;
use crate::registry::tests::policy::rule;
use crate::registry::tests::workloads::workload;
use crate::registry::tests::{join, registry};

/// a (10.42.0.0/24), b (10.42.1.0/24) and c (10.42.2.0/24), every host labelled zone=host. b
/// runs `plain` (no labels, 10.42.1.11) and `own` (zone=app, overriding its host's zone,
/// 10.42.1.12); c runs `db` (role=backend, 10.42.2.10).
fn cluster() -> Registry {
    let mut r = registry();
    for (n, name) in ["a", "b", "c"].iter().enumerate() {
        join(&mut r, name, n as u8 + 1).unwrap();
    }
    let lists = [
        (
            1,
            vec![
                workload("plain", "10.42.1.11", &[]),
                workload("own", "10.42.1.12", &[("zone", "app")]),
            ],
        ),
        (
            2,
            vec![workload("db", "10.42.2.10", &[("role", "backend")])],
        ),
    ];
    for (id, list) in lists {
        let m = r.plan_workloads(HostId(id), list).unwrap().unwrap();
        r.apply(&m).unwrap();
    }
    r
}

fn policy(default: Action, rules: Vec<wgmesh_config::policy::Rule>) -> Policy {
    Policy {
        default,
        rules,
        tests: Vec::new(),
    }
}

fn filter_of(r: &Registry, p: &Policy, host: u64) -> HostFilter {
    let map = netmap(r, Some(p), HostId(host)).unwrap();
    map.check().unwrap();
    map.filter.unwrap()
}

fn addr(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn tcp80() -> Flow {
    "tcp/80".parse().unwrap()
}

#[test]
fn a_deny_naming_a_host_covers_its_unregistered_addresses_at_the_receiver() {
    let r = cluster();
    let p = policy(
        Action::Allow,
        vec![rule("no-b", Action::Deny, &[("host", "b")], &[], &[])],
    );
    let c = filter_of(&r, &p, 2);
    let denied = (Action::Deny, Some("no-b"));
    for dst in ["10.42.2.10", "10.42.2.1"] {
        let dst = addr(dst);
        // b's unregistered address, its gateway and both workloads: `host` cannot be
        // overridden, so all of b's subnet is denied, network and broadcast included.
        for src in [
            "10.42.1.200",
            "10.42.1.1",
            "10.42.1.11",
            "10.42.1.12",
            "10.42.1.0",
            "10.42.1.255",
        ] {
            let src = addr(src);
            assert_eq!(
                evaluate(Some(&c), src, dst, tcp80()),
                denied,
                "{src} -> {dst}"
            );
        }
        // a's unregistered address gets the default.
        let from_a = evaluate(Some(&c), addr("10.42.0.200"), dst, tcp80());
        assert_eq!(from_a, (Action::Allow, None));
    }
    let no_b = &c.rules[0];
    assert_eq!(no_b.from, ["10.42.1.0/24".parse::<ipnet::IpNet>().unwrap()]);
}

#[test]
fn a_deny_by_host_labels_spares_the_workloads_overriding_them() {
    let r = cluster();
    // zone=host is b's host label; b's `own` says zone=app.
    let p = policy(
        Action::Allow,
        vec![rule(
            "no-b-zone",
            Action::Deny,
            &[("host", "b"), ("zone", "host")],
            &[],
            &[],
        )],
    );
    let c = filter_of(&r, &p, 2);
    let db = addr("10.42.2.10");
    let denied = (Action::Deny, Some("no-b-zone"));
    for src in [
        "10.42.1.200",
        "10.42.1.1",
        "10.42.1.11",
        "10.42.1.13",
        "10.42.1.0",
    ] {
        let src = addr(src);
        assert_eq!(evaluate(Some(&c), src, db, tcp80()), denied, "{src}");
    }
    let own = evaluate(Some(&c), addr("10.42.1.12"), db, tcp80());
    assert_eq!(own, (Action::Allow, None));
    // Exactly b's subnet without `own`, as prefixes.
    let from: Vec<String> = c.rules[0].from.iter().map(ToString::to_string).collect();
    assert_eq!(
        from,
        [
            "10.42.1.0/29",
            "10.42.1.8/30",
            "10.42.1.13/32",
            "10.42.1.14/31",
            "10.42.1.16/28",
            "10.42.1.32/27",
            "10.42.1.64/26",
            "10.42.1.128/25",
        ]
    );
    // The sender's own filter says the same (egress), and so does a rule naming b as the
    // destination, at a.
    let b = filter_of(&r, &p, 1);
    let egress = evaluate(Some(&b), addr("10.42.1.200"), db, tcp80());
    assert_eq!(egress, denied);
    let p = policy(
        Action::Allow,
        vec![rule(
            "to-b",
            Action::Deny,
            &[],
            &[("zone", "host"), ("host", "b")],
            &[],
        )],
    );
    let a = filter_of(&r, &p, 0);
    let to = |dst| evaluate(Some(&a), addr("10.42.0.1"), addr(dst), tcp80());
    assert_eq!(to("10.42.1.200"), (Action::Deny, Some("to-b")));
    assert_eq!(to("10.42.1.12"), (Action::Allow, None));
}

#[test]
fn an_allow_naming_a_host_does_not_reach_its_unregistered_addresses() {
    let r = cluster();
    let p = policy(
        Action::Deny,
        vec![rule("from-b", Action::Allow, &[("host", "b")], &[], &[])],
    );
    let c = filter_of(&r, &p, 2);
    let db = addr("10.42.2.10");
    for (src, want) in [
        ("10.42.1.1", (Action::Allow, Some("from-b"))),
        ("10.42.1.11", (Action::Allow, Some("from-b"))),
        ("10.42.1.12", (Action::Allow, Some("from-b"))),
        ("10.42.1.200", (Action::Deny, None)),
    ] {
        assert_eq!(evaluate(Some(&c), addr(src), db, tcp80()), want, "{src}");
    }
}
