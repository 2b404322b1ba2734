//! [`NetmapCache`] keeps the last applied netmap in the agent's state directory (`netmap.json`,
//! versioned, written to a temporary file, fsynced and renamed, mode 0600 since it names peers
//! and endpoints), so that an agent restarted while the control plane is down restores its
//! tunnels from it (fail-static).

use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use wgmesh_config::netmap::Netmap;

use super::statefile::{read_json, write_json, ReadError};

/// What `netmap.json` holds.
#[derive(Serialize, Deserialize)]
#[serde(tag = "version")]
enum CacheFile {
    #[serde(rename = "1")]
    V1 { netmap: Netmap },
}

/// Errors reading or writing the netmap cache.
#[derive(Debug, thiserror::Error)]
pub enum NetmapCacheError {
    /// I/O on the file.
    #[error("netmap cache {path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The file is not a valid cached netmap; it is left alone.
    #[error("{path}: not a valid wgmesh netmap cache; move it away to start afresh")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
}

/// The last applied netmap, kept in the agent's state directory.
pub struct NetmapCache {
    path: PathBuf,
}

impl NetmapCache {
    /// The cache in `state_dir` (`netmap.json`).
    pub fn new(state_dir: &Path) -> Self {
        Self {
            path: state_dir.join("netmap.json"),
        }
    }

    /// The cache file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The cached netmap; `None` when there is none. A file that cannot be read or parsed is an
    /// error, never an empty netmap.
    pub fn load(&self) -> Result<Option<Netmap>, NetmapCacheError> {
        let file = read_json::<CacheFile>(&self.path).map_err(|e| match e {
            ReadError::Io(source) => NetmapCacheError::Io {
                path: self.path.clone(),
                source,
            },
            ReadError::Corrupt(source) => NetmapCacheError::Corrupt {
                path: self.path.clone(),
                source,
            },
        })?;
        Ok(file.map(|CacheFile::V1 { netmap }| netmap))
    }

    /// Writes `netmap` atomically, mode 0600.
    pub fn save(&self, netmap: &Netmap) -> Result<(), NetmapCacheError> {
        let file = CacheFile::V1 {
            netmap: netmap.clone(),
        };
        write_json(&self.path, &file).map_err(|source| NetmapCacheError::Io {
            path: self.path.clone(),
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::peers::settings::tests::sample;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn cache_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let cache = NetmapCache::new(dir.path());
        cache.save(&sample()).unwrap();
        assert_eq!(cache.load().unwrap(), Some(sample()));
        // A newer netmap replaces the old one.
        let mut newer = sample();
        newer.revision = 4;
        newer.peers.pop();
        cache.save(&newer).unwrap();
        assert_eq!(cache.load().unwrap(), Some(newer));
        assert!(!dir.path().join("netmap.json.tmp").exists());
        let text = std::fs::read_to_string(cache.path()).unwrap();
        let json: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(json["version"], "1");
    }

    #[test]
    fn cache_absent_is_none() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(NetmapCache::new(dir.path()).load().unwrap(), None);
    }

    #[test]
    fn cache_corrupt_is_an_error_naming_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let cache = NetmapCache::new(dir.path());
        for junk in ["{not json", "", r#"{"version":"9","netmap":{}}"#] {
            std::fs::write(cache.path(), junk).unwrap();
            let err = cache.load().unwrap_err();
            assert!(matches!(err, NetmapCacheError::Corrupt { .. }), "{err:?}");
            assert!(
                err.to_string()
                    .contains(&cache.path().display().to_string()),
                "{err}"
            );
        }
    }

    #[test]
    fn cache_file_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let cache = NetmapCache::new(dir.path());
        // Even a leftover, world-readable temporary file ends up 0600.
        let tmp = dir.path().join("netmap.json.tmp");
        std::fs::write(&tmp, "old").unwrap();
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644)).unwrap();
        cache.save(&sample()).unwrap();
        let mode = std::fs::metadata(cache.path())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
