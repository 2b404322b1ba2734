//! Handshake messages and timers, off the data threads.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};

use crate::datapath::udp::Udp;
use crate::peers::noise::{source_ip, Decapsulated, Identify, Tick};
use crate::peers::peer::Peer;
use crate::peers::wire::{self, MessageKind};

use super::{bump, Shared};

/// Handshake messages waiting for this thread; more are dropped (the initiator retries).
pub(super) const QUEUE: usize = 1024;
/// How often every peer's protocol timers run (boringtun's own device uses 250 ms).
const TICK: Duration = Duration::from_millis(100);
/// How often the handshake rate limiter's count resets.
const RATE_LIMIT_PERIOD: Duration = Duration::from_secs(1);

/// A handshake initiation, response or cookie reply handed over by the receive thread.
pub(super) struct HandshakeMessage {
    pub(super) from: SocketAddr,
    pub(super) kind: MessageKind,
    pub(super) bytes: Vec<u8>,
}

pub(super) fn run(shared: &Shared, udp: &Udp, inbox: Receiver<HandshakeMessage>) {
    let mut buf = vec![0u8; 65_536];
    let mut next_tick = Instant::now() + TICK;
    let mut next_reset = Instant::now() + RATE_LIMIT_PERIOD;
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
        if now >= next_reset {
            shared.identity.reset_rate_limiter();
            next_reset = now + RATE_LIMIT_PERIOD;
        }
    }
}

fn handle(shared: &Shared, udp: &Udp, msg: &HandshakeMessage, buf: &mut [u8]) {
    let table = shared.table.load();
    let ip = source_ip(msg.from);
    let peer = match msg.kind {
        MessageKind::HandshakeInit => {
            match shared.identity.identify_initiator(ip, &msg.bytes, buf) {
                Identify::Peer(key) => table.by_key(&key),
                Identify::CookieReply(len) => {
                    send(udp, msg.from, &buf[..len]);
                    return;
                }
                Identify::Invalid(e) => {
                    tracing::debug!(from = %msg.from, error = ?e, "invalid handshake initiation");
                    None
                }
            }
        }
        kind => wire::peer_index(kind, &msg.bytes).and_then(|i| table.by_index(i)),
    };
    let Some(peer) = peer else {
        bump(&shared.drops.unknown_peer);
        return;
    };
    let mut outgoing: Vec<(SocketAddr, Vec<u8>)> = Vec::new();
    {
        let mut state = peer.lock();
        match state.tunnel.decapsulate(ip, &msg.bytes, buf) {
            Decapsulated::Reply(len) => {
                state.endpoint = Some(msg.from);
                outgoing.push((msg.from, buf[..len].to_vec()));
                while let Some(len) = state.tunnel.flush_queued(buf) {
                    outgoing.push((msg.from, buf[..len].to_vec()));
                }
                tracing::debug!(peer = %peer.public_key(), endpoint = %msg.from, "handshake");
            }
            Decapsulated::Cookie(len) => outgoing.push((msg.from, buf[..len].to_vec())),
            Decapsulated::Nothing => {}
            Decapsulated::Packet { .. } => {}
            Decapsulated::Error(e) => {
                tracing::debug!(peer = %peer.public_key(), error = ?e, "handshake message rejected");
            }
        }
    }
    for (dst, bytes) in outgoing {
        send(udp, dst, &bytes);
    }
}

fn tick_all(shared: &Shared, udp: &Udp, buf: &mut [u8]) {
    let table = shared.table.load();
    for peer in table.peers() {
        tick(peer, udp, buf);
    }
}

fn tick(peer: &Arc<Peer>, udp: &Udp, buf: &mut [u8]) {
    let (endpoint, len) = {
        let mut state = peer.lock();
        match state.tunnel.tick(buf) {
            Tick::Send(len) => (state.endpoint, len),
            Tick::Expired | Tick::Idle => return,
        }
    };
    if let Some(dst) = endpoint {
        send(udp, dst, &buf[..len]);
    }
}

fn send(udp: &Udp, dst: SocketAddr, bytes: &[u8]) {
    if let Err(e) = udp.send(dst, bytes, bytes.len()) {
        tracing::debug!(error = %e, %dst, "UDP send failed");
    }
}
