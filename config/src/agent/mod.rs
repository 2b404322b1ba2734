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
//! cluster_cidr = "10.42.0.0/16"   # required: the overlay prefix of all hosts; holds `subnet`
//!                                 # and every peer's allowed_ips; nothing in it leaves unencrypted
//! endpoint = "198.18.0.1:51820"   # optional: the IP:port other hosts should use
//! labels = { zone = "a" }         # optional, see crate::labels
//! private_key_file = "/var/lib/wgmesh/private.key"
//! listen_port = 51820
//! interface = "wgm0"
//! bridge = "wgmbr0"
//! mtu = 1420
//! socket = "/run/wgmesh/agent.sock"
//! state_dir = "/var/lib/wgmesh"
//! audit_log = "/var/lib/wgmesh/audit.jsonl"  # refused flows, one JSON line each
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
//!
//! This file holds the validated types and their entry points; beside it:
//! - `raw`: the serde shape of the file (read with spans, and written by `to_toml`);
//! - `validate`: the `[agent]` and `[control]` tables, and the whole file;
//! - `peers`: the `[[peer]]` tables and the clashes between them;
//! - `value`: the rule and message for each single value, and what a valid one looks like.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use ipnet::IpNet;

use crate::control::ControlUrl;
use crate::document::Document;
use crate::error::ConfigError;
use crate::key::PublicKey;
use crate::token::JoinToken;

use raw::RawAgentConfig;
use value::expected_for;

mod peers;
mod raw;
#[cfg(test)]
mod tests;
mod validate;
mod value;

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
/// File name of the audit log of refused flows inside `state_dir` when `audit_log` is not set.
pub const DEFAULT_AUDIT_LOG_NAME: &str = "audit.jsonl";
pub use crate::ifname::MAX_IFNAME_LEN;
pub use crate::name::MAX_NAME_LEN;

/// A validated agent configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentConfig {
    /// The `[agent]` table: this host.
    pub agent: AgentSection,
    /// The `[[peer]]` tables, in file order. Their `allowed_ips` lie inside `agent.cluster_cidr`
    /// and do not overlap each other or `agent.subnet`, and their public keys are distinct. Always empty in control mode.
    pub peers: Vec<PeerConfig>,
    /// The `[control]` table: `Some` in control mode, `None` in static mode.
    pub control: Option<ControlSection>,
    /// The `[docker]` table: `Some` when the agent serves Docker's network and IPAM plugin.
    pub docker: Option<DockerSection>,
}

/// Default folder Docker looks for plugin sockets in; the socket is `{plugin_dir}/wgmesh.sock`.
pub const DEFAULT_DOCKER_PLUGIN_DIR: &str = "/run/docker/plugins";
/// Default path of the Docker API socket.
pub const DEFAULT_DOCKER_SOCKET: &str = "/var/run/docker.sock";
/// The plugin's name: Docker's driver name (`-d wgmesh`) and the socket's file stem.
pub const DOCKER_PLUGIN_NAME: &str = "wgmesh";

/// The `[docker]` table: the agent serves Docker's remote network and IPAM drivers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DockerSection {
    /// Where the plugin socket goes (`{plugin_dir}/wgmesh.sock`); default `/run/docker/plugins`.
    pub plugin_dir: PathBuf,
    /// The Docker API socket, to read container labels and create `networks`; default
    /// `/var/run/docker.sock`.
    pub socket: PathBuf,
    /// Networks the agent creates on its dockerd (driver and IPAM driver `wgmesh`): valid Docker
    /// network names, distinct. May be empty.
    pub networks: Vec<String>,
}

impl DockerSection {
    /// The plugin socket: `{plugin_dir}/wgmesh.sock`.
    pub fn plugin_socket(&self) -> PathBuf {
        self.plugin_dir.join(format!("{DOCKER_PLUGIN_NAME}.sock"))
    }
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
    /// The overlay prefix of the whole cluster (static mode's `cluster_cidr`): it contains
    /// `subnet` and every peer's allowed IPs, and the agent closes it on the host (an
    /// `unreachable` route) so that nothing addressed into it leaves unencrypted. `Some` in
    /// static mode (where it is required), `None` in control mode (where the control plane
    /// gives it, and the key is refused).
    pub cluster_cidr: Option<IpNet>,
    /// The address other hosts should send to, `IP:port` with a non-zero port; `None` lets
    /// them learn it from this host's packets (or, in control mode, the control plane decide).
    pub endpoint: Option<SocketAddr>,
    /// This host's labels (`zone = "a"`), valid by the rules of [`crate::labels`]; may be empty.
    pub labels: BTreeMap<String, String>,
    /// Path of the local API socket; default `/run/wgmesh/agent.sock`.
    pub socket: PathBuf,
    /// Directory for the agent's state; default `/var/lib/wgmesh`.
    pub state_dir: PathBuf,
    /// The audit log of the flows the policy refused (one JSON line each, mode 0600); default
    /// `{state_dir}/audit.jsonl`.
    pub audit_log: PathBuf,
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
        Self::load_with_text(path).map(|(config, _)| config)
    }

    /// Like [`AgentConfig::load`], and also returns the text it parsed, for errors the agent
    /// finds later at a position in the same file ([`AgentConfig::allowed_ip_error`]).
    pub fn load_with_text(path: &Path) -> Result<(Self, String), ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigError::new(path, format!("cannot read the file: {e}")).with_source(e)
        })?;
        Self::from_toml(&text, path).map(|config| (config, text))
    }

    /// An error at `[[peer]]` number `peer`'s `allowed_ips[index]` in the TOML `text` (the file
    /// this config was parsed from): `origin:line:column: peer[i].allowed_ips[j]: message`. For
    /// checks only the agent can make, against the host's routes. Pure; if `text` no longer has
    /// that entry the error has no position.
    pub fn allowed_ip_error(
        text: &str,
        origin: &Path,
        peer: usize,
        index: usize,
        message: impl Into<String>,
    ) -> ConfigError {
        let field = format!("peer[{peer}].allowed_ips[{index}]");
        let span = toml::from_str::<RawAgentConfig>(text).ok().and_then(|raw| {
            raw.peer
                .get(peer)
                .and_then(|p| p.get_ref().allowed_ips.get(index).map(toml::Spanned::span))
        });
        let error = ConfigError::new(origin, message).with_field(field);
        match span {
            Some(span) => {
                let (line, column) = crate::locate::line_col(text, span.start);
                error.with_position(line, column)
            }
            None => error,
        }
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
