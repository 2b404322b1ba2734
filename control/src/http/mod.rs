//! The HTTPS server: TLS (rustls) and HTTP/1.1 (hyper, axum routing) around
//! [`Control`], one route per call of docs/CONTROL-API.md, and the netmap long poll.
//!
//! Every handler parses and authenticates the request, then makes one call on [`Control`]
//! under its lock, on a blocking thread (commits fsync). A change wakes every waiting long poll
//! through a watch channel holding the registry revision.
//!
//! Limits ([`ServeLimits`], [`crate::limiter`]): connections are counted per source address
//! before the TLS handshake, and one over the address's cap or the global cap is closed at
//! once; the handshake and the request headers must arrive within a timeout; an address (an
//! IPv6 /64) whose requests keep being refused is answered 429 without its requests reaching
//! the lock, unless they carry a credential someone holds ([`known`]); a request without a
//! bearer token is refused 401 without the lock; a host's endpoint reports, its workload
//! reports, its key reports and its refused calls are limited by token buckets (429 with
//! `Retry-After`); and the netmaps a host's long polls get are paced, at most one per interval.
//!
//! Beside the routes, [`schedule_rotations`] (`rotation`, with the rotation routes) steps key rotations on a
//! timer, through the same
//! lock and commit path.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Extension, Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};
use http_body_util::{BodyExt as _, LengthLimitError, Limited};
use serde::de::DeserializeOwned;
use tokio::sync::watch;

use crate::audit::Action;
use crate::clock::unix_now;
use crate::limiter::{
    ConnectionCounts, HostBudget, NetmapPacer, RefusalLimiter, ENDPOINT_RATE, HOST_REFUSAL_RATE,
    KEY_REPORTS_RATE, WORKLOADS_RATE,
};
use crate::service::{unauthenticated, ApiError, Caller, Control};
use wgmesh_client::api::{
    ApiReason, ErrorBody, NetmapQuery, DEFAULT_WAIT_SECS, MAX_BODY, MAX_WAIT_SECS,
    MAX_WORKLOADS_BODY,
};

mod accept;
mod known;
mod policy;
mod rotation;

pub use accept::{serve, ServeLimits};
pub use rotation::{schedule_rotations, ROTATION_TICK};

/// The state every handler shares.
///
/// Locks: `control` is a std `Mutex` taken only on blocking threads (`spawn_blocking`, see
/// [`Shared::call`]), never on the async workers: a call holds it across a store commit, which
/// fsyncs, and a tokio `Mutex` would still hold a worker's attention for the fsync. The small
/// std `Mutex`es of the limiters are held for a map lookup only, never across I/O or an
/// `.await`, so taking them on a worker cannot block it for long.
#[derive(Debug)]
pub struct Shared {
    control: Mutex<Control>,
    /// The control plane's run (see [`Control::epoch`]).
    epoch: u64,
    limits: ServeLimits,
    limiter: Mutex<RefusalLimiter>,
    connections: Mutex<ConnectionCounts>,
    endpoints: Mutex<HostBudget>,
    /// Each host's budget of workload reports.
    workloads: Mutex<HostBudget>,
    /// Each host's budget of key reports.
    key_reports: Mutex<HostBudget>,
    /// Each host's budget of calls refused 400 or 403.
    host_refusals: Mutex<HostBudget>,
    /// The credentials someone holds, for letting hosts behind a limited address go on.
    known: known::KnownCredentials,
    pacer: Mutex<NetmapPacer>,
    /// The registry's netmap revision: long polls wait for it to move.
    revision: watch::Sender<u64>,
}

impl Shared {
    /// Wraps `control` for serving, with the default [`ServeLimits`].
    pub fn new(control: Control) -> Arc<Self> {
        Self::with_limits(control, ServeLimits::default())
    }

    /// Wraps `control` for serving within `limits`.
    pub fn with_limits(control: Control, limits: ServeLimits) -> Arc<Self> {
        let (revision, _) = watch::channel(control.registry().netmap_revision());
        let known = known::KnownCredentials::of(&control);
        Arc::new(Self {
            epoch: control.epoch(),
            control: Mutex::new(control),
            limits,
            limiter: Mutex::new(RefusalLimiter::default()),
            connections: Mutex::new(ConnectionCounts::new(limits.max_connections_per_address)),
            endpoints: Mutex::new(HostBudget::new(ENDPOINT_RATE)),
            workloads: Mutex::new(HostBudget::new(WORKLOADS_RATE)),
            key_reports: Mutex::new(HostBudget::new(KEY_REPORTS_RATE)),
            host_refusals: Mutex::new(HostBudget::new(HOST_REFUSAL_RATE)),
            known,
            pacer: Mutex::new(NetmapPacer::new(limits.netmap_interval)),
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
            shared.known.refresh(&control);
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

/// Locks a limiter's mutex (held for a map update only; a panic cannot leave it half-changed
/// in a way that matters more than a miscount).
fn lock_limiter<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
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
        .route("/v1/hosts/{name}/workloads", put(workloads))
        .route("/v1/hosts/{name}/key", post(rotation::report))
        .route("/v1/tokens", post(create_token).get(list_tokens))
        .route("/v1/tokens/{id}", delete(revoke_token))
        .route("/v1/nodes", get(list_nodes))
        .route("/v1/nodes/{name}", delete(remove_node))
        .route("/v1/nodes/{name}/rotate", post(rotation::rotate_node))
        .route("/v1/rotations", post(rotation::rotate_all))
        .route(
            "/v1/policy",
            put(policy::apply).get(policy::show).delete(policy::remove),
        )
        .route("/v1/policy/explain", get(policy::explain))
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

/// Answers `429` at once to an address that was refused too often lately (see
/// [`RefusalLimiter`]), unless the request carries a credential someone holds, and counts this
/// request's refusal if it is one.
async fn limit_refusals(
    State(shared): State<Arc<Shared>>,
    Extension(Remote(remote)): Extension<Remote>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let limited = lock_limiter(&shared.limiter).limited_for(remote.ip(), Instant::now());
    if let Some(wait) = limited {
        // Hosts and the admin behind the same address go on. Whether the token is one someone
        // holds is a hash and a set lookup beside the control plane's lock: a limited flood
        // never reaches the lock, a blocking thread, the store or the audit log.
        let held = bearer(request.headers()).is_some_and(|t| shared.known.holds(&t));
        if !held {
            return too_many(
                wait,
                "too many refused requests from this address; wait a few seconds",
            );
        }
    }
    let response = next.run(request).await;
    if matches!(response.status().as_u16(), 400 | 401) {
        lock_limiter(&shared.limiter).refused(remote.ip(), Instant::now());
    }
    response
}

/// A call answered `429` instead of being made: how long to wait, and why.
struct OverBudget {
    wait: Duration,
    why: &'static str,
}

impl IntoResponse for OverBudget {
    fn into_response(self) -> Response {
        too_many(self.wait, self.why)
    }
}

const HOST_REFUSALS: &str = "too many refused calls from this host (403 or 400); an agent \
     calls only its own routes";
const ENDPOINT_REPORTS: &str = "too many endpoint reports from this host; an agent reports \
     only when its endpoint changes";
const WORKLOAD_REPORTS: &str = "too many workload reports from this host; an agent reports its \
     whole list when it changes, and what changes while it waits goes in its next report";
/// Makes `call` for `caller`, unless it is a host over its budget of refused calls (then
/// [`OverBudget`], and the call is neither made nor audited). A host's call refused 400 or 403
/// takes from that budget. Runs under the control plane's lock.
fn budgeted<T>(
    shared: &Shared,
    caller: &Caller,
    call: impl FnOnce() -> Result<T, ApiError>,
) -> Result<Result<T, ApiError>, OverBudget> {
    let Caller::Host(id) = *caller else {
        return Ok(call());
    };
    if let Some(wait) = lock_limiter(&shared.host_refusals).empty_for(id, Instant::now()) {
        return Err(OverBudget {
            wait,
            why: HOST_REFUSALS,
        });
    }
    let result = call();
    if let Err(e) = &result {
        if matches!(e.reason.status(), 400 | 403) {
            // Over budget, the next call is limited; this one is answered as it is.
            let _ = lock_limiter(&shared.host_refusals).take(id, Instant::now());
        }
    }
    Ok(result)
}

/// The answer of a [`budgeted`] call.
fn answer<T: serde::Serialize>(result: Result<Result<T, ApiError>, OverBudget>) -> Response {
    match result {
        Ok(r) => reply(r),
        Err(limited) => limited.into_response(),
    }
}

fn refusal(reason: ApiReason, message: impl Into<String>) -> Response {
    let status = StatusCode::from_u16(reason.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = ErrorBody {
        error: message.into(),
        reason,
    };
    (status, Json(body)).into_response()
}

/// A `429 too_many_requests` with `Retry-After` (whole seconds, at least 1).
fn too_many(retry_after: Duration, message: &str) -> Response {
    let secs = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
    let secs = secs.max(1);
    let mut response = refusal(
        ApiReason::TooManyRequests,
        format!("{message} (retry after {secs} s)"),
    );
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    response
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

/// A JSON body of type `T`, or the 400/408/413 refusal for it. At most `limit` bytes are
/// read, and the whole body must arrive within `timeout` (no trickling).
async fn parse_body<T: DeserializeOwned>(
    body: Body,
    timeout: Duration,
    limit: usize,
) -> Result<T, ApiError> {
    let too_large = || {
        ApiError::new(
            ApiReason::TooLarge,
            format!("the body is larger than {limit} bytes"),
        )
    };
    let read = tokio::time::timeout(timeout, Limited::new(body, limit).collect());
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
                format!("the body did not arrive within {timeout:?}"),
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

/// Parses the body (at most [`MAX_BODY`] bytes), or audits and returns the refusal.
async fn body_or_refuse<T: DeserializeOwned>(
    shared: &Arc<Shared>,
    token: Option<&str>,
    action: Action,
    remote: IpAddr,
    body: Body,
) -> Result<T, Response> {
    body_or_refuse_within(shared, token, action, remote, body, MAX_BODY).await
}

/// [`body_or_refuse`] for a route that takes bodies of up to `limit` bytes. The caller picks
/// `limit` from the bearer before calling ([`known`]): a limit above [`MAX_BODY`] is only for a
/// bearer someone holds, so an unknown one never makes the server read more than that.
async fn body_or_refuse_within<T: DeserializeOwned>(
    shared: &Arc<Shared>,
    token: Option<&str>,
    action: Action,
    remote: IpAddr,
    body: Body,
    limit: usize,
) -> Result<T, Response> {
    match parse_body::<T>(body, shared.limits.handshake_timeout, limit).await {
        Ok(v) => Ok(v),
        Err(e) => {
            let token = token.map(str::to_owned);
            let budget = Arc::clone(shared);
            let refused = shared
                .call(move |c| {
                    let caller = c.authenticate(token.as_deref());
                    budgeted(&budget, &caller, || {
                        c.refused_request(&caller, action, &e, unix_now(), Some(remote));
                        Err::<(), _>(e)
                    })
                })
                .await;
            Err(answer(refused))
        }
    }
}

/// Authenticates `token`, makes one call on the control plane as that caller (with the time;
/// [`budgeted`] for a host), and answers with its result as JSON. Without a token the request
/// is refused 401 at once, without the lock.
async fn as_caller<T: serde::Serialize + Send + 'static>(
    shared: &Arc<Shared>,
    token: Option<String>,
    f: impl FnOnce(&mut Control, &Caller, u64) -> Result<T, ApiError> + Send + 'static,
) -> Response {
    let Some(token) = token else {
        return unauthenticated().into_response();
    };
    let budget = Arc::clone(shared);
    answer(
        shared
            .call(move |c| {
                let caller = c.authenticate(Some(&token));
                budgeted(&budget, &caller, || f(c, &caller, unix_now()))
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
    let joined = shared
        .call(move |c| c.join(body, unix_now(), Some(remote.ip())))
        .await;
    Ok(reply(joined))
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
    // At most one netmap per interval for this host (authorised above): a burst of changes
    // gives one netmap of the latest state, and a poll loop one compile per interval.
    let at = lock_limiter(&shared.pacer).reserve(&name, Instant::now());
    tokio::time::sleep_until(at.into()).await;
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
    let token = bearer(&headers).ok_or_else(|| unauthenticated().into_response())?;
    let action = Action::EndpointChange;
    let body = body_or_refuse(&shared, Some(&token), action, remote.ip(), body).await?;
    // Every agent fsyncs each new netmap: a host's endpoint reports are budgeted.
    let kind = HostReport {
        budget: |s| &s.endpoints,
        why: ENDPOINT_REPORTS,
        what: "endpoint",
    };
    Ok(host_report(&shared, remote, token, kind, move |c, caller| {
        c.set_endpoint(caller, &name, body, unix_now(), Some(remote.ip()))
    })
    .await)
}

/// A kind of host report: its budget and what its refusal and the log call it.
struct HostReport {
    budget: fn(&Shared) -> &Mutex<HostBudget>,
    /// The 429's message.
    why: &'static str,
    /// For the log: "endpoint", "workload", "key".
    what: &'static str,
}

/// Runs a host's report `call` from `remote` under the lock, charged first to the host's
/// budget for `kind` (one over it is answered 429 and not audited: that would cost a line
/// each), then, as every host call, to its budget of refused calls; and answers it.
async fn host_report<T: serde::Serialize + Send + 'static>(
    shared: &Arc<Shared>,
    remote: SocketAddr,
    token: String,
    kind: HostReport,
    call: impl FnOnce(&mut Control, &Caller) -> Result<T, ApiError> + Send + 'static,
) -> Response {
    let limits = Arc::clone(shared);
    let HostReport { budget, why, what } = kind;
    let result = shared
        .call(move |c| {
            let caller = c.authenticate(Some(&token));
            if let Caller::Host(id) = caller {
                lock_limiter(budget(&limits))
                    .take(id, Instant::now())
                    .map_err(|wait| OverBudget { wait, why })?;
            }
            budgeted(&limits, &caller, || call(c, &caller))
        })
        .await;
    if result.is_err() {
        tracing::debug!(%remote, "{what} report over a budget (its host's {what} reports or refused calls)");
    }
    answer(result)
}

async fn workloads(
    State(shared): State<Arc<Shared>>,
    Extension(Remote(remote)): Extension<Remote>,
    headers: HeaderMap,
    Path(name): Path<String>,
    body: Body,
) -> Handled {
    let token = bearer(&headers).ok_or_else(|| unauthenticated().into_response())?;
    let action = Action::WorkloadsReport;
    // Only a host's credential earns the large limit (decided before the body is read, without
    // the lock); whether it is this route's host is checked under the lock.
    let within = if shared.known.is_host(&token) {
        MAX_WORKLOADS_BODY
    } else {
        MAX_BODY
    };
    let body =
        body_or_refuse_within(&shared, Some(&token), action, remote.ip(), body, within).await?;
    // A changed list is a store commit, and under a policy a netmap for every host: a host's
    // reports are budgeted.
    let kind = HostReport {
        budget: |s| &s.workloads,
        why: WORKLOAD_REPORTS,
        what: "workload",
    };
    Ok(host_report(&shared, remote, token, kind, move |c, caller| {
        c.report_workloads(caller, &name, body, unix_now(), Some(remote.ip()))
    })
    .await)
}

async fn create_token(
    State(shared): State<Arc<Shared>>,
    Extension(Remote(remote)): Extension<Remote>,
    headers: HeaderMap,
    body: Body,
) -> Handled {
    let token = bearer(&headers).ok_or_else(|| unauthenticated().into_response())?;
    let action = Action::TokenCreate;
    let body = body_or_refuse(&shared, Some(&token), action, remote.ip(), body).await?;
    Ok(as_caller(&shared, Some(token), move |c, caller, now| {
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
