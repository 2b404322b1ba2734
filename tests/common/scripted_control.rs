//! A scripted control plane: a small HTTPS server in the test process that speaks just enough
//! of the control API (docs/CONTROL-API.md) for one agent — join, the netmap long poll, the
//! endpoint report — and serves whatever netmap JSON the test sets, hostile ones included.
//!
//! Its TLS is the real control plane's PKI (`wgmesh_control::pki`): a CA whose digest is in the
//! join token it hands out, and a server certificate for its address, so the agent pins it
//! exactly as it pins a real control plane. It records the `revision` of every netmap poll,
//! which is what the agent says it holds.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rustls::{ServerConfig, ServerConnection, StreamOwned};
use serde_json::Value;
use wgmesh_config::control::Host;
use wgmesh_config::token::JoinToken;
use wgmesh_control::pki::Pki;

use super::netns::Netns;
use super::traffic::spawn_in;

/// What the server serves and what it saw.
#[derive(Default)]
struct Script {
    /// The netmap served (its `revision` decides whether a poll is answered).
    netmap: Value,
    /// The `revision` of every netmap poll, in order.
    polls: Vec<u64>,
    /// Netmap replies break off after half their body (the connection closes early).
    break_off: bool,
}

/// The running server; stopped (and its thread joined) on drop.
pub struct ScriptedControl {
    /// `https://IP:PORT`.
    pub url: String,
    /// A join token for its CA.
    pub token: String,
    script: Arc<Mutex<Script>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl ScriptedControl {
    /// Serves on `ip:port` inside `ns` (the address must be on one of its interfaces).
    pub fn start(ns: &Netns, ip: Ipv4Addr, port: u16) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let pki = Pki::load_or_create(dir.path(), &[Host::Ip(ip.into())]).expect("test PKI");
        let token = JoinToken::generate(pki.ca_der()).expose();
        let tls = pki.server_config();
        let script = Arc::new(Mutex::new(Script::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (bound_tx, bound_rx) = std::sync::mpsc::channel();
        let thread = {
            let (script, stop) = (Arc::clone(&script), Arc::clone(&stop));
            spawn_in(ns, move || {
                let listener = TcpListener::bind((ip, port)).expect("bind the scripted control");
                listener
                    .set_nonblocking(true)
                    .expect("non-blocking listener");
                bound_tx.send(()).expect("report bound");
                accept_loop(&listener, &tls, &script, &stop);
            })
        };
        bound_rx
            .recv_timeout(Duration::from_secs(5))
            .expect("the scripted control plane did not bind");
        Self {
            url: format!("https://{ip}:{port}"),
            token,
            script,
            stop,
            thread: Some(thread),
            _dir: dir,
        }
    }

    /// Serves `netmap` from now on; returns how many polls were seen before.
    pub fn serve(&self, netmap: Value) -> usize {
        let mut s = self.lock();
        s.netmap = netmap;
        s.polls.len()
    }

    /// From now on, whether netmap replies break off halfway through their body: the agent
    /// receives part of a reply that its `content-length` says is longer.
    pub fn break_off(&self, on: bool) {
        self.lock().break_off = on;
    }

    /// The `revision` of every netmap poll since poll number `from`.
    pub fn polls_since(&self, from: usize) -> Vec<u64> {
        self.lock().polls[from..].to_vec()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Script> {
        self.script.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for ScriptedControl {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn accept_loop(
    listener: &TcpListener,
    tls: &Arc<ServerConfig>,
    script: &Arc<Mutex<Script>>,
    stop: &Arc<AtomicBool>,
) {
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((tcp, _)) => {
                let (tls, script, stop) = (Arc::clone(tls), Arc::clone(script), Arc::clone(stop));
                std::thread::spawn(move || {
                    let _ = tcp.set_nonblocking(false);
                    let _ = tcp.set_read_timeout(Some(Duration::from_secs(10)));
                    if let Ok(conn) = ServerConnection::new(tls) {
                        handle(StreamOwned::new(conn, tcp), &script, &stop);
                    }
                });
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("scripted control plane: accept: {e}"),
        }
    }
}

type Tls = StreamOwned<ServerConnection, TcpStream>;

/// Answers one request (every response closes the connection).
fn handle(stream: Tls, script: &Mutex<Script>, stop: &AtomicBool) {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() {
        return;
    }
    let mut parts = line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let mut length = 0;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).is_err() || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                length = v.trim().parse().unwrap_or(0);
            }
        }
    }
    let mut body = vec![0; length];
    if reader.read_exact(&mut body).is_err() {
        return;
    }
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let (code, reply) = match (method, path) {
        ("POST", "/v1/join") => join(&body, script),
        ("GET", p) if p.starts_with("/v1/hosts/") && p.ends_with("/netmap") => {
            netmap(query, script, stop)
        }
        ("PUT", p) if p.starts_with("/v1/hosts/") && p.ends_with("/endpoint") => {
            let s = script.lock().unwrap_or_else(PoisonError::into_inner);
            (
                200,
                serde_json::json!({ "revision": s.netmap["revision"] }).to_string(),
            )
        }
        _ => (
            404,
            r#"{"reason":"not_found","error":"no such call"}"#.to_owned(),
        ),
    };
    let mut stream = reader.into_inner();
    let status = match code {
        200 => "200 OK",
        204 => "204 No Content",
        _ => "404 Not Found",
    };
    let head = format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
         connection: close\r\n\r\n",
        if code == 204 { 0 } else { reply.len() }
    );
    let _ = stream.write_all(head.as_bytes());
    let cut = path.ends_with("/netmap")
        && script
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .break_off;
    if cut {
        let _ = stream.write_all(&reply.as_bytes()[..reply.len() / 2]);
        let _ = stream.flush();
        // Closed without close_notify, mid-body.
        return;
    }
    if code != 204 {
        let _ = stream.write_all(reply.as_bytes());
    }
    let _ = stream.flush();
    stream.conn.send_close_notify();
    let _ = stream.flush();
}

/// `POST /v1/join`: the credential the agent sent, and the netmap served.
fn join(body: &[u8], script: &Mutex<Script>) -> (u16, String) {
    let request: Value = serde_json::from_slice(body).unwrap_or_default();
    let credential = request["credential"].clone();
    let s = script.lock().unwrap_or_else(PoisonError::into_inner);
    let reply = serde_json::json!({ "credential": credential, "netmap": s.netmap });
    (200, reply.to_string())
}

/// `GET /v1/hosts/{name}/netmap?revision=N&wait=S[&delta=true&epoch=E]`: the poll is recorded;
/// answered with the netmap served once its revision differs from `N`, or 204 after `S` s.
fn netmap(query: &str, script: &Mutex<Script>, stop: &AtomicBool) -> (u16, String) {
    let param = |name: &str| {
        query
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.to_owned())
    };
    let held: u64 = param("revision").and_then(|v| v.parse().ok()).unwrap_or(0);
    let wait: u64 = param("wait").and_then(|v| v.parse().ok()).unwrap_or(25);
    let delta = param("delta").as_deref() == Some("true");
    script
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .polls
        .push(held);
    let deadline = Instant::now() + Duration::from_secs(wait.min(25));
    loop {
        {
            let s = script.lock().unwrap_or_else(PoisonError::into_inner);
            if s.netmap["revision"].as_u64() != Some(held) {
                let reply = if delta {
                    serde_json::json!({ "full": s.netmap })
                } else {
                    s.netmap.clone()
                };
                return (200, reply.to_string());
            }
        }
        if Instant::now() >= deadline || stop.load(Ordering::Relaxed) {
            return (204, String::new());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
