//! Why the registry refuses: [`RegistryError`], [`TokenRefused`] for a join token that cannot be
//! used, [`WorkloadRefused`] for a host's workload report, [`PolicyTestFailed`] for a policy
//! whose own tests fail.

use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;
use wgmesh_config::labels::{LabelError, Labels};
use wgmesh_config::netmap::MAX_FILTER_RULES;
use wgmesh_config::policy::{Action, Flow, HOST_LABEL};
use wgmesh_config::{HostName, PublicKey};

use super::workloads::MAX_WORKLOADS_PER_HOST;

use crate::ids::{HostId, TokenId};
use crate::ipam::IpamError;

/// Why a join token is refused; the message says which, as the issue asks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenRefused {
    /// No token has this secret.
    #[error("the join token is unknown")]
    Unknown,
    /// The token expired.
    #[error("the join token {id} expired at {expired_at} (unix seconds)")]
    Expired {
        /// The token.
        id: TokenId,
        /// When it expired.
        expired_at: u64,
    },
    /// A single-use token was already used.
    #[error("the join token {id} was already used by host {by}")]
    Used {
        /// The token.
        id: TokenId,
        /// The host that used it.
        by: HostId,
    },
    /// An admin revoked the token.
    #[error("the join token {id} was revoked")]
    Revoked {
        /// The token.
        id: TokenId,
    },
}

/// Why a request or mutation is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    /// The network was not initialised yet.
    #[error("the registry has no cluster network yet")]
    NotInitialized,
    /// The network was already initialised.
    #[error(
        "the registry's cluster network is already {cluster_cidr} with /{host_prefix} per host"
    )]
    AlreadyInitialized {
        /// The existing cluster CIDR.
        cluster_cidr: IpNet,
        /// The existing host prefix.
        host_prefix: u8,
    },
    /// The name is held by a joined host (with another key, or the same key and another
    /// credential).
    #[error(
        "the name {name} is held by host {held_by}; a host joins once and then uses its \
         credential, so an admin must remove it first (`wgmesh node remove {name}`)"
    )]
    NameTaken {
        /// The name.
        name: HostName,
        /// The host holding it.
        held_by: HostId,
    },
    /// The public key is held by a host with another name.
    #[error("the public key {} is already registered by host {held_by_name}", key.short())]
    KeyTaken {
        /// The key.
        key: PublicKey,
        /// The host holding it.
        held_by: HostId,
        /// That host's name.
        held_by_name: HostName,
    },
    /// No host has this id or name.
    #[error("no host {0}")]
    NoSuchHost(String),
    /// No token has this id.
    #[error("no join token {0}")]
    NoSuchToken(TokenId),
    /// The join token cannot be used.
    #[error(transparent)]
    Token(#[from] TokenRefused),
    /// A subnet problem (exhausted, taken, outside the CIDR).
    #[error(transparent)]
    Ipam(#[from] IpamError),
    /// An id is already in use (a mutation that does not fit the state).
    #[error("{what} id {id} is already in use")]
    IdInUse {
        /// "host" or "token".
        what: &'static str,
        /// The id.
        id: u64,
    },
    /// The credential is already another host's (credentials are chosen by agents; a clash means
    /// a copied state directory or a bug, never a coincidence).
    #[error("this credential is already host {0}'s; the agent must make a new one")]
    CredentialInUse(HostId),
    /// A host's workload report is refused (nothing of it is kept).
    #[error("host {host}'s workload report: {reason}")]
    Workloads {
        /// The reporting host.
        host: HostName,
        /// What is wrong with the report.
        reason: WorkloadRefused,
    },
    /// A policy's own `[[test]]` fails: the policy is not applied.
    #[error(transparent)]
    PolicyTest(#[from] Box<PolicyTestFailed>),
    /// A policy has more rules than an agent's filter accepts.
    #[error("the policy has {rules} rules; at most {MAX_FILTER_RULES} are accepted")]
    PolicyTooLarge {
        /// Rules given.
        rules: usize,
    },
    /// There is no policy to remove.
    #[error("no policy is applied")]
    NoPolicy,
    /// A key report (or a rotation step) is not for the phase and epoch of the host's rotation.
    #[error(
        "host {host}'s key report for epoch {epoch} is out of order: {}",
        match running {
            Some(e) => format!("its rotation running is of epoch {e}"),
            None => format!(
                "no rotation of its key is running (its key is of epoch {key_epoch}); a host \
                 reports a new key only when its netmap asks for one"
            ),
        }
    )]
    RotationOutOfOrder {
        /// The host.
        host: HostName,
        /// The epoch of the report or step.
        epoch: u64,
        /// The epoch of the host's rotation running (requested or announced), if any.
        running: Option<u64>,
        /// The epoch of the host's registered key.
        key_epoch: u64,
    },
    /// A key report that does not fit the rotation running.
    #[error("host {host}'s key report of {} is refused: {reason}", key.short())]
    KeyReportRefused {
        /// The host.
        host: HostName,
        /// The key reported.
        key: PublicKey,
        /// Why.
        reason: KeyRefusal,
    },
    /// A key reported for a host is a low-order point, which no real host has.
    #[error("host {host} reported the low-order public key {key}, which no real host has")]
    LowOrderKey {
        /// The host.
        host: HostName,
        /// The key.
        key: PublicKey,
    },
    /// A rotation would start while another runs: one runs at a time in the cluster.
    #[error("host {host}'s rotation cannot start while host {running}'s runs")]
    RotationBusy {
        /// The host whose rotation would start.
        host: HostName,
        /// The host whose rotation runs.
        running: HostName,
    },
}

/// Why a key report is refused ([`RegistryError::KeyReportRefused`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyRefusal {
    /// The key is the host's registered one: a rotation needs a new key.
    #[error("it is the host's current key; a rotation needs a new one")]
    Unchanged,
    /// Another key was announced for this rotation already.
    #[error(
        "{} was announced for this rotation already; report that key (a new key is \
         asked for at the next rotation)",
        announced.short()
    )]
    AnotherAnnounced {
        /// The key announced.
        announced: PublicKey,
    },
}

/// Why a host's workload report is refused; the message names the workload and what would be
/// valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WorkloadRefused {
    /// An address outside the host's own subnet, or a reserved one: a host can never label
    /// another host's addresses.
    #[error(
        "workload {name:?}: {ip} is not a usable address of the host's subnet {subnet} (a host \
         reports only its own workloads; the network address, the gateway{} and the broadcast \
         address are reserved)",
        gateway.map(|g| format!(" {g}")).unwrap_or_default()
    )]
    NotAssignable {
        /// The workload.
        name: String,
        /// Its address.
        ip: IpAddr,
        /// The host's subnet.
        subnet: IpNet,
        /// The host's gateway.
        gateway: Option<IpAddr>,
    },
    /// Two workloads with one address.
    #[error("workloads {first:?} and {second:?} both have the address {ip}")]
    DuplicateAddress {
        /// The address.
        ip: IpAddr,
        /// One workload.
        first: String,
        /// The other.
        second: String,
    },
    /// Two workloads with one name.
    #[error("two workloads are named {name:?}; a workload is named by its network namespace")]
    DuplicateName {
        /// The name.
        name: String,
    },
    /// A name that is no network namespace's.
    #[error(
        "workload name {name:?} is {reason}; a workload is named by its network namespace: 1 to \
         255 bytes, not \".\" or \"..\", without '/', NUL or control characters"
    )]
    Name {
        /// The name as given.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A workload sets the reserved `host` label.
    #[error(
        "workload {name:?}: the label {HOST_LABEL:?} is reserved (every endpoint carries \
         {HOST_LABEL}=<its host's name>); use another key"
    )]
    ReservedLabel {
        /// The workload.
        name: String,
    },
    /// A workload's labels break the label rules.
    #[error("workload {name:?}: {source}")]
    Label {
        /// The workload.
        name: String,
        /// What is wrong with its labels.
        source: LabelError,
    },
    /// More workloads than a host may report.
    #[error("{count} workloads is too many; a host reports at most {MAX_WORKLOADS_PER_HOST}")]
    TooMany {
        /// How many were reported.
        count: usize,
    },
}

/// A policy's `[[test]]` that its rules contradict.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{origin}:{line}: test failed: {port} from {} to {} is expected to be {}, but it is {} by \
     {by}",
    LabelText(from), LabelText(to), past(*expect), past(*got)
)]
pub struct PolicyTestFailed {
    /// The policy file's name.
    pub origin: String,
    /// The test's line in it.
    pub line: usize,
    /// The test's `from` labels.
    pub from: Labels,
    /// The test's `to` labels.
    pub to: Labels,
    /// The test's flow.
    pub port: Flow,
    /// What the test expects.
    pub expect: Action,
    /// What the policy decides.
    pub got: Action,
    /// What decided it: `rule "NAME"` or `the default`.
    pub by: String,
}

fn past(action: Action) -> &'static str {
    match action {
        Action::Allow => "allowed",
        Action::Deny => "denied",
    }
}

/// Labels as a selector is written: `{ k = "v", ... }`.
pub(crate) struct LabelText<'a>(pub(crate) &'a Labels);

impl fmt::Display for LabelText<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("{}");
        }
        f.write_str("{ ")?;
        for (i, (k, v)) in self.0.iter().enumerate() {
            let sep = if i == 0 { "" } else { ", " };
            write!(f, "{sep}{k} = {v:?}")?;
        }
        f.write_str(" }")
    }
}
