//! UDP → TUN.

use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::Arc;

use crossbeam_channel::Sender;
use parking_lot::MutexGuard;
use quinn_udp::RecvMeta;

use crate::datapath::batch::TxBatch;
use crate::datapath::gro::{Gro, VNET_HDR_LEN};
use crate::datapath::tun::{Tun, IDEAL_BATCH_SIZE};
use crate::datapath::udp::Udp;
use crate::peers::noise::{source_ip, Decapsulated};
use crate::peers::peer::{Peer, PeerState};
use crate::peers::route::contains_any;
use crate::peers::wire::{self, MessageKind};

use super::handshake::HandshakeMessage;
use super::{bump, Shared, WAKE_INTERVAL};

/// recvmmsg batch (quinn-udp's own limit).
const RECV_BATCH: usize = 32;
/// One receive buffer holds a whole GRO train.
const RECV_BUF: usize = 65_536;
/// Decrypted packets written to TUN per flush.
const TUN_BATCH: usize = IDEAL_BATCH_SIZE;
/// Headroom before each decrypted packet for the virtio-net header.
const OFFSET: usize = VNET_HDR_LEN;

struct Out {
    bufs: Vec<Vec<u8>>,
    len: usize,
    gro: Gro,
    /// Replies (cookie replies, keepalives) sealed while a peer was locked, sent after.
    replies: TxBatch,
}

pub(super) fn run(
    shared: &Shared,
    tun: &Tun,
    udp: &Udp,
    tx_state: &parking_lot::Mutex<super::tx::TxState>,
    handshakes: Sender<HandshakeMessage>,
) {
    let mut recv = vec![0u8; RECV_BATCH * RECV_BUF];
    let mut meta = [RecvMeta::default(); RECV_BATCH];
    let mut out = Out {
        // GRO appends a flow's packets to its first buffer, and only within capacity: each must
        // be able to hold a 64 KB super-packet. Pages are only touched when used.
        bufs: (0..TUN_BATCH)
            .map(|_| Vec::with_capacity(2 * OFFSET + 65_535))
            .collect(),
        len: 0,
        gro: Gro::new(TUN_BATCH),
        replies: TxBatch::new(RECV_BATCH * 256, RECV_BATCH * 2),
    };

    while !shared.stopping() {
        // Drain what is ready, then block (reading first saves a poll per busy batch).
        loop {
            let n = {
                let mut chunks = recv.chunks_mut(RECV_BUF);
                let mut iovs: [IoSliceMut<'_>; RECV_BATCH] = std::array::from_fn(|_| {
                    IoSliceMut::new(chunks.next().expect("RECV_BATCH chunks of RECV_BUF"))
                });
                match udp.recv(&mut iovs, &mut meta) {
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        tracing::debug!(error = %e, "UDP receive failed");
                        break;
                    }
                }
            };
            let table = shared.table.load();
            let mut current: Option<(usize, MutexGuard<'_, PeerState>)> = None;
            for (i, m) in meta[..n].iter().enumerate() {
                let data = &recv[i * RECV_BUF..i * RECV_BUF + m.len];
                if m.len == 0 {
                    // An empty datagram (anyone can send one) is no WireGuard message.
                    bump(&shared.drops.malformed);
                    continue;
                }
                let stride = if m.stride == 0 { m.len } else { m.stride };
                for datagram in data.chunks(stride) {
                    if out.len == TUN_BATCH {
                        current = None;
                        write_tun(tun, &mut out);
                    }
                    receive(
                        shared,
                        &table,
                        &mut current,
                        &mut out,
                        &handshakes,
                        m.addr,
                        datagram,
                    );
                }
            }
            drop(current);
            send_replies(udp, &mut out.replies);
            if write_tun(tun, &mut out) {
                // Send what the kernel answered right away, unless `tx` is already at it.
                if let Some(mut st) = tx_state.try_lock() {
                    super::tx::pump(shared, tun, udp, &mut st);
                }
            }
        }
        crate::datapath::poll::wait(udp.as_raw_fd(), libc::POLLIN, Some(WAKE_INTERVAL));
    }
}

fn receive<'t>(
    shared: &Shared,
    table: &'t crate::peers::table::PeerTable,
    current: &mut Option<(usize, MutexGuard<'t, PeerState>)>,
    out: &mut Out,
    handshakes: &Sender<HandshakeMessage>,
    from: SocketAddr,
    datagram: &[u8],
) {
    let Some(kind) = wire::classify(datagram) else {
        bump(&shared.drops.malformed);
        return;
    };
    if kind != MessageKind::Data {
        // Rare and expensive: hand it to the handshake thread (this copy is the only allocation
        // on the receive side, and only for handshake messages).
        if handshakes
            .try_send(HandshakeMessage {
                from,
                kind,
                bytes: datagram.to_vec(),
            })
            .is_err()
        {
            tracing::debug!("handshake queue full; dropping a handshake message");
        }
        return;
    }
    let Some(peer) = wire::peer_index(kind, datagram).and_then(|i| table.by_index(i)) else {
        bump(&shared.drops.unknown_peer);
        return;
    };
    let state = lock_peer(current, peer);
    let buf = &mut out.bufs[out.len];
    buf.resize(OFFSET + datagram.len(), 0);
    match state
        .tunnel
        .decapsulate(source_ip(from), datagram, &mut buf[OFFSET..])
    {
        Decapsulated::Packet { len, source } => {
            roam(state, from);
            if contains_any(&state.allowed_ips, source) {
                buf.truncate(OFFSET + len);
                out.len += 1;
                state.stats.rx_bytes += len as u64;
                state.stats.rx_packets += 1;
            } else {
                state.stats.dropped.source_not_allowed += 1;
            }
        }
        Decapsulated::Nothing => roam(state, from),
        Decapsulated::Reply(len) | Decapsulated::Cookie(len) => {
            let space = out.replies.space();
            if space.len() >= len {
                space[..len].copy_from_slice(&buf[OFFSET..OFFSET + len]);
                out.replies.commit(from, len);
            }
        }
        Decapsulated::Error(e) => {
            tracing::trace!(error = ?e, "data message rejected");
            state.stats.dropped.decrypt_failed += 1;
        }
    }
}

/// Locks `peer` unless it is the one already locked, releasing the previous one first.
fn lock_peer<'a, 't>(
    current: &'a mut Option<(usize, MutexGuard<'t, PeerState>)>,
    peer: &'t Arc<Peer>,
) -> &'a mut MutexGuard<'t, PeerState> {
    let key = Arc::as_ptr(peer) as usize;
    if current.as_ref().is_none_or(|(k, _)| *k != key) {
        drop(current.take()); // never hold two peers' locks: no lock order to get wrong
        *current = Some((key, peer.lock()));
    }
    &mut current.as_mut().expect("set just above").1
}

/// Endpoint roaming: an authenticated packet from a new address moves the peer there.
fn roam(state: &mut PeerState, from: SocketAddr) {
    if state.endpoint != Some(from) {
        tracing::debug!(endpoint = %from, "peer endpoint changed");
        state.endpoint = Some(from);
    }
}

/// Writes the decrypted packets to TUN; returns whether there were any.
fn write_tun(tun: &Tun, out: &mut Out) -> bool {
    if out.len == 0 {
        return false;
    }
    let bufs = &mut out.bufs[..out.len];
    let write = |packet: &[u8]| {
        if let Err(e) = tun.write(packet) {
            tracing::debug!(error = %e, "TUN write failed");
        }
    };
    if tun.offload() {
        for &i in out.gro.coalesce(bufs, OFFSET) {
            write(&bufs[i][OFFSET - VNET_HDR_LEN..]);
        }
    } else {
        bufs.iter().for_each(|b| write(&b[OFFSET..]));
    }
    out.len = 0;
    true
}

fn send_replies(udp: &Udp, replies: &mut TxBatch) {
    if !replies.is_empty() {
        super::tx::flush(udp, replies);
    }
}
