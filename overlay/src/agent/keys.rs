//! The agent's key files: the host's private key (created, mode 0600, on first start) and the
//! peers' preshared keys. A key file readable by group or others is used, with a warning.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use wgmesh_config::key::KeyError;
use wgmesh_config::PrivateKey;

use super::AgentError;

/// Reads the key (private or preshared) in the file at `path`.
pub(super) fn read_key<K: std::str::FromStr<Err = KeyError>>(path: &Path) -> Result<K, AgentError> {
    let text = std::fs::read_to_string(path).map_err(|source| AgentError::KeyRead {
        path: path.to_owned(),
        source,
    })?;
    warn_if_readable_by_others(path);
    text.trim()
        .parse()
        .map_err(|source| AgentError::KeyInvalid {
            path: path.to_owned(),
            source,
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
    let err = |source: io::Error| AgentError::KeyCreate {
        path: path.to_owned(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    let key = PrivateKey::generate();
    write_key(path, &key)?;
    tracing::info!(path = %path.display(), "created a new private key");
    Ok(key)
}

/// Replaces the key file at `path` with `key`. Created 0600 from the start, synced, renamed
/// into place and the directory synced: a crash leaves the old key or the whole new one, never
/// a readable or half-written one.
pub(super) fn write_key(path: &Path, key: &PrivateKey) -> Result<(), AgentError> {
    let text = zeroize::Zeroizing::new(format!("{}\n", key.to_base64()));
    wgmesh_client::atomic_file::write(path, text.as_bytes(), 0o600).map_err(|e| {
        AgentError::KeyCreate {
            path: path.to_owned(),
            source: e.source,
        }
    })
}

#[cfg(test)]
mod tests {
    use wgmesh_config::PresharedKey;

    use super::*;
    use crate::error::Chain;

    #[test]
    fn key_file_errors_name_the_file_then_the_cause() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.key");
        let err = read_key::<PresharedKey>(&missing).unwrap_err();
        assert_eq!(
            Chain(&err).to_string(),
            format!(
                "{}: cannot read the key file: No such file or directory (os error 2)",
                missing.display()
            )
        );
        let bad = dir.path().join("bad.key");
        std::fs::write(&bad, "not a key\n").unwrap();
        let err = read_key::<PresharedKey>(&bad).unwrap_err();
        let parse = "not a key".parse::<PresharedKey>().unwrap_err();
        assert_eq!(
            Chain(&err).to_string(),
            format!("{}: {parse}", bad.display())
        );
    }
}
