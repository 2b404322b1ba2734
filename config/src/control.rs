//! The control plane's files: `control.toml` ([`ControlConfig`]), which `wgmesh control
//! --config` reads, and `admin.toml` ([`AdminFile`]), which it writes on first start and the
//! admin CLI reads (`--admin FILE` or `WGMESH_ADMIN`).
//!
//! `control.toml` has one `[control]` table:
//!
//! ```toml
//! [control]
//! cluster_cidr = "10.42.0.0/16"         # required: the overlay prefix all host subnets come from
//! advertise = ["198.18.0.10"]           # required, at least one: IPs or DNS names of this server
//! listen = "0.0.0.0:7443"               # IP:port of the HTTPS API
//! state_dir = "/var/lib/wgmesh-control"
//! host_prefix = 24                      # each host gets a /24 of cluster_cidr (IPv6: /64)
//! store = "embedded"                    # a crash-safe single file in state_dir
//! audit_log = "/var/lib/wgmesh-control/audit.jsonl"   # default {state_dir}/audit.jsonl
//! ```
//!
//! The `advertise` entries go into the server certificate's subject alternative names; the
//! first one, with the port of `listen`, is the URL written to `admin.toml`
//! ([`ControlConfig::admin_url`]).
//!
//! `admin.toml` has three top-level keys, like a kubeconfig for one cluster:
//!
//! ```toml
//! url = "https://198.18.0.10:7443"
//! ca_cert = """
//! -----BEGIN CERTIFICATE-----
//! MIIB...
//! -----END CERTIFICATE-----
//! """
//! token = "WGMA1-..."                  # the admin token, see crate::token
//! ```
//!
//! Parsing follows [`crate::agent`]: a private serde shape keeps byte spans, and `from_toml`
//! turns it into validated types or a [`ConfigError`] naming the file, line, column and field.
//! Unknown keys are errors. Only the `load` functions perform I/O (they read the one file they
//! are given).

use std::collections::HashMap;
use std::error::Error;
use std::fmt;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use toml::Spanned;

use crate::document::{read, Document};
use crate::error::ConfigError;
use crate::locate;
use crate::token::{AdminToken, CaDigest};

/// Default address of the control plane's HTTPS API.
pub const DEFAULT_CONTROL_LISTEN: &str = "0.0.0.0:7443";
/// Default directory for the control plane's state (CA, store, `admin.toml`, audit log).
pub const DEFAULT_CONTROL_STATE_DIR: &str = "/var/lib/wgmesh-control";
/// File name of the audit log inside `state_dir` when `audit_log` is not set.
pub const DEFAULT_AUDIT_LOG_NAME: &str = "audit.jsonl";
/// File name of the admin file the control plane writes inside `state_dir`.
pub const ADMIN_FILE_NAME: &str = "admin.toml";
/// Default `host_prefix` for an IPv4 `cluster_cidr`.
pub const DEFAULT_HOST_PREFIX_V4: u8 = 24;
/// Default `host_prefix` for an IPv6 `cluster_cidr`.
pub const DEFAULT_HOST_PREFIX_V6: u8 = 64;
/// Longest IPv4 host subnet: room for a gateway and one workload (as for the agent's subnet).
pub const MAX_HOST_PREFIX_V4: u8 = 30;
/// Longest IPv6 host subnet.
pub const MAX_HOST_PREFIX_V6: u8 = 126;
/// Longest DNS name, in characters (RFC 1035, without the trailing dot).
pub const MAX_DNS_NAME_LEN: usize = 253;

// ---------------------------------------------------------------------------------------------
// Value types
// ---------------------------------------------------------------------------------------------

/// Why a value in a control plane file is invalid. Messages say what would be valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ValueError(String);

impl ValueError {
    fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }
}

const DNS_RULE: &str = "expected an IP address or a DNS name such as \"control.example.com\" \
                        (labels of A-Z a-z 0-9 and '-', separated by '.')";

/// A DNS host name, validated for use in a TLS certificate: 1 to 253 characters, labels of 1 to
/// 63 characters from `A-Z a-z 0-9 -` not starting or ending with `-`, no trailing dot, no
/// wildcard, and not all-numeric at the end (which would be a mistyped IPv4 address).
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct DnsName(String);

impl DnsName {
    /// The name as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for DnsName {
    type Err = ValueError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Err(ValueError::new(format!("the name is empty; {DNS_RULE}")));
        }
        if s.starts_with('[') || s.parse::<Ipv6Addr>().is_ok() {
            return Err(ValueError::new(format!(
                "{s:?}: write IPv6 addresses without brackets or port, such as \"fd00::10\""
            )));
        }
        if s.contains(':') {
            return Err(ValueError::new(format!(
                "{s:?} has a ':'; write a name or address without a port (the port comes from \
                 listen)"
            )));
        }
        if s.contains('*') {
            return Err(ValueError::new(format!("{s:?} is a wildcard; {DNS_RULE}")));
        }
        if s.ends_with('.') && s.len() > 1 {
            return Err(ValueError::new(format!(
                "{s:?} ends with '.'; write the name without the trailing dot"
            )));
        }
        if s.len() > MAX_DNS_NAME_LEN {
            return Err(ValueError::new(format!(
                "the name is {} characters long; a DNS name has at most 253",
                s.len()
            )));
        }
        for label in s.split('.') {
            if label.is_empty() {
                return Err(ValueError::new(format!(
                    "{s:?} has an empty label (\"..\" or a leading '.'); {DNS_RULE}"
                )));
            }
            if let Some(c) = label
                .chars()
                .find(|c| !(c.is_ascii_alphanumeric() || *c == '-'))
            {
                return Err(ValueError::new(format!("{s:?} contains {c:?}; {DNS_RULE}")));
            }
            if label.len() > 63 {
                return Err(ValueError::new(format!(
                    "{s:?} has a label of {} characters; DNS labels have at most 63",
                    label.len()
                )));
            }
            if label.starts_with('-') || label.ends_with('-') {
                return Err(ValueError::new(format!(
                    "{s:?} has a label starting or ending with '-'; {DNS_RULE}"
                )));
            }
        }
        let last = s.rsplit('.').next().unwrap_or(s);
        if last.chars().all(|c| c.is_ascii_digit()) {
            return Err(ValueError::new(format!(
                "{s:?} is neither a valid IP address nor a DNS name (a name cannot end in a \
                 numeric label)"
            )));
        }
        Ok(Self(s.to_owned()))
    }
}

impl TryFrom<String> for DnsName {
    type Error = ValueError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<DnsName> for String {
    fn from(name: DnsName) -> Self {
        name.0
    }
}

impl fmt::Display for DnsName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for DnsName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DnsName({:?})", self.0)
    }
}

/// How clients reach the control plane: an IP address or a DNS name (an `advertise` entry, the
/// host of a [`ControlUrl`]). `Display` writes IPv6 addresses without brackets.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Host {
    /// An IP address: goes into the certificate as an IP subject alternative name.
    Ip(IpAddr),
    /// A DNS name: goes into the certificate as a DNS subject alternative name.
    Dns(DnsName),
}

impl FromStr for Host {
    type Err = ValueError;

    /// Parses an IP address (IPv6 without brackets) or a DNS name.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.parse::<IpAddr>() {
            Ok(ip) => Ok(Self::Ip(ip)),
            Err(_) => s.parse().map(Self::Dns),
        }
    }
}

impl TryFrom<String> for Host {
    type Error = ValueError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<Host> for String {
    fn from(host: Host) -> Self {
        host.to_string()
    }
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Ip(ip) => write!(f, "{ip}"),
            Self::Dns(name) => write!(f, "{name}"),
        }
    }
}

const URL_RULE: &str = "write https://host:port, such as \"https://198.18.0.10:7443\"";

/// The control plane's URL: always `https://host:port`, with no path.
///
/// `Display` and `FromStr` use that form (IPv6 hosts in brackets); a single trailing `/` is
/// accepted when parsing. Serde reads and writes the string.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ControlUrl {
    host: Host,
    port: u16,
}

impl ControlUrl {
    /// The URL of `host` at `port`; `None` if `port` is 0.
    pub fn new(host: Host, port: u16) -> Option<Self> {
        (port != 0).then_some(Self { host, port })
    }

    /// The host: what the server certificate must name.
    pub fn host(&self) -> &Host {
        &self.host
    }

    /// The TCP port, never 0.
    pub fn port(&self) -> u16 {
        self.port
    }
}

impl FromStr for ControlUrl {
    type Err = ValueError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let Some(rest) = s.strip_prefix("https://") else {
            let message = match s.split_once("://") {
                Some(("http", _)) => {
                    format!("{s:?} uses http; the control plane only speaks https, {URL_RULE}")
                }
                Some((scheme, _)) => format!("{s:?} has scheme {scheme:?}; {URL_RULE}"),
                None => format!("{s:?} does not start with https://; {URL_RULE}"),
            };
            return Err(ValueError::new(message));
        };
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        if authority.contains(['/', '?', '#']) {
            return Err(ValueError::new(format!(
                "{s:?} has a path; {URL_RULE} and nothing after the port"
            )));
        }
        if authority.contains('@') {
            return Err(ValueError::new(format!(
                "{s:?} has user information before the host; {URL_RULE}"
            )));
        }
        let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
            let Some((ip, after)) = bracketed.split_once(']') else {
                return Err(ValueError::new(format!(
                    "{s:?} has no ']' after the IPv6 address; {URL_RULE}"
                )));
            };
            let ip = ip.parse::<Ipv6Addr>().map_err(|_| {
                ValueError::new(format!(
                    "{s:?}: {ip:?} in brackets is not an IPv6 address; {URL_RULE}"
                ))
            })?;
            (Host::Ip(IpAddr::V6(ip)), after.strip_prefix(':'))
        } else if authority.matches(':').count() > 1 {
            return Err(ValueError::new(format!(
                "{s:?} is ambiguous; put an IPv6 address in brackets, such as \
                 \"https://[fd00::10]:7443\""
            )));
        } else {
            let (host, port) = match authority.split_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            };
            let host = host
                .parse::<Host>()
                .map_err(|e| ValueError::new(format!("{s:?}: the host {e}")))?;
            (host, port)
        };
        let Some(port) = port else {
            return Err(ValueError::new(format!("{s:?} has no port; {URL_RULE}")));
        };
        match port.parse::<u16>() {
            Ok(0) => Err(ValueError::new(format!("{s:?} has port 0; {URL_RULE}"))),
            Ok(port) => Ok(Self { host, port }),
            Err(_) => Err(ValueError::new(format!(
                "{s:?} has an invalid port {port:?}; {URL_RULE}"
            ))),
        }
    }
}

impl TryFrom<String> for ControlUrl {
    type Error = ValueError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<ControlUrl> for String {
    fn from(url: ControlUrl) -> Self {
        url.to_string()
    }
}

impl fmt::Display for ControlUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.host {
            Host::Ip(IpAddr::V6(ip)) => write!(f, "https://[{ip}]:{}", self.port),
            host => write!(f, "https://{host}:{}", self.port),
        }
    }
}

/// Which store keeps the control plane's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum StoreKind {
    /// A crash-safe single file in `state_dir`.
    #[default]
    Embedded,
}

impl StoreKind {
    /// Every accepted value, as written in the file.
    pub const ALL: &'static [Self] = &[Self::Embedded];

    /// The value as written in the file.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Embedded => "embedded",
        }
    }
}

impl FromStr for StoreKind {
    type Err = ValueError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(kind) = Self::ALL.iter().find(|k| k.as_str() == s) {
            return Ok(*kind);
        }
        let valid = Self::ALL
            .iter()
            .map(|k| format!("{:?}", k.as_str()))
            .collect::<Vec<_>>()
            .join(", ");
        let message = if s == "etcd" {
            format!("store \"etcd\" is not supported yet; valid values: {valid}")
        } else {
            format!("unknown store {s:?}; valid values: {valid}")
        };
        Err(ValueError::new(message))
    }
}

impl fmt::Display for StoreKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

const PEM_BEGIN: &str = "-----BEGIN CERTIFICATE-----";
const PEM_END: &str = "-----END CERTIFICATE-----";

/// One X.509 certificate in PEM (`-----BEGIN CERTIFICATE-----` …): the control plane's CA as
/// written in `admin.toml`.
///
/// Parsing checks the PEM armour and base64 and that the content is a DER `SEQUENCE`; it does
/// not parse the X.509 structure (rustls does that when the certificate is used). A private key
/// in the text is refused. Equality compares the DER.
#[derive(Clone)]
pub struct CertificatePem {
    pem: String,
    der: Vec<u8>,
}

impl CertificatePem {
    /// Wraps a DER certificate, writing its PEM with 64-character lines.
    pub fn from_der(der: Vec<u8>) -> Self {
        let body = STANDARD.encode(&der);
        let mut pem = String::with_capacity(body.len() + body.len() / 64 + 60);
        pem.push_str(PEM_BEGIN);
        pem.push('\n');
        for line in body.as_bytes().chunks(64) {
            // Base64 output is ASCII.
            pem.push_str(std::str::from_utf8(line).unwrap_or_default());
            pem.push('\n');
        }
        pem.push_str(PEM_END);
        pem.push('\n');
        Self { pem, der }
    }

    /// The PEM text, as given (surrounding whitespace removed, one trailing newline).
    pub fn pem(&self) -> &str {
        &self.pem
    }

    /// The DER encoding of the certificate.
    pub fn der(&self) -> &[u8] {
        &self.der
    }

    /// The SHA-256 of the DER: the digest that join tokens carry.
    pub fn digest(&self) -> CaDigest {
        CaDigest::of(&self.der)
    }
}

impl FromStr for CertificatePem {
    type Err = ValueError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.contains("PRIVATE KEY-----") {
            return Err(ValueError::new(
                "contains a private key; only the CA certificate belongs here, keep the key \
                 in the control plane's state_dir",
            ));
        }
        let count = s.matches(PEM_BEGIN).count();
        if count == 0 {
            return Err(ValueError::new(format!(
                "is not a PEM certificate; expected {PEM_BEGIN} ... {PEM_END}"
            )));
        }
        if count > 1 {
            return Err(ValueError::new(format!(
                "contains {count} certificates; expected exactly one, the CA certificate"
            )));
        }
        let start = s.find(PEM_BEGIN).unwrap_or_default() + PEM_BEGIN.len();
        let Some(len) = s[start..].find(PEM_END) else {
            return Err(ValueError::new(format!(
                "the certificate has no {PEM_END} line"
            )));
        };
        let body: String = s[start..start + len]
            .chars()
            .filter(|c| !c.is_ascii_whitespace())
            .collect();
        let der = STANDARD
            .decode(&body)
            .map_err(|e| ValueError::new(format!("the certificate's base64 is invalid: {e}")))?;
        if der.first() != Some(&0x30) {
            return Err(ValueError::new(
                "the certificate is not DER (it does not start with an ASN.1 SEQUENCE)",
            ));
        }
        let mut pem = s.trim().to_owned();
        pem.push('\n');
        Ok(Self { pem, der })
    }
}

impl PartialEq for CertificatePem {
    fn eq(&self, other: &Self) -> bool {
        self.der == other.der
    }
}

impl Eq for CertificatePem {}

impl fmt::Debug for CertificatePem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CertificatePem({:?})", self.digest())
    }
}

// ---------------------------------------------------------------------------------------------
// control.toml
// ---------------------------------------------------------------------------------------------

/// A validated `control.toml`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlConfig {
    /// Address of the HTTPS API; default `0.0.0.0:7443`. The port is not 0.
    pub listen: SocketAddr,
    /// Names and addresses of this server for its TLS certificate; at least one, no duplicates
    /// (names compared case-insensitively). The first is used in `admin.toml`'s URL.
    pub advertise: Vec<Host>,
    /// Directory for the CA, the store and `admin.toml`; default `/var/lib/wgmesh-control`.
    pub state_dir: PathBuf,
    /// The overlay prefix host subnets are taken from; host bits are zero.
    pub cluster_cidr: IpNet,
    /// Length of each host's subnet: longer than `cluster_cidr`'s prefix and at most 30 (IPv4)
    /// or 126 (IPv6); default 24 (IPv4) or 64 (IPv6).
    pub host_prefix: u8,
    /// Which store keeps the state; default [`StoreKind::Embedded`].
    pub store: StoreKind,
    /// File the audit log is appended to; default `{state_dir}/audit.jsonl`.
    pub audit_log: PathBuf,
}

impl ControlConfig {
    /// Parses and validates the TOML `text` of a control plane configuration.
    ///
    /// Pure: `origin` is only used in errors, which name it together with the line, column and
    /// field of the first problem found (in file order).
    pub fn from_toml(text: &str, origin: &Path) -> Result<Self, ConfigError> {
        let cx = Document {
            text,
            origin,
            table: Some("control"),
            expected_for: control_expected_for,
            keep_toml_source: true,
        };
        let raw: RawControlFile = toml::from_str(text).map_err(|e| cx.toml_error(e))?;
        cx.validate_control(raw)
    }

    /// Reads the file at `path` and parses it with [`ControlConfig::from_toml`].
    ///
    /// An unreadable file gives an error naming `path` and the operating system's reason.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        Self::from_toml(&read(path)?, path)
    }

    /// The URL written to `admin.toml`: the first `advertise` entry with the port of `listen`.
    ///
    /// # Panics
    ///
    /// If `advertise` is empty, which [`ControlConfig::from_toml`] never returns.
    pub fn admin_url(&self) -> ControlUrl {
        ControlUrl {
            host: self.advertise[0].clone(),
            port: self.listen.port(),
        }
    }

    /// Where the control plane writes `admin.toml`: `{state_dir}/admin.toml`.
    pub fn admin_file_path(&self) -> PathBuf {
        self.state_dir.join(ADMIN_FILE_NAME)
    }

    /// How many host subnets `cluster_cidr` holds at `host_prefix` (saturating at `u128::MAX`).
    pub fn host_subnet_count(&self) -> u128 {
        let bits = u32::from(self.host_prefix - self.cluster_cidr.prefix_len());
        1u128.checked_shl(bits).unwrap_or(u128::MAX)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawControlFile {
    control: Spanned<RawControlSection>,
}

/// Integers are read as `i64` so out-of-range values get our message, not serde's.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawControlSection {
    listen: Option<Spanned<String>>,
    advertise: Spanned<Vec<Spanned<String>>>,
    state_dir: Option<Spanned<String>>,
    cluster_cidr: Spanned<String>,
    host_prefix: Option<Spanned<i64>>,
    store: Option<Spanned<String>>,
    audit_log: Option<Spanned<String>>,
}

/// What a valid value of the field at `path` of `control.toml` looks like.
fn control_expected_for(path: &str) -> Option<&'static str> {
    let last = path.rsplit('.').next().unwrap_or(path);
    let (name, indexed) = match last.split_once('[') {
        Some((name, _)) => (name, true),
        None => (last, false),
    };
    Some(match (name, indexed) {
        ("control", false) => "a [control] table",
        ("listen", _) => "an \"IP:port\" string such as \"0.0.0.0:7443\"",
        ("advertise", false) => {
            "an array of IP addresses or DNS names such as [\"198.18.0.10\", \"control.example.com\"]"
        }
        ("advertise", true) => "an IP address or DNS name string such as \"198.18.0.10\"",
        ("state_dir", _) => "a directory path string",
        ("audit_log", _) => "a file path string",
        ("cluster_cidr", _) => "an IP prefix string such as \"10.42.0.0/16\"",
        ("host_prefix", _) => "a prefix length such as 24",
        ("store", _) => "\"embedded\"",
        _ => return None,
    })
}

// ---------------------------------------------------------------------------------------------
// admin.toml
// ---------------------------------------------------------------------------------------------

/// A validated `admin.toml`: everything the admin CLI needs to reach and trust the control plane
/// and to authenticate as admin.
///
/// `Debug` redacts the token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminFile {
    /// The control plane's URL.
    pub url: ControlUrl,
    /// The CA certificate the server's certificate must chain to; the only CA the CLI trusts.
    pub ca_cert: CertificatePem,
    /// The admin token.
    pub token: AdminToken,
}

impl AdminFile {
    /// Parses and validates the TOML `text` of an admin file.
    ///
    /// Pure: `origin` is only used in errors, which name it together with the line, column and
    /// field of the first problem found. Errors never contain the token.
    pub fn from_toml(text: &str, origin: &Path) -> Result<Self, ConfigError> {
        let cx = Document {
            text,
            origin,
            table: None,
            expected_for: admin_expected_for,
            // `toml`'s own error text quotes the offending line, which may hold the token.
            keep_toml_source: false,
        };
        let raw: RawAdminFile = toml::from_str(text).map_err(|e| cx.toml_error(e))?;
        let url = cx.check_value(&raw.url, "url", |s| s.parse::<ControlUrl>())?;
        let ca_cert = cx.check_value(&raw.ca_cert, "ca_cert", |s| s.parse::<CertificatePem>())?;
        let token = cx.check_value(&raw.token, "token", |s| {
            s.parse::<AdminToken>()
                .map_err(|e| ValueError::new(e.to_string()))
        })?;
        Ok(Self {
            url,
            ca_cert,
            token,
        })
    }

    /// Reads the file at `path` and parses it with [`AdminFile::from_toml`].
    ///
    /// An unreadable file gives an error naming `path` and the operating system's reason. The
    /// file's permissions are not checked here.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        Self::from_toml(&read(path)?, path)
    }

    /// Writes the file as TOML (the certificate as a multi-line string), such that
    /// [`AdminFile::from_toml`] gives back an equal value. The text contains the admin token:
    /// write it with mode 0600.
    pub fn to_toml(&self) -> String {
        let raw = WriteAdminFile {
            url: self.url.to_string(),
            ca_cert: self.ca_cert.pem().to_owned(),
            token: self.token.expose(),
        };
        // Plain strings are always representable in TOML.
        toml::to_string(&raw).expect("an admin file is always representable in TOML")
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAdminFile {
    url: Spanned<String>,
    ca_cert: Spanned<String>,
    token: Spanned<String>,
}

#[derive(Serialize)]
struct WriteAdminFile {
    url: String,
    ca_cert: String,
    token: String,
}

fn admin_expected_for(path: &str) -> Option<&'static str> {
    Some(match path {
        "url" => "a URL string such as \"https://198.18.0.10:7443\"",
        "ca_cert" => "a PEM certificate string (-----BEGIN CERTIFICATE----- ...)",
        "token" => "an admin token string (WGMA1-...)",
        _ => return None,
    })
}

// Checking values of this file (the shared machinery is in `document`).

impl Document<'_> {
    /// Runs `check` on a spanned value, blaming `field` at the value's position on failure.
    fn check_value<T, U, E: Error + Send + Sync + 'static>(
        &self,
        value: &Spanned<T>,
        field: &str,
        check: impl FnOnce(&T) -> Result<U, E>,
    ) -> Result<U, ConfigError> {
        check(value.get_ref()).map_err(|e| self.error(&value.span(), field, e.to_string()))
    }

    fn validate_control(&self, raw: RawControlFile) -> Result<ControlConfig, ConfigError> {
        let c = raw.control.into_inner();

        let listen = match &c.listen {
            Some(v) => self.check_value(v, "control.listen", |s| check_listen(s))?,
            None => DEFAULT_CONTROL_LISTEN
                .parse()
                .expect("the default listen address is valid"),
        };

        if c.advertise.get_ref().is_empty() {
            return Err(self.error(
                &c.advertise.span(),
                "control.advertise",
                "is empty; list at least one IP address or DNS name clients use to reach this \
                 server, such as [\"198.18.0.10\"]",
            ));
        }
        let mut advertise: Vec<Host> = Vec::with_capacity(c.advertise.get_ref().len());
        let mut seen: HashMap<String, (usize, Range<usize>)> = HashMap::new();
        for (i, v) in c.advertise.get_ref().iter().enumerate() {
            let field = format!("control.advertise[{i}]");
            let host = self.check_value(v, &field, |s| s.parse::<Host>())?;
            let key = host.to_string().to_ascii_lowercase();
            if let Some((first, span)) = seen.get(&key) {
                return Err(self.error(
                    &v.span(),
                    field,
                    format!(
                        "{host} is listed twice (also control.advertise[{first}], line {})",
                        locate::line_col(self.text, span.start).0
                    ),
                ));
            }
            seen.insert(key, (i, v.span()));
            advertise.push(host);
        }

        let state_dir = match &c.state_dir {
            Some(v) => self.check_value(v, "control.state_dir", |s| check_path(s))?,
            None => PathBuf::from(DEFAULT_CONTROL_STATE_DIR),
        };
        let audit_log = match &c.audit_log {
            Some(v) => self.check_value(v, "control.audit_log", |s| check_path(s))?,
            None => state_dir.join(DEFAULT_AUDIT_LOG_NAME),
        };
        let store = match &c.store {
            Some(v) => self.check_value(v, "control.store", |s| s.parse::<StoreKind>())?,
            None => StoreKind::default(),
        };

        let cluster_cidr =
            self.check_value(&c.cluster_cidr, "control.cluster_cidr", |s| check_prefix(s))?;
        let (default_prefix, max) = match cluster_cidr {
            IpNet::V4(_) => (DEFAULT_HOST_PREFIX_V4, MAX_HOST_PREFIX_V4),
            IpNet::V6(_) => (DEFAULT_HOST_PREFIX_V6, MAX_HOST_PREFIX_V6),
        };
        let cluster_len = cluster_cidr.prefix_len();
        if cluster_len >= max {
            return Err(self.error(
                &c.cluster_cidr.span(),
                "control.cluster_cidr",
                format!(
                    "{cluster_cidr} is too small to divide into host subnets of /{max} or \
                     shorter; use a prefix of /{} or shorter",
                    max - 1
                ),
            ));
        }
        let range = format!("{} to {max}", cluster_len + 1);
        let host_prefix = match &c.host_prefix {
            Some(v) => {
                let value = *v.get_ref();
                let field = "control.host_prefix";
                if value <= i64::from(cluster_len) {
                    return Err(self.error(
                        &v.span(),
                        field,
                        format!(
                            "{value} is not longer than cluster_cidr {cluster_cidr}; each host \
                             gets a /{value} out of the cluster, so use {range} (or a larger \
                             cluster_cidr)"
                        ),
                    ));
                }
                if value > i64::from(max) {
                    return Err(self.error(
                        &v.span(),
                        field,
                        format!(
                            "{value} is too long to leave room for a gateway and workloads in \
                             each host subnet; use {range}"
                        ),
                    ));
                }
                u8::try_from(value).expect("checked to be within 1..=126")
            }
            None if default_prefix <= cluster_len => {
                return Err(self.error(
                    &c.cluster_cidr.span(),
                    "control.cluster_cidr",
                    format!(
                        "{cluster_cidr} is not larger than a host subnet (host_prefix defaults \
                         to {default_prefix}); use a shorter cluster prefix, or set host_prefix \
                         to {range}"
                    ),
                ));
            }
            None => default_prefix,
        };

        Ok(ControlConfig {
            listen,
            advertise,
            state_dir,
            cluster_cidr,
            host_prefix,
            store,
            audit_log,
        })
    }
}

fn check_path(s: &str) -> Result<PathBuf, ValueError> {
    if s.is_empty() {
        return Err(ValueError::new(
            "the path is empty; expected a file system path",
        ));
    }
    if s.contains('\0') {
        return Err(ValueError::new("the path contains a NUL character"));
    }
    Ok(PathBuf::from(s))
}

const LISTEN_RULE: &str = "write IP:port such as \"0.0.0.0:7443\" or \"[::]:7443\"";

fn check_listen(s: &str) -> Result<SocketAddr, ValueError> {
    match s.parse::<SocketAddr>() {
        Ok(addr) if addr.port() == 0 => Err(ValueError::new(format!(
            "{s:?} has port 0; the control plane needs a fixed port that clients can be told, \
             {LISTEN_RULE}"
        ))),
        Ok(addr) => Ok(addr),
        Err(_) => {
            let message = if s.parse::<IpAddr>().is_ok() {
                format!("{s:?} has no port; {LISTEN_RULE}")
            } else if let Some((host, port)) = s.rsplit_once(':') {
                if host.contains(':') {
                    format!("{s:?} is ambiguous; put IPv6 addresses in brackets and {LISTEN_RULE}")
                } else if port.parse::<u16>().is_err() {
                    format!("{s:?} has an invalid port {port:?}; {LISTEN_RULE}")
                } else {
                    format!(
                        "{s:?} is not an IP address and port; listen takes an address (put \
                         names in advertise), {LISTEN_RULE}"
                    )
                }
            } else {
                format!("{s:?} is not an IP address and port; {LISTEN_RULE}")
            };
            Err(ValueError::new(message))
        }
    }
}

/// An IP prefix with its host bits zero.
fn check_prefix(s: &str) -> Result<IpNet, ValueError> {
    match s.parse::<IpNet>() {
        Ok(net) if net.trunc() != net => Err(ValueError::new(format!(
            "{net} has host bits set; did you mean {}?",
            net.trunc()
        ))),
        Ok(net) => Ok(net),
        Err(_) if s.parse::<IpAddr>().is_ok() => Err(ValueError::new(format!(
            "{s:?} has no prefix length; write address/length, such as \"10.42.0.0/16\""
        ))),
        Err(_) => Err(ValueError::new(format!(
            "{s:?} is not an IP prefix; expected address/length such as \"10.42.0.0/16\" or \
             \"fd42::/48\""
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        format!(
            "[control]\ncluster_cidr = \"10.42.0.0/16\"\nadvertise = [\"198.18.0.10\"]\n{extra}\n"
        )
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
    fn cluster_cidr_errors() {
        let at = |cidr: &str| {
            format!("[control]\ncluster_cidr = \"{cidr}\"\nadvertise = [\"a.example\"]\n")
        };
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
        let v6 = "[control]\ncluster_cidr = \"fd42::/48\"\nadvertise = [\"fd00::10\"]\nhost_prefix = 127\n";
        expect_error(v6, 4, field, "use 49 to 126");
    }

    #[test]
    fn advertise_errors() {
        let with = |list: &str| {
            format!("[control]\ncluster_cidr = \"10.42.0.0/16\"\nadvertise = {list}\n")
        };
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
        let text =
            format!("url = \"https://198.18.0.10:7443\"\nca_cert = \"\"\"\n{CA_PEM}\"\"\"\n");
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
    fn admin_file_bad_values() {
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
}
