//! Received datagrams → packets for TUN, for a whole batch: each datagram goes where
//! [`PeerTable::inbound`] says and is opened by its peer's
//! [`PeerState::handle_data`](crate::peers::peer::PeerState::handle_data) (roaming and the
//! cryptokey check happen there). Delivered packets collect in an [`Opened`] and leave coalesced
//! into TCP super-packets by [`Gro`]; replies (cookie replies, keepalives) collect in a
//! [`TxBatch`].
//!
//! No I/O: the `rx` thread receives before, and writes to TUN and sends the replies after.

use std::net::SocketAddr;
use std::time::Instant;

use crate::peers::counters::HostDrops;
use crate::peers::peer::{PeerRun, Received};
use crate::peers::table::{Inbound, PeerTable};
use crate::peers::wire::MessageKind;

use super::audit::AuditTap;
use super::batch::TxBatch;
use super::gro::{Gro, VNET_HDR_LEN};

/// Headroom before each decrypted packet for the virtio-net header.
const OFFSET: usize = VNET_HDR_LEN;

/// The packets opened from one batch of datagrams, waiting to be written to TUN.
pub struct Opened {
    bufs: Vec<Vec<u8>>,
    len: usize,
    gro: Gro,
    /// Replies (cookie replies, keepalives) made while a peer was locked, to send after.
    pub replies: TxBatch,
    /// Where the flows the policy refused go.
    audit: AuditTap,
}

impl Opened {
    /// Room for `packets` decrypted packets (each buffer can grow into a 64 KB super-packet,
    /// touched only when used) and `replies` replies; refused flows go to `audit`.
    pub fn new(packets: usize, replies: usize, audit: AuditTap) -> Self {
        Self {
            bufs: (0..packets)
                .map(|_| Vec::with_capacity(2 * OFFSET + 65_535))
                .collect(),
            len: 0,
            gro: Gro::new(packets),
            replies: TxBatch::new(replies * 256, replies * 2),
            audit,
        }
    }

    /// Whether no more packets fit: write them out first.
    pub fn is_full(&self) -> bool {
        self.len == self.bufs.len()
    }

    /// Opens one datagram from `from` at `now` (read once per batch), under the table's policy.
    /// A handshake message is not handled here: its kind is returned, for the handshake thread.
    /// Call only when not [`Opened::is_full`].
    #[inline]
    pub fn open<'t>(
        &mut self,
        table: &'t PeerTable,
        run: &mut PeerRun<'t>,
        drops: &HostDrops,
        now: Instant,
        from: SocketAddr,
        datagram: &[u8],
    ) -> Option<MessageKind> {
        let peer = match table.inbound(datagram) {
            Inbound::Open(peer) => peer,
            Inbound::Handshake(kind) => return Some(kind),
            Inbound::Drop(why) => {
                drops.bump(why);
                return None;
            }
        };
        let buf = &mut self.bufs[self.len];
        buf.resize(OFFSET + datagram.len(), 0);
        let state = run.lock(peer);
        match state.handle_data(now, table.filter(), from, datagram, &mut buf[OFFSET..]) {
            Received::Deliver(len) => {
                buf.truncate(OFFSET + len);
                self.len += 1;
            }
            Received::Reply(len) => {
                let space = self.replies.space();
                if space.len() >= len {
                    space[..len].copy_from_slice(&buf[OFFSET..OFFSET + len]);
                    self.replies.commit(from, len);
                }
            }
            Received::Drop(why) if why.is_policy() => {
                if let Some(denial) = state.poll_denial() {
                    self.audit.offer(denial);
                }
            }
            Received::Nothing | Received::Drop(_) => {}
        }
        None
    }

    /// Hands every opened packet to `write` — coalesced, each behind its virtio-net header, when
    /// `offload` is on — and empties the set. Returns whether there were any.
    pub fn drain(&mut self, offload: bool, mut write: impl FnMut(&[u8])) -> bool {
        if self.len == 0 {
            return false;
        }
        let bufs = &mut self.bufs[..self.len];
        if offload {
            for &i in self.gro.coalesce(bufs, OFFSET) {
                write(&bufs[i][OFFSET - VNET_HDR_LEN..]);
            }
        } else {
            bufs.iter().for_each(|b| write(&b[OFFSET..]));
        }
        self.len = 0;
        true
    }
}
