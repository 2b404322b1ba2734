//! [`PeerTable`]: the immutable snapshot of the peers that the data-path threads load once per
//! batch (through `arc-swap`, no lock), and the host-level decisions made on it before any peer
//! is locked: which peer an inbound datagram or handshake is for ([`PeerTable::inbound`],
//! [`PeerTable::handshake_sender`]) and which peer an outbound packet goes to
//! ([`PeerTable::outbound`]). A packet no peer claims comes back as a [`HostDrop`] to count.
//!
//! Built by [`PeerSet::table`](super::set::PeerSet::table). No I/O, no clock.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use boringtun::noise::errors::WireGuardError;
use wgmesh_config::PublicKey;

use super::counters::HostDrop;
use super::noise::{Identify, LocalIdentity};
use super::peer::Peer;
use super::route::AllowedIps;
use super::wire::{self, MessageKind};

/// Low bits of a peer index select a slot; the high bits are a generation, so that a message for
/// a removed peer never reaches the peer that took its slot.
pub(super) const SLOT_BITS: u32 = 14;
pub(super) const SLOT_MASK: u32 = (1 << SLOT_BITS) - 1;

/// Most peers one agent holds.
pub const MAX_PEERS: usize = 1 << SLOT_BITS;

/// An immutable snapshot of the peers, for the data path.
#[derive(Default)]
pub struct PeerTable {
    pub(super) slots: Vec<Option<Arc<Peer>>>,
    /// Every key of every peer (a rotating peer holds more than one).
    pub(super) by_key: HashMap<PublicKey, Arc<Peer>>,
    pub(super) routes: AllowedIps<Arc<Peer>>,
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

/// Where an inbound packet from TUN goes, decided by [`PeerTable::outbound`].
pub enum Outbound<'t> {
    /// Seal it for this peer with
    /// [`PeerState::handle_outbound`](super::peer::PeerState::handle_outbound).
    Seal(&'t Arc<Peer>),
    /// Dropped: count it.
    Drop(HostDrop),
    /// Dropped without counting: multicast (the kernel's IPv6 router solicitations, MLD) has no
    /// peer by design.
    Discard,
}

/// Who sent a handshake message, decided by [`PeerTable::handshake_sender`].
pub enum HandshakeSender<'t> {
    /// This peer: let it handle the message with
    /// [`PeerState::handle_handshake`](super::peer::PeerState::handle_handshake).
    Peer(&'t Arc<Peer>),
    /// Under load: send the cookie reply of this length (written to `out`) back to the sender.
    CookieReply(usize),
    /// Not a valid initiation for this host: count it as from an unknown peer.
    Invalid(WireGuardError),
    /// Valid, but from (or for) no peer of ours: count it.
    Unknown,
}

impl PeerTable {
    /// The peer a receiver index (already shifted right by 8) belongs to.
    #[inline]
    pub fn by_index(&self, index: u32) -> Option<&Arc<Peer>> {
        let peer = self.slots.get((index & SLOT_MASK) as usize)?.as_ref()?;
        (peer.index() == index).then_some(peer)
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

    /// Which peer an IP packet read from TUN goes to, by its destination.
    #[inline]
    pub fn outbound(&self, packet: &[u8]) -> Outbound<'_> {
        let Some(dst) = wire::inner_destination(packet) else {
            return Outbound::Drop(HostDrop::Malformed);
        };
        match self.route(dst) {
            Some(peer) => Outbound::Seal(peer),
            None if dst.is_multicast() => Outbound::Discard,
            None => Outbound::Drop(HostDrop::NoRoute),
        }
    }

    /// Who sent a handshake message of `kind` from `from`: an initiation names its sender's
    /// static key (checked by `local`, which may answer with a cookie reply into `out` under
    /// load), a response or cookie reply carries our index.
    pub fn handshake_sender(
        &self,
        local: &LocalIdentity,
        from: IpAddr,
        kind: MessageKind,
        message: &[u8],
        out: &mut [u8],
    ) -> HandshakeSender<'_> {
        let peer = match kind {
            MessageKind::HandshakeInit => match local.identify_initiator(from, message, out) {
                Identify::Peer(key) => self.by_key(&key),
                Identify::CookieReply(len) => return HandshakeSender::CookieReply(len),
                Identify::Invalid(e) => return HandshakeSender::Invalid(e),
            },
            kind => wire::peer_index(kind, message).and_then(|i| self.by_index(i)),
        };
        peer.map_or(HandshakeSender::Unknown, HandshakeSender::Peer)
    }
}
