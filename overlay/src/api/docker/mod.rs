//! The Docker plugin socket: Docker's remote network driver and remote IPAM driver, served on
//! `{plugin_dir}/wgmesh.sock` (HTTP/1.1 on a unix socket, mode 0600, root's dockerd only).
//!
//! Thin: the handshake and capability calls are answered from constants
//! ([`protocol::route`]); every other call is parsed and handed to the agent as a
//! [`PluginCall`], and the handler waits for its answer. The socket is bound before the agent
//! has its subnet (Docker gives up on a plugin whose socket is missing), so a call that comes
//! while the agent is still starting waits up to [`AGENT_WAIT`], then fails with a clear error.
//! Handlers never call the Docker API (dockerd may be waiting for this very call).
//!
//! Docker sends no `Content-Type`: bodies are read raw and parsed with serde_json. Errors go out
//! as HTTP 500 with `{"Err": ...}`, which both drivers' clients show to the user.

pub mod protocol;

use std::path::{Path, PathBuf};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use serde_json::Value;
use tokio::net::UnixListener;
use tokio::sync::{mpsc, oneshot};

use protocol::{Call, Route};

/// How long a call waits for the agent (starting, or busy with another call).
pub const AGENT_WAIT: Duration = Duration::from_secs(20);
/// Largest request body read.
const MAX_BODY: usize = 1024 * 1024;
/// The content type Docker's own plugin helpers answer with.
const CONTENT_TYPE: &str = "application/vnd.docker.plugins.v1.2+json";

/// A plugin call on its way to the agent, with the channel for its answer: the JSON body, or
/// an error message for the user.
pub struct PluginCall {
    /// The call.
    pub call: Call,
    /// Where the answer goes; closed when the caller gave up waiting.
    pub reply: oneshot::Sender<Result<Value, String>>,
}

/// Errors of the plugin socket.
#[derive(Debug, thiserror::Error)]
#[error("Docker plugin socket {path}")]
pub struct PluginSocketError {
    /// The socket.
    pub path: PathBuf,
    /// The cause.
    #[source]
    pub source: std::io::Error,
}

/// Binds the plugin socket at `path` (mode 0600), replacing a stale socket file and creating
/// its folder.
pub fn bind(path: &Path) -> Result<UnixListener, PluginSocketError> {
    use std::os::unix::fs::PermissionsExt;
    let err = |source| PluginSocketError {
        path: path.to_owned(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(err(e)),
    }
    let listener = UnixListener::bind(path).map_err(err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(err)?;
    Ok(listener)
}

/// Serves the plugin on `listener` until the task is dropped, sending calls to `agent`.
pub async fn serve(listener: UnixListener, agent: mpsc::Sender<PluginCall>) {
    serve_waiting(listener, agent, AGENT_WAIT).await;
}

/// [`serve`], with calls waiting up to `wait` for the agent.
async fn serve_waiting(listener: UnixListener, agent: mpsc::Sender<PluginCall>, wait: Duration) {
    let app = Router::new()
        .fallback(handle)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(Handler { agent, wait });
    if let Err(e) = axum::serve(listener, app).await {
        tracing::error!("the Docker plugin socket stopped serving: {e}");
    }
}

/// What every request is handled with.
#[derive(Clone)]
struct Handler {
    agent: mpsc::Sender<PluginCall>,
    wait: Duration,
}

async fn handle(State(h): State<Handler>, uri: Uri, body: Bytes) -> Response {
    let path = uri.path();
    let method = match protocol::route(path) {
        Route::Static(v) => return answer(StatusCode::OK, &v),
        Route::Unknown => {
            tracing::debug!(path, "unknown Docker plugin call");
            return answer(
                StatusCode::NOT_FOUND,
                &protocol::error(&format!("wgmesh: {path} is not a call of this plugin")),
            );
        }
        Route::Agent(method) => method,
    };
    let call = match protocol::parse_call(method, &body) {
        Ok(call) => call,
        Err(e) => {
            tracing::warn!(method, "bad Docker plugin request: {e}");
            return answer(
                StatusCode::BAD_REQUEST,
                &protocol::error(&format!("wgmesh: bad {method} request: {e}")),
            );
        }
    };
    match ask(&h.agent, call, h.wait).await {
        Ok(v) => answer(StatusCode::OK, &v),
        Err(message) => {
            tracing::info!(method, "Docker plugin call refused: {message}");
            answer(
                StatusCode::INTERNAL_SERVER_ERROR,
                &protocol::error(&format!("wgmesh: {message}")),
            )
        }
    }
}

/// Hands `call` to the agent and waits for its answer, at most `wait`.
async fn ask(
    agent: &mpsc::Sender<PluginCall>,
    call: Call,
    wait: Duration,
) -> Result<Value, String> {
    let (reply, answer) = oneshot::channel();
    let asked = async {
        agent
            .send(PluginCall { call, reply })
            .await
            .map_err(|_| "the agent is shutting down".to_owned())?;
        answer
            .await
            .map_err(|_| "the agent is shutting down".to_owned())?
    };
    tokio::time::timeout(wait, asked).await.unwrap_or_else(|_| {
        Err(format!(
            "the agent did not answer within {} s: it is still starting (waiting for its \
             control plane?) or stuck; see its log, then try again",
            wait.as_secs_f32()
        ))
    })
}

fn answer(status: StatusCode, body: &Value) -> Response {
    (
        status,
        [(axum::http::header::CONTENT_TYPE, CONTENT_TYPE)],
        body.to_string(),
    )
        .into_response()
}

#[cfg(test)]
mod tests;
