//! The policy's admin commands against a real control plane (`wgmesh control` in a namespace,
//! the CLI with its admin.toml): `policy apply` of the seed (each test printed, then the
//! revision), `policy show` and `show --json`, `policy explain` naming the rule or the default
//! for hosts and label sets, bad files (a bad port, an unknown key, a failing test) refused with
//! file:line and nothing changed, the server's own check of a text the CLI did not check, a
//! 1,000-rule policy, and `policy remove`.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use common::control::{control_on_bridge, fresh_public_key, reason, ControlPlane};
use common::*;
use serde_json::Value;

const SEED: &str = include_str!("../docs/policy/seed.toml");

/// An exit status and the two outputs, as text.
struct Run {
    ok: bool,
    stdout: String,
    stderr: String,
}

fn run(cp: &ControlPlane, args: &[&str]) -> Run {
    let Output {
        status,
        stdout,
        stderr,
    } = cp.cli(args);
    Run {
        ok: status.success(),
        stdout: String::from_utf8(stdout).unwrap(),
        stderr: String::from_utf8(stderr).unwrap(),
    }
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn apply(cp: &ControlPlane, path: &Path) -> Run {
    run(cp, &["policy", "apply", path.to_str().unwrap()])
}

fn show_json(cp: &ControlPlane) -> Value {
    let out = cp.cli_ok(&["policy", "show", "--json"]);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("show --json is not JSON ({e}): {out}"))
}

fn explain(cp: &ControlPlane, from: &str, to: &str, port: &str) -> Run {
    let args = [
        "policy", "explain", "--from", from, "--to", to, "--port", port,
    ];
    run(cp, &args)
}

/// The line a successful `policy explain` prints (its only one), without the newline.
#[track_caller]
fn verdict(cp: &ControlPlane, from: &str, to: &str, port: &str) -> String {
    let r = explain(cp, from, to, port);
    assert!(r.ok, "explain {from} -> {to} {port}: {}", r.stderr);
    assert_eq!(r.stdout.lines().count(), 1, "{}", r.stdout);
    r.stdout.trim_end().to_owned()
}

/// `policy apply` of a bad file: non-zero, `wgmesh: {path}:{at}` first on stderr, with
/// `needle`; the policy in force unchanged.
#[track_caller]
fn assert_refused(cp: &ControlPlane, path: &Path, at: &str, needle: &str, before: &Value) {
    let r = apply(cp, path);
    assert!(!r.ok, "{} should be refused: {}", path.display(), r.stdout);
    let want = format!("wgmesh: {}:{at}", path.display());
    assert!(
        r.stderr.starts_with(&want),
        "{:?} should start with {want:?}",
        r.stderr
    );
    assert!(r.stderr.contains(needle), "{:?} lacks {needle:?}", r.stderr);
    assert!(!r.stdout.contains("applied"), "{}", r.stdout);
    assert_eq!(&show_json(cp), before, "a refused file changed the policy");
}

/// A policy of `n` rules (`rule-I`: `tier=tI` may reach `app=aI` on `tcp/(1000 + I)`).
fn policy_of(n: usize) -> String {
    let mut text = String::from("default = \"deny\"\n");
    for i in 0..n {
        text.push_str(&format!(
            "\n[[rule]]\nname = \"rule-{i}\"\nfrom = {{ tier = \"t{i}\" }}\n\
             to = {{ app = \"a{i}\" }}\nports = [\"tcp/{}\"]\n",
            1000 + i
        ));
    }
    text
}

#[test]
fn policy_apply_show_explain_and_remove_against_a_real_control_plane() {
    let Some(c) = Cluster::new("policy_apply_show_explain_and_remove_against_a_real_control_plane")
    else {
        return;
    };
    let (_bridge, cp) = control_on_bridge(&c, ControlSpec::default());
    let dir = tempfile::tempdir().unwrap();
    for (name, label) in [("host-a", "app=secure-app"), ("host-b", "role=frontend")] {
        let token = cp.token_create(&["--label", label]);
        cp.join_ok(&token, name, &fresh_public_key());
    }

    // No policy yet.
    let r = run(&cp, &["policy", "show"]);
    assert!(r.ok, "{}", r.stderr);
    assert_eq!(r.stdout, "no policy applied: everything is allowed\n");
    assert_eq!(show_json(&cp), serde_json::json!({"policy": null}));
    let first = verdict(&cp, "host-b", "host-a", "tcp/22");
    let hosts = "{host=host-b,role=frontend} -> {app=secure-app,host=host-a}";
    assert_eq!(
        first,
        format!("{hosts} tcp/22: allow (no policy is applied)")
    );

    // The seed: every test printed, then the revision.
    let seed = write(dir.path(), "seed.toml", SEED);
    let r = apply(&cp, &seed);
    assert!(r.ok, "apply the seed: {}{}", r.stdout, r.stderr);
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(lines.len(), 7 + 2, "{}", r.stdout);
    assert!(
        lines[..7].iter().all(|l| l.starts_with("ok   line ")),
        "{}",
        r.stdout
    );
    assert_eq!(lines[7], "7 tests: 7 passed");
    let shown = show_json(&cp);
    let p = &shown["policy"];
    let revision = p["revision"].as_u64().expect("revision");
    assert_eq!(
        lines[8],
        format!(
            "applied {} at revision {revision} (3 rules, 7 tests passed)",
            seed.display()
        )
    );
    assert_eq!(p["text"], SEED);
    assert_eq!(p["origin"], seed.to_str().unwrap());
    assert_eq!(
        (&p["default"], &p["rules"], &p["tests"]),
        (&"deny".into(), &3.into(), &7.into())
    );
    let text = cp.cli_ok(&["policy", "show"]);
    let header = format!(
        "# policy from {}, applied at revision {revision}: default deny, 3 rules, 7 tests\n",
        seed.display()
    );
    assert_eq!(text, format!("{header}{SEED}"));

    // Explain: hosts carry their labels and host=<name>; the rule or the default decides.
    assert_eq!(
        verdict(&cp, "host-b", "host-a", "tcp/80"),
        format!("{hosts} tcp/80: allow (rule \"frontend-to-app\")")
    );
    assert_eq!(
        verdict(&cp, "app=secure-app", "role=backend", "tcp/22"),
        "{app=secure-app} -> {role=backend} tcp/22: deny (rule \"no-ssh\")"
    );
    assert_eq!(
        verdict(&cp, "host-a", "role=backend", "tcp/5432"),
        "{app=secure-app,host=host-a} -> {role=backend} tcp/5432: allow (rule \"app-to-db\")"
    );
    assert_eq!(
        verdict(&cp, "host-b", "host-a", "icmp"),
        format!("{hosts} icmp: deny (the default)")
    );
    let r = run(
        &cp,
        &[
            "policy", "explain", "--json", "--from", "host-b", "--to", "host-a", "--port", "tcp/80",
        ],
    );
    assert!(r.ok, "{}", r.stderr);
    let json: Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(
        (&json["verdict"], &json["rule"]),
        (&"allow".into(), &"frontend-to-app".into())
    );
    assert_eq!(json["to"]["labels"]["app"], "secure-app");
    assert_eq!(
        (&json["from"]["endpoint"], &json["port"]),
        (&"host-b".into(), &"tcp/80".into())
    );
    assert_eq!(json["revision"], revision);
    // Unknown endpoints and bad forms: non-zero, saying what is wrong.
    let r = explain(&cp, "host-q", "host-a", "tcp/80");
    assert!(
        !r.ok && r.stderr.contains("from: no host host-q"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("404"), "{}", r.stderr);
    let r = explain(&cp, "host-a/web", "host-b", "tcp/80");
    assert!(
        !r.ok && r.stderr.contains("has no workload \"web\""),
        "{}",
        r.stderr
    );
    let r = explain(&cp, "host-b", "host-a", "tcp/99999");
    assert!(!r.ok, "{}", r.stdout);
    assert!(
        r.stderr
            .starts_with("wgmesh: --port: \"tcp/99999\" has port 99999"),
        "{}",
        r.stderr
    );
    let r = explain(&cp, "role=a,role=b", "host-a", "tcp/80");
    assert!(
        !r.ok && r.stderr.starts_with("wgmesh: --from: "),
        "{}",
        r.stderr
    );

    // Bad files change nothing and name file:line(:column).
    let before = show_json(&cp);
    let bad_port = write(
        dir.path(),
        "port.toml",
        &SEED.replace("ports = [\"tcp/5432\"]", "ports = [\"tcp/99999\"]"),
    );
    assert_refused(
        &cp,
        &bad_port,
        "15:10: rule[1].ports[0]: ",
        "outside 1 to 65535",
        &before,
    );
    let unknown = write(
        dir.path(),
        "key.toml",
        &SEED.replace("ports = [\"tcp/22\"]", "ports = [\"tcp/22\"]\nlog = true"),
    );
    assert_refused(
        &cp,
        &unknown,
        "23:1: rule[2]: ",
        "unknown field `log`",
        &before,
    );
    let failing_text = format!(
        "{SEED}\n[[test]]\nfrom = {{ role = \"frontend\" }}\nto = {{ role = \"backend\" }}\n\
         port = \"tcp/22\"\nexpect = \"allow\"\n"
    );
    let failing = write(dir.path(), "failing.toml", &failing_text);
    let line = failing_text.lines().count() - 4;
    assert_refused(
        &cp,
        &failing,
        &format!("{line}: test[7]: the test fails: "),
        "(rule \"no-ssh\")",
        &before,
    );
    let r = apply(&cp, &failing);
    assert!(
        r.stdout.contains(&format!("FAIL line {line}: ")),
        "{}",
        r.stdout
    );
    // The server checks what it is sent itself: a failing test the CLI did not run.
    let body = serde_json::json!({"text": failing_text, "origin": "raw.toml"});
    let (status, reply) = cp.curl(
        "PUT",
        "/v1/policy",
        Some(&cp.admin_token()),
        Some(&body.to_string()),
    );
    assert_eq!(
        (status, reason(&reply).as_str()),
        (400, "bad_policy"),
        "{reply}"
    );
    assert!(
        reply.contains(&format!("raw.toml:{line}: test failed")),
        "{reply}"
    );
    assert_eq!(show_json(&cp), before);

    // 1,000 rules (larger than the API's usual 64 KiB body) apply.
    let big_text = policy_of(1000);
    assert!(big_text.len() > 64 * 1024, "{} bytes", big_text.len());
    let big = write(dir.path(), "big.toml", &big_text);
    let r = apply(&cp, &big);
    assert!(r.ok, "apply 1,000 rules: {}{}", r.stdout, r.stderr);
    assert!(
        r.stdout.contains("(1000 rules, 0 tests passed)"),
        "{}",
        r.stdout
    );
    let shown = show_json(&cp);
    assert_eq!(
        (&shown["policy"]["rules"], &shown["policy"]["text"]),
        (&1000.into(), &big_text.clone().into())
    );
    let big_revision = shown["policy"]["revision"].as_u64().unwrap();
    assert!(big_revision > revision);
    assert_eq!(
        verdict(&cp, "tier=t999", "app=a999", "tcp/1999"),
        "{tier=t999} -> {app=a999} tcp/1999: allow (rule \"rule-999\")"
    );

    // Remove: back to allow-all; removing again changes nothing.
    let r = run(&cp, &["policy", "remove"]);
    assert!(r.ok, "{}", r.stderr);
    assert_eq!(
        r.stderr,
        format!(
            "removed the policy at revision {}: everything is allowed\n",
            big_revision + 1
        )
    );
    assert_eq!(show_json(&cp), serde_json::json!({"policy": null}));
    let r = run(&cp, &["policy", "remove"]);
    assert!(r.ok, "{}", r.stderr);
    assert_eq!(r.stderr, "no policy was applied: everything is allowed\n");

    // Every change is in the audit log, with the file it came from.
    let audit = std::fs::read_to_string(&cp.audit_log).unwrap();
    let events: Vec<Value> = audit
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let policy_events: Vec<(String, String, String)> = events
        .iter()
        .filter(|e| {
            e["action"]
                .as_str()
                .is_some_and(|a| a == "policy_apply" || a == "policy_remove")
        })
        .map(|e| {
            (
                e["action"].as_str().unwrap().to_owned(),
                e["result"].to_string(),
                e["target"]["origin"].as_str().unwrap_or("-").to_owned(),
            )
        })
        .collect();
    // The unknown endpoints were refused by the control plane (the bad forms by the CLI).
    let explains: Vec<String> = events
        .iter()
        .filter(|e| e["action"] == "policy_explain")
        .map(|e| e["result"].to_string())
        .collect();
    assert_eq!(explains, [r#"{"refused":"not_found"}"#; 2], "{audit}");
    let ok = "\"ok\"".to_owned();
    let (seed_o, big_o) = (seed.display().to_string(), big.display().to_string());
    assert_eq!(
        policy_events,
        [
            ("policy_apply".to_owned(), ok.clone(), seed_o),
            (
                "policy_apply".to_owned(),
                r#"{"refused":"bad_policy"}"#.to_owned(),
                "raw.toml".to_owned()
            ),
            ("policy_apply".to_owned(), ok.clone(), big_o.clone()),
            ("policy_remove".to_owned(), ok.clone(), big_o),
            ("policy_remove".to_owned(), ok, "-".to_owned()),
        ],
        "{audit}"
    );
}
