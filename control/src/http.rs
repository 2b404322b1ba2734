//! The HTTPS server: TLS (rustls) and HTTP/1.1 (hyper, axum routing) around
//! [`Control`], one route per call of docs/CONTROL-API.md, and the netmap long poll.
//!
//! Every handler parses and authenticates the request, then makes one call on [`Control`]
//! under its lock, on a blocking thread (commits fsync). A change wakes every waiting long poll
//! through a watch channel holding the registry revision.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Extension, Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};
use http_body_util::{BodyExt as _, LengthLimitError, Limited};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use rustls::ServerConfig;
use serde::de::DeserializeOwned;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::audit::Action;
use crate::clock::unix_now;
use crate::limiter::RefusalLimiter;
use crate::service::{ApiError, Caller, Control};
use wgmesh_client::api::{
    ApiReason, ErrorBody, NetmapQuery, DEFAULT_WAIT_SECS, MAX_BODY, MAX_WAIT_SECS,
};

/// How long a client has to finish the TLS handshake and send its request headers.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Most connections served at once (every agent holds one long poll); more wait in the
/// listen backlog.
const MAX_CONNECTIONS: usize = 16384;

/// The state every handler shares.
#[derive(Debug)]
pub struct Shared {
    control: Mutex<Control>,
    /// The control plane's run (see [`Control::epoch`]).
    epoch: u64,
    limiter: Mutex<RefusalLimiter>,
    /// The registry's netmap revision: long polls wait for it to move.
    revision: watch::Sender<u64>,
}

impl Shared {
    /// Wraps `control` for serving.
    pub fn new(control: Control) -> Arc<Self> {
        let (revision, _) = watch::channel(control.registry().netmap_revision());
        Arc::new(Self {
            epoch: control.epoch(),
            control: Mutex::new(control),
            limiter: Mutex::new(RefusalLimiter::default()),
            revision,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Control> {
        // A panic in a handler leaves the registry as it was before the call: every change is
        // committed and applied in one step, after all checks.
        self.control.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `f` on the control plane on a blocking thread, then wakes long polls if the
    /// revision moved.
    async fn call<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&mut Control) -> T + Send + 'static,
    ) -> T {
        let shared = Arc::clone(self);
        tokio::task::spawn_blocking(move || {
            let mut control = shared.lock();
            control.recover_if_needed();
            let out = f(&mut control);
            let revision = control.registry().netmap_revision();
            shared.revision.send_if_modified(|r| {
                let moved = *r != revision;
                *r = revision;
                moved
            });
            out
        })
        .await
        .expect("a control plane call panicked")
    }
}

/// The caller's address, added to each connection's requests.
#[derive(Debug, Clone, Copy)]
struct Remote(SocketAddr);

/// The API's routes.
pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/v1/join", post(join))
        .route("/v1/hosts/{name}/netmap", get(netmap))
        .route("/v1/hosts/{name}/endpoint", put(endpoint))
        .route("/v1/tokens", post(create_token).get(list_tokens))
        .route("/v1/tokens/{id}", delete(revoke_token))
        .route("/v1/nodes", get(list_nodes))
        .route("/v1/nodes/{name}", delete(remove_node))
        .fallback(|| async {
            refusal(
                ApiReason::NotFound,
                "no such route; see docs/CONTROL-API.md",
            )
        })
        .method_not_allowed_fallback(|| async {
            refusal(
                ApiReason::MethodNotAllowed,
                "this route does not take this method",
            )
        })
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&shared),
            limit_refusals,
        ))
        .with_state(shared)
}

/// Accepts TLS connections on `listener` and serves the API until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    shared: Arc<Shared>,
    shutdown: impl Future<Output = ()>,
) {
    let acceptor = TlsAcceptor::from(tls);
    let router = router(shared);
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    tokio::pin!(shutdown);
    loop {
        let slot = tokio::select! {
            slot = Arc::clone(&slots).acquire_owned() => slot.expect("the semaphore is never closed"),
            () = &mut shutdown => return,
        };
        let (tcp, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => return,
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let service = TowerToHyperService::new(router.clone().layer(Extension(Remote(remote))));
        tokio::spawn(async move {
            let _slot = slot;
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::debug!(%remote, "TLS handshake failed: {e}");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%remote, "TLS handshake timed out");
                    return;
                }
            };
            let served = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HANDSHAKE_TIMEOUT)
                .serve_connection(TokioIo::new(tls), service)
                .await;
            if let Err(e) = served {
                tracing::debug!(%remote, "connection ended: {e}");
            }
        });
    }
}

/// Answers `429` to an address that was refused too often lately (see [`RefusalLimiter`]),
/// and counts this request's refusal if it is one.
async fn limit_refusals(
    State(shared): State<Arc<Shared>>,
    Extension(Remote(remote)): Extension<Remote>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let limiter = || shared.limiter.lock().unwrap_or_else(|e| e.into_inner());
    if limiter().is_limited(remote.ip(), Instant::now()) {
        // Hosts and the admin behind the same address go on: checking a bearer token is a
        // hash and an index lookup, unlike the parsing, auditing and storing of the rest.
        let token = bearer(request.headers());
        let known = !matches!(
            shared.lock().authenticate(token.as_deref()),
            Caller::Anonymous
        );
        if !known {
            return refusal(
                ApiReason::TooManyRequests,
                "too many refused requests from this address; wait a few seconds",
            );
        }
    }
    let response = next.run(request).await;
    if matches!(response.status().as_u16(), 400 | 401) {
        limiter().refused(remote.ip(), Instant::now());
    }
    response
}

fn refusal(reason: ApiReason, message: impl Into<String>) -> Response {
    let status = StatusCode::from_u16(reason.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = ErrorBody {
        error: message.into(),
        reason,
    };
    (status, Json(body)).into_response()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        refusal(self.reason, self.message)
    }
}

fn reply<T: serde::Serialize>(result: Result<T, ApiError>) -> Response {
    match result {
        Ok(v) => Json(v).into_response(),
        Err(e) => e.into_response(),
    }
}

/// The bearer token of the `Authorization` header, if there is one.
fn bearer(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_owned())
}

/// A JSON body of type `T`, or the 400/408/413 refusal for it. At most [`MAX_BODY`] bytes are
/// read, and the whole body must arrive within [`HANDSHAKE_TIMEOUT`] (no trickling).
async fn parse_body<T: DeserializeOwned>(body: Body) -> Result<T, ApiError> {
    let too_large = || {
        ApiError::new(
            ApiReason::TooLarge,
            format!("the body is larger than {MAX_BODY} bytes"),
        )
    };
    let read = tokio::time::timeout(HANDSHAKE_TIMEOUT, Limited::new(body, MAX_BODY).collect());
    let bytes = match read.await {
        Ok(Ok(collected)) => collected.to_bytes(),
        Ok(Err(e)) if e.is::<LengthLimitError>() => return Err(too_large()),
        Ok(Err(e)) => {
            return Err(ApiError::new(
                ApiReason::BadRequest,
                format!("cannot read the body: {e}"),
            ))
        }
        Err(_) => {
            return Err(ApiError::new(
                ApiReason::BadRequest,
                format!("the body did not arrive within {HANDSHAKE_TIMEOUT:?}"),
            ))
        }
    };
    let bad = |e: serde_json::Error| {
        ApiError::new(
            ApiReason::BadRequest,
            format!("the body is not valid JSON for this call: {e}"),
        )
    };
    // serde would also read a struct from a JSON array (`[]` as "all defaults"): only objects.
    let value: serde_json::Value = serde_json::from_slice(&bytes).map_err(bad)?;
    if !value.is_object() {
        return Err(ApiError::new(
            ApiReason::BadRequest,
            "the body must be a JSON object; see docs/CONTROL-API.md",
        ));
    }
    serde_json::from_value(value).map_err(bad)
}

/// Parses the body, or audits and returns the refusal.
async fn body_or_refuse<T: DeserializeOwned>(
    shared: &Arc<Shared>,
    token: Option<&str>,
    action: Action,
    remote: IpAddr,
    body: Body,
) -> Result<T, Response> {
    match parse_body::<T>(body).await {
        Ok(v) => Ok(v),
        Err(e) => {
            let response = e.clone().into_response();
            let token = token.map(str::to_owned);
            shared
                .call(move |c| {
                    let caller = c.authenticate(token.as_deref());
                    c.refused_request(&caller, action, &e, unix_now(), Some(remote));
                })
                .await;
            Err(response)
        }
    }
}

/// Authenticates `token`, makes one call on the control plane as that caller (with the time),
/// and answers with its result as JSON.
async fn as_caller<T: serde::Serialize + Send + 'static>(
    shared: &Arc<Shared>,
    token: Option<String>,
    f: impl FnOnce(&mut Control, &Caller, u64) -> Result<T, ApiError> + Send + 'static,
) -> Response {
    reply(
        shared
            .call(move |c| {
                let caller = c.authenticate(token.as_deref());
                f(c, &caller, unix_now())
            })
            .await,
    )
}

type Handled = Result<Response, Response>;

async fn join(
    State(shared): State<Arc<Shared>>,
    Extension(Remote(remote)): Extension<Remote>,
    body: Body,
) -> Handled {
    let body = body_or_refuse(&shared, None, Action::Join, remote.ip(), body).await?;
    Ok(as_caller(&shared, None, move |c, _, now| {
        c.join(body, now, Some(remote.ip()))
    })
    .await)
}

async fn netmap(
    State(shared): State<Arc<Shared>>,
    Extension(Remote(remote)): Extension<Remote>,
    headers: HeaderMap,
    Path(name): Path<String>,
    query: Result<Query<NetmapQuery>, QueryRejection>,
) -> Handled {
    let token = bearer(&headers);
    let Query(query) = query.map_err(|e| {
        refusal(
            ApiReason::BadRequest,
            format!("bad query: {e}; use ?revision=N&wait=SECONDS"),
        )
    })?;
    let wait = Duration::from_secs(query.wait.unwrap_or(DEFAULT_WAIT_SECS).min(MAX_WAIT_SECS));
    // Subscribe before checking, so a change between the check and the wait is not missed.
    // Any other revision answers at once, a lower one too: a store restored from a backup must
    // not leave agents waiting for a revision that will not come for a long time.
    let mut revisions = shared.revision.subscribe();
    let from = Some(remote.ip());
    {
        let name = name.clone();
        let held = query.revision;
        let check = as_caller(&shared, token.clone(), move |c, caller, now| {
            c.check_netmap_access(caller, &name, held, now, from)
        })
        .await;
        if !check.status().is_success() {
            return Err(check);
        }
    }
    // A netmap of another run (a restart, a restored store) may share its revision with a
    // different netmap of this run: answer at once with the whole one.
    let other_run = query.delta && query.epoch != shared.epoch;
    let newer = other_run
        || matches!(
            tokio::time::timeout(wait, revisions.wait_for(|r| *r != query.revision)).await,
            Ok(Ok(_))
        );
    if !newer {
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    if query.delta {
        let held = (query.revision, query.epoch);
        return Ok(as_caller(&shared, token, move |c, caller, now| {
            c.netmap_update(caller, &name, held, now, from)
        })
        .await);
    }
    Ok(as_caller(&shared, token, move |c, caller, now| {
        c.netmap(caller, &name, now, from)
    })
    .await)
}

async fn endpoint(
    State(shared): State<Arc<Shared>>,
    Extension(Remote(remote)): Extension<Remote>,
    headers: HeaderMap,
    Path(name): Path<String>,
    body: Body,
) -> Handled {
    let token = bearer(&headers);
    let action = Action::EndpointChange;
    let body = body_or_refuse(&shared, token.as_deref(), action, remote.ip(), body).await?;
    Ok(as_caller(&shared, token, move |c, caller, now| {
        c.set_endpoint(caller, &name, body, now, Some(remote.ip()))
    })
    .await)
}

async fn create_token(
    State(shared): State<Arc<Shared>>,
    Extension(Remote(remote)): Extension<Remote>,
    headers: HeaderMap,
    body: Body,
) -> Handled {
    let token = bearer(&headers);
    let action = Action::TokenCreate;
    let body = body_or_refuse(&shared, token.as_deref(), action, remote.ip(), body).await?;
    Ok(as_caller(&shared, token, move |c, caller, now| {
        c.create_token(caller, body, now, Some(remote.ip()))
    })
    .await)
}

async fn list_nodes(
    State(shared): State<Arc<Shared>>,
    Extension(Remote(remote)): Extension<Remote>,
    headers: HeaderMap,
) -> Response {
    as_caller(&shared, bearer(&headers), move |c, caller, now| {
        c.list_nodes(caller, now, Some(remote.ip()))
    })
    .await
}

async fn remove_node(
    State(shared): State<Arc<Shared>>,
    Extension(Remote(remote)): Extension<Remote>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Response {
    as_caller(&shared, bearer(&headers), move |c, caller, now| {
        c.remove_node(caller, &name, now, Some(remote.ip()))
    })
    .await
}

async fn list_tokens(
    State(shared): State<Arc<Shared>>,
    Extension(Remote(remote)): Extension<Remote>,
    headers: HeaderMap,
) -> Response {
    as_caller(&shared, bearer(&headers), move |c, caller, now| {
        c.list_tokens(caller, now, Some(remote.ip()))
    })
    .await
}

async fn revoke_token(
    State(shared): State<Arc<Shared>>,
    Extension(Remote(remote)): Extension<Remote>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    as_caller(&shared, bearer(&headers), move |c, caller, now| {
        c.revoke_token(caller, &id, now, Some(remote.ip()))
    })
    .await
}
