//! Writing the agent's state files (workloads, netmap cache, credential): atomically and
//! private (mode 0600), with the one writer the control plane uses for its own files.
//!
//! Performs I/O.

use std::io;
use std::path::Path;

/// Replaces `path` with `bytes` atomically; the file is mode 0600. The error is the I/O error
/// of the step that failed (the caller names the file).
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    wgmesh_control::atomic_file::write(path, bytes, 0o600).map_err(|e| e.source)
}
