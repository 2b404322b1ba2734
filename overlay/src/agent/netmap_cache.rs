//! Applying a control plane's [`Netmap`] on the agent side, and keeping the last one applied.
//!
//! Pure (no I/O): [`peer_settings`] turns a netmap into the [`PeerSettings`] the agent's peer
//! set uses. A netmap that breaks the invariants of
//! [`Netmap::check`] is refused as a whole with a [`NetmapApplyError`], so a bad netmap never
//! replaces a running configuration.
//!
//! I/O: [`NetmapCache`] keeps the last applied netmap in the agent's state directory
//! (`netmap.json`, versioned, written to a temporary file, fsynced and renamed, mode 0600 since
//! it names peers and endpoints), so that an agent restarted while the control plane is down
//! restores its tunnels from it (fail-static).

use std::io;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use wgmesh_config::netmap::{Netmap, NetmapError};

use super::statefile::{read_json, write_json, ReadError};
use crate::peers::peer::PeerSettings;

/// Why a netmap cannot be applied. The running configuration is kept.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NetmapApplyError {
    /// The netmap breaks an invariant the agent relies on.
    #[error("refusing netmap revision {revision}")]
    Invalid {
        /// The refused netmap's revision.
        revision: u64,
        /// What is wrong with it.
        #[source]
        source: NetmapError,
    },
}

/// The peers a netmap asks for, after checking it with [`Netmap::check`].
///
/// One [`PeerSettings`] per netmap peer, in the netmap's order, with the peer's name, endpoint
/// and allowed IPs. For now a peer is configured with its first public key only; accepting every
/// key of a peer that holds more than one (during a hitless key rotation) comes with key
/// rotation. No preshared keys and no persistent keepalive yet: netmaps carry neither.
pub fn peer_settings(netmap: &Netmap) -> Result<Vec<PeerSettings>, NetmapApplyError> {
    netmap.check().map_err(|source| NetmapApplyError::Invalid {
        revision: netmap.revision,
        source,
    })?;
    Ok(netmap
        .peers
        .iter()
        .map(|p| PeerSettings {
            name: Some(p.name.clone()),
            // check() guarantees at least one key.
            public_key: p.public_keys[0],
            endpoint: p.endpoint,
            allowed_ips: p.allowed_ips.clone(),
            persistent_keepalive: None,
            preshared_key: None,
        })
        .collect())
}

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
    use std::collections::BTreeMap;

    use wgmesh_config::netmap::{HostIdentity, NetmapPeer};
    use wgmesh_config::PublicKey;

    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn key(n: u8) -> PublicKey {
        PublicKey::from_bytes([n; 32])
    }

    fn net(s: &str) -> ipnet::IpNet {
        s.parse().unwrap()
    }

    fn sample() -> Netmap {
        Netmap {
            revision: 3,
            host: HostIdentity {
                name: "host-a".into(),
                public_key: key(1),
                subnet: net("10.42.0.0/24"),
                endpoint: Some("198.18.0.1:51820".parse().unwrap()),
            },
            peers: vec![
                NetmapPeer {
                    name: "host-b".into(),
                    public_keys: vec![key(2)],
                    endpoint: Some("198.18.0.2:51820".parse().unwrap()),
                    allowed_ips: vec![net("10.42.1.0/24")],
                    labels: BTreeMap::from([("zone".into(), "a".into())]),
                },
                NetmapPeer {
                    name: "host-c".into(),
                    public_keys: vec![key(3), key(4)],
                    endpoint: None,
                    allowed_ips: vec![net("10.42.2.0/24")],
                    labels: BTreeMap::new(),
                },
            ],
            cluster_cidr: None,
            epoch: 0,
        }
    }

    #[test]
    fn valid_netmap_converts() {
        let map = sample();
        let settings = peer_settings(&map).unwrap();
        assert_eq!(
            settings,
            vec![
                PeerSettings {
                    name: Some("host-b".into()),
                    public_key: key(2),
                    endpoint: Some("198.18.0.2:51820".parse().unwrap()),
                    allowed_ips: vec![net("10.42.1.0/24")],
                    persistent_keepalive: None,
                    preshared_key: None,
                },
                PeerSettings {
                    name: Some("host-c".into()),
                    public_key: key(3),
                    endpoint: None,
                    allowed_ips: vec![net("10.42.2.0/24")],
                    persistent_keepalive: None,
                    preshared_key: None,
                },
            ]
        );
    }

    #[test]
    fn empty_netmap_gives_no_peers() {
        let mut map = sample();
        map.peers.clear();
        assert_eq!(peer_settings(&map).unwrap(), vec![]);
    }

    #[test]
    fn netmap_failing_check_is_refused() {
        let mut map = sample();
        map.peers[1].allowed_ips = vec![net("10.42.1.128/25")];
        let err = peer_settings(&map).unwrap_err();
        assert!(matches!(
            err,
            NetmapApplyError::Invalid {
                revision: 3,
                source: NetmapError::Overlap { .. }
            }
        ));
        assert_eq!(err.to_string(), "refusing netmap revision 3");

        let mut map = sample();
        map.peers[0].public_keys.clear();
        assert!(matches!(
            peer_settings(&map),
            Err(NetmapApplyError::Invalid {
                source: NetmapError::NoKey { .. },
                ..
            })
        ));
    }

    #[test]
    fn netmap_listing_own_key_as_peer_is_refused() {
        let mut map = sample();
        map.peers[0].public_keys = vec![key(1)];
        let err = peer_settings(&map).unwrap_err();
        assert_eq!(
            err,
            NetmapApplyError::Invalid {
                revision: 3,
                source: NetmapError::SelfPeer {
                    peer: "host-b".into()
                },
            }
        );
    }

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
