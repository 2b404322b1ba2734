//! The HTTPS client of the control plane's API, for the agent (which trusts only the CA whose
//! digest is in its join token) and the admin CLI (which trusts only the CA certificate in
//! `admin.toml`).
//!
//! One TLS connection per request: agents make one call per long poll (tens of seconds), the
//! CLI one per command, so a connection pool would buy nothing.

use std::fmt::Write as _;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use rustls::{CertificateError, ClientConfig};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use wgmesh_config::control::{ControlUrl, Host};
use wgmesh_config::netmap::{Netmap, NetmapUpdate};
use wgmesh_config::token::{AdminToken, CaDigest, HostCredential};
use wgmesh_config::HostName;

use crate::api::{
    ApiReason, EndpointBody, ErrorBody, ExplainQuery, ExplainReply, JoinBody, JoinReply,
    KeyReportBody, KeyReportReply, NodeInfo, PolicyAppliedReply, PolicyBody, PolicyRemovedReply,
    PolicyReply, RemovedReply, RevisionReply, RotationsQueuedReply, TokenBody, TokenInfo,
    TokenReply, TokenRevokedReply, WorkloadsBody,
};
use crate::pin::{self, CaDigestMismatch};

/// How long connecting and the TLS handshake may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a call other than a long poll may take in all.
const CALL_TIMEOUT: Duration = Duration::from_secs(15);
/// The largest reply read (a netmap of thousands of peers fits).
const MAX_REPLY: usize = 64 * 1024 * 1024;

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The control plane's certificate chain does not hold the CA the join token names.
    #[error("refusing to talk to {url}: {mismatch}")]
    WrongCa {
        /// The control plane's URL.
        url: String,
        /// The pinned digest.
        mismatch: CaDigestMismatch,
    },
    /// The control plane's certificate is not valid for its URL (wrong name in the URL, expired,
    /// not issued by the trusted CA).
    #[error("refusing to talk to {url}: its TLS certificate is not valid: {reason}")]
    Certificate {
        /// The control plane's URL.
        url: String,
        /// rustls' reason.
        reason: String,
    },
    /// The request cannot be made as asked (a bad host name, an unusable CA certificate).
    #[error("{0}")]
    Invalid(String),
    /// The control plane could not be reached, or TLS failed.
    #[error("cannot reach the control plane at {url}")]
    Connect {
        /// The control plane's URL.
        url: String,
        /// The error.
        source: io::Error,
    },
    /// The call took too long.
    #[error("the control plane at {url} did not answer within {secs} s")]
    Timeout {
        /// The control plane's URL.
        url: String,
        /// The limit.
        secs: u64,
    },
    /// The HTTP exchange failed.
    #[error("the connection to the control plane at {url} failed")]
    Http {
        /// The control plane's URL.
        url: String,
        /// The error.
        source: hyper::Error,
    },
    /// The control plane refused the call.
    #[error("the control plane refused: {message} ({status} {reason:?})")]
    Refused {
        /// The HTTP status.
        status: u16,
        /// The reason word.
        reason: ApiReason,
        /// The control plane's message.
        message: String,
    },
    /// The reply's body could not be downloaded (the connection broke, or it is larger than
    /// this client reads): nothing was received to judge, so this is not a refused reply.
    #[error("cannot read the reply of the control plane at {url}")]
    ReadBody {
        /// The control plane's URL.
        url: String,
        /// The error.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The reply arrived whole but is not what the API documents (for a netmap: one that does
    /// not parse, such as a low-order key or a bad prefix).
    #[error("the control plane sent a reply this client cannot read")]
    Decode {
        /// What is wrong with it.
        source: serde_json::Error,
    },
}

impl ClientError {
    /// Whether retrying the same call later can succeed: false for a wrong CA and for refusals
    /// other than server errors and `429 too many requests`.
    pub fn is_permanent(&self) -> bool {
        match self {
            Self::WrongCa { .. } | Self::Certificate { .. } | Self::Invalid(_) => true,
            Self::Refused { status, .. } => *status < 500 && *status != 429,
            Self::Connect { .. } | Self::Timeout { .. } | Self::Http { .. } => false,
            Self::ReadBody { .. } | Self::Decode { .. } => false,
        }
    }

    /// The refusal's reason, if the control plane refused.
    pub fn reason(&self) -> Option<ApiReason> {
        match self {
            Self::Refused { reason, .. } => Some(*reason),
            _ => None,
        }
    }
}

/// A client of one control plane.
#[derive(Clone)]
pub struct Client {
    url: ControlUrl,
    tls: TlsConnector,
    server_name: ServerName<'static>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Client({})", self.url)
    }
}

impl Client {
    /// A client that trusts only a server presenting the CA with `digest` (from a join token).
    pub fn pinned(url: &ControlUrl, digest: CaDigest) -> Self {
        Self::with_config(url, pin::client_config_pinned(digest))
    }

    /// A client that trusts only the CA certificate `ca_der` (from `admin.toml`).
    pub fn with_ca(url: &ControlUrl, ca_der: &[u8]) -> Result<Self, ClientError> {
        let config = pin::client_config_with_ca(ca_der)
            .map_err(|e| ClientError::Invalid(format!("the CA certificate is unusable: {e}")))?;
        Ok(Self::with_config(url, config))
    }

    fn with_config(url: &ControlUrl, config: Arc<ClientConfig>) -> Self {
        Self {
            url: url.clone(),
            tls: TlsConnector::from(config),
            server_name: pin::server_name(url.host()),
        }
    }

    /// The control plane's URL.
    pub fn url(&self) -> &ControlUrl {
        &self.url
    }

    /// `POST /v1/join`.
    pub async fn join(&self, body: &JoinBody) -> Result<JoinReply, ClientError> {
        self.call(Method::POST, "/v1/join", None, Some(json(body)))
            .await
    }

    /// `GET /v1/hosts/{name}/netmap`: the whole netmap at a revision other than `revision`, or
    /// `None` when there was none within `wait`.
    pub async fn netmap(
        &self,
        name: &str,
        credential: &HostCredential,
        revision: u64,
        wait: Duration,
    ) -> Result<Option<Netmap>, ClientError> {
        self.poll(name, credential, revision, wait, None).await
    }

    /// `GET /v1/hosts/{name}/netmap?delta=true`: what changed since the netmap held (its
    /// `revision` and `epoch`), or the whole netmap when the control plane cannot say; `None`
    /// when nothing changed within `wait`.
    pub async fn netmap_update(
        &self,
        name: &str,
        credential: &HostCredential,
        (revision, epoch): (u64, u64),
        wait: Duration,
    ) -> Result<Option<NetmapUpdate>, ClientError> {
        self.poll(name, credential, revision, wait, Some(epoch))
            .await
    }

    async fn poll<T: DeserializeOwned>(
        &self,
        name: &str,
        credential: &HostCredential,
        revision: u64,
        wait: Duration,
        delta_epoch: Option<u64>,
    ) -> Result<Option<T>, ClientError> {
        let mut path = format!(
            "/v1/hosts/{}/netmap?revision={revision}&wait={}",
            host_segment(name)?,
            wait.as_secs()
        );
        if let Some(epoch) = delta_epoch {
            let _ = write!(path, "&delta=true&epoch={epoch}");
        }
        let bearer = credential.expose();
        let (status, body) = self
            .exchange(Method::GET, &path, Some(&bearer), None, wait + CALL_TIMEOUT)
            .await?;
        if status == StatusCode::NO_CONTENT {
            return Ok(None);
        }
        decode(&check(status, body)?).map(Some)
    }

    /// `PUT /v1/hosts/{name}/endpoint`.
    pub async fn set_endpoint(
        &self,
        name: &str,
        credential: &HostCredential,
        endpoint: Option<SocketAddr>,
    ) -> Result<RevisionReply, ClientError> {
        let path = format!("/v1/hosts/{}/endpoint", host_segment(name)?);
        let body = json(&EndpointBody { endpoint });
        self.call(Method::PUT, &path, Some(credential.expose()), Some(body))
            .await
    }

    /// `PUT /v1/hosts/{name}/workloads`.
    pub async fn report_workloads(
        &self,
        name: &str,
        credential: &HostCredential,
        body: &WorkloadsBody,
    ) -> Result<RevisionReply, ClientError> {
        let path = format!("/v1/hosts/{}/workloads", host_segment(name)?);
        self.call(
            Method::PUT,
            &path,
            Some(credential.expose()),
            Some(json(body)),
        )
        .await
    }

    /// `POST /v1/hosts/{name}/key`: the host's report of its new key (while its rotation is
    /// requested), or that its peers moved to it (`moved`, once it is announced). A refusal
    /// for another epoch or when no rotation runs is [`ApiReason::RotationOutOfOrder`].
    pub async fn report_key(
        &self,
        name: &str,
        credential: &HostCredential,
        body: &KeyReportBody,
    ) -> Result<KeyReportReply, ClientError> {
        let path = format!("/v1/hosts/{}/key", host_segment(name)?);
        self.call(
            Method::POST,
            &path,
            Some(credential.expose()),
            Some(json(body)),
        )
        .await
    }

    /// `POST /v1/tokens`.
    pub async fn create_token(
        &self,
        admin: &AdminToken,
        body: &TokenBody,
    ) -> Result<TokenReply, ClientError> {
        self.call(
            Method::POST,
            "/v1/tokens",
            Some(admin.expose()),
            Some(json(body)),
        )
        .await
    }

    /// `GET /v1/tokens`.
    pub async fn list_tokens(&self, admin: &AdminToken) -> Result<Vec<TokenInfo>, ClientError> {
        self.call(Method::GET, "/v1/tokens", Some(admin.expose()), None)
            .await
    }

    /// `DELETE /v1/tokens/{id}`.
    pub async fn revoke_token(
        &self,
        admin: &AdminToken,
        id: u64,
    ) -> Result<TokenRevokedReply, ClientError> {
        let path = format!("/v1/tokens/{id}");
        self.call(Method::DELETE, &path, Some(admin.expose()), None)
            .await
    }

    /// `GET /v1/nodes`.
    pub async fn list_nodes(&self, admin: &AdminToken) -> Result<Vec<NodeInfo>, ClientError> {
        self.call(Method::GET, "/v1/nodes", Some(admin.expose()), None)
            .await
    }

    /// `DELETE /v1/nodes/{name}`.
    pub async fn remove_node(
        &self,
        admin: &AdminToken,
        name: &str,
    ) -> Result<RemovedReply, ClientError> {
        let path = format!("/v1/nodes/{}", host_segment(name)?);
        self.call(Method::DELETE, &path, Some(admin.expose()), None)
            .await
    }

    /// `POST /v1/nodes/{name}/rotate`: queues the host's key rotation.
    pub async fn rotate_node(
        &self,
        admin: &AdminToken,
        name: &str,
    ) -> Result<RotationsQueuedReply, ClientError> {
        let path = format!("/v1/nodes/{}/rotate", host_segment(name)?);
        self.call(Method::POST, &path, Some(admin.expose()), None)
            .await
    }

    /// `POST /v1/rotations`: queues every host's key rotation (they run one at a time).
    pub async fn rotate_all(
        &self,
        admin: &AdminToken,
    ) -> Result<RotationsQueuedReply, ClientError> {
        self.call(Method::POST, "/v1/rotations", Some(admin.expose()), None)
            .await
    }

    /// `PUT /v1/policy`.
    pub async fn apply_policy(
        &self,
        admin: &AdminToken,
        body: &PolicyBody,
    ) -> Result<PolicyAppliedReply, ClientError> {
        self.call(
            Method::PUT,
            "/v1/policy",
            Some(admin.expose()),
            Some(json(body)),
        )
        .await
    }

    /// `GET /v1/policy`.
    pub async fn policy(&self, admin: &AdminToken) -> Result<PolicyReply, ClientError> {
        self.call(Method::GET, "/v1/policy", Some(admin.expose()), None)
            .await
    }

    /// `DELETE /v1/policy`.
    pub async fn remove_policy(
        &self,
        admin: &AdminToken,
    ) -> Result<PolicyRemovedReply, ClientError> {
        self.call(Method::DELETE, "/v1/policy", Some(admin.expose()), None)
            .await
    }

    /// `GET /v1/policy/explain?from=..&to=..&port=..`.
    pub async fn explain_policy(
        &self,
        admin: &AdminToken,
        query: &ExplainQuery,
    ) -> Result<ExplainReply, ClientError> {
        let path = format!(
            "/v1/policy/explain?from={}&to={}&port={}",
            query_value(&query.from),
            query_value(&query.to),
            query_value(&query.port)
        );
        self.call(Method::GET, &path, Some(admin.expose()), None)
            .await
    }

    /// A call other than a long poll: the 2xx reply decoded, or the refusal.
    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        bearer: Option<String>,
        body: Option<Vec<u8>>,
    ) -> Result<T, ClientError> {
        let (status, reply) = self
            .exchange(method, path, bearer.as_deref(), body, CALL_TIMEOUT)
            .await?;
        decode(&check(status, reply)?)
    }

    /// One request on a new connection: the status and the body.
    async fn exchange(
        &self,
        method: Method,
        path: &str,
        bearer: Option<&str>,
        body: Option<Vec<u8>>,
        timeout: Duration,
    ) -> Result<(StatusCode, Bytes), ClientError> {
        let url = self.url.to_string();
        let io = tokio::time::timeout(CONNECT_TIMEOUT, self.connect())
            .await
            .map_err(|_| ClientError::Timeout {
                url: url.clone(),
                secs: CONNECT_TIMEOUT.as_secs(),
            })??;
        let exchange = async {
            let (mut sender, connection) = hyper::client::conn::http1::handshake(io)
                .await
                .map_err(|source| ClientError::Http {
                    url: url.clone(),
                    source,
                })?;
            tokio::spawn(async move {
                let _ = connection.await;
            });
            let mut request = Request::builder()
                .method(method)
                .uri(path)
                .header(hyper::header::HOST, self.authority())
                .header(hyper::header::CONTENT_TYPE, "application/json");
            if let Some(b) = bearer {
                request = request.header(hyper::header::AUTHORIZATION, format!("Bearer {b}"));
            }
            let request = request
                .body(Full::new(Bytes::from(body.unwrap_or_default())))
                .map_err(|e| ClientError::Invalid(format!("cannot build the request: {e}")))?;
            let response =
                sender
                    .send_request(request)
                    .await
                    .map_err(|source| ClientError::Http {
                        url: url.clone(),
                        source,
                    })?;
            let status = response.status();
            let body = Limited::new(response.into_body(), MAX_REPLY)
                .collect()
                .await
                .map_err(|source| ClientError::ReadBody {
                    url: url.clone(),
                    source,
                })?
                .to_bytes();
            Ok((status, body))
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| ClientError::Timeout {
                url,
                secs: timeout.as_secs(),
            })?
    }

    async fn connect(
        &self,
    ) -> Result<TokioIo<tokio_rustls::client::TlsStream<TcpStream>>, ClientError> {
        let url = self.url.to_string();
        let connect_error = |source| ClientError::Connect {
            url: url.clone(),
            source,
        };
        let tcp = match self.url.host() {
            Host::Ip(ip) => TcpStream::connect((*ip, self.url.port())).await,
            Host::Dns(name) => TcpStream::connect((name.as_str(), self.url.port())).await,
        }
        .map_err(connect_error)?;
        let _ = tcp.set_nodelay(true);
        let tls = self
            .tls
            .connect(self.server_name.clone(), tcp)
            .await
            .map_err(|source| match certificate_error(&source) {
                Some(CertificateProblem::Pin(mismatch)) => ClientError::WrongCa {
                    url: url.clone(),
                    mismatch,
                },
                Some(CertificateProblem::Other(reason)) => ClientError::Certificate {
                    url: url.clone(),
                    reason,
                },
                None => connect_error(source),
            })?;
        Ok(TokioIo::new(tls))
    }

    fn authority(&self) -> String {
        let full = self.url.to_string();
        full.trim_start_matches("https://")
            .trim_end_matches('/')
            .to_owned()
    }
}

enum CertificateProblem {
    Pin(CaDigestMismatch),
    Other(String),
}

/// What is wrong with the server's certificate, if the TLS error says so.
fn certificate_error(e: &io::Error) -> Option<CertificateProblem> {
    let rustls::Error::InvalidCertificate(problem) =
        e.get_ref()?.downcast_ref::<rustls::Error>()?
    else {
        return None;
    };
    if let CertificateError::Other(other) = problem {
        if let Some(m) = other.0.downcast_ref::<CaDigestMismatch>() {
            return Some(CertificateProblem::Pin(CaDigestMismatch(m.0)));
        }
    }
    Some(CertificateProblem::Other(format!("{problem:?}")))
}

/// `name` as a path segment, if it is a valid host name (so it needs no escaping).
fn host_segment(name: &str) -> Result<&str, ClientError> {
    name.parse::<HostName>()
        .map(|_| name)
        .map_err(|e| ClientError::Invalid(format!("{name:?} is not a host name: {e}")))
}

/// `text` percent-encoded for a query string: every byte but the unreserved ones (RFC 3986:
/// `A-Z a-z 0-9 - . _ ~`) as `%XX`.
fn query_value(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

fn json<T: Serialize>(body: &T) -> Vec<u8> {
    serde_json::to_vec(body).expect("API bodies serialise")
}

/// The body of a 2xx reply, or the refusal.
fn check(status: StatusCode, body: Bytes) -> Result<Bytes, ClientError> {
    if status.is_success() {
        return Ok(body);
    }
    Err(match serde_json::from_slice::<ErrorBody>(&body) {
        Ok(e) => ClientError::Refused {
            status: status.as_u16(),
            reason: e.reason,
            message: e.error,
        },
        Err(_) => ClientError::Refused {
            status: status.as_u16(),
            reason: ApiReason::Other,
            message: String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned(),
        },
    })
}

fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, ClientError> {
    serde_json::from_slice(body).map_err(|source| ClientError::Decode { source })
}

#[cfg(test)]
mod tests {
    use super::query_value;

    #[test]
    fn query_values_are_percent_encoded() {
        assert_eq!(query_value("host-b/web_1.x~"), "host-b%2Fweb_1.x~");
        assert_eq!(
            query_value("role=frontend,zone=a b&c"),
            "role%3Dfrontend%2Czone%3Da%20b%26c"
        );
        assert_eq!(query_value("é"), "%C3%A9");
        assert_eq!(query_value(""), "");
    }
}
