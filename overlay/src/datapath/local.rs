//! Same-host traffic: packets from one workload of this host to another. The host's policy
//! routing rule (`host::same_host`) sends what the bridge receives for the host's own subnet
//! into the TUN device instead of back out of the bridge, so the `tx` thread reads these packets
//! like any other; [`PeerTable::route_packet`] calls them [`Route::Local`](crate::peers::table::Route),
//! and [`Local::forward`] decides each one and writes the allowed ones back to TUN, from where
//! the kernel forwards them to the bridge (the rule matches only what arrives on the bridge).
//!
//! The host's policy decides each one as it decides a peer's packets, with a flow guard of its
//! own ([`FlowGuard::check_local`]): both ends are this host's, so both ends' rules are the same
//! filter. Refused flows are counted in [`LocalDrops`] and audited like a peer's.
//!
//! Performs I/O (the TUN writes); allocates nothing per packet (the guard is made with the
//! thread's state, before the first packet).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use rand_core::RngCore;

use crate::peers::conntrack::ENTRIES_PER_PEER;
use crate::peers::counters::{PeerDrop, PeerDrops};
use crate::peers::enforce::{Checked, FlowGuard};
use crate::peers::table::PeerTable;

use super::audit::AuditTap;
use super::tun::Tun;
use super::vnet::VNET_HDR_LEN;

/// Same-host packets the policy dropped, by reason, readable from any thread.
#[derive(Debug, Default)]
pub struct LocalDrops {
    denied: AtomicU64,
    conntrack_full: AtomicU64,
    untracked: AtomicU64,
    malformed: AtomicU64,
}

impl LocalDrops {
    fn bump(&self, why: PeerDrop) {
        let c = match why {
            PeerDrop::PolicyDenied => &self.denied,
            PeerDrop::ConntrackFull => &self.conntrack_full,
            PeerDrop::PolicyUntracked => &self.untracked,
            _ => &self.malformed,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// Adds the counts to the policy fields of `sum`.
    pub fn add_to(&self, sum: &mut PeerDrops) {
        sum.policy_denied += self.denied.load(Ordering::Relaxed);
        sum.conntrack_full += self.conntrack_full.load(Ordering::Relaxed);
        sum.policy_untracked += self.untracked.load(Ordering::Relaxed);
        sum.policy_malformed += self.malformed.load(Ordering::Relaxed);
    }
}

/// The `tx` thread's state for same-host packets: a frame to write them from, a zeroed
/// virtio-net header (no offload: the packets were split and their checksums completed on the
/// way in) followed by the packet, for a TUN device with offloads on.
pub(super) struct Local {
    frame: Vec<u8>,
    /// The flows between this host's workloads.
    guard: FlowGuard,
}

impl Local {
    /// Room for a packet of up to `packet_max` bytes.
    pub(super) fn new(packet_max: usize) -> Self {
        Self {
            frame: vec![0u8; VNET_HDR_LEN + packet_max],
            guard: FlowGuard::new(
                ENTRIES_PER_PEER,
                [rand_core::OsRng.next_u64(), rand_core::OsRng.next_u64()],
                Instant::now(),
            ),
        }
    }

    /// Writes every same-host packet of `bufs[i][..sizes[i]]` that the policy lets through (at
    /// `now`) back to `tun`, counting the others in `drops` and auditing them into `audit`; the
    /// packets for peers are left for [`seal`](super::seal::seal), which skips these.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn forward(
        &mut self,
        table: &PeerTable,
        tun: &Tun,
        drops: &LocalDrops,
        audit: &AuditTap,
        now: Instant,
        bufs: &[Vec<u8>],
        sizes: &[usize],
    ) {
        let filter = table.filter();
        for (buf, &size) in bufs.iter().zip(sizes) {
            let packet = &buf[..size];
            if !table.is_local(packet) {
                continue;
            }
            if filter.enforces() {
                if let Checked::Drop { why, denial } = self.guard.check_local(filter, now, packet) {
                    drops.bump(why);
                    if let Some(d) = denial {
                        audit.offer(d);
                    }
                    continue;
                }
            }
            self.write(tun, packet);
        }
    }

    fn write(&mut self, tun: &Tun, packet: &[u8]) {
        let result = if tun.offload() {
            let Some(body) = self
                .frame
                .get_mut(VNET_HDR_LEN..VNET_HDR_LEN + packet.len())
            else {
                return;
            };
            body.copy_from_slice(packet);
            tun.write(&self.frame[..VNET_HDR_LEN + packet.len()])
        } else {
            tun.write(packet)
        };
        if let Err(e) = result {
            tracing::debug!(error = %e, "TUN write of a same-host packet failed");
        }
    }
}
