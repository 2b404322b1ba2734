//! The policy routes (`/v1/policy`, `/v1/policy/explain`): thin handlers that parse the
//! request and make one call on [`Control`](crate::service::Control), as every other route.
//! `PUT /v1/policy` alone reads bodies of up to [`MAX_POLICY_BODY`] bytes, and only when the
//! bearer is the admin token: a policy of thousands of rules is far larger than any other
//! request, and no one else may send one.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Extension, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use wgmesh_client::api::{ApiReason, ExplainQuery, MAX_BODY, MAX_POLICY_BODY};

use super::{as_caller, bearer, body_or_refuse_within, refusal, Handled, Remote, Shared};
use crate::audit::Action;
use crate::service::{unauthenticated, PreparedPolicy};

/// `PUT /v1/policy`.
pub(super) async fn apply(
    State(shared): State<Arc<Shared>>,
    Extension(Remote(remote)): Extension<Remote>,
    headers: HeaderMap,
    body: Body,
) -> Handled {
    let token = bearer(&headers).ok_or_else(|| unauthenticated().into_response())?;
    let action = Action::PolicyApply;
    // Only the admin may apply a policy, so only the admin's bearer earns the large limit,
    // decided before a byte of the body is read and without the lock: anyone else's body is
    // refused 413 past MAX_BODY (or 401 after it, as every route's).
    let limit = if shared.known.is_admin(&token) {
        MAX_POLICY_BODY
    } else {
        MAX_BODY
    };
    let body =
        body_or_refuse_within(&shared, Some(&token), action, remote.ip(), body, limit).await?;
    // Parsing and testing a policy of thousands of rules takes a while: on a blocking thread,
    // outside the control plane's lock, which only the commit needs.
    let prepared = tokio::task::spawn_blocking(move || PreparedPolicy::prepare(body))
        .await
        .expect("preparing a policy panicked");
    Ok(as_caller(&shared, Some(token), move |c, caller, now| {
        c.apply_policy(caller, prepared, now, Some(remote.ip()))
    })
    .await)
}

/// `GET /v1/policy`.
pub(super) async fn show(
    State(shared): State<Arc<Shared>>,
    Extension(Remote(remote)): Extension<Remote>,
    headers: HeaderMap,
) -> Response {
    as_caller(&shared, bearer(&headers), move |c, caller, now| {
        c.show_policy(caller, now, Some(remote.ip()))
    })
    .await
}

/// `DELETE /v1/policy`.
pub(super) async fn remove(
    State(shared): State<Arc<Shared>>,
    Extension(Remote(remote)): Extension<Remote>,
    headers: HeaderMap,
) -> Response {
    as_caller(&shared, bearer(&headers), move |c, caller, now| {
        c.remove_policy(caller, now, Some(remote.ip()))
    })
    .await
}

/// `GET /v1/policy/explain?from=SEL&to=SEL&port=PROTO/PORT`.
pub(super) async fn explain(
    State(shared): State<Arc<Shared>>,
    Extension(Remote(remote)): Extension<Remote>,
    headers: HeaderMap,
    query: Result<Query<ExplainQuery>, QueryRejection>,
) -> Handled {
    let Query(query) = query.map_err(|e| {
        refusal(
            ApiReason::BadRequest,
            format!(
                "bad query: {e}; use ?from=SEL&to=SEL&port=PROTO/PORT, where SEL is HOST/NETNS, \
                 HOST or k=v,k=v and PROTO/PORT is tcp/PORT, udp/PORT or icmp"
            ),
        )
    })?;
    Ok(as_caller(&shared, bearer(&headers), move |c, caller, now| {
        c.explain_policy(caller, &query, now, Some(remote.ip()))
    })
    .await)
}
