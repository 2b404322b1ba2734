//! A scripted dockerd on a unix socket, for the unit tests of the watch and the network task:
//! canned answers per call, an events stream the test writes to, a log of the calls made.
//! The real dockerd is in `overlay/tests/docker_engine.rs`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::engine::Engine;

#[derive(Default)]
struct State {
    /// "METHOD /path" (no query) → status and body.
    routes: HashMap<String, (u16, String)>,
    /// Every request, as "METHOD /path" and its body, in order.
    requests: Vec<(String, String)>,
    /// The open events streams: a line to send, or the end when dropped.
    events: Vec<mpsc::UnboundedSender<String>>,
}

pub(crate) struct FakeDockerd {
    _dir: tempfile::TempDir,
    socket: PathBuf,
    state: Arc<Mutex<State>>,
    listener: Option<JoinHandle<()>>,
}

impl FakeDockerd {
    /// Listening at once on a fresh socket, with no routes (every call is a 404).
    pub(crate) fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("d.sock");
        let mut fake = Self {
            _dir: dir,
            socket,
            state: Arc::default(),
            listener: None,
        };
        fake.listen();
        fake
    }

    /// A client of this server.
    pub(crate) fn engine(&self) -> Engine {
        Engine::new(self.socket.clone())
    }

    /// Answer `call` ("GET /containers/json") with `status` and `body` from now on.
    pub(crate) fn route(&self, call: &str, status: u16, body: &str) {
        let mut state = self.state.lock().unwrap();
        state.routes.insert(call.into(), (status, body.into()));
    }

    /// The calls made so far, as "METHOD /path".
    pub(crate) fn calls(&self) -> Vec<String> {
        let state = self.state.lock().unwrap();
        state.requests.iter().map(|(c, _)| c.clone()).collect()
    }

    /// The bodies of the calls made so far to `call`.
    pub(crate) fn bodies(&self, call: &str) -> Vec<String> {
        let state = self.state.lock().unwrap();
        let of_call = state.requests.iter().filter(|(c, _)| c == call);
        of_call.map(|(_, b)| b.clone()).collect()
    }

    /// Sends one event line to every open events stream.
    pub(crate) fn event(&self, json: &str) {
        let state = self.state.lock().unwrap();
        for stream in &state.events {
            let _ = stream.send(format!("{json}\n"));
        }
    }

    /// Stops listening and ends every events stream: dockerd went away.
    pub(crate) fn stop(&mut self) {
        if let Some(listener) = self.listener.take() {
            listener.abort();
        }
        let _ = std::fs::remove_file(&self.socket);
        self.state.lock().unwrap().events.clear();
    }

    /// Listens again at the same path: dockerd is back.
    pub(crate) fn listen(&mut self) {
        let listener = UnixListener::bind(&self.socket).unwrap();
        let state = self.state.clone();
        self.listener = Some(tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                tokio::spawn(answer(conn, state.clone()));
            }
        }));
    }
}

impl Drop for FakeDockerd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Reads one request and answers it: a canned body, or a chunked events stream.
async fn answer(mut conn: UnixStream, state: Arc<Mutex<State>>) {
    let Some((call, body)) = read_request(&mut conn).await else {
        return;
    };
    if call == "GET /events" {
        let (tx, mut rx) = mpsc::unbounded_channel::<String>();
        {
            let mut state = state.lock().unwrap();
            state.requests.push((call, body));
            state.events.push(tx);
        }
        let head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n";
        if conn.write_all(head.as_bytes()).await.is_err() {
            return;
        }
        while let Some(line) = rx.recv().await {
            let chunk = format!("{:x}\r\n{line}\r\n", line.len());
            if conn.write_all(chunk.as_bytes()).await.is_err() {
                return;
            }
        }
        let _ = conn.write_all(b"0\r\n\r\n").await;
        return;
    }
    let (status, reply) = {
        let mut state = state.lock().unwrap();
        let route = state.routes.get(&call).cloned();
        state.requests.push((call, body));
        route.unwrap_or((404, r#"{"message":"page not found"}"#.into()))
    };
    let head = format!(
        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        reply.len()
    );
    let _ = conn.write_all(head.as_bytes()).await;
    let _ = conn.write_all(reply.as_bytes()).await;
}

/// "METHOD /path" without the query, and the body (by its Content-Length).
async fn read_request(conn: &mut UnixStream) -> Option<(String, String)> {
    let mut req = Vec::new();
    let mut buf = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = req.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = conn.read(&mut buf).await.ok()?;
        if n == 0 {
            return None;
        }
        req.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&req[..head_end]).into_owned();
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0);
    while req.len() < head_end + length {
        let n = conn.read(&mut buf).await.ok()?;
        if n == 0 {
            return None;
        }
        req.extend_from_slice(&buf[..n]);
    }
    let mut words = head.split_whitespace();
    let method = words.next()?;
    let target = words.next()?;
    let path = target.split('?').next()?;
    let body = String::from_utf8_lossy(&req[head_end..head_end + length]).into_owned();
    Some((format!("{method} {path}"), body))
}
