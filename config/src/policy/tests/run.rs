//! Running a policy's tests, the error of the first failing one, and the report `policy test`
//! prints.

use super::*;

/// The seed's rules with one more test (at the end), which expects `expect` for
/// `{role=frontend} -> {role=backend} tcp/22` (the no-ssh rule denies it).
fn seed_with_ssh_test(expect: &str) -> String {
    format!(
        "{SEED}\n[[test]]\nfrom = {{ role = \"frontend\" }}\nto = {{ role = \"backend\" }}\n\
         port = \"tcp/22\"\nexpect = \"{expect}\"\n"
    )
}

#[test]
fn outcomes_name_the_decision_and_whether_it_passed() {
    let text = seed_with_ssh_test("allow");
    let policy = parse(&text).unwrap();
    let outcomes = policy.run_tests();
    assert_eq!(outcomes.len(), 8);
    assert!(outcomes[..7].iter().all(|o| o.passed));
    assert_eq!(
        outcomes[0].decision,
        Decision {
            action: Action::Allow,
            by: DecidedBy::Rule("frontend-to-app")
        }
    );
    assert_eq!(outcomes[1].decision.by, DecidedBy::Default);
    let last = outcomes[7];
    assert!(!last.passed);
    assert_eq!(last.test, &policy.tests[7]);
    assert_eq!(
        last.decision,
        Decision {
            action: Action::Deny,
            by: DecidedBy::Rule("no-ssh")
        }
    );
}

#[test]
fn the_first_failing_test_is_the_error() {
    let text = seed_with_ssh_test("allow");
    let policy = parse(&text).unwrap();
    let e = policy.check_tests(Path::new(ORIGIN)).unwrap_err();
    let line = nth_line(&text, "[[test]]", 7);
    assert_eq!((e.line, e.column), (Some(line), None));
    assert_eq!(e.field.as_deref(), Some("test[7]"));
    assert_eq!(
        e.to_string(),
        format!(
            "{ORIGIN}:{line}: test[7]: the test fails: {{role=frontend}} -> {{role=backend}} \
             tcp/22: expected allow, but the policy decides deny (rule \"no-ssh\"); change the \
             rules or the test"
        )
    );
    let passing = parse(&seed_with_ssh_test("deny")).unwrap();
    assert!(passing.check_tests(Path::new(ORIGIN)).is_ok());
}

#[test]
fn a_failing_test_decided_by_the_default_says_so() {
    let text = "default = \"deny\"\n[[test]]\nfrom = {}\nto = {}\nport = \"udp/53\"\nexpect = \
                \"allow\"\n";
    let e = parse(text)
        .unwrap()
        .check_tests(Path::new(ORIGIN))
        .unwrap_err();
    assert_eq!(e.line, Some(2));
    assert!(
        e.to_string()
            .contains("{} -> {} udp/53: expected allow, but the policy decides deny (the default)"),
        "{e}"
    );
}

#[test]
fn a_test_not_from_a_file_has_no_line() {
    let mut policy = Policy::default();
    policy.tests.push(PolicyTest {
        from: Labels::new(),
        to: Labels::new(),
        port: flow("icmp"),
        expect: Action::Deny,
        line: 0,
    });
    let e = policy.check_tests(Path::new("api")).unwrap_err();
    assert_eq!(e.line, None);
    assert!(
        e.to_string()
            .starts_with("api: test[0]: the test fails: {} -> {} icmp"),
        "{e}"
    );
}

#[test]
fn the_report_has_a_line_per_test_and_a_summary() {
    let text = seed_with_ssh_test("allow");
    let policy = parse(&text).unwrap();
    let report = render_test_report(&policy.run_tests());
    let lines: Vec<_> = report.lines().collect();
    assert_eq!(lines.len(), 9, "{report}");
    let at = |i| nth_line(&text, "[[test]]", i);
    assert_eq!(
        lines[0],
        format!(
            "ok   line {}: {{role=frontend}} -> {{app=secure-app}} tcp/80: allow (rule \
             \"frontend-to-app\")",
            at(0)
        )
    );
    assert_eq!(
        lines[1],
        format!(
            "ok   line {}: {{host=host-b,role=frontend}} -> {{app=secure-app,host=host-a}} \
             tcp/8080: deny (the default)",
            at(1)
        )
    );
    assert_eq!(
        lines[7],
        format!(
            "FAIL line {}: {{role=frontend}} -> {{role=backend}} tcp/22: expected allow, got \
             deny (rule \"no-ssh\")",
            at(7)
        )
    );
    assert_eq!(lines[8], "8 tests: 7 passed, 1 failed");
    let all = render_test_report(&parse(SEED).unwrap().run_tests());
    assert_eq!(all.lines().last(), Some("7 tests: 7 passed"));
    assert!(all.ends_with('\n'));
}

#[test]
fn the_summary_reads_for_zero_and_one_test() {
    let none = parse("default = \"deny\"\n").unwrap();
    assert_eq!(
        render_test_report(&none.run_tests()),
        "no tests: the file has no [[test]] tables\n"
    );
    let one = "default = \"deny\"\n[[test]]\nfrom = {}\nto = {}\nport = \"icmp\"\nexpect = ";
    let pass = parse(&format!("{one}\"deny\"\n")).unwrap();
    assert!(render_test_report(&pass.run_tests()).ends_with("\n1 test: passed\n"));
    let fail = parse(&format!("{one}\"allow\"\n")).unwrap();
    let report = render_test_report(&fail.run_tests());
    assert_eq!(
        report,
        "FAIL line 2: {} -> {} icmp: expected allow, got deny (the default)\n1 test: failed\n"
    );
}
