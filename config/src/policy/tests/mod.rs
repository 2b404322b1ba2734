//! Tests of the policy file: the seed policy parses and decides right (here), every refusal and
//! where it points (`refusals`), running and reporting tests (`run`), selector texts
//! (`selector`), and `decide` against a naive restatement on random policies (`property`).

use std::path::Path;

use super::*;

mod property;
mod refusals;
mod run;
mod selector;

const ORIGIN: &str = "/etc/wgmesh/policy.toml";
/// The issue's seed policy, with tests; the README and the CLI's end-to-end test use it too.
const SEED: &str = include_str!("../../../../docs/policy/seed.toml");

fn parse(text: &str) -> Result<Policy, ConfigError> {
    Policy::from_toml(text, Path::new(ORIGIN))
}

use crate::error::ConfigError;

/// Parses `text`, expecting an error at `line` for `field`; returns the displayed error.
#[track_caller]
fn expect_error(text: &str, line: usize, field: Option<&str>, needle: &str) -> String {
    parse(text)
        .expect_err("the policy should be rejected")
        .assert_at(ORIGIN, line, field, needle)
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn flow(text: &str) -> Flow {
    text.parse().unwrap()
}

/// 1-based line of the `n`th (0-based) line of `text` that starts with `needle`.
fn nth_line(text: &str, needle: &str, n: usize) -> usize {
    text.lines()
        .enumerate()
        .filter(|(_, l)| l.starts_with(needle))
        .nth(n)
        .unwrap_or_else(|| panic!("{needle:?} #{n} not in {text}"))
        .0
        + 1
}

#[test]
fn the_seed_policy_parses_as_written() {
    let policy = parse(SEED).unwrap();
    assert_eq!(policy.default, Action::Deny);
    let names: Vec<_> = policy.rules.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["frontend-to-app", "app-to-db", "no-ssh"]);
    let [app, db, ssh] = &policy.rules[..] else {
        panic!("three rules")
    };
    assert_eq!(app.action, Action::Allow, "action defaults to allow");
    assert_eq!(app.from, Selector(labels(&[("role", "frontend")])));
    assert_eq!(app.to, Selector(labels(&[("app", "secure-app")])));
    assert_eq!(app.ports, vec!["tcp/80".parse().unwrap()]);
    assert_eq!(db.ports, vec!["tcp/5432".parse().unwrap()]);
    assert_eq!(ssh.action, Action::Deny);
    assert!(ssh.from.is_all());
    assert_eq!(policy.tests.len(), 7);
    let first = &policy.tests[0];
    assert_eq!(first.from, labels(&[("role", "frontend")]));
    assert_eq!(first.port, flow("tcp/80"));
    assert_eq!(first.expect, Action::Allow);
    for (i, test) in policy.tests.iter().enumerate() {
        assert_eq!(test.line, nth_line(SEED, "[[test]]", i), "test[{i}]");
    }
}

#[test]
fn the_seed_policy_decides_right() {
    let policy = parse(SEED).unwrap();
    let frontend = labels(&[("role", "frontend"), ("host", "host-b")]);
    let unlabelled = labels(&[("host", "host-b")]);
    let app = labels(&[("app", "secure-app"), ("host", "host-a")]);
    let backend = labels(&[("role", "backend"), ("host", "host-c")]);
    let rule = DecidedBy::Rule;
    for (from, to, port, action, by) in [
        (
            &frontend,
            &app,
            "tcp/80",
            Action::Allow,
            rule("frontend-to-app"),
        ),
        (
            &frontend,
            &app,
            "tcp/8080",
            Action::Deny,
            DecidedBy::Default,
        ),
        (&frontend, &app, "udp/80", Action::Deny, DecidedBy::Default),
        (&frontend, &app, "icmp", Action::Deny, DecidedBy::Default),
        (
            &unlabelled,
            &app,
            "tcp/80",
            Action::Deny,
            DecidedBy::Default,
        ),
        (&app, &frontend, "tcp/80", Action::Deny, DecidedBy::Default),
        (&app, &backend, "tcp/5432", Action::Allow, rule("app-to-db")),
        (&app, &backend, "tcp/22", Action::Deny, rule("no-ssh")),
        (&frontend, &backend, "tcp/22", Action::Deny, rule("no-ssh")),
        (
            &frontend,
            &backend,
            "tcp/5432",
            Action::Deny,
            DecidedBy::Default,
        ),
        (&backend, &app, "tcp/5432", Action::Deny, DecidedBy::Default),
    ] {
        let got = policy.decide(from, to, flow(port));
        assert_eq!(got, Decision { action, by }, "{from:?} -> {to:?} {port}");
    }
    assert!(policy.run_tests().iter().all(|o| o.passed));
    assert!(policy.check_tests(Path::new(ORIGIN)).is_ok());
}

#[test]
fn a_deny_wins_over_an_earlier_allow_and_the_default_allow_lets_the_rest_pass() {
    let text = r#"default = "allow"

[[rule]]
name = "web"
from = {}
to = { app = "web" }

[[rule]]
name = "block-ssh"
action = "deny"
from = {}
to = { app = "web" }
ports = ["tcp/22", "tcp/2222-2230"]
"#;
    let policy = parse(text).unwrap();
    let web = labels(&[("app", "web")]);
    let none = Labels::new();
    let by = |f| policy.decide(&none, &web, flow(f)).by;
    assert_eq!(by("tcp/22"), DecidedBy::Rule("block-ssh"));
    assert_eq!(by("tcp/2225"), DecidedBy::Rule("block-ssh"));
    assert_eq!(by("tcp/2231"), DecidedBy::Rule("web"));
    let other = policy.decide(&none, &none, flow("udp/53"));
    assert_eq!(
        (other.action, other.by),
        (Action::Allow, DecidedBy::Default)
    );
}

#[test]
fn a_policy_without_rules_or_tests_is_valid() {
    let policy = parse("default = \"allow\"\n").unwrap();
    assert_eq!(policy, Policy::default());
    let policy = parse("default = \"deny\"\n").unwrap();
    assert_eq!(policy.default, Action::Deny);
    assert!(policy.rules.is_empty() && policy.tests.is_empty());
}

#[test]
fn load_names_the_file_it_cannot_read() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("missing.toml");
    let e = Policy::load(&path).unwrap_err();
    assert_eq!(e.path, path);
    assert!(e.to_string().contains("cannot read the file"), "{e}");
    let path = dir.path().join("policy.toml");
    std::fs::write(&path, SEED).unwrap();
    assert_eq!(Policy::load(&path).unwrap(), parse(SEED).unwrap());
}
