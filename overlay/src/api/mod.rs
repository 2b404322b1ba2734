//! The agent's local API: newline-delimited JSON over a Unix socket (mode 0600), used by
//! `wgmesh status`, `attach` (with labels) and `detach`. Only root or the agent's own user may call it: the
//! socket's mode keeps others out, and every connection's peer credentials are checked as well.
//!
//! [`serve`] accepts connections and hands each request to the agent as a [`Command`]; [`call`]
//! is the blocking client the command line uses.

pub mod docker;
pub mod status;
mod status_docker;
mod status_policy;

use std::collections::BTreeMap;
use std::io::{self, BufRead, BufReader, Write};
use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt as _, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};

/// Longest request line accepted.
const MAX_REQUEST: usize = 64 * 1024;

/// A request to the agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// The agent's status.
    Status {},
    /// Put a network namespace on the overlay, or give an attached one new labels.
    Attach {
        /// Namespace name, as under /run/netns.
        netns: String,
        /// Address wanted; the next free one when `None` (an attached namespace keeps its own).
        #[serde(default)]
        ip: Option<IpAddr>,
        /// Its labels, for the policy: all of them (an attach replaces the labels an attached
        /// namespace had). Checked by the agent as by the CLI; `host` is reserved.
        #[serde(default)]
        labels: BTreeMap<String, String>,
    },
    /// Take a network namespace off the overlay.
    Detach {
        /// Namespace name.
        netns: String,
    },
    /// Static mode: switch to a new key now, accepting the old one for `grace_secs` more.
    RotateKey {
        /// The grace window, seconds.
        grace_secs: u64,
    },
}

/// What `key rotate --socket` answers.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RotateKeyReply {
    /// The new public key, to put into the peers' configs.
    pub public_key: String,
    /// The key still accepted until `retire_at`.
    pub retiring_public_key: String,
    /// When the old key stops working (Unix seconds).
    pub retire_at: u64,
}

/// The answer to a request.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Response {
    /// Success, with a result.
    Ok {
        /// Always true.
        ok: bool,
        /// The result.
        result: serde_json::Value,
    },
    /// Failure.
    Err {
        /// Always false.
        ok: bool,
        /// What went wrong.
        error: String,
    },
}

impl Response {
    /// A success.
    pub fn ok(result: serde_json::Value) -> Self {
        Self::Ok { ok: true, result }
    }
    /// A failure.
    pub fn err(error: impl std::fmt::Display) -> Self {
        Self::Err {
            ok: false,
            error: error.to_string(),
        }
    }
}

/// A request on its way to the agent, with the channel for its answer.
pub struct Command {
    /// The request.
    pub request: Request,
    /// Where the answer goes.
    pub reply: oneshot::Sender<Response>,
}

/// Errors of the API socket and client.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Another agent answers on the socket.
    #[error("{path}: another agent is already running on this socket")]
    InUse {
        /// The socket.
        path: PathBuf,
    },
    /// Socket I/O.
    #[error("socket {path}")]
    Io {
        /// The socket.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The agent could not be reached.
    #[error(
        "cannot reach the agent at {path} (is `wgmesh agent` running, and is --socket right?)"
    )]
    Connect {
        /// The socket.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The agent's answer was not understood.
    #[error("unexpected answer from the agent")]
    Protocol(#[source] serde_json::Error),
    /// The agent refused the request.
    #[error("{0}")]
    Refused(String),
}

/// Binds the API socket at `path` (mode 0600), refusing if another agent answers there and
/// replacing a stale socket file.
pub fn bind(path: &Path) -> Result<UnixListener, ApiError> {
    let io = |source| ApiError::Io {
        path: path.to_owned(),
        source,
    };
    if std::os::unix::net::UnixStream::connect(path).is_ok() {
        return Err(ApiError::InUse {
            path: path.to_owned(),
        });
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(e)),
    }
    let listener = UnixListener::bind(path).map_err(io)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
    Ok(listener)
}

/// Accepts connections until the listener fails, sending each request to `agent`.
pub async fn serve(listener: UnixListener, agent: mpsc::Sender<Command>) {
    // SAFETY: geteuid has no preconditions.
    let own_uid = unsafe { libc::geteuid() };
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                tracing::warn!(error = %e, "local API accept failed");
                continue;
            }
        };
        let allowed = stream
            .peer_cred()
            .map(|c| c.uid() == 0 || c.uid() == own_uid)
            .unwrap_or(false);
        let agent = agent.clone();
        tokio::spawn(async move {
            if let Err(e) = connection(stream, allowed, agent).await {
                tracing::debug!(error = %e, "local API connection ended");
            }
        });
    }
}

async fn connection(
    stream: UnixStream,
    allowed: bool,
    agent: mpsc::Sender<Command>,
) -> io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut lines = tokio::io::BufReader::new(read.take(MAX_REQUEST as u64)).lines();
    while let Some(line) = lines.next_line().await? {
        let response = if !allowed {
            tracing::warn!("local API call refused: caller is neither root nor the agent's user");
            Response::err("permission denied: only root or the agent's user may use this socket")
        } else {
            match serde_json::from_str::<Request>(&line) {
                Err(e) => Response::err(format!("bad request: {e}")),
                Ok(request) => {
                    let (reply, answer) = oneshot::channel();
                    if agent.send(Command { request, reply }).await.is_err() {
                        Response::err("the agent is shutting down")
                    } else {
                        answer
                            .await
                            .unwrap_or_else(|_| Response::err("the agent is shutting down"))
                    }
                }
            }
        };
        let mut out = serde_json::to_vec(&response).expect("responses serialize");
        out.push(b'\n');
        write.write_all(&out).await?;
    }
    Ok(())
}

/// Sends one request to the agent at `socket` and returns its result.
pub fn call(socket: &Path, request: &Request) -> Result<serde_json::Value, ApiError> {
    let connect = |source| ApiError::Connect {
        path: socket.to_owned(),
        source,
    };
    let io = |source| ApiError::Io {
        path: socket.to_owned(),
        source,
    };
    let mut stream = std::os::unix::net::UnixStream::connect(socket).map_err(connect)?;
    let mut line = serde_json::to_vec(request).expect("requests serialize");
    line.push(b'\n');
    stream.write_all(&line).map_err(io)?;
    let mut answer = String::new();
    BufReader::new(&stream).read_line(&mut answer).map_err(io)?;
    match serde_json::from_str::<Response>(&answer).map_err(ApiError::Protocol)? {
        Response::Ok { result, .. } => Ok(result),
        Response::Err { error, .. } => Err(ApiError::Refused(error)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_have_a_stable_shape() {
        let r: Request = serde_json::from_str(r#"{"op":"attach","netns":"w1"}"#).unwrap();
        assert_eq!(
            r,
            Request::Attach {
                netns: "w1".into(),
                ip: None,
                labels: BTreeMap::new(),
            }
        );
        let r: Request =
            serde_json::from_str(r#"{"op":"attach","netns":"w1","labels":{"role":"frontend"}}"#)
                .unwrap();
        assert!(matches!(r, Request::Attach { labels, .. } if labels["role"] == "frontend"));
        let r: Request =
            serde_json::from_str(r#"{"op":"attach","netns":"w1","ip":"10.42.1.9"}"#).unwrap();
        assert!(matches!(r, Request::Attach { ip: Some(_), .. }));
        assert!(serde_json::from_str::<Request>(r#"{"op":"attach"}"#).is_err());
        assert!(serde_json::from_str::<Request>(r#"{"op":"reboot"}"#).is_err());
        assert!(serde_json::from_str::<Request>(r#"{"op":"status","x":1}"#).is_err());
    }

    #[tokio::test]
    async fn round_trip_over_a_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.sock");
        let listener = bind(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let (tx, mut rx) = mpsc::channel::<Command>(4);
        tokio::spawn(serve(listener, tx));
        tokio::spawn(async move {
            while let Some(cmd) = rx.recv().await {
                let answer = match cmd.request {
                    Request::Status {} => Response::ok(serde_json::json!({"name": "a"})),
                    _ => Response::err("no such namespace"),
                };
                let _ = cmd.reply.send(answer);
            }
        });
        // A second agent on the same socket is refused.
        assert!(matches!(bind(&path), Err(ApiError::InUse { .. })));
        let p = path.clone();
        let (status, refused) = tokio::task::spawn_blocking(move || {
            (
                call(&p, &Request::Status {}),
                call(&p, &Request::Detach { netns: "x".into() }),
            )
        })
        .await
        .unwrap();
        assert_eq!(status.unwrap()["name"], "a");
        assert_eq!(refused.unwrap_err().to_string(), "no such namespace");
    }
}
