//! The `tx` thread: TUN → [`seal`] → UDP. It reads what TUN holds (TSO super-packets split
//! into MTU-sized packets by [`Split`]), has the batch sealed, and sends it as GSO runs. A
//! super-packet that needs more buffers than are free (a small MSS) fills the batch, the batch
//! is sent, and the split goes on in the freed buffers: nothing is dropped, nothing waits.

use std::io;
use std::os::fd::AsRawFd;

use parking_lot::Mutex;

use crate::peers::counters::HostDrop;

use super::batch::TxBatch;
use super::local::Local;
use super::seal::seal;
use super::tso::Split;
use super::tun::{Tun, IDEAL_BATCH_SIZE};
use super::udp::Udp;
use super::{Shared, WAKE_INTERVAL};

/// Room beyond a batch's worth of reads, so that a super-packet read last (up to 128 segments for
/// an MSS of 512 bytes) usually fits the same batch; a smaller MSS continues in the next one.
const SPLIT_RESERVE: usize = 128;

/// The TUN-reading role's buffers. Whoever holds them reads the TUN device: the `tx` thread,
/// or the `rx` thread right after it wrote to TUN (see [`super::DataPath`]). One reader at a time
/// keeps each flow's packets in order.
pub(super) struct TxState {
    /// What the last TUN read returned (virtio-net header first, with offloads).
    scratch: Vec<u8>,
    /// How far the packet in `scratch` has been split into `bufs`.
    split: Split,
    bufs: Vec<Vec<u8>>,
    sizes: Vec<usize>,
    batch: TxBatch,
    /// Same-host packets go back to TUN from here.
    local: Local,
}

impl TxState {
    pub(super) fn new(mtu: u16) -> Self {
        let packet_max = usize::from(mtu).max(1280) + 64;
        let slots = IDEAL_BATCH_SIZE + SPLIT_RESERVE;
        Self {
            scratch: vec![0u8; tun_rs::VIRTIO_NET_HDR_LEN + 65_536],
            split: Split::default(),
            bufs: (0..slots).map(|_| vec![0u8; packet_max]).collect(),
            sizes: vec![0usize; slots],
            // Each sealed packet is at most its plaintext + 32; a handshake initiation is 148.
            batch: TxBatch::new(slots * (packet_max + 148), slots),
            local: Local::new(packet_max),
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

/// Reads what the TUN device holds (up to a batch), seals it and sends it; a super-packet that
/// does not fit the batch is split on into the next ones. Returns the number of packets read.
pub(super) fn pump(shared: &Shared, tun: &Tun, udp: &Udp, st: &mut TxState) -> usize {
    let slots = st.bufs.len();
    let (mut n, mut sent) = (0, 0);
    loop {
        if !st.split.is_done() {
            n += st
                .split
                .fill(&st.scratch, &mut st.bufs[n..], &mut st.sizes[n..]);
            if n == slots {
                // Full: send, and go on splitting into the freed buffers.
                send_batch(shared, tun, udp, st, n);
                (sent, n) = (sent + n, 0);
            }
            continue;
        }
        if n >= IDEAL_BATCH_SIZE {
            break;
        }
        match read(shared, tun, st, n) {
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
        send_batch(shared, tun, udp, st, n);
    }
    sent + n
}

/// Reads one packet from TUN: straight into buffer `n` without offloads (returns 1), into the
/// scratch buffer for [`Split`] with them (returns 0; the split fills the buffers). A read that
/// cannot be split is counted as malformed and dropped (returns 0), and reading goes on.
fn read(shared: &Shared, tun: &Tun, st: &mut TxState, n: usize) -> io::Result<usize> {
    if !tun.offload() {
        st.sizes[n] = tun.recv(&mut st.bufs[n])?;
        return Ok(1);
    }
    let len = tun.recv(&mut st.scratch)?;
    match Split::begin(&mut st.scratch[..len], st.bufs[n].len()) {
        Ok(split) => st.split = split,
        Err(e) => {
            tracing::debug!(error = %e, "TUN packet dropped");
            shared.drops.bump(HostDrop::Malformed);
        }
    }
    Ok(0)
}

/// Writes the same-host packets among the first `n` back to TUN, seals the others and sends
/// them.
fn send_batch(shared: &Shared, tun: &Tun, udp: &Udp, st: &mut TxState, n: usize) {
    let table = shared.table.load();
    let now = shared.flows_now(&table);
    st.local.forward(
        &table,
        tun,
        &shared.local_drops,
        &shared.audit,
        now,
        &st.bufs[..n],
        &st.sizes[..n],
    );
    seal(
        &table,
        &shared.drops,
        &shared.audit,
        now,
        &st.bufs[..n],
        &st.sizes[..n],
        &mut st.batch,
    );
    flush(udp, &mut st.batch);
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
