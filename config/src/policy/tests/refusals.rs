//! Every refusal of the policy file, and where it points (line, field) and what it says is
//! valid.

use super::*;

/// `default`, one valid rule (lines 3-7) and then `rest` from line 9.
fn with(rest: &str) -> String {
    format!(
        "default = \"deny\"\n\n[[rule]]\nname = \"web\"\nfrom = {{ role = \"frontend\" }}\nto = \
         {{ app = \"web\" }}\nports = [\"tcp/80\"]\n\n{rest}"
    )
}

/// A rule (from line 9) with `body` after its name.
fn rule(body: &str) -> String {
    with(&format!("[[rule]]\nname = \"second\"\n{body}"))
}

/// A test (from line 9) with `body`.
fn test(body: &str) -> String {
    with(&format!("[[test]]\n{body}"))
}

#[test]
fn the_helpers_are_valid() {
    assert_eq!(parse(&with("")).unwrap().rules.len(), 1);
    let two = parse(&rule("from = {}\nto = {}\n")).unwrap();
    assert_eq!(two.rules[1].name, "second");
    let t = parse(&test(
        "from = {}\nto = { app = \"web\" }\nport = \"tcp/80\"\nexpect = \"deny\"\n",
    ))
    .unwrap();
    assert_eq!(t.tests[0].line, 9);
}

#[test]
fn unknown_keys_are_refused_everywhere() {
    let e = expect_error(
        "default = \"deny\"\ncolour = \"red\"\n",
        2,
        None,
        "unknown field `colour`",
    );
    assert!(e.contains("`default`, `rule`, `test`"), "{e}");
    // After a [[rule]] header, a key belongs to that rule.
    expect_error(
        &format!("{}colour = \"red\"\n", with("")),
        9,
        Some("rule[0]"),
        "unknown field `colour`, expected one of `name`, `action`, `from`, `to`, `ports`",
    );
    let e = expect_error(
        &rule("from = {}\nto = {}\nport = \"tcp/80\"\n"),
        13,
        Some("rule[1]"),
        "unknown field `port`",
    );
    assert!(e.contains("`ports`"), "{e}");
    expect_error(
        &test("from = {}\nto = {}\nport = \"tcp/80\"\nexpect = \"deny\"\nname = \"t\"\n"),
        14,
        Some("test[0]"),
        "unknown field `name`",
    );
    expect_error(
        "default = \"deny\"\n[[rules]]\nname = \"x\"\n",
        2,
        None,
        "unknown field `rules`",
    );
}

#[test]
fn a_rule_needs_a_name_a_from_and_a_to() {
    let e = expect_error(
        &rule("from = {}\n"),
        9,
        Some("rule[1]"),
        "missing field `to`",
    );
    assert!(e.contains("{} for every endpoint"), "{e}");
    expect_error(
        &rule("to = {}\n"),
        9,
        Some("rule[1]"),
        "missing field `from`",
    );
    let e = expect_error(
        &with("[[rule]]\nfrom = {}\nto = {}\n"),
        9,
        Some("rule[1]"),
        "missing field `name`",
    );
    assert!(e.contains("a rule name string"), "{e}");
}

#[test]
fn default_is_required_and_is_allow_or_deny() {
    let e = parse("[[rule]]\nname = \"a\"\nfrom = {}\nto = {}\n").unwrap_err();
    let shown = e.to_string();
    assert!(shown.contains("missing field `default`"), "{shown}");
    assert!(
        shown.contains("a policy must say what a flow that no rule matches gets"),
        "{shown}"
    );
    assert_eq!((e.line, e.field.as_deref()), (None, None), "{shown}");
    assert!(
        shown.starts_with(&format!(
            "{ORIGIN}: missing field `default`; add default = \"deny\""
        )),
        "{shown}"
    );
    expect_error(
        "default = \"reject\"\n",
        1,
        Some("default"),
        "\"reject\" is not an action; expected \"allow\" or \"deny\"",
    );
    expect_error(
        "default = true\n",
        1,
        Some("default"),
        "expected \"allow\" or \"deny\"",
    );
}

#[test]
fn action_and_expect_are_allow_or_deny() {
    expect_error(
        &rule("action = \"drop\"\nfrom = {}\nto = {}\n"),
        11,
        Some("rule[1].action"),
        "\"drop\" is not an action; expected \"allow\" or \"deny\"",
    );
    expect_error(
        &rule("action = 1\nfrom = {}\nto = {}\n"),
        11,
        Some("rule[1].action"),
        "expected \"allow\" or \"deny\"",
    );
    expect_error(
        &test("from = {}\nto = {}\nport = \"tcp/80\"\nexpect = \"pass\"\n"),
        13,
        Some("test[0].expect"),
        "\"pass\" is not an action; expected \"allow\" or \"deny\"",
    );
}

#[test]
fn rule_names_are_valid_and_unique() {
    let e = expect_error(
        &with("[[rule]]\nname = \"web\"\nfrom = {}\nto = {}\n"),
        10,
        Some("rule[1].name"),
        "\"web\" is also the name of rule[0] (line 3)",
    );
    assert!(e.contains("rule names are unique"), "{e}");
    expect_error(
        &with("[[rule]]\nname = \"no ssh\"\nfrom = {}\nto = {}\n"),
        10,
        Some("rule[1].name"),
        "\"no ssh\" contains ' '; a rule name is 1 to 63 characters",
    );
    expect_error(
        &with("[[rule]]\nname = \"\"\nfrom = {}\nto = {}\n"),
        10,
        Some("rule[1].name"),
        "\"\" is empty",
    );
    let long = "r".repeat(MAX_RULE_NAME_LEN + 1);
    expect_error(
        &with(&format!(
            "[[rule]]\nname = \"{long}\"\nfrom = {{}}\nto = {{}}\n"
        )),
        10,
        Some("rule[1].name"),
        "is 64 characters long",
    );
}

#[test]
fn bad_port_entries_give_the_port_rule() {
    let e = expect_error(
        &rule("from = {}\nto = {}\nports = [\"tcp/80\", \"tcp/http\"]\n"),
        13,
        Some("rule[1].ports[1]"),
        "\"tcp/http\" has \"http\" where a port number belongs",
    );
    assert!(e.contains(PORT_RULE), "{e}");
    assert!(e.starts_with(&format!("{ORIGIN}:13:20: ")), "{e}");
    expect_error(
        &rule("from = {}\nto = {}\nports = [\"sctp/9\"]\n"),
        13,
        Some("rule[1].ports[0]"),
        "unknown protocol \"sctp\"",
    );
    expect_error(
        &rule("from = {}\nto = {}\nports = [80]\n"),
        13,
        Some("rule[1].ports[0]"),
        "expected a port entry string such as \"tcp/5432\"",
    );
    expect_error(
        &rule("from = {}\nto = {}\nports = \"tcp/80\"\n"),
        13,
        Some("rule[1].ports"),
        "expected an array of port entries",
    );
}

#[test]
fn empty_ports_say_to_omit_them() {
    let e = expect_error(
        &rule("from = {}\nto = {}\nports = []\n"),
        13,
        Some("rule[1].ports"),
        "is empty, which would match no flow; omit `ports` for every protocol and port",
    );
    assert!(e.starts_with(&format!("{ORIGIN}:13:9: ")), "{e}");
}

#[test]
fn selector_labels_follow_the_label_rules() {
    let e = expect_error(
        &rule("from = { \"role kind\" = \"x\" }\nto = {}\n"),
        11,
        Some("rule[1].from.role kind"),
        "label key \"role kind\" contains ' '",
    );
    assert!(e.contains("a label key is 1 to 63 characters"), "{e}");
    let e = expect_error(
        &rule("from = {}\nto = { role = \"back end\" }\n"),
        12,
        Some("rule[1].to.role"),
        "label value \"back end\" contains ' '",
    );
    assert!(e.contains("a label value is empty or up to 63"), "{e}");
    expect_error(
        &rule("from = { role = 3 }\nto = {}\n"),
        11,
        Some("rule[1].from.role"),
        "expected a label value string such as \"frontend\"",
    );
    expect_error(
        &rule("from = \"role=frontend\"\nto = {}\n"),
        11,
        Some("rule[1].from"),
        "expected a label selector such as { role = \"frontend\" }",
    );
    expect_error(
        &rule("from = { \"example.com/tier\" = \"-a\" }\nto = {}\n"),
        11,
        Some("rule[1].from.example.com/tier"),
        "does not start and end with a letter or digit",
    );
}

#[test]
fn the_host_label_holds_a_host_name() {
    // A host may be named "-edge" (the host-name rule), which no other label value may be.
    let policy = parse(&rule("from = { host = \"-edge\" }\nto = {}\n")).unwrap();
    assert_eq!(policy.rules[1].from, Selector(labels(&[("host", "-edge")])));
    expect_error(
        &rule("from = { host = \"\" }\nto = {}\n"),
        11,
        Some("rule[1].from.host"),
        "label \"host\" holds a host's name, and \"\" is not one (the name is empty)",
    );
    expect_error(
        &test("from = { host = \"a/b\" }\nto = {}\nport = \"icmp\"\nexpect = \"deny\"\n"),
        10,
        Some("test[0].from.host"),
        "(the name contains '/')",
    );
}

#[test]
fn a_test_needs_from_to_port_and_expect() {
    let full = [
        "from = {}",
        "to = {}",
        "port = \"tcp/80\"",
        "expect = \"deny\"",
    ];
    for (i, missing) in ["from", "to", "port", "expect"].into_iter().enumerate() {
        let body: String = full
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, l)| format!("{l}\n"))
            .collect();
        let e = expect_error(
            &test(&body),
            9,
            Some("test[0]"),
            &format!("missing field `{missing}`"),
        );
        assert!(e.contains(", expected "), "{e}");
    }
}

#[test]
fn a_test_port_is_one_flow() {
    for (port, needle) in [
        ("tcp", "names no port"),
        ("tcp/80-90", "where a port number belongs"),
        ("icmp/8", "ICMP has none"),
        ("http", "unknown protocol \"http\""),
    ] {
        let e = expect_error(
            &test(&format!(
                "from = {{}}\nto = {{}}\nport = \"{port}\"\nexpect = \"deny\"\n"
            )),
            12,
            Some("test[0].port"),
            needle,
        );
        assert!(e.contains(FLOW_RULE), "{e}");
    }
    expect_error(
        &test("from = {}\nto = {}\nport = 80\nexpect = \"deny\"\n"),
        12,
        Some("test[0].port"),
        "expected a flow string such as \"tcp/80\"",
    );
    expect_error(
        &test("from = { role = \"a b\" }\nto = {}\nport = \"tcp/1\"\nexpect = \"deny\"\n"),
        10,
        Some("test[0].from.role"),
        "label value \"a b\" contains ' '",
    );
    expect_error(
        &test("from = 1\nto = {}\nport = \"tcp/1\"\nexpect = \"deny\"\n"),
        10,
        Some("test[0].from"),
        "expected a table of the endpoint's labels",
    );
}

#[test]
fn the_number_of_rules_and_tests_is_bounded() {
    let mut text = String::from("default = \"deny\"\n");
    for i in 0..=MAX_RULES {
        text.push_str(&format!(
            "[[rule]]\nname = \"r{i}\"\nfrom = {{}}\nto = {{}}\n"
        ));
    }
    let line = 2 + 4 * MAX_RULES;
    expect_error(
        &text,
        line,
        Some("rule[10000]"),
        "the file has 10001 [[rule]] tables; a policy has at most 10000",
    );
    let mut text = String::from("default = \"deny\"\n");
    for _ in 0..=MAX_TESTS {
        text.push_str("[[test]]\nfrom = {}\nto = {}\nport = \"icmp\"\nexpect = \"deny\"\n");
    }
    expect_error(
        &text,
        2 + 5 * MAX_TESTS,
        Some("test[10000]"),
        "a policy has at most 10000",
    );
}

#[test]
fn syntax_errors_are_positioned() {
    expect_error(
        &with("[[rule]]\nname = \"x\nfrom = {}\n"),
        10,
        Some("rule[1]"),
        "",
    );
}
