//! The host's key rotation on disk and in the running agent.
//!
//! The private key file always holds the *current* key. While a rotation's grace window lasts,
//! `{state_dir}/key-rotation.json` (0600) holds the *retiring* key and when it is retired, so
//! that an agent killed mid-rotation comes back with both keys. The record is written (and
//! synced) before the new key replaces the old one in the key file: a crash between the two
//! leaves a record whose key is the key file's, which means no rotation. An expired record is
//! retired at load.
//!
//! In static mode `wgmesh key rotate --socket` starts a rotation ([`Agent::rotate_key`]) and the
//! agent retires the old key itself when the grace window ends ([`Agent::retire_key`]). In
//! control mode the control plane's order in the netmap runs it ([`Agent::follow_rotation`],
//! decided by [`order`]): the agent makes the key, reports it, reports when its peers moved, and
//! retires the old key or goes back to it as the control plane ends the rotation.

mod order;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use wgmesh_config::{PrivateKey, PublicKey};
use zeroize::Zeroize;

use super::keys::{load_or_create_key, read_key, write_key};
use super::statefile::JsonFile;
use super::{Agent, AgentError};
use wgmesh_client::api::KeyReportBody;
use wgmesh_config::netmap::HostIdentity;

use crate::api::RotateKeyReply;
use crate::error::Chain;
use crate::peers::identity::HostKeys;
use crate::peers::noise::LocalIdentity;
use order::KeyStep;

/// The record's file name in the state directory.
pub(super) const RECORD_FILE: &str = "key-rotation.json";

/// The retiring key, as the record holds it.
#[derive(Serialize, Deserialize)]
struct Record {
    /// The retiring private key, base64.
    retiring_private_key: String,
    /// When it is retired (Unix seconds); `None`: when the control plane says so.
    #[serde(default)]
    retire_at: Option<u64>,
    /// The control plane's epoch of the rotation (control mode).
    #[serde(default)]
    epoch: Option<u64>,
}

impl Drop for Record {
    fn drop(&mut self) {
        self.retiring_private_key.zeroize();
    }
}

/// A rotation in progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Retiring {
    /// The key being retired.
    pub(super) public_key: PublicKey,
    /// When (static mode); `None` in control mode, where the control plane ends the rotation.
    pub(super) retire_at: Option<SystemTime>,
    /// The control plane's epoch of the rotation (control mode).
    pub(super) epoch: Option<u64>,
}

/// The host's key file and its rotation record.
pub(super) struct HostKeyFiles {
    key_file: PathBuf,
    record: JsonFile,
}

impl HostKeyFiles {
    pub(super) fn new(key_file: &Path, state_dir: &Path) -> Self {
        Self {
            key_file: key_file.to_owned(),
            record: JsonFile::new(state_dir.join(RECORD_FILE), "key rotation record"),
        }
    }

    /// The host's keys at start: the key file's (created when missing), and the record's
    /// retiring key unless its time is up at `now` (then the record goes).
    pub(super) fn load(&self, now: SystemTime) -> Result<(HostKeys, Option<Retiring>), AgentError> {
        let current = load_or_create_key(&self.key_file)?;
        let keys = HostKeys::one(Arc::new(LocalIdentity::new(&current)));
        let Some(record) = self.record.load::<Record>()? else {
            return Ok((keys, None));
        };
        let retiring = self.retiring_key(&record)?;
        let retire_at = record.retire_at.map(from_unix);
        let over = retire_at.is_some_and(|at| at <= now);
        if retiring.public_key() == current.public_key() || over {
            // Interrupted before the new key was written, or the grace window ended while the
            // agent was down.
            self.remove_record()?;
            return Ok((keys, None));
        }
        let retiring_public = retiring.public_key();
        let keys = HostKeys {
            retiring: Some(Arc::new(LocalIdentity::new(&retiring))),
            ..keys
        };
        Ok((
            keys,
            Some(Retiring {
                public_key: retiring_public,
                retire_at,
                epoch: record.epoch,
            }),
        ))
    }

    /// Starts a rotation: a new key, generated here, becomes current; the old one is kept in the
    /// record until `retire_at`. The record is on disk before the key file changes. `running`
    /// is the key the agent runs with: if the key file holds another, nothing is done.
    pub(super) fn rotate(
        &self,
        running: &PublicKey,
        retire_at: Option<SystemTime>,
        epoch: Option<u64>,
    ) -> Result<(PrivateKey, PrivateKey), AgentError> {
        let old: PrivateKey = read_key(&self.key_file)?;
        if old.public_key() != *running {
            return Err(AgentError::KeyChangedOnDisk {
                path: self.key_file.clone(),
            });
        }
        let record = Record {
            retiring_private_key: old.to_base64(),
            retire_at: retire_at.map(to_unix),
            epoch,
        };
        self.record.save(&record)?;
        let new = PrivateKey::generate();
        write_key(&self.key_file, &new)?;
        Ok((new, old))
    }

    /// Ends a rotation by going back: the retiring key is written to the key file again, then
    /// the record goes (a crash between the two leaves a record equal to the key file: no
    /// rotation).
    pub(super) fn roll_back(&self) -> Result<(), AgentError> {
        let Some(record) = self.record.load::<Record>()? else {
            return Ok(());
        };
        let old = self.retiring_key(&record)?;
        write_key(&self.key_file, &old)?;
        self.remove_record()
    }

    /// The record's retiring private key.
    fn retiring_key(&self, record: &Record) -> Result<PrivateKey, AgentError> {
        record
            .retiring_private_key
            .trim()
            .parse()
            .map_err(|source| AgentError::KeyInvalid {
                path: self.record.path().to_owned(),
                source,
            })
    }

    /// Ends a rotation: the retiring key is forgotten.
    pub(super) fn remove_record(&self) -> Result<(), AgentError> {
        match std::fs::remove_file(self.record.path()) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(AgentError::KeyRecord {
                path: self.record.path().to_owned(),
                source,
            }),
        }
    }
}

fn to_unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn from_unix(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

/// The host's keys as the agent starts with them.
pub(super) struct StartKeys {
    pub(super) files: HostKeyFiles,
    pub(super) keys: HostKeys,
    pub(super) retiring: Option<Retiring>,
}

impl Agent {
    /// `key rotate --socket`: a new key now, the old one accepted for `grace` more (static
    /// mode; in control mode the control plane runs rotations).
    pub(super) fn rotate_key(&mut self, grace: Duration) -> Result<RotateKeyReply, AgentError> {
        if self.config.control.is_some() {
            return Err(AgentError::RotationByControlPlane);
        }
        if let Some(r) = &self.retiring {
            return Err(AgentError::RotationInProgress {
                retiring: r.public_key,
                retire_at: r.retire_at.map_or(0, to_unix),
            });
        }
        let retire_at = SystemTime::now()
            .checked_add(grace.min(MAX_GRACE))
            .ok_or(AgentError::GraceTooLong)?;
        let (public, running) = self.start_rotation(Some(retire_at), None)?;
        tracing::info!(public_key = %public, retiring = %running, grace_secs = grace.as_secs(), "key rotated: the old key is accepted until the grace window ends");
        Ok(RotateKeyReply {
            public_key: public.to_string(),
            retiring_public_key: running.to_string(),
            retire_at: to_unix(retire_at),
        })
    }

    /// Ends the rotation: the old key is forgotten on disk, then in the peers' lanes.
    pub(super) fn retire_key(&mut self) -> Result<(), AgentError> {
        let Some(r) = self.retiring.take() else {
            return Ok(());
        };
        self.key_files.remove_record()?;
        let current = HostKeys::one(self.peers.identity().clone());
        self.use_host_keys(current)?;
        if let Some(reports) = self.key_reports.as_mut() {
            reports.clear();
        }
        tracing::info!(retired = %r.public_key, "the old key is retired");
        Ok(())
    }

    /// Gives the peers and the data path `keys`, and starts the new lanes' handshakes.
    pub(super) fn use_host_keys(&mut self, keys: HostKeys) -> Result<(), AgentError> {
        self.peers.set_host_keys(keys)?;
        self.shared.table.store(Arc::new(self.peers.table()));
        if let Some(dp) = &self.datapath {
            dp.initiate_all();
        }
        Ok(())
    }

    /// Follows the control plane's rotation order in the netmap just applied, whose host section
    /// is `host`: step by step ([`order::next_step`]) until nothing is left to do now. Also
    /// called every [`ROTATION_TICK`] while a rotation runs, to see whether the peers moved.
    pub(super) fn follow_rotation(&mut self, host: &HostIdentity) {
        self.rotation_host = Some(host.clone());
        for _ in 0..4 {
            let held = order::HeldKeys {
                current: self.peers.identity().public_key(),
                retiring: self.retiring.as_ref().map(|r| r.public_key),
                epoch: self.retiring.as_ref().and_then(|r| r.epoch),
            };
            let step = order::next_step(host, &held, self.peers_moved());
            let result = match step {
                KeyStep::Nothing => return,
                KeyStep::Report { epoch, key, moved } => {
                    if let Some(reports) = self.key_reports.as_mut() {
                        reports.publish(KeyReportBody {
                            epoch,
                            public_key: key,
                            moved,
                        });
                    }
                    return;
                }
                KeyStep::Foreign { key } => {
                    tracing::error!(%key, "the control plane announces a new key this host does not hold; ignoring it (the old key stays accepted)");
                    return;
                }
                KeyStep::Rotate { epoch } => self.rotate_for(epoch),
                KeyStep::Retire => self.retire_key(),
                KeyStep::RollBack => self.roll_back_key(),
            };
            if let Err(e) = result {
                tracing::error!(?step, "key rotation step failed: {}", Chain(&e));
                return;
            }
        }
    }

    /// A new key for the control plane's rotation of `epoch`; the old one stays accepted until
    /// the control plane ends the rotation.
    fn rotate_for(&mut self, epoch: u64) -> Result<(), AgentError> {
        let (public, running) = self.start_rotation(None, Some(epoch))?;
        tracing::info!(public_key = %public, retiring = %running, epoch, "key rotated for the control plane; reporting the new key");
        Ok(())
    }

    /// A new key, on disk with the old one first, then in the peers' lanes: the new and the old
    /// public key.
    fn start_rotation(
        &mut self,
        retire_at: Option<SystemTime>,
        epoch: Option<u64>,
    ) -> Result<(PublicKey, PublicKey), AgentError> {
        let running = self.peers.identity().public_key();
        let (new, old) = self.key_files.rotate(&running, retire_at, epoch)?;
        let keys = HostKeys {
            current: Arc::new(LocalIdentity::new(&new)),
            retiring: Some(self.peers.identity().clone()),
        };
        drop((new, old));
        let public = keys.current.public_key();
        self.use_host_keys(keys)?;
        self.retiring = Some(Retiring {
            public_key: running,
            retire_at,
            epoch,
        });
        Ok((public, running))
    }

    /// The control plane abandoned the rotation: the old key is current again, on disk first.
    fn roll_back_key(&mut self) -> Result<(), AgentError> {
        let Some(old) = self.peers.host_keys().retiring.clone() else {
            return Ok(());
        };
        self.key_files.roll_back()?;
        let dropped = self.peers.identity().public_key();
        self.use_host_keys(HostKeys::one(old))?;
        self.retiring = None;
        if let Some(reports) = self.key_reports.as_mut() {
            reports.clear();
        }
        tracing::warn!(dropped = %dropped, "the control plane abandoned the key rotation; back to the old key");
        Ok(())
    }

    /// Whether every peer that carries traffic does so on the lane of our current key: none
    /// has only its other lane up.
    fn peers_moved(&self) -> bool {
        let table = self.shared.table.load();
        let moved = table.peers().all(|peer| {
            let st = peer.lock();
            let mut lanes = st.lanes();
            let current_up = lanes.next().is_some_and(|l| l.established());
            current_up || !lanes.any(|l| l.established() && !l.draining())
        });
        moved
    }

    /// Whether the rotation tick should run: a control-plane rotation is under way.
    pub(super) fn rotation_ticks(&self) -> bool {
        self.key_reports.is_some() && self.retiring.is_some()
    }

    /// When the grace window of a static rotation ends.
    pub(super) fn retire_due(&self) -> Option<SystemTime> {
        self.retiring.as_ref().and_then(|r| r.retire_at)
    }
}

/// The longest grace window `key rotate --socket` takes: a year.
pub(super) const MAX_GRACE: Duration = Duration::from_secs(365 * 24 * 3600);

/// How often a running control-plane rotation looks whether the peers moved.
pub(super) const ROTATION_TICK: Duration = Duration::from_millis(500);

/// Ticks every [`ROTATION_TICK`] while `on` (forever pending otherwise).
pub(super) async fn tick(on: bool) {
    if on {
        tokio::time::sleep(ROTATION_TICK).await;
    } else {
        std::future::pending().await
    }
}

/// Sleeps until `at` (forever without one).
pub(super) async fn until(at: Option<SystemTime>) {
    match at {
        Some(at) => {
            let left = at
                .duration_since(SystemTime::now())
                .unwrap_or(Duration::ZERO);
            tokio::time::sleep(left).await;
        }
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn files(dir: &Path) -> HostKeyFiles {
        HostKeyFiles::new(&dir.join("private.key"), dir)
    }

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn a_rotation_keeps_both_keys_on_disk_until_retired_and_both_files_are_0600() {
        let dir = tempfile::tempdir().unwrap();
        let f = files(dir.path());
        let now = SystemTime::now();
        let (keys, none) = f.load(now).unwrap();
        assert!(none.is_none() && keys.retiring.is_none());
        let old = keys.current.public_key();
        let (new, _) = f
            .rotate(&old, Some(now + Duration::from_secs(60)), Some(3))
            .unwrap();
        assert_eq!(mode(&dir.path().join("private.key")), 0o600);
        assert_eq!(mode(&dir.path().join(RECORD_FILE)), 0o600);
        // A restart mid-rotation has both.
        let (keys, retiring) = f.load(now).unwrap();
        assert_eq!(keys.current.public_key(), new.public_key());
        assert_eq!(keys.retiring.as_ref().unwrap().public_key(), old);
        let retiring = retiring.unwrap();
        assert_eq!((retiring.public_key, retiring.epoch), (old, Some(3)));
        // After the grace window, a restart retires the old key.
        let (keys, retiring) = f.load(now + Duration::from_secs(61)).unwrap();
        assert!(keys.retiring.is_none() && retiring.is_none());
        assert!(!dir.path().join(RECORD_FILE).exists());
        assert_eq!(keys.current.public_key(), new.public_key());
    }

    #[test]
    fn a_crash_between_record_and_key_file_means_no_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let f = files(dir.path());
        let (keys, _) = f.load(SystemTime::now()).unwrap();
        let current: PrivateKey = read_key(&dir.path().join("private.key")).unwrap();
        // The record was written, the key file was not.
        f.record
            .save(&Record {
                retiring_private_key: current.to_base64(),
                retire_at: None,
                epoch: Some(1),
            })
            .unwrap();
        let (again, retiring) = f.load(SystemTime::now()).unwrap();
        assert!(retiring.is_none() && again.retiring.is_none());
        assert_eq!(again.current.public_key(), keys.current.public_key());
        assert!(!dir.path().join(RECORD_FILE).exists());
    }

    #[test]
    fn a_key_file_changed_under_the_agent_is_not_rotated() {
        let dir = tempfile::tempdir().unwrap();
        let f = files(dir.path());
        f.load(SystemTime::now()).unwrap();
        let stranger = PrivateKey::generate().public_key();
        assert!(matches!(
            f.rotate(&stranger, None, None),
            Err(AgentError::KeyChangedOnDisk { .. })
        ));
        assert!(!dir.path().join(RECORD_FILE).exists());
    }
}
