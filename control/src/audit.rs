//! The audit log: one [`AuditEvent`] per join, refusal, admin action and key change, written by
//! [`AuditLog`] as one JSON line, fsynced.
//!
//! The event type cannot hold a secret: every field is an id, a validated [`HostName`], an
//! address, a time or a closed enum; there is no free-form string or map, so a token, a
//! credential or a request body cannot end up in the log by accident. The types are pure;
//! only [`AuditLog`] performs I/O.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use wgmesh_client::api::ApiReason as Reason;
use wgmesh_config::HostName;

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
    /// A host changed its key.
    KeyChange,
    /// A host read a netmap.
    NetmapRead,
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
    /// A join token, by id.
    Token {
        /// The token's id.
        id: TokenId,
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

/// An append-only audit log file (created with mode 0600); every event is fsynced.
#[derive(Debug)]
pub struct AuditLog {
    path: PathBuf,
    file: File,
}

impl AuditLog {
    /// Opens `path` for appending, creating it (mode 0600) if it is missing.
    pub fn open(path: &Path) -> Result<Self, AuditError> {
        let file = OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .open(path)
            .map_err(|source| AuditError {
                path: path.to_path_buf(),
                action: "open",
                source,
            })?;
        Ok(Self {
            path: path.to_path_buf(),
            file,
        })
    }

    /// The log file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one event. Events that record a change or an authenticated caller are fsynced;
    /// refusals of unauthenticated callers are only written (the kernel flushes them soon), so
    /// that a flood of junk requests cannot make every caller wait for the disk.
    pub fn record(&mut self, event: &AuditEvent) -> Result<(), AuditError> {
        let sync = !matches!(
            (&event.actor, &event.result),
            (
                Actor::Anonymous | Actor::Joiner { token: None },
                Outcome::Refused(_)
            )
        );
        self.file
            .write_all(&event.to_line())
            .and_then(|()| if sync { self.file.sync_data() } else { Ok(()) })
            .map_err(|source| AuditError {
                path: self.path.clone(),
                action: "append to",
                source,
            })
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;
    use crate::registry::{RegistryError, TokenRefused};

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
    fn log_appends_lines_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let mut log = AuditLog::open(&path).unwrap();
        log.record(&join_refused()).unwrap();
        drop(log);
        let mut log = AuditLog::open(&path).unwrap();
        log.record(&join_refused()).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let events: Vec<AuditEvent> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(events, vec![join_refused(), join_refused()]);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let err = AuditLog::open(&dir.path().join("no/such/dir")).unwrap_err();
        assert!(
            err.to_string().contains("cannot open the audit log"),
            "{err}"
        );
    }
}
