//! Same-host traffic: packets from one workload of this host to another. The host's policy
//! routing rule (`host::same_host`) sends what the bridge receives for the host's own subnet
//! into the TUN device instead of back out of the bridge, so the `tx` thread reads these packets
//! like any other; [`PeerTable::route_packet`] calls them [`Route::Local`](crate::peers::table::Route),
//! and [`Local::forward`] decides each one and writes the allowed ones back to TUN, from where
//! the kernel forwards them to the bridge (the rule matches only what arrives on the bridge).
//!
//! The decision is [`allowed`]'s alone: for now it lets everything through; the host's filter
//! and a local connection-tracking table plug in there.
//!
//! Performs I/O (the TUN writes); allocates nothing per packet.

use crate::peers::table::PeerTable;

use super::tun::Tun;
use super::vnet::VNET_HDR_LEN;

/// The `tx` thread's state for same-host packets: a frame to write them from, a zeroed
/// virtio-net header (no offload: the packets were split and their checksums completed on the
/// way in) followed by the packet, for a TUN device with offloads on.
pub(super) struct Local {
    frame: Vec<u8>,
}

impl Local {
    /// Room for a packet of up to `packet_max` bytes.
    pub(super) fn new(packet_max: usize) -> Self {
        Self {
            frame: vec![0u8; VNET_HDR_LEN + packet_max],
        }
    }

    /// Writes every same-host packet of `bufs[i][..sizes[i]]` that [`allowed`] lets through back
    /// to `tun`; the others are left for [`seal`](super::seal::seal), which skips these.
    pub(super) fn forward(
        &mut self,
        table: &PeerTable,
        tun: &Tun,
        bufs: &[Vec<u8>],
        sizes: &[usize],
    ) {
        for (buf, &size) in bufs.iter().zip(sizes) {
            let packet = &buf[..size];
            if table.is_local(packet) && allowed(table, packet) {
                self.write(tun, packet);
            }
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

/// Whether policy lets the same-host `packet` through. Every such packet passes for now.
#[inline]
fn allowed(_table: &PeerTable, _packet: &[u8]) -> bool {
    true
}
