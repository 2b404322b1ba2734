//! The agent's key files: the host's private key (created, mode 0600, on first start) and the
//! peers' preshared keys. A key file readable by group or others is used, with a warning.

use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use wgmesh_config::PrivateKey;

use super::AgentError;

pub(super) fn read_key<K: std::str::FromStr>(path: &Path) -> Result<K, AgentError>
where
    K::Err: std::fmt::Display,
{
    let text = std::fs::read_to_string(path).map_err(|e| AgentError::KeyFile {
        path: path.to_owned(),
        message: format!("cannot read the key file: {e}"),
    })?;
    warn_if_readable_by_others(path);
    text.trim()
        .parse()
        .map_err(|e: K::Err| AgentError::KeyFile {
            path: path.to_owned(),
            message: e.to_string(),
        })
}

fn warn_if_readable_by_others(path: &Path) {
    if let Ok(meta) = std::fs::metadata(path) {
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            tracing::warn!(path = %path.display(), mode = format!("{mode:o}"), "key file is accessible to group or others; chmod 600 it");
        }
    }
}

/// Reads the host's private key, creating it (mode 0600) when the file does not exist.
pub(super) fn load_or_create_key(path: &Path) -> Result<PrivateKey, AgentError> {
    if path.exists() {
        return read_key(path);
    }
    let err = |e: io::Error| AgentError::KeyFile {
        path: path.to_owned(),
        message: format!("cannot create the key file: {e}"),
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    let key = PrivateKey::generate();
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(err)?;
    writeln!(f, "{}", key.to_base64()).map_err(err)?;
    f.sync_all().map_err(err)?;
    tracing::info!(path = %path.display(), "created a new private key");
    Ok(key)
}
