//! [`Engine`]: a small client of the Docker Engine API over its unix socket — HTTP/1.1, one
//! connection per call, a timeout on every call and a cap on every response.
//!
//! Unversioned paths (`/containers/json`, not `/v1.41/...`): every field read here has kept its
//! shape since API 1.24, and dockerd 29 no longer serves old versioned paths. This module
//! performs I/O; parsing is in [`super::types`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{header, Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;
use tokio::task::JoinHandle;

use super::error::{EngineError, Site};
use super::types::{self, Container, Event, Network};

/// How long a call may take, connecting included (the events stream: until its headers).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// How long `POST /networks/create` may take: dockerd looks for a plugin it does not know for
/// about 15 s (Docker 20.10's plugin lookup retries), and creating a network of our driver calls
/// back into our plugin.
pub const CREATE_TIMEOUT: Duration = Duration::from_secs(60);
/// The largest response body read; a longer one is an error, not a truncated list.
pub const MAX_BODY: usize = 16 << 20;
/// The longest line of the events stream (one event is well under 4 KiB).
pub const MAX_EVENT_LINE: usize = 1 << 20;

/// `filters={"type":["container","network"]}`, percent-encoded.
const EVENT_FILTERS: &str = "%7B%22type%22%3A%5B%22container%22%2C%22network%22%5D%7D";

/// The Docker Engine API at one unix socket. Cheap to clone; holds no connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Engine {
    socket: PathBuf,
    /// [`CALL_TIMEOUT`], shorter in tests.
    timeout: Duration,
    /// [`CREATE_TIMEOUT`], shorter in tests.
    create_timeout: Duration,
}

impl Engine {
    /// A client of the dockerd listening on `socket` (usually `/var/run/docker.sock`). Nothing is
    /// connected until a call.
    pub fn new(socket: PathBuf) -> Self {
        Self {
            socket,
            timeout: CALL_TIMEOUT,
            create_timeout: CREATE_TIMEOUT,
        }
    }

    /// The same client with a shorter timeout on every call, for tests of a silent server.
    #[cfg(test)]
    fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self.create_timeout = timeout;
        self
    }

    /// The API socket this client calls.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// `GET /_ping`: Ok when dockerd answers.
    pub async fn ping(&self) -> Result<(), EngineError> {
        let site = self.site(&Method::GET, "/_ping");
        self.call(&site, Method::GET, "/_ping", None, self.timeout)
            .await
            .map(drop)
    }

    /// `GET /containers/json`: the running containers, with their names, labels and networks.
    pub async fn containers(&self) -> Result<Vec<Container>, EngineError> {
        let site = self.site(&Method::GET, "/containers/json");
        let body = self
            .call(&site, Method::GET, "/containers/json", None, self.timeout)
            .await?;
        types::parse_containers(&body).map_err(|e| site.parse(e))
    }

    /// `GET /images/{id}/json`: the labels the image gives its containers (`LABEL` in its
    /// Dockerfile, `--change LABEL` at import).
    pub async fn image_labels(&self, id: &str) -> Result<BTreeMap<String, String>, EngineError> {
        let path = format!("/images/{}/json", percent_encode(id));
        let site = self.site(&Method::GET, &path);
        let body = self
            .call(&site, Method::GET, &path, None, self.timeout)
            .await?;
        types::parse_image_labels(&body).map_err(|e| site.parse(e))
    }

    /// `GET /networks/{name_or_id}`: the network with exactly this name or full id, `None` if
    /// there is none. dockerd also matches id prefixes; such a match is `None` here, so a
    /// network named `beef` is never mistaken for another whose id starts with `beef`.
    pub async fn network(&self, name_or_id: &str) -> Result<Option<Network>, EngineError> {
        if name_or_id.is_empty() {
            return Ok(None);
        }
        let path = format!("/networks/{}", percent_encode(name_or_id));
        let site = self.site(&Method::GET, &path);
        match self
            .call(&site, Method::GET, &path, None, self.timeout)
            .await
        {
            Ok(body) => {
                let n = types::parse_network(&body).map_err(|e| site.parse(e))?;
                Ok((n.name == name_or_id || n.id == name_or_id).then_some(n))
            }
            Err(e) if e.status() == Some(StatusCode::NOT_FOUND.as_u16()) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `POST /networks/create`: a network named `name` with this network driver and IPAM
    /// driver (`CheckDuplicate`: dockerd refuses a name that exists). Returns its id. A refusal
    /// is [`EngineError::Refused`] with dockerd's message verbatim.
    ///
    /// With a plugin driver, dockerd calls the plugin before it answers: the caller must hold
    /// nothing the plugin's handlers need.
    pub async fn create_network(
        &self,
        name: &str,
        driver: &str,
        ipam_driver: &str,
    ) -> Result<String, EngineError> {
        let site = self.site(&Method::POST, "/networks/create");
        let body = serde_json::json!({
            "Name": name,
            "Driver": driver,
            "IPAM": { "Driver": ipam_driver },
            "CheckDuplicate": true,
        });
        let answer = self
            .call(
                &site,
                Method::POST,
                "/networks/create",
                Some(body.to_string()),
                self.create_timeout,
            )
            .await?;
        let (id, warning) = types::parse_created(&answer).map_err(|e| site.parse(e))?;
        if !warning.is_empty() {
            tracing::warn!(network = name, warning = %warning, "dockerd created the network with a warning");
        }
        Ok(id)
    }

    /// `GET /events` for containers and networks: the stream of what happens from now on.
    /// [`CALL_TIMEOUT`] bounds the wait for the stream to open; the stream itself has none.
    pub async fn events(&self) -> Result<EventStream, EngineError> {
        let path = format!("/events?filters={EVENT_FILTERS}");
        let site = self.site(&Method::GET, "/events");
        let opened = tokio::time::timeout(self.timeout, async {
            let (response, conn) = self.exchange(&site, Method::GET, &path, None).await?;
            if response.status() != StatusCode::OK {
                return Err(refusal(&site, response).await);
            }
            Ok((response.into_body(), conn))
        })
        .await;
        let (body, conn) = opened.map_err(|_| site.timeout(self.timeout))??;
        Ok(EventStream {
            site,
            body,
            buf: Vec::new(),
            _conn: conn,
        })
    }

    fn site(&self, method: &Method, path: &str) -> Site {
        Site {
            socket: self.socket.clone(),
            call: format!("{method} {path}"),
        }
    }

    /// One call with a JSON body or none: the response body of a 2xx answer, else `Refused`.
    async fn call(
        &self,
        site: &Site,
        method: Method,
        path: &str,
        json: Option<String>,
        timeout: Duration,
    ) -> Result<Vec<u8>, EngineError> {
        let call = async {
            let (response, _conn) = self.exchange(site, method, path, json).await?;
            if !response.status().is_success() {
                return Err(refusal(site, response).await);
            }
            read_body(site, response.into_body(), MAX_BODY).await
        };
        tokio::time::timeout(timeout, call)
            .await
            .map_err(|_| site.timeout(timeout))?
    }

    /// Connects, sends one request, and returns the response head with the connection's task
    /// (which must outlive the body's reading).
    async fn exchange(
        &self,
        site: &Site,
        method: Method,
        path: &str,
        json: Option<String>,
    ) -> Result<(Response<Incoming>, Conn), EngineError> {
        let stream = UnixStream::connect(&self.socket)
            .await
            .map_err(|e| site.connect(e))?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| site.http(e))?;
        let call = site.call.clone();
        let conn = Conn(tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(call = %call, error = %e, "Docker API connection closed");
            }
        }));
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, "docker");
        let body = match json {
            Some(json) => {
                request = request.header(header::CONTENT_TYPE, "application/json");
                Full::new(Bytes::from(json))
            }
            None => Full::new(Bytes::new()),
        };
        // The path is ours: a fixed string or percent-encoded (`percent_encode`).
        let request = request.body(body).expect("a valid request line");
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| site.http(e))?;
        Ok((response, conn))
    }
}

/// The events stream of [`Engine::events`]. Dropping it closes the connection.
#[derive(Debug)]
pub struct EventStream {
    site: Site,
    body: Incoming,
    buf: Vec<u8>,
    _conn: Conn,
}

impl EventStream {
    /// The next event. The stream does not end while dockerd runs: its end is
    /// [`EngineError::Ended`]. Cancel-safe: dropping the future loses no event.
    pub async fn next(&mut self) -> Result<Event, EngineError> {
        loop {
            if let Some(end) = self.buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=end).collect();
                if line.trim_ascii().is_empty() {
                    continue;
                }
                return types::parse_event(&line).map_err(|e| self.site.parse(e));
            }
            if self.buf.len() > MAX_EVENT_LINE {
                return Err(self.site.too_large(MAX_EVENT_LINE));
            }
            match self.body.frame().await {
                None => return Err(self.site.ended()),
                Some(Err(e)) => return Err(self.site.http(e)),
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.buf.extend_from_slice(&data);
                    }
                }
            }
        }
    }
}

/// The task driving one connection; aborted when dropped, so a timed-out call leaves nothing.
#[derive(Debug)]
struct Conn(JoinHandle<()>);

impl Drop for Conn {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The body, up to `limit` bytes.
async fn read_body(site: &Site, mut body: Incoming, limit: usize) -> Result<Vec<u8>, EngineError> {
    let mut out = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| site.http(e))?;
        if let Ok(data) = frame.into_data() {
            if out.len() + data.len() > limit {
                return Err(site.too_large(limit));
            }
            out.extend_from_slice(&data);
        }
    }
    Ok(out)
}

/// The `Refused` error of a non-2xx answer, with dockerd's message (the body, capped).
async fn refusal(site: &Site, response: Response<Incoming>) -> EngineError {
    let status = response.status().as_u16();
    match read_body(site, response.into_body(), 64 << 10).await {
        Ok(body) => site.refused(status, types::error_message(&body)),
        Err(e) => e,
    }
}

/// `s` as one path segment: unreserved characters as they are, every other byte `%XX`.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests;
