//! `control.toml` ([`ControlConfig`]): the control plane's address, names, state directory,
//! cluster prefix and how it is divided into host subnets, store and audit log; and the rules
//! of each of those values.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use ipnet::IpNet;
use serde::Deserialize;
use toml::Spanned;

use super::{
    ControlUrl, Host, ValueError, ADMIN_FILE_NAME, DEFAULT_AUDIT_LOG_NAME, DEFAULT_CONTROL_LISTEN,
    DEFAULT_CONTROL_STATE_DIR, DEFAULT_HOST_PREFIX_V4, DEFAULT_HOST_PREFIX_V6, MAX_HOST_PREFIX_V4,
    MAX_HOST_PREFIX_V6,
};
use crate::document::{read, Document};
use crate::duration::parse_duration;
use crate::error::ConfigError;
use crate::locate;
use crate::path::check_path;

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
    /// Size at which the audit log rotates, in bytes: at least [`MIN_AUDIT_MAX_BYTES`];
    /// default [`DEFAULT_AUDIT_MAX_BYTES`] (64 MiB).
    pub audit_max_bytes: u64,
    /// Rotated audit log files kept (`audit.jsonl.1` ...), 0 to [`MAX_AUDIT_KEEP`]; default
    /// [`DEFAULT_AUDIT_KEEP`].
    pub audit_keep: u32,
    /// Most connections served at once, 1 to [`MAX_CONNECTIONS_LIMIT`]; default
    /// [`DEFAULT_MAX_CONNECTIONS`].
    pub max_connections: u32,
    /// Most connections one source address (IPv6: one /64) may hold, counted before TLS; 1 to
    /// `max_connections`; default [`DEFAULT_MAX_CONNECTIONS_PER_ADDRESS`].
    pub max_connections_per_address: u32,
    /// Seconds a client has to finish the TLS handshake and send its request, 1 to
    /// [`MAX_HANDSHAKE_TIMEOUT_SECS`]; default [`DEFAULT_HANDSHAKE_TIMEOUT_SECS`].
    pub handshake_timeout_secs: u32,
    /// How often each host's key is rotated, in seconds: a host whose key is this old is
    /// queued for rotation. `None` (the default): keys are rotated only when an admin asks.
    pub key_rotation_interval: Option<u64>,
    /// How long each phase of a key rotation may take, in seconds: a host asked to rotate that
    /// has not announced its new key by then keeps its old one, and an announced key is
    /// registered by then even if the host did not report that its peers moved. Default
    /// [`DEFAULT_KEY_ROTATION_GRACE_SECS`] (10 minutes).
    pub key_rotation_grace: u64,
    /// Whether every pair of hosts gets its own WireGuard preshared key (default false).
    pub preshared_keys: bool,
}

/// Default `audit_max_bytes`: 64 MiB.
pub const DEFAULT_AUDIT_MAX_BYTES: u64 = 64 * 1024 * 1024;
/// Smallest `audit_max_bytes`: room for a few lines.
pub const MIN_AUDIT_MAX_BYTES: u64 = 1024;
/// Default `audit_keep`.
pub const DEFAULT_AUDIT_KEEP: u32 = 5;
/// Largest `audit_keep`.
pub const MAX_AUDIT_KEEP: u32 = 1000;
/// Default `max_connections`.
pub const DEFAULT_MAX_CONNECTIONS: u32 = 16384;
/// Largest `max_connections`.
pub const MAX_CONNECTIONS_LIMIT: u32 = 1_000_000;
/// Default `max_connections_per_address`.
pub const DEFAULT_MAX_CONNECTIONS_PER_ADDRESS: u32 = 64;
/// Default `handshake_timeout_secs`.
pub const DEFAULT_HANDSHAKE_TIMEOUT_SECS: u32 = 10;
/// Largest `handshake_timeout_secs`.
pub const MAX_HANDSHAKE_TIMEOUT_SECS: u32 = 300;
/// Default `key_rotation_grace`: 10 minutes.
pub const DEFAULT_KEY_ROTATION_GRACE_SECS: u64 = 600;

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
    audit_max_bytes: Option<Spanned<i64>>,
    audit_keep: Option<Spanned<i64>>,
    max_connections: Option<Spanned<i64>>,
    max_connections_per_address: Option<Spanned<i64>>,
    handshake_timeout_secs: Option<Spanned<i64>>,
    key_rotation_interval: Option<Spanned<String>>,
    key_rotation_grace: Option<Spanned<String>>,
    preshared_keys: Option<bool>,
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
        ("audit_max_bytes", _) => "a size in bytes such as 67108864",
        ("audit_keep", _) => "a number of files such as 5",
        ("max_connections", _) => "a number of connections such as 16384",
        ("max_connections_per_address", _) => "a number of connections such as 64",
        ("handshake_timeout_secs", _) => "a number of seconds such as 10",
        ("key_rotation_interval", _) => "a duration string such as \"24h\"",
        ("key_rotation_grace", _) => "a duration string such as \"10m\"",
        ("preshared_keys", _) => "true or false",
        _ => return None,
    })
}

impl Document<'_> {
    fn validate_control(&self, raw: RawControlFile) -> Result<ControlConfig, ConfigError> {
        let c = raw.control.into_inner();
        let listen = match &c.listen {
            Some(v) => self.check_value(v, "control.listen", |s| check_listen(s))?,
            None => DEFAULT_CONTROL_LISTEN
                .parse()
                .expect("the default listen address is valid"),
        };
        let advertise = self.validate_advertise(&c.advertise)?;
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
        let cluster = self.validate_cluster_cidr(&c.cluster_cidr)?;
        let host_prefix = self.validate_host_prefix(&c.cluster_cidr, &cluster, &c.host_prefix)?;
        let max = i64::MAX as u64;
        let audit_max_bytes = self.validate_int(
            &c.audit_max_bytes,
            "control.audit_max_bytes",
            (MIN_AUDIT_MAX_BYTES, max),
            DEFAULT_AUDIT_MAX_BYTES,
        )?;
        let int32 = |raw, field, range: (u32, u32), default: u32| {
            let range = (u64::from(range.0), u64::from(range.1));
            self.validate_int(raw, field, range, u64::from(default))
                .map(|v| u32::try_from(v).expect("checked to be within a u32 range"))
        };
        let audit_keep = int32(
            &c.audit_keep,
            "control.audit_keep",
            (0, MAX_AUDIT_KEEP),
            DEFAULT_AUDIT_KEEP,
        )?;
        let max_connections = int32(
            &c.max_connections,
            "control.max_connections",
            (1, MAX_CONNECTIONS_LIMIT),
            DEFAULT_MAX_CONNECTIONS,
        )?;
        let max_connections_per_address = int32(
            &c.max_connections_per_address,
            "control.max_connections_per_address",
            (1, max_connections),
            DEFAULT_MAX_CONNECTIONS_PER_ADDRESS.min(max_connections),
        )?;
        let handshake_timeout_secs = int32(
            &c.handshake_timeout_secs,
            "control.handshake_timeout_secs",
            (1, MAX_HANDSHAKE_TIMEOUT_SECS),
            DEFAULT_HANDSHAKE_TIMEOUT_SECS,
        )?;
        let duration = |raw: &Option<Spanned<String>>, field: &str| {
            raw.as_ref()
                .map(|v| self.check_value(v, field, |s| parse_duration(s)))
                .transpose()
        };
        let key_rotation_interval =
            duration(&c.key_rotation_interval, "control.key_rotation_interval")?;
        let key_rotation_grace = duration(&c.key_rotation_grace, "control.key_rotation_grace")?
            .unwrap_or(DEFAULT_KEY_ROTATION_GRACE_SECS);
        Ok(ControlConfig {
            listen,
            advertise,
            state_dir,
            cluster_cidr: cluster.cidr,
            host_prefix,
            store,
            audit_log,
            audit_max_bytes,
            audit_keep,
            max_connections,
            max_connections_per_address,
            handshake_timeout_secs,
            key_rotation_interval,
            key_rotation_grace,
            preshared_keys: c.preshared_keys.unwrap_or(false),
        })
    }

    /// An optional integer `field` within `min..=max`, else `default`.
    fn validate_int(
        &self,
        raw: &Option<Spanned<i64>>,
        field: &str,
        (min, max): (u64, u64),
        default: u64,
    ) -> Result<u64, ConfigError> {
        let Some(v) = raw else {
            return Ok(default);
        };
        match u64::try_from(*v.get_ref()) {
            Ok(n) if (min..=max).contains(&n) => Ok(n),
            _ => Err(self.error(
                &v.span(),
                field,
                format!(
                    "{} is out of range; use {min} to {max} (default {default})",
                    v.get_ref()
                ),
            )),
        }
    }

    /// `advertise`: at least one host, none listed twice (names compared case-insensitively).
    fn validate_advertise(
        &self,
        raw: &Spanned<Vec<Spanned<String>>>,
    ) -> Result<Vec<Host>, ConfigError> {
        if raw.get_ref().is_empty() {
            return Err(self.error(
                &raw.span(),
                "control.advertise",
                "is empty; list at least one IP address or DNS name clients use to reach this \
                 server, such as [\"198.18.0.10\"]",
            ));
        }
        let mut advertise: Vec<Host> = Vec::with_capacity(raw.get_ref().len());
        let mut seen: HashMap<String, (usize, Range<usize>)> = HashMap::new();
        for (i, v) in raw.get_ref().iter().enumerate() {
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
        Ok(advertise)
    }

    /// `cluster_cidr`: a prefix with room for host subnets of the family's longest length.
    fn validate_cluster_cidr(&self, raw: &Spanned<String>) -> Result<Cluster, ConfigError> {
        let cidr = self.check_value(raw, "control.cluster_cidr", |s| check_prefix(s))?;
        let (default_prefix, max) = match cidr {
            IpNet::V4(_) => (DEFAULT_HOST_PREFIX_V4, MAX_HOST_PREFIX_V4),
            IpNet::V6(_) => (DEFAULT_HOST_PREFIX_V6, MAX_HOST_PREFIX_V6),
        };
        if cidr.prefix_len() >= max {
            return Err(self.error(
                &raw.span(),
                "control.cluster_cidr",
                format!(
                    "{cidr} is too small to divide into host subnets of /{max} or \
                     shorter; use a prefix of /{} or shorter",
                    max - 1
                ),
            ));
        }
        Ok(Cluster {
            cidr,
            default_prefix,
            max,
        })
    }

    /// `host_prefix`: longer than the cluster's prefix and at most the family's longest; when
    /// absent, the family's default must fit the cluster (else the cluster is to blame).
    fn validate_host_prefix(
        &self,
        raw_cidr: &Spanned<String>,
        cluster: &Cluster,
        raw: &Option<Spanned<i64>>,
    ) -> Result<u8, ConfigError> {
        let Cluster {
            cidr,
            default_prefix,
            max,
        } = *cluster;
        let cluster_len = cidr.prefix_len();
        let range = format!("{} to {max}", cluster_len + 1);
        let Some(v) = raw else {
            if default_prefix <= cluster_len {
                return Err(self.error(
                    &raw_cidr.span(),
                    "control.cluster_cidr",
                    format!(
                        "{cidr} is not larger than a host subnet (host_prefix defaults \
                         to {default_prefix}); use a shorter cluster prefix, or set host_prefix \
                         to {range}"
                    ),
                ));
            }
            return Ok(default_prefix);
        };
        let value = *v.get_ref();
        let field = "control.host_prefix";
        if value <= i64::from(cluster_len) {
            return Err(self.error(
                &v.span(),
                field,
                format!(
                    "{value} is not longer than cluster_cidr {cidr}; each host \
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
        Ok(u8::try_from(value).expect("checked to be within 1..=126"))
    }
}

/// A valid `cluster_cidr` and the host prefix lengths of its family.
#[derive(Clone, Copy)]
struct Cluster {
    cidr: IpNet,
    /// `host_prefix` when the file gives none.
    default_prefix: u8,
    /// The longest `host_prefix`.
    max: u8,
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
