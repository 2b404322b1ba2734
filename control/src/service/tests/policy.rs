//! The policy calls: only the admin makes them (refusals audited), a refused apply changes
//! nothing, apply and show round-trip, remove goes back to allow-all, explain resolves
//! endpoints and says what decided.

use wgmesh_client::api::{ExplainQuery, PolicyBody};
use wgmesh_config::policy::{Action as Verdict, Policy};

use super::*;
use crate::registry::Workload;

const SEED: &str = include_str!("../../../../docs/policy/seed.toml");

/// A `PUT /v1/policy` body of `text` from the file `origin`, prepared as the HTTP layer does.
fn body(text: &str, origin: &str) -> PreparedPolicy {
    PreparedPolicy::prepare(PolicyBody {
        text: text.to_owned(),
        origin: origin.to_owned(),
    })
}

fn query(from: &str, to: &str, port: &str) -> ExplainQuery {
    ExplainQuery {
        from: from.to_owned(),
        to: to.to_owned(),
        port: port.to_owned(),
    }
}

/// The audit log's lines as (action, result, target).
fn audit_lines(f: &Fixture) -> Vec<(String, String, serde_json::Value)> {
    std::fs::read_to_string(&f.audit)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .map(|l| {
            (
                l["action"].as_str().unwrap().to_owned(),
                l["result"].to_string(),
                l["target"].clone(),
            )
        })
        .collect()
}

/// host-a (labels app=secure-app, workload `db` role=backend), host-b (role=frontend) and
/// host-c (no labels) joined; host-c's credential.
fn cluster() -> (Fixture, String) {
    let mut f = fixture();
    for (name, key, labels) in [
        ("host-a", 1, [("app", "secure-app")]),
        ("host-b", 2, [("role", "frontend")]),
    ] {
        let body = TokenBody {
            ttl_secs: Some(3600),
            reusable: false,
            labels: labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        };
        let t = f.control.create_token(&Caller::Admin, body, 1000, None);
        join(&mut f, &t.unwrap().token, name, key).unwrap();
    }
    let a = f.control.registry().host_by_name("host-a").unwrap().id;
    let workload = Workload {
        name: "db".into(),
        ip: "10.42.0.10".parse().unwrap(),
        labels: [("role".to_owned(), "backend".to_owned())].into(),
    };
    let m = f.control.registry().plan_workloads(a, vec![workload]);
    f.control.commit(&m.unwrap().unwrap()).unwrap();
    let t = token(&mut f, 3600, false);
    let host_c = join(&mut f, &t, "host-c", 3).unwrap().credential;
    (f, host_c)
}

#[test]
fn only_the_admin_may_apply_show_remove_or_explain_and_refusals_are_audited() {
    let (mut f, credential) = cluster();
    let host = f.control.authenticate(Some(&credential));
    assert!(matches!(host, Caller::Host(_)));
    let before = f.control.revision();
    let c = &mut f.control;
    for (caller, want) in [
        (&Caller::Anonymous, ApiReason::Unauthenticated),
        (&host, ApiReason::Forbidden),
    ] {
        let applied = c.apply_policy(caller, body(SEED, "seed.toml"), 5, None);
        assert_eq!(reason(applied), want);
        assert_eq!(reason(c.show_policy(caller, 5, None)), want);
        assert_eq!(reason(c.remove_policy(caller, 5, None)), want);
        let q = query("role=frontend", "app=secure-app", "tcp/80");
        assert_eq!(reason(c.explain_policy(caller, &q, 5, None)), want);
    }
    assert_eq!(c.revision(), before, "a refused call changes nothing");
    assert!(c.registry().policy().is_none());
    let lines = audit_lines(&f);
    let refused: Vec<(&str, &str)> = lines
        .iter()
        .filter(|(action, _, _)| action.starts_with("policy_"))
        .map(|(a, r, _)| (a.as_str(), r.as_str()))
        .collect();
    let mut want = Vec::new();
    for r in [
        r#"{"refused":"unauthenticated"}"#,
        r#"{"refused":"forbidden"}"#,
    ] {
        for a in [
            "policy_apply",
            "policy_show",
            "policy_remove",
            "policy_explain",
        ] {
            want.push((a, r));
        }
    }
    assert_eq!(refused, want);
    // A refused apply still names the file it was asked to apply.
    let apply = lines.iter().find(|(a, _, _)| a == "policy_apply").unwrap();
    assert_eq!(
        apply.2,
        serde_json::json!({"kind": "policy", "origin": "seed.toml"})
    );
}

#[test]
fn apply_then_show_round_trips_and_is_audited_with_the_origin() {
    let mut f = fixture();
    let admin = Caller::Admin;
    let empty = f.control.show_policy(&admin, 1, None).unwrap();
    assert_eq!(empty.policy, None);
    let netmaps_before = f.control.registry().netmap_revision();
    let applied = f
        .control
        .apply_policy(&admin, body(SEED, "docs/policy/seed.toml"), 2, None)
        .unwrap();
    assert_eq!((applied.rules, applied.tests), (3, 7));
    assert_eq!(applied.revision, f.control.revision());
    assert!(f.control.registry().netmap_revision() > netmaps_before);
    let shown = f
        .control
        .show_policy(&admin, 3, None)
        .unwrap()
        .policy
        .unwrap();
    assert_eq!(shown.text, SEED);
    assert_eq!(shown.origin, "docs/policy/seed.toml");
    assert_eq!(shown.revision, applied.revision);
    assert_eq!(shown.default, Verdict::Deny);
    assert_eq!((shown.rules, shown.tests), (3, 7));
    // What the compiler uses is the policy the server parsed from the text.
    let stored = &f.control.registry().policy().unwrap().policy;
    let parsed = Policy::from_toml(SEED, std::path::Path::new("x")).unwrap();
    assert_eq!(stored, &parsed);
    let lines = audit_lines(&f);
    let last = lines.last().unwrap();
    assert_eq!(
        (last.0.as_str(), last.1.as_str()),
        ("policy_apply", "\"ok\"")
    );
    assert_eq!(
        last.2,
        serde_json::json!({"kind": "policy", "origin": "docs/policy/seed.toml",
                           "revision": applied.revision})
    );
    // Reads leave no line.
    assert!(!lines.iter().any(|(a, _, _)| a == "policy_show"));
}

#[test]
fn a_bad_file_or_a_failing_test_changes_nothing_and_says_what_failed() {
    let mut f = fixture();
    let admin = Caller::Admin;
    let old = f
        .control
        .apply_policy(&admin, body(SEED, "seed.toml"), 1, None)
        .unwrap();
    let shown_before = f.control.show_policy(&admin, 1, None).unwrap();
    let failing = format!(
        "{SEED}\n[[test]]\nfrom = {{ role = \"frontend\" }}\nto = {{ role = \"backend\" }}\n\
         port = \"tcp/22\"\nexpect = \"allow\"\n"
    );
    let failing_line = failing.lines().count() - 4;
    let bad_port = SEED.replace("\"tcp/5432\"]", "\"tcp/99999\"]");
    let unknown_key = SEED.replace("ports = [\"tcp/22\"]", "ports = [\"tcp/22\"]\nlog = true");
    let too_many: String =
        std::iter::once("default = \"deny\"\n".to_owned())
            .chain((0..=wgmesh_config::netmap::MAX_FILTER_RULES).map(|i| {
                format!("[[rule]]\nname = \"r{i}\"\nfrom = {{}}\nto = {{ n = \"{i}\" }}\n")
            }))
            .collect();
    for (text, origin, reason_word, needle) in [
        (
            failing.as_str(),
            "p.toml",
            ApiReason::BadPolicy,
            format!("p.toml:{failing_line}: test failed: tcp/22"),
        ),
        (
            bad_port.as_str(),
            "p.toml",
            ApiReason::BadPolicy,
            "p.toml:15:10: rule[1].ports[0]: \"tcp/99999\" has port 99999".to_owned(),
        ),
        (
            unknown_key.as_str(),
            "p.toml",
            ApiReason::BadPolicy,
            "p.toml:23:1: rule[2]: unknown field `log`".to_owned(),
        ),
        (
            "default = \"maybe\"\n",
            "p.toml",
            ApiReason::BadPolicy,
            "p.toml:1:11: default:".to_owned(),
        ),
        (
            too_many.as_str(),
            "p.toml",
            ApiReason::BadPolicy,
            "at most 10000".to_owned(),
        ),
        (
            SEED,
            "",
            ApiReason::BadRequest,
            "origin: the origin is empty".to_owned(),
        ),
        (
            SEED,
            "a\nb",
            ApiReason::BadRequest,
            "origin: the origin contains the control character".to_owned(),
        ),
    ] {
        let err = f
            .control
            .apply_policy(&admin, body(text, origin), 2, None)
            .unwrap_err();
        assert_eq!(err.reason, reason_word, "{}", err.message);
        assert!(
            err.message.contains(&needle),
            "{:?} lacks {needle:?}",
            err.message
        );
        assert_eq!(f.control.revision(), old.revision, "{}", err.message);
        assert_eq!(
            f.control.show_policy(&admin, 3, None).unwrap(),
            shown_before
        );
    }
    let refused = audit_lines(&f)
        .into_iter()
        .filter(|(a, r, _)| a == "policy_apply" && r == r#"{"refused":"bad_policy"}"#)
        .count();
    assert_eq!(refused, 5);
}

#[test]
fn remove_goes_back_to_allow_all_and_removing_nothing_changes_nothing() {
    let mut f = fixture();
    let admin = Caller::Admin;
    let nothing = f.control.remove_policy(&admin, 1, None).unwrap();
    assert!(!nothing.removed);
    assert_eq!(nothing.revision, f.control.revision());
    let applied = f
        .control
        .apply_policy(&admin, body(SEED, "seed.toml"), 2, None)
        .unwrap();
    let removed = f.control.remove_policy(&admin, 3, None).unwrap();
    assert!(removed.removed);
    assert_eq!(removed.revision, applied.revision + 1);
    assert_eq!(f.control.show_policy(&admin, 4, None).unwrap().policy, None);
    let again = f.control.remove_policy(&admin, 5, None).unwrap();
    assert_eq!((again.removed, again.revision), (false, removed.revision));
    let removes: Vec<serde_json::Value> = audit_lines(&f)
        .into_iter()
        .filter(|(a, r, _)| a == "policy_remove" && r == "\"ok\"")
        .map(|(_, _, target)| target)
        .collect();
    let target = serde_json::json!({"kind": "policy", "origin": "seed.toml",
                                    "revision": applied.revision});
    assert_eq!(
        removes,
        [serde_json::Value::Null, target, serde_json::Value::Null]
    );
}

#[test]
fn explain_names_the_rule_or_the_default_and_the_labels_of_each_side() {
    let (mut f, _) = cluster();
    let admin = Caller::Admin;
    let c = &mut f.control;
    // No policy: everything is allowed, by no rule.
    let e = c
        .explain_policy(&admin, &query("host-b", "host-a/db", "tcp/22"), 1, None)
        .unwrap();
    assert_eq!(
        (e.verdict, e.rule, e.revision),
        (Verdict::Allow, None, None)
    );
    let applied = c
        .apply_policy(&admin, body(SEED, "seed.toml"), 2, None)
        .unwrap();
    let explain = |c: &mut Control, from: &str, to: &str, port: &str| {
        c.explain_policy(&admin, &query(from, to, port), 3, None)
    };
    let e = explain(c, "host-b", "host-a", "tcp/80").unwrap();
    assert_eq!(e.verdict, Verdict::Allow);
    assert_eq!(e.rule.as_deref(), Some("frontend-to-app"));
    assert_eq!(e.revision, Some(applied.revision));
    assert_eq!(e.from.endpoint, "host-b");
    assert_eq!(e.from.labels["role"], "frontend");
    assert_eq!(e.from.labels["host"], "host-b");
    assert_eq!(e.to.labels["app"], "secure-app");
    assert_eq!(e.port.to_string(), "tcp/80");
    // A workload carries its own labels, its host's and host=<name>.
    let e = explain(c, "host-a", "host-a/db", "tcp/5432").unwrap();
    assert_eq!(e.rule.as_deref(), Some("app-to-db"));
    assert_eq!(e.to.endpoint, "host-a/db");
    assert_eq!(e.to.labels["role"], "backend");
    assert_eq!(e.to.labels["host"], "host-a");
    let e = explain(c, "app=secure-app", "host-a/db", "tcp/22").unwrap();
    assert_eq!(
        (e.verdict, e.rule.as_deref()),
        (Verdict::Deny, Some("no-ssh"))
    );
    let e = explain(c, "host-c", "host-a", "icmp").unwrap();
    assert_eq!((e.verdict, e.rule), (Verdict::Deny, None));
    // Selectors as `policy test` and `explain` print them, and with spaces.
    for (from, to) in [
        ("{role=frontend}", "{app=secure-app}"),
        (" role = frontend ", "app = secure-app"),
    ] {
        let e = explain(c, from, to, "tcp/80").unwrap();
        assert_eq!(e.rule.as_deref(), Some("frontend-to-app"), "{from} -> {to}");
        assert_eq!(e.from.labels["role"], "frontend");
    }
    let e = explain(c, "{}", "host-a/db", "tcp/22").unwrap();
    assert_eq!(e.rule.as_deref(), Some("no-ssh"));
    assert!(e.from.labels.is_empty());
    // Unknown endpoints are 404, bad forms 400; each names its field.
    for (from, to, port, want, needle) in [
        (
            "host-x",
            "host-a",
            "tcp/80",
            ApiReason::NotFound,
            "from: no host host-x",
        ),
        (
            "host-b",
            "host-a/nope",
            "tcp/80",
            ApiReason::NotFound,
            "to: host host-a has no",
        ),
        (
            "a b",
            "host-a",
            "tcp/80",
            ApiReason::BadRequest,
            "from: \"a b\": \"a b\" is not",
        ),
        (
            "host-b",
            "role=a,role=b",
            "tcp/80",
            ApiReason::BadRequest,
            "to: selector \"role=a,role=b\": names the label \"role\" twice",
        ),
        (
            "role=frontend,",
            "host-a",
            "tcp/80",
            ApiReason::BadRequest,
            "from: selector \"role=frontend,\"",
        ),
        (
            "host-b",
            "host-a",
            "tcp/99999",
            ApiReason::BadRequest,
            "port: \"tcp/99999\" has port",
        ),
        (
            "host-b",
            "host-a",
            "tcp",
            ApiReason::BadRequest,
            "such as \"tcp/80\"",
        ),
    ] {
        let err = explain(c, from, to, port).unwrap_err();
        assert_eq!(err.reason, want, "{}", err.message);
        assert!(
            err.message.contains(needle),
            "{:?} lacks {needle:?}",
            err.message
        );
    }
    let refused = audit_lines(&f)
        .into_iter()
        .filter(|(a, r, _)| a == "policy_explain" && r.contains("refused"))
        .count();
    assert_eq!(refused, 7);
}

#[test]
fn a_policy_is_parsed_and_tested_before_the_control_plane_is_asked() {
    // What the HTTP layer does before taking the lock: no `Control` is needed to prepare.
    let failing = body(
        "default = \"deny\"\n\n[[test]]\nfrom = {}\nto = {}\nport = \"tcp/1\"\nexpect = \"allow\"\n",
        "p.toml",
    );
    let seed = body(SEED, "seed.toml");
    let (mut f, credential) = cluster();
    let host = f.control.authenticate(Some(&credential));
    let before = f.control.revision();
    // Only the admin is told why a prepared policy is refused: anyone else hears who they are.
    let e = f
        .control
        .apply_policy(&host, failing.clone(), 2, None)
        .unwrap_err();
    assert_eq!(e.reason, ApiReason::Forbidden, "{}", e.message);
    let e = f
        .control
        .apply_policy(&Caller::Admin, failing, 2, None)
        .unwrap_err();
    assert_eq!(e.reason, ApiReason::BadPolicy, "{}", e.message);
    assert!(
        e.message.starts_with("p.toml:3: test failed: tcp/1"),
        "{}",
        e.message
    );
    assert_eq!(
        f.control.revision(),
        before,
        "a refused apply changes nothing"
    );
    // A policy prepared before the registry changed is compiled against the registry as it
    // is at the commit: preparing reads nothing of it.
    let t = token(&mut f, 3600, true);
    join(&mut f, &t, "host-d", 4).unwrap();
    let applied = f
        .control
        .apply_policy(&Caller::Admin, seed, 3, None)
        .unwrap();
    assert_eq!((applied.rules, applied.tests), (3, 7));
    let d = f.control.registry().host_by_name("host-d").unwrap().id;
    let netmap = f.control.netmap_of(d);
    assert!(netmap.filter.is_some(), "host-d gets the policy's filter");
}
