//! Tests of agent.toml parsing: values, defaults, every error and where it points; the
//! `[control]` table's own tests are in `control_mode`.

use super::*;
use crate::labels::MAX_LABELS;

mod cluster;
mod control_mode;
mod docker;

const ORIGIN: &str = "/etc/wgmesh/agent.toml";
const KEY_B: &str = "3/p3fb4ZcxQHYwqHcetro79Do7qwCZun+9vYGxlRD10=";
const KEY_C: &str = "B/hoHUtqkuO5H66EX9s8YUVnI6xYsgCvIfHoaymYyws=";

const FULL: &str = r#"[agent]
name = "host-a"
private_key_file = "/var/lib/wgmesh/private.key"
listen_port = 51820
interface = "wgm0"
mtu = 1420
subnet = "10.42.1.0/24"
cluster_cidr = "10.42.0.0/16"
socket = "/run/wgmesh/agent.sock"
state_dir = "/var/lib/wgmesh"

[[peer]]
name = "host-b"
public_key = "3/p3fb4ZcxQHYwqHcetro79Do7qwCZun+9vYGxlRD10="
endpoint = "198.18.0.2:51820"
allowed_ips = ["10.42.2.0/24"]
persistent_keepalive = 25
preshared_key_file = "/var/lib/wgmesh/host-b.psk"

[[peer]]
public_key = "B/hoHUtqkuO5H66EX9s8YUVnI6xYsgCvIfHoaymYyws="
allowed_ips = ["10.42.3.0/24", "10.42.4.0/24"]
"#;

fn parse(text: &str) -> Result<AgentConfig, ConfigError> {
    AgentConfig::from_toml(text, Path::new(ORIGIN))
}

/// Parses `text`, expecting an error at `line` for `field`; returns the displayed error.
#[track_caller]
fn expect_error(text: &str, line: usize, field: Option<&str>, needle: &str) -> String {
    parse(text)
        .expect_err("the config should be rejected")
        .assert_at(ORIGIN, line, field, needle)
}

/// `[agent]` with a name, `subnet` (line 3), `extra_agent` (from line 4) and `cluster_cidr`
/// (line 4 when `extra_agent` is empty, else after it), then `peers`.
fn minimal(extra_agent: &str, peers: &str) -> String {
    let cluster = "cluster_cidr = \"10.42.0.0/16\"";
    let agent = if extra_agent.is_empty() {
        cluster.to_owned()
    } else {
        format!("{extra_agent}\n{cluster}")
    };
    format!("[agent]\nname = \"host-a\"\nsubnet = \"10.42.1.0/24\"\n{agent}\n{peers}")
}

#[test]
fn full_example_parses_with_values_and_defaults() {
    let cfg = parse(FULL).unwrap();
    let a = &cfg.agent;
    assert_eq!(a.name, "host-a");
    assert_eq!(a.private_key_file, Path::new("/var/lib/wgmesh/private.key"));
    assert_eq!(a.listen_port, 51820);
    assert_eq!(a.interface, "wgm0");
    assert_eq!(a.bridge, "wgmbr0");
    assert_eq!(a.mtu, 1420);
    assert_eq!(a.subnet, Some("10.42.1.0/24".parse::<IpNet>().unwrap()));
    assert_eq!(a.socket, Path::new("/run/wgmesh/agent.sock"));
    assert_eq!(a.state_dir, Path::new("/var/lib/wgmesh"));
    assert!(a.offload);

    assert_eq!(cfg.peers.len(), 2);
    let b = &cfg.peers[0];
    assert_eq!(b.name.as_deref(), Some("host-b"));
    assert_eq!(b.public_key.to_string(), KEY_B);
    assert_eq!(b.endpoint, Some("198.18.0.2:51820".parse().unwrap()));
    assert_eq!(
        b.allowed_ips,
        vec!["10.42.2.0/24".parse::<IpNet>().unwrap()]
    );
    assert_eq!(b.persistent_keepalive, Some(25));
    assert_eq!(
        b.preshared_key_file.as_deref(),
        Some(Path::new("/var/lib/wgmesh/host-b.psk"))
    );
    let c = &cfg.peers[1];
    assert_eq!(c.name, None);
    assert_eq!(c.endpoint, None);
    assert_eq!(c.persistent_keepalive, None);
    assert_eq!(c.preshared_key_file, None);
    assert_eq!(c.allowed_ips.len(), 2);

    let key_c: PublicKey = KEY_C.parse().unwrap();
    assert_eq!(cfg.peer_by_key(&key_c), Some(c));
    let stranger = crate::PrivateKey::generate().public_key();
    assert_eq!(cfg.peer_by_key(&stranger), None);
}

#[test]
fn minimal_config_gets_every_default() {
    let cfg = parse(&minimal("", "")).unwrap();
    let a = cfg.agent;
    assert_eq!(a.listen_port, DEFAULT_LISTEN_PORT);
    assert_eq!(a.interface, DEFAULT_INTERFACE);
    assert_eq!(a.bridge, DEFAULT_BRIDGE);
    assert_eq!(a.mtu, DEFAULT_MTU);
    assert_eq!(a.socket, Path::new(DEFAULT_SOCKET));
    assert_eq!(a.state_dir, Path::new(DEFAULT_STATE_DIR));
    assert_eq!(a.private_key_file, Path::new("/var/lib/wgmesh/private.key"));
    assert_eq!(a.audit_log, Path::new("/var/lib/wgmesh/audit.jsonl"));
    assert!(a.offload);
    assert!(cfg.peers.is_empty());

    // The audit log can be put anywhere; a bad value is an error at its place.
    let cfg = parse(&minimal("audit_log = \"/var/log/wgm-audit.jsonl\"", "")).unwrap();
    assert_eq!(cfg.agent.audit_log, Path::new("/var/log/wgm-audit.jsonl"));
    let err = parse(&minimal("audit_log = 7", ""))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("agent.audit_log") && err.contains("a file path string"),
        "{err}"
    );

    // The key file follows a custom state_dir; offload and bridge can be set.
    let cfg = parse(&minimal(
        "state_dir = \"/srv/wgm\"\noffload = false\nbridge = \"br9\"\nlisten_port = 0",
        "",
    ))
    .unwrap();
    assert_eq!(
        cfg.agent.private_key_file,
        Path::new("/srv/wgm/private.key")
    );
    assert_eq!(cfg.agent.audit_log, Path::new("/srv/wgm/audit.jsonl"));
    assert!(!cfg.agent.offload);
    assert_eq!(cfg.agent.bridge, "br9");
    assert_eq!(cfg.agent.listen_port, 0);
}

#[test]
fn keepalive_zero_means_off_and_peers_may_have_no_allowed_ips() {
    let cfg = parse(&minimal(
        "",
        &format!("[[peer]]\npublic_key = \"{KEY_B}\"\npersistent_keepalive = 0\n"),
    ))
    .unwrap();
    assert_eq!(cfg.peers[0].persistent_keepalive, None);
    assert!(cfg.peers[0].allowed_ips.is_empty());
}

#[test]
fn to_toml_round_trips() {
    let cfg = parse(FULL).unwrap();
    let text = cfg.to_toml();
    assert_eq!(parse(&text).unwrap(), cfg, "{text}");
    let cfg = parse(&minimal("offload = false", "")).unwrap();
    assert_eq!(parse(&cfg.to_toml()).unwrap(), cfg);
}

#[test]
fn malformed_public_key() {
    let text = minimal("", "[[peer]]\npublic_key = \"not-a-key\"\n");
    expect_error(&text, 6, Some("peer[0].public_key"), "44 characters");
    let short = &KEY_B[..40];
    let text = minimal("", &format!("[[peer]]\npublic_key = \"{short}\"\n"));
    expect_error(&text, 6, Some("peer[0].public_key"), "a key is 32 bytes");
}

#[test]
fn bad_cidr() {
    let text = minimal(
            "",
            &format!("[[peer]]\npublic_key = \"{KEY_B}\"\nallowed_ips = [\"10.42.2.0/24\", \"10.42.300.0/24\"]\n"),
        );
    let shown = expect_error(
        &text,
        7,
        Some("peer[0].allowed_ips[1]"),
        "is not an IP prefix",
    );
    assert!(shown.contains(":7:32:"), "{shown}");

    let text = "[agent]\nname = \"a\"\nsubnet = \"10.42.1.1\"\n";
    expect_error(text, 3, Some("agent.subnet"), "has no prefix length");
    let text = "[agent]\nname = \"a\"\nsubnet = \"10.42.1.0/31\"\n";
    expect_error(text, 3, Some("agent.subnet"), "/30 or shorter");
    let text = "[agent]\nname = \"a\"\nsubnet = \"fd42::/127\"\n";
    expect_error(text, 3, Some("agent.subnet"), "/126 or shorter");
}

#[test]
fn host_bits_set() {
    let text = "[agent]\nname = \"a\"\nsubnet = \"10.42.1.5/24\"\n";
    let shown = expect_error(
        text,
        3,
        Some("agent.subnet"),
        "10.42.1.5/24 has host bits set; did you mean 10.42.1.0/24?",
    );
    assert!(
        shown.starts_with(&format!("{ORIGIN}:3:10: agent.subnet: ")),
        "{shown}"
    );

    let text = minimal(
        "",
        &format!("[[peer]]\npublic_key = \"{KEY_B}\"\nallowed_ips = [\"10.42.2.1/24\"]\n"),
    );
    expect_error(
        &text,
        7,
        Some("peer[0].allowed_ips[0]"),
        "did you mean 10.42.2.0/24?",
    );
}

#[test]
fn overlapping_allowed_ips_between_peers() {
    let text = minimal(
            "",
            &format!(
                "[[peer]]\npublic_key = \"{KEY_B}\"\nallowed_ips = [\"10.42.2.0/24\"]\n\n\
                 [[peer]]\npublic_key = \"{KEY_C}\"\nallowed_ips = [\"10.42.3.0/24\", \"10.42.2.128/25\"]\n"
            ),
        );
    expect_error(
        &text,
        11,
        Some("peer[1].allowed_ips[1]"),
        "10.42.2.128/25 overlaps peer[0].allowed_ips[0] 10.42.2.0/24 (line 7)",
    );
    // Overlaps within one peer are allowed.
    let text = minimal(
            "",
            &format!("[[peer]]\npublic_key = \"{KEY_B}\"\nallowed_ips = [\"10.42.2.0/24\", \"10.42.2.0/25\"]\n"),
        );
    assert_eq!(parse(&text).unwrap().peers[0].allowed_ips.len(), 2);
}

#[test]
fn peer_overlapping_own_subnet() {
    let text = minimal(
        "",
        &format!("[[peer]]\npublic_key = \"{KEY_B}\"\nallowed_ips = [\"10.42.0.0/16\"]\n"),
    );
    expect_error(
        &text,
        7,
        Some("peer[0].allowed_ips[0]"),
        "10.42.0.0/16 overlaps agent.subnet 10.42.1.0/24",
    );
}

#[test]
fn duplicate_public_key() {
    let text = minimal(
        "",
        &format!("[[peer]]\npublic_key = \"{KEY_B}\"\n[[peer]]\npublic_key = \"{KEY_B}\"\n"),
    );
    expect_error(
        &text,
        8,
        Some("peer[1].public_key"),
        "also the key of peer[0] (line 6)",
    );
}

#[test]
fn unknown_field() {
    let text = "[agent]\nname = \"a\"\nnmae = \"b\"\nsubnet = \"10.42.1.0/24\"\n";
    let shown = expect_error(
        text,
        3,
        Some("agent"),
        "unknown field `nmae`, expected one of `name`",
    );
    assert!(
        shown.starts_with(&format!("{ORIGIN}:3:1: agent: ")),
        "{shown}"
    );

    let text = minimal(
        "",
        &format!("[[peer]]\npublic_key = \"{KEY_B}\"\nkeepalive = 5\n"),
    );
    expect_error(&text, 7, Some("peer[0]"), "unknown field `keepalive`");

    let text = minimal("", "[peers]\n");
    expect_error(
        &text,
        5,
        None,
        "unknown field `peers`, expected one of `agent`, `peer`, `control`",
    );
}

#[test]
fn missing_name_and_subnet() {
    let text = "# comment\n[agent]\nsubnet = \"10.42.1.0/24\"\n";
    expect_error(text, 2, Some("agent"), "missing field `name`");
    let text = "[agent]\nname = \"a\"\n";
    expect_error(
        text,
        1,
        Some("agent"),
        "missing field `subnet`, expected an IP prefix",
    );
    let text = minimal("", "\n\n[[peer]]\nallowed_ips = []\n");
    expect_error(&text, 7, Some("peer[0]"), "missing field `public_key`");
    let text = format!("[[peer]]\npublic_key = \"{KEY_B}\"\n");
    let err = parse(&text).unwrap_err();
    assert_eq!(err.field, None, "{err}");
    assert!(err.message.contains("missing field `agent`"), "{err}");
}

#[test]
fn wrong_type() {
    let text = minimal("mtu = \"big\"", "");
    expect_error(
        &text,
        4,
        Some("agent.mtu"),
        "expected an integer from 576 to 9000",
    );
    let text = minimal(
        "",
        &format!("[[peer]]\npublic_key = \"{KEY_B}\"\nallowed_ips = [\"10.42.2.0/24\", 7]\n"),
    );
    let shown = expect_error(
        &text,
        7,
        Some("peer[0].allowed_ips[1]"),
        "invalid type: integer `7`, expected an IP prefix string",
    );
    assert!(!shown.contains("i64") && !shown.contains("Raw"), "{shown}");
    let text = "agent = 3\n";
    expect_error(text, 1, Some("agent"), "expected an [agent] table");
    let text = "[[agent]]\nname = \"a\"\nsubnet = \"10.42.1.0/24\"\n";
    expect_error(text, 1, Some("agent"), "not [[agent]]");
    let text = minimal("", &format!("[peer]\npublic_key = \"{KEY_B}\"\n"));
    expect_error(&text, 5, Some("peer"), "expected [[peer]] tables");
    let text = minimal("offload = \"yes\"", "");
    expect_error(&text, 4, Some("agent.offload"), "expected true or false");
}

#[test]
fn bad_endpoint() {
    let peer = |endpoint: &str| {
        minimal(
            "",
            &format!("[[peer]]\npublic_key = \"{KEY_B}\"\nendpoint = \"{endpoint}\"\n"),
        )
    };
    let field = Some("peer[0].endpoint");
    expect_error(&peer("198.18.0.2:0"), 7, field, "port 0");
    expect_error(
        &peer("host-b.example:51820"),
        7,
        field,
        "host names are not supported yet",
    );
    expect_error(&peer("198.18.0.2"), 7, field, "has no port");
    expect_error(&peer("198.18.0.2:99999"), 7, field, "invalid port");
    expect_error(&peer("fd00::2:51820"), 7, field, "brackets");
    let ok = parse(&peer("[fd00::2]:51820")).unwrap();
    assert_eq!(
        ok.peers[0].endpoint,
        Some("[fd00::2]:51820".parse().unwrap())
    );
}

#[test]
fn bad_names() {
    expect_error(
        "[agent]\nname = \"host a\"\nsubnet = \"10.42.1.0/24\"\n",
        2,
        Some("agent.name"),
        "contains ' '",
    );
    let long = "a".repeat(64);
    expect_error(
        &format!("[agent]\nname = \"{long}\"\nsubnet = \"10.42.1.0/24\"\n"),
        2,
        Some("agent.name"),
        "64 characters long",
    );
    assert!(parse(&format!(
        "[agent]\nname = \"{}\"\nsubnet = \"10.42.1.0/24\"\ncluster_cidr = \"10.0.0.0/8\"\n",
        &long[1..]
    ))
    .is_ok());
    expect_error(
        &minimal("interface = \"wgm/0\"", ""),
        4,
        Some("agent.interface"),
        "contains '/'",
    );
    expect_error(
        &minimal("interface = \"..\"", ""),
        4,
        Some("agent.interface"),
        "not allowed",
    );
    expect_error(
        &minimal("bridge = \"a-very-long-nam0\"", ""),
        4,
        Some("agent.bridge"),
        "16 bytes long",
    );
    expect_error(
        &minimal("bridge = \"wgm0\"", ""),
        4,
        Some("agent.bridge"),
        "must be different",
    );
}

#[test]
fn bad_numbers_and_paths() {
    expect_error(
        &minimal("mtu = 575", ""),
        4,
        Some("agent.mtu"),
        "575 is out of range",
    );
    expect_error(
        &minimal("mtu = 9001", ""),
        4,
        Some("agent.mtu"),
        "use 576 to 9000",
    );
    assert_eq!(parse(&minimal("mtu = 9000", "")).unwrap().agent.mtu, 9000);
    expect_error(
        &minimal("listen_port = 65536", ""),
        4,
        Some("agent.listen_port"),
        "out of range",
    );
    expect_error(
        &minimal("socket = \"\"", ""),
        4,
        Some("agent.socket"),
        "empty",
    );
    expect_error(
        "[agent]\nname = \"a\"\nsubnet = \"fd42:1::/64\"\nmtu = 1000\ncluster_cidr = \"fd42::/16\"\n",
        4,
        Some("agent.mtu"),
        "too small for the IPv6 subnet",
    );
    let text = minimal(
        "",
        &format!("[[peer]]\npublic_key = \"{KEY_B}\"\npersistent_keepalive = -1\n"),
    );
    expect_error(
        &text,
        7,
        Some("peer[0].persistent_keepalive"),
        "or 0 for off",
    );
}

#[test]
fn syntax_error_has_position() {
    let text = "[agent]\nname = \"a\nsubnet = \"10.42.1.0/24\"\n";
    let err = parse(text).unwrap_err();
    assert_eq!(err.line, Some(2), "{err}");
    assert!(
        err.to_string().starts_with(&format!("{ORIGIN}:2:")),
        "{err}"
    );
    let text = "[agent]\nname = \"a\"\nname = \"b\"\nsubnet = \"10.42.1.0/24\"\n";
    expect_error(text, 3, Some("agent"), "duplicate key");
}

fn control_mode(agent_extra: &str, control_extra: &str) -> String {
    format!(
        "[agent]\nname = \"host-a\"\n{agent_extra}\n[control]\n\
             url = \"https://198.18.0.10:7443\"\n{control_extra}\n"
    )
}

#[test]
fn bad_labels_name_the_key() {
    let text = minimal("labels = { zone = \"a\", \"bad key\" = \"b\" }", "");
    let shown = expect_error(
        &text,
        4,
        Some("agent.labels.bad key"),
        "label key \"bad key\" contains ' '",
    );
    assert!(shown.contains(":4:24:"), "{shown}");
    let text = minimal("", "[agent.labels]\nzone = \"a\"\ntier = \"-web\"\n");
    let shown = expect_error(
        &text,
        7,
        Some("agent.labels.tier"),
        "label value \"-web\" does not start and end with a letter or digit",
    );
    assert!(shown.contains(":7:8:"), "{shown}");
    let text = control_mode("labels = { \"Example.com/zone\" = \"a\" }", "");
    expect_error(&text, 3, Some("agent.labels.Example.com/zone"), "prefix");
    // A label named like another field is still a label.
    let text = minimal("labels = { mtu = 9000 }", "");
    expect_error(
        &text,
        4,
        Some("agent.labels.mtu"),
        "expected a label value string",
    );
    let text = minimal("labels = \"zone=a\"", "");
    expect_error(
        &text,
        4,
        Some("agent.labels"),
        "expected a table of label strings",
    );
    let many: Vec<String> = (0..=MAX_LABELS).map(|i| format!("k{i} = \"v\"")).collect();
    let text = minimal(&format!("labels = {{ {} }}", many.join(", ")), "");
    expect_error(&text, 4, Some("agent.labels"), "65 labels is too many");

    // Labels and an endpoint in static mode, written back.
    let text = minimal(
        "endpoint = \"[fd00::1]:51820\"\nlabels = { \"example.com/zone\" = \"a\" }",
        "",
    );
    let cfg = parse(&text).unwrap();
    assert_eq!(cfg.agent.labels["example.com/zone"], "a");
    assert_eq!(cfg.control, None);
    let written = cfg.to_toml();
    assert_eq!(parse(&written).unwrap(), cfg, "{written}");
}

#[test]
fn agent_endpoint() {
    let field = Some("agent.endpoint");
    expect_error(
        &minimal("endpoint = \"198.18.0.1:0\"", ""),
        4,
        field,
        "port 0",
    );
    expect_error(
        &control_mode("endpoint = \"198.18.0.1\"", ""),
        3,
        field,
        "has no port",
    );
    expect_error(
        &minimal("endpoint = 51820", ""),
        4,
        field,
        "expected an \"IP:port\" string",
    );
    let cfg = parse(&minimal("endpoint = \"198.18.0.1:51820\"", "")).unwrap();
    assert_eq!(
        cfg.agent.endpoint,
        Some("198.18.0.1:51820".parse().unwrap())
    );
    assert!(cfg.agent.labels.is_empty());
}

#[test]
fn load_reads_the_file_and_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agent.toml");
    std::fs::write(&path, FULL).unwrap();
    assert_eq!(AgentConfig::load(&path).unwrap(), parse(FULL).unwrap());

    std::fs::write(&path, "[agent]\nname = \"a\"\nsubnet = \"10.42.1.0/33\"\n").unwrap();
    let err = AgentConfig::load(&path).unwrap_err();
    assert_eq!(err.path, path);
    assert!(
        err.to_string()
            .starts_with(&format!("{}:3:10: agent.subnet: ", path.display())),
        "{err}"
    );

    let missing = dir.path().join("missing.toml");
    let err = AgentConfig::load(&missing).unwrap_err();
    assert_eq!(err.line, None);
    assert_eq!(
        err.to_string(),
        format!(
            "{}: cannot read the file: No such file or directory (os error 2)",
            missing.display()
        )
    );
    let io = err
        .source
        .as_ref()
        .and_then(|e| e.downcast_ref::<std::io::Error>());
    assert_eq!(io.map(|e| e.kind()), Some(std::io::ErrorKind::NotFound));
}
