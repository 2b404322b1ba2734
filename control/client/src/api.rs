//! The JSON bodies of the control plane's HTTPS API (docs/CONTROL-API.md), shared by the server
//! and the client. Requests are strict (unknown fields refused); responses are lenient (unknown
//! fields ignored), so an older client can read a newer server.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use wgmesh_config::netmap::Netmap;
use wgmesh_config::policy::{Action, Flow};
use wgmesh_config::PublicKey;

/// The largest request body the server reads.
pub const MAX_BODY: usize = 64 * 1024;
/// The largest `PUT /v1/policy` body the server reads from the admin (anyone else's:
/// [`MAX_BODY`]): a policy of thousands of rules fits.
pub const MAX_POLICY_BODY: usize = 4 * 1024 * 1024;
/// How long a netmap long poll waits by default (seconds).
pub const DEFAULT_WAIT_SECS: u64 = 25;
/// The longest a netmap long poll may wait (seconds).
pub const MAX_WAIT_SECS: u64 = 60;
/// A host that polled within this many seconds is online.
pub const ONLINE_WITHIN_SECS: u64 = 60;
/// Default lifetime of a join token (seconds).
pub const DEFAULT_TOKEN_TTL_SECS: u64 = 3600;
/// Longest lifetime of a join token (seconds): a year.
pub const MAX_TOKEN_TTL_SECS: u64 = 365 * 24 * 3600;

/// `POST /v1/join`. Its `Debug` leaves out the token and the credential (both secrets).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JoinBody {
    /// The join token, `WGM1-<CA digest>-<secret>`.
    pub token: String,
    /// The host's name.
    pub name: String,
    /// The host's WireGuard public key.
    pub public_key: PublicKey,
    /// Where other hosts should send to.
    #[serde(default)]
    pub endpoint: Option<SocketAddr>,
    /// The host's own labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// The credential the host will use (`WGMH1-…`), generated and saved by the host before it
    /// asks, so that a join whose reply was lost can be retried with it; when absent the
    /// control plane makes one.
    #[serde(default)]
    pub credential: Option<String>,
}

impl std::fmt::Debug for JoinBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JoinBody")
            .field("token", &"<redacted>")
            .field("name", &self.name)
            .field("public_key", &self.public_key)
            .field("endpoint", &self.endpoint)
            .field("labels", &self.labels)
            .field(
                "credential",
                &self.credential.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// The reply to a join. Its `Debug` leaves out the credential.
#[derive(Clone, Serialize, Deserialize)]
pub struct JoinReply {
    /// The host's credential, `WGMH1-<secret>` (the one it sent, if it sent one): keep it
    /// private.
    pub credential: String,
    /// The host's first netmap.
    pub netmap: Netmap,
}

impl std::fmt::Debug for JoinReply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JoinReply")
            .field("credential", &"<redacted>")
            .field("netmap", &self.netmap)
            .finish()
    }
}

/// `PUT /v1/hosts/{name}/endpoint`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointBody {
    /// The host's new endpoint; `None` when peers should wait for it.
    pub endpoint: Option<SocketAddr>,
}

/// `PUT /v1/hosts/{name}/workloads`: the host's whole list of workloads, which replaces the
/// one the control plane holds (the agent sends it at start, after every attach and detach,
/// and after it reconnects).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkloadsBody {
    /// Every workload of the host.
    pub workloads: Vec<WorkloadReport>,
}

/// The largest [`WorkloadsBody`] the server reads from a host's credential (other callers' and
/// other bodies: [`MAX_BODY`]): a host's whole list, thousands of workloads with their labels.
pub const MAX_WORKLOADS_BODY: usize = 1024 * 1024;

/// One workload in a [`WorkloadsBody`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkloadReport {
    /// Its name on its host (the network namespace's).
    pub name: String,
    /// Its overlay address, one of the host's subnet.
    pub ip: IpAddr,
    /// Its own labels (not `host`, which the control plane sets).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// The reply to a change: the registry revision that holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevisionReply {
    /// The revision.
    pub revision: u64,
}

/// `POST /v1/tokens`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenBody {
    /// Lifetime in seconds; default [`DEFAULT_TOKEN_TTL_SECS`].
    #[serde(default)]
    pub ttl_secs: Option<u64>,
    /// Whether more than one host may join with it.
    #[serde(default)]
    pub reusable: bool,
    /// Labels given to every host that joins with it.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// The reply to `POST /v1/tokens`. Its `Debug` leaves out the token.
#[derive(Clone, Serialize, Deserialize)]
pub struct TokenReply {
    /// The join token; shown once.
    pub token: String,
    /// The token's id.
    pub id: u64,
    /// When it expires (unix seconds).
    pub expires_at: u64,
}

impl std::fmt::Debug for TokenReply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenReply")
            .field("token", &"<redacted>")
            .field("id", &self.id)
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// One entry of `GET /v1/tokens` (never the secret: the control plane does not have it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenInfo {
    /// The token's id.
    pub id: u64,
    /// When it was created (unix seconds).
    pub created_at: u64,
    /// When it expires (unix seconds).
    pub expires_at: u64,
    /// Whether more than one host may join with it.
    pub reusable: bool,
    /// Labels given to the hosts that join with it.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// How many hosts joined with it.
    pub joins: usize,
    /// `valid`, `expired`, `used` (single-use, spent) or `revoked`.
    pub state: TokenState,
}

/// Whether a join token can still be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenState {
    /// A host can join with it.
    Valid,
    /// Its time is up.
    Expired,
    /// Single-use and used.
    Used,
    /// An admin revoked it.
    Revoked,
}

/// The reply to `DELETE /v1/tokens/{id}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenRevokedReply {
    /// The revoked token's id.
    pub revoked: u64,
}

/// One entry of `GET /v1/nodes`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// The host's name.
    pub name: String,
    /// Its subnet.
    pub subnet: IpNet,
    /// Its endpoint.
    pub endpoint: Option<SocketAddr>,
    /// Its public key.
    pub public_key: PublicKey,
    /// Its labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// When it joined (unix seconds).
    pub joined_at: u64,
    /// When it last polled (unix seconds); 0 when not since the control plane started.
    pub last_seen: u64,
    /// Whether it polled within [`ONLINE_WITHIN_SECS`].
    pub online: bool,
    /// The netmap revision the host holds, as far as the control plane knows (what it polled
    /// with or was last sent); `None` until it polls after a control-plane start.
    #[serde(default)]
    pub netmap_revision: Option<u64>,
    /// Whether that is the current netmap revision.
    #[serde(default)]
    pub in_sync: bool,
    /// Its workloads as it last reported them, sorted by address.
    #[serde(default)]
    pub workloads: Vec<WorkloadReport>,
    /// The epoch of its key: 0 at join, one more at each completed rotation.
    #[serde(default)]
    pub key_epoch: u64,
    /// When its key was registered (unix seconds): its join, or its last rotation.
    #[serde(default)]
    pub key_since: u64,
    /// Its key rotation, queued or running; `None` when there is none.
    #[serde(default)]
    pub rotation: Option<RotationInfo>,
    /// When its last rotation was abandoned (it did not report a new key in time), until one
    /// completes.
    #[serde(default)]
    pub rotation_abandoned_at: Option<u64>,
}

/// A host's key rotation, queued or running (in `GET /v1/nodes` and key report replies).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum RotationInfo {
    /// Waiting for the rotation running (one runs at a time in the cluster).
    Queued {
        /// The epoch the new key will have.
        epoch: u64,
        /// Who asked.
        reason: RotationReason,
        /// When it was queued (unix seconds).
        queued_at: u64,
    },
    /// The host is asked for a new key (its netmap's `host.rotation` has no `new_key`).
    Requested {
        /// The epoch the new key will have.
        epoch: u64,
        /// When it was asked (unix seconds).
        at: u64,
        /// When the rotation is abandoned if the host has not reported a new key.
        deadline: u64,
    },
    /// The host's new key is announced to its peers.
    Announced {
        /// The new key's epoch.
        epoch: u64,
        /// The new key.
        new_key: PublicKey,
        /// When it was announced (unix seconds).
        at: u64,
        /// When it is registered even if the host does not report that its peers moved.
        deadline: u64,
    },
}

/// Why a host's key is rotated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RotationReason {
    /// An admin asked (`wgmesh key rotate`).
    Admin,
    /// Its key reached `key_rotation_interval`.
    Interval,
}

/// `POST /v1/hosts/{name}/key`: the host's report about its rotation. While its rotation is
/// *requested* it reports its new key (`moved` false); once the key is *announced*, that its
/// peers moved to it (`moved` true), which completes the rotation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyReportBody {
    /// The rotation's epoch, from its netmap's `host.rotation.epoch`.
    pub epoch: u64,
    /// Its new public key.
    pub public_key: PublicKey,
    /// Whether its peers moved to the new key (read only once the key is announced).
    #[serde(default)]
    pub moved: bool,
}

/// The reply to a key report: the host's registered key and its rotation now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyReportReply {
    /// The epoch of its registered key.
    pub key_epoch: u64,
    /// Its registered key (the new one once the rotation completed).
    pub public_key: PublicKey,
    /// Its rotation, if one still runs (announced, after a report of the new key); `None`
    /// once it completed.
    #[serde(default)]
    pub rotation: Option<RotationInfo>,
    /// The netmap revision that holds the change.
    pub revision: u64,
}

/// The reply to `POST /v1/nodes/{name}/rotate` and `POST /v1/rotations`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct RotationsQueuedReply {
    /// The hosts queued, by name, in the order they were (by id); each rotates in turn.
    pub queued: Vec<String>,
    /// The hosts not queued because a rotation of theirs is queued or running already.
    #[serde(default)]
    pub rotating: Vec<String>,
}

/// The reply to `DELETE /v1/nodes/{name}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RemovedReply {
    /// The removed host's name.
    pub removed: String,
    /// The revision without it.
    pub revision: u64,
}

/// `PUT /v1/policy`: a policy file as written. The control plane parses it (errors name
/// `origin`, the line, column and field), runs its `[[test]]`s, and only then stores it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyBody {
    /// The policy file's text (TOML).
    pub text: String,
    /// The file's name, for errors and `policy show` (see
    /// [`Origin`](wgmesh_config::policy::Origin) for the rule).
    pub origin: String,
}

/// The reply to `PUT /v1/policy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyAppliedReply {
    /// The registry revision that applied it (the one `GET /v1/policy` shows); every host's
    /// netmap at this revision or later holds its filter.
    pub revision: u64,
    /// How many rules it has.
    pub rules: usize,
    /// How many of its tests passed (all of them: it would be refused otherwise).
    pub tests: usize,
}

/// The reply to `GET /v1/policy`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyReply {
    /// The policy in force; `None` when none is applied (everything is allowed).
    pub policy: Option<PolicyInfo>,
}

/// The policy in force, as `GET /v1/policy` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyInfo {
    /// The name of the file it was applied from.
    pub origin: String,
    /// The registry revision that applied it.
    pub revision: u64,
    /// What a flow that no rule matches gets.
    pub default: Action,
    /// How many rules it has.
    pub rules: usize,
    /// How many tests it has.
    pub tests: usize,
    /// The file's text, as applied.
    pub text: String,
}

/// The reply to `DELETE /v1/policy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyRemovedReply {
    /// Whether a policy was removed (false: none was applied, nothing changed).
    pub removed: bool,
    /// The registry revision now.
    pub revision: u64,
}

/// The query of `GET /v1/policy/explain`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExplainQuery {
    /// The endpoint that starts the flow: `HOST/NETNS`, `HOST` or `k=v,k=v`.
    pub from: String,
    /// The endpoint it goes to, in the same forms.
    pub to: String,
    /// The flow: `tcp/PORT`, `udp/PORT` or `icmp`.
    pub port: String,
}

/// The reply to `GET /v1/policy/explain`: what the policy in force decides for one flow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExplainReply {
    /// Allow or deny.
    pub verdict: Action,
    /// The rule that decided; `None` when the default did (or no policy is applied).
    pub rule: Option<String>,
    /// The endpoint that starts the flow, and the labels it carries.
    pub from: ExplainEndpoint,
    /// The endpoint it goes to, and the labels it carries.
    pub to: ExplainEndpoint,
    /// The flow.
    pub port: Flow,
    /// The revision of the policy that decided; `None` when no policy is applied.
    pub revision: Option<u64>,
}

/// One side of an [`ExplainReply`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExplainEndpoint {
    /// The endpoint as asked for (`host-b/web`, `host-c`, `role=frontend`).
    pub endpoint: String,
    /// Every label it carries (a workload's with its host's and `host`).
    pub labels: BTreeMap<String, String>,
}

/// The body of every refusal.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorBody {
    /// A message for humans.
    pub error: String,
    /// A machine word (see [`ApiReason`]).
    pub reason: ApiReason,
}

/// Why an action was refused: a closed set of codes, the same words the API's refusals carry
/// (see [`ApiReason::status`] for their HTTP statuses).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApiReason {
    /// No valid credential was given.
    Unauthenticated,
    /// The credential does not allow this action.
    Forbidden,
    /// The join token is unknown.
    TokenUnknown,
    /// The join token expired.
    TokenExpired,
    /// The single-use join token was already used.
    TokenUsed,
    /// The join token was revoked.
    TokenRevoked,
    /// The join token names another control plane's CA.
    TokenWrongCa,
    /// The name is held by another key.
    NameTaken,
    /// The key is held by another host.
    KeyTaken,
    /// No such host, token or route.
    NotFound,
    /// A known path with the wrong method.
    MethodNotAllowed,
    /// No free subnet is left.
    SubnetsExhausted,
    /// The request was malformed.
    BadRequest,
    /// A policy was refused: its text does not parse (the message names the file, line,
    /// column and field), one of its tests fails, it has too many rules, or some host's filter
    /// under it would be too large for its agent.
    BadPolicy,
    /// The endpoint given is one no host can be reached at (loopback, multicast, unspecified,
    /// link-local, broadcast, port 0, or inside the cluster CIDR).
    BadEndpoint,
    /// A host's key report is not for the rotation its netmap orders (another epoch, or no
    /// rotation runs for it): it waits for its netmap.
    RotationOutOfOrder,
    /// A host's key report does not fit its rotation: its current key, or another key than the
    /// one announced.
    KeyReportRefused,
    /// The request body was too large.
    TooLarge,
    /// Too many requests: refused requests from this address lately, or endpoint reports from
    /// this host (the reply's `Retry-After` says when to try again).
    TooManyRequests,
    /// The control plane failed (store, I/O); nothing was changed.
    Internal,
    /// A reason this build does not know (read from a newer control plane).
    #[serde(other)]
    Other,
}

impl ApiReason {
    /// The HTTP status this reason is sent with.
    pub fn status(self) -> u16 {
        match self {
            Self::BadRequest | Self::BadEndpoint | Self::BadPolicy => 400,
            Self::Unauthenticated
            | Self::TokenUnknown
            | Self::TokenExpired
            | Self::TokenUsed
            | Self::TokenRevoked
            | Self::TokenWrongCa => 401,
            Self::Forbidden => 403,
            Self::NotFound => 404,
            Self::MethodNotAllowed => 405,
            Self::NameTaken
            | Self::KeyTaken
            | Self::SubnetsExhausted
            | Self::RotationOutOfOrder
            | Self::KeyReportRefused => 409,
            Self::TooLarge => 413,
            Self::TooManyRequests => 429,
            Self::Internal | Self::Other => 500,
        }
    }
}

/// The query of `GET /v1/hosts/{name}/netmap`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetmapQuery {
    /// The revision the host holds; the reply waits for a newer one.
    #[serde(default)]
    pub revision: u64,
    /// How long to wait (seconds), at most [`MAX_WAIT_SECS`].
    #[serde(default)]
    pub wait: Option<u64>,
    /// Answer with a [`NetmapUpdate`](wgmesh_config::netmap::NetmapUpdate): only what changed
    /// since `revision` when the control plane still knows, else the whole netmap.
    #[serde(default)]
    pub delta: bool,
    /// The [`epoch`](wgmesh_config::netmap::Netmap::epoch) of the netmap held; a delta is
    /// only sent for a netmap of the control plane's current run.
    #[serde(default)]
    pub epoch: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_never_shows_a_secret() {
        let join = JoinBody {
            token: "WGM1-digest-TOKENSECRET".into(),
            name: "host-a".into(),
            public_key: PublicKey::from_bytes([1; 32]),
            endpoint: None,
            labels: BTreeMap::new(),
            credential: Some("WGMH1-CREDSECRET".into()),
        };
        let token = TokenReply {
            token: "WGM1-digest-TOKENSECRET".into(),
            id: 3,
            expires_at: 9,
        };
        for shown in [format!("{join:?}"), format!("{token:?}")] {
            assert!(!shown.contains("SECRET"), "{shown}");
            assert!(shown.contains("<redacted>"), "{shown}");
        }
        assert!(format!("{join:?}").contains("host-a"));
    }

    #[test]
    fn every_reason_maps_to_its_documented_status() {
        assert_eq!(ApiReason::TokenExpired.status(), 401);
        assert_eq!(ApiReason::Forbidden.status(), 403);
        assert_eq!(ApiReason::NameTaken.status(), 409);
        assert_eq!(ApiReason::BadRequest.status(), 400);
        assert_eq!(ApiReason::TokenWrongCa.status(), 401);
    }

    #[test]
    fn reasons_are_snake_case_words_and_unknown_ones_are_tolerated() {
        let body = ErrorBody {
            error: "x".into(),
            reason: ApiReason::TokenWrongCa,
        };
        let json = serde_json::to_string(&body).unwrap();
        assert!(json.contains("\"token_wrong_ca\""), "{json}");
        let newer: ErrorBody =
            serde_json::from_str(r#"{"error":"y","reason":"something_new"}"#).unwrap();
        assert_eq!(newer.reason, ApiReason::Other);
    }

    #[test]
    fn join_body_refuses_unknown_fields() {
        let err = serde_json::from_str::<JoinBody>(
            r#"{"token":"t","name":"a","public_key":"AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=","subnet":"10.0.0.0/8"}"#,
        )
        .unwrap_err();
        assert!(err.to_string().contains("unknown field `subnet`"), "{err}");
    }
}
