//! The `handshake` thread: handshake messages handed over by `rx` (who sent one is
//! [`PeerTable::handshake_from`](crate::peers::table::PeerTable::handshake_from)'s decision,
//! what to answer is the peer's) and every peer's protocol timers, off the data threads. What
//! reaches this queue passed the receive thread's checks (mac1; under load, mac2 and its source's
//! share): see [`rx`](super::rx).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};

use crate::peers::counters::HostDrop;
use crate::peers::lanes::LaneRole;
use crate::peers::noise::source_ip;
use crate::peers::peer::{HandshakeReceived, Transmit};
use crate::peers::table::HandshakeFrom;
use crate::peers::wire::{MessageKind, HANDSHAKE_INIT_LEN};

use super::udp::Udp;
use super::Shared;

/// Handshake messages waiting for this thread; more are dropped (the initiator retries).
pub(super) const QUEUE: usize = 1024;
/// How often every peer's protocol timers run (boringtun's own device uses 250 ms).
const TICK: Duration = Duration::from_millis(100);

/// A handshake initiation, response or cookie reply handed over by the receive thread.
pub(super) struct HandshakeMessage {
    from: SocketAddr,
    kind: MessageKind,
    len: usize,
    /// The message; the longest (an initiation) fills it.
    bytes: [u8; HANDSHAKE_INIT_LEN],
}

impl HandshakeMessage {
    /// Copies a message of `kind`; `None` if it is longer than any handshake message.
    pub(super) fn new(from: SocketAddr, kind: MessageKind, message: &[u8]) -> Option<Self> {
        let mut bytes = [0u8; HANDSHAKE_INIT_LEN];
        bytes.get_mut(..message.len())?.copy_from_slice(message);
        Some(Self {
            from,
            kind,
            len: message.len(),
            bytes,
        })
    }

    fn bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

pub(super) fn run(shared: &Shared, udp: &Udp, inbox: Receiver<HandshakeMessage>) {
    let mut buf = vec![0u8; 65_536];
    let mut next_tick = Instant::now() + TICK;
    while !shared.stopping() {
        let timeout = next_tick.saturating_duration_since(Instant::now());
        match inbox.recv_timeout(timeout) {
            Ok(msg) => handle(shared, udp, &msg, &mut buf),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {
                // The receive thread is gone; keep ticking until shutdown.
                std::thread::sleep(timeout);
            }
        }
        let now = Instant::now();
        if now >= next_tick {
            tick_all(shared, udp, &mut buf);
            next_tick = now + TICK;
        }
    }
}

fn handle(shared: &Shared, udp: &Udp, msg: &HandshakeMessage, buf: &mut [u8]) {
    let table = shared.table.load();
    let ip = source_ip(msg.from);
    let (peer, slot) = match table.handshake_from(ip, msg.kind, msg.bytes(), buf) {
        HandshakeFrom::Peer(peer, slot) => (peer, slot),
        HandshakeFrom::CookieReply(len) => {
            shared.drops.bump(HostDrop::HandshakeAnsweredWithCookie);
            return send(udp, msg.from, &buf[..len]);
        }
        HandshakeFrom::Drop { why, error } => {
            if let Some(e) = error {
                tracing::debug!(from = %msg.from, error = ?e, "invalid handshake initiation");
            }
            return shared.drops.bump(why);
        }
    };
    // Sealed while the peer is locked, sent after (never a syscall under a peer's lock).
    let mut outgoing: Vec<Vec<u8>> = Vec::new();
    {
        let mut state = peer.lock();
        match state.handle_handshake(slot, msg.from, msg.bytes(), buf) {
            HandshakeReceived::Reply(len) => {
                outgoing.push(buf[..len].to_vec());
                while let Some(len) = state.poll_queued(slot, buf) {
                    outgoing.push(buf[..len].to_vec());
                }
                let key = state.keys().current();
                tracing::debug!(peer = %peer.id(), %key, endpoint = %msg.from, "handshake");
            }
            HandshakeReceived::Cookie(len) => {
                shared.drops.bump(HostDrop::HandshakeAnsweredWithCookie);
                outgoing.push(buf[..len].to_vec());
            }
            HandshakeReceived::Nothing => {}
            HandshakeReceived::Reject(e) => {
                let key = state.keys().current();
                tracing::debug!(peer = %peer.id(), %key, error = ?e, "handshake message rejected");
            }
        }
    }
    for bytes in outgoing {
        send(udp, msg.from, &bytes);
    }
}

fn tick_all(shared: &Shared, udp: &Udp, buf: &mut [u8]) {
    let table = shared.table.load();
    for peer in table.peers() {
        for role in [LaneRole::Current, LaneRole::Other] {
            let due = peer.lock().handle_timeout(role, buf);
            if let Some(Transmit { dst, len }) = due {
                send(udp, dst, &buf[..len]);
            }
        }
    }
}

fn send(udp: &Udp, dst: SocketAddr, bytes: &[u8]) {
    if let Err(e) = udp.send(dst, bytes, bytes.len()) {
        tracing::debug!(error = %e, %dst, "UDP send failed");
    }
}
