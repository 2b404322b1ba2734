//! `wgmesh policy test FILE`, the real binary, offline: the seed policy passes (exit 0, one line
//! per test and a summary); a failing `[[test]]`, an unknown port syntax, an unknown key and a
//! rule without `to` each exit non-zero with an error naming file:line(:column) and the field
//! (and, for the failing test, the rule that decided). Needs no privileges and no namespaces.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::agent::BIN;

const SEED: &str = include_str!("../docs/policy/seed.toml");

struct Run {
    ok: bool,
    stdout: String,
    stderr: String,
}

/// Writes `text` to `policy.toml` in `dir` and runs `wgmesh policy test` on it.
fn policy_test(dir: &Path, text: &str) -> (PathBuf, Run) {
    let path = dir.join("policy.toml");
    std::fs::write(&path, text).unwrap();
    let Output {
        status,
        stdout,
        stderr,
    } = Command::new(BIN)
        .args(["policy", "test"])
        .arg(&path)
        .stdin(Stdio::null())
        .output()
        .expect("run wgmesh policy test");
    let run = Run {
        ok: status.success(),
        stdout: String::from_utf8(stdout).unwrap(),
        stderr: String::from_utf8(stderr).unwrap(),
    };
    (path, run)
}

/// 1-based lines of `text` that start with `needle`.
fn lines_of(text: &str, needle: &str) -> Vec<usize> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| l.starts_with(needle))
        .map(|(i, _)| i + 1)
        .collect()
}

/// 1-based line and column of the first occurrence of `needle` in `text`.
fn position_of(text: &str, needle: &str) -> (usize, usize) {
    let at = text
        .find(needle)
        .unwrap_or_else(|| panic!("{needle:?} not in {text}"));
    let before = &text[..at];
    let line = before.matches('\n').count() + 1;
    let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    (line, column)
}

/// A bad file: exit non-zero, nothing on stdout, and one error line on stderr starting with
/// `wgmesh: {path}:{line}:{column}: {field}: ` and containing `needle`.
#[track_caller]
fn assert_refused(
    run: &Run,
    path: &Path,
    (line, column): (usize, usize),
    field: &str,
    needle: &str,
) {
    assert!(!run.ok, "the file should be refused: {}", run.stdout);
    assert_eq!(run.stdout, "", "a bad file runs no tests");
    let want = format!("wgmesh: {}:{line}:{column}: {field}: ", path.display());
    assert!(
        run.stderr.starts_with(&want),
        "{:?} should start with {want:?}",
        run.stderr
    );
    assert!(
        run.stderr.contains(needle),
        "{:?} lacks {needle:?}",
        run.stderr
    );
    assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
}

#[test]
fn the_seed_policy_passes_and_prints_each_test() {
    let dir = tempfile::tempdir().unwrap();
    let (_, run) = policy_test(dir.path(), SEED);
    assert!(
        run.ok,
        "exit status: stdout {} stderr {}",
        run.stdout, run.stderr
    );
    assert_eq!(run.stderr, "");
    let lines: Vec<_> = run.stdout.lines().collect();
    let tests = lines_of(SEED, "[[test]]");
    assert_eq!(lines.len(), tests.len() + 1, "{}", run.stdout);
    for (line, test_line) in lines.iter().zip(&tests) {
        assert!(
            line.starts_with(&format!("ok   line {test_line}: ")),
            "{line}"
        );
    }
    assert_eq!(
        lines[0],
        format!(
            "ok   line {}: {{role=frontend}} -> {{app=secure-app}} tcp/80: allow (rule \
             \"frontend-to-app\")",
            tests[0]
        )
    );
    assert!(
        lines
            .iter()
            .any(|l| l
                .ends_with("{app=secure-app} -> {role=backend} tcp/22: deny (rule \"no-ssh\")")),
        "{}",
        run.stdout
    );
    assert_eq!(
        lines.last().copied(),
        Some(format!("{0} tests: {0} passed", tests.len()).as_str())
    );
}

#[test]
fn a_failing_test_exits_non_zero_naming_its_line_and_the_rule() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "{SEED}\n[[test]]\nfrom = {{ role = \"frontend\" }}\nto = {{ role = \"backend\" }}\n\
         port = \"tcp/22\"\nexpect = \"allow\"\n"
    );
    let (path, run) = policy_test(dir.path(), &text);
    assert!(
        !run.ok,
        "a failing test must fail the command: {}",
        run.stdout
    );
    let tests = lines_of(&text, "[[test]]");
    let last = *tests.last().unwrap();
    let fail = format!(
        "FAIL line {last}: {{role=frontend}} -> {{role=backend}} tcp/22: expected allow, got deny \
         (rule \"no-ssh\")"
    );
    assert!(run.stdout.lines().any(|l| l == fail), "{}", run.stdout);
    let summary = format!(
        "{} tests: {} passed, 1 failed",
        tests.len(),
        tests.len() - 1
    );
    assert_eq!(run.stdout.lines().last(), Some(summary.as_str()));
    let want = format!(
        "wgmesh: {}:{last}: test[{}]: the test fails: {{role=frontend}} -> {{role=backend}} \
         tcp/22: expected allow, but the policy decides deny (rule \"no-ssh\")",
        path.display(),
        tests.len() - 1
    );
    assert!(
        run.stderr.starts_with(&want),
        "{:?} should start with {want:?}",
        run.stderr
    );
}

#[test]
fn an_unknown_port_syntax_is_refused_at_its_place() {
    let dir = tempfile::tempdir().unwrap();
    let text = SEED.replace("ports = [\"tcp/5432\"]", "ports = [\"tcp:5432\"]");
    assert_ne!(text, SEED);
    let (path, run) = policy_test(dir.path(), &text);
    assert_refused(
        &run,
        &path,
        position_of(&text, "\"tcp:5432\""),
        "rule[1].ports[0]",
        "\"tcp:5432\" names the unknown protocol \"tcp:5432\"",
    );
    assert!(
        run.stderr.contains("such as \"tcp/5432\""),
        "{}",
        run.stderr
    );
}

#[test]
fn an_unknown_key_is_refused_at_its_place() {
    let dir = tempfile::tempdir().unwrap();
    let text = SEED.replace("ports = [\"tcp/22\"]", "ports = [\"tcp/22\"]\nlog = true");
    let (path, run) = policy_test(dir.path(), &text);
    assert_refused(
        &run,
        &path,
        position_of(&text, "log = true"),
        "rule[2]",
        "unknown field `log`, expected one of `name`, `action`, `from`, `to`, `ports`",
    );
}

#[test]
fn a_rule_without_to_is_refused_at_its_table() {
    let dir = tempfile::tempdir().unwrap();
    let text = SEED.replace(
        "to   = { role = \"backend\" }\nports = [\"tcp/5432\"]",
        "ports = [\"tcp/5432\"]",
    );
    assert_ne!(text, SEED);
    let (path, run) = policy_test(dir.path(), &text);
    let second_rule = lines_of(&text, "[[rule]]")[1];
    assert_refused(
        &run,
        &path,
        (second_rule, 1),
        "rule[1]",
        "missing field `to`, expected a label selector",
    );
}

#[test]
fn a_missing_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nope.toml");
    let out = Command::new(BIN)
        .args(["policy", "test"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.starts_with(&format!("wgmesh: {}: cannot read the file", path.display())),
        "{stderr}"
    );
}
