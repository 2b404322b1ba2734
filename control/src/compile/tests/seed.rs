//! The issue's seed policy on hosts a, b and c: what each host is sent, and `explain`.

use wgmesh_config::policy::{Action, DecidedBy, Flow};

use super::gen::evaluate;
use super::*;
use crate::compile::{explain, EndpointRef, ExplainError};
use crate::registry::tests::policy::seed;
use crate::registry::tests::workloads::workload;
use crate::registry::tests::{join, registry};
use crate::registry::{CheckedPolicy, Labels};

/// a (10.42.0.0/24) runs the app, b (10.42.1.0/24) a frontend and an unlabelled workload,
/// c (10.42.2.0/24) a backend; the seed policy is applied.
fn cluster() -> Registry {
    let mut r = registry();
    for (n, name) in ["a", "b", "c"].iter().enumerate() {
        join(&mut r, name, n as u8 + 1).unwrap();
    }
    let lists = [
        vec![workload("app", "10.42.0.10", &[("app", "secure-app")])],
        vec![
            workload("front", "10.42.1.10", &[("role", "frontend")]),
            workload("plain", "10.42.1.11", &[]),
        ],
        vec![workload("db", "10.42.2.10", &[("role", "backend")])],
    ];
    for (id, list) in lists.into_iter().enumerate() {
        let m = r.plan_workloads(HostId(id as u64), list).unwrap().unwrap();
        r.apply(&m).unwrap();
    }
    let m = r.plan_policy(CheckedPolicy::new(seed(), String::new(), "seed.toml".into()).unwrap());
    r.apply(&m).unwrap();
    r
}

fn flow(text: &str) -> Flow {
    text.parse().unwrap()
}

#[test]
fn each_host_gets_the_rules_concerning_it_as_addresses_and_only_the_peers_it_needs() {
    let r = cluster();
    let policy = &r.policy().unwrap().policy;
    let maps = netmaps(&r, Some(policy));
    let peers = |id: u64| -> Vec<&str> {
        let map = &maps[&HostId(id)];
        map.peers.iter().map(|p| p.name.as_str()).collect()
    };
    // b's frontend reaches a's app, a's app reaches c's backend: b and c need not know each
    // other (no-ssh is a deny).
    assert_eq!(peers(0), ["b", "c"]);
    assert_eq!(peers(1), ["a"]);
    assert_eq!(peers(2), ["a"]);
    let a = maps[&HostId(0)].filter.as_ref().unwrap();
    assert_eq!(a.default, Action::Deny);
    let shown: Vec<String> = a
        .rules
        .iter()
        .map(|rule| {
            let nets = |side: &[ipnet::IpNet]| -> Vec<String> {
                side.iter().map(ToString::to_string).collect()
            };
            format!(
                "{} {:?} -> {:?}",
                rule.name,
                nets(&rule.from),
                nets(&rule.to)
            )
        })
        .collect();
    assert_eq!(
        shown,
        [
            r#"frontend-to-app ["10.42.1.10/32"] -> ["10.42.0.10/32"]"#,
            r#"app-to-db ["10.42.0.10/32"] -> ["10.42.2.10/32"]"#,
            r#"no-ssh ["10.42.0.0/16"] -> ["10.42.2.10/32"]"#,
        ]
    );
    // b's filter lacks app-to-db, which names none of its addresses.
    let b = maps[&HostId(1)].filter.as_ref().unwrap();
    let names: Vec<&str> = b.rules.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["frontend-to-app", "no-ssh"]);
}

#[test]
fn the_seed_flows_are_decided_at_both_ends() {
    let r = cluster();
    let maps = netmaps(&r, Some(&r.policy().unwrap().policy));
    let (a, b, c) = (
        maps[&HostId(0)].filter.as_ref(),
        maps[&HostId(1)].filter.as_ref(),
        maps[&HostId(2)].filter.as_ref(),
    );
    let addr = |s: &str| s.parse().unwrap();
    let (app, front, plain, db) = (
        addr("10.42.0.10"),
        addr("10.42.1.10"),
        addr("10.42.1.11"),
        addr("10.42.2.10"),
    );
    for (src_filter, dst_filter, src, dst, f, want) in [
        (
            b,
            a,
            front,
            app,
            "tcp/80",
            (Action::Allow, Some("frontend-to-app")),
        ),
        (b, a, front, app, "tcp/8080", (Action::Deny, None)),
        (a, b, app, front, "tcp/80", (Action::Deny, None)),
        (b, a, plain, app, "tcp/80", (Action::Deny, None)),
        (b, a, front, app, "icmp", (Action::Deny, None)),
        (
            a,
            c,
            app,
            db,
            "tcp/5432",
            (Action::Allow, Some("app-to-db")),
        ),
        (a, c, app, db, "tcp/22", (Action::Deny, Some("no-ssh"))),
        // Two workloads on one host obey the same policy.
        (b, b, front, plain, "tcp/80", (Action::Deny, None)),
    ] {
        let f = flow(f);
        assert_eq!(
            evaluate(src_filter, src, dst, f),
            want,
            "egress {src} -> {dst} {f}"
        );
        assert_eq!(
            evaluate(dst_filter, src, dst, f),
            want,
            "ingress {src} -> {dst} {f}"
        );
    }
}

#[test]
fn explain_resolves_workloads_hosts_and_labels() {
    let r = cluster();
    let policy = Some(&r.policy().unwrap().policy);
    let ep = |s: &str| s.parse::<EndpointRef>().unwrap();
    let decide = |from: &str, to: &str, f: &str| {
        explain(&r, policy, &ep(from), &ep(to), flow(f))
            .unwrap()
            .decision
    };
    let allowed_by = |name| (Action::Allow, DecidedBy::Rule(name));
    let d = decide("b/front", "a/app", "tcp/80");
    assert_eq!((d.action, d.by), allowed_by("frontend-to-app"));
    let d = decide("role=frontend", "app=secure-app,zone=x", "tcp/80");
    assert_eq!((d.action, d.by), allowed_by("frontend-to-app"));
    let d = decide("a/app", "c/db", "tcp/22");
    assert_eq!((d.action, d.by), (Action::Deny, DecidedBy::Rule("no-ssh")));
    let d = decide("b/plain", "a/app", "tcp/80");
    assert_eq!((d.action, d.by), (Action::Deny, DecidedBy::Default));
    // A host's own traffic carries its labels and host=<name>.
    let e = explain(&r, policy, &ep("a"), &ep(""), flow("icmp")).unwrap();
    assert_eq!(e.from["host"], "a");
    assert!(e.to.is_empty());
    assert_eq!(
        explain(&r, policy, &ep("x/app"), &ep("a"), flow("icmp")),
        Err(ExplainError::NoSuchHost("x".into()))
    );
    assert!(matches!(
        explain(&r, policy, &ep("a/nope"), &ep("a"), flow("icmp")),
        Err(ExplainError::NoSuchWorkload { .. })
    ));
    assert_eq!(ep("example.com/zone=a").to_string(), "example.com/zone=a");
    // A host part that is no host name is a bad endpoint, not an unknown host.
    for bad in ["a b", "a b/app", "/app", "host!/x", " a b "] {
        let e = bad.parse::<EndpointRef>().unwrap_err();
        assert!(matches!(e, ExplainError::HostName { .. }), "{bad}: {e:?}");
        assert!(
            e.to_string().contains("HOST/NETNS, HOST or a selector"),
            "{e}"
        );
    }
    // Without a policy everything is allowed.
    let e = explain(&r, None, &ep("b/plain"), &ep("c/db"), flow("tcp/22")).unwrap();
    assert_eq!(e.decision.action, Action::Allow);
}

#[test]
fn a_workload_label_wins_over_its_hosts_and_host_is_always_the_hosts_name() {
    let mut r = cluster();
    // Host labels are zone=host (the test request's); the workload says zone=app.
    let m = r
        .plan_workloads(
            HostId(0),
            vec![workload(
                "app",
                "10.42.0.10",
                &[("app", "secure-app"), ("zone", "app")],
            )],
        )
        .unwrap()
        .unwrap();
    r.apply(&m).unwrap();
    let ep: EndpointRef = "a/app".parse().unwrap();
    let labels = ep.labels(&r).unwrap();
    assert_eq!(labels["zone"], "app");
    assert_eq!(labels["host"], "a");
    assert_eq!(
        endpoint_labels(r.host(HostId(1)).unwrap(), None)["zone"],
        "host"
    );
    let mut p = seed();
    p.rules[0].to =
        wgmesh_config::policy::Selector([("zone".to_owned(), "host".to_owned())].into());
    let maps = netmaps(&r, Some(&p));
    let a = maps[&HostId(0)].filter.as_ref().unwrap();
    // zone=host selects every endpoint but a's app, which says zone=app.
    let to: Vec<String> = a.rules[0].to.iter().map(ToString::to_string).collect();
    assert_eq!(
        to,
        [
            "10.42.0.1/32",
            "10.42.1.1/32",
            "10.42.1.10/31",
            "10.42.2.1/32",
            "10.42.2.10/32"
        ]
    );
}

#[test]
fn explain_reads_selectors_as_every_selector_text_is_read() {
    use wgmesh_config::policy::Selector;

    let frontend: Labels = [("role".to_owned(), "frontend".to_owned())].into();
    // The forms `policy test` and `policy explain` print, and spaces around keys and values.
    for (text, want) in [
        ("", Labels::new()),
        ("  ", Labels::new()),
        ("{}", Labels::new()),
        (" { } ", Labels::new()),
        ("role=frontend", frontend.clone()),
        ("{role=frontend}", frontend.clone()),
        (" role = frontend ", frontend.clone()),
        ("{ role = frontend }", frontend.clone()),
    ] {
        let ep: EndpointRef = text.parse().unwrap_or_else(|e| panic!("{text:?}: {e}"));
        assert_eq!(ep, EndpointRef::Labels(want.clone()), "{text:?}");
        // Exactly what config's selector parser reads.
        assert_eq!(text.parse::<Selector>().unwrap().0, want, "{text:?}");
    }
    let two = "{app=secure-app, role=frontend}"
        .parse::<EndpointRef>()
        .unwrap();
    let EndpointRef::Labels(two) = two else {
        panic!("{two:?} is no selector")
    };
    assert_eq!(two.len(), 2);
    // The host forms stay, trimmed as well.
    assert_eq!(
        " a/app ".parse::<EndpointRef>().unwrap(),
        EndpointRef::Workload {
            host: "a".into(),
            name: "app".into()
        }
    );
    assert_eq!(
        "a".parse::<EndpointRef>().unwrap(),
        EndpointRef::Host("a".into())
    );
    // Bad selectors say what is wrong and every valid form.
    for (bad, needle) in [
        ("role=a,role=b", "names the label \"role\" twice"),
        ("role=a,bad key=b", "bad key"),
        ("role=a,", "\"\""),
        ("{role}", "role"),
        ("{role=frontend", "role"),
        ("host=a b", "holds a host's name"),
    ] {
        let e = bad.parse::<EndpointRef>().unwrap_err();
        assert!(matches!(e, ExplainError::Selector { .. }), "{bad}: {e:?}");
        let shown = e.to_string();
        for needle in [
            needle,
            &format!("selector {bad:?}"),
            "\"role=frontend,zone=a\"",
            "\"{}\"",
            "HOST/NETNS (a workload) or HOST",
        ] {
            assert!(shown.contains(needle), "{bad}: {shown:?} lacks {needle:?}");
        }
    }
}
