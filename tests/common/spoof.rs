//! A flood with a faked source address: a raw IPv4 socket (`IPPROTO_RAW`, so the test writes
//! the IP header itself) in a namespace sends UDP datagrams that claim to come from another
//! host's address and port — what an attacker anywhere on the path can do without any key.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::netns::Netns;
use super::traffic::spawn_in;

/// A thread in a namespace sending `messages` round-robin to `target`, each as a UDP datagram
/// from `source`, at about `per_second`.
pub struct SpoofFlood {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl SpoofFlood {
    pub fn start(
        ns: &Netns,
        source: SocketAddrV4,
        target: SocketAddrV4,
        messages: Vec<Vec<u8>>,
        per_second: u64,
    ) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let (s, n) = (stop.clone(), sent.clone());
        let datagrams: Vec<Vec<u8>> = messages
            .iter()
            .map(|m| ipv4_udp(source, target, m))
            .collect();
        let thread = spawn_in(ns, move || {
            let sock = RawSocket::open();
            let start = Instant::now();
            let mut ok = 0u64;
            for d in datagrams.iter().cycle() {
                // Evenly (a few datagrams at a time), so that no gap is left between bursts.
                if ok.is_multiple_of(8) {
                    n.store(ok, Ordering::Relaxed);
                    if s.load(Ordering::Relaxed) {
                        break;
                    }
                    // Pace: never ahead of `per_second`.
                    let due = Duration::from_secs_f64(ok as f64 / per_second as f64);
                    if let Some(wait) = due.checked_sub(start.elapsed()) {
                        std::thread::sleep(wait);
                    }
                }
                if sock.send_to(d, *target.ip()) {
                    ok += 1;
                }
            }
            n.store(ok, Ordering::Relaxed);
        });
        Self {
            stop,
            sent,
            thread: Some(thread),
        }
    }

    /// Datagrams sent so far.
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    /// Stops the flood; returns how many datagrams it sent.
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

impl Drop for SpoofFlood {
    fn drop(&mut self) {
        self.halt();
    }
}

/// An IPv4 header (checksum and total length left to the kernel, which fills them for raw
/// sockets) and a UDP header without checksum (0: none, allowed over IPv4), then `payload`.
pub fn ipv4_udp(source: SocketAddrV4, target: SocketAddrV4, payload: &[u8]) -> Vec<u8> {
    let udp_len = 8 + payload.len();
    let total = 20 + udp_len;
    let mut p = vec![0u8; total];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    p[6] = 0x40; // don't fragment
    p[8] = 64;
    p[9] = 17;
    p[12..16].copy_from_slice(&source.ip().octets());
    p[16..20].copy_from_slice(&target.ip().octets());
    p[20..22].copy_from_slice(&source.port().to_be_bytes());
    p[22..24].copy_from_slice(&target.port().to_be_bytes());
    p[24..26].copy_from_slice(&(udp_len as u16).to_be_bytes());
    p[28..].copy_from_slice(payload);
    p
}

/// A raw IPv4 socket that sends whole IP packets (`IPPROTO_RAW` implies `IP_HDRINCL`).
struct RawSocket(libc::c_int);

impl RawSocket {
    fn open() -> Self {
        // SAFETY: plain socket(2); the descriptor is owned by the returned value.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_RAW) };
        assert!(
            fd >= 0,
            "raw socket: {} (the test needs root)",
            std::io::Error::last_os_error()
        );
        Self(fd)
    }

    /// Sends one IP packet; false when the kernel refused it (a full buffer).
    fn send_to(&self, packet: &[u8], dst: Ipv4Addr) -> bool {
        let addr = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: 0,
            sin_addr: libc::in_addr {
                s_addr: u32::from(dst).to_be(),
            },
            sin_zero: [0; 8],
        };
        // SAFETY: `packet` and `addr` are valid for the lengths given.
        let n = unsafe {
            libc::sendto(
                self.0,
                packet.as_ptr().cast(),
                packet.len(),
                0,
                (&raw const addr).cast(),
                size_of::<libc::sockaddr_in>() as libc::socklen_t,
            )
        };
        n == packet.len() as isize
    }
}

impl Drop for RawSocket {
    fn drop(&mut self) {
        // SAFETY: the descriptor is ours and closed once.
        unsafe { libc::close(self.0) };
    }
}
