//! [`FlowGuard`]: the policy applied to one packet — the [`Filter`] for a new flow, the
//! [`Conntrack`] for the rest — with the meaning of state:
//!
//! - A packet of a tracked flow passes (one hash lookup), in either direction: replies pass.
//!   An entry of an older filter generation is decided again first (a policy change stops the
//!   flows the new policy forbids, established or not).
//! - A packet no entry covers is a new flow: decided by the filter; allowed, it is tracked
//!   (a full table refuses it: [`PeerDrop::ConntrackFull`]); denied, it is dropped
//!   ([`PeerDrop::PolicyDenied`]) and counted against the rule (or default) that denied it.
//! - ICMP: an echo request is a flow of its identifier; an echo reply passes only as the reply
//!   of a tracked request; an error (unreachable, too big, time exceeded, parameter problem)
//!   passes only when the packet it quotes belongs to a tracked flow and it goes back to that
//!   packet's sender; otherwise both are dropped as [`PeerDrop::PolicyUntracked`]. Any other
//!   ICMP message is decided as flow `icmp` on its own, untracked.
//! - Fragments: the first fragment is decided like the whole packet; a later fragment (no ports)
//!   passes only after a first fragment of the same packet passed ([`Conntrack::note_fragment`]);
//!   otherwise it is dropped, as is a packet whose headers do not parse
//!   ([`PeerDrop::PolicyMalformed`]): fail closed.
//!
//! Each refused flow comes back once as a [`Denial`] for the audit log: a small table of
//! recent refusals ([`MEMO`] entries, forgotten [`MEMO_SECONDS`] after the flow's last refused
//! packet) keeps a flow's later packets from repeating it.
//!
//! One guard per peer lives in the peer's state (under the lock the data path holds anyway); the
//! TUN-reading role can hold one more for flows between two local addresses
//! ([`FlowGuard::check_local`]). Pure: no I/O, no clock, no allocation per packet.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use super::conntrack::{Conntrack, Direction, FlowKey, FlowRef, FragmentOf};
use super::counters::PeerDrop;
use super::filter::{Filter, RuleRef, Verdict};
use super::packet::{self, Packet, Quoted, QuotedL4, ICMP, ICMPV6, L4};
use super::wire;

/// Refused flows remembered, so that each is audited once.
pub const MEMO: usize = 256;
/// Seconds a refused flow stays remembered after its last refused packet.
pub const MEMO_SECONDS: u32 = 60;

/// The policy state of one peer (or of the host's local flows).
pub struct FlowGuard {
    conntrack: Conntrack,
    memo: [(u64, u32); MEMO],
    epoch: Instant,
}

/// What becomes of one packet.
#[derive(Debug, Clone, PartialEq)]
pub enum Checked {
    /// Let it through.
    Pass,
    /// Drop it, counting `why`; `denial` is the refused flow to audit, the first time.
    Drop {
        /// The peer counter to move.
        why: PeerDrop,
        /// The flow refused, unless it was refused moments ago.
        denial: Option<Denial>,
    },
}

/// A refused flow, for the audit log: fixed size, made without allocating.
#[derive(Clone)]
pub struct Denial {
    /// Which way the packet went.
    pub direction: Direction,
    /// Its source.
    pub src: IpAddr,
    /// Its destination.
    pub dst: IpAddr,
    /// Its IP protocol.
    pub proto: u8,
    /// Its destination port (0 without ports).
    pub port: u16,
    /// Why it was refused.
    pub reason: DenialReason,
    /// The filter that refused it, to name the rule.
    pub filter: Arc<Filter>,
}

impl std::fmt::Debug for Denial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Denial")
            .field("direction", &self.direction)
            .field("src", &self.src)
            .field("dst", &self.dst)
            .field("proto", &self.proto)
            .field("port", &self.port)
            .field("reason", &self.reason)
            .field("generation", &self.filter.generation())
            .finish()
    }
}

impl PartialEq for Denial {
    fn eq(&self, o: &Self) -> bool {
        (
            self.direction,
            self.src,
            self.dst,
            self.proto,
            self.port,
            self.reason,
        ) == (o.direction, o.src, o.dst, o.proto, o.port, o.reason)
            && self.filter.generation() == o.filter.generation()
    }
}

/// Why a flow was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DenialReason {
    /// The policy denies it: this rule, or the default.
    Policy(RuleRef),
    /// Allowed, but the conntrack table had no room for it.
    ConntrackFull,
    /// An ICMP echo reply or error that belongs to no tracked flow.
    Untracked,
}

impl FlowGuard {
    /// A guard tracking up to `capacity` flows; `seed` keys its hash (128 random bits), `now`
    /// is its epoch.
    pub fn new(capacity: usize, seed: [u64; 2], now: Instant) -> Self {
        Self {
            conntrack: Conntrack::new(capacity, seed, now),
            memo: [(0, 0); MEMO],
            epoch: now,
        }
    }

    /// The flows tracked.
    pub fn conntrack(&self) -> &Conntrack {
        &self.conntrack
    }

    /// Applies `filter` to `packet` going `dir` at `now`.
    #[inline]
    pub fn check(
        &mut self,
        filter: &Arc<Filter>,
        now: Instant,
        dir: Direction,
        packet: &[u8],
    ) -> Checked {
        if !filter.enforces() {
            return Checked::Pass;
        }
        let Ok(p) = packet::parse(packet) else {
            return malformed();
        };
        let c = Ctx {
            filter,
            now,
            dir,
            p: &p,
        };
        let checked = match p.l4 {
            L4::Ports {
                sport,
                dport,
                tcp_flags,
            } => self.flow(&c, (sport, dport), tcp_flags),
            L4::Other => self.flow(&c, (0, 0), 0),
            L4::Echo { id, request: true } => {
                let key = echo_key(dir, p.src, p.dst, p.proto, id, dir);
                match self.tracked(&c, &key) {
                    Some(Ok(flow)) => self.pass(&c, flow, 0),
                    Some(Err(v)) => self.deny(&c, 0, v),
                    None => self.start(&c, key, 0, 0),
                }
            }
            L4::Echo { id, request: false } => {
                let key = echo_key(dir, p.src, p.dst, p.proto, id, dir.reverse());
                self.reply(&c, key, true)
            }
            L4::IcmpError(q) => self.related(&c, &q),
            L4::IcmpOther => {
                let v = filter.decide(p.src, p.dst, p.proto, 0);
                if v.allow {
                    Checked::Pass
                } else {
                    self.deny(&c, 0, v)
                }
            }
            L4::Fragment { id } => {
                let of = fragment_of(&p, id);
                if self
                    .conntrack
                    .fragment_follows(now, of, filter.generation())
                {
                    Checked::Pass
                } else {
                    malformed()
                }
            }
        };
        if let (Checked::Pass, Some(id)) = (&checked, p.first_fragment) {
            let of = fragment_of(&p, id);
            self.conntrack.note_fragment(now, of, filter.generation());
        }
        checked
    }

    /// Applies `filter` to `packet` between two local addresses (a workload to another on this
    /// host): both ends are local, so the flow's key is oriented by the lower address, which
    /// makes a reply find its flow. A refused flow is reported as egress.
    pub fn check_local(&mut self, filter: &Arc<Filter>, now: Instant, packet: &[u8]) -> Checked {
        let dir = match (wire::inner_source(packet), wire::inner_destination(packet)) {
            (Some(src), Some(dst)) if dst < src => Direction::Ingress,
            _ => Direction::Egress,
        };
        let mut checked = self.check(filter, now, dir, packet);
        if let Checked::Drop {
            denial: Some(d), ..
        } = &mut checked
        {
            d.direction = Direction::Egress;
        }
        checked
    }

    /// A TCP or UDP packet (or one of a protocol without ports).
    #[inline]
    fn flow(&mut self, c: &Ctx<'_>, (sport, dport): (u16, u16), tcp_flags: u8) -> Checked {
        let p = c.p;
        let key = orient(c.dir, p.proto, (p.src, sport), (p.dst, dport));
        match self.tracked(c, &key) {
            Some(Ok(flow)) => self.pass(c, flow, tcp_flags),
            Some(Err(v)) => self.deny(c, dport, v),
            None => self.start(c, key, dport, tcp_flags),
        }
    }

    #[inline]
    fn pass(&mut self, c: &Ctx<'_>, flow: FlowRef, tcp_flags: u8) -> Checked {
        self.conntrack.touch(c.now, flow, c.dir, tcp_flags);
        Checked::Pass
    }

    /// A packet that passes only on a tracked flow `key` (an echo reply; an error, which does
    /// not `refresh` the flow's life).
    fn reply(&mut self, c: &Ctx<'_>, key: FlowKey, refresh: bool) -> Checked {
        match self.tracked(c, &key) {
            Some(Ok(flow)) if refresh => self.pass(c, flow, 0),
            Some(Ok(_)) => Checked::Pass,
            Some(Err(v)) => self.deny(c, 0, v),
            None => self.refuse(c, 0, DenialReason::Untracked),
        }
    }

    /// An ICMP error: it passes on the flow of the packet it quotes, which went the other way
    /// and was sent by the error's destination.
    fn related(&mut self, c: &Ctx<'_>, q: &Quoted) -> Checked {
        let qdir = c.dir.reverse();
        let key = match q.l4 {
            _ if q.src != c.p.dst => None,
            QuotedL4::Ports { sport, dport } => {
                Some(orient(qdir, q.proto, (q.src, sport), (q.dst, dport)))
            }
            QuotedL4::Echo { id, request } => {
                let origin = if request { qdir } else { qdir.reverse() };
                Some(echo_key(qdir, q.src, q.dst, q.proto, id, origin))
            }
            QuotedL4::Other if !matches!(q.proto, ICMP | ICMPV6) => {
                Some(orient(qdir, q.proto, (q.src, 0), (q.dst, 0)))
            }
            _ => None,
        };
        match key {
            Some(key) => self.reply(c, key, false),
            None => self.refuse(c, 0, DenialReason::Untracked),
        }
    }

    /// The live entry of `key`, decided again if an older filter allowed it: `Ok` to pass on
    /// it, `Err` with the verdict that now denies it (the entry is gone).
    #[inline]
    fn tracked(&mut self, c: &Ctx<'_>, key: &FlowKey) -> Option<Result<FlowRef, Verdict>> {
        let (flow, tracked) = self.conntrack.find(c.now, key)?;
        let generation = c.filter.generation();
        if tracked.generation == generation {
            return Some(Ok(flow));
        }
        let (local, remote) = (key.local(), key.remote());
        let icmp = matches!(key.proto(), ICMP | ICMPV6);
        let v = match tracked.origin {
            Direction::Egress => {
                let port = if icmp { 0 } else { key.remote_port() };
                c.filter.decide(local, remote, key.proto(), port)
            }
            Direction::Ingress => {
                let port = if icmp { 0 } else { key.local_port() };
                c.filter.decide(remote, local, key.proto(), port)
            }
        };
        if v.allow {
            self.conntrack.set_generation(flow, generation);
            Some(Ok(flow))
        } else {
            self.conntrack.remove(flow);
            Some(Err(v))
        }
    }

    /// A new flow of `key` to `port`: decided, and tracked if allowed and there is room.
    fn start(&mut self, c: &Ctx<'_>, key: FlowKey, port: u16, tcp_flags: u8) -> Checked {
        let p = c.p;
        let v = c.filter.decide(p.src, p.dst, p.proto, port);
        if !v.allow {
            return self.deny(c, port, v);
        }
        match self
            .conntrack
            .insert(c.now, key, c.dir, c.filter.generation())
        {
            Some(flow) => self.pass(c, flow, tcp_flags),
            None => self.refuse(c, port, DenialReason::ConntrackFull),
        }
    }

    fn deny(&mut self, c: &Ctx<'_>, port: u16, v: Verdict) -> Checked {
        c.filter.count_denied(v.rule);
        self.refuse(c, port, DenialReason::Policy(v.rule))
    }

    fn refuse(&mut self, c: &Ctx<'_>, port: u16, reason: DenialReason) -> Checked {
        let why = match reason {
            DenialReason::Policy(_) => PeerDrop::PolicyDenied,
            DenialReason::ConntrackFull => PeerDrop::ConntrackFull,
            DenialReason::Untracked => PeerDrop::PolicyUntracked,
        };
        let p = c.p;
        // One flow for the log: the same addresses, protocol, port, direction and reason
        // (whatever the source port).
        let key = orient(c.dir, p.proto, (p.src, 0), (p.dst, port));
        let tag = self.conntrack.fingerprint(&key) ^ (c.dir as u64) ^ (reason_tag(reason) << 1);
        let denial = self.first_refusal(c.now, tag).then(|| Denial {
            direction: c.dir,
            src: p.src,
            dst: p.dst,
            proto: p.proto,
            port,
            reason,
            filter: Arc::clone(c.filter),
        });
        Checked::Drop { why, denial }
    }

    /// Whether the refused flow with fingerprint `tag` was not refused in the last
    /// [`MEMO_SECONDS`]; remembers it either way.
    fn first_refusal(&mut self, now: Instant, tag: u64) -> bool {
        let t = u32::try_from(now.saturating_duration_since(self.epoch).as_secs())
            .unwrap_or(u32::MAX)
            .saturating_add(1);
        let slot = &mut self.memo[(tag % MEMO as u64) as usize];
        let repeated = slot.0 == tag && slot.1 != 0 && t.saturating_sub(slot.1) <= MEMO_SECONDS;
        *slot = (tag, t);
        !repeated
    }
}

/// One packet under check.
struct Ctx<'a> {
    filter: &'a Arc<Filter>,
    now: Instant,
    dir: Direction,
    p: &'a Packet,
}

fn malformed() -> Checked {
    Checked::Drop {
        why: PeerDrop::PolicyMalformed,
        denial: None,
    }
}

fn reason_tag(reason: DenialReason) -> u64 {
    match reason {
        DenialReason::Policy(_) => 0,
        DenialReason::ConntrackFull => 1,
        DenialReason::Untracked => 2,
    }
}

fn fragment_of(p: &Packet, id: u32) -> FragmentOf {
    FragmentOf {
        src: p.src,
        dst: p.dst,
        proto: p.proto,
        id,
    }
}

/// The key of a packet from `src` to `dst` going `dir`: the local end is the source of an
/// egress packet and the destination of an ingress one.
#[inline]
fn orient(dir: Direction, proto: u8, src: (IpAddr, u16), dst: (IpAddr, u16)) -> FlowKey {
    match dir {
        Direction::Egress => FlowKey::new(proto, src.0, src.1, dst.0, dst.1),
        Direction::Ingress => FlowKey::new(proto, dst.0, dst.1, src.0, src.1),
    }
}

/// The key of the echo flow of identifier `id` whose requests go `origin`: the identifier is
/// the local port, the requests' direction the remote one.
fn echo_key(
    dir: Direction,
    src: IpAddr,
    dst: IpAddr,
    proto: u8,
    id: u16,
    origin: Direction,
) -> FlowKey {
    let marker = match origin {
        Direction::Egress => 0,
        Direction::Ingress => 1,
    };
    let (local, remote) = match dir {
        Direction::Egress => (src, dst),
        Direction::Ingress => (dst, src),
    };
    FlowKey::new(proto, local, id, remote, marker)
}

#[cfg(test)]
mod tests;
