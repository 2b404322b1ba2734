//! Traffic between namespaces without external tools: threads that `setns` into a
//! namespace create their sockets there (a socket stays in the namespace it was made in).

use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::sched::{setns, CloneFlags};

use super::netns::Netns;

/// Moves the calling thread into `ns`. Only for threads the harness created.
fn enter(ns: &Netns) {
    let f = File::open(ns.path())
        .unwrap_or_else(|e| panic!("cannot open {}: {e}", ns.path().display()));
    setns(&f, CloneFlags::CLONE_NEWNET).unwrap_or_else(|e| panic!("setns into {}: {e}", ns.name()));
}

/// Runs `f` on a new thread inside `ns` and returns its result (panics propagate).
pub fn in_netns<T: Send + 'static>(ns: &Netns, f: impl FnOnce() -> T + Send + 'static) -> T {
    spawn_in(ns, f)
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p))
}

/// Starts `f` on a new thread inside `ns`.
pub fn spawn_in<T: Send + 'static>(
    ns: &Netns,
    f: impl FnOnce() -> T + Send + 'static,
) -> JoinHandle<T> {
    let ns = ns.clone();
    std::thread::Builder::new()
        .name(format!("in-{}", ns.name()))
        .spawn(move || {
            enter(&ns);
            f()
        })
        .expect("spawn thread")
}

/// One `ping` from `ns` to `dst` (1 s timeout).
pub fn ping(ns: &Netns, dst: &str) -> bool {
    ns.exec(&["ping", "-n", "-q", "-c", "1", "-W", "1", dst])
        .status
        .success()
}

/// One `ping` from `ns` to `dst` with source address `src`.
pub fn ping_from(ns: &Netns, src: &str, dst: &str) -> bool {
    ns.exec(&["ping", "-n", "-q", "-c", "1", "-W", "1", "-I", src, dst])
        .status
        .success()
}

/// `ping -c count -i interval`; returns (transmitted, received).
pub fn ping_count(ns: &Netns, dst: &str, count: u32, interval: &str) -> (u32, u32) {
    let c = count.to_string();
    let out = ns.exec(&["ping", "-n", "-q", "-c", &c, "-i", interval, "-W", "1", dst]);
    let text = String::from_utf8_lossy(&out.stdout);
    parse_ping_summary(&text).unwrap_or_else(|| {
        panic!(
            "no ping summary: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

pub fn parse_ping_summary(text: &str) -> Option<(u32, u32)> {
    let line = text.lines().find(|l| l.contains("packets transmitted"))?;
    let mut nums = line
        .split(',')
        .map(|p| p.split_whitespace().next().and_then(|n| n.parse().ok()));
    Some((nums.next()??, nums.next()??))
}

/// What a sender puts on a stream.
#[derive(Clone, Debug)]
pub enum Pattern {
    /// Deterministic pseudo-random bytes from this seed.
    Random(u64),
    /// This byte string repeated.
    Repeat(Vec<u8>),
}

const CHUNK: usize = 64 * 1024;

/// Produces the pattern in fixed 64 KiB chunks (the last one shorter).
struct Source {
    pattern: Pattern,
    state: u64,
    offset: usize,
}

impl Source {
    fn new(pattern: Pattern) -> Self {
        let state = match &pattern {
            Pattern::Random(s) => *s,
            Pattern::Repeat(_) => 0,
        };
        Self {
            pattern,
            state,
            offset: 0,
        }
    }

    fn fill(&mut self, buf: &mut [u8]) {
        match &self.pattern {
            Pattern::Random(_) => {
                for w in buf.chunks_mut(8) {
                    // splitmix64
                    self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
                    let mut z = self.state;
                    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
                    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
                    z ^= z >> 31;
                    w.copy_from_slice(&z.to_le_bytes()[..w.len()]);
                }
            }
            Pattern::Repeat(m) => {
                for b in buf.iter_mut() {
                    *b = m[self.offset % m.len()];
                    self.offset += 1;
                }
            }
        }
    }
}

/// A 64-bit FNV-1a-style hash over 8-byte words (fast enough in debug builds).
/// Callers feed it whole 64 KiB chunks, so the result does not depend on how the
/// bytes were split on the way.
#[derive(Clone, Copy)]
pub struct Hash64(u64);

impl Hash64 {
    pub fn new() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }

    pub fn update(&mut self, data: &[u8]) {
        const P: u64 = 0x0000_0100_0000_01B3;
        let mut words = data.chunks_exact(8);
        for w in &mut words {
            let v = u64::from_le_bytes(w.try_into().expect("8 bytes"));
            self.0 = (self.0 ^ v).wrapping_mul(P);
        }
        for &b in words.remainder() {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(P);
        }
        self.0 ^= data.len() as u64;
        self.0 = self.0.wrapping_mul(P);
    }

    pub fn value(self) -> u64 {
        self.0
    }
}

impl Default for Hash64 {
    fn default() -> Self {
        Self::new()
    }
}

/// Hash and length of what a transfer sent and received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Digest {
    pub len: u64,
    pub hash: u64,
}

#[derive(Debug, Clone, Copy)]
pub struct Transfer {
    pub sent: Digest,
    pub received: Digest,
    pub elapsed: Duration,
}

impl Transfer {
    pub fn assert_intact(&self, what: &str) {
        assert_eq!(
            self.sent, self.received,
            "{what}: received bytes differ from those sent"
        );
        eprintln!(
            "{what}: {} bytes intact in {:?} ({:.1} Mbit/s)",
            self.received.len,
            self.elapsed,
            self.received.len as f64 * 8.0 / self.elapsed.as_secs_f64() / 1e6
        );
    }
}

/// Parameters of a TCP transfer from `client` (sender) to `server` (receiver).
pub struct TcpTransfer<'a> {
    pub server: &'a Netns,
    pub server_ip: IpAddr,
    pub port: u16,
    pub client: &'a Netns,
    pub len: u64,
    pub pattern: Pattern,
    /// How long one read or write may block, and how long connecting may take.
    pub io_timeout: Duration,
    /// Optional pause between chunks (to stretch a transfer over time).
    pub pace: Option<Duration>,
}

impl<'a> TcpTransfer<'a> {
    pub fn new(client: &'a Netns, server: &'a Netns, server_ip: &str, port: u16, len: u64) -> Self {
        Self {
            server,
            server_ip: server_ip.parse().expect("server ip"),
            port,
            client,
            len,
            pattern: Pattern::Random(len ^ u64::from(port)),
            io_timeout: Duration::from_secs(30),
            pace: None,
        }
    }

    pub fn pattern(mut self, p: Pattern) -> Self {
        self.pattern = p;
        self
    }

    pub fn pace(mut self, d: Duration) -> Self {
        self.pace = Some(d);
        self
    }

    /// Runs the transfer to completion. Errors are reported as `Err(text)`.
    pub fn run(self) -> Result<Transfer, String> {
        let addr = SocketAddr::new(self.server_ip, self.port);
        let io_timeout = self.io_timeout;
        let (ready_tx, ready_rx) = mpsc::channel::<Result<(), String>>();
        let receiver = spawn_in(self.server, move || -> Result<Digest, String> {
            let listener = match TcpListener::bind(addr) {
                Ok(l) => l,
                Err(e) => {
                    let msg = format!("bind {addr}: {e}");
                    let _ = ready_tx.send(Err(msg.clone()));
                    return Err(msg);
                }
            };
            listener.set_nonblocking(true).map_err(|e| e.to_string())?;
            let _ = ready_tx.send(Ok(()));
            let deadline = Instant::now() + io_timeout;
            let (mut s, _) = loop {
                match listener.accept() {
                    Ok(c) => break c,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        if Instant::now() > deadline {
                            return Err(format!("no connection to {addr} within {io_timeout:?}"));
                        }
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    Err(e) => return Err(format!("accept on {addr}: {e}")),
                }
            };
            s.set_nonblocking(false).map_err(|e| e.to_string())?;
            s.set_read_timeout(Some(io_timeout))
                .map_err(|e| e.to_string())?;
            let mut h = Hash64::new();
            let mut len = 0u64;
            let mut buf = vec![0u8; CHUNK];
            loop {
                // Fill a whole chunk (or up to EOF) so hashing is split-independent.
                let mut n = 0;
                while n < CHUNK {
                    match s.read(&mut buf[n..]) {
                        Ok(0) => break,
                        Ok(k) => n += k,
                        Err(e) if e.kind() == ErrorKind::Interrupted => {}
                        Err(e) => {
                            return Err(format!(
                                "receiving on {addr} after {} bytes: {e}",
                                len + n as u64
                            ))
                        }
                    }
                }
                if n == 0 {
                    break;
                }
                h.update(&buf[..n]);
                len += n as u64;
                if n < CHUNK {
                    break;
                }
            }
            Ok(Digest {
                len,
                hash: h.value(),
            })
        });
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                let _ = receiver.join();
                return Err(e);
            }
            Err(_) => {
                return Err(receiver
                    .join()
                    .map_err(|_| "receiver panicked".to_string())
                    .and_then(|r| r.map(|_| ()))
                    .err()
                    .unwrap_or_default())
            }
        }
        let len = self.len;
        let pattern = self.pattern.clone();
        let pace = self.pace;
        let t0 = Instant::now();
        let sender = spawn_in(self.client, move || -> Result<Digest, String> {
            let deadline = Instant::now() + io_timeout;
            let mut s = loop {
                match TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
                    Ok(s) => break s,
                    Err(e) if Instant::now() > deadline => {
                        return Err(format!("connect to {addr}: {e}"))
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(200)),
                }
            };
            s.set_write_timeout(Some(io_timeout))
                .map_err(|e| e.to_string())?;
            let mut src = Source::new(pattern);
            let mut h = Hash64::new();
            let mut buf = vec![0u8; CHUNK];
            let mut sent = 0u64;
            while sent < len {
                let n = (len - sent).min(CHUNK as u64) as usize;
                src.fill(&mut buf[..n]);
                h.update(&buf[..n]);
                s.write_all(&buf[..n])
                    .map_err(|e| format!("sending to {addr} after {sent} bytes: {e}"))?;
                sent += n as u64;
                if let Some(p) = pace {
                    std::thread::sleep(p);
                }
            }
            s.shutdown(Shutdown::Write)
                .map_err(|e| format!("shutdown: {e}"))?;
            // Wait for the receiver to close, so the whole stream was read.
            s.set_read_timeout(Some(io_timeout))
                .map_err(|e| e.to_string())?;
            let mut b = [0u8; 1];
            let _ = s.read(&mut b);
            Ok(Digest {
                len: sent,
                hash: h.value(),
            })
        });
        let sent = sender.join().map_err(|_| "sender panicked".to_string())?;
        let received = receiver
            .join()
            .map_err(|_| "receiver panicked".to_string())?;
        let elapsed = t0.elapsed();
        match (sent, received) {
            (Ok(sent), Ok(received)) => Ok(Transfer {
                sent,
                received,
                elapsed,
            }),
            (s, r) => Err(format!("sender: {s:?}; receiver: {r:?}")),
        }
    }
}

type Datagrams = Arc<Mutex<Vec<(SocketAddr, Vec<u8>)>>>;

/// A UDP socket bound inside a namespace that collects what it receives on a thread.
pub struct UdpSink {
    pub addr: SocketAddr,
    received: Datagrams,
    count: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl UdpSink {
    pub fn bind(ns: &Netns, addr: &str) -> Self {
        let addr: SocketAddr = addr.parse().expect("sink address");
        let received = Arc::new(Mutex::new(Vec::new()));
        let count = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::channel();
        let (r, c, st) = (received.clone(), count.clone(), stop.clone());
        let thread = spawn_in(ns, move || {
            let sock = UdpSocket::bind(addr).unwrap_or_else(|e| panic!("bind udp {addr}: {e}"));
            sock.set_read_timeout(Some(Duration::from_millis(100)))
                .expect("timeout");
            tx.send(()).expect("ready");
            let mut buf = vec![0u8; 65536];
            while !st.load(Ordering::SeqCst) {
                if let Ok((n, from)) = sock.recv_from(&mut buf) {
                    r.lock().unwrap().push((from, buf[..n].to_vec()));
                    c.fetch_add(1, Ordering::SeqCst);
                }
            }
        });
        rx.recv().expect("udp sink did not start");
        Self {
            addr,
            received,
            count,
            stop,
            thread: Some(thread),
        }
    }

    pub fn count(&self) -> u64 {
        self.count.load(Ordering::SeqCst)
    }

    pub fn received(&self) -> Vec<(SocketAddr, Vec<u8>)> {
        self.received.lock().unwrap().clone()
    }
}

impl Drop for UdpSink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Sends `count` datagrams of `payload` from `ns` (bound to `src`, or any address) to `dst`.
pub fn udp_send(ns: &Netns, src: Option<&str>, dst: &str, payload: &[u8], count: usize) {
    let bind: SocketAddr = match src {
        Some(s) => SocketAddr::new(s.parse().expect("src ip"), 0),
        None => "0.0.0.0:0".parse().unwrap(),
    };
    let dst: SocketAddr = dst.parse().expect("dst address");
    let payload = payload.to_vec();
    in_netns(ns, move || {
        let sock = UdpSocket::bind(bind).unwrap_or_else(|e| panic!("bind udp {bind}: {e}"));
        for _ in 0..count {
            // Errors (e.g. no route yet) are the caller's to detect at the receiver.
            let _ = sock.send_to(&payload, dst);
            std::thread::sleep(Duration::from_millis(5));
        }
    });
}

/// Binds a UDP socket on `addr` inside `ns` and keeps it open until dropped.
pub struct HeldUdpSocket {
    stop: mpsc::Sender<()>,
    thread: Option<JoinHandle<()>>,
}

impl HeldUdpSocket {
    pub fn bind(ns: &Netns, addr: &str) -> Self {
        let addr: SocketAddr = addr.parse().expect("address");
        let (stop, stop_rx) = mpsc::channel::<()>();
        let (ready_tx, ready_rx) = mpsc::channel();
        let thread = spawn_in(ns, move || {
            let sock = UdpSocket::bind(addr).unwrap_or_else(|e| panic!("bind udp {addr}: {e}"));
            ready_tx.send(()).expect("ready");
            let _ = stop_rx.recv();
            drop(sock);
        });
        ready_rx.recv().expect("socket holder did not start");
        Self {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for HeldUdpSocket {
    fn drop(&mut self) {
        let _ = self.stop.send(());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Pings from `from` to `to` at 1 ms and streams to it (checksummed) until `stop`: (sent,
/// received) pings and the number of intact streams.
pub fn pings_and_streams_until(
    stop: &AtomicBool,
    from: &Netns,
    to_ns: &Netns,
    to: &str,
) -> ((u32, u32), usize) {
    std::thread::scope(|s| {
        let pings = s.spawn(|| {
            let (mut sent, mut received) = (0, 0);
            while !stop.load(Ordering::Relaxed) {
                let (a, b) = ping_count(from, to, 1000, "0.001");
                sent += a;
                received += b;
            }
            (sent, received)
        });
        let streams = s.spawn(|| {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                TcpTransfer::new(from, to_ns, to, 5001 + n as u16, 16 << 20)
                    .pace(Duration::from_millis(5))
                    .run()
                    .expect("a stream across the rotations")
                    .assert_intact("stream across the rotations");
                n += 1;
            }
            n
        });
        (pings.join().unwrap(), streams.join().unwrap())
    })
}
