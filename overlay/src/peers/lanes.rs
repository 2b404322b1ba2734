//! A peer's tunnels while keys change: one [`Lane`] per pair of keys (ours, the peer's), at most
//! two at a time, so that a rotation of either side loses nothing.
//!
//! The *current* lane joins our current key to the peer's current key; the *other* lane is the
//! one that carried traffic before (or can still be handshaken with), kept while both its keys
//! are valid. Outbound packets take the current lane once it has a session, the other lane until
//! then; the current lane's handshake is started by the timers meanwhile. A lane whose remote key
//! is no longer the peer's (edited out of a config, gone from the netmap) *drains*: it opens what
//! is still in flight, sends nothing (not even its timers' messages), takes no new handshake and
//! moves no endpoint, and goes [`DRAIN_TICKS`] ticks later, whether or not the current lane is
//! up. A lane whose local key we no longer hold goes at once.
//!
//! The lane is a bit of the receiver index ([`LANE_BIT`]), so a data message finds its lane
//! without a lookup.
//!
//! No I/O; boringtun reads its own clock (ADR 001).

use wgmesh_config::PublicKey;

use super::identity::HostKeys;
use super::noise::Tunnel;
use super::settings::{PeerSettings, PresharedKeyBytes};
use super::table::SLOT_BITS;

/// The bit of a 24-bit peer index that selects the lane (above the slot).
pub const LANE_BIT: u32 = 1 << SLOT_BITS;

/// Ticks (of the handshake thread's 100 ms) a draining lane stays: long enough for what was in
/// flight on it, short enough that a removed key cannot go on sending for long.
pub const DRAIN_TICKS: u32 = 30;

/// Which lane of a peer: the value of its [`LANE_BIT`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LaneSlot(u32);

impl LaneSlot {
    /// The lane of a new peer's first tunnel (lane bit clear).
    pub const FIRST: Self = Self(0);

    /// The lane a 24-bit receiver index (shifted right by 8) addresses.
    #[inline]
    pub fn of_index(index: u32) -> Self {
        Self(index & LANE_BIT)
    }

    fn other(self) -> Self {
        Self(self.0 ^ LANE_BIT)
    }
}

/// Which of a peer's lanes a call is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LaneRole {
    /// The lane of both sides' current keys.
    Current,
    /// The lane before it, or for a key being retired.
    Other,
}

/// One tunnel: our key `local` to the peer's key `remote`.
pub struct Lane {
    pub(super) tunnel: Tunnel,
    local: PublicKey,
    remote: PublicKey,
    slot: LaneSlot,
    /// Its preshared key, if any: the pair's (the control plane's), or the peer's.
    psk: Option<PresharedKeyBytes>,
    draining: bool,
    drained_ticks: u32,
}

impl Lane {
    fn new(
        keys: &HostKeys,
        local: PublicKey,
        remote: PublicKey,
        settings: &PeerSettings,
        base: u32,
        slot: LaneSlot,
    ) -> Option<Self> {
        let identity = keys.get(&local)?;
        let psk = settings.psk_for(&local, &remote).cloned();
        let tunnel = Tunnel::new(
            identity,
            &remote,
            psk.as_ref().map(|k| &k.0),
            settings.persistent_keepalive,
            base | slot.0,
        );
        Some(Self {
            tunnel,
            local,
            remote,
            slot,
            psk,
            draining: false,
            drained_ticks: 0,
        })
    }

    /// Our key.
    pub fn local(&self) -> &PublicKey {
        &self.local
    }

    /// The peer's key.
    pub fn remote(&self) -> &PublicKey {
        &self.remote
    }

    /// Whether it has a session to send on.
    pub fn established(&self) -> bool {
        self.tunnel.since_last_handshake().is_some()
    }

    /// Whether it only opens what is still in flight (its remote key is no longer the peer's).
    pub fn draining(&self) -> bool {
        self.draining
    }

    /// Its bit of the receiver index.
    pub fn slot(&self) -> LaneSlot {
        self.slot
    }

    /// Whether its tunnel uses a preshared key.
    pub fn has_psk(&self) -> bool {
        self.psk.is_some()
    }

    fn pair(&self) -> (PublicKey, PublicKey) {
        (self.local, self.remote)
    }

    /// Whether it may send, or take a handshake.
    fn usable(&self) -> bool {
        !self.draining
    }
}

/// A peer's lanes.
pub struct Lanes {
    current: Lane,
    other: Option<Lane>,
}

impl Lanes {
    /// The lanes of a new peer: the current one, and one for our retiring key or the peer's
    /// second key if there is one. `base` is the peer's index (lane bit clear).
    pub fn new(keys: &HostKeys, settings: &PeerSettings, base: u32) -> Self {
        let slot = LaneSlot::FIRST;
        let current = Lane::new(
            keys,
            keys.current.public_key(),
            *settings.keys.current(),
            settings,
            base,
            slot,
        )
        .expect("the current key is held");
        let mut lanes = Self {
            current,
            other: None,
        };
        lanes.fill(keys, settings, base);
        lanes
    }

    /// The lane outbound packets take: the current one once it has a session, the other one
    /// while only it has one (and may send), else the current one (which queues the packet and
    /// starts a handshake).
    #[inline]
    pub fn outbound(&mut self) -> &mut Lane {
        // The common case, no rotation: no other lane, and no look at the sessions (which reads
        // boringtun's clock).
        if self.other.is_none() {
            return &mut self.current;
        }
        let other_carries = !self.current.established()
            && self
                .other
                .as_ref()
                .is_some_and(|o| o.usable() && o.established());
        match self.other.as_mut() {
            Some(other) if other_carries => other,
            _ => &mut self.current,
        }
    }

    /// Whether the lane `slot` may move the peer's endpoint: the current lane, or any lane that
    /// is not draining while the current one has no session yet. Once the current lane is up,
    /// an older key (perhaps a stolen one) cannot pull the new one's traffic away.
    #[inline]
    pub fn roams(&self, slot: LaneSlot) -> bool {
        if self.current.slot == slot {
            return true;
        }
        let other_ok = self
            .other
            .as_ref()
            .is_some_and(|o| o.slot == slot && o.usable());
        // The session look reads boringtun's clock: only for the other lane.
        other_ok && !self.current.established()
    }

    /// The lane of this receiver-index bit.
    #[inline]
    pub fn by_slot(&mut self, slot: LaneSlot) -> Option<&mut Lane> {
        if self.current.slot == slot {
            return Some(&mut self.current);
        }
        self.other.as_mut().filter(|o| o.slot == slot)
    }

    /// The lane of this role.
    pub fn by_role(&mut self, role: LaneRole) -> Option<&mut Lane> {
        match role {
            LaneRole::Current => Some(&mut self.current),
            LaneRole::Other => self.other.as_mut(),
        }
    }

    /// The lane that takes a handshake initiation from the peer's key `remote` to our key
    /// `local`: not a draining one.
    pub fn for_initiation(&self, local: &PublicKey, remote: &PublicKey) -> Option<LaneSlot> {
        self.all()
            .find(|l| l.usable() && l.local == *local && l.remote == *remote)
            .map(|l| l.slot)
    }

    /// Both lanes, the current one first.
    pub fn all(&self) -> impl Iterator<Item = &Lane> {
        std::iter::once(&self.current).chain(self.other.as_ref())
    }

    /// Follows new keys or settings: a new current lane when our current key or the peer's
    /// changed (the old current lane becomes the other one while its keys stay valid), a lane
    /// whose local key is gone is dropped, one whose remote key is gone drains, one whose pair
    /// got another preshared key starts over with it. `fresh` (the keepalive changed) rebuilds
    /// every lane.
    pub fn relane(&mut self, keys: &HostKeys, settings: &PeerSettings, base: u32, fresh: bool) {
        let want = (keys.current.public_key(), *settings.keys.current());
        if fresh {
            let slot = self.current.slot.other();
            self.current = Lane::new(keys, want.0, want.1, settings, base, slot)
                .expect("the current key is held");
            self.other = None;
            self.fill(keys, settings, base);
            return;
        }
        let other_is_wanted = self.other.as_ref().is_some_and(|o| o.pair() == want);
        if other_is_wanted {
            // Back to keys the other lane has (a rotation rolled back): swap, keep both.
            if let Some(other) = self.other.as_mut() {
                std::mem::swap(&mut self.current, other);
            }
            self.current.draining = false;
            self.current.drained_ticks = 0;
        } else if self.current.pair() != want {
            // Keep as the other lane whichever of the two old ones carries traffic.
            let old_current_carries = self.current.established();
            let keep_old_other = !old_current_carries
                && self
                    .other
                    .as_ref()
                    .is_some_and(|o| o.established() && o.usable());
            let kept_slot = if keep_old_other {
                self.other.as_ref().map(|o| o.slot)
            } else {
                Some(self.current.slot)
            };
            let slot = kept_slot.map_or(LaneSlot::FIRST, LaneSlot::other);
            let new = Lane::new(keys, want.0, want.1, settings, base, slot)
                .expect("the current key is held");
            let old = std::mem::replace(&mut self.current, new);
            if !keep_old_other {
                self.other = Some(old);
            }
        }
        if let Some(other) = &mut self.other {
            if !keys.holds(&other.local) {
                self.other = None;
            } else if !settings.keys.contains(&other.remote) {
                other.draining = true;
            }
        }
        self.fill(keys, settings, base);
        // A lane whose pair has another preshared key now starts over with it; the others keep
        // their sessions (the control plane gives a new pair its key with the pair, or a
        // moment after).
        // A pair that lost its key (its key pair is on the way out) keeps the lane as it is: only
        // a key given, or changed, makes a lane start over, and never a draining one.
        for lane in std::iter::once(&mut self.current).chain(self.other.as_mut()) {
            let psk = settings.psk_for(&lane.local, &lane.remote);
            if !lane.draining && psk.is_some() && psk != lane.psk.as_ref() {
                if let Some(fresh) =
                    Lane::new(keys, lane.local, lane.remote, settings, base, lane.slot)
                {
                    let draining = lane.draining;
                    *lane = fresh;
                    lane.draining = draining;
                }
            }
        }
    }

    /// Without another lane, adds one that can take a handshake for our retiring key or from
    /// the peer's second key (a peer or a host that restarted mid-rotation, or has not moved).
    fn fill(&mut self, keys: &HostKeys, settings: &PeerSettings, base: u32) {
        if self.other.is_some() {
            return;
        }
        let pair = match (&keys.retiring, settings.keys.all().get(1)) {
            (Some(retiring), _) => (retiring.public_key(), *settings.keys.current()),
            (None, Some(second)) => (keys.current.public_key(), *second),
            (None, None) => return,
        };
        let slot = self.current.slot.other();
        self.other = Lane::new(keys, pair.0, pair.1, settings, base, slot);
    }

    /// Once per tick: a draining lane goes after [`DRAIN_TICKS`], or at once when it has no
    /// session left. Whether the current lane's handshake should be started because only the
    /// other lane carries traffic.
    pub fn tick(&mut self) -> bool {
        let current_up = self.current.established();
        if let Some(other) = &mut self.other {
            if other.draining {
                other.drained_ticks += 1;
                if other.drained_ticks >= DRAIN_TICKS || !other.established() {
                    self.other = None;
                }
            }
        }
        !current_up
            && self
                .other
                .as_ref()
                .is_some_and(|o| o.usable() && o.established())
    }
}

#[cfg(test)]
mod tests;
