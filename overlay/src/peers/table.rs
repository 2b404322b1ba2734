//! [`PeerTable`]: the immutable snapshot of the peers and of the host's identity that the
//! data-path threads load once per batch (through `arc-swap`, no lock), and the host-level
//! decisions made on it before any peer is locked: which peer an inbound datagram or handshake is
//! for ([`PeerTable::inbound`], [`PeerTable::handshake_from`]) and which peer an outbound packet
//! goes to ([`PeerTable::route_packet`]). A packet no peer claims comes back as a [`HostDrop`] to
//! count. Peers and identity change together, in one snapshot, so a thread never sees a tunnel
//! of one identity with the rate limiter or key of another.
//!
//! Built by [`PeerSet::table`](super::set::PeerSet::table). No I/O, no clock.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;
use wgmesh_config::PublicKey;

use super::counters::HostDrop;
use super::filter::Filter;
use super::identity::{HostKeys, Identified};
use super::lanes::{LaneSlot, LANE_BIT};
use super::noise::{LocalIdentity, ProtocolError};
use super::peer::Peer;
use super::route::AllowedIps;
use super::wire::{self, MessageKind};

/// Low bits of a peer index select a slot, the next bit a lane of the peer
/// ([`LANE_BIT`](super::lanes::LANE_BIT)); the high bits are a generation, so that a message for a
/// removed peer never reaches the peer that took its slot.
pub(super) const SLOT_BITS: u32 = 14;
/// Where the generation starts in a peer index.
pub(super) const GENERATION_SHIFT: u32 = SLOT_BITS + 1;
pub(super) const SLOT_MASK: u32 = (1 << SLOT_BITS) - 1;

/// Most peers one agent holds.
pub const MAX_PEERS: usize = 1 << SLOT_BITS;

/// An immutable snapshot of the peers and the host's identity, for the data path.
pub struct PeerTable {
    /// The host's keys: the current one, and while a rotation's grace window lasts the
    /// retiring one.
    pub(super) keys: HostKeys,
    pub(super) slots: Vec<Option<Arc<Peer>>>,
    /// Every key of every peer (a rotating peer holds more than one).
    pub(super) by_key: HashMap<PublicKey, Arc<Peer>>,
    pub(super) routes: AllowedIps<Arc<Peer>>,
    /// The policy in force, with these peers: one snapshot, so that a thread never sees the
    /// new peers with the old policy.
    pub(super) filter: Arc<Filter>,
    /// This host's overlay subnet: a packet from and to it stays on the host ([`Route::Local`]).
    pub(super) subnet: IpNet,
}

/// Who an inbound datagram is for, decided by [`PeerTable::inbound`].
pub enum Inbound<'t> {
    /// A data message for this peer: open it with
    /// [`PeerState::handle_data`](super::peer::PeerState::handle_data).
    Open(&'t Arc<Peer>),
    /// A handshake message (rare, and costly to check): hand it to the handshake thread.
    Handshake(MessageKind),
    /// Dropped before any peer: count it.
    Drop(HostDrop),
}

/// Where a packet read from TUN goes, decided by [`PeerTable::route_packet`].
pub enum Route<'t> {
    /// Seal it for this peer with
    /// [`PeerState::handle_outbound`](super::peer::PeerState::handle_outbound).
    Seal(&'t Arc<Peer>),
    /// Dropped: count it.
    Drop(HostDrop),
    /// Dropped without counting: multicast (the kernel's IPv6 router solicitations, MLD) has no
    /// peer by design.
    Discard,
    /// From one workload of this host to another (the policy routing rule sends same-host
    /// traffic through the TUN device): `datapath::local` decides it and writes it back to TUN.
    Local,
}

/// Who sent a handshake message, decided by [`PeerTable::handshake_from`].
pub enum HandshakeFrom<'t> {
    /// This peer's lane: let it handle the message with
    /// [`PeerState::handle_handshake`](super::peer::PeerState::handle_handshake).
    Peer(&'t Arc<Peer>, LaneSlot),
    /// Under load: send the cookie reply of this length (written to `out`) back to the sender.
    CookieReply(usize),
    /// Dropped: count it; `error` says why an initiation was invalid, for the log.
    Drop {
        /// The counter to move.
        why: HostDrop,
        /// boringtun's reason, for an initiation it refused.
        error: Option<ProtocolError>,
    },
}

impl PeerTable {
    /// The host's current identity, which new tunnels speak for.
    pub fn identity(&self) -> &Arc<LocalIdentity> {
        &self.keys.current
    }

    /// The host's keys: the current one and the retiring one.
    pub fn host_keys(&self) -> &HostKeys {
        &self.keys
    }

    /// The policy in force: pass it to the peers' packet decisions.
    #[inline]
    pub fn filter(&self) -> &Arc<Filter> {
        &self.filter
    }

    /// The peer a receiver index (already shifted right by 8) belongs to, whichever its lane.
    #[inline]
    pub fn by_index(&self, index: u32) -> Option<&Arc<Peer>> {
        let peer = self.slots.get((index & SLOT_MASK) as usize)?.as_ref()?;
        (peer.index() == index & !LANE_BIT).then_some(peer)
    }

    /// The peer holding this static public key among its keys.
    pub fn by_key(&self, key: &PublicKey) -> Option<&Arc<Peer>> {
        self.by_key.get(key)
    }

    /// The peer whose allowed IPs hold the longest prefix containing `dst`.
    #[inline]
    pub fn route(&self, dst: IpAddr) -> Option<&Arc<Peer>> {
        self.routes.lookup(dst)
    }

    /// All peers, in slot order.
    pub fn peers(&self) -> impl Iterator<Item = &Arc<Peer>> {
        self.slots.iter().flatten()
    }

    /// Who a datagram from the network is for.
    #[inline]
    pub fn inbound(&self, datagram: &[u8]) -> Inbound<'_> {
        let Some(kind) = wire::classify(datagram) else {
            return Inbound::Drop(HostDrop::Malformed);
        };
        if kind != MessageKind::Data {
            return Inbound::Handshake(kind);
        }
        match wire::peer_index(kind, datagram).and_then(|i| self.by_index(i)) {
            Some(peer) => Inbound::Open(peer),
            None => Inbound::Drop(HostDrop::UnknownPeer),
        }
    }

    /// Which peer an IP packet read from TUN goes to, by its destination; [`Route::Local`] when
    /// its source and destination are both in this host's subnet.
    #[inline]
    pub fn route_packet(&self, packet: &[u8]) -> Route<'_> {
        let Some(dst) = wire::inner_destination(packet) else {
            return Route::Drop(HostDrop::Malformed);
        };
        if self.is_local(packet) {
            return Route::Local;
        }
        match self.route(dst) {
            Some(peer) => Route::Seal(peer),
            None if dst.is_multicast() => Route::Discard,
            None => Route::Drop(HostDrop::NoRoute),
        }
    }

    /// Whether `packet` goes from this host's subnet to this host's subnet (same-host traffic).
    #[inline]
    pub fn is_local(&self, packet: &[u8]) -> bool {
        let inside = |addr: Option<IpAddr>| addr.is_some_and(|a| self.subnet.contains(&a));
        inside(wire::inner_destination(packet)) && inside(wire::inner_source(packet))
    }

    /// Who sent a handshake message of `kind` from `from`, and for which lane: an initiation
    /// names its sender's static key and the one of ours it is for (checked with this table's
    /// keys, which may answer with a cookie reply into `out` under load), a response or cookie
    /// reply carries our index. An initiation for which the peer has no lane (a pair of keys
    /// that is not, or no longer, valid) is refused like a stranger's.
    pub fn handshake_from(
        &self,
        from: IpAddr,
        kind: MessageKind,
        message: &[u8],
        out: &mut [u8],
    ) -> HandshakeFrom<'_> {
        let unknown = HandshakeFrom::Drop {
            why: HostDrop::UnknownPeer,
            error: None,
        };
        let found = match kind {
            MessageKind::HandshakeInit => match self.keys.identify_initiator(from, message, out) {
                Identified::Peer { local, remote } => self.by_key(&remote).and_then(|peer| {
                    let slot = peer.lock().lane_for_initiation(&local, &remote)?;
                    Some((peer, slot))
                }),
                Identified::CookieReply(len) => return HandshakeFrom::CookieReply(len),
                Identified::Invalid(e) => {
                    return HandshakeFrom::Drop {
                        why: HostDrop::UnknownPeer,
                        error: Some(e),
                    }
                }
            },
            kind => wire::peer_index(kind, message)
                .and_then(|i| Some((self.by_index(i)?, LaneSlot::of_index(i)))),
        };
        found.map_or(unknown, |(peer, slot)| HandshakeFrom::Peer(peer, slot))
    }
}
