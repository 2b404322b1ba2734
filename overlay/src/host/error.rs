//! Why host networking failed: [`HostError`], saying what was attempted on which link,
//! address or route, with the kernel's reason as its source.

use std::io;
use std::net::IpAddr;
use std::path::PathBuf;

use ipnet::IpNet;

/// Errors from host network setup. Netlink failures say what was attempted on which link,
/// address or route; the kernel's reason is the [`source`](std::error::Error::source).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HostError {
    /// [`HostNet::connect`](super::HostNet::connect) was called outside a tokio runtime.
    #[error("no tokio runtime to drive the netlink connection")]
    NoRuntime(#[source] tokio::runtime::TryCurrentError),
    /// The netlink socket could not be opened.
    #[error("cannot open a netlink socket")]
    Connect(#[source] io::Error),
    /// The kernel refused (or the connection failed) a netlink request.
    #[error("cannot {op} {target}")]
    Netlink {
        /// What was attempted ("create", "delete", "bring up", …).
        op: &'static str,
        /// What it was attempted on: the link, address or route, spelled as `ip` would.
        target: String,
        /// The kernel's answer.
        #[source]
        source: rtnetlink::Error,
    },
    /// A link name the kernel would reject.
    #[error("invalid interface name {name:?}: {}", fault.reason())]
    InvalidIfname {
        /// The offending name.
        name: String,
        /// Which rule it breaks.
        fault: wgmesh_config::ifname::IfnameFault,
    },
    /// A namespace name that cannot name a file in [`NETNS_DIR`](super::NETNS_DIR).
    #[error("invalid network namespace name {name:?}: {reason}")]
    InvalidNetnsName {
        /// The offending name.
        name: String,
        /// Which rule it breaks.
        reason: &'static str,
    },
    /// No named network namespace of that name.
    #[error("network namespace {name:?} not found ({})", .path.display())]
    NetnsNotFound {
        /// The namespace name.
        name: String,
        /// The path that does not exist.
        path: PathBuf,
    },
    /// The namespace file exists but could not be opened or is not a network namespace.
    #[error("cannot open network namespace {name:?} ({})", .path.display())]
    NetnsOpen {
        /// The namespace name.
        name: String,
        /// The file that was opened.
        path: PathBuf,
        /// Why it failed.
        #[source]
        source: io::Error,
    },
    /// `setns(2)` into the namespace failed.
    #[error("cannot enter network namespace {name:?}")]
    NetnsEnter {
        /// The namespace name.
        name: String,
        /// Why it failed.
        #[source]
        source: nix::errno::Errno,
    },
    /// The worker thread (or its runtime) for a namespace could not be started.
    #[error("cannot start a worker thread for network namespace {name:?}")]
    NetnsWorker {
        /// The namespace name.
        name: String,
        /// Why it failed.
        #[source]
        source: io::Error,
    },
    /// The worker thread for a namespace panicked or was cancelled (a bug).
    #[error("worker thread for network namespace {name:?} did not finish: {reason}")]
    NetnsWorkerLost {
        /// The namespace name.
        name: String,
        /// The panic message, or why the thread could not be joined.
        reason: String,
    },
    /// A step inside a namespace failed; the source says which.
    #[error("cannot configure network namespace {name:?}")]
    InNetns {
        /// The namespace name.
        name: String,
        /// The step that failed.
        #[source]
        source: Box<Self>,
    },
    /// A link that must be a bridge is something else.
    #[error("link {name:?} exists but is not a bridge (kind: {kind})")]
    NotABridge {
        /// The link name.
        name: String,
        /// Its kind as the kernel reports it ("none" for physical and loopback devices).
        kind: String,
    },
    /// A link disappeared between two steps (someone else deleted it).
    #[error("link {name:?} disappeared while being configured")]
    LinkVanished {
        /// The link name.
        name: String,
    },
    /// An address and a gateway or source address belong to different IP families.
    #[error("{prefix} and {addr} are of different address families")]
    FamilyMismatch {
        /// The prefix (route destination or workload address).
        prefix: IpNet,
        /// The address that does not match it (source or gateway).
        addr: IpAddr,
    },
    /// A sysctl could not be written.
    #[error("cannot write {}", .path.display())]
    Sysctl {
        /// The `/proc/sys` file.
        path: PathBuf,
        /// Why it failed.
        #[source]
        source: io::Error,
    },
}

impl HostError {
    pub(super) fn netlink(op: &'static str, target: String, source: rtnetlink::Error) -> Self {
        Self::Netlink { op, target, source }
    }
}

/// The errno of a netlink error reply (positive, as in `libc::ENODEV`).
pub(super) fn errno(error: &rtnetlink::Error) -> Option<i32> {
    match error {
        rtnetlink::Error::NetlinkError(message) => message.code.map(|code| -code.get()),
        _ => None,
    }
}
