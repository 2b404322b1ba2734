//! Floods and their measures: a sender of valid-MAC1 handshake initiations from random static
//! keys (built with the overlay's own tunnels, so each one is what a real peer would send) that
//! counts the cookie replies it gets, and `ping` with its worst round trip.

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use wgmesh_config::{PrivateKey, PublicKey};
use wgmesh_overlay::peers::noise::{LocalIdentity, Tunnel};

use super::netns::Netns;
use super::traffic::spawn_in;

/// `count` handshake initiations to the host with `target` public key, each from a fresh random
/// static key: every one passes the host's MAC1 check and decrypts to a key it does not know.
pub fn initiations(target: &str, count: usize) -> Vec<Vec<u8>> {
    let target: PublicKey = target.parse().expect("target public key");
    (0..count)
        .map(|i| {
            let me = LocalIdentity::new(&PrivateKey::generate());
            let mut tunnel = Tunnel::new(&me, &target, None, None, i as u32 + 1);
            let mut buf = [0u8; 256];
            let len = tunnel.initiate(&mut buf).expect("an initiation");
            assert_eq!((len, buf[0]), (148, 1), "not a handshake initiation");
            buf[..len].to_vec()
        })
        .collect()
}

/// A thread in a namespace sending initiations to one address as fast as it can, from one
/// source address or several in turn, and counting the cookie replies that come back.
pub struct Flood {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    cookies: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl Flood {
    /// Starts sending `messages` round-robin from `ns` to `target`, each from the next of
    /// `sources` (addresses of `ns`).
    pub fn start(
        ns: &Netns,
        sources: &[Ipv4Addr],
        target: SocketAddr,
        messages: Vec<Vec<u8>>,
    ) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let cookies = Arc::new(AtomicU64::new(0));
        let (s, n, k) = (stop.clone(), sent.clone(), cookies.clone());
        let sources = sources.to_vec();
        let thread = spawn_in(ns, move || {
            let socks: Vec<UdpSocket> = sources
                .iter()
                .map(|ip| {
                    let sock = UdpSocket::bind((*ip, 0)).expect("flood socket");
                    sock.set_nonblocking(true)
                        .expect("non-blocking flood socket");
                    sock
                })
                .collect();
            let mut ok = 0u64;
            for (m, sock) in messages.iter().cycle().zip(socks.iter().cycle()) {
                if ok.is_multiple_of(256) {
                    n.store(ok, Ordering::Relaxed);
                    k.fetch_add(drain_cookie_replies(&socks), Ordering::Relaxed);
                    if s.load(Ordering::Relaxed) {
                        break;
                    }
                }
                // A full socket buffer (ENOBUFS) is the flood going as fast as it can.
                if sock.send_to(m, target).is_ok() {
                    ok += 1;
                }
            }
            n.store(ok, Ordering::Relaxed);
        });
        Self {
            stop,
            sent,
            cookies,
            thread: Some(thread),
        }
    }

    /// Cookie replies (type 3, 64 bytes) received so far.
    pub fn cookies(&self) -> u64 {
        self.cookies.load(Ordering::Relaxed)
    }

    /// Initiations sent so far.
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    /// Stops the flood; returns how many initiations it sent.
    pub fn stop(mut self) -> u64 {
        self.halt();
        self.sent()
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Reads every datagram waiting on `socks`; returns how many were cookie replies.
fn drain_cookie_replies(socks: &[UdpSocket]) -> u64 {
    let mut buf = [0u8; 256];
    let mut cookies = 0;
    for sock in socks {
        while let Ok(len) = sock.recv(&mut buf) {
            cookies += u64::from(len == 64 && buf[0] == 3);
        }
    }
    cookies
}

impl Drop for Flood {
    fn drop(&mut self) {
        self.halt();
    }
}

/// What one `ping` run saw.
#[derive(Debug, Clone)]
pub struct PingRun {
    pub transmitted: u32,
    pub received: u32,
    /// Each reply's round trip in milliseconds, sorted.
    pub rtts_ms: Vec<f64>,
}

impl PingRun {
    /// The round trip that `q` of the replies (0.0..=1.0) did not exceed (0 with no reply).
    pub fn quantile_ms(&self, q: f64) -> f64 {
        if self.rtts_ms.is_empty() {
            return 0.0;
        }
        let i = ((self.rtts_ms.len() - 1) as f64 * q).round() as usize;
        self.rtts_ms[i]
    }

    /// The worst round trip.
    pub fn max_ms(&self) -> f64 {
        self.quantile_ms(1.0)
    }

    /// A short summary for messages.
    pub fn summary(&self) -> String {
        format!(
            "{}/{} replies, RTT median {:.2} ms, p90 {:.2} ms, p95 {:.2} ms, p99 {:.2} ms, \
             max {:.2} ms",
            self.received,
            self.transmitted,
            self.quantile_ms(0.5),
            self.quantile_ms(0.9),
            self.quantile_ms(0.95),
            self.quantile_ms(0.99),
            self.max_ms()
        )
    }
}

/// `ping -c count -i interval -W 1 dst` from `ns`, with every reply's round trip.
pub fn ping_run(ns: &Netns, dst: &str, count: u32, interval: &str) -> PingRun {
    let c = count.to_string();
    let out = ns.exec(&["ping", "-n", "-c", &c, "-i", interval, "-W", "1", dst]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (transmitted, received) = super::traffic::parse_ping_summary(&text)
        .unwrap_or_else(|| panic!("no ping summary in: {text}"));
    // "64 bytes from 10.42.2.2: icmp_seq=1 ttl=62 time=0.093 ms"
    let mut rtts_ms: Vec<f64> = text
        .lines()
        .filter_map(|l| l.split(" time=").nth(1))
        .filter_map(|t| t.trim_end_matches(" ms").parse().ok())
        .collect();
    rtts_ms.sort_by(f64::total_cmp);
    PingRun {
        transmitted,
        received,
        rtts_ms,
    }
}
