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
//! audit_max_bytes = 67108864            # the audit log rotates at this size (64 MiB)
//! audit_keep = 5                        # rotated files kept: audit.jsonl.1 ... .5
//! max_connections = 16384               # connections served at once
//! max_connections_per_address = 64      # per source address (IPv6: per /64), before TLS
//! handshake_timeout_secs = 10           # to finish TLS and send the request
//! key_rotation_interval = "24h"         # rotate every host's key this often (default: never)
//! key_rotation_grace = "10m"            # how long each phase of a key rotation may take
//! preshared_keys = false                # a WireGuard preshared key for every pair of hosts
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
//! turns it into validated types or a [`ConfigError`](crate::ConfigError) naming the file,
//! line, column and field. Unknown keys are errors. Only the `load` functions perform I/O (they
//! read the one file they are given).
//!
//! This file holds the defaults and [`ValueError`]; beside it:
//! - `host`: how clients reach the control plane: [`DnsName`], [`Host`], [`ControlUrl`];
//! - `cert`: the CA certificate in PEM, [`CertificatePem`];
//! - `control_file`: `control.toml`, [`ControlConfig`] and [`StoreKind`];
//! - `admin_file`: `admin.toml`, [`AdminFile`].

pub use admin_file::AdminFile;
pub use cert::CertificatePem;
pub use control_file::{
    ControlConfig, StoreKind, DEFAULT_AUDIT_KEEP, DEFAULT_AUDIT_MAX_BYTES,
    DEFAULT_HANDSHAKE_TIMEOUT_SECS, DEFAULT_KEY_ROTATION_GRACE_SECS, DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_CONNECTIONS_PER_ADDRESS, MAX_AUDIT_KEEP, MAX_CONNECTIONS_LIMIT,
    MAX_HANDSHAKE_TIMEOUT_SECS, MIN_AUDIT_MAX_BYTES,
};
pub use host::{ControlUrl, DnsName, Host};

mod admin_file;
mod cert;
mod control_file;
mod host;
#[cfg(test)]
mod tests;

// The literals behind the constants below, as macros so that `concat!` can join them.
macro_rules! default_state_dir {
    () => {
        "/var/lib/wgmesh-control"
    };
}
macro_rules! admin_file_name {
    () => {
        "admin.toml"
    };
}

/// Default address of the control plane's HTTPS API.
pub const DEFAULT_CONTROL_LISTEN: &str = "0.0.0.0:7443";
/// Default directory for the control plane's state (CA, store, `admin.toml`, audit log).
pub const DEFAULT_CONTROL_STATE_DIR: &str = default_state_dir!();
/// File name of the audit log inside `state_dir` when `audit_log` is not set.
pub const DEFAULT_AUDIT_LOG_NAME: &str = "audit.jsonl";
/// File name of the admin file the control plane writes inside `state_dir`.
pub const ADMIN_FILE_NAME: &str = admin_file_name!();
/// Where the admin CLI looks for `admin.toml` by default: [`ADMIN_FILE_NAME`] in
/// [`DEFAULT_CONTROL_STATE_DIR`].
pub const DEFAULT_ADMIN_FILE: &str = concat!(default_state_dir!(), "/", admin_file_name!());
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

/// Why a value in a control plane file is invalid. Messages say what would be valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ValueError(String);

impl ValueError {
    fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }
}
