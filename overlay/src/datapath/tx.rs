//! The `tx` thread: TUN → [`seal`] → UDP. It reads what TUN holds (TSO super-packets split
//! into MTU-sized packets), has the batch sealed, and sends it as GSO runs.

use std::io;
use std::os::fd::AsRawFd;

use parking_lot::Mutex;

use crate::peers::counters::HostDrop;

use super::batch::TxBatch;
use super::seal::seal;
use super::tun::{Tun, IDEAL_BATCH_SIZE};
use super::udp::Udp;
use super::{Shared, WAKE_INTERVAL};

/// Room for one more TUN super-packet: up to 64 KB split into segments, 128 of them for an MSS
/// as small as 512 bytes (and the kernel's limit for UDP segmentation offload).
const SPLIT_RESERVE: usize = 128;

/// The TUN-reading role's buffers. Whoever holds them reads the TUN device: the `tx` thread,
/// or the `rx` thread right after it wrote to TUN (see [`super::DataPath`]). One reader at a time
/// keeps each flow's packets in order.
pub(super) struct TxState {
    scratch: Vec<u8>,
    bufs: Vec<Vec<u8>>,
    sizes: Vec<usize>,
    batch: TxBatch,
}

impl TxState {
    pub(super) fn new(mtu: u16) -> Self {
        let packet_max = usize::from(mtu).max(1280) + 64;
        let slots = IDEAL_BATCH_SIZE + SPLIT_RESERVE;
        Self {
            scratch: vec![0u8; tun_rs::VIRTIO_NET_HDR_LEN + 65_536],
            bufs: (0..slots).map(|_| vec![0u8; packet_max]).collect(),
            sizes: vec![0usize; slots],
            // Each sealed packet is at most its plaintext + 32; a handshake initiation is 148.
            batch: TxBatch::new(slots * (packet_max + 148), slots),
        }
    }
}

pub(super) fn run(shared: &Shared, tun: &Tun, udp: &Udp, state: &Mutex<TxState>) {
    while !shared.stopping() {
        let n = pump(shared, tun, udp, &mut state.lock());
        if n == 0 {
            // Idle: block until the next packet (reading first saves a poll per busy batch).
            super::poll::wait(tun.as_raw_fd(), libc::POLLIN, Some(WAKE_INTERVAL));
        }
    }
}

/// Reads what the TUN device holds (up to a batch), seals it and sends it. Returns the number
/// of packets read.
pub(super) fn pump(shared: &Shared, tun: &Tun, udp: &Udp, st: &mut TxState) -> usize {
    let slots = st.bufs.len();
    let mut n = 0;
    while n + SPLIT_RESERVE <= slots {
        match tun.recv_batch(&mut st.scratch, &mut st.bufs[n..], &mut st.sizes[n..], 0) {
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                tracing::debug!(error = %e, "TUN read failed");
                shared.drops.bump(HostDrop::Malformed);
                if n == 0 {
                    // Not a packet problem (the device may be going away): don't spin.
                    std::thread::sleep(WAKE_INTERVAL / 10);
                }
                break;
            }
        }
    }
    if n > 0 {
        let table = shared.table.load();
        seal(
            &table,
            &shared.drops,
            &st.bufs[..n],
            &st.sizes[..n],
            &mut st.batch,
        );
        flush(udp, &mut st.batch);
    }
    n
}

/// Sends the batch as GSO runs; called with no peer lock held.
pub(super) fn flush(udp: &Udp, batch: &mut TxBatch) {
    if batch.is_empty() {
        return;
    }
    batch.for_each_run(udp.max_gso_segments(), |run| {
        if let Err(e) = udp.send(run.dst, batch.bytes(run.start, run.len), run.segment) {
            tracing::debug!(error = %e, dst = %run.dst, "UDP send failed");
        }
    });
    batch.clear();
}
