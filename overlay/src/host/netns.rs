//! Named network namespaces: opening one (`/run/netns/NAME`, checked to be a namespace) and
//! running netlink work inside it.
//!
//! This module performs I/O: it starts a thread, moves that thread into a network namespace
//! with `setns(2)` and opens a netlink socket there. The calling thread never changes namespace.

use std::any::Any;
use std::fs::File;
use std::future::Future;
use std::io;
use std::path::Path;

use nix::sched::{setns, CloneFlags};

use super::{HostError, HostNet};

/// Where `ip netns add` bind-mounts named network namespaces.
pub const NETNS_DIR: &str = "/run/netns";

/// Opens `/run/netns/NAME` and checks that it is a network namespace (an nsfs bind mount, not
/// the empty file a crashed `ip netns add` can leave).
pub(super) fn open_netns(name: &str) -> Result<File, HostError> {
    let reason = if name.is_empty() {
        Some("empty")
    } else if name == "." || name == ".." {
        Some("reserved")
    } else if name.contains(['/', '\0']) {
        Some("contains '/' or NUL")
    } else {
        None
    };
    if let Some(reason) = reason {
        return Err(HostError::InvalidNetnsName {
            name: name.to_owned(),
            reason,
        });
    }
    let path = Path::new(NETNS_DIR).join(name);
    let file = match File::open(&path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(HostError::NetnsNotFound {
                name: name.to_owned(),
                path,
            })
        }
        Err(source) => {
            return Err(HostError::NetnsOpen {
                name: name.to_owned(),
                path,
                source,
            })
        }
    };
    let is_nsfs = match nix::sys::statfs::fstatfs(&file) {
        Ok(stat) => stat.filesystem_type() == nix::sys::statfs::NSFS_MAGIC,
        Err(errno) => {
            return Err(HostError::NetnsOpen {
                name: name.to_owned(),
                path,
                source: errno.into(),
            })
        }
    };
    if !is_nsfs {
        let source = io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a namespace (no nsfs mount)",
        );
        return Err(HostError::NetnsOpen {
            name: name.to_owned(),
            path,
            source,
        });
    }
    Ok(file)
}

/// Runs `work` with a [`HostNet`] connected inside the network namespace `ns` (called `name`, for
/// errors) and returns its result. Errors from `work` come back wrapped in
/// [`HostError::InNetns`].
///
/// The work runs on a fresh thread with its own current-thread tokio runtime, because a netlink
/// socket acts in the namespace of the thread that created it and `setns(2)` changes only the
/// calling thread. The thread ends (leaving the namespace with it) when `work` returns.
pub(super) async fn run_in<F, Fut, T>(name: &str, ns: File, work: F) -> Result<T, HostError>
where
    F: FnOnce(HostNet) -> Fut + Send + 'static,
    Fut: Future<Output = Result<T, HostError>>,
    T: Send + 'static,
{
    let owned_name = name.to_owned();
    let thread = std::thread::Builder::new()
        .name("wgmesh-netns".to_owned())
        .spawn(move || enter_and_run(&owned_name, ns, work))
        .map_err(|source| HostError::NetnsWorker {
            name: name.to_owned(),
            source,
        })?;
    // Joining blocks, so wait for it on the blocking pool rather than on a runtime worker.
    let joined = tokio::task::spawn_blocking(move || thread.join()).await;
    let lost = |reason| HostError::NetnsWorkerLost {
        name: name.to_owned(),
        reason,
    };
    match joined {
        Ok(Ok(result)) => result.map_err(|source| match source {
            // Failures to get into the namespace already name it.
            HostError::NetnsEnter { .. } | HostError::NetnsWorker { .. } => source,
            source => HostError::InNetns {
                name: name.to_owned(),
                source: Box::new(source),
            },
        }),
        Ok(Err(panic)) => Err(lost(format!("panicked: {}", panic_message(&*panic)))),
        Err(join_error) => Err(lost(join_error.to_string())),
    }
}

/// The body of the worker thread.
fn enter_and_run<F, Fut, T>(name: &str, ns: File, work: F) -> Result<T, HostError>
where
    F: FnOnce(HostNet) -> Fut,
    Fut: Future<Output = Result<T, HostError>>,
{
    setns(&ns, CloneFlags::CLONE_NEWNET).map_err(|source| HostError::NetnsEnter {
        name: name.to_owned(),
        source,
    })?;
    drop(ns);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .map_err(|source| HostError::NetnsWorker {
            name: name.to_owned(),
            source,
        })?;
    runtime.block_on(async move { work(HostNet::connect()?).await })
}

fn panic_message(payload: &(dyn Any + Send)) -> &str {
    if let Some(message) = payload.downcast_ref::<&str>() {
        message
    } else if let Some(message) = payload.downcast_ref::<String>() {
        message
    } else {
        "(non-string payload)"
    }
}
