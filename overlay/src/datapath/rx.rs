//! The `rx` thread: UDP → [`Opened`] → TUN. It receives batches with recvmmsg (GRO trains
//! split by their stride), hands handshake messages to the handshake thread, writes what was
//! opened to TUN and sends the replies; the decisions are [`open`](super::open)'s.
//!
//! Handshake messages pass this thread's [`SourceLimiter`] before they are queued, so one
//! source address (or a few) can neither fill the handshake queue nor spend the host's handshake
//! budget, however fast it sends; the limiter is this thread's alone (no lock).

use std::hash::BuildHasher;
use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::time::Instant;

use crossbeam_channel::Sender;
use quinn_udp::RecvMeta;

use crate::peers::counters::HostDrop;
use crate::peers::limiter::{Limit, SourceLimiter};
use crate::peers::noise::source_ip;
use crate::peers::peer::PeerRun;
use crate::peers::wire::MessageKind;

use super::handshake::HandshakeMessage;
use super::open::Opened;
use super::tun::{Tun, IDEAL_BATCH_SIZE};
use super::udp::Udp;
use super::{Shared, WAKE_INTERVAL};

/// recvmmsg batch (quinn-udp's own limit).
const RECV_BATCH: usize = 32;
/// One receive buffer holds a whole GRO train.
const RECV_BUF: usize = 65_536;

pub(super) fn run(
    shared: &Shared,
    tun: &Tun,
    udp: &Udp,
    tx_state: &parking_lot::Mutex<super::tx::TxState>,
    handshakes: Sender<HandshakeMessage>,
) {
    let mut recv = vec![0u8; RECV_BATCH * RECV_BUF];
    let mut meta = [RecvMeta::default(); RECV_BATCH];
    let mut out = Opened::new(IDEAL_BATCH_SIZE, RECV_BATCH);
    let mut handshakes = Handshakes {
        queue: handshakes,
        limiter: SourceLimiter::new(random_seed(), Instant::now()),
    };

    while !shared.stopping() {
        // Drain what is ready, then block (reading first saves a poll per busy batch).
        while let Some(n) = receive(udp, &mut recv, &mut meta) {
            open_batch(shared, tun, &recv, &meta[..n], &mut out, &mut handshakes);
            super::tx::flush(udp, &mut out.replies);
            if write_tun(tun, &mut out) {
                // Send what the kernel answered right away, unless `tx` is already at it.
                if let Some(mut st) = tx_state.try_lock() {
                    super::tx::pump(shared, tun, udp, &mut st);
                }
            }
        }
        super::poll::wait(udp.as_raw_fd(), libc::POLLIN, Some(WAKE_INTERVAL));
    }
}

/// The way to the handshake thread: its queue, behind this thread's per-source limiter.
struct Handshakes {
    queue: Sender<HandshakeMessage>,
    limiter: SourceLimiter,
}

/// 128 random bits for the limiter's hash (std's randomly keyed hasher draws them from the
/// operating system).
fn random_seed() -> [u64; 2] {
    let state = std::collections::hash_map::RandomState::new();
    [state.hash_one(1u8), state.hash_one(2u8)]
}

/// One recvmmsg: the number of datagrams (or GRO trains) received, `None` when nothing is ready.
fn receive(udp: &Udp, recv: &mut [u8], meta: &mut [RecvMeta; RECV_BATCH]) -> Option<usize> {
    loop {
        let mut chunks = recv.chunks_mut(RECV_BUF);
        let mut iovs: [IoSliceMut<'_>; RECV_BATCH] = std::array::from_fn(|_| {
            IoSliceMut::new(chunks.next().expect("RECV_BATCH chunks of RECV_BUF"))
        });
        match udp.recv(&mut iovs, meta) {
            Ok(n) => return Some(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return None,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                tracing::debug!(error = %e, "UDP receive failed");
                return None;
            }
        }
    }
}

/// Opens every datagram of one receive batch, writing to TUN whenever `out` fills up.
fn open_batch(
    shared: &Shared,
    tun: &Tun,
    recv: &[u8],
    meta: &[RecvMeta],
    out: &mut Opened,
    handshakes: &mut Handshakes,
) {
    let table = shared.table.load();
    let mut run = PeerRun::new();
    // Read once per batch, and only when a handshake message is in it.
    let mut now = None;
    for (i, m) in meta.iter().enumerate() {
        let data = &recv[i * RECV_BUF..i * RECV_BUF + m.len];
        if m.len == 0 {
            // An empty datagram (anyone can send one) is no WireGuard message.
            shared.drops.bump(HostDrop::Malformed);
            continue;
        }
        let stride = if m.stride == 0 { m.len } else { m.stride };
        for datagram in data.chunks(stride) {
            if out.is_full() {
                run.release();
                write_tun(tun, out);
            }
            if let Some(kind) = out.open(&table, &mut run, &shared.drops, m.addr, datagram) {
                run.release(); // handing over may wake the handshake thread: a syscall
                let now = *now.get_or_insert_with(Instant::now);
                if let Err(why) = hand_over(handshakes, now, m.addr, kind, datagram) {
                    shared.drops.bump(why);
                }
            }
        }
    }
}

/// Rare and expensive: a handshake message within its source's share goes to the handshake
/// thread (copied into a fixed-size message: no allocation). Returns why it was dropped.
fn hand_over(
    handshakes: &mut Handshakes,
    now: Instant,
    from: SocketAddr,
    kind: MessageKind,
    bytes: &[u8],
) -> Result<(), HostDrop> {
    if handshakes.limiter.allow(now, source_ip(from)) == Limit::Drop {
        return Err(HostDrop::HandshakeRateLimited);
    }
    let message = HandshakeMessage::new(from, kind, bytes).ok_or(HostDrop::Malformed)?;
    handshakes
        .queue
        .try_send(message)
        .map_err(|_| HostDrop::HandshakeQueueFull)
}

/// Writes the opened packets to TUN; returns whether there were any.
fn write_tun(tun: &Tun, out: &mut Opened) -> bool {
    out.drain(tun.offload(), |packet| {
        if let Err(e) = tun.write(packet) {
            tracing::debug!(error = %e, "TUN write failed");
        }
    })
}
