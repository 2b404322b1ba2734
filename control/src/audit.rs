//! The audit log: one [`AuditEvent`] per join, refusal, admin action and key change, written by
//! [`AuditLog`] as one JSON line, fsynced.
//!
//! The log rotates by size so it never fills the disk: when a line would take the file past
//! `max_bytes`, `audit.jsonl` is renamed to `audit.jsonl.1` (`.1` to `.2` and so on first, up
//! to `keep` old files; the oldest is deleted) and a new file is started. The files take at
//! most `(keep + 1) * max_bytes` bytes (plus one line). Every file is created with mode 0600.
//!
//! The event type cannot hold a secret: every field is an id, a validated [`HostName`] or
//! policy [`Origin`] (a file name), a public key, an address, a time, a number or a closed
//! enum; there is no free-form
//! string or map, so a token, a credential or a request body cannot end up in the log by
//! accident. The types are pure; only [`AuditLog`] performs I/O.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use wgmesh_client::api::ApiReason as Reason;
use wgmesh_client::private_dir;
use wgmesh_config::policy::Origin;
use wgmesh_config::{HostName, PublicKey};

use crate::ids::{HostId, TokenId};

/// One audited event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditEvent {
    /// When (unix seconds).
    pub time: u64,
    /// Who: the admin, a host, a joining host, or an unauthenticated caller.
    pub actor: Actor,
    /// The caller's address, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<IpAddr>,
    /// What was attempted.
    pub action: Action,
    /// What it was attempted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<Target>,
    /// Whether it was done, or why not.
    pub result: Outcome,
}

/// Who acted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Actor {
    /// The holder of the admin token.
    Admin,
    /// A joined host, authenticated by its credential.
    Host {
        /// The host's id.
        id: HostId,
        /// The host's name.
        name: HostName,
    },
    /// A host joining with a join token (the token's id once it is recognised, never its
    /// secret).
    Joiner {
        /// The token used, if it was recognised.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        token: Option<TokenId>,
    },
    /// A caller without valid credentials.
    Anonymous,
    /// The control plane itself: its key-rotation schedule (the interval, the deadlines, the
    /// start of the next queued rotation).
    ControlPlane,
}

/// What was attempted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// A host joined (or tried to).
    Join,
    /// An admin created a join token.
    TokenCreate,
    /// An admin revoked a join token.
    TokenRevoke,
    /// An admin listed the join tokens.
    TokenList,
    /// An admin listed the hosts.
    NodeList,
    /// An admin removed a host.
    NodeRemove,
    /// A host changed its endpoint.
    EndpointChange,
    /// A host reported its workloads (a changed list; a repeat of the list held leaves no line).
    WorkloadsReport,
    /// A host's key rotation was queued (by an admin, or by the rotation interval).
    KeyRotationQueue,
    /// A host was asked for a new key: its queued rotation started.
    KeyRotationRequest,
    /// A host reported its new key, which is announced to its peers (or tried to).
    KeyAnnounce,
    /// A host's new key was registered and its old key retired: the rotation completed,
    /// reported by the host (its peers moved) or at the deadline (or the host tried to).
    KeyRetire,
    /// A host's rotation was abandoned: it reported no new key in time and keeps its old one.
    KeyRotationAbandon,
    /// A host read a netmap.
    NetmapRead,
    /// An admin applied a policy (or tried to).
    PolicyApply,
    /// An admin removed the policy.
    PolicyRemove,
    /// An admin read the policy.
    PolicyShow,
    /// An admin asked what the policy decides for a flow.
    PolicyExplain,
}

/// What an action was on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Target {
    /// A host, by name (and id once it has one).
    Host {
        /// The host's id, when it exists.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<HostId>,
        /// The host's name.
        name: HostName,
    },
    /// A host's key rotation: the host, the epoch of the rotation's new key, and that key
    /// once it is known (a public key, not a secret).
    HostKey {
        /// The host's id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<HostId>,
        /// The host's name.
        name: HostName,
        /// The rotation's epoch.
        epoch: u64,
        /// The new key, once the host reported it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        key: Option<PublicKey>,
    },
    /// A join token, by id.
    Token {
        /// The token's id.
        id: TokenId,
    },
    /// A policy, by the file it came from (and the registry revision that applied it, once
    /// it was).
    Policy {
        /// The policy file's name.
        origin: Origin,
        /// The registry revision that applied it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        revision: Option<u64>,
    },
}

/// The result of an action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Outcome {
    /// Done.
    Ok,
    /// Refused, with a reason code.
    Refused(Reason),
}

impl AuditEvent {
    /// The event as one JSON line, newline included.
    pub fn to_line(&self) -> Vec<u8> {
        // Every field is a plain value or a closed enum: serialising cannot fail.
        let mut line = serde_json::to_vec(self).unwrap_or_default();
        line.push(b'\n');
        line
    }
}

/// Why the audit log could not be written.
#[derive(Debug, thiserror::Error)]
#[error("{}: cannot {action} the audit log: {source}", path.display())]
pub struct AuditError {
    /// The audit log file.
    pub path: PathBuf,
    /// "open" or "append to".
    pub action: &'static str,
    /// The error.
    pub source: io::Error,
}

pub use wgmesh_config::control::{DEFAULT_AUDIT_KEEP, DEFAULT_AUDIT_MAX_BYTES};

/// An append-only audit log file (mode 0600) that rotates by size; events are fsynced.
#[derive(Debug)]
pub struct AuditLog {
    path: PathBuf,
    file: File,
    /// The current file's size.
    size: u64,
    max_bytes: u64,
    keep: u32,
}

impl AuditLog {
    /// Opens `path` for appending, creating it (mode 0600) if it is missing, rotating at the
    /// default size and keeping the default number of old files.
    pub fn open(path: &Path) -> Result<Self, AuditError> {
        Self::open_rotating(path, DEFAULT_AUDIT_MAX_BYTES, DEFAULT_AUDIT_KEEP)
    }

    /// Opens `path` for appending (mode 0600, made so if it was wider), rotating when the file
    /// would grow past `max_bytes` (at least 1) and keeping `keep` old files.
    pub fn open_rotating(path: &Path, max_bytes: u64, keep: u32) -> Result<Self, AuditError> {
        let err = |source| AuditError {
            path: path.to_path_buf(),
            action: "open",
            source,
        };
        let file = open_private(path).map_err(err)?;
        private_dir::narrow(&file, path, 0o600).map_err(err)?;
        let meta = file.metadata().map_err(err)?;
        Ok(Self {
            path: path.to_path_buf(),
            file,
            size: meta.len(),
            max_bytes: max_bytes.max(1),
            keep,
        })
    }

    /// The `n`th old file (`audit.jsonl.1` is the newest).
    pub fn rotated_path(&self, n: u32) -> PathBuf {
        let mut p = self.path.as_os_str().to_owned();
        p.push(format!(".{n}"));
        PathBuf::from(p)
    }

    /// Shifts the old files up by one (dropping the oldest), moves the current file to `.1`
    /// (or deletes it when none are kept) and starts a new one.
    fn rotate(&mut self) -> io::Result<()> {
        if self.keep == 0 {
            fs::remove_file(&self.path)?;
        } else {
            for n in (1..self.keep).rev() {
                match fs::rename(self.rotated_path(n), self.rotated_path(n + 1)) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                    _ => {}
                }
            }
            fs::rename(&self.path, self.rotated_path(1))?;
        }
        self.file = open_private(&self.path)?;
        self.size = 0;
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            File::open(dir)?.sync_all()?;
        }
        tracing::info!(path = %self.path.display(), keep = self.keep, "rotated the audit log");
        Ok(())
    }

    /// The log file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one event. Events that record a change are fsynced; refusals (whoever the
    /// caller) are only written (the kernel flushes them soon): they change nothing, and are
    /// written under the control plane's lock, so a flood of refused requests must not make
    /// every caller wait for the disk.
    pub fn record(&mut self, event: &AuditEvent) -> Result<(), AuditError> {
        let sync = !matches!(event.result, Outcome::Refused(_));
        let line = event.to_line();
        let len = line.len() as u64;
        if self.size > 0 && self.size.saturating_add(len) > self.max_bytes {
            self.rotate().map_err(|source| AuditError {
                path: self.path.clone(),
                action: "rotate",
                source,
            })?;
        }
        self.file
            .write_all(&line)
            .and_then(|()| if sync { self.file.sync_data() } else { Ok(()) })
            .map_err(|source| AuditError {
                path: self.path.clone(),
                action: "append to",
                source,
            })?;
        self.size += len;
        Ok(())
    }
}

/// Opens `path` for appending, creating it with mode 0600 (the umask cannot widen it).
fn open_private(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::{RegistryError, TokenRefused};
    use std::fs::Permissions;
    use std::os::unix::fs::PermissionsExt as _;

    fn join_refused() -> AuditEvent {
        AuditEvent {
            time: 1_700_000_000,
            actor: Actor::Joiner { token: None },
            from: Some("198.18.0.4".parse().unwrap()),
            action: Action::Join,
            target: Some(Target::Host {
                id: None,
                name: "host-d".parse().unwrap(),
            }),
            result: Outcome::Refused((&TokenRefused::Unknown).into()),
        }
    }

    #[test]
    fn event_is_one_json_line_with_the_documented_shape() {
        let line = String::from_utf8(join_refused().to_line()).unwrap();
        assert_eq!(
            line,
            "{\"time\":1700000000,\"actor\":{\"kind\":\"joiner\"},\"from\":\"198.18.0.4\",\
             \"action\":\"join\",\"target\":{\"kind\":\"host\",\"name\":\"host-d\"},\
             \"result\":{\"refused\":\"token_unknown\"}}\n"
        );
        let ok = AuditEvent {
            time: 1,
            actor: Actor::Admin,
            from: None,
            action: Action::NodeRemove,
            target: Some(Target::Host {
                id: Some(HostId(3)),
                name: "host-c".parse().unwrap(),
            }),
            result: Outcome::Ok,
        };
        let json = serde_json::to_string(&ok).unwrap();
        assert!(json.contains("\"result\":\"ok\""), "{json}");
        assert_eq!(serde_json::from_str::<AuditEvent>(&json).unwrap(), ok);
        // Unknown fields (a smuggled "token") are not part of the type.
        let smuggled = json.replace("\"time\":1", "\"time\":1,\"token\":\"WGM1-x-secret\"");
        assert!(serde_json::from_str::<AuditEvent>(&smuggled).is_err());
    }

    #[test]
    fn registry_errors_map_to_reasons() {
        let e = RegistryError::Token(TokenRefused::Expired {
            id: TokenId(1),
            expired_at: 5,
        });
        assert_eq!(Reason::from(&e), Reason::TokenExpired);
        let e = RegistryError::NoSuchHost("x".into());
        assert_eq!(Reason::from(&e), Reason::NotFound);
    }

    #[test]
    fn log_rotates_at_max_bytes_and_keeps_at_most_keep_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let line = join_refused().to_line().len() as u64;
        // Three lines fit in a file; a fourth rotates.
        let mut log = AuditLog::open_rotating(&path, 3 * line, 2).unwrap();
        for _ in 0..20 {
            log.record(&join_refused()).unwrap();
        }
        let mut names: Vec<String> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["audit.jsonl", "audit.jsonl.1", "audit.jsonl.2"]);
        for name in &names {
            let p = dir.path().join(name);
            let meta = fs::metadata(&p).unwrap();
            assert!(meta.len() <= 3 * line, "{name} is {} bytes", meta.len());
            assert_eq!(meta.permissions().mode() & 0o777, 0o600, "{name}");
        }
        // 20 lines: 18 in six full files, of which two old ones are kept, and 2 current.
        let lines = |n: &str| {
            fs::read_to_string(dir.path().join(n))
                .unwrap()
                .lines()
                .count()
        };
        assert_eq!(
            (
                lines("audit.jsonl"),
                lines("audit.jsonl.1"),
                lines("audit.jsonl.2")
            ),
            (2, 3, 3)
        );
        // A reopened log counts the existing file's size.
        drop(log);
        let mut log = AuditLog::open_rotating(&path, 3 * line, 2).unwrap();
        log.record(&join_refused()).unwrap();
        log.record(&join_refused()).unwrap();
        assert_eq!(
            lines("audit.jsonl"),
            1,
            "rotated on the 4th line of the file"
        );
    }

    #[test]
    fn keep_zero_keeps_only_the_current_file_and_a_wide_mode_is_narrowed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        fs::write(&path, "").unwrap();
        fs::set_permissions(&path, Permissions::from_mode(0o644)).unwrap();
        let line = join_refused().to_line().len() as u64;
        let mut log = AuditLog::open_rotating(&path, line, 0).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        for _ in 0..5 {
            log.record(&join_refused()).unwrap();
        }
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
        assert_eq!(fs::metadata(&path).unwrap().len(), line);
    }

    #[test]
    fn log_appends_lines_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let mut log = AuditLog::open(&path).unwrap();
        log.record(&join_refused()).unwrap();
        drop(log);
        let mut log = AuditLog::open(&path).unwrap();
        log.record(&join_refused()).unwrap();
        let text = fs::read_to_string(&path).unwrap();
        let events: Vec<AuditEvent> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(events, vec![join_refused(), join_refused()]);
        let mode = fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let err = AuditLog::open(&dir.path().join("no/such/dir")).unwrap_err();
        assert!(
            err.to_string().contains("cannot open the audit log"),
            "{err}"
        );
    }
}
