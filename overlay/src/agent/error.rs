//! Why the agent could not start, reload or apply a netmap: [`AgentError`], with the cause of
//! each failure kept as its source.

use std::io;
use std::path::PathBuf;

use ipnet::IpNet;
use wgmesh_config::key::KeyError;
use wgmesh_config::ConfigError;

use super::control_link::LinkError;
use super::statefile::{StateDirError, StateFileError};
use crate::api::ApiError;
use crate::datapath::audit::AuditLogError;
use crate::host::HostError;
use crate::peers::set::PeerSetError;
use crate::peers::settings::NetmapApplyError;

/// Why the agent could not start (or had to stop).
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The config file is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A key file could not be read.
    #[error("{path}: cannot read the key file")]
    KeyRead {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The host's key file could not be created.
    #[error("{path}: cannot create the key file")]
    KeyCreate {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A key file does not hold a valid key.
    #[error("{path}")]
    KeyInvalid {
        /// The file.
        path: PathBuf,
        /// What is wrong with its text.
        #[source]
        source: KeyError,
    },
    /// The rotation record cannot be removed.
    #[error("{path}: cannot remove the key rotation record")]
    KeyRecord {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The key file no longer holds the key the agent runs with.
    #[error("{path} no longer holds the key the agent runs with; restart the agent to use the file's key, or put the running key back")]
    KeyChangedOnDisk {
        /// The key file.
        path: PathBuf,
    },
    /// A rotation is already running.
    #[error("a key rotation is in progress: {retiring} is accepted until {retire_at} (Unix time); rotate again after that")]
    RotationInProgress {
        /// The key being retired.
        retiring: wgmesh_config::PublicKey,
        /// When it is (0: when the control plane ends the rotation).
        retire_at: u64,
    },
    /// A grace window past the clock's end.
    #[error("--grace is too long")]
    GraceTooLong,
    /// `key rotate --socket` on an agent that has a control plane.
    #[error("this agent has a control plane, which runs its key rotations: use `wgmesh key rotate --node NAME` (admin)")]
    RotationByControlPlane,
    /// The state directory cannot be used.
    #[error(transparent)]
    StateDir(#[from] StateDirError),
    /// The UDP port could not be bound.
    #[error("agent.listen_port: cannot bind UDP port {port}{hint}")]
    Udp {
        /// The port.
        port: u16,
        /// A hint for the common case.
        hint: &'static str,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The TUN device could not be created.
    #[error("agent.interface: cannot create TUN device {name:?}")]
    Tun {
        /// The device name.
        name: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Host networking failed.
    #[error(transparent)]
    Host(#[from] HostError),
    /// The peers could not be applied.
    #[error(transparent)]
    Peers(#[from] PeerSetError),
    /// A state file (the workloads, the netmap cache) could not be read or written.
    #[error(transparent)]
    StateFile(#[from] StateFileError),
    /// The local API socket could not be bound.
    #[error("agent.socket: {0}")]
    Api(#[from] ApiError),
    /// The Docker plugin socket could not be bound.
    #[error(transparent)]
    DockerPlugin(#[from] crate::api::docker::PluginSocketError),
    /// A signal ended the start-up before the host was set up (not a failure).
    #[error("stopped by a signal while starting")]
    Stopped,
    /// The control plane cannot be used.
    #[error(transparent)]
    Link(#[from] LinkError),
    /// A netmap cannot be applied.
    #[error(transparent)]
    Netmap(#[from] NetmapApplyError),
    /// A netmap arrived, but no cluster CIDR is pinned to check it against (cannot happen on a
    /// link `establish` returned; refused rather than applied unchecked).
    #[error("refusing a netmap: no cluster CIDR is pinned to check it against")]
    NotPinned,
    /// The subnet the control plane assigned does not fit the configured MTU.
    #[error("agent.mtu: {mtu} is too small for the IPv6 subnet {subnet} the control plane assigned; use 1280 to 9000")]
    MtuTooSmall {
        /// The MTU.
        mtu: u16,
        /// The subnet.
        subnet: IpNet,
    },
    /// A reload changed settings that need a restart.
    #[error("{fields} cannot change while the agent runs; restart it to apply")]
    NeedsRestart {
        /// The fields.
        fields: String,
    },
    /// A route that is not the agent's has the cluster CIDR as its destination.
    #[error("the cluster CIDR {cluster} is the destination of the route `{route}`, which is not the agent's; its unreachable route would take that route's place (change the cluster CIDR or remove that route)")]
    ClusterRouteTaken {
        /// The cluster CIDR.
        cluster: IpNet,
        /// The route, as `ip route` prints it.
        route: String,
    },
    /// The cluster CIDR would cut the host off if closed (too wide, or it holds the control
    /// plane's address or this host's endpoint).
    #[error("refusing to close the cluster CIDR {cluster}: {why} (the cluster CIDR must hold only overlay addresses)")]
    ClusterUnsafe {
        /// The cluster CIDR.
        cluster: IpNet,
        /// What it would take.
        why: String,
    },
    /// The data-path threads could not start.
    #[error("cannot start the data path")]
    Threads(#[source] io::Error),
    /// The audit log of refused flows cannot be opened.
    #[error("agent.audit_log: cannot open it")]
    AuditLog(#[source] AuditLogError),
}
