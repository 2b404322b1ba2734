//! The agent's configuration file: [`AgentConfig`] with its [`AgentSection`], and either
//! [`PeerConfig`]s (static mode) or a [`ControlSection`] (control mode).
//!
//! In **static mode** the file is TOML with one `[agent]` table and any number of `[[peer]]`
//! tables:
//!
//! ```toml
//! [agent]
//! name = "host-a"                 # required
//! subnet = "10.42.1.0/24"         # required: the overlay prefix of this host's workloads
//! endpoint = "198.18.0.1:51820"   # optional: the IP:port other hosts should use
//! labels = { zone = "a" }         # optional, see crate::labels
//! private_key_file = "/var/lib/wgmesh/private.key"
//! listen_port = 51820
//! interface = "wgm0"
//! bridge = "wgmbr0"
//! mtu = 1420
//! socket = "/run/wgmesh/agent.sock"
//! state_dir = "/var/lib/wgmesh"
//! offload = true
//!
//! [[peer]]
//! name = "host-b"                 # optional
//! public_key = "3/p3fb4ZcxQHYwqHcetro79Do7qwCZun+9vYGxlRD10="
//! endpoint = "198.18.0.2:51820"   # optional
//! allowed_ips = ["10.42.2.0/24"]
//! persistent_keepalive = 25       # optional; 0 = off
//! preshared_key_file = "/var/lib/wgmesh/host-b.psk"  # optional
//! ```
//!
//! In **control mode** a `[control]` table names the control plane the agent joins; the control
//! plane assigns `subnet` and sends the peers, so the file has neither:
//!
//! ```toml
//! [agent]
//! name = "host-a"
//! endpoint = "198.18.0.1:51820"   # optional
//! labels = { zone = "a" }         # optional
//!
//! [control]
//! url = "https://198.18.0.10:7443"                  # required
//! join_token_file = "/etc/wgmesh/join-token"        # or join_token = "WGM1-...", or neither
//! ```
//!
//! An inline `join_token` is a secret: errors about it never contain it, and for a file that
//! mentions `join_token` or `WGM` the error of a toml syntax error keeps no quote of the file.
//!
//! Parsing is "parse, don't validate": `toml` fills a private serde shape (`RawAgentConfig`)
//! whose values keep their byte spans, and [`AgentConfig::from_toml`] turns it into the validated
//! types or a [`ConfigError`] naming the file, line, column and field. Unknown keys are errors.
//!
//! Only [`AgentConfig::load`] performs I/O (it reads the one file it is given); everything else
//! is pure. Key files named here are read by the agent, not by this crate.

use std::collections::{BTreeMap, HashMap};
use std::error::Error;
use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use toml::Spanned;

use crate::control::ControlUrl;
use crate::document::Document;
use crate::error::ConfigError;
use crate::ifname::{self, IfnameFault};
use crate::key::PublicKey;
use crate::labels::{self, LabelError, MAX_LABELS};
use crate::name::{check_host_name, NameFault, NAME_RULE};
use crate::token::JoinToken;

/// Default UDP port WireGuard listens on.
pub const DEFAULT_LISTEN_PORT: u16 = 51820;
/// Default name of the TUN device.
pub const DEFAULT_INTERFACE: &str = "wgm0";
/// Default name of the bridge that local workloads attach to.
pub const DEFAULT_BRIDGE: &str = "wgmbr0";
/// Default MTU of the TUN device: 1500 minus the WireGuard overhead over IPv6 (80 bytes).
pub const DEFAULT_MTU: u16 = 1420;
/// Smallest accepted MTU: the minimum IPv4 datagram every host must accept (RFC 791).
pub const MIN_MTU: u16 = 576;
/// Largest accepted MTU (jumbo frames).
pub const MAX_MTU: u16 = 9000;
/// Smallest MTU on which Linux enables IPv6 (RFC 8200 section 5).
pub const MIN_IPV6_MTU: u16 = 1280;
/// Default path of the agent's local API socket.
pub const DEFAULT_SOCKET: &str = "/run/wgmesh/agent.sock";
/// Default directory for the agent's state.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/wgmesh";
/// File name of the private key inside `state_dir` when `private_key_file` is not set.
pub const DEFAULT_PRIVATE_KEY_NAME: &str = "private.key";
pub use crate::ifname::MAX_IFNAME_LEN;
pub use crate::name::MAX_NAME_LEN;

/// A validated agent configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentConfig {
    /// The `[agent]` table: this host.
    pub agent: AgentSection,
    /// The `[[peer]]` tables, in file order. Their `allowed_ips` do not overlap each other or
    /// `agent.subnet`, and their public keys are distinct. Always empty in control mode.
    pub peers: Vec<PeerConfig>,
    /// The `[control]` table: `Some` in control mode, `None` in static mode.
    pub control: Option<ControlSection>,
}

/// The `[control]` table: the control plane this agent joins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlSection {
    /// The control plane's URL, `https://host:port`.
    pub url: ControlUrl,
    /// Where the join token comes from; `None` when the file gives none (an agent that has
    /// already joined keeps its credential in `state_dir` and needs no token).
    pub join_token: Option<JoinTokenSource>,
}

/// Where an agent's join token comes from.
///
/// `Debug` does not show the secret of an inline token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JoinTokenSource {
    /// `join_token_file`: a file holding the token (surrounding whitespace ignored), read by the
    /// agent, not by this crate. The path is kept as written.
    File(PathBuf),
    /// `join_token`: the token itself, written in agent.toml.
    Inline(JoinToken),
}

/// The `[agent]` table: this host's identity, devices and paths.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentSection {
    /// Host name: 1 to 63 characters from `A-Z a-z 0-9 . _ -`.
    pub name: String,
    /// File holding the base64 private key; default `{state_dir}/private.key`. The agent creates
    /// it (mode 0600) if it is missing.
    pub private_key_file: PathBuf,
    /// UDP port WireGuard listens on; default 51820, 0 lets the system pick one.
    pub listen_port: u16,
    /// Name of the TUN device; default `wgm0`. A valid Linux interface name.
    pub interface: String,
    /// Name of the bridge local workloads attach to; default `wgmbr0`. A valid Linux interface
    /// name, different from `interface`.
    pub bridge: String,
    /// MTU of the TUN device; default 1420, within 576..=9000 (at least 1280 for an IPv6
    /// subnet).
    pub mtu: u16,
    /// The overlay prefix of this host's workloads; host bits are zero, IPv4 prefixes are /30
    /// or shorter and IPv6 prefixes /126 or shorter, so there is room for the gateway and a
    /// workload. `Some` in static mode (where it is required), `None` in control mode (where
    /// the control plane assigns it).
    pub subnet: Option<IpNet>,
    /// The address other hosts should send to, `IP:port` with a non-zero port; `None` lets
    /// them learn it from this host's packets (or, in control mode, the control plane decide).
    pub endpoint: Option<SocketAddr>,
    /// This host's labels (`zone = "a"`), valid by the rules of [`crate::labels`]; may be empty.
    pub labels: BTreeMap<String, String>,
    /// Path of the local API socket; default `/run/wgmesh/agent.sock`.
    pub socket: PathBuf,
    /// Directory for the agent's state; default `/var/lib/wgmesh`.
    pub state_dir: PathBuf,
    /// Whether to use TUN/UDP offloads (GSO/GRO); default true. False forces plain per-packet
    /// I/O, for kernels or NICs where offloads misbehave.
    pub offload: bool,
}

/// One `[[peer]]` table: a remote host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerConfig {
    /// Optional display name, with the same rules as the host name.
    pub name: Option<String>,
    /// The peer's WireGuard public key.
    pub public_key: PublicKey,
    /// Where to send the first handshake, `IP:port` with a non-zero port. `None` waits for the
    /// peer to connect first.
    pub endpoint: Option<SocketAddr>,
    /// Prefixes routed to this peer and accepted from it; host bits are zero. May be empty.
    pub allowed_ips: Vec<IpNet>,
    /// Keepalive interval in seconds, 1..=65535; `None` when off (0 or absent in the file).
    pub persistent_keepalive: Option<u16>,
    /// File holding the base64 preshared key, if any.
    pub preshared_key_file: Option<PathBuf>,
}

impl AgentConfig {
    /// Parses and validates the TOML `text` of an agent configuration.
    ///
    /// Pure: `origin` is only used in errors, which name it together with the line, column and
    /// field of the first problem found (in file order). Errors never contain an inline join
    /// token.
    pub fn from_toml(text: &str, origin: &Path) -> Result<Self, ConfigError> {
        let cx = Document {
            text,
            origin,
            table: Some("agent"),
            expected_for,
            // `toml`'s own error text quotes the offending line, which may hold the join token
            // (also under a misspelt key).
            keep_toml_source: !(text.contains("join_token") || text.contains("WGM")),
        };
        let raw: RawAgentConfig = toml::from_str(text).map_err(|e| {
            let mut error = cx.toml_error(e);
            // `Document` explains `[[agent]]`; explain `[[control]]` the same way.
            if error
                .field
                .as_deref()
                .is_some_and(|f| f == "control" || f.starts_with("control["))
                && (error.message.starts_with("invalid type: map")
                    || error.message.starts_with("invalid type: sequence"))
            {
                error.field = Some("control".to_owned());
                error.message =
                    "found an array of tables; write one [control] table, not [[control]]".into();
            }
            error
        })?;
        cx.validate(raw)
    }

    /// Reads the file at `path` and parses it with [`AgentConfig::from_toml`].
    ///
    /// An unreadable file gives an error naming `path` and the operating system's reason.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigError::new(path, format!("cannot read the file: {e}")).with_source(e)
        })?;
        Self::from_toml(&text, path)
    }

    /// The peer with public key `key`, if any.
    pub fn peer_by_key(&self, key: &PublicKey) -> Option<&PeerConfig> {
        self.peers.iter().find(|p| p.public_key == *key)
    }

    /// Writes the configuration as TOML, with every `[agent]` key explicit, such that
    /// [`AgentConfig::from_toml`] gives back an equal value.
    ///
    /// An inline join token is written in full: write the text with mode 0600. Paths that are
    /// not valid UTF-8 are written lossily.
    pub fn to_toml(&self) -> String {
        let raw = RawAgentConfig::from(self);
        // Serializing plain strings, integers and booleans into TOML cannot fail.
        toml::to_string(&raw).expect("an agent config is always representable in TOML")
    }
}

/// The serde shape of the file: every value keeps its span for error messages.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAgentConfig {
    agent: Spanned<RawAgentSection>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    peer: Vec<Spanned<RawPeerConfig>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    control: Option<Spanned<RawControlSection>>,
}

/// Integers are read as `i64` so out-of-range values get our message, not serde's.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAgentSection {
    name: Spanned<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    private_key_file: Option<Spanned<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    listen_port: Option<Spanned<i64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    interface: Option<Spanned<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    bridge: Option<Spanned<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    mtu: Option<Spanned<i64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    subnet: Option<Spanned<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    endpoint: Option<Spanned<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    socket: Option<Spanned<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    state_dir: Option<Spanned<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    offload: Option<Spanned<bool>>,
    /// Last, so `to_toml` can write it as an `[agent.labels]` table after the plain values.
    #[serde(skip_serializing_if = "Option::is_none")]
    labels: Option<Spanned<BTreeMap<Spanned<String>, Spanned<String>>>>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawControlSection {
    url: Spanned<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    join_token: Option<Spanned<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    join_token_file: Option<Spanned<String>>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPeerConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<Spanned<String>>,
    public_key: Spanned<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    endpoint: Option<Spanned<String>>,
    #[serde(default)]
    allowed_ips: Vec<Spanned<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    persistent_keepalive: Option<Spanned<i64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    preshared_key_file: Option<Spanned<String>>,
}

/// Spans are meaningless when writing; use an empty one.
fn unspanned<T>(value: T) -> Spanned<T> {
    Spanned::new(0..0, value)
}

fn path_string(path: &Path) -> Spanned<String> {
    unspanned(path.to_string_lossy().into_owned())
}

impl From<&AgentConfig> for RawAgentConfig {
    fn from(config: &AgentConfig) -> Self {
        let a = &config.agent;
        let agent = RawAgentSection {
            name: unspanned(a.name.clone()),
            private_key_file: Some(path_string(&a.private_key_file)),
            listen_port: Some(unspanned(a.listen_port.into())),
            interface: Some(unspanned(a.interface.clone())),
            bridge: Some(unspanned(a.bridge.clone())),
            mtu: Some(unspanned(a.mtu.into())),
            subnet: a.subnet.map(|s| unspanned(s.to_string())),
            endpoint: a.endpoint.map(|e| unspanned(e.to_string())),
            socket: Some(path_string(&a.socket)),
            state_dir: Some(path_string(&a.state_dir)),
            offload: Some(unspanned(a.offload)),
            labels: (!a.labels.is_empty()).then(|| {
                unspanned(
                    a.labels
                        .iter()
                        .map(|(k, v)| (unspanned(k.clone()), unspanned(v.clone())))
                        .collect(),
                )
            }),
        };
        let control = config.control.as_ref().map(|c| {
            let (join_token, join_token_file) = match &c.join_token {
                Some(JoinTokenSource::Inline(token)) => (Some(unspanned(token.expose())), None),
                Some(JoinTokenSource::File(path)) => (None, Some(path_string(path))),
                None => (None, None),
            };
            unspanned(RawControlSection {
                url: unspanned(c.url.to_string()),
                join_token,
                join_token_file,
            })
        });
        let peer = config
            .peers
            .iter()
            .map(|p| {
                unspanned(RawPeerConfig {
                    name: p.name.clone().map(unspanned),
                    public_key: unspanned(p.public_key.to_string()),
                    endpoint: p.endpoint.map(|e| unspanned(e.to_string())),
                    allowed_ips: p
                        .allowed_ips
                        .iter()
                        .map(|ip| unspanned(ip.to_string()))
                        .collect(),
                    persistent_keepalive: p.persistent_keepalive.map(|k| unspanned(k.into())),
                    preshared_key_file: p.preshared_key_file.as_deref().map(path_string),
                })
            })
            .collect();
        Self {
            agent: unspanned(agent),
            peer,
            control,
        }
    }
}

/// Why a single value is invalid; [`Cx::invalid`] adds where.
struct Invalid {
    message: String,
    source: Option<Box<dyn Error + Send + Sync + 'static>>,
}

impl Invalid {
    fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            source: None,
        }
    }

    fn with_source(mut self, source: impl Error + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(source));
        self
    }
}

impl Document<'_> {
    fn invalid(
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
    fn check<T, U>(
        &self,
        value: &Spanned<T>,
        field: &str,
        check: impl FnOnce(&T) -> Result<U, Invalid>,
    ) -> Result<U, ConfigError> {
        check(value.get_ref()).map_err(|invalid| self.invalid(&value.span(), field, invalid))
    }

    fn validate(&self, raw: RawAgentConfig) -> Result<AgentConfig, ConfigError> {
        let agent_span = raw.agent.span();
        let a = raw.agent.into_inner();

        let name = self.check(&a.name, "agent.name", |s| check_name(s))?;
        let listen_port = match &a.listen_port {
            Some(v) => self.check(v, "agent.listen_port", |&v| {
                to_u16(
                    v,
                    0,
                    u16::MAX,
                    "use a UDP port from 0 to 65535 (0 lets the system pick one)",
                )
            })?,
            None => DEFAULT_LISTEN_PORT,
        };
        let interface = match &a.interface {
            Some(v) => self.check(v, "agent.interface", |s| check_ifname(s))?,
            None => DEFAULT_INTERFACE.to_owned(),
        };
        let bridge = match &a.bridge {
            Some(v) => self.check(v, "agent.bridge", |s| check_ifname(s))?,
            None => DEFAULT_BRIDGE.to_owned(),
        };
        let mtu = match &a.mtu {
            Some(v) => self.check(v, "agent.mtu", |&v| {
                to_u16(v, MIN_MTU, MAX_MTU, "use 576 to 9000")
            })?,
            None => DEFAULT_MTU,
        };
        let control = match &raw.control {
            Some(c) => Some(self.validate_control_section(c.get_ref())?),
            None => None,
        };
        let subnet = match (&a.subnet, &control) {
            (Some(v), None) => Some(self.check(v, "agent.subnet", |s| check_subnet(s))?),
            (Some(v), Some(_)) => {
                return Err(self.error(
                    &v.span(),
                    "agent.subnet",
                    "the subnet is given by the control plane in control mode (there is a \
                     [control] table); remove it",
                ))
            }
            (None, None) => {
                return Err(self.error(
                    &agent_span,
                    "agent",
                    format!(
                        "missing field `subnet`, expected {}; or add a [control] table to join a \
                         control plane, which assigns it",
                        SUBNET_EXPECTED
                    ),
                ))
            }
            (None, Some(_)) => None,
        };
        let endpoint = match &a.endpoint {
            Some(v) => Some(self.check(v, "agent.endpoint", |s| check_endpoint(s))?),
            None => None,
        };
        let socket = match &a.socket {
            Some(v) => self.check(v, "agent.socket", |s| check_path(s))?,
            None => PathBuf::from(DEFAULT_SOCKET),
        };
        let state_dir = match &a.state_dir {
            Some(v) => self.check(v, "agent.state_dir", |s| check_path(s))?,
            None => PathBuf::from(DEFAULT_STATE_DIR),
        };
        let private_key_file = match &a.private_key_file {
            Some(v) => self.check(v, "agent.private_key_file", |s| check_path(s))?,
            None => state_dir.join(DEFAULT_PRIVATE_KEY_NAME),
        };
        let offload = a.offload.as_ref().is_none_or(|v| *v.get_ref());

        if interface == bridge {
            // Blame whichever of the two the file sets (the bridge if both).
            let (span, field) = match (&a.bridge, &a.interface) {
                (Some(v), _) => (v.span(), "agent.bridge"),
                (None, Some(v)) => (v.span(), "agent.interface"),
                (None, None) => (agent_span, "agent"),
            };
            return Err(self.error(
                &span,
                field,
                format!(
                    "interface and bridge are both {interface:?}; they must be different devices"
                ),
            ));
        }
        let labels = match &a.labels {
            Some(v) => self.validate_agent_labels(v)?,
            None => BTreeMap::new(),
        };
        if let Some(subnet) = subnet.filter(|s| s.addr().is_ipv6() && mtu < MIN_IPV6_MTU) {
            let (span, field) = match (&a.mtu, &a.subnet) {
                (Some(v), _) => (v.span(), "agent.mtu"),
                (None, Some(v)) => (v.span(), "agent.subnet"),
                (None, None) => (agent_span, "agent"),
            };
            return Err(self.error(
                &span,
                field,
                format!("mtu {mtu} is too small for the IPv6 subnet {subnet}; use 1280 to 9000"),
            ));
        }

        let agent = AgentSection {
            name,
            private_key_file,
            listen_port,
            interface,
            bridge,
            mtu,
            subnet,
            endpoint,
            labels,
            socket,
            state_dir,
            offload,
        };

        if let (Some(_), Some(first)) = (&control, raw.peer.first()) {
            return Err(self.error(
                &first.span(),
                "peer[0]",
                "[[peer]] tables are given by the control plane in control mode (there is a \
                 [control] table); remove them",
            ));
        }

        let mut peers: Vec<PeerConfig> = Vec::with_capacity(raw.peer.len());
        // Where each key and allowed prefix was first seen, to point at both ends of a clash.
        let mut keys: HashMap<PublicKey, (usize, Range<usize>)> = HashMap::new();
        let mut prefixes: Vec<(IpNet, String, Range<usize>)> = Vec::new();
        for (i, raw_peer) in raw.peer.iter().enumerate() {
            let p = raw_peer.get_ref();
            let field = |name: &str| format!("peer[{i}].{name}");

            let name = match &p.name {
                Some(v) => Some(self.check(v, &field("name"), |s| check_name(s))?),
                None => None,
            };
            let public_key = self.check(&p.public_key, &field("public_key"), |s| {
                s.parse::<PublicKey>().map_err(|e| {
                    Invalid::new(format!("{s:?} is not a public key: {e}")).with_source(e)
                })
            })?;
            if let Some((first, span)) = keys.get(&public_key) {
                return Err(self.error(
                    &p.public_key.span(),
                    field("public_key"),
                    format!(
                        "{} is also the key of peer[{first}] (line {}); each peer needs its own key",
                        public_key.short(),
                        self.line(span)
                    ),
                ));
            }
            keys.insert(public_key, (i, p.public_key.span()));
            let endpoint = match &p.endpoint {
                Some(v) => Some(self.check(v, &field("endpoint"), |s| check_endpoint(s))?),
                None => None,
            };
            let mut allowed_ips = Vec::with_capacity(p.allowed_ips.len());
            let first_of_peer = prefixes.len();
            for (j, v) in p.allowed_ips.iter().enumerate() {
                let here = field(&format!("allowed_ips[{j}]"));
                let net = self.check(v, &here, |s| check_prefix(s))?;
                if let Some(subnet) = subnet.filter(|subnet| overlaps(&net, subnet)) {
                    return Err(self.error(
                        &v.span(),
                        here,
                        format!(
                            "{net} overlaps agent.subnet {subnet}; a peer's allowed IPs must lie \
                             outside this host's own subnet"
                        ),
                    ));
                }
                // Only other peers' prefixes: overlaps within one peer are redundant, not
                // ambiguous.
                if let Some((other, other_field, other_span)) = prefixes[..first_of_peer]
                    .iter()
                    .find(|(other, _, _)| overlaps(&net, other))
                {
                    return Err(self.error(
                        &v.span(),
                        here,
                        format!(
                            "{net} overlaps {other_field} {other} (line {}); the allowed IPs of \
                             different peers must not overlap",
                            self.line(other_span)
                        ),
                    ));
                }
                prefixes.push((net, here, v.span()));
                allowed_ips.push(net);
            }
            let persistent_keepalive = match &p.persistent_keepalive {
                Some(v) => {
                    let secs = self.check(v, &field("persistent_keepalive"), |&v| {
                        to_u16(v, 0, u16::MAX, "use 1 to 65535 seconds, or 0 for off")
                    })?;
                    (secs != 0).then_some(secs)
                }
                None => None,
            };
            let preshared_key_file = match &p.preshared_key_file {
                Some(v) => Some(self.check(v, &field("preshared_key_file"), |s| check_path(s))?),
                None => None,
            };
            peers.push(PeerConfig {
                name,
                public_key,
                endpoint,
                allowed_ips,
                persistent_keepalive,
                preshared_key_file,
            });
        }

        Ok(AgentConfig {
            agent,
            peers,
            control,
        })
    }

    /// The `[agent]` labels: each key and value by [`crate::labels`], blamed on
    /// `agent.labels.<key>`, then their number.
    fn validate_agent_labels(
        &self,
        raw: &Spanned<BTreeMap<Spanned<String>, Spanned<String>>>,
    ) -> Result<BTreeMap<String, String>, ConfigError> {
        // File order, so the first problem in the file is the one reported.
        let mut entries: Vec<_> = raw.get_ref().iter().collect();
        entries.sort_by_key(|(k, _)| k.span().start);
        let mut out = BTreeMap::new();
        for (k, v) in entries {
            let (key, value) = (k.get_ref(), v.get_ref());
            let field = format!("agent.labels.{key}");
            let label_error = |e: LabelError| Invalid::new(e.to_string()).with_source(e);
            self.check(k, &field, |key| labels::check_key(key).map_err(label_error))?;
            // The field names the key; the message need not.
            self.check(v, &field, |value| {
                labels::check_value(value).map_err(label_error)
            })?;
            out.insert(key.clone(), value.clone());
        }
        if out.len() > MAX_LABELS {
            let e = LabelError::TooMany { count: out.len() };
            return Err(self.invalid(
                &raw.span(),
                "agent.labels",
                Invalid::new(e.to_string()).with_source(e),
            ));
        }
        Ok(out)
    }

    /// The `[control]` table.
    fn validate_control_section(
        &self,
        c: &RawControlSection,
    ) -> Result<ControlSection, ConfigError> {
        let url = self.check(&c.url, "control.url", |s| {
            s.parse::<ControlUrl>()
                .map_err(|e| Invalid::new(e.to_string()).with_source(e))
        })?;
        let join_token = match (&c.join_token, &c.join_token_file) {
            (Some(token), Some(file)) => {
                // Blame whichever of the two comes second in the file.
                let (span, field) = if token.span().start > file.span().start {
                    (token.span(), "control.join_token")
                } else {
                    (file.span(), "control.join_token_file")
                };
                return Err(self.error(
                    &span,
                    field,
                    "join_token and join_token_file are both set; give the token in one of \
                     them, or in neither once this host has joined",
                ));
            }
            (Some(token), None) => Some(JoinTokenSource::Inline(self.check(
                token,
                "control.join_token",
                // `TokenError`s never quote the text they reject.
                |s| {
                    s.parse::<JoinToken>().map_err(|e| {
                        Invalid::new(format!("not a valid join token: {e}")).with_source(e)
                    })
                },
            )?)),
            (None, Some(file)) => Some(JoinTokenSource::File(self.check(
                file,
                "control.join_token_file",
                |s| check_path(s),
            )?)),
            (None, None) => None,
        };
        Ok(ControlSection { url, join_token })
    }
}

/// What a valid value of the field at `path` looks like, for serde's type errors.
fn expected_for(path: &str) -> Option<&'static str> {
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
        ("name", _) => "a string of 1 to 63 characters from A-Z a-z 0-9 . _ -",
        ("private_key_file" | "preshared_key_file" | "socket", _) => "a file path string",
        ("state_dir", _) => "a directory path string",
        ("listen_port", _) => "a UDP port number from 0 to 65535",
        ("interface" | "bridge", _) => "a Linux interface name string of 1 to 15 bytes",
        ("mtu", _) => "an integer from 576 to 9000",
        ("subnet", _) => SUBNET_EXPECTED,
        ("offload", _) => "true or false",
        ("public_key", _) => "a base64 public key string (44 characters, as `wg pubkey` prints)",
        ("endpoint", _) => "an \"IP:port\" string such as \"198.18.0.2:51820\"",
        ("allowed_ips", false) => "an array of IP prefix strings such as [\"10.42.2.0/24\"]",
        ("allowed_ips", true) => "an IP prefix string such as \"10.42.2.0/24\"",
        ("persistent_keepalive", _) => "an integer number of seconds from 0 (off) to 65535",
        _ => return None,
    })
}

const SUBNET_EXPECTED: &str = "an IP prefix string such as \"10.42.1.0/24\"";

/// agent.toml's messages for the host-name rule of [`crate::name`].
fn check_name(s: &str) -> Result<String, Invalid> {
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
fn check_ifname(s: &str) -> Result<String, Invalid> {
    let message = match ifname::check_ifname(s) {
        Ok(()) => return Ok(s.to_owned()),
        Err(IfnameFault::Empty) => format!("the name is empty; {IFNAME_RULE}"),
        Err(IfnameFault::Reserved) => format!("{s:?} is not allowed; {IFNAME_RULE}"),
        Err(IfnameFault::Contains(c)) => format!("{s:?} contains {c:?}; {IFNAME_RULE}"),
        Err(IfnameFault::TooLong { len }) => format!("{s:?} is {len} bytes long; {IFNAME_RULE}"),
    };
    Err(Invalid::new(message))
}

fn check_path(s: &str) -> Result<PathBuf, Invalid> {
    if s.is_empty() {
        return Err(Invalid::new(
            "the path is empty; expected a file system path",
        ));
    }
    if s.contains('\0') {
        return Err(Invalid::new("the path contains a NUL character"));
    }
    Ok(PathBuf::from(s))
}

fn to_u16(value: i64, min: u16, max: u16, rule: &str) -> Result<u16, Invalid> {
    match u16::try_from(value) {
        Ok(v) if (min..=max).contains(&v) => Ok(v),
        _ => Err(Invalid::new(format!("{value} is out of range; {rule}"))),
    }
}

/// An IP prefix with its host bits zero.
fn check_prefix(s: &str) -> Result<IpNet, Invalid> {
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

fn check_subnet(s: &str) -> Result<IpNet, Invalid> {
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
        IpNet::V4(_) => (30, "/24"),
        IpNet::V6(_) => (126, "/64"),
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

fn check_endpoint(s: &str) -> Result<SocketAddr, Invalid> {
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
fn overlaps(a: &IpNet, b: &IpNet) -> bool {
    a.contains(b) || b.contains(a)
}

#[cfg(test)]
mod tests {
    use super::*;

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
allowed_ips = ["10.42.3.0/24", "fd42:0:0:3::/64"]
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

    fn minimal(extra_agent: &str, peers: &str) -> String {
        format!("[agent]\nname = \"host-a\"\nsubnet = \"10.42.1.0/24\"\n{extra_agent}\n{peers}")
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
        assert!(a.offload);
        assert!(cfg.peers.is_empty());

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
    fn bad_names_and_numbers() {
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
            "[agent]\nname = \"{}\"\nsubnet = \"10.42.1.0/24\"\n",
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
            "[agent]\nname = \"a\"\nsubnet = \"fd42:1::/64\"\nmtu = 1000\n",
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

    /// A valid join token's text.
    fn token_text() -> String {
        JoinToken::generate(b"test CA").expose()
    }

    fn control_mode(agent_extra: &str, control_extra: &str) -> String {
        format!(
            "[agent]\nname = \"host-a\"\n{agent_extra}\n[control]\n\
             url = \"https://198.18.0.10:7443\"\n{control_extra}\n"
        )
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
        let Some(JoinTokenSource::Inline(parsed)) = &cfg.control.as_ref().unwrap().join_token
        else {
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
}
