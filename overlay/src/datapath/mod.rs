//! The data path's threads, as dedicated OS threads that block on their file descriptor and then
//! handle whatever batch is ready, without waiting to fill it:
//!
//! - `tx`: TUN → [`tso`] (super-packets split, batch by batch) → [`seal`] (route by inner
//!   destination, seal) → UDP (GSO runs);
//! - `rx`: UDP (recvmmsg + GRO) → [`open`] (peer by receiver index, open, cryptokey check) → TUN
//!   (GRO);
//! - `handshake`: handshake messages handed over by `rx` (each source address within its share,
//!   [`crate::peers::limiter`]), the protocol timers of every peer every 100 ms, and the rate
//!   limiter's reset every second — kept off the data threads because each handshake costs two
//!   X25519 operations.
//!
//! A packet written to TUN often makes the kernel answer at once (a ping's echo, TCP's ACKs):
//! right after its TUN write, `rx` takes the TUN-reading role if `tx` is not holding it and sends
//! those answers itself, sparing a thread wake-up (tens of microseconds in a VM) on that round
//! trip. The role is a try-lock on `tx`'s buffers, so only one thread reads TUN at a time and a
//! flow's packets stay in order.
//!
//! The threads share a [`Shared`]: the current [`PeerTable`] snapshot (the peers and the host's
//! identity) behind `arc-swap` (loaded once per batch, no lock) and host-wide drop counters. Every decision about
//! a packet is made by [`crate::peers`]; [`seal`] and [`open`] apply those decisions to a whole
//! batch without I/O (so tests drive them without sockets), and the threads do the I/O around
//! them. Per-packet work allocates nothing; a peer's lock is taken once per run of its packets in
//! a batch ([`PeerRun`](crate::peers::peer::PeerRun)) and never held across a syscall.

pub mod audit;
pub mod batch;
pub mod gro;
mod handshake;
pub mod local;
pub mod open;
pub(crate) mod poll;
mod rx;
pub mod seal;
pub mod tso;
pub mod tun;
mod tx;
pub mod udp;
mod vnet;

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;

use crate::peers::counters::HostDrops;
use crate::peers::noise::LocalIdentity;
use crate::peers::peer::Transmit;
use crate::peers::table::PeerTable;
use audit::AuditTap;
use tun::Tun;
use udp::Udp;

/// How long a blocked data thread sleeps before it looks at the shutdown flag.
const WAKE_INTERVAL: Duration = Duration::from_millis(200);

/// State shared by the data-path threads and the agent.
pub struct Shared {
    /// The peers and the host's identity, replaced as a whole on every configuration change
    /// (and when the host's key changes).
    pub table: ArcSwap<PeerTable>,
    /// Host-wide drops.
    pub drops: HostDrops,
    /// Where the flows the policy refused go, for the audit log.
    pub audit: AuditTap,
    /// Same-host packets the policy dropped.
    pub local_drops: local::LocalDrops,
    /// When the data path started: the time of batches that need none.
    started: Instant,
    shutdown: AtomicBool,
}

impl Shared {
    /// Shared state with an initial table (which already carries the policy: it is enforced
    /// from the first packet), auditing into `audit`.
    pub fn new(table: PeerTable, audit: AuditTap) -> Arc<Self> {
        Arc::new(Self {
            table: ArcSwap::from_pointee(table),
            drops: HostDrops::default(),
            audit,
            local_drops: local::LocalDrops::default(),
            started: Instant::now(),
            shutdown: AtomicBool::new(false),
        })
    }

    /// The time for the policy's flows in a batch under `table`: read from the clock only when
    /// a policy is enforced.
    #[inline]
    fn flows_now(&self, table: &PeerTable) -> Instant {
        if table.filter().enforces() {
            Instant::now()
        } else {
            self.started
        }
    }

    /// The host's identity now.
    pub fn identity(&self) -> Arc<LocalIdentity> {
        self.table.load().identity().clone()
    }

    fn stopping(&self) -> bool {
        self.shutdown.load(Ordering::Relaxed)
    }
}

/// The running data-path threads.
pub struct DataPath {
    shared: Arc<Shared>,
    udp: Arc<Udp>,
    threads: Vec<JoinHandle<()>>,
}

impl DataPath {
    /// Starts the threads on `tun` and `udp`.
    pub fn start(shared: Arc<Shared>, tun: Tun, udp: Udp, mtu: u16) -> io::Result<Self> {
        let tun = Arc::new(tun);
        let udp = Arc::new(udp);
        let tx_state = Arc::new(parking_lot::Mutex::new(tx::TxState::new(mtu)));
        let (handshakes_tx, handshakes_rx) = crossbeam_channel::bounded(handshake::QUEUE);
        let mut threads = Vec::new();
        let spawn = |name: &str, f: Box<dyn FnOnce() + Send>| {
            std::thread::Builder::new().name(name.into()).spawn(f)
        };
        {
            let (shared, tun, udp, st) =
                (shared.clone(), tun.clone(), udp.clone(), tx_state.clone());
            threads.push(spawn(
                "wgm-tx",
                Box::new(move || tx::run(&shared, &tun, &udp, &st)),
            )?);
        }
        {
            let (shared, tun, udp, st) = (shared.clone(), tun.clone(), udp.clone(), tx_state);
            threads.push(spawn(
                "wgm-rx",
                Box::new(move || rx::run(&shared, &tun, &udp, &st, handshakes_tx)),
            )?);
        }
        {
            let (shared, udp) = (shared.clone(), udp.clone());
            threads.push(spawn(
                "wgm-handshake",
                Box::new(move || handshake::run(&shared, &udp, handshakes_rx)),
            )?);
        }
        Ok(Self {
            shared,
            udp,
            threads,
        })
    }

    /// Starts a handshake with every peer whose endpoint is known and that has no session yet,
    /// so that tunnels are up before the first packet (and right after a restart).
    pub fn initiate_all(&self) {
        let mut buf = [0u8; 256];
        for peer in self.shared.table.load().peers() {
            let initiation = peer.lock().initiate_if_new(&mut buf);
            if let Some(Transmit { dst, len }) = initiation {
                if let Err(e) = self.udp.send(dst, &buf[..len], len) {
                    tracing::debug!(error = %e, %dst, "handshake initiation not sent");
                }
            }
        }
    }

    /// Stops the threads and waits for them (at most about 200 ms, their wake-up interval).
    pub fn stop(self) {
        self.shared.shutdown.store(true, Ordering::Relaxed);
        for t in self.threads {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests;
