//! From the serde shape to [`AgentConfig`]: the whole file, the `[agent]` table (its values, the
//! subnet that depends on the mode, the checks across values) and the `[control]` table. The
//! `[[peer]]` tables are in `peers`.
//!
//! Problems are found in a fixed order, and the first one is reported.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::PathBuf;

use ipnet::IpNet;
use toml::Spanned;

use super::raw::{
    RawAgentConfig, RawAgentSection, RawControlSection, RawDockerSection, RawPeerConfig,
};
use super::value::{
    check_endpoint, check_ifname, check_name, check_path, check_prefix, check_subnet, to_u16,
    Invalid, CLUSTER_EXPECTED, SUBNET_EXPECTED,
};
use super::{
    AgentConfig, AgentSection, ControlSection, DockerSection, JoinTokenSource,
    DEFAULT_AUDIT_LOG_NAME, DEFAULT_BRIDGE, DEFAULT_DOCKER_PLUGIN_DIR, DEFAULT_DOCKER_SOCKET,
    DEFAULT_INTERFACE, DEFAULT_LISTEN_PORT, DEFAULT_MTU, DEFAULT_PRIVATE_KEY_NAME, DEFAULT_SOCKET,
    DEFAULT_STATE_DIR, MAX_MTU, MIN_IPV6_MTU, MIN_MTU,
};
use crate::control::ControlUrl;
use crate::document::Document;
use crate::error::ConfigError;
use crate::labels::{self, LabelError, MAX_LABELS};
use crate::token::JoinToken;

/// The `[agent]` values about this host's devices.
struct Devices {
    listen_port: u16,
    interface: String,
    bridge: String,
    mtu: u16,
}

/// The `[agent]` values about where this host is reached and keeps its files.
struct Locations {
    endpoint: Option<SocketAddr>,
    socket: PathBuf,
    state_dir: PathBuf,
    private_key_file: PathBuf,
    audit_log: PathBuf,
}

impl Document<'_> {
    pub(super) fn validate(&self, raw: RawAgentConfig) -> Result<AgentConfig, ConfigError> {
        let agent_span = raw.agent.span();
        let a = raw.agent.get_ref();

        let name = self.check(&a.name, "agent.name", |s| check_name(s))?;
        let devices = self.validate_devices(a)?;
        let control = match &raw.control {
            Some(c) => Some(self.validate_control_section(c.get_ref())?),
            None => None,
        };
        let subnet = self.validate_subnet(a, &agent_span, control.is_some())?;
        let cluster_cidr = self.validate_cluster(a, &agent_span, subnet)?;
        let locations = self.validate_locations(a)?;
        if let (Some(raw), Some(endpoint)) = (&a.endpoint, locations.endpoint) {
            self.check_endpoint_outside(&raw.span(), "agent.endpoint", endpoint, cluster_cidr)?;
        }
        let offload = a.offload.as_ref().is_none_or(|v| *v.get_ref());
        self.check_distinct_devices(a, &agent_span, &devices)?;
        let labels = match &a.labels {
            Some(v) => self.validate_agent_labels(v)?,
            None => BTreeMap::new(),
        };
        self.check_ipv6_mtu(a, &agent_span, subnet, devices.mtu)?;

        let agent = AgentSection {
            name,
            private_key_file: locations.private_key_file,
            listen_port: devices.listen_port,
            interface: devices.interface,
            bridge: devices.bridge,
            mtu: devices.mtu,
            subnet,
            cluster_cidr,
            endpoint: locations.endpoint,
            labels,
            socket: locations.socket,
            state_dir: locations.state_dir,
            audit_log: locations.audit_log,
            offload,
        };
        if control.is_some() {
            self.refuse_peers(&raw.peer)?;
        }
        let peers = self.validate_peers(&raw.peer, subnet, cluster_cidr)?;
        let docker = match &raw.docker {
            Some(d) => Some(self.validate_docker_section(d.get_ref())?),
            None => None,
        };
        Ok(AgentConfig {
            agent,
            peers,
            control,
            docker,
        })
    }

    /// `listen_port`, `interface`, `bridge` and `mtu`, or their defaults.
    fn validate_devices(&self, a: &RawAgentSection) -> Result<Devices, ConfigError> {
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
        Ok(Devices {
            listen_port,
            interface,
            bridge,
            mtu,
        })
    }

    /// `subnet`: required in static mode, refused in control mode (the control plane assigns
    /// it).
    fn validate_subnet(
        &self,
        a: &RawAgentSection,
        agent_span: &Range<usize>,
        control_mode: bool,
    ) -> Result<Option<IpNet>, ConfigError> {
        match (&a.subnet, control_mode) {
            (Some(v), false) => Ok(Some(self.check(v, "agent.subnet", |s| check_subnet(s))?)),
            (Some(v), true) => Err(self.error(
                &v.span(),
                "agent.subnet",
                "the subnet is given by the control plane in control mode (there is a \
                 [control] table); remove it",
            )),
            (None, false) => Err(self.error(
                agent_span,
                "agent",
                format!(
                    "missing field `subnet`, expected {}; or add a [control] table to join a \
                     control plane, which assigns it",
                    SUBNET_EXPECTED
                ),
            )),
            (None, true) => Ok(None),
        }
    }

    /// `cluster_cidr`: required in static mode (`subnet` is `Some`), where it must hold the
    /// subnet and may not be a default route; refused in control mode, where the control
    /// plane gives it.
    fn validate_cluster(
        &self,
        a: &RawAgentSection,
        agent_span: &Range<usize>,
        subnet: Option<IpNet>,
    ) -> Result<Option<IpNet>, ConfigError> {
        let field = "agent.cluster_cidr";
        let (raw, subnet) = match (&a.cluster_cidr, subnet) {
            (Some(v), None) => {
                return Err(self.error(
                    &v.span(),
                    field,
                    "the cluster CIDR is given by the control plane in control mode (there is \
                     a [control] table); remove it",
                ))
            }
            (None, Some(_)) => {
                return Err(self.error(
                    agent_span,
                    "agent",
                    format!(
                        "missing field `cluster_cidr`, expected {CLUSTER_EXPECTED}; every \
                         address in it is closed on this host except through the tunnel"
                    ),
                ))
            }
            (None, None) => return Ok(None),
            (Some(v), Some(subnet)) => (v, subnet),
        };
        let cluster = self.check(raw, field, |s| check_prefix(s))?;
        if cluster.prefix_len() == 0 {
            return Err(self.error(
                &raw.span(),
                field,
                format!(
                    "{cluster} would close every address of this host to all but the tunnel; \
                     use the overlay's prefix, {CLUSTER_EXPECTED}"
                ),
            ));
        }
        if !cluster.contains(&subnet) {
            let span = a.subnet.as_ref().map_or_else(|| raw.span(), Spanned::span);
            return Err(self.error(
                &span,
                "agent.subnet",
                format!(
                    "{subnet} is not inside agent.cluster_cidr {cluster}; this host's subnet \
                     must lie inside the cluster CIDR"
                ),
            ));
        }
        Ok(Some(cluster))
    }

    /// An endpoint (this host's `agent.endpoint`, or a peer's) is an underlay address: it may
    /// not lie inside the cluster CIDR. `span` and `field` are where it is written.
    pub(super) fn check_endpoint_outside(
        &self,
        span: &Range<usize>,
        field: &str,
        endpoint: SocketAddr,
        cluster: Option<IpNet>,
    ) -> Result<(), ConfigError> {
        match cluster {
            Some(cluster) if cluster.contains(&endpoint.ip()) => Err(self.error(
                span,
                field,
                format!(
                    "{endpoint} is inside agent.cluster_cidr {cluster}; an endpoint is an \
                     underlay address, outside the overlay"
                ),
            )),
            _ => Ok(()),
        }
    }

    /// `endpoint`, `socket`, `state_dir`, `private_key_file` and `audit_log`, or their defaults.
    fn validate_locations(&self, a: &RawAgentSection) -> Result<Locations, ConfigError> {
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
        let audit_log = match &a.audit_log {
            Some(v) => self.check(v, "agent.audit_log", |s| check_path(s))?,
            None => state_dir.join(DEFAULT_AUDIT_LOG_NAME),
        };
        Ok(Locations {
            endpoint,
            socket,
            state_dir,
            private_key_file,
            audit_log,
        })
    }

    /// The TUN device and the bridge must be different devices.
    fn check_distinct_devices(
        &self,
        a: &RawAgentSection,
        agent_span: &Range<usize>,
        devices: &Devices,
    ) -> Result<(), ConfigError> {
        if devices.interface != devices.bridge {
            return Ok(());
        }
        // Blame whichever of the two the file sets (the bridge if both).
        let (span, field) = match (&a.bridge, &a.interface) {
            (Some(v), _) => (v.span(), "agent.bridge"),
            (None, Some(v)) => (v.span(), "agent.interface"),
            (None, None) => (agent_span.clone(), "agent"),
        };
        Err(self.error(
            &span,
            field,
            format!(
                "interface and bridge are both {:?}; they must be different devices",
                devices.interface
            ),
        ))
    }

    /// Linux enables IPv6 only on links with an MTU of at least 1280.
    fn check_ipv6_mtu(
        &self,
        a: &RawAgentSection,
        agent_span: &Range<usize>,
        subnet: Option<IpNet>,
        mtu: u16,
    ) -> Result<(), ConfigError> {
        let Some(subnet) = subnet.filter(|s| s.addr().is_ipv6() && mtu < MIN_IPV6_MTU) else {
            return Ok(());
        };
        let (span, field) = match (&a.mtu, &a.subnet) {
            (Some(v), _) => (v.span(), "agent.mtu"),
            (None, Some(v)) => (v.span(), "agent.subnet"),
            (None, None) => (agent_span.clone(), "agent"),
        };
        Err(self.error(
            &span,
            field,
            format!("mtu {mtu} is too small for the IPv6 subnet {subnet}; use 1280 to 9000"),
        ))
    }

    /// In control mode the control plane sends the peers: any `[[peer]]` table is an error.
    fn refuse_peers(&self, peers: &[Spanned<RawPeerConfig>]) -> Result<(), ConfigError> {
        match peers.first() {
            Some(first) => Err(self.error(
                &first.span(),
                "peer[0]",
                "[[peer]] tables are given by the control plane in control mode (there is a \
                 [control] table); remove them",
            )),
            None => Ok(()),
        }
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

impl Document<'_> {
    /// The `[docker]` table: paths, and network names Docker accepts, each once.
    fn validate_docker_section(&self, d: &RawDockerSection) -> Result<DockerSection, ConfigError> {
        let plugin_dir = match &d.plugin_dir {
            Some(v) => self.check(v, "docker.plugin_dir", |s| check_path(s))?,
            None => PathBuf::from(DEFAULT_DOCKER_PLUGIN_DIR),
        };
        let socket = match &d.socket {
            Some(v) => self.check(v, "docker.socket", |s| check_path(s))?,
            None => PathBuf::from(DEFAULT_DOCKER_SOCKET),
        };
        let mut networks: Vec<String> = Vec::with_capacity(d.networks.len());
        for (i, n) in d.networks.iter().enumerate() {
            let field = format!("docker.networks[{i}]");
            let name = self.check(n, &field, |s| check_docker_network_name(s))?;
            if networks.contains(&name) {
                return Err(self.error(
                    &n.span(),
                    &field,
                    format!("the network {name:?} is listed twice; list each network once"),
                ));
            }
            networks.push(name);
        }
        Ok(DockerSection {
            plugin_dir,
            socket,
            networks,
        })
    }
}

/// A name `docker network create` accepts: a letter or digit, then letters, digits, `_`, `.` or
/// `-`; at most 64 characters here (Docker itself has no limit, its users rarely go past that).
fn check_docker_network_name(s: &str) -> Result<String, Invalid> {
    const RULE: &str = "a Docker network name is 1 to 64 characters from A-Z a-z 0-9 _ . - \
                        starting with a letter or digit, such as \"appnet\"";
    let ok = s.len() <= 64
        && s.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if ok {
        Ok(s.to_owned())
    } else {
        Err(Invalid::new(format!(
            "{s:?} is not a valid network name; {RULE}"
        )))
    }
}
