//! [`NetmapCache`] keeps the last applied netmap in the agent's state directory (`netmap.json`,
//! versioned, written to a temporary file, fsynced and renamed, mode 0600 since it names peers
//! and endpoints), so that an agent restarted while the control plane is down restores its
//! tunnels from it (fail-static).

use std::path::Path;

use serde::{Deserialize, Serialize};
use wgmesh_config::netmap::Netmap;

use super::statefile::{JsonFile, StateFileError};

/// What `netmap.json` holds.
#[derive(Serialize, Deserialize)]
#[serde(tag = "version")]
enum CacheFile {
    #[serde(rename = "1")]
    V1 { netmap: Netmap },
}

/// The last applied netmap, kept in the agent's state directory.
pub struct NetmapCache {
    file: JsonFile,
}

impl NetmapCache {
    /// The cache in `state_dir` (`netmap.json`).
    pub fn new(state_dir: &Path) -> Self {
        Self {
            file: JsonFile::new(state_dir.join("netmap.json"), "netmap cache"),
        }
    }

    /// The cache file's path.
    pub fn path(&self) -> &Path {
        self.file.path()
    }

    /// The cached netmap; `None` when there is none. A file that cannot be read or parsed is an
    /// error, never an empty netmap.
    pub fn load(&self) -> Result<Option<Netmap>, StateFileError> {
        let file = self.file.load::<CacheFile>()?;
        Ok(file.map(|CacheFile::V1 { netmap }| netmap))
    }

    /// Writes `netmap` atomically, mode 0600.
    pub fn save(&self, netmap: &Netmap) -> Result<(), StateFileError> {
        let file = CacheFile::V1 {
            netmap: netmap.clone(),
        };
        self.file.save(&file)
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
    fn the_cache_keeps_the_policy_filter() {
        use wgmesh_config::netmap::{FilterRule, HostFilter};
        use wgmesh_config::policy::Action;
        let dir = tempfile::tempdir().unwrap();
        let cache = NetmapCache::new(dir.path());
        let mut map = sample();
        map.filter = Some(HostFilter {
            default: Action::Deny,
            rules: vec![FilterRule {
                name: "web".into(),
                action: Action::Allow,
                from: vec!["10.42.1.0/24".parse().unwrap()],
                to: vec!["10.42.0.1/32".parse().unwrap()],
                ports: vec!["tcp/80".parse().unwrap()],
            }],
        });
        cache.save(&map).unwrap();
        // A restart during an outage enforces the cached policy from the first packet.
        assert_eq!(cache.load().unwrap().unwrap().filter, map.filter);
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
            assert!(matches!(err, StateFileError::Corrupt { .. }), "{err:?}");
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
