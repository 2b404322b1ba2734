//! Property tests: `decide` agrees with a naive restatement of the meaning on random policies
//! and label sets; a policy written as TOML parses back to itself; selectors read back their
//! text form.

use std::fmt::Write as _;

use proptest::prelude::*;

use super::*;

fn labels_strategy() -> impl Strategy<Value = Labels> {
    let key = prop::sample::select(vec!["app", "role", "host", "example.com/tier"]);
    let value = prop::sample::select(vec!["x", "y", "host-a", ""]);
    prop::collection::btree_map(
        key.prop_map(str::to_owned),
        value.prop_map(str::to_owned),
        0..3,
    )
    // The host label holds a host name, never the empty value.
    .prop_filter("host is a host name", |l| {
        l.get(HOST_LABEL).is_none_or(|v| !v.is_empty())
    })
}

fn proto_strategy() -> impl Strategy<Value = Proto> {
    prop::sample::select(vec![Proto::Tcp, Proto::Udp, Proto::Icmp])
}

fn port_spec_strategy() -> impl Strategy<Value = PortSpec> {
    (proto_strategy(), 1u16..6, 0u16..3, any::<bool>()).prop_map(|(proto, first, len, all)| {
        if all || proto == Proto::Icmp {
            PortSpec::any(proto)
        } else {
            PortSpec {
                proto,
                first,
                last: first + len,
            }
        }
    })
}

fn flow_strategy() -> impl Strategy<Value = Flow> {
    (proto_strategy(), 1u16..9).prop_map(|(proto, port)| Flow {
        proto,
        port: if proto == Proto::Icmp { 0 } else { port },
    })
}

fn action_strategy() -> impl Strategy<Value = Action> {
    prop::sample::select(vec![Action::Allow, Action::Deny])
}

fn policy_strategy() -> impl Strategy<Value = Policy> {
    let rule = (
        action_strategy(),
        labels_strategy(),
        labels_strategy(),
        prop::collection::vec(port_spec_strategy(), 0..3),
    );
    let test = (
        labels_strategy(),
        labels_strategy(),
        flow_strategy(),
        action_strategy(),
    );
    (
        action_strategy(),
        prop::collection::vec(rule, 0..6),
        prop::collection::vec(test, 0..3),
    )
        .prop_map(|(default, rules, tests)| Policy {
            default,
            rules: rules
                .into_iter()
                .enumerate()
                .map(|(i, (action, from, to, ports))| Rule {
                    name: format!("r{i}"),
                    action,
                    from: Selector(from),
                    to: Selector(to),
                    ports,
                })
                .collect(),
            tests: tests
                .into_iter()
                .map(|(from, to, port, expect)| PolicyTest {
                    from,
                    to,
                    port,
                    expect,
                    line: 0,
                })
                .collect(),
        })
}

/// The meaning, restated without `Rule::matches`, `Selector::matches` or `PortSpec::holds`.
fn naive(policy: &Policy, from: &Labels, to: &Labels, flow: Flow) -> (Action, Option<String>) {
    let carries =
        |sel: &Selector, labels: &Labels| sel.0.iter().all(|(k, v)| labels.get(k) == Some(v));
    let mut first_deny = None;
    let mut first_allow = None;
    for r in &policy.rules {
        let port_ok = r.ports.is_empty()
            || r.ports
                .iter()
                .any(|p| p.proto == flow.proto && p.first <= flow.port && flow.port <= p.last);
        if !(port_ok && carries(&r.from, from) && carries(&r.to, to)) {
            continue;
        }
        let slot = match r.action {
            Action::Deny => &mut first_deny,
            Action::Allow => &mut first_allow,
        };
        slot.get_or_insert_with(|| r.name.clone());
    }
    match (first_deny, first_allow) {
        (Some(name), _) => (Action::Deny, Some(name)),
        (None, Some(name)) => (Action::Allow, Some(name)),
        (None, None) => (policy.default, None),
    }
}

fn toml_labels(labels: &Labels) -> String {
    let pairs: Vec<_> = labels
        .iter()
        .map(|(k, v)| format!("{k:?} = {v:?}"))
        .collect();
    format!("{{ {} }}", pairs.join(", "))
}

/// The policy as a file (the test's own writer; the crate has none).
fn to_toml(policy: &Policy) -> String {
    let mut out = format!("default = \"{}\"\n", policy.default);
    for r in &policy.rules {
        let _ = write!(
            out,
            "\n[[rule]]\nname = {:?}\naction = \"{}\"\nfrom = {}\nto = {}\n",
            r.name,
            r.action,
            toml_labels(&r.from.0),
            toml_labels(&r.to.0)
        );
        if !r.ports.is_empty() {
            let ports: Vec<_> = r.ports.iter().map(|p| format!("\"{p}\"")).collect();
            let _ = writeln!(out, "ports = [{}]", ports.join(", "));
        }
    }
    for t in &policy.tests {
        let _ = write!(
            out,
            "\n[[test]]\nfrom = {}\nto = {}\nport = \"{}\"\nexpect = \"{}\"\n",
            toml_labels(&t.from),
            toml_labels(&t.to),
            t.port,
            t.expect
        );
    }
    out
}

proptest! {
    #[test]
    fn decide_agrees_with_the_naive_meaning(
        policy in policy_strategy(),
        from in labels_strategy(),
        to in labels_strategy(),
        flow in flow_strategy(),
    ) {
        let got = policy.decide(&from, &to, flow);
        let by = match got.by {
            DecidedBy::Rule(name) => Some(name.to_owned()),
            DecidedBy::Default => None,
        };
        prop_assert_eq!((got.action, by), naive(&policy, &from, &to, flow));
    }

    #[test]
    fn a_policy_written_as_toml_parses_back(policy in policy_strategy()) {
        let text = to_toml(&policy);
        let mut back = parse(&text).map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
        for t in &mut back.tests {
            prop_assert!(t.line > 0);
            t.line = 0;
        }
        prop_assert_eq!(back, policy);
    }

    #[test]
    fn selectors_read_back_their_text(labels in labels_strategy()) {
        let selector = Selector(labels);
        let text = selector.to_string();
        prop_assert_eq!(text.parse::<Selector>().unwrap(), selector);
    }
}
