//! Applying and removing the policy; helpers that build policies for the compiler's tests.

use wgmesh_config::policy::{Action, Flow, Policy, PolicyTest, Rule, Selector};

use super::*;

pub(crate) fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| ((*k).into(), (*v).into()))
        .collect()
}

pub(crate) fn rule(
    name: &str,
    action: Action,
    from: &[(&str, &str)],
    to: &[(&str, &str)],
    ports: &[&str],
) -> Rule {
    Rule {
        name: name.into(),
        action,
        from: Selector(labels(from)),
        to: Selector(labels(to)),
        ports: ports.iter().map(|p| p.parse().unwrap()).collect(),
    }
}

/// The issue's seed policy: frontends reach the app on TCP 80, the app reaches backends on
/// TCP 5432, nobody reaches a backend's SSH; everything else is denied.
pub(crate) fn seed() -> Policy {
    Policy {
        default: Action::Deny,
        rules: vec![
            rule(
                "frontend-to-app",
                Action::Allow,
                &[("role", "frontend")],
                &[("app", "secure-app")],
                &["tcp/80"],
            ),
            rule(
                "app-to-db",
                Action::Allow,
                &[("app", "secure-app")],
                &[("role", "backend")],
                &["tcp/5432"],
            ),
            rule(
                "no-ssh",
                Action::Deny,
                &[],
                &[("role", "backend")],
                &["tcp/22"],
            ),
        ],
        tests: vec![PolicyTest {
            from: labels(&[("role", "frontend")]),
            to: labels(&[("app", "secure-app")]),
            port: "tcp/80".parse().unwrap(),
            expect: Action::Allow,
            line: 24,
        }],
    }
}

#[test]
fn a_policy_is_stored_with_its_text_and_replaced_or_removed() {
    let mut r = registry();
    assert_eq!(r.plan_remove_policy(), Err(RegistryError::NoPolicy));
    let checked = CheckedPolicy::new(seed(), "default = \"deny\"\n".into(), "seed.toml".into());
    let m = r.plan_policy(checked.unwrap());
    r.apply(&m).unwrap();
    let stored = r.policy().unwrap();
    assert_eq!(
        (stored.origin.as_str(), stored.revision),
        ("seed.toml", r.revision())
    );
    assert_eq!(stored.policy, seed());
    assert_eq!(r.netmap_revision(), r.revision());
    // The mutation's JSON gives the same policy back, and replays.
    let json = serde_json::to_string(&m).unwrap();
    assert!(json.starts_with(r#"{"type":"policy_applied","#), "{json}");
    assert_eq!(serde_json::from_str::<Mutation>(&json).unwrap(), m);
    let snapshot: Registry = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
    assert_eq!(snapshot, r);
    let m = r.plan_remove_policy().unwrap();
    assert_eq!(
        serde_json::to_string(&m).unwrap(),
        r#"{"type":"policy_removed"}"#
    );
    r.apply(&m).unwrap();
    assert!(r.policy().is_none());
}

#[test]
fn a_stored_policy_keeps_its_port_entries_and_flows_as_their_text() {
    // The store's form of a policy: what replay reads back through `PortSpec`'s and `Flow`'s
    // parsers (see `StoredPolicy`). A change here is a change of the store's format.
    let mut r = registry();
    let mut p = seed();
    p.rules[0].ports = ["tcp/80", "tcp/8000-8100", "udp", "icmp"]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
    let m = r.plan_policy(CheckedPolicy::new(p, String::new(), "p.toml".into()).unwrap());
    let json = serde_json::to_value(&m).unwrap();
    assert_eq!(
        json["policy"]["rules"][0]["ports"],
        serde_json::json!(["tcp/80", "tcp/8000-8100", "udp", "icmp"])
    );
    assert_eq!(
        json["policy"]["rules"][0]["from"],
        serde_json::json!({"role": "frontend"})
    );
    assert_eq!(json["policy"]["tests"][0]["port"], "tcp/80");
    r.apply(&serde_json::from_value(json).unwrap()).unwrap();
    let ports = &r.policy().unwrap().policy.rules[0].ports;
    assert_eq!((ports[1].first, ports[1].last), (8000, 8100));
}

#[test]
fn a_policy_whose_test_fails_is_refused_naming_the_file_line_and_verdict() {
    let mut p = seed();
    p.tests.push(PolicyTest {
        from: labels(&[("app", "secure-app")]),
        to: labels(&[("role", "backend")]),
        port: Flow {
            proto: wgmesh_config::policy::Proto::Tcp,
            port: 22,
        },
        expect: Action::Allow,
        line: 31,
    });
    let err = CheckedPolicy::new(p, String::new(), "/etc/p.toml".into()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "/etc/p.toml:31: test failed: tcp/22 from { app = \"secure-app\" } to { role = \
         \"backend\" } is expected to be allowed, but it is denied by rule \"no-ssh\""
    );
    let mut big = seed();
    big.rules = vec![big.rules[0].clone(); wgmesh_config::netmap::MAX_FILTER_RULES + 1];
    assert!(matches!(
        CheckedPolicy::new(big, String::new(), "big.toml".into()),
        Err(RegistryError::PolicyTooLarge { .. })
    ));
}
