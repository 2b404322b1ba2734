//! TUN → sealed datagrams, for a whole batch: each packet goes where
//! [`PeerTable::route_packet`] says and is sealed by its peer's [`PeerState::handle_outbound`](crate::peers::peer::PeerState)
//! (which applies the table's policy first); the messages to send are appended to a [`TxBatch`]
//! for GSO runs, the flows the policy refused to the audit log's tap.
//!
//! No I/O: the `tx` thread reads TUN before and sends the batch after.

use std::time::Instant;

use crate::peers::counters::HostDrops;
use crate::peers::peer::{Outbound, PeerRun};
use crate::peers::table::{PeerTable, Route};

use super::audit::AuditTap;
use super::batch::TxBatch;

/// Seals the `packets` (`bufs[i][..sizes[i]]`) into `batch`, at `now` (read once per batch).
/// `batch` must have room for every packet plus 32 bytes, and at least 148 bytes each.
pub fn seal(
    table: &PeerTable,
    drops: &HostDrops,
    audit: &AuditTap,
    now: Instant,
    bufs: &[Vec<u8>],
    sizes: &[usize],
    batch: &mut TxBatch,
) {
    let filter = table.filter();
    let mut run = PeerRun::new();
    for (buf, &size) in bufs.iter().zip(sizes) {
        let packet = &buf[..size];
        let peer = match table.route_packet(packet) {
            Route::Seal(peer) => peer,
            Route::Drop(why) => {
                drops.bump(why);
                continue;
            }
            // Same-host packets are `datapath::local`'s.
            Route::Discard | Route::Local => continue,
        };
        let state = run.lock(peer);
        match state.handle_outbound(now, filter, packet, batch.space()) {
            Outbound::Send(t) => batch.commit(t.dst, t.len),
            Outbound::Drop(why) if why.is_policy() => {
                if let Some(denial) = state.poll_denial() {
                    audit.offer(denial);
                }
            }
            Outbound::Queued | Outbound::Drop(_) => {}
        }
    }
}
