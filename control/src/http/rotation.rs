//! The key rotation routes (`POST /v1/hosts/{name}/key`, `POST /v1/nodes/{name}/rotate`,
//! `POST /v1/rotations`), thin handlers making one call on
//! [`Control`](crate::service::Control) each, and the scheduler ([`schedule_rotations`]) that
//! steps rotations through the same lock and commit path.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Extension, Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};

use super::{as_caller, bearer, body_or_refuse, host_report, Handled, HostReport, Remote, Shared};
use crate::audit::Action;
use crate::clock::unix_now;
use crate::service::unauthenticated;

const KEY_REPORTS: &str = "too many key reports from this host; an agent reports its new key, \
     then that its peers moved, once per rotation";

/// `POST /v1/hosts/{name}/key`.
pub(super) async fn report(
    State(shared): State<Arc<Shared>>,
    Extension(Remote(remote)): Extension<Remote>,
    headers: HeaderMap,
    Path(name): Path<String>,
    body: Body,
) -> Handled {
    let token = bearer(&headers).ok_or_else(|| unauthenticated().into_response())?;
    let action = Action::KeyAnnounce;
    let body = body_or_refuse(&shared, Some(&token), action, remote.ip(), body).await?;
    // An announced or retired key is a store commit and a netmap for every peer: budgeted.
    let kind = HostReport {
        budget: |s| &s.key_reports,
        why: KEY_REPORTS,
        what: "key",
    };
    Ok(host_report(&shared, remote, token, kind, move |c, caller| {
        c.report_key(caller, &name, body, unix_now(), Some(remote.ip()))
    })
    .await)
}

/// `POST /v1/nodes/{name}/rotate`.
pub(super) async fn rotate_node(
    State(shared): State<Arc<Shared>>,
    Extension(Remote(remote)): Extension<Remote>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Response {
    as_caller(&shared, bearer(&headers), move |c, caller, now| {
        c.rotate_node(caller, &name, now, Some(remote.ip()))
    })
    .await
}

/// `POST /v1/rotations`.
pub(super) async fn rotate_all(
    State(shared): State<Arc<Shared>>,
    Extension(Remote(remote)): Extension<Remote>,
    headers: HeaderMap,
) -> Response {
    as_caller(&shared, bearer(&headers), move |c, caller, now| {
        c.rotate_all(caller, now, Some(remote.ip()))
    })
    .await
}

/// How often the server steps key rotations ([`schedule_rotations`]).
pub const ROTATION_TICK: Duration = Duration::from_millis(250);

/// The key-rotation scheduler: every `period`, commits the registry's next rotation steps
/// ([`Control::rotation_tick`]) through the same lock and commit path as the API's calls, so
/// they reach the store and the audit log, and long polls wake for them. Runs until dropped
/// (the server aborts it at shutdown).
pub async fn schedule_rotations(shared: Arc<Shared>, period: Duration) {
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        shared.call(|c| c.rotation_tick(unix_now())).await;
    }
}
