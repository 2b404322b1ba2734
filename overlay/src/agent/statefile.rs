//! The agent's state files (workloads, netmap cache, credential): JSON, read with "missing
//! means none", written atomically and private (mode 0600) with the one writer the control
//! plane uses for its own files.
//!
//! Performs I/O. Errors are the bare cause; each caller names its file and what to do.

use std::io;
use std::path::Path;

use serde::de::DeserializeOwned;
use serde::Serialize;

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
