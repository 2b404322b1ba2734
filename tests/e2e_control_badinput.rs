//! Bad input to the control plane and to a joined agent: a malformed or inconsistent
//! `control.toml` stops `wgmesh control` with the file, line and field (and no `admin.toml`); an
//! `agent.toml` with both `subnet` and `[control]` names the field; junk JSON to the API is a
//! 400 `bad_request` that changes nothing.

mod common;

use std::time::Duration;

use common::control::{
    control_on_bridge, fresh_public_key, joined_host_prepared, reason, CONTROL_IP,
};
use common::*;

/// 1-based line of the first line of `text` containing `needle`.
fn line_of(text: &str, needle: &str) -> usize {
    text.lines()
        .position(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("{needle:?} not in:\n{text}"))
        + 1
}

/// Runs `wgmesh control` on `text` (the default config with `edit` applied) and checks it
/// exits non-zero, without panicking, naming `{file}:{line}:` of `at` and one of `fields` (as
/// `: {field}: `), and leaves no `admin.toml`. Returns the output.
fn expect_rejected(
    c: &Cluster,
    tag: &str,
    edit: impl Fn(&str) -> String,
    at: &str,
    fields: &[&str],
) -> String {
    let ns = c.netns(tag);
    let cp = c.control_prepared(&ns, CONTROL_IP, ControlSpec::default());
    let text = edit(&std::fs::read_to_string(&cp.config_path).unwrap());
    cp.write_config(&text);
    let (st, out) = cp.run_expect_exit(Duration::from_secs(20));
    let shown = format!("control.toml:\n{text}\noutput:\n{out}");
    assert!(
        !st.success(),
        "wgmesh control accepted a bad config ({st}): {shown}"
    );
    assert!(
        st.code().is_some(),
        "wgmesh control died by a signal ({st}): {shown}"
    );
    assert!(
        !out.contains("panicked at"),
        "wgmesh control panicked: {shown}"
    );
    let place = format!("{}:{}:", cp.config_path.display(), line_of(&text, at));
    assert!(
        out.contains(&place),
        "the error does not name {place}: {shown}"
    );
    assert!(
        fields.iter().any(|f| out.contains(&format!(": {f}: "))),
        "the error names none of the fields {fields:?}: {shown}"
    );
    assert!(
        !cp.admin_file().exists(),
        "a rejected config still created {}",
        cp.admin_file().display()
    );
    eprintln!("rejected as expected: {}", out.trim());
    out
}

#[test]
fn control_rejects_bad_config_with_file_line_and_field() {
    let Some(c) = Cluster::new("control_rejects_bad_config_with_file_line_and_field") else {
        return;
    };
    // A cluster smaller than one host subnet.
    expect_rejected(
        &c,
        "small",
        |t| t.replace("10.42.0.0/16", "10.42.0.0/25"),
        "host_prefix",
        &["control.host_prefix", "control.cluster_cidr"],
    );
    // A value of the wrong type.
    expect_rejected(
        &c,
        "type",
        |t| t.replace("listen = \"0.0.0.0:7443\"", "listen = 7443"),
        "listen",
        &["control.listen"],
    );
    // Host bits set in the cluster CIDR.
    expect_rejected(
        &c,
        "hostbits",
        |t| t.replace("10.42.0.0/16", "10.42.0.1/16"),
        "cluster_cidr",
        &["control.cluster_cidr"],
    );
    // An unknown key (a typo).
    expect_rejected(
        &c,
        "unknown",
        |t| t.replace("host_prefix = 24", "host_prefix = 24\nhost_prefx = 24"),
        "host_prefx",
        &["control.host_prefx", "control"],
    );
    // Not TOML at all on one line (a syntax error may name only the table it is in).
    expect_rejected(
        &c,
        "syntax",
        |t| {
            t.replace(
                "cluster_cidr = \"10.42.0.0/16\"",
                "cluster_cidr = \"10.42.0.0/16",
            )
        },
        "cluster_cidr",
        &["control.cluster_cidr", "control"],
    );
}

/// A cluster CIDR exactly one host subnet large is valid: one host fits, the next is refused
/// with 409 subnets_exhausted.
#[test]
fn a_full_cluster_cidr_refuses_the_next_join() {
    let Some(c) = Cluster::new("a_full_cluster_cidr_refuses_the_next_join") else {
        return;
    };
    // Room for two /24s (a host_prefix equal to the cluster's prefix is a config error).
    let spec = ControlSpec {
        cluster_cidr: "10.42.0.0/23".into(),
        host_prefix: Some(24),
        ..ControlSpec::default()
    };
    let (_bridge, cp) = control_on_bridge(&c, spec);
    let token = cp.token_create(&["--reusable"]);
    let (_, nm) = cp.join_ok(&token, "first", &fresh_public_key());
    assert_eq!(nm["host"]["subnet"], "10.42.0.0/24", "{nm}");
    let (_, nm) = cp.join_ok(&token, "second", &fresh_public_key());
    assert_eq!(nm["host"]["subnet"], "10.42.1.0/24", "{nm}");
    let (st, body) = cp.join_raw(&token, "third", &fresh_public_key(), None);
    assert_eq!(
        (st, reason(&body).as_str()),
        (409, "subnets_exhausted"),
        "{st} {body}"
    );
    let nodes = cp.node_list_json();
    assert_eq!(nodes.len(), 2, "{nodes:?}");
}

#[test]
fn agent_with_subnet_and_control_is_rejected() {
    let Some(c) = Cluster::new("agent_with_subnet_and_control_is_rejected") else {
        return;
    };
    let (bridge, cp) = control_on_bridge(&c, ControlSpec::default());
    let token = cp.token_create(&[]);
    let h = joined_host_prepared(&c, &bridge, &cp, "a", 1, &token);
    let mut spec = h.agent.spec();
    spec.subnet = "10.42.9.0/24".into();
    h.agent.set_spec(spec);
    let text = std::fs::read_to_string(&h.agent.config_path).unwrap();
    assert!(
        text.contains("[control]") && text.contains("subnet ="),
        "{text}"
    );
    let (st, out) = h.agent.run_expect_exit(Duration::from_secs(20));
    assert!(
        !st.success() && st.code().is_some(),
        "agent with subnet and [control]: {st}\n{out}"
    );
    let place = format!(
        "{}:{}:",
        h.agent.config_path.display(),
        line_of(&text, "subnet =")
    );
    assert!(
        out.contains(&place) && out.contains("agent.subnet"),
        "the error does not name {place} and agent.subnet:\n{text}\n{out}"
    );
    assert!(
        !out.contains(&token[70..]),
        "the error shows the join token:\n{out}"
    );
    assert!(cp.node_names().is_empty(), "the agent joined anyway");
}

#[test]
fn api_rejects_junk_json_with_bad_request() {
    let Some(c) = Cluster::new("api_rejects_junk_json_with_bad_request") else {
        return;
    };
    let (_bridge, cp) = control_on_bridge(&c, ControlSpec::default());
    let admin = cp.admin_token();
    let token = cp.token_create(&["--reusable"]);
    let key = fresh_public_key();
    cp.join_ok(&token, "host-a", &key);
    let before = cp.node_list_json();

    let tq = serde_json::to_string(&token).unwrap();
    let kq = serde_json::to_string(&fresh_public_key()).unwrap();
    let joins = [
        "this is not json".to_string(),
        "".to_string(),
        "[1, 2, 3]".to_string(),
        "{}".to_string(),
        format!("{{\"token\": {tq}}}"),
        format!("{{\"token\": 5, \"name\": \"host-b\", \"public_key\": {kq}}}"),
        format!("{{\"token\": {tq}, \"name\": \"bad name!\", \"public_key\": {kq}}}"),
        format!("{{\"token\": {tq}, \"name\": \"host-b\", \"public_key\": \"not a key\"}}"),
        format!(
            "{{\"token\": {tq}, \"name\": \"host-b\", \"public_key\": {kq}, \"endpoint\": \"nowhere\"}}"
        ),
        format!("{{\"token\": {tq}, \"name\": \"host-b\", \"public_key\": {kq}"),
    ];
    // Every mismatch is collected, so one run names them all.
    let mut wrong = Vec::new();
    for body in &joins {
        let (st, resp) = cp.curl("POST", "/v1/join", None, Some(body));
        if (st, reason(&resp).as_str()) != (400, "bad_request") {
            wrong.push(format!("POST /v1/join with {body:?}: {st} {resp}"));
        }
    }
    let tokens = [
        "this is not json",
        "[]",
        "{\"ttl_secs\": \"an hour\"}",
        "{\"ttl_secs\": 0}",
        "{\"ttl_secs\": -5}",
        "{\"ttl_secs\": 31536001}",
        "{\"reusable\": \"yes\"}",
        "{\"labels\": [\"zone\"]}",
        "{\"ttl_secs\": 60",
    ];
    for body in &tokens {
        let (st, resp) = cp.curl("POST", "/v1/tokens", Some(&admin), Some(body));
        if (st, reason(&resp).as_str()) != (400, "bad_request") {
            wrong.push(format!("POST /v1/tokens with {body:?}: {st} {resp}"));
        }
    }
    let (st, resp) = cp.curl(
        "POST",
        "/v1/join",
        None,
        Some(&format!("{{\"pad\": \"{}\"}}", "x".repeat(70 * 1024))),
    );
    if (st, reason(&resp).as_str()) != (413, "too_large") {
        wrong.push(format!("POST /v1/join with 70 KiB: {st} {resp}"));
    }
    assert!(
        wrong.is_empty(),
        "expected 400 bad_request (413 too_large for the 70 KiB body):\n{}",
        wrong.join("\n")
    );
    let after = cp.node_list_json();
    assert_eq!(after, before, "node list changed after refused requests");
    // The reusable token still works: the junk did not consume or break anything.
    cp.join_ok(&token, "host-b", &fresh_public_key());
}
