//! One remote host: its tunnel, where it is (endpoint, updated by roaming), which inner addresses
//! it may use (allowed IPs), its keys and its counters — and every per-packet decision about it.
//!
//! A [`Peer`] is shared between the data-path threads and the handshake/timer thread. Its mutable
//! part, [`PeerState`], sits behind one mutex that a data thread takes once per run of
//! consecutive packets of the same peer in a batch ([`PeerRun`]) — never per packet and never
//! across a syscall.
//!
//! [`PeerState`] is sans-IO, like boringtun's `Tunn` and quinn-proto's `Connection`: the data
//! path hands it a datagram or a packet and an output buffer, and gets back a small decision
//! ([`Received`], [`Outbound`], [`HandshakeReceived`], [`Transmit`]) saying what to write where.
//! The decision has already been counted and any state change (roaming) made; the caller only
//! does the I/O. Nothing here reads the clock (boringtun reads its own, ADR 001): the policy's
//! flow timeouts run on the `now` the data path passes in.
//!
//! Under a policy, a packet passes the peer's [`FlowGuard`] too: egress before it is sealed,
//! ingress after the cryptokey and destination checks. A flow the guard refuses is counted and
//! handed out once through [`PeerState::poll_denial`], for the audit log.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ipnet::IpNet;
use parking_lot::{Mutex, MutexGuard};
use wgmesh_config::PublicKey;

use super::conntrack::Direction;
use super::counters::{PeerCounters, PeerDrop};
use super::enforce::{Checked, Denial, FlowGuard};
use super::filter::Filter;
use super::identity::HostKeys;
use super::lanes::{Lane, LaneRole, LaneSlot, Lanes, LANE_BIT};
use super::local::HostNets;
use super::noise::{source_ip, Decapsulated, Encapsulated, ProtocolError, Tick};
use super::route::contains_any;
use super::settings::{PeerKeys, PeerSettings};
use super::wire::{self, MessageKind};

/// A peer's identity inside this agent: assigned when the peer is added, kept while it stays
/// (through changes of its keys, endpoint or allowed IPs), never reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PeerId(u64);

impl PeerId {
    /// The id with this number: only the peer set hands ids out.
    pub(super) fn new(n: u64) -> Self {
        Self(n)
    }
}

impl std::fmt::Display for PeerId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "peer#{}", self.0)
    }
}

/// A remote host.
pub struct Peer {
    id: PeerId,
    index: u32,
    state: Mutex<PeerState>,
}

/// The mutable part of a peer, reached through [`Peer::lock`].
pub struct PeerState {
    /// Its tunnels: one per pair of keys while a rotation runs on either side.
    lanes: Lanes,
    keys: PeerKeys,
    endpoint: Option<SocketAddr>,
    allowed_ips: Vec<IpNet>,
    name: Option<String>,
    persistent_keepalive: Option<u16>,
    counters: PeerCounters,
    /// What the peer's packets may reach and where it may roam; the same snapshot for every
    /// peer, replaced by the peer set when the host's networks or the routed prefixes change.
    nets: Arc<HostNets>,
    /// The policy's flows with this peer; given by the peer set once a policy is in force (and
    /// kept after, so that a table is allocated once per peer). Per peer, so that one peer's
    /// flood of new flows cannot fill another's table.
    guard: Option<Box<FlowGuard>>,
    /// The last flow refused and not yet polled.
    denial: Option<Denial>,
}

/// A message for the network: `len` bytes at the start of the output buffer, to `dst`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transmit {
    /// Where to send it.
    pub dst: SocketAddr,
    /// Its length.
    pub len: usize,
}

/// What to do with a data message, decided by [`PeerState::handle_data`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Received {
    /// Write the inner packet of this length (at the start of `out`) to TUN.
    Deliver(usize),
    /// Send the message of this length (at the start of `out`) back to the datagram's source.
    Reply(usize),
    /// Valid, nothing to deliver (a keepalive).
    Nothing,
    /// Dropped (and counted).
    Drop(PeerDrop),
}

/// What to do with an inner packet for this peer, decided by [`PeerState::handle_outbound`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outbound {
    /// Send the message (data, or a handshake initiation with the packet queued) at the start of
    /// `out`.
    Send(Transmit),
    /// Queued until the handshake in flight completes.
    Queued,
    /// Dropped (and counted).
    Drop(PeerDrop),
}

/// What to do with a handshake message, decided by [`PeerState::handle_handshake`].
#[derive(Debug)]
pub enum HandshakeReceived {
    /// A session is (being) set up with the sender, which is now the peer's endpoint: send this
    /// answer back to it, then every message [`PeerState::poll_queued`] gives.
    Reply(usize),
    /// Under load: send this cookie reply back to the sender. Nothing was authenticated.
    Cookie(usize),
    /// Nothing to send.
    Nothing,
    /// Rejected by the protocol.
    Reject(ProtocolError),
}

impl Peer {
    /// Creates a peer with a fresh tunnel to its current key (and one for our retiring key or
    /// its second key, if any). `index` has the lane bit clear.
    pub fn new(
        keys: &HostKeys,
        id: PeerId,
        index: u32,
        settings: &PeerSettings,
        nets: Arc<HostNets>,
    ) -> Self {
        debug_assert_eq!(index & LANE_BIT, 0);
        Self {
            id,
            index,
            state: Mutex::new(PeerState {
                lanes: Lanes::new(keys, settings, index),
                keys: settings.keys.clone(),
                endpoint: settings.endpoint,
                allowed_ips: settings.allowed_ips.clone(),
                name: settings.name.clone(),
                persistent_keepalive: settings.persistent_keepalive,
                counters: PeerCounters::default(),
                nets,
                guard: None,
                denial: None,
            }),
        }
    }

    /// The peer's stable id.
    pub fn id(&self) -> PeerId {
        self.id
    }

    /// The 24-bit local index carried in receiver indexes addressed to this peer (the lane
    /// bit clear; each lane sets it or not).
    pub fn index(&self) -> u32 {
        self.index
    }

    /// Locks the peer's mutable state. Hold it for a run of packets, never across a syscall.
    #[inline]
    pub fn lock(&self) -> MutexGuard<'_, PeerState> {
        self.state.lock()
    }

    /// Applies changed settings in place. Sessions are kept unless the keepalive changed (or a
    /// lane's preshared key: that lane starts over); a new current key gets a new lane while the
    /// old one carries traffic ([`Lanes::relane`]). Counters and routes are always kept. The learned endpoint is kept
    /// unless a new one is configured, or none of the old keys is left: an address learned from
    /// those keys' packets says nothing about another key's holder.
    pub fn update(&self, keys: &HostKeys, old: &PeerSettings, new: &PeerSettings) {
        let mut state = self.lock();
        let fresh = old.persistent_keepalive != new.persistent_keepalive;
        state.lanes.relane(keys, new, self.index, fresh);
        // A key edited in place (static mode's rotation, matched by name) is the same host: a
        // learned endpoint stays unless the config names one.
        let no_old_key = !old.keys.all().iter().any(|k| new.keys.contains(k));
        if new.endpoint.is_some() && (no_old_key || old.endpoint != new.endpoint) {
            state.endpoint = new.endpoint;
        }
        state.keys.clone_from(&new.keys);
        state.allowed_ips.clone_from(&new.allowed_ips);
        state.name.clone_from(&new.name);
        state.persistent_keepalive = new.persistent_keepalive;
    }
}

impl PeerState {
    /// A data message from `from`, opened into `out` (at least as long as the datagram).
    ///
    /// An authenticated message moves the peer's endpoint to `from` (roaming), unless `from` is
    /// an address a peer may not roam to ([`HostNets::roam_refusal`]). A decrypted inner packet is
    /// delivered only if its source lies in the peer's allowed IPs (cryptokey routing), its
    /// destination in this host's subnet ([`HostNets::delivers`]), and `filter` lets it in
    /// (with the peer's tracked flows at `now`).
    #[inline]
    pub fn handle_data(
        &mut self,
        now: Instant,
        filter: &Arc<Filter>,
        from: SocketAddr,
        datagram: &[u8],
        out: &mut [u8],
    ) -> Received {
        let slot = LaneSlot::of_index(wire::peer_index(MessageKind::Data, datagram).unwrap_or(0));
        let roams = self.lanes.roams(slot);
        let Some(lane) = self.lanes.by_slot(slot) else {
            return self.drop_counted(PeerDrop::DecryptFailed);
        };
        match lane.tunnel.decapsulate(source_ip(from), datagram, out) {
            Decapsulated::Packet { len, source } => {
                if roams {
                    self.roam(from);
                }
                let packet = out.get(..len).unwrap_or_default();
                self.accept(now, filter, packet, source)
            }
            Decapsulated::Nothing => {
                if roams {
                    self.roam(from);
                }
                Received::Nothing
            }
            // A cookie reply proves nothing about the sender: no roaming.
            Decapsulated::Reply(len) | Decapsulated::Cookie(len) => Received::Reply(len),
            Decapsulated::Error(e) => {
                tracing::trace!(error = ?e, "data message rejected");
                self.drop_counted(PeerDrop::DecryptFailed)
            }
        }
    }

    /// An inner packet for this peer, sealed into `out` (at least `packet.len() + 32` bytes and
    /// at least 148) if `filter` lets it out (with the peer's tracked flows at `now`).
    #[inline]
    pub fn handle_outbound(
        &mut self,
        now: Instant,
        filter: &Arc<Filter>,
        packet: &[u8],
        out: &mut [u8],
    ) -> Outbound {
        let Some(dst) = self.endpoint else {
            self.counters.count_drop(PeerDrop::NoEndpoint);
            return Outbound::Drop(PeerDrop::NoEndpoint);
        };
        if let Err(why) = self.police(now, filter, Direction::Egress, packet) {
            return Outbound::Drop(why);
        }
        match self.lanes.outbound().tunnel.encapsulate(packet, out) {
            Encapsulated::Data(len) => {
                self.counters.sent(packet.len());
                Outbound::Send(Transmit { dst, len })
            }
            Encapsulated::HandshakeInit(len) => Outbound::Send(Transmit { dst, len }),
            Encapsulated::Queued => Outbound::Queued,
            Encapsulated::Failed => {
                self.counters.count_drop(PeerDrop::NoSession);
                Outbound::Drop(PeerDrop::NoSession)
            }
        }
    }

    /// A handshake initiation, response or cookie reply from `from` for the lane `slot`
    /// (already identified as this peer's), answered into `out`. A completed handshake moves the
    /// endpoint to `from`.
    pub fn handle_handshake(
        &mut self,
        slot: LaneSlot,
        from: SocketAddr,
        message: &[u8],
        out: &mut [u8],
    ) -> HandshakeReceived {
        let roams = self.lanes.roams(slot);
        let Some(lane) = self.lanes.by_slot(slot).filter(|l| !l.draining()) else {
            return HandshakeReceived::Nothing;
        };
        match lane.tunnel.decapsulate(source_ip(from), message, out) {
            Decapsulated::Reply(len) => {
                if roams {
                    self.roam(from);
                }
                HandshakeReceived::Reply(len)
            }
            Decapsulated::Cookie(len) => HandshakeReceived::Cookie(len),
            Decapsulated::Nothing | Decapsulated::Packet { .. } => HandshakeReceived::Nothing,
            Decapsulated::Error(e) => HandshakeReceived::Reject(e),
        }
    }

    /// After [`HandshakeReceived::Reply`], the packets the lane `slot` queued while it had no
    /// session, one sealed message at a time into `out`; `None` when none is left.
    pub fn poll_queued(&mut self, slot: LaneSlot, out: &mut [u8]) -> Option<usize> {
        self.lanes.by_slot(slot)?.tunnel.flush_queued(out)
    }

    /// Runs the protocol's timers (rekey, handshake retry, keepalives, expiry) of the lane
    /// `role`: a message to send into `out`, if any is due and the endpoint is known. Call
    /// every 100–250 ms for both roles, the current one first: its call also retires a drained
    /// lane and starts the current lane's handshake while only the other lane carries traffic.
    pub fn handle_timeout(&mut self, role: LaneRole, out: &mut [u8]) -> Option<Transmit> {
        let kick = role == LaneRole::Current && self.lanes.tick();
        let lane = self.lanes.by_role(role)?;
        let len = match lane.tunnel.tick(out) {
            // A draining lane's timers run (its session expires) but it sends nothing.
            _ if lane.draining() => None,
            Tick::Send(len) => Some(len),
            Tick::Expired | Tick::Idle if kick => lane.tunnel.initiate(out),
            Tick::Expired | Tick::Idle => None,
        }?;
        self.endpoint.map(|dst| Transmit { dst, len })
    }

    /// A handshake initiation into `out` if the peer never completed one and none is in flight,
    /// so that tunnels are up before the first packet: to send if the endpoint is known. Without
    /// an endpoint the handshake still starts, and the protocol's timers resend it once one is
    /// known.
    pub fn initiate_if_new(&mut self, out: &mut [u8]) -> Option<Transmit> {
        let current = &mut self.lanes.by_role(LaneRole::Current)?.tunnel;
        if current.since_last_handshake().is_some() {
            return None;
        }
        let len = current.initiate(out)?;
        self.endpoint.map(|dst| Transmit { dst, len })
    }

    /// Follows the host's new keys (a rotation of this host, or its end) with the peer's
    /// settings; the peer keeps its endpoint, routes and counters.
    pub fn relane(&mut self, keys: &HostKeys, settings: &PeerSettings, base: u32) {
        self.lanes.relane(keys, settings, base, false);
    }

    /// The lane that takes an initiation from the peer's key `remote` to our key `local`.
    pub fn lane_for_initiation(&self, local: &PublicKey, remote: &PublicKey) -> Option<LaneSlot> {
        self.lanes.for_initiation(local, remote)
    }

    /// The peer's lanes, the current one first.
    pub fn lanes(&self) -> impl Iterator<Item = &Lane> {
        self.lanes.all()
    }

    /// Time since the last completed handshake, on any lane.
    pub fn since_last_handshake(&self) -> Option<Duration> {
        self.lanes
            .all()
            .filter_map(|l| l.tunnel.since_last_handshake())
            .min()
    }

    /// The peer's keys.
    pub fn keys(&self) -> &PeerKeys {
        &self.keys
    }

    /// The current endpoint: configured, or learned from the last authenticated packet.
    pub fn endpoint(&self) -> Option<SocketAddr> {
        self.endpoint
    }

    /// Inner source addresses accepted from this peer.
    pub fn allowed_ips(&self) -> &[IpNet] {
        &self.allowed_ips
    }

    /// Optional human name.
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// Configured keepalive, seconds.
    pub fn persistent_keepalive(&self) -> Option<u16> {
        self.persistent_keepalive
    }

    /// The counters.
    pub fn counters(&self) -> &PeerCounters {
        &self.counters
    }

    /// Replaces what the peer's packets may reach and where it may roam.
    pub fn set_host_nets(&mut self, nets: Arc<HostNets>) {
        self.nets = nets;
    }

    /// Gives the peer a flow guard made by `make`, unless it has one.
    pub fn ensure_guard(&mut self, make: impl FnOnce() -> FlowGuard) {
        if self.guard.is_none() {
            self.guard = Some(Box::new(make()));
        }
    }

    /// The peer's flow guard, once a policy gave it one.
    pub fn guard(&self) -> Option<&FlowGuard> {
        self.guard.as_deref()
    }

    /// The flow refused last, once: for the audit log. Poll it after a
    /// [`PeerDrop::PolicyDenied`], [`PeerDrop::ConntrackFull`] or [`PeerDrop::PolicyUntracked`].
    #[inline]
    pub fn poll_denial(&mut self) -> Option<Denial> {
        self.denial.take()
    }

    /// Cryptokey routing: an inner packet is delivered only from an allowed source, only to
    /// this host's subnet, and only as the policy allows.
    #[inline]
    fn accept(
        &mut self,
        now: Instant,
        filter: &Arc<Filter>,
        packet: &[u8],
        source: IpAddr,
    ) -> Received {
        if !contains_any(&self.allowed_ips, source) {
            return self.drop_counted(PeerDrop::SourceNotAllowed);
        }
        let destination = wire::inner_destination(packet);
        if !destination.is_some_and(|dst| self.nets.delivers(dst)) {
            return self.drop_counted(PeerDrop::DestinationNotLocal);
        }
        if let Err(why) = self.police(now, filter, Direction::Ingress, packet) {
            return Received::Drop(why);
        }
        self.counters.received(packet.len());
        Received::Deliver(packet.len())
    }

    /// The policy's verdict on `packet` going `dir`; a refusal is counted (and its flow kept for
    /// [`PeerState::poll_denial`]).
    #[inline]
    fn police(
        &mut self,
        now: Instant,
        filter: &Arc<Filter>,
        dir: Direction,
        packet: &[u8],
    ) -> Result<(), PeerDrop> {
        if !filter.enforces() {
            return Ok(());
        }
        let Some(guard) = self.guard.as_deref_mut() else {
            // The peer set gives every peer a guard before a policy reaches the data path;
            // without one, nothing passes.
            self.counters.count_drop(PeerDrop::PolicyDenied);
            return Err(PeerDrop::PolicyDenied);
        };
        match guard.check(filter, now, dir, packet) {
            Checked::Pass => Ok(()),
            Checked::Drop { why, denial } => {
                self.counters.count_drop(why);
                if denial.is_some() {
                    self.denial = denial;
                }
                Err(why)
            }
        }
    }

    fn drop_counted(&mut self, why: PeerDrop) -> Received {
        self.counters.count_drop(why);
        Received::Drop(why)
    }

    /// Endpoint roaming: an authenticated packet from a new address moves the peer there, unless
    /// that address is in the overlay, ours, or not unicast (then it is counted, and the endpoint
    /// stays).
    #[inline]
    fn roam(&mut self, from: SocketAddr) {
        if self.endpoint == Some(from) {
            return;
        }
        if let Some(why) = self.nets.roam_refusal(from.ip()) {
            tracing::debug!(endpoint = %from, reason = ?why, "peer endpoint change refused");
            self.counters.roams_refused += 1;
            return;
        }
        tracing::debug!(endpoint = %from, "peer endpoint changed");
        self.endpoint = Some(from);
    }
}

/// The one peer a data thread holds locked while it handles a run of consecutive packets of that
/// peer: the lock is taken when the run starts and released when the next peer's run starts, so
/// a thread never holds two peers' locks (no lock order to get wrong).
pub struct PeerRun<'t> {
    current: Option<(*const Peer, MutexGuard<'t, PeerState>)>,
}

impl<'t> PeerRun<'t> {
    /// No peer locked.
    pub fn new() -> Self {
        Self { current: None }
    }

    /// Locks `peer` unless it is the one already locked, releasing the previous one first.
    #[inline]
    pub fn lock(&mut self, peer: &'t Arc<Peer>) -> &mut PeerState {
        let key = Arc::as_ptr(peer);
        if self.current.as_ref().is_none_or(|(k, _)| *k != key) {
            self.current = None; // unlock the previous peer before locking the next
            self.current = Some((key, peer.lock()));
        }
        &mut self.current.as_mut().expect("set just above").1
    }

    /// Releases the lock held, if any (before a syscall).
    #[inline]
    pub fn release(&mut self) {
        self.current = None;
    }
}

impl Default for PeerRun<'_> {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests;
