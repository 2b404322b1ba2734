//! [`Conntrack`]: the flows a policy allowed, so that their later packets and their replies pass
//! on one hash lookup without the filter, in a table of fixed size allocated once.
//!
//! A flow is keyed by protocol, local address and port, remote address and port ([`FlowKey`]);
//! both directions of a flow have the same key, and the entry remembers which direction started
//! it. An ICMP echo flow is keyed by its identifier and the direction of its requests. Entries
//! remember the filter generation that allowed them (the caller decides an entry of an older
//! generation again) and when they were last seen; they live as long as their state says:
//!
//! | flow | lives after its last packet |
//! |---|---|
//! | TCP, no reply yet (a SYN alone, or a flow picked up mid-way), or a reply its origin has not acknowledged (half-open) | [`TCP_UNREPLIED`] |
//! | TCP with a reply its origin acknowledged | [`TCP_ESTABLISHED`] |
//! | TCP after a FIN / an RST | [`TCP_CLOSING`] / [`TCP_RESET`] |
//! | UDP and other protocols, no reply / with a reply | [`UDP_UNREPLIED`] / [`UDP_REPLIED`] |
//! | ICMP echo | [`ICMP_ECHO`] |
//!
//! The table is open addressing with a bounded probe: a key lives in one of [`PROBE`] slots
//! from where its keyed hash points (the key is the caller's seed, so a sender cannot aim its
//! flows at one place). A new flow takes a free or expired slot there; when all are live it is
//! refused and counted ([`Conntrack::refused`]), never let through, and the flows already there
//! keep working: a flood of new flows cannot evict an established one.
//!
//! Beside the flows, a small ring remembers the fragmented packets whose first fragment passed,
//! so that their later fragments (which carry no ports) pass too ([`Conntrack::note_fragment`]).
//!
//! Pure: no I/O, no clock (`now` is passed in), no randomness (the seed is passed in), no
//! allocation after [`Conntrack::new`].

use std::net::IpAddr;
use std::time::Instant;

use super::packet::{ICMP, ICMPV6, TCP, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN};

/// Flows tracked per peer by default (about 200 KiB).
pub const ENTRIES_PER_PEER: usize = 4096;
/// Slots a key may live in, from where its hash points.
pub const PROBE: usize = 16;
/// Fragmented packets remembered at once.
pub const FRAGMENTS: usize = 32;

/// Seconds a TCP flow without a reply, or with a reply its origin has not acknowledged, lives
/// (kernel conntrack: SYN_SENT 2 minutes, SYN_RECV 60 s; short here, so that a SYN flood, or a
/// flood of half-open connections, frees its slots fast).
pub const TCP_UNREPLIED: u32 = 30;
/// Seconds an idle TCP flow with an acknowledged reply lives.
pub const TCP_ESTABLISHED: u32 = 300;
/// Seconds a TCP flow lives after a FIN.
pub const TCP_CLOSING: u32 = 30;
/// Seconds a TCP flow lives after an RST (kernel conntrack: CLOSE, 10 s).
pub const TCP_RESET: u32 = 10;
/// Seconds a UDP (or other) flow without a reply lives (kernel conntrack: 30 s).
pub const UDP_UNREPLIED: u32 = 30;
/// Seconds an idle UDP (or other) flow with a reply lives (kernel conntrack: stream, 180 s).
pub const UDP_REPLIED: u32 = 180;
/// Seconds an idle ICMP echo flow lives (kernel conntrack: 30 s).
pub const ICMP_ECHO: u32 = 30;
/// Seconds the later fragments of a packet may follow its first (Linux `ipfrag_time`).
pub const FRAGMENT_TIMEOUT: u32 = 30;

/// Which way a packet goes through this host's tunnel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// From a peer, after decryption: the destination is local.
    Ingress,
    /// To a peer, before encryption: the source is local.
    Egress,
}

impl Direction {
    /// The other way.
    pub fn reverse(self) -> Self {
        match self {
            Self::Ingress => Self::Egress,
            Self::Egress => Self::Ingress,
        }
    }
}

/// A flow's identity, the same for both of its directions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FlowKey {
    local: [u8; 16],
    remote: [u8; 16],
    lport: u16,
    rport: u16,
    proto: u8,
    v6: bool,
}

impl FlowKey {
    /// The flow of protocol `proto` between `local`:`lport` and `remote`:`rport` (addresses of
    /// one family).
    pub fn new(proto: u8, local: IpAddr, lport: u16, remote: IpAddr, rport: u16) -> Self {
        Self {
            local: octets(local),
            remote: octets(remote),
            lport,
            rport,
            proto,
            v6: local.is_ipv6(),
        }
    }

    /// The protocol.
    pub fn proto(&self) -> u8 {
        self.proto
    }

    /// The local address.
    pub fn local(&self) -> IpAddr {
        addr(self.local, self.v6)
    }

    /// The remote address.
    pub fn remote(&self) -> IpAddr {
        addr(self.remote, self.v6)
    }

    /// The local port (the identifier of an ICMP echo flow).
    pub fn local_port(&self) -> u16 {
        self.lport
    }

    /// The remote port.
    pub fn remote_port(&self) -> u16 {
        self.rport
    }
}

/// A live entry found by [`Conntrack::find`] or made by [`Conntrack::insert`]: valid until the
/// table is changed otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowRef(usize);

/// What a tracked flow remembers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tracked {
    /// The direction of its first packet.
    pub origin: Direction,
    /// The filter generation that allowed it.
    pub generation: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Unreplied,
    /// TCP: answered (a SYN-ACK), but the origin has not acknowledged the answer yet.
    Answered,
    Replied,
    Closing,
    Reset,
}

#[derive(Debug, Clone, Copy)]
struct Slot {
    key: FlowKey,
    used: bool,
    state: State,
    origin: Direction,
    generation: u32,
    /// Seconds since the table's epoch.
    seen: u32,
}

#[derive(Debug, Clone, Copy, Default)]
struct FragmentSlot {
    src: [u8; 16],
    dst: [u8; 16],
    id: u32,
    proto: u8,
    used: bool,
    generation: u32,
    seen: u32,
}

/// The fragmented packet one fragment belongs to: its addresses (of one family), protocol and
/// identification.
#[derive(Debug, Clone, Copy)]
pub struct FragmentOf {
    /// The packet's source.
    pub src: IpAddr,
    /// Its destination.
    pub dst: IpAddr,
    /// Its transport protocol.
    pub proto: u8,
    /// Its fragment identification.
    pub id: u32,
}

/// The flows of one peer (or of the host's own local flows).
pub struct Conntrack {
    slots: Box<[Slot]>,
    mask: usize,
    seed: [u64; 4],
    epoch: Instant,
    refused: u64,
    fragments: [FragmentSlot; FRAGMENTS],
    next_fragment: usize,
}

impl Conntrack {
    /// An empty table of `capacity` flows (rounded up to a power of two, at least [`PROBE`]).
    /// `seed` keys the hash: give it 128 random bits. `now` is the table's epoch.
    pub fn new(capacity: usize, seed: [u64; 2], now: Instant) -> Self {
        let size = capacity.max(PROBE).next_power_of_two();
        let free = Slot {
            key: FlowKey::default(),
            used: false,
            state: State::Unreplied,
            origin: Direction::Egress,
            generation: 0,
            seen: 0,
        };
        Self {
            slots: vec![free; size].into_boxed_slice(),
            mask: size - 1,
            seed: [
                seed[0],
                seed[1],
                seed[0].rotate_left(29) ^ 0x9e37_79b9_7f4a_7c15,
                seed[1].rotate_left(31) ^ 0xc2b2_ae3d_27d4_eb4f,
            ],
            epoch: now,
            refused: 0,
            fragments: [FragmentSlot::default(); FRAGMENTS],
            next_fragment: 0,
        }
    }

    /// How many flows the table holds at most.
    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// New flows refused because their slots were all live.
    pub fn refused(&self) -> u64 {
        self.refused
    }

    /// Flows live at `now`.
    pub fn live(&self, now: Instant) -> usize {
        let t = self.secs(now);
        self.slots.iter().filter(|s| s.used && alive(s, t)).count()
    }

    /// The live flow of `key` at `now`.
    #[inline]
    pub fn find(&self, now: Instant, key: &FlowKey) -> Option<(FlowRef, Tracked)> {
        let (t, start) = (self.secs(now), self.hash(key));
        (0..PROBE)
            .map(|i| (start + i) & self.mask)
            .find(|&i| {
                let s = &self.slots[i];
                s.used && s.key == *key && alive(s, t)
            })
            .map(|i| {
                let s = &self.slots[i];
                let tracked = Tracked {
                    origin: s.origin,
                    generation: s.generation,
                };
                (FlowRef(i), tracked)
            })
    }

    /// Tracks a new flow of `key`, started by a packet going `origin` (which the caller then
    /// passes to [`Conntrack::touch`]), allowed by filter generation `generation`. `None` when
    /// its slots are all live: the flow is refused, and counted.
    pub fn insert(
        &mut self,
        now: Instant,
        key: FlowKey,
        origin: Direction,
        generation: u32,
    ) -> Option<FlowRef> {
        let (t, start) = (self.secs(now), self.hash(&key));
        let free = (0..PROBE).map(|i| (start + i) & self.mask).find(|&i| {
            let s = &self.slots[i];
            !s.used || !alive(s, t) || s.key == key
        });
        let Some(i) = free else {
            self.refused += 1;
            return None;
        };
        self.slots[i] = Slot {
            key,
            used: true,
            state: State::Unreplied,
            origin,
            generation,
            seen: t,
        };
        Some(FlowRef(i))
    }

    /// A packet of the flow going `dir` at `now`, with these TCP flags (0 for other protocols):
    /// it lives on, a reply makes it replied, a FIN closing, an RST reset, and a new SYN from
    /// its origin after those starts it again.
    #[inline]
    pub fn touch(&mut self, now: Instant, flow: FlowRef, dir: Direction, tcp_flags: u8) {
        let t = self.secs(now);
        let Some(s) = self.slots.get_mut(flow.0) else {
            return;
        };
        s.seen = t;
        if s.key.proto == TCP {
            let syn_only = tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN;
            if tcp_flags & TCP_RST != 0 {
                s.state = State::Reset;
                return;
            }
            if syn_only && dir == s.origin && matches!(s.state, State::Closing | State::Reset) {
                s.state = State::Unreplied;
                return;
            }
            if tcp_flags & TCP_FIN != 0 && s.state != State::Reset {
                s.state = State::Closing;
                return;
            }
        }
        if dir != s.origin && s.state == State::Unreplied {
            // A TCP answer alone is a half-open connection: it keeps the short life until the
            // origin acknowledges it, so half-open floods free their slots fast.
            s.state = if s.key.proto == TCP {
                State::Answered
            } else {
                State::Replied
            };
        } else if dir == s.origin && s.state == State::Answered && tcp_flags & TCP_ACK != 0 {
            s.state = State::Replied;
        }
    }

    /// Records that the flow is allowed by filter generation `generation`.
    pub fn set_generation(&mut self, flow: FlowRef, generation: u32) {
        if let Some(s) = self.slots.get_mut(flow.0) {
            s.generation = generation;
        }
    }

    /// Forgets the flow (the policy no longer allows it).
    pub fn remove(&mut self, flow: FlowRef) {
        if let Some(s) = self.slots.get_mut(flow.0) {
            s.used = false;
        }
    }

    /// Remembers that the first fragment of `packet` passed under filter generation
    /// `generation`, so that its later fragments may follow for [`FRAGMENT_TIMEOUT`] seconds.
    /// The oldest remembered packet makes room.
    pub fn note_fragment(&mut self, now: Instant, packet: FragmentOf, generation: u32) {
        let slot = FragmentSlot {
            src: octets(packet.src),
            dst: octets(packet.dst),
            id: packet.id,
            proto: packet.proto,
            used: true,
            generation,
            seen: self.secs(now),
        };
        let at = match self.fragment_slot(&slot) {
            Some(i) => i,
            None => {
                let i = self.next_fragment;
                self.next_fragment = (i + 1) % FRAGMENTS;
                i
            }
        };
        self.fragments[at] = slot;
    }

    /// Whether a later fragment of `packet` follows a first fragment that passed within
    /// [`FRAGMENT_TIMEOUT`] under filter generation `generation`.
    pub fn fragment_follows(&mut self, now: Instant, packet: FragmentOf, generation: u32) -> bool {
        let t = self.secs(now);
        let probe = FragmentSlot {
            src: octets(packet.src),
            dst: octets(packet.dst),
            id: packet.id,
            proto: packet.proto,
            ..FragmentSlot::default()
        };
        self.fragment_slot(&probe).is_some_and(|i| {
            let f = &self.fragments[i];
            f.generation == generation && t.saturating_sub(f.seen) <= FRAGMENT_TIMEOUT
        })
    }

    fn fragment_slot(&self, probe: &FragmentSlot) -> Option<usize> {
        self.fragments.iter().position(|f| {
            f.used
                && f.id == probe.id
                && f.proto == probe.proto
                && f.src == probe.src
                && f.dst == probe.dst
        })
    }

    fn secs(&self, now: Instant) -> u32 {
        let secs = now.saturating_duration_since(self.epoch).as_secs();
        u32::try_from(secs).unwrap_or(u32::MAX)
    }

    /// A keyed hash of `k` (folded multiplications, as foldhash does): the same key gives the
    /// same value in this table only.
    #[inline]
    pub fn fingerprint(&self, k: &FlowKey) -> u64 {
        let word = |b: &[u8; 16], at: usize| {
            u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes of 16"))
        };
        let s = &self.seed;
        let a = mix(word(&k.local, 0) ^ s[0], word(&k.local, 8) ^ s[1]);
        let b = mix(word(&k.remote, 0) ^ s[2], word(&k.remote, 8) ^ s[3]);
        let tail = u64::from(k.lport) << 48
            | u64::from(k.rport) << 32
            | u64::from(k.proto) << 8
            | u64::from(k.v6);
        let h = mix(a ^ tail ^ s[1], b ^ s[0]);
        h ^ (h >> 29)
    }

    #[inline]
    fn hash(&self, k: &FlowKey) -> usize {
        self.fingerprint(k) as usize & self.mask
    }
}

fn mix(x: u64, y: u64) -> u64 {
    let p = u128::from(x) * u128::from(y);
    (p as u64) ^ ((p >> 64) as u64)
}

/// Whether the entry lives at `t` (seconds since the epoch).
#[inline]
fn alive(s: &Slot, t: u32) -> bool {
    let timeout = match (s.key.proto, s.state) {
        (TCP, State::Unreplied | State::Answered) => TCP_UNREPLIED,
        (TCP, State::Replied) => TCP_ESTABLISHED,
        (TCP, State::Closing) => TCP_CLOSING,
        (TCP, State::Reset) => TCP_RESET,
        (ICMP | ICMPV6, _) => ICMP_ECHO,
        (_, State::Unreplied) => UDP_UNREPLIED,
        _ => UDP_REPLIED,
    };
    t.saturating_sub(s.seen) <= timeout
}

fn octets(a: IpAddr) -> [u8; 16] {
    match a {
        IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
        IpAddr::V6(a) => a.octets(),
    }
}

fn addr(b: [u8; 16], v6: bool) -> IpAddr {
    let a = std::net::Ipv6Addr::from(b);
    match a.to_ipv4_mapped() {
        Some(v4) if !v6 => IpAddr::V4(v4),
        _ => IpAddr::V6(a),
    }
}

#[cfg(test)]
mod tests;
