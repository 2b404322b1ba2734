//! What the admin CLI needs besides the [`client`](wgmesh_client::client): reading `--ttl` and
//! rendering `token list`, `node list`, `policy apply`, `policy show` and `policy explain`.
//! Pure.

use std::fmt::Write as _;

use wgmesh_client::api::{
    ExplainReply, NodeInfo, PolicyAppliedReply, PolicyReply, RotationInfo, TokenInfo,
};
use wgmesh_config::policy::{DecidedBy, Decision, ShowFlow};

/// Parses a duration such as `90s`, `15m`, `1h`, `7d` or a plain number of seconds (config's
/// [`parse_duration`](wgmesh_config::duration::parse_duration), the one parser of durations).
pub use wgmesh_config::duration::parse_duration as parse_ttl;
/// Why `--ttl` is not a duration (config's [`DurationError`](wgmesh_config::duration::DurationError)).
/// `Display` is the message the CLI prints after `--ttl: `.
pub use wgmesh_config::duration::DurationError as TtlError;

/// `token list` as a table: id, state, reusable, joins, expires (relative), labels.
pub fn render_tokens(tokens: &[TokenInfo], now: u64) -> String {
    let rows: Vec<Vec<String>> = tokens
        .iter()
        .map(|t| {
            vec![
                t.id.to_string(),
                format!("{:?}", t.state).to_lowercase(),
                if t.reusable { "reusable" } else { "single-use" }.to_owned(),
                t.joins.to_string(),
                if now >= t.expires_at {
                    format!("{}s ago", now - t.expires_at)
                } else {
                    format!("in {}s", t.expires_at - now)
                },
                labels_cell(&t.labels),
            ]
        })
        .collect();
    table(&["ID", "STATE", "USE", "JOINS", "EXPIRES", "LABELS"], &rows)
}

fn labels_cell(labels: &std::collections::BTreeMap<String, String>) -> String {
    if labels.is_empty() {
        return "-".to_owned();
    }
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Left-aligned columns, two spaces apart, no trailing spaces.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &[&str]| {
        let mut l = String::new();
        for (cell, w) in cells.iter().zip(&widths) {
            let _ = write!(l, "{cell:<w$}  ");
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(header);
    for row in rows {
        line(&row.iter().map(String::as_str).collect::<Vec<_>>());
    }
    out
}

/// `node list` as a table: name, subnet, endpoint, key (short), its epoch and age, the key
/// rotation (`-`, `queued`, `requested`, `announced`, or `abandoned 5s ago` when the last one
/// was), labels, last seen, state, whether the host holds the current netmap, and how many
/// workloads it reported (`--json` lists them).
pub fn render_nodes(nodes: &[NodeInfo], now: u64) -> String {
    let rows: Vec<Vec<String>> = nodes
        .iter()
        .map(|n| {
            vec![
                n.name.clone(),
                n.subnet.to_string(),
                n.endpoint.map_or_else(|| "-".to_owned(), |e| e.to_string()),
                n.public_key.short(),
                n.key_epoch.to_string(),
                age(now.saturating_sub(n.key_since)),
                rotation_cell(n, now),
                labels_cell(&n.labels),
                if n.last_seen == 0 {
                    "never".to_owned()
                } else {
                    format!("{}s ago", now.saturating_sub(n.last_seen))
                },
                if n.online { "online" } else { "offline" }.to_owned(),
                match (n.netmap_revision, n.in_sync) {
                    (None, _) => "-".to_owned(),
                    (Some(_), true) => "in sync".to_owned(),
                    (Some(r), false) => format!("behind (has {r})"),
                },
                n.workloads.len().to_string(),
            ]
        })
        .collect();
    table(
        &[
            "NAME",
            "SUBNET",
            "ENDPOINT",
            "KEY",
            "EPOCH",
            "KEY AGE",
            "ROTATION",
            "LABELS",
            "LAST SEEN",
            "STATE",
            "NETMAP",
            "WORKLOADS",
        ],
        &rows,
    )
}

/// A host's key rotation in `node list`.
fn rotation_cell(n: &NodeInfo, now: u64) -> String {
    match (&n.rotation, n.rotation_abandoned_at) {
        (Some(RotationInfo::Queued { .. }), _) => "queued".to_owned(),
        (Some(RotationInfo::Requested { .. }), _) => "requested".to_owned(),
        (Some(RotationInfo::Announced { .. }), _) => "announced".to_owned(),
        (None, Some(at)) => format!("abandoned {}s ago", now.saturating_sub(at)),
        (None, None) => "-".to_owned(),
    }
}

/// A duration in its largest whole unit: `45s`, `12m`, `3h`, `2d`.
fn age(secs: u64) -> String {
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m", secs / 60),
        3600..86400 => format!("{}h", secs / 3600),
        _ => format!("{}d", secs / 86400),
    }
}

/// What `policy apply` prints once the control plane stored the policy:
/// `applied seed.toml at revision 12 (3 rules, 7 tests passed)`.
pub fn render_applied(origin: &str, reply: &PolicyAppliedReply) -> String {
    format!(
        "applied {origin} at revision {} ({} {}, {} {} passed)\n",
        reply.revision,
        reply.rules,
        plural(reply.rules, "rule", "rules"),
        reply.tests,
        plural(reply.tests, "test", "tests"),
    )
}

/// `policy show`: a header line (a TOML comment, so the output is itself a policy file that
/// `policy apply` takes) with the origin, revision, default and counts, then the text as
/// applied; or a line saying that no policy is applied.
pub fn render_policy(reply: &PolicyReply) -> String {
    let Some(p) = &reply.policy else {
        return "no policy applied: everything is allowed\n".to_owned();
    };
    let mut out = format!(
        "# policy from {}, applied at revision {}: default {}, {} {}, {} {}\n",
        p.origin,
        p.revision,
        p.default,
        p.rules,
        plural(p.rules, "rule", "rules"),
        p.tests,
        plural(p.tests, "test", "tests"),
    );
    out.push_str(&p.text);
    if !p.text.ends_with('\n') {
        out.push('\n');
    }
    out
}

/// `policy explain`: one line, as `policy test` prints a test: the labels each side carries,
/// the flow, the verdict and what decided it (the rule, the default, or that no policy is
/// applied):
///
/// ```text
/// {host=host-b,role=frontend} -> {app=secure-app,host=host-a} tcp/80: allow (rule "frontend-to-app")
/// ```
pub fn render_explain(reply: &ExplainReply) -> String {
    let flow = ShowFlow {
        from: &reply.from.labels,
        to: &reply.to.labels,
        flow: reply.port,
    };
    let by = match (&reply.rule, reply.revision) {
        (_, None) => return format!("{flow}: {} (no policy is applied)\n", reply.verdict),
        (Some(rule), Some(_)) => DecidedBy::Rule(rule),
        (None, Some(_)) => DecidedBy::Default,
    };
    let decision = Decision {
        action: reply.verdict,
        by,
    };
    format!("{flow}: {decision}\n")
}

fn plural<'a>(n: usize, one: &'a str, many: &'a str) -> &'a str {
    if n == 1 {
        one
    } else {
        many
    }
}

#[cfg(test)]
mod tests {
    use std::num::IntErrorKind;

    use wgmesh_client::api::{ExplainEndpoint, PolicyInfo};
    use wgmesh_config::policy::Action;

    use super::*;

    #[test]
    fn ttls_take_units_and_refuse_zero_and_junk() {
        assert_eq!(parse_ttl("90"), Ok(90));
        assert_eq!(parse_ttl("90s"), Ok(90));
        assert_eq!(parse_ttl("15m"), Ok(900));
        assert_eq!(parse_ttl("1h"), Ok(3600));
        assert_eq!(parse_ttl("7d"), Ok(7 * 86400));
        let message = |s: &str| parse_ttl(s).unwrap_err().to_string();
        assert!(message("0s").contains("at least 1s"));
        assert!(message("1w").contains("such as 1h"));
        assert!(message("h").contains("such as 1h"));
        assert!(parse_ttl("99999999999999999999d").is_err());
        assert_eq!(parse_ttl("0s"), Err(TtlError::Zero));
        assert_eq!(
            parse_ttl(" 1w "),
            Err(TtlError::Unit {
                text: "1w".to_owned()
            })
        );
        assert_eq!(
            message(" 1w "),
            "\"1w\" is not a duration; use a number with s, m, h or d, such as 1h"
        );
        assert_eq!(message("h"), message("1w").replace("1w", "h"));
        assert_eq!(
            message("300000000000000d"),
            "\"300000000000000d\" is too long"
        );
    }

    #[test]
    fn a_ttl_that_is_not_a_number_keeps_why() {
        for (text, kind) in [
            ("h", IntErrorKind::Empty),
            ("99999999999999999999d", IntErrorKind::PosOverflow),
        ] {
            let error = parse_ttl(text).unwrap_err();
            let TtlError::Number { source, .. } = &error else {
                panic!("{text:?}: {error:?}");
            };
            assert_eq!(source.kind(), &kind, "{text:?}");
            let cause = std::error::Error::source(&error).expect(text);
            assert_eq!(cause.to_string(), source.to_string());
        }
    }

    #[test]
    fn token_table_says_state_use_and_expiry() {
        let tokens = vec![TokenInfo {
            id: 3,
            created_at: 100,
            expires_at: 4000,
            reusable: true,
            labels: [("zone".to_owned(), "a".to_owned())].into(),
            joins: 2,
            state: wgmesh_client::api::TokenState::Revoked,
        }];
        let table = render_tokens(&tokens, 400);
        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[0].starts_with("ID"), "{table}");
        for cell in ["3", "revoked", "reusable", "in 3600s", "zone=a"] {
            assert!(lines[1].contains(cell), "{cell} missing: {table}");
        }
    }

    #[test]
    fn node_table_has_a_row_per_node_with_state() {
        let key = "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE="
            .parse()
            .unwrap();
        let nodes = vec![NodeInfo {
            name: "host-a".into(),
            subnet: "10.42.0.0/24".parse().unwrap(),
            endpoint: Some("198.18.0.1:51820".parse().unwrap()),
            public_key: key,
            labels: [("zone".to_owned(), "a".to_owned())].into(),
            joined_at: 100,
            last_seen: 190,
            online: true,
            netmap_revision: Some(7),
            in_sync: false,
            workloads: vec![wgmesh_client::api::WorkloadReport {
                name: "web".into(),
                ip: "10.42.0.2".parse().unwrap(),
                labels: Default::default(),
            }],
            key_epoch: 3,
            key_since: 20,
            rotation: None,
            rotation_abandoned_at: None,
        }];
        let table = render_nodes(&nodes, 200);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(lines[0].starts_with("NAME"));
        assert!(lines[1].starts_with("host-a"), "{table}");
        for cell in [
            "10.42.0.0/24",
            "198.18.0.1:51820",
            "zone=a",
            "10s ago",
            "online",
            "behind (has 7)",
            " 3 ",
            " 3m ",
        ] {
            assert!(lines[1].contains(cell), "{cell} missing: {table}");
        }
        assert!(
            lines[0].contains("EPOCH  KEY AGE  ROTATION  LABELS"),
            "{table}"
        );
        assert!(lines[0].ends_with("WORKLOADS"), "{table}");
        assert!(lines[1].trim_end().ends_with(" 1"), "{table}");
    }

    #[test]
    fn node_table_shows_each_hosts_key_epoch_age_and_rotation() {
        let node = |name: &str, rotation, abandoned| NodeInfo {
            name: name.into(),
            subnet: "10.42.0.0/24".parse().unwrap(),
            endpoint: None,
            public_key: wgmesh_config::PublicKey::from_bytes([1; 32]),
            labels: Default::default(),
            joined_at: 0,
            last_seen: 0,
            online: false,
            netmap_revision: None,
            in_sync: false,
            workloads: vec![],
            key_epoch: 1,
            key_since: 1000,
            rotation,
            rotation_abandoned_at: abandoned,
        };
        let key = wgmesh_config::PublicKey::from_bytes([2; 32]);
        let nodes = vec![
            node("idle", None, None),
            node(
                "queued",
                Some(RotationInfo::Queued {
                    epoch: 2,
                    reason: wgmesh_client::api::RotationReason::Interval,
                    queued_at: 1,
                }),
                Some(5),
            ),
            node(
                "requested",
                Some(RotationInfo::Requested {
                    epoch: 2,
                    at: 1,
                    deadline: 2,
                }),
                None,
            ),
            node(
                "announced",
                Some(RotationInfo::Announced {
                    epoch: 2,
                    new_key: key,
                    at: 1,
                    deadline: 2,
                }),
                None,
            ),
            node("abandoned", None, Some(1000 + 86400 * 2 - 30)),
        ];
        let now = 1000 + 86400 * 2;
        let table = render_nodes(&nodes, now);
        let row = |name: &str| {
            let line = table.lines().find(|l| l.starts_with(name)).unwrap();
            line.split("  ")
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .collect::<Vec<_>>()
        };
        // NAME SUBNET ENDPOINT KEY EPOCH KEY-AGE ROTATION ...
        assert_eq!(row("idle")[4..7], ["1", "2d", "-"], "{table}");
        assert_eq!(
            row("queued")[6],
            "queued",
            "a rotation shows over an abandonment"
        );
        assert_eq!(row("requested")[6], "requested");
        assert_eq!(row("announced")[6], "announced");
        assert_eq!(row("abandoned")[6], "abandoned 30s ago");
        assert_eq!(
            [
                age(0),
                age(59),
                age(60),
                age(3599),
                age(3600),
                age(86399),
                age(86400)
            ],
            ["0s", "59s", "1m", "59m", "1h", "23h", "1d"]
        );
    }

    #[test]
    fn policy_show_is_a_commented_header_and_the_text() {
        assert_eq!(
            render_policy(&PolicyReply { policy: None }),
            "no policy applied: everything is allowed\n"
        );
        let reply = PolicyReply {
            policy: Some(PolicyInfo {
                origin: "seed.toml".into(),
                revision: 12,
                default: Action::Deny,
                rules: 1,
                tests: 2,
                text: "default = \"deny\"".into(),
            }),
        };
        assert_eq!(
            render_policy(&reply),
            "# policy from seed.toml, applied at revision 12: default deny, 1 rule, 2 tests\n\
             default = \"deny\"\n"
        );
        let applied = PolicyAppliedReply {
            revision: 12,
            rules: 3,
            tests: 1,
        };
        assert_eq!(
            render_applied("seed.toml", &applied),
            "applied seed.toml at revision 12 (3 rules, 1 test passed)\n"
        );
    }

    #[test]
    fn policy_explain_names_the_rule_or_the_default_and_both_sides_labels() {
        let side = |endpoint: &str, labels: &[(&str, &str)]| ExplainEndpoint {
            endpoint: endpoint.into(),
            labels: labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        };
        let mut reply = ExplainReply {
            verdict: Action::Allow,
            rule: Some("frontend-to-app".into()),
            from: side("host-b/web", &[("role", "frontend"), ("host", "host-b")]),
            to: side("app=secure-app", &[("app", "secure-app")]),
            port: "tcp/80".parse().unwrap(),
            revision: Some(12),
        };
        assert_eq!(
            render_explain(&reply),
            "{host=host-b,role=frontend} -> {app=secure-app} tcp/80: allow (rule \"frontend-to-app\")\n"
        );
        reply.verdict = Action::Deny;
        reply.rule = None;
        reply.to = side("", &[]);
        assert_eq!(
            render_explain(&reply),
            "{host=host-b,role=frontend} -> {} tcp/80: deny (the default)\n"
        );
        (reply.verdict, reply.revision) = (Action::Allow, None);
        assert_eq!(
            render_explain(&reply),
            "{host=host-b,role=frontend} -> {} tcp/80: allow (no policy is applied)\n"
        );
    }
}
