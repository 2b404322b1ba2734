//! The agent's state directory and its files (workloads, netmap cache, credential).
//!
//! The directory is created private (mode 0700) and locked for one agent. Its files are JSON,
//! read with "missing means none", written atomically and private (mode 0600) with the one
//! writer the control plane uses for its own files.
//!
//! Performs I/O. The file helpers' errors are the bare cause; each caller names its file and
//! what to do.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Serialize;
use wgmesh_client::dirlock::{DirLock, LockError};

/// Why the state directory cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum StateDirError {
    /// The state directory (or its lock file) could not be created.
    #[error("cannot create the state directory {path}")]
    Create {
        /// The directory, or its lock file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Another agent runs on this state directory.
    #[error("agent.state_dir: another `wgmesh agent` uses {} (its lock is held); stop it first, or give this one another state_dir", path.display())]
    InUse {
        /// The lock file.
        path: PathBuf,
    },
}

/// Creates the state directory `dir` (and its parents), mode 0700.
pub(super) fn create_state_dir(dir: &Path) -> Result<(), StateDirError> {
    wgmesh_client::private_dir::create(dir).map_err(|source| StateDirError::Create {
        path: dir.to_owned(),
        source,
    })?;
    let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
    Ok(())
}

/// Locks the state directory `dir` for this agent until the lock is dropped: two agents on one
/// state directory would share a credential, a netmap cache and a workload list.
pub(super) fn lock_state_dir(dir: &Path) -> Result<DirLock, StateDirError> {
    DirLock::take(dir).map_err(|e| match e {
        LockError::Held { path } => StateDirError::InUse { path },
        LockError::Io { path, source } => StateDirError::Create { path, source },
    })
}

/// Why one of the agent's state files (the workloads, the netmap cache) could not be read or
/// written. `what` names the file for people: "state file", "netmap cache".
#[derive(Debug, thiserror::Error)]
pub enum StateFileError {
    /// I/O on the file.
    #[error("{what} {path}")]
    Io {
        /// What the file is.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The file is not what it should hold; it is left alone and the agent refuses to use it.
    #[error("{path}: not a valid wgmesh {what}; move it away to start afresh")]
    Corrupt {
        /// What the file is.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
}

/// One of the agent's JSON state files, whose errors name it.
pub(crate) struct JsonFile {
    path: PathBuf,
    what: &'static str,
}

impl JsonFile {
    /// The file at `path`, called `what` in errors.
    pub(crate) fn new(path: PathBuf, what: &'static str) -> Self {
        Self { path, what }
    }

    /// The file's path.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The file parsed as `T`; `None` when there is no such file.
    pub(crate) fn load<T: DeserializeOwned>(&self) -> Result<Option<T>, StateFileError> {
        read_json(&self.path).map_err(|e| match e {
            ReadError::Io(source) => StateFileError::Io {
                what: self.what,
                path: self.path.clone(),
                source,
            },
            ReadError::Corrupt(source) => StateFileError::Corrupt {
                what: self.what,
                path: self.path.clone(),
                source,
            },
        })
    }

    /// Replaces the file with `value`, atomically, mode 0600.
    pub(crate) fn save<T: Serialize>(&self, value: &T) -> Result<(), StateFileError> {
        write_json(&self.path, value).map_err(|source| StateFileError::Io {
            what: self.what,
            path: self.path.clone(),
            source,
        })
    }
}

/// Why a state file could not be read.
#[derive(Debug)]
pub(crate) enum ReadError {
    /// The file exists but cannot be read.
    Io(io::Error),
    /// The file is not the JSON expected.
    Corrupt(serde_json::Error),
}

/// The file at `path` parsed as `T`; `None` when there is no such file.
pub(crate) fn read_json<T: DeserializeOwned>(path: &Path) -> Result<Option<T>, ReadError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(ReadError::Io(e)),
    };
    serde_json::from_str(&text)
        .map(Some)
        .map_err(ReadError::Corrupt)
}

/// Replaces `path` with `value` as JSON, atomically; the file is mode 0600.
pub(crate) fn write_json<T: Serialize>(path: &Path, value: &T) -> io::Result<()> {
    let json = serde_json::to_vec_pretty(value).map_err(io::Error::other)?;
    wgmesh_client::atomic_file::write(path, &json, 0o600).map_err(|e| e.source)
}
