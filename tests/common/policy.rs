//! Policy scenes: workloads attached with labels, TCP services that answer, and probes that
//! say whether a flow (and its replies) got through.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use super::agent::Agent;
use super::netns::Netns;
use super::traffic::{in_netns, spawn_in};
use super::{ip_of, Cluster};

/// How long a probe waits for a connection or its answer. Denied flows are dropped (no RST), so
/// a denied probe costs this long.
pub const PROBE_TIMEOUT: Duration = Duration::from_millis(1500);

/// A workload namespace on `agent`'s host attached with `labels` (`["role=frontend"]`);
/// returns (netns, ip).
pub fn labelled_workload(
    c: &Cluster,
    agent: &Agent,
    tag: &str,
    labels: &[&str],
) -> (Netns, String) {
    let w = c.netns(tag);
    let mut args = vec!["attach", "--netns", w.name()];
    for l in labels {
        args.extend(["--label", l]);
    }
    let socket = agent.socket.to_str().unwrap().to_owned();
    args.extend(["--socket", &socket]);
    let mut full = vec![super::agent::BIN];
    full.extend(&args);
    let out = agent.ns.exec(&full);
    assert!(
        out.status.success(),
        "wgmesh {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let cidr = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    (w, ip_of(&cidr).to_owned())
}

/// TCP services in a namespace: each accepted connection gets `ok\n` after it sends a line.
pub struct Services {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Services {
    /// Listens on `ip:port` for every port in `ports`, inside `ns`.
    pub fn start(ns: &Netns, ip: &str, ports: &[u16]) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        for &port in ports {
            let addr: SocketAddr = format!("{ip}:{port}").parse().unwrap();
            let listener = in_netns(ns, move || TcpListener::bind(addr))
                .unwrap_or_else(|e| panic!("listen on {addr}: {e}"));
            listener.set_nonblocking(true).unwrap();
            let stop = stop.clone();
            threads.push(std::thread::spawn(move || serve(listener, &stop)));
        }
        Self { stop, threads }
    }
}

fn serve(listener: TcpListener, stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((mut s, _)) => {
                std::thread::spawn(move || {
                    s.set_nonblocking(false).ok();
                    s.set_read_timeout(Some(Duration::from_secs(30))).ok();
                    let mut buf = [0u8; 4096];
                    // Answer every chunk, so a long-lived connection shows each round trip.
                    while let Ok(n) = s.read(&mut buf) {
                        if n == 0 || s.write_all(b"ok\n").is_err() {
                            break;
                        }
                    }
                });
            }
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
}

impl Drop for Services {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            t.join().ok();
        }
    }
}

/// Whether a TCP connection from `ns` to `ip:port` is set up and its answer comes back (the
/// flow and its replies).
pub fn tcp_talks(ns: &Netns, ip: &str, port: u16) -> bool {
    let addr: SocketAddr = format!("{ip}:{port}").parse().unwrap();
    in_netns(ns, move || {
        let Ok(mut s) = TcpStream::connect_timeout(&addr, PROBE_TIMEOUT) else {
            return false;
        };
        s.set_read_timeout(Some(PROBE_TIMEOUT)).ok();
        let mut answer = [0u8; 3];
        s.write_all(b"hi\n").is_ok() && s.read_exact(&mut answer).is_ok() && &answer == b"ok\n"
    })
}

/// A long-lived connection from `ns` to `ip:port`: every 50 ms a round trip; counts the last
/// time one succeeded.
pub struct RunningFlow {
    stop: Arc<AtomicBool>,
    last_ok: Arc<std::sync::Mutex<Option<std::time::Instant>>>,
    thread: Option<JoinHandle<()>>,
}

impl RunningFlow {
    /// Connects (panics if it cannot) and starts the round trips.
    pub fn start(ns: &Netns, ip: &str, port: u16) -> Self {
        let addr: SocketAddr = format!("{ip}:{port}").parse().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let last_ok = Arc::new(std::sync::Mutex::new(None));
        let (stop2, last2) = (stop.clone(), last_ok.clone());
        let thread = spawn_in(ns, move || {
            let mut s = TcpStream::connect_timeout(&addr, PROBE_TIMEOUT)
                .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
            s.set_read_timeout(Some(Duration::from_millis(200))).ok();
            s.set_write_timeout(Some(Duration::from_millis(200))).ok();
            let mut answer = [0u8; 3];
            while !stop2.load(Ordering::Relaxed) {
                if s.write_all(b"x\n").is_ok() && s.read_exact(&mut answer).is_ok() {
                    *last2.lock().unwrap() = Some(std::time::Instant::now());
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        Self {
            stop,
            last_ok,
            thread: Some(thread),
        }
    }

    /// When the last round trip succeeded.
    pub fn last_ok(&self) -> Option<std::time::Instant> {
        *self.last_ok.lock().unwrap()
    }
}

impl Drop for RunningFlow {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().ok();
        }
    }
}

/// Writes `text` as a policy file named `name` in the cluster's scratch directory.
pub fn policy_file(dir: &std::path::Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// The seed policy of the issue, with its tests (the one README and the unit tests use).
pub const SEED_POLICY: &str = include_str!("../../docs/policy/seed.toml");
