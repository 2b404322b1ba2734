//! How clients reach the control plane: a [`DnsName`] or an IP address ([`Host`], an
//! `advertise` entry), and the control plane's [`ControlUrl`], `https://host:port`.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::{ValueError, MAX_DNS_NAME_LEN};

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
    pub(super) host: Host,
    pub(super) port: u16,
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
