//! Single values of agent.toml: the rule and the message for each kind of value (names,
//! interface names, paths, numbers, prefixes, the subnet, endpoints), what a valid value of each
//! field looks like (for serde's type errors), and [`Invalid`], the error a value check returns
//! before [`Document::check`] adds the file, line, column and field.

use std::error::Error;
use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::path::PathBuf;

use ipnet::IpNet;
use toml::Spanned;

use crate::control::{MAX_HOST_PREFIX_V4, MAX_HOST_PREFIX_V6};
use crate::document::Document;
use crate::error::ConfigError;
use crate::ifname::{self, IfnameFault};
use crate::name::{check_host_name, NameFault, NAME_EXPECTED, NAME_RULE};
use crate::path;

/// Why a single value is invalid; [`Document::invalid`] adds where.
pub(super) struct Invalid {
    message: String,
    source: Option<Box<dyn Error + Send + Sync + 'static>>,
}

impl Invalid {
    pub(super) fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            source: None,
        }
    }

    pub(super) fn with_source(mut self, source: impl Error + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(source));
        self
    }
}

impl Document<'_> {
    pub(super) fn invalid(
        &self,
        span: &Range<usize>,
        field: impl Into<String>,
        invalid: Invalid,
    ) -> ConfigError {
        let mut error = self.error(span, field, invalid.message);
        error.source = invalid.source;
        error
    }

    /// Runs `check` on a spanned value, blaming `field` at the value's position on failure.
    pub(super) fn check<T, U>(
        &self,
        value: &Spanned<T>,
        field: &str,
        check: impl FnOnce(&T) -> Result<U, Invalid>,
    ) -> Result<U, ConfigError> {
        check(value.get_ref()).map_err(|invalid| self.invalid(&value.span(), field, invalid))
    }
}

/// What a valid value of the field at `path` looks like, for serde's type errors.
pub(super) fn expected_for(path: &str) -> Option<&'static str> {
    // Label keys are arbitrary, so look at the path before its last part.
    if path == "agent.labels" {
        return Some("a table of label strings such as { zone = \"a\" }");
    }
    if path.starts_with("agent.labels.") {
        return Some("a label value string such as \"a\"");
    }
    match path {
        "control" => return Some("a [control] table"),
        "control.url" => return Some("a URL string such as \"https://198.18.0.10:7443\""),
        "control.join_token" => return Some("a join token string (WGM1-...)"),
        "control.join_token_file" => return Some("a file path string"),
        "docker" => return Some("a [docker] table"),
        "docker.plugin_dir" => return Some("a directory path string"),
        "docker.socket" => return Some("a file path string such as \"/var/run/docker.sock\""),
        "docker.networks" => return Some("an array of Docker network names such as [\"appnet\"]"),
        _ if path.starts_with("docker.networks[") => {
            return Some("a Docker network name string such as \"appnet\"")
        }
        _ => {}
    }
    let last = path.rsplit('.').next().unwrap_or(path);
    let (name, indexed) = match last.split_once('[') {
        Some((name, _)) => (name, true),
        None => (last, false),
    };
    Some(match (name, indexed) {
        ("agent", false) => "an [agent] table",
        ("peer", false) => "[[peer]] tables",
        ("peer", true) => "a [[peer]] table",
        ("name", _) => NAME_EXPECTED,
        ("private_key_file" | "preshared_key_file" | "socket" | "audit_log", _) => {
            "a file path string"
        }
        ("state_dir", _) => "a directory path string",
        ("listen_port", _) => "a UDP port number from 0 to 65535",
        ("interface" | "bridge", _) => "a Linux interface name string of 1 to 15 bytes",
        ("mtu", _) => "an integer from 576 to 9000",
        ("subnet", _) => SUBNET_EXPECTED,
        ("cluster_cidr", _) => CLUSTER_EXPECTED,
        ("offload", _) => "true or false",
        ("public_key", _) => "a base64 public key string (44 characters, as `wg pubkey` prints)",
        ("endpoint", _) => "an \"IP:port\" string such as \"198.18.0.2:51820\"",
        ("allowed_ips", false) => "an array of IP prefix strings such as [\"10.42.2.0/24\"]",
        ("allowed_ips", true) => "an IP prefix string such as \"10.42.2.0/24\"",
        ("persistent_keepalive", _) => "an integer number of seconds from 0 (off) to 65535",
        _ => return None,
    })
}

pub(super) const SUBNET_EXPECTED: &str = "an IP prefix string such as \"10.42.1.0/24\"";
pub(super) const CLUSTER_EXPECTED: &str =
    "an IP prefix string holding agent.subnet and every peer's allowed_ips, such as \"10.42.0.0/16\"";

/// agent.toml's messages for the host-name rule of [`crate::name`].
pub(super) fn check_name(s: &str) -> Result<String, Invalid> {
    let message = match check_host_name(s) {
        Ok(()) => return Ok(s.to_owned()),
        Err(NameFault::Empty) => format!("the name is empty; {NAME_RULE}"),
        Err(NameFault::Contains(c)) => format!("{s:?} contains {c:?}; {NAME_RULE}"),
        Err(NameFault::TooLong { len }) => format!("{s:?} is {len} characters long; {NAME_RULE}"),
    };
    Err(Invalid::new(message))
}

const IFNAME_RULE: &str =
    "use a Linux interface name of 1 to 15 bytes without '/', ':' or whitespace";

/// agent.toml's messages for the interface-name rule of [`crate::ifname`].
pub(super) fn check_ifname(s: &str) -> Result<String, Invalid> {
    let message = match ifname::check_ifname(s) {
        Ok(()) => return Ok(s.to_owned()),
        Err(IfnameFault::Empty) => format!("the name is empty; {IFNAME_RULE}"),
        Err(IfnameFault::Reserved) => format!("{s:?} is not allowed; {IFNAME_RULE}"),
        Err(IfnameFault::Contains(c)) => format!("{s:?} contains {c:?}; {IFNAME_RULE}"),
        Err(IfnameFault::TooLong { len }) => format!("{s:?} is {len} bytes long; {IFNAME_RULE}"),
    };
    Err(Invalid::new(message))
}

/// agent.toml's paths: the rule of [`crate::path`], its message, no source.
pub(super) fn check_path(s: &str) -> Result<PathBuf, Invalid> {
    path::check_path(s).map_err(|fault| Invalid::new(fault.to_string()))
}

pub(super) fn to_u16(value: i64, min: u16, max: u16, rule: &str) -> Result<u16, Invalid> {
    match u16::try_from(value) {
        Ok(v) if (min..=max).contains(&v) => Ok(v),
        _ => Err(Invalid::new(format!("{value} is out of range; {rule}"))),
    }
}

/// An IP prefix with its host bits zero.
pub(super) fn check_prefix(s: &str) -> Result<IpNet, Invalid> {
    match s.parse::<IpNet>() {
        Ok(net) if net.trunc() != net => Err(Invalid::new(format!(
            "{net} has host bits set; did you mean {}?",
            net.trunc()
        ))),
        Ok(net) => Ok(net),
        Err(e) => {
            let message = if let Ok(addr) = s.parse::<IpAddr>() {
                let max = if addr.is_ipv4() { 32 } else { 128 };
                format!(
                    "{s:?} has no prefix length; write address/length, such as \"{addr}/{max}\" \
                     for this one address"
                )
            } else {
                format!(
                    "{s:?} is not an IP prefix; expected address/length such as \"10.42.2.0/24\" \
                     or \"fd42::/64\""
                )
            };
            Err(Invalid::new(message).with_source(e))
        }
    }
}

pub(super) fn check_subnet(s: &str) -> Result<IpNet, Invalid> {
    let net = match check_prefix(s) {
        Err(Invalid { source, .. }) if s.parse::<IpAddr>().is_ok() => {
            return Err(Invalid {
                message: format!(
                    "{s:?} has no prefix length; write address/length, such as \"10.42.1.0/24\""
                ),
                source,
            });
        }
        other => other?,
    };
    let (max, example) = match net {
        IpNet::V4(_) => (MAX_HOST_PREFIX_V4, "/24"),
        IpNet::V6(_) => (MAX_HOST_PREFIX_V6, "/64"),
    };
    if net.prefix_len() > max {
        return Err(Invalid::new(format!(
            "{net} is too small for a host subnet; use a prefix of /{max} or shorter, such as \
             {example}"
        )));
    }
    Ok(net)
}

const ENDPOINT_RULE: &str = "write IP:port such as \"198.18.0.2:51820\" or \"[fd00::2]:51820\"";

pub(super) fn check_endpoint(s: &str) -> Result<SocketAddr, Invalid> {
    match s.parse::<SocketAddr>() {
        Ok(addr) if addr.port() == 0 => Err(Invalid::new(format!(
            "{s:?} has port 0, which cannot be sent to; {ENDPOINT_RULE}"
        ))),
        Ok(addr) => Ok(addr),
        Err(e) => {
            let message = if s.parse::<IpAddr>().is_ok() {
                format!("{s:?} has no port; {ENDPOINT_RULE}")
            } else if let Some((host, port)) = s.rsplit_once(':') {
                if host.parse::<std::net::Ipv6Addr>().is_ok() || host.contains(':') {
                    format!(
                        "{s:?} is ambiguous; put IPv6 addresses in brackets and {ENDPOINT_RULE}"
                    )
                } else if port.parse::<u16>().is_err() {
                    format!("{s:?} has an invalid port {port:?}; {ENDPOINT_RULE}")
                } else if host.parse::<IpAddr>().is_err() {
                    format!(
                        "{s:?} is not an IP address and port; host names are not supported yet, \
                         {ENDPOINT_RULE}"
                    )
                } else {
                    format!("{s:?} is not an IP address and port; {ENDPOINT_RULE}")
                }
            } else {
                format!("{s:?} is not an IP address and port; {ENDPOINT_RULE}")
            };
            Err(Invalid::new(message).with_source(e))
        }
    }
}

/// Two prefixes with zero host bits overlap exactly when one contains the other.
pub(super) fn overlaps(a: &IpNet, b: &IpNet) -> bool {
    a.contains(b) || b.contains(a)
}
