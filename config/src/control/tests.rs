//! Tests of control.toml, admin.toml and their value types.

use std::path::Path;

use ipnet::IpNet;

use super::*;
use crate::error::ConfigError;
use crate::token::AdminToken;

const ORIGIN: &str = "/etc/wgmesh/control.toml";

const FULL: &str = r#"[control]
listen = "0.0.0.0:7443"
advertise = ["198.18.0.10", "control.example.com", "fd00::10"]
state_dir = "/var/lib/wgmesh-control"
cluster_cidr = "10.42.0.0/16"
host_prefix = 24
store = "embedded"
audit_log = "/var/lib/wgmesh-control/audit.jsonl"
"#;

fn parse(text: &str) -> Result<ControlConfig, ConfigError> {
    ControlConfig::from_toml(text, Path::new(ORIGIN))
}

/// Parses `text`, expecting an error at `line` for `field`; returns the displayed error.
#[track_caller]
fn expect_error(text: &str, line: usize, field: Option<&str>, needle: &str) -> String {
    parse(text)
        .expect_err("the config should be rejected")
        .assert_at(ORIGIN, line, field, needle)
}

/// A minimal file (lines 1-3) plus `extra` from line 4.
fn minimal(extra: &str) -> String {
    format!("[control]\ncluster_cidr = \"10.42.0.0/16\"\nadvertise = [\"198.18.0.10\"]\n{extra}\n")
}

#[test]
fn full_example_parses() {
    let cfg = parse(FULL).unwrap();
    assert_eq!(cfg.listen, "0.0.0.0:7443".parse().unwrap());
    assert_eq!(
        cfg.advertise,
        vec![
            Host::Ip("198.18.0.10".parse().unwrap()),
            Host::Dns("control.example.com".parse().unwrap()),
            Host::Ip("fd00::10".parse().unwrap()),
        ]
    );
    assert_eq!(cfg.state_dir, Path::new("/var/lib/wgmesh-control"));
    assert_eq!(cfg.cluster_cidr, "10.42.0.0/16".parse::<IpNet>().unwrap());
    assert_eq!(cfg.host_prefix, 24);
    assert_eq!(cfg.store, StoreKind::Embedded);
    assert_eq!(
        cfg.audit_log,
        Path::new("/var/lib/wgmesh-control/audit.jsonl")
    );
    assert_eq!(cfg.admin_url().to_string(), "https://198.18.0.10:7443");
    assert_eq!(
        cfg.admin_file_path(),
        Path::new("/var/lib/wgmesh-control/admin.toml")
    );
    assert_eq!(cfg.host_subnet_count(), 256);
}

#[test]
fn minimal_config_gets_every_default() {
    let cfg = parse(&minimal("")).unwrap();
    assert_eq!(cfg.listen, DEFAULT_CONTROL_LISTEN.parse().unwrap());
    assert_eq!(cfg.state_dir, Path::new(DEFAULT_CONTROL_STATE_DIR));
    assert_eq!(
        cfg.audit_log,
        Path::new("/var/lib/wgmesh-control/audit.jsonl")
    );
    assert_eq!(cfg.host_prefix, DEFAULT_HOST_PREFIX_V4);
    assert_eq!(cfg.store, StoreKind::Embedded);
    assert_eq!(cfg.audit_max_bytes, 64 * 1024 * 1024);
    assert_eq!(cfg.audit_keep, 5);
    assert_eq!(cfg.max_connections, 16384);
    assert_eq!(cfg.max_connections_per_address, 64);
    assert_eq!(cfg.handshake_timeout_secs, 10);

    // The audit log follows a custom state_dir; IPv6 clusters default to /64 hosts.
    let cfg = parse(&minimal(
        "state_dir = \"/srv/wgmc\"\nlisten = \"[::]:8443\"",
    ))
    .unwrap();
    assert_eq!(cfg.audit_log, Path::new("/srv/wgmc/audit.jsonl"));
    assert_eq!(cfg.admin_file_path(), Path::new("/srv/wgmc/admin.toml"));
    assert_eq!(cfg.admin_url().to_string(), "https://198.18.0.10:8443");
    let cfg =
        parse("[control]\ncluster_cidr = \"fd42::/48\"\nadvertise = [\"fd00::10\"]\n").unwrap();
    assert_eq!(cfg.host_prefix, DEFAULT_HOST_PREFIX_V6);
    assert_eq!(cfg.admin_url().to_string(), "https://[fd00::10]:7443");
    assert_eq!(cfg.host_subnet_count(), 65536);
}

#[test]
fn limits_parse_and_out_of_range_values_are_named() {
    let cfg = parse(&minimal(
        "audit_max_bytes = 4096\naudit_keep = 0\nmax_connections = 100\n\
         max_connections_per_address = 100\nhandshake_timeout_secs = 3",
    ))
    .unwrap();
    assert_eq!(
        (
            cfg.audit_max_bytes,
            cfg.audit_keep,
            cfg.max_connections,
            cfg.max_connections_per_address,
            cfg.handshake_timeout_secs
        ),
        (4096, 0, 100, 100, 3)
    );
    // A per-address default above a small global cap follows the cap.
    let cfg = parse(&minimal("max_connections = 10")).unwrap();
    assert_eq!(cfg.max_connections_per_address, 10);
    for (line, field, needle) in [
        (
            "audit_max_bytes = 100",
            "control.audit_max_bytes",
            "use 1024 to",
        ),
        (
            "audit_max_bytes = -1",
            "control.audit_max_bytes",
            "out of range",
        ),
        (
            "audit_keep = 1001",
            "control.audit_keep",
            "use 0 to 1000 (default 5)",
        ),
        (
            "max_connections = 0",
            "control.max_connections",
            "use 1 to 1000000",
        ),
        (
            "max_connections = 10\nmax_connections_per_address = 11",
            "control.max_connections_per_address",
            "use 1 to 10",
        ),
        (
            "handshake_timeout_secs = 0",
            "control.handshake_timeout_secs",
            "use 1 to 300 (default 10)",
        ),
    ] {
        let at = 4 + line.matches('\n').count();
        expect_error(&minimal(line), at, Some(field), needle);
    }
    expect_error(
        &minimal("audit_keep = \"5\""),
        4,
        Some("control.audit_keep"),
        "a number of files",
    );
}

#[test]
fn key_rotation_durations_parse_like_ttls() {
    let cfg = parse(&minimal("")).unwrap();
    assert_eq!(cfg.key_rotation_interval, None, "off unless set");
    assert_eq!(cfg.key_rotation_grace, DEFAULT_KEY_ROTATION_GRACE_SECS);
    assert_eq!(DEFAULT_KEY_ROTATION_GRACE_SECS, 600);
    let cfg = parse(&minimal(
        "key_rotation_interval = \"24h\"\nkey_rotation_grace = \"90\"",
    ))
    .unwrap();
    assert_eq!(cfg.key_rotation_interval, Some(86400));
    assert_eq!(cfg.key_rotation_grace, 90);
    let cfg = parse(&minimal("key_rotation_interval = \"20s\"")).unwrap();
    assert_eq!(cfg.key_rotation_interval, Some(20));
    assert!(!cfg.preshared_keys, "off unless set");
    assert!(
        parse(&minimal("preshared_keys = true"))
            .unwrap()
            .preshared_keys
    );
    let err = parse(&minimal("preshared_keys = \"yes\""))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("control.preshared_keys") && err.contains("true or false"),
        "{err}"
    );
    for (line, field, needle) in [
        (
            "key_rotation_interval = \"1w\"",
            "control.key_rotation_interval",
            "\"1w\" is not a duration; use a number with s, m, h or d, such as 1h",
        ),
        (
            "key_rotation_grace = \"0s\"",
            "control.key_rotation_grace",
            "at least 1s",
        ),
        (
            "key_rotation_interval = 86400",
            "control.key_rotation_interval",
            "a duration string such as \"24h\"",
        ),
    ] {
        expect_error(&minimal(line), 4, Some(field), needle);
    }
}

#[test]
fn cluster_cidr_errors() {
    let at =
        |cidr: &str| format!("[control]\ncluster_cidr = \"{cidr}\"\nadvertise = [\"a.example\"]\n");
    let field = Some("control.cluster_cidr");
    let shown = expect_error(
        &at("10.42.1.0/16"),
        2,
        field,
        "10.42.1.0/16 has host bits set; did you mean 10.42.0.0/16?",
    );
    assert!(
        shown.starts_with(&format!("{ORIGIN}:2:16: control.cluster_cidr: ")),
        "{shown}"
    );
    expect_error(&at("10.42.0.0"), 2, field, "has no prefix length");
    expect_error(&at("10.42.0.0/33"), 2, field, "is not an IP prefix");
    expect_error(&at("10.42.0.0/30"), 2, field, "too small to divide");
    // The default host_prefix does not fit: blame the cluster and say how to fix it.
    expect_error(
        &at("10.42.0.0/24"),
        2,
        field,
        "10.42.0.0/24 is not larger than a host subnet (host_prefix defaults to 24); use a \
             shorter cluster prefix, or set host_prefix to 25 to 30",
    );
    let text = "[control]\nadvertise = [\"a.example\"]\n";
    expect_error(
        text,
        1,
        Some("control"),
        "missing field `cluster_cidr`, expected an IP prefix string",
    );
}

#[test]
fn host_prefix_errors() {
    let field = Some("control.host_prefix");
    expect_error(
        &minimal("host_prefix = 16"),
        4,
        field,
        "16 is not longer than cluster_cidr 10.42.0.0/16; each host gets a /16 out of the \
             cluster, so use 17 to 30",
    );
    expect_error(&minimal("host_prefix = 8"), 4, field, "use 17 to 30");
    expect_error(
        &minimal("host_prefix = 31"),
        4,
        field,
        "31 is too long to leave room for a gateway and workloads in each host subnet; use \
             17 to 30",
    );
    expect_error(&minimal("host_prefix = -1"), 4, field, "use 17 to 30");
    expect_error(
        &minimal("host_prefix = 99999999999"),
        4,
        field,
        "use 17 to 30",
    );
    expect_error(
        &minimal("host_prefix = \"24\""),
        4,
        field,
        "invalid type: string \"24\", expected a prefix length such as 24",
    );
    assert_eq!(parse(&minimal("host_prefix = 30")).unwrap().host_prefix, 30);
    assert_eq!(parse(&minimal("host_prefix = 17")).unwrap().host_prefix, 17);
    let v6 =
        "[control]\ncluster_cidr = \"fd42::/48\"\nadvertise = [\"fd00::10\"]\nhost_prefix = 127\n";
    expect_error(v6, 4, field, "use 49 to 126");
}

#[test]
fn advertise_errors() {
    let with =
        |list: &str| format!("[control]\ncluster_cidr = \"10.42.0.0/16\"\nadvertise = {list}\n");
    expect_error(
        &with("[]"),
        3,
        Some("control.advertise"),
        "is empty; list at least one IP address or DNS name",
    );
    expect_error(
        "[control]\ncluster_cidr = \"10.42.0.0/16\"\n",
        1,
        Some("control"),
        "missing field `advertise`, expected an array of IP addresses or DNS names",
    );
    let shown = expect_error(
        &with("[\"198.18.0.10\", \"bad_name.example\"]"),
        3,
        Some("control.advertise[1]"),
        "\"bad_name.example\" contains '_'",
    );
    assert!(shown.contains(":3:29:"), "{shown}");
    let one = Some("control.advertise[0]");
    expect_error(
        &with("[\"198.18.0.300\"]"),
        3,
        one,
        "neither a valid IP address nor a DNS name",
    );
    expect_error(&with("[\"198.18.0.10:7443\"]"), 3, one, "without a port");
    expect_error(&with("[\"[fd00::10]\"]"), 3, one, "without brackets");
    expect_error(&with("[\"*.example.com\"]"), 3, one, "wildcard");
    expect_error(&with("[\"control.example.com.\"]"), 3, one, "trailing dot");
    expect_error(
        &with("[\"-a.example\"]"),
        3,
        one,
        "starting or ending with '-'",
    );
    expect_error(&with("[\"a..example\"]"), 3, one, "empty label");
    expect_error(&with("[\"\"]"), 3, one, "the name is empty");
    expect_error(&with("[\"a b\"]"), 3, one, "contains ' '");
    let long = "a".repeat(64);
    expect_error(
        &with(&format!("[\"{long}.example\"]")),
        3,
        one,
        "at most 63",
    );
    let longer = ["abcdefghij"; 25].join(".") + ".example";
    expect_error(&with(&format!("[\"{longer}\"]")), 3, one, "at most 253");
    expect_error(
        &with("[\"Control.example.com\", \"198.18.0.10\", \"control.EXAMPLE.com\"]"),
        3,
        Some("control.advertise[2]"),
        "control.EXAMPLE.com is listed twice (also control.advertise[0], line 3)",
    );
    expect_error(
        &with("[3]"),
        3,
        Some("control.advertise[0]"),
        "invalid type: integer `3`, expected an IP address or DNS name string",
    );
    expect_error(
        &with("\"198.18.0.10\""),
        3,
        Some("control.advertise"),
        "expected an array of IP addresses or DNS names",
    );
    let ok = parse(&with("[\"localhost\", \"CONTROL-1.example\", \"::1\"]")).unwrap();
    assert_eq!(ok.advertise.len(), 3);
}

#[test]
fn listen_store_and_path_errors() {
    let listen = Some("control.listen");
    expect_error(&minimal("listen = \"0.0.0.0\""), 4, listen, "has no port");
    expect_error(&minimal("listen = \"0.0.0.0:0\""), 4, listen, "port 0");
    expect_error(
        &minimal("listen = \"0.0.0.0:70000\""),
        4,
        listen,
        "invalid port",
    );
    expect_error(
        &minimal("listen = \"fd00::1:99999\""),
        4,
        listen,
        "brackets",
    );
    expect_error(&minimal("listen = \"::1:7443\""), 4, listen, "has no port"); // an IPv6 address
    expect_error(
        &minimal("listen = \"control.example:7443\""),
        4,
        listen,
        "put names in advertise",
    );
    let store = Some("control.store");
    expect_error(
        &minimal("store = \"etcd\""),
        4,
        store,
        "store \"etcd\" is not supported yet; valid values: \"embedded\"",
    );
    expect_error(
        &minimal("store = \"sqlite\""),
        4,
        store,
        "unknown store \"sqlite\"; valid values: \"embedded\"",
    );
    expect_error(
        &minimal("state_dir = \"\""),
        4,
        Some("control.state_dir"),
        "empty",
    );
    expect_error(
        &minimal("audit_log = \"\""),
        4,
        Some("control.audit_log"),
        "empty",
    );
}

#[test]
fn unknown_fields_and_shapes() {
    let shown = expect_error(
        &minimal("listen_addr = \"0.0.0.0:7443\""),
        4,
        Some("control"),
        "unknown field `listen_addr`, expected one of `listen`",
    );
    assert!(
        shown.starts_with(&format!("{ORIGIN}:4:1: control: ")),
        "{shown}"
    );
    expect_error(
        &minimal("[agent]\nname = \"a\""),
        4,
        None,
        "unknown field `agent`",
    );
    let err = parse("").unwrap_err();
    assert_eq!(err.field, None, "{err}");
    assert!(err.message.contains("missing field `control`"), "{err}");
    expect_error(
        "control = 3\n",
        1,
        Some("control"),
        "expected a [control] table",
    );
    expect_error(
        "[[control]]\ncluster_cidr = \"10.42.0.0/16\"\nadvertise = [\"a.example\"]\n",
        1,
        Some("control"),
        "not [[control]]",
    );
    let err = parse("[control]\ncluster_cidr = \"10.42.0.0/16\nadvertise = []\n").unwrap_err();
    assert_eq!(err.line, Some(2), "{err}");
}

#[test]
fn load_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("control.toml");
    std::fs::write(&path, FULL).unwrap();
    assert_eq!(ControlConfig::load(&path).unwrap(), parse(FULL).unwrap());
    std::fs::write(&path, minimal("host_prefix = 12")).unwrap();
    let err = ControlConfig::load(&path).unwrap_err();
    assert!(
        err.to_string()
            .starts_with(&format!("{}:4:15: control.host_prefix: ", path.display())),
        "{err}"
    );
    let missing = dir.path().join("missing.toml");
    let err = ControlConfig::load(&missing).unwrap_err();
    assert_eq!(err.path, missing);
    assert!(err.message.starts_with("cannot read the file"), "{err}");
}

#[test]
fn control_urls() {
    for ok in [
        "https://198.18.0.10:7443",
        "https://[fd00::10]:7443",
        "https://control.example.com:443",
    ] {
        let url: ControlUrl = ok.parse().unwrap();
        assert_eq!(url.to_string(), ok);
    }
    let url: ControlUrl = "https://control.example.com:7443/".parse().unwrap();
    assert_eq!(url.port(), 7443);
    assert_eq!(
        url.host(),
        &Host::Dns("control.example.com".parse().unwrap())
    );
    assert_eq!(ControlUrl::new(url.host().clone(), 0), None);
    for (bad, needle) in [
        (
            "http://198.18.0.10:7443",
            "uses http; the control plane only speaks https",
        ),
        ("ftp://198.18.0.10:7443", "has scheme \"ftp\""),
        ("198.18.0.10:7443", "does not start with https://"),
        ("https://198.18.0.10", "has no port"),
        ("https://198.18.0.10:0", "has port 0"),
        ("https://198.18.0.10:http", "invalid port"),
        ("https://198.18.0.10:7443/api", "has a path"),
        ("https://admin@198.18.0.10:7443", "user information"),
        ("https://fd00::10:7443", "put an IPv6 address in brackets"),
        ("https://[fd00::10:7443", "no ']'"),
        ("https://[zz::1]:7443", "not an IPv6 address"),
        (
            "https://bad_host:7443",
            "the host \"bad_host\" contains '_'",
        ),
        ("https://:7443", "the name is empty"),
    ] {
        let err = bad.parse::<ControlUrl>().expect_err(bad).to_string();
        assert!(err.contains(needle), "{bad}: {err:?} lacks {needle:?}");
    }
}

// ---- admin.toml ----

const ADMIN_ORIGIN: &str = "/root/.wgmesh/admin.toml";
/// A real self-signed certificate (`openssl req -x509 -newkey ec -pkeyopt
/// ec_paramgen_curve:P-256 -nodes -subj /CN=wgmesh-ca -days 3650`); its DER's SHA-256 is
/// `CA_SHA256` (`openssl x509 -outform der | sha256sum`).
const CA_PEM: &str = "-----BEGIN CERTIFICATE-----
MIIBfTCCASOgAwIBAgIUPMK3TvVDLOHpxzzcufyN7WelwpgwCgYIKoZIzj0EAwIw
FDESMBAGA1UEAwwJd2dtZXNoLWNhMB4XDTI2MTEyODE2NTgyMFoXDTM2MTEyNTE2
NTgyMFowFDESMBAGA1UEAwwJd2dtZXNoLWNhMFkwEwYHKoZIzj0CAQYIKoZIzj0D
AQcDQgAENbjPFpDauoMD5q/yUai6dnIP/FVObYB0wUBL8AxPUiKdWviDpNONxWv9
3a5ONcV+jjSq47csIW8swETgwjGtV6NTMFEwHQYDVR0OBBYEFPqG0jzQM323w6RY
a4FFeNU+fN8/MB8GA1UdIwQYMBaAFPqG0jzQM323w6RYa4FFeNU+fN8/MA8GA1Ud
EwEB/wQFMAMBAf8wCgYIKoZIzj0EAwIDSAAwRQIgGOWy9fV2AJpZybFGOJaY98wt
HDWGewNFi/XdfFNIhwQCIQCLBuXPu2v/fja5pAziYsQiYFIZlCqhy/q6qy/XlPYi
7A==
-----END CERTIFICATE-----
";
const CA_SHA256: &str = "5930f9cea47a133aaf2690ab30b2dbdd99e8e632cc5a1524d89df2a52d74fd42";
const ADMIN_TOKEN: &str = "WGMA1-AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8";

fn admin_text(url: &str, ca: &str, token: &str) -> String {
    format!("url = \"{url}\"\nca_cert = \"\"\"\n{ca}\"\"\"\ntoken = \"{token}\"\n")
}

fn parse_admin(text: &str) -> Result<AdminFile, ConfigError> {
    AdminFile::from_toml(text, Path::new(ADMIN_ORIGIN))
}

#[track_caller]
fn admin_error(text: &str, line: usize, field: Option<&str>, needle: &str) -> String {
    let err = parse_admin(text).expect_err("the admin file should be rejected");
    let shown = err.to_string();
    assert_eq!(err.line, Some(line), "{shown}");
    assert_eq!(err.field.as_deref(), field, "{shown}");
    assert!(
        shown.starts_with(&format!("{ADMIN_ORIGIN}:{line}:")),
        "{shown}"
    );
    assert!(shown.contains(needle), "{shown:?} lacks {needle:?}");
    assert!(
        !shown.contains(&ADMIN_TOKEN[6..]),
        "leaks the token: {shown}"
    );
    assert!(err.source.is_none(), "the source may quote the token");
    shown
}

#[test]
fn admin_file_round_trips() {
    let text = admin_text("https://198.18.0.10:7443", CA_PEM, ADMIN_TOKEN);
    let admin = parse_admin(&text).unwrap();
    assert_eq!(admin.url.to_string(), "https://198.18.0.10:7443");
    assert_eq!(admin.ca_cert.pem(), CA_PEM);
    assert_eq!(admin.ca_cert.der()[0], 0x30);
    assert_eq!(admin.token.expose(), ADMIN_TOKEN);
    let written = admin.to_toml();
    assert!(
        written.contains("-----BEGIN CERTIFICATE-----\n"),
        "{written}"
    );
    assert_eq!(parse_admin(&written).unwrap(), admin, "{written}");
    // from_der writes the same PEM as a 64-column file.
    let again = CertificatePem::from_der(admin.ca_cert.der().to_vec());
    assert_eq!(again.pem(), CA_PEM);
    assert_eq!(again.digest(), admin.ca_cert.digest());
    assert_eq!(admin.ca_cert.digest().to_string(), CA_SHA256);

    // A generated file, as the control plane writes it on first start.
    let generated = AdminFile {
        url: "https://[fd00::10]:7443".parse().unwrap(),
        ca_cert: again,
        token: AdminToken::generate(),
    };
    assert_eq!(parse_admin(&generated.to_toml()).unwrap(), generated);
    let shown = format!("{generated:?}");
    assert!(shown.contains("AdminToken(<redacted>)"), "{shown}");
    assert!(!shown.contains(&generated.token.expose()[6..]), "{shown}");
}

#[test]
fn admin_file_missing_fields() {
    let text = format!("url = \"https://198.18.0.10:7443\"\ntoken = \"{ADMIN_TOKEN}\"\n");
    let err = parse_admin(&text).unwrap_err();
    assert!(
        err.message
            .starts_with("missing field `ca_cert`, expected a PEM certificate string"),
        "{err}"
    );
    assert!(err.to_string().starts_with(ADMIN_ORIGIN), "{err}");
    let text = format!("ca_cert = \"\"\"\n{CA_PEM}\"\"\"\ntoken = \"{ADMIN_TOKEN}\"\n");
    let err = parse_admin(&text).unwrap_err();
    assert!(err.message.contains("missing field `url`"), "{err}");
    let text = format!("url = \"https://198.18.0.10:7443\"\nca_cert = \"\"\"\n{CA_PEM}\"\"\"\n");
    let err = parse_admin(&text).unwrap_err();
    assert!(
        err.message
            .contains("missing field `token`, expected an admin token"),
        "{err}"
    );
    admin_error(
        &format!(
            "{}server = \"x\"\n",
            admin_text("https://a.example:1", CA_PEM, ADMIN_TOKEN)
        ),
        CA_PEM.lines().count() + 5,
        None,
        "unknown field `server`, expected one of `url`, `ca_cert`, `token`",
    );
}

#[test]
fn admin_file_bad_url() {
    let shown = admin_error(
        &admin_text("http://198.18.0.10:7443", CA_PEM, ADMIN_TOKEN),
        1,
        Some("url"),
        "uses http",
    );
    assert!(
        shown.starts_with(&format!("{ADMIN_ORIGIN}:1:7: url: ")),
        "{shown}"
    );
    admin_error(
        &admin_text("https://198.18.0.10", CA_PEM, ADMIN_TOKEN),
        1,
        Some("url"),
        "has no port",
    );
    admin_error(
        &admin_text("https://198.18.0.10:7443/x", CA_PEM, ADMIN_TOKEN),
        1,
        Some("url"),
        "has a path",
    );
}

#[test]
fn admin_file_bad_ca_cert() {
    let ca = Some("ca_cert");
    admin_error(
        &admin_text("https://a.example:1", "hello\n", ADMIN_TOKEN),
        2,
        ca,
        "is not a PEM certificate",
    );
    let two = format!("{CA_PEM}{CA_PEM}");
    admin_error(
        &admin_text("https://a.example:1", &two, ADMIN_TOKEN),
        2,
        ca,
        "contains 2 certificates",
    );
    let key = format!("{CA_PEM}-----BEGIN PRIVATE KEY-----\nMIGH\n-----END PRIVATE KEY-----\n");
    admin_error(
        &admin_text("https://a.example:1", &key, ADMIN_TOKEN),
        2,
        ca,
        "contains a private key",
    );
    let cut = CA_PEM.replace("-----END CERTIFICATE-----\n", "");
    admin_error(
        &admin_text("https://a.example:1", &cut, ADMIN_TOKEN),
        2,
        ca,
        "no -----END CERTIFICATE----- line",
    );
    let junk = CA_PEM.replace("MIIB", "M!IB");
    admin_error(
        &admin_text("https://a.example:1", &junk, ADMIN_TOKEN),
        2,
        ca,
        "base64 is invalid",
    );
    let not_der = "-----BEGIN CERTIFICATE-----\naGVsbG8=\n-----END CERTIFICATE-----\n";
    admin_error(
        &admin_text("https://a.example:1", not_der, ADMIN_TOKEN),
        2,
        ca,
        "not DER",
    );
}

#[test]
fn admin_file_bad_token() {
    let token = Some("token");
    let line = CA_PEM.lines().count() + 4;
    admin_error(
        &admin_text("https://a.example:1", CA_PEM, "WGM1-abc"),
        line,
        token,
        "this is a wgmesh join token, not an admin token",
    );
    admin_error(
        &admin_text("https://a.example:1", CA_PEM, &ADMIN_TOKEN[..48]),
        line,
        token,
        "the secret is not 43 base64url characters (found 42 characters",
    );
    // A syntax error on the token's line: no part of the token in the error.
    let text = format!("url = \"https://a.example:1\"\ntoken = \"{ADMIN_TOKEN}\n");
    admin_error(&text, 2, None, "invalid basic string");
}

#[test]
fn admin_file_load() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("admin.toml");
    let text = admin_text("https://198.18.0.10:7443", CA_PEM, ADMIN_TOKEN);
    std::fs::write(&path, &text).unwrap();
    assert_eq!(AdminFile::load(&path).unwrap(), parse_admin(&text).unwrap());
    let err = AdminFile::load(&dir.path().join("nope.toml")).unwrap_err();
    assert!(err.message.starts_with("cannot read the file"), "{err}");
}
