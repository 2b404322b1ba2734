//! Tests of control mode: the `[control]` table, what it rules out, and the join token that is
//! never echoed.

use super::*;

/// A valid join token's text.
fn token_text() -> String {
    JoinToken::generate(b"test CA").expose()
}

#[test]
fn control_mode_parses() {
    let text = "[agent]\nname = \"host-a\"\nendpoint = \"198.18.0.1:51820\"\n\
                    labels = { zone = \"a\", \"example.com/tier\" = \"\" }\n\n[control]\n\
                    url = \"https://198.18.0.10:7443\"\n\
                    join_token_file = \"/etc/wgmesh/join-token\"\n";
    let cfg = parse(text).unwrap();
    assert_eq!(cfg.agent.subnet, None);
    assert_eq!(
        cfg.agent.endpoint,
        Some("198.18.0.1:51820".parse().unwrap())
    );
    assert_eq!(
        cfg.agent.labels,
        BTreeMap::from([
            ("zone".to_owned(), "a".to_owned()),
            ("example.com/tier".to_owned(), String::new()),
        ])
    );
    assert!(cfg.peers.is_empty());
    let control = cfg.control.as_ref().unwrap();
    assert_eq!(control.url.to_string(), "https://198.18.0.10:7443");
    assert_eq!(
        control.join_token,
        Some(JoinTokenSource::File(PathBuf::from(
            "/etc/wgmesh/join-token"
        )))
    );
    assert_eq!(cfg.agent.mtu, DEFAULT_MTU);
    let written = cfg.to_toml();
    assert_eq!(parse(&written).unwrap(), cfg, "{written}");

    // A relative token path is kept as written.
    let cfg = parse(&control_mode("", "join_token_file = \"join-token\"")).unwrap();
    assert_eq!(
        cfg.control.unwrap().join_token,
        Some(JoinTokenSource::File(PathBuf::from("join-token")))
    );

    // An inline token, written back in full.
    let token = token_text();
    let cfg = parse(&control_mode("", &format!("join_token = \"{token}\""))).unwrap();
    let Some(JoinTokenSource::Inline(parsed)) = &cfg.control.as_ref().unwrap().join_token else {
        panic!("expected an inline token: {cfg:?}");
    };
    assert_eq!(parsed.expose(), token);
    assert!(!format!("{cfg:?}").contains(&token[70..]), "{cfg:?}");
    let written = cfg.to_toml();
    assert!(written.contains(&token), "{written}");
    assert_eq!(parse(&written).unwrap(), cfg, "{written}");

    // No token: an agent that has already joined.
    let cfg = parse(&control_mode("mtu = 1280", "")).unwrap();
    assert_eq!(cfg.control.as_ref().unwrap().join_token, None);
    assert_eq!(parse(&cfg.to_toml()).unwrap(), cfg);

    // An IPv6 control plane.
    let text = "[agent]\nname = \"a\"\n[control]\nurl = \"https://[fd00::10]:7443/\"\n";
    let url = parse(text).unwrap().control.unwrap().url;
    assert_eq!(url.to_string(), "https://[fd00::10]:7443");
}

#[test]
fn control_mode_refuses_subnet_and_peers() {
    let text = control_mode("subnet = \"10.42.1.0/24\"", "");
    let shown = expect_error(
        &text,
        3,
        Some("agent.subnet"),
        "given by the control plane in control mode",
    );
    assert!(shown.contains("remove it"), "{shown}");
    assert!(shown.contains(":3:10:"), "{shown}");

    let text = format!(
        "{}\n[[peer]]\npublic_key = \"{KEY_B}\"\nallowed_ips = [\"10.42.2.0/24\"]\n",
        control_mode("", "")
    );
    let shown = expect_error(
        &text,
        8,
        Some("peer[0]"),
        "[[peer]] tables are given by the control plane in control mode",
    );
    assert!(shown.contains("remove them"), "{shown}");
    // Even with the [control] table last.
    let text = format!(
        "[agent]\nname = \"a\"\n[[peer]]\npublic_key = \"{KEY_B}\"\n\
             [control]\nurl = \"https://198.18.0.10:7443\"\n"
    );
    expect_error(&text, 3, Some("peer[0]"), "control mode");
    expect_error(
        "[agent]\nname = \"a\"\n[[control]]\nurl = \"https://h.example:1\"\n",
        3,
        Some("control"),
        "write one [control] table, not [[control]]",
    );
    expect_error(
        "control = 3\n[agent]\nname = \"a\"\n",
        1,
        Some("control"),
        "expected a [control] table",
    );
}

#[test]
fn static_mode_still_needs_a_subnet() {
    let shown = expect_error(
        "[agent]\nname = \"a\"\nendpoint = \"198.18.0.1:51820\"\n",
        1,
        Some("agent"),
        "missing field `subnet`, expected an IP prefix string",
    );
    assert!(shown.contains("or add a [control] table"), "{shown}");
}

#[test]
fn both_token_keys_refused() {
    let token = token_text();
    let text = control_mode(
        "",
        &format!("join_token = \"{token}\"\njoin_token_file = \"/etc/wgmesh/join-token\""),
    );
    let shown = expect_error(
        &text,
        7,
        Some("control.join_token_file"),
        "join_token and join_token_file are both set",
    );
    assert!(!shown.contains(&token), "{shown}");
    let text = control_mode(
        "",
        &format!("join_token_file = \"/etc/wgmesh/join-token\"\njoin_token = \"{token}\""),
    );
    let shown = expect_error(&text, 7, Some("control.join_token"), "both set");
    assert!(!shown.contains(&token), "{shown}");
}

#[test]
fn bad_control_url_and_table() {
    let url = |url: &str| format!("[agent]\nname = \"a\"\n[control]\nurl = \"{url}\"\n");
    let field = Some("control.url");
    let shown = expect_error(
        &url("http://198.18.0.10:7443"),
        4,
        field,
        "only speaks https",
    );
    assert!(shown.contains(":4:7:"), "{shown}");
    expect_error(&url("https://198.18.0.10"), 4, field, "has no port");
    expect_error(&url("https://198.18.0.10:7443/api"), 4, field, "has a path");
    expect_error(
        &url("198.18.0.10:7443"),
        4,
        field,
        "does not start with https://",
    );
    expect_error(
        "[agent]\nname = \"a\"\n[control]\nurl = 7443\n",
        4,
        field,
        "expected a URL string such as",
    );
    expect_error(
        "[agent]\nname = \"a\"\n[control]\njoin_token_file = \"/t\"\n",
        3,
        Some("control"),
        "missing field `url`",
    );
    expect_error(
        "[agent]\nname = \"a\"\n[control]\nurl = \"https://h.example:1\"\ntoken = \"x\"\n",
        5,
        Some("control"),
        "unknown field `token`, expected one of `url`, `join_token`, `join_token_file`",
    );
    expect_error(
        &control_mode("", "join_token_file = \"\""),
        6,
        Some("control.join_token_file"),
        "the path is empty",
    );
}

#[test]
fn bad_inline_token_is_never_echoed() {
    let token = token_text();
    let secret = &token[70..];
    // A truncated secret, a wrong kind of token, a token in the wrong key.
    for (bad, needle) in [
        (&token[..token.len() - 1], "not 43 base64url characters"),
        (&format!("WGMA1-{secret}"), "this is a wgmesh admin token"),
        (&format!("{token}!"), "not 43 base64url characters"),
    ] {
        let text = control_mode("", &format!("join_token = \"{bad}\""));
        let err = parse(&text).unwrap_err();
        let shown = format!("{err} {err:?}");
        assert!(!shown.contains(&secret[..20]), "{shown}");
        expect_error(&text, 6, Some("control.join_token"), needle);
        assert!(err.to_string().contains("not a valid join token"), "{err}");
    }
    // toml syntax errors on the token's line: no quote of the line anywhere.
    for text in [
        control_mode("", &format!("join_token = \"{token}")),
        control_mode("", &format!("join_token = \"{token}\" x")),
        control_mode("", &format!("join_tokn = \"{token}\"")),
        control_mode(
            "",
            &format!("join_token = \"{token}\"\njoin_token = \"{token}\""),
        ),
    ] {
        let err = parse(&text).unwrap_err();
        let shown = format!("{err} {err:?}");
        assert!(!shown.contains(&secret[..20]), "{shown}");
        assert!(err.source.is_none(), "{shown}");
        assert!(err.line.is_some(), "{shown}");
    }
    // Other files keep toml's error as the source.
    let err = parse("[agent]\nname = \"a\nsubnet = \"10.42.1.0/24\"\n").unwrap_err();
    assert!(err.source.is_some(), "{err}");
}
