//! Who may call what, over the real HTTPS API (`curl --cacert`): every route without a
//! credential, with another host's credential, with the admin token where a host's is needed and
//! the other way round; joins with expired, used, unknown and wrong-CA tokens and with a taken
//! name or key; and an agent given a token whose CA digest does not match.

mod common;

use std::os::unix::fs::PermissionsExt as _;
use std::time::Duration;

use common::control::{
    assert_join_token_shape, control_on_bridge, fresh_public_key, joined_host_prepared, reason,
    with_altered_digest,
};
use common::*;
use serde_json::Value;

#[track_caller]
fn expect(got: (u16, String), status: u16, why: &str, what: &str) {
    let (st, body) = got;
    assert_eq!(
        (st, reason(&body).as_str()),
        (status, why),
        "{what}: expected {status} {why}, got {st} {body}"
    );
    let v: Value = serde_json::from_str(&body).unwrap();
    assert!(
        v["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{what}: refusal without an error message: {body}"
    );
}

#[track_caller]
fn expect_ok(got: (u16, String), what: &str) -> Value {
    let (st, body) = got;
    assert_eq!(st, 200, "{what}: expected 200, got {st} {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {body}"))
}

/// An API route: method, path, body.
type Route<'a> = (&'a str, &'a str, Option<&'a str>);

/// A caller: its bearer token (if any) and who it is, for messages.
type Caller<'a> = (Option<&'a str>, &'a str);

/// The join token with one character of its secret changed (same CA digest).
fn with_altered_secret(token: &str) -> String {
    let i = "WGM1-".len() + 64 + 1;
    let mut b = token.as_bytes().to_vec();
    b[i] = if b[i] == b'A' { b'B' } else { b'A' };
    String::from_utf8(b).unwrap()
}

#[test]
fn api_refuses_every_route_to_the_wrong_caller() {
    let Some(c) = Cluster::new("api_refuses_every_route_to_the_wrong_caller") else {
        return;
    };
    let (_bridge, cp) = control_on_bridge(&c, ControlSpec::default());
    let admin = cp.admin_token();
    assert!(admin.starts_with("WGMA1-"), "admin token {admin:?}");
    // admin.toml: private, with the URL, the CA certificate and the admin token.
    let meta = std::fs::metadata(cp.admin_file()).expect("admin.toml");
    assert_eq!(
        meta.permissions().mode() & 0o777,
        0o600,
        "mode of admin.toml"
    );
    let text = std::fs::read_to_string(cp.admin_file()).unwrap();
    assert!(
        text.contains("url = \"https://198.18.0.10:7443\"")
            && text.contains("ca_cert = ")
            && text.contains("-----BEGIN CERTIFICATE-----"),
        "admin.toml lacks url or ca_cert:\n{}",
        text.replace(&admin, "WGMA1-<redacted>")
    );
    let ca = std::fs::read_to_string(cp.ca_pem()).expect("ca.pem");
    assert!(ca.contains("-----BEGIN CERTIFICATE-----"), "ca.pem: {ca}");
    let token = cp.token_create(&["--reusable"]);
    let (kx, ky, kz) = (fresh_public_key(), fresh_public_key(), fresh_public_key());
    let (cx, _) = cp.join_ok(&token, "host-x", &kx);
    let (cy, _) = cp.join_ok(&token, "host-y", &ky);
    let (cz, _) = cp.join_ok(&token, "host-z", &kz);

    let wl = r#"{"workloads": [{"name": "web", "ip": "10.42.0.2", "labels": {"role": "a"}}]}"#;
    let ep = r#"{"endpoint": "198.18.0.77:51820"}"#;
    let host_routes: [Route<'_>; 3] = [
        ("GET", "/v1/hosts/host-x/netmap", None),
        ("PUT", "/v1/hosts/host-x/endpoint", Some(ep)),
        ("PUT", "/v1/hosts/host-x/workloads", Some(wl)),
    ];
    let policy = r#"{"text": "default = \"deny\"\n", "origin": "p.toml"}"#;
    let admin_routes: [Route<'_>; 9] = [
        ("POST", "/v1/tokens", Some("{}")),
        ("GET", "/v1/tokens", None),
        ("DELETE", "/v1/tokens/0", None),
        ("GET", "/v1/nodes", None),
        ("DELETE", "/v1/nodes/host-y", None),
        ("PUT", "/v1/policy", Some(policy)),
        ("GET", "/v1/policy", None),
        ("DELETE", "/v1/policy", None),
        (
            "GET",
            "/v1/policy/explain?from=host-x&to=host-y&port=tcp/80",
            None,
        ),
    ];
    let bogus_host = format!("WGMH1-{}", "A".repeat(43));
    let bogus_admin = format!("WGMA1-{}", "A".repeat(43));
    let all_routes: Vec<Route<'_>> = host_routes.iter().chain(&admin_routes).copied().collect();
    // The routes, the wrong callers, the expected status and reason.
    let cases: [(&[Route<'_>], &[Caller<'_>], u16, &str); 3] = [
        (
            &all_routes,
            &[
                (None, "without a credential"),
                (Some("not-a-token"), "with junk"),
                (Some(&bogus_host), "with a credential nobody holds"),
                (Some(&bogus_admin), "with a wrong admin token"),
            ],
            401,
            "unauthenticated",
        ),
        (
            &host_routes,
            &[
                (Some(&cy), "with host-y's credential"),
                (Some(&admin), "with the admin token"),
            ],
            403,
            "forbidden",
        ),
        (
            &admin_routes,
            &[(Some(&cx), "with host-x's credential")],
            403,
            "forbidden",
        ),
    ];
    for (routes, callers, status, why) in cases {
        for &(m, p, body) in routes {
            for &(bearer, who) in callers {
                expect(
                    cp.curl(m, p, bearer, body),
                    status,
                    why,
                    &format!("{m} {p} {who}"),
                );
            }
        }
    }
    // Nothing changed through all that.
    assert_eq!(cp.node_names(), ["host-x", "host-y", "host-z"]);
    assert_eq!(
        cp.cli_ok(&["policy", "show", "--json"]),
        "{\n  \"policy\": null\n}\n"
    );
    assert_eq!(cp.node("host-x").unwrap()["endpoint"], Value::Null);
    assert_eq!(
        cp.node("host-x").unwrap()["workloads"],
        serde_json::json!([])
    );

    // The right callers succeed.
    let nm = expect_ok(
        cp.curl("GET", "/v1/hosts/host-x/netmap", Some(&cx), None),
        "host-x's netmap",
    );
    assert_eq!(nm["host"]["name"], "host-x", "{nm}");
    assert_eq!(nm["host"]["public_key"], kx.as_str(), "{nm}");
    let peers: Vec<&str> = nm["peers"]
        .as_array()
        .expect("peers")
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    assert_eq!(peers, ["host-y", "host-z"], "{nm}");
    let rev = nm["revision"].as_u64().expect("revision");
    let r = expect_ok(
        cp.curl("PUT", "/v1/hosts/host-x/endpoint", Some(&cx), Some(ep)),
        "host-x sets its endpoint",
    );
    assert!(r["revision"].as_u64().expect("revision") > rev, "{r}");
    assert_eq!(cp.node("host-x").unwrap()["endpoint"], "198.18.0.77:51820");
    expect_ok(
        cp.curl("PUT", "/v1/hosts/host-x/workloads", Some(&cx), Some(wl)),
        "host-x reports its workloads",
    );
    assert_eq!(
        cp.node("host-x").unwrap()["workloads"],
        serde_json::json!([{"name": "web", "ip": "10.42.0.2", "labels": {"role": "a"}}])
    );
    let nm_y = expect_ok(
        cp.curl("GET", "/v1/hosts/host-y/netmap", Some(&cy), None),
        "host-y's netmap",
    );
    let px = nm_y["peers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "host-x")
        .cloned()
        .expect("host-x in host-y's netmap");
    assert_eq!(px["endpoint"], "198.18.0.77:51820", "{nm_y}");
    // A long poll with the current revision and a short wait answers 204 without a change.
    let cur = nm_y["revision"].as_u64().unwrap();
    let t0 = std::time::Instant::now();
    let (st, body) = cp.curl(
        "GET",
        &format!("/v1/hosts/host-y/netmap?revision={cur}&wait=1"),
        Some(&cy),
        None,
    );
    assert_eq!((st, body.as_str()), (204, ""), "long poll without a change");
    assert!(
        t0.elapsed() >= Duration::from_millis(900),
        "204 after only {:?}",
        t0.elapsed()
    );
    let t = expect_ok(
        cp.curl(
            "POST",
            "/v1/tokens",
            Some(&admin),
            Some(r#"{"ttl_secs": 60}"#),
        ),
        "admin creates a token",
    );
    assert_join_token_shape(t["token"].as_str().expect("token"));
    assert!(t["id"].is_u64() && t["expires_at"].is_u64(), "{t}");
    // Listed without its secret; revoked, it lets nobody in.
    let listed = expect_ok(
        cp.curl("GET", "/v1/tokens", Some(&admin), None),
        "admin lists tokens",
    );
    let id = t["id"].as_u64().unwrap();
    let entry = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["id"] == id)
        .cloned()
        .expect("the new token is listed");
    assert_eq!(entry["state"], "valid", "{listed}");
    let secret = &t["token"].as_str().unwrap()[70..];
    assert!(
        !listed.to_string().contains(secret),
        "token list shows a secret"
    );
    // Revoked with the CLI, as an admin would; `token list` then says so.
    cp.cli_ok(&["token", "revoke", &id.to_string()]);
    let listed: Value = serde_json::from_str(&cp.cli_ok(&["token", "list", "--json"])).unwrap();
    let state = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["id"] == id)
        .map(|e| e["state"].clone());
    assert_eq!(state, Some(Value::from("revoked")), "{listed}");
    let table = cp.cli_ok(&["token", "list"]);
    assert!(
        table
            .lines()
            .any(|l| l.starts_with(&format!("{id} ")) && l.contains("revoked")),
        "{table}"
    );
    expect(
        cp.join_raw(
            t["token"].as_str().unwrap(),
            "host-r",
            &fresh_public_key(),
            None,
        ),
        401,
        "token_revoked",
        "join with a revoked token",
    );
    expect(
        cp.curl("DELETE", "/v1/tokens/99", Some(&admin), None),
        404,
        "not_found",
        "revoking an unknown token",
    );
    let nodes = expect_ok(
        cp.curl("GET", "/v1/nodes", Some(&admin), None),
        "admin lists nodes",
    );
    assert_eq!(nodes.as_array().map(Vec::len), Some(3), "{nodes}");
    let r = expect_ok(
        cp.curl("DELETE", "/v1/nodes/host-z", Some(&admin), None),
        "admin removes host-z",
    );
    assert_eq!(r["removed"], "host-z", "{r}");
    // A removed host's credential is nobody's.
    expect(
        cp.curl("GET", "/v1/hosts/host-z/netmap", Some(&cz), None),
        401,
        "unauthenticated",
        "removed host-z's netmap",
    );
    expect(
        cp.curl("DELETE", "/v1/nodes/host-z", Some(&admin), None),
        404,
        "not_found",
        "removing host-z twice",
    );
    expect(
        cp.curl("GET", "/v1/nope", Some(&admin), None),
        404,
        "not_found",
        "unknown route",
    );
    expect(
        cp.curl("GET", "/v1/join", None, None),
        405,
        "method_not_allowed",
        "GET /v1/join",
    );

    // Joining again with the same name and key: refused, since both are public (every netmap
    // shows them); host-x's credential keeps working.
    expect(
        cp.join_raw(&token, "host-x", &kx, None),
        409,
        "name_taken",
        "a second join of host-x with its (public) name and key",
    );
    expect_ok(
        cp.curl("GET", "/v1/hosts/host-x/netmap", Some(&cx), None),
        "host-x's credential after someone else tried its name",
    );
    // A join that brings its own credential can be retried with it (a lost reply), and answers
    // with the same subnet and no new host.
    let own = wgmesh_config::token::HostCredential::generate().expose();
    let kw = fresh_public_key();
    let body =
        serde_json::json!({"token": token, "name": "host-w", "public_key": kw, "credential": own});
    let (st1, first) = cp.curl("POST", "/v1/join", None, Some(&body.to_string()));
    let (st2, again) = cp.curl("POST", "/v1/join", None, Some(&body.to_string()));
    assert_eq!(
        (st1, st2),
        (200, 200),
        "join and retry of host-w: {first} / {again}"
    );
    let (first, again): (Value, Value) = (
        serde_json::from_str(&first).unwrap(),
        serde_json::from_str(&again).unwrap(),
    );
    assert_eq!(first["credential"], own.as_str());
    assert_eq!(
        first["netmap"]["host"]["subnet"], again["netmap"]["host"]["subnet"],
        "the retried join moved host-w"
    );
    expect_ok(
        cp.curl("GET", "/v1/hosts/host-w/netmap", Some(&own), None),
        "host-w's own credential",
    );

    // Join tokens that cannot be used, and names and keys held by someone else.
    let short = cp.token_create(&["--ttl", "1s"]);
    let single = cp.token_create(&[]);
    cp.join_ok(&single, "host-s", &fresh_public_key());
    expect(
        cp.join_raw(&single, "host-s2", &fresh_public_key(), None),
        401,
        "token_used",
        "second use of a single-use token",
    );
    expect(
        cp.join_raw(
            &with_altered_secret(&token),
            "host-u",
            &fresh_public_key(),
            None,
        ),
        401,
        "token_unknown",
        "join with an unknown token",
    );
    expect(
        cp.join_raw(
            &with_altered_digest(&token),
            "host-w",
            &fresh_public_key(),
            None,
        ),
        401,
        "token_wrong_ca",
        "join with another CA's digest",
    );
    expect(
        cp.join_raw(&token, "host-x", &fresh_public_key(), None),
        409,
        "name_taken",
        "join as host-x with another key",
    );
    expect(
        cp.join_raw(&token, "host-k", &ky, None),
        409,
        "key_taken",
        "join with host-y's key under another name",
    );
    std::thread::sleep(Duration::from_millis(3100));
    expect(
        cp.join_raw(&short, "host-e", &fresh_public_key(), None),
        401,
        "token_expired",
        "join with an expired token",
    );
    assert_eq!(
        cp.node_names(),
        ["host-s", "host-w", "host-x", "host-y"],
        "node list after the refused joins"
    );
    let audit = std::fs::read_to_string(&cp.audit_log).expect("audit log");
    for secret in [
        &token[70..],
        &single[70..],
        &cx[6..],
        &own[6..],
        &admin[6..],
    ] {
        assert!(!audit.contains(secret), "the audit log contains a secret");
    }
    assert!(
        audit.lines().count() >= 10,
        "audit log has only {} lines:\n{audit}",
        audit.lines().count()
    );
}

#[test]
fn agent_refuses_a_token_for_another_ca() {
    let Some(c) = Cluster::new("agent_refuses_a_token_for_another_ca") else {
        return;
    };
    let (bridge, cp) = control_on_bridge(&c, ControlSpec::default());
    let token = cp.token_create(&[]);
    let h = joined_host_prepared(&c, &bridge, &cp, "a", 1, &with_altered_digest(&token));
    let (st, log) = h.agent.run_expect_exit(Duration::from_secs(30));
    assert!(
        !st.success() && st.code().is_some(),
        "agent with a wrong CA digest: {st}\n{log}"
    );
    let l = log.to_lowercase();
    assert!(
        l.contains("ca digest")
            && (l.contains("not match") || l.contains("no ca certificate matching")),
        "the agent's error does not say the CA digest does not match:\n{log}"
    );
    assert!(
        !log.contains(&token[70..]),
        "the agent's output contains the token's secret:\n{log}"
    );
    assert!(
        cp.node_names().is_empty(),
        "a host joined with a wrong CA digest"
    );
    // The same token with the right digest works (the failure above was the digest).
    let mut spec = h.agent.spec();
    spec.control = Some(cp.control_ref(&token));
    h.agent.set_spec(spec);
    h.agent.start();
    assert_eq!(cp.node_names(), ["host-a"]);
}
