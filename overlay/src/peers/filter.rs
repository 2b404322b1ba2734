//! [`Filter`]: this host's compiled policy ([`HostFilter`], from its netmap), arranged so that the
//! data path decides a new flow in a few binary searches whatever the number of rules. It runs
//! only for packets that no conntrack entry covers ([`super::conntrack`]).
//!
//! The meaning is the policy's ([`wgmesh_config::policy::Policy::decide`]): a flow `(src, dst,
//! proto, dport)` is denied by the first matching deny rule, else allowed by the first matching
//! allow rule, else gets the default. A rule matches when `src` is in its `from` addresses,
//! `dst` in its `to` addresses, and one of its port entries holds the protocol and destination
//! port (a rule without port entries holds every protocol, including those a rule cannot name).
//! ICMP is decided with port 0 (ICMP for IPv4, ICMPv6 for IPv6).
//!
//! How it is fast: the rules are cut into chunks of 64, deny rules and allow rules apart, each in
//! policy order. For each chunk, each side (`from`, `to`) and each address family is a sorted
//! list of intervals of addresses, each with the 64-bit mask of the chunk's rules whose side holds
//! it; the protocols and ports likewise. Deciding a flow is, chunk by chunk, three masks ANDed:
//! the first bit left names the rule. Memory is linear in the number of prefixes and port
//! entries (each is a boundary in one chunk only), so even the largest filter a netmap may carry
//! stays bounded.
//!
//! Denied packets are counted per rule here, in atomics (the filter is shared by every data
//! thread through the peer table), and carried over by rule name into the next filter.
//!
//! Pure: no I/O, no clock. Built when a netmap is applied, never on the data path.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use ipnet::IpNet;
use wgmesh_config::netmap::{FilterRule, HostFilter};
use wgmesh_config::policy::{Action, Proto};

use super::packet::{ICMP, ICMPV6, TCP, UDP};

/// This host's policy, ready for the data path.
pub struct Filter {
    generation: u32,
    /// Whether anything is ever denied: false with no policy (or an allow-all one without
    /// rules), and then nothing is parsed or tracked.
    enforces: bool,
    default: Action,
    names: Box<[Box<str>]>,
    deny: Box<[Chunk]>,
    allow: Box<[Chunk]>,
    /// Denied packets per rule, then the default's.
    denied: Box<[AtomicU64]>,
}

/// Which rule decided a flow: an index into the filter's rules, or its default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RuleRef {
    /// The rule at this index, in policy order.
    Rule(u32),
    /// No rule matched.
    Default,
}

/// A decision on one flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    /// Whether the flow may start.
    pub allow: bool,
    /// What decided.
    pub rule: RuleRef,
}

/// Up to 64 rules of one action, in policy order.
struct Chunk {
    /// The policy index of the rule each bit stands for.
    rules: Box<[u32]>,
    from: Side,
    to: Side,
    ports: Ports,
}

/// One side of a chunk's rules, per address family.
struct Side {
    v4: Intervals<u32>,
    v6: Intervals<u128>,
}

/// Which of a chunk's rules hold which protocol and destination port.
struct Ports {
    /// Rules without port entries: every protocol, every port.
    any: u64,
    tcp: Intervals<u16>,
    udp: Intervals<u16>,
    icmp: u64,
}

/// A step function from keys to rule masks: `masks[i]` holds from `starts[i]` up to (not
/// including) `starts[i + 1]`; below `starts[0]` nothing holds.
struct Intervals<K> {
    starts: Box<[K]>,
    masks: Box<[u64]>,
}

impl Filter {
    /// No policy: every flow is allowed, nothing is parsed, tracked or counted.
    pub fn allow_all() -> Self {
        Self::new(
            &HostFilter {
                default: Action::Allow,
                rules: Vec::new(),
            },
            0,
            None,
        )
    }

    /// The filter for `host` (checked with [`HostFilter::check`] by the netmap's check), as
    /// generation `generation`; the deny counters of `previous` are carried over to its rules of
    /// the same name and its default.
    pub fn new(host: &HostFilter, generation: u32, previous: Option<&Self>) -> Self {
        let indexed: Vec<(u32, &FilterRule)> = (0u32..).zip(&host.rules).collect();
        let chunks = |action: Action| -> Box<[Chunk]> {
            let rules: Vec<(u32, &FilterRule)> = indexed
                .iter()
                .filter(|(_, r)| r.action == action)
                .copied()
                .collect();
            rules.chunks(64).map(Chunk::new).collect()
        };
        let names: Box<[Box<str>]> = host.rules.iter().map(|r| r.name.as_str().into()).collect();
        let denied = names
            .iter()
            .map(|n| previous.map_or(0, |p| p.denied_by_name(Some(n))))
            .chain([previous.map_or(0, |p| p.denied_by_name(None))])
            .map(AtomicU64::new)
            .collect();
        Self {
            generation,
            enforces: host.default == Action::Deny || !host.rules.is_empty(),
            default: host.default,
            names,
            deny: chunks(Action::Deny),
            allow: chunks(Action::Allow),
            denied,
        }
    }

    /// The generation: it changes whenever the policy does, so that flows tracked under an
    /// older one are decided again.
    pub fn generation(&self) -> u32 {
        self.generation
    }

    /// Whether there is anything to enforce; when not, packets pass untouched.
    #[inline]
    pub fn enforces(&self) -> bool {
        self.enforces
    }

    /// The default action.
    pub fn default_action(&self) -> Action {
        self.default
    }

    /// How many rules it holds.
    pub fn rule_count(&self) -> usize {
        self.names.len()
    }

    /// The name of a rule; `None` for the default.
    pub fn rule_name(&self, rule: RuleRef) -> Option<&str> {
        match rule {
            RuleRef::Rule(i) => self.names.get(i as usize).map(|n| &**n),
            RuleRef::Default => None,
        }
    }

    /// Decides a new flow from `src` to `dst` of IP protocol `proto` to port `dport` (0 for
    /// ICMP and protocols without ports).
    #[inline]
    pub fn decide(&self, src: IpAddr, dst: IpAddr, proto: u8, dport: u16) -> Verdict {
        if !self.enforces {
            return Verdict {
                allow: true,
                rule: RuleRef::Default,
            };
        }
        let icmp = matches!(
            (proto, src),
            (ICMP, IpAddr::V4(_)) | (ICMPV6, IpAddr::V6(_))
        );
        let first = |chunks: &[Chunk]| {
            chunks
                .iter()
                .find_map(|c| c.first_match(src, dst, proto, icmp, dport))
        };
        if let Some(i) = first(&self.deny) {
            return Verdict {
                allow: false,
                rule: RuleRef::Rule(i),
            };
        }
        if let Some(i) = first(&self.allow) {
            return Verdict {
                allow: true,
                rule: RuleRef::Rule(i),
            };
        }
        Verdict {
            allow: self.default == Action::Allow,
            rule: RuleRef::Default,
        }
    }

    /// Counts a packet denied by `rule`.
    #[inline]
    pub fn count_denied(&self, rule: RuleRef) {
        let i = match rule {
            RuleRef::Rule(i) => i as usize,
            RuleRef::Default => self.names.len(),
        };
        if let Some(c) = self.denied.get(i) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Denied packets by rule (`Some(name)`) and by the default (`None`), in policy order with
    /// the default last; rules that denied nothing included.
    pub fn denied(&self) -> impl Iterator<Item = (Option<&str>, u64)> + '_ {
        let names = self.names.iter().map(|n| Some(&**n)).chain([None]);
        names.zip(self.denied.iter().map(|c| c.load(Ordering::Relaxed)))
    }

    fn denied_by_name(&self, name: Option<&str>) -> u64 {
        self.denied()
            .find(|(n, _)| *n == name)
            .map_or(0, |(_, count)| count)
    }
}

impl Chunk {
    fn new(rules: &[(u32, &FilterRule)]) -> Self {
        let bits = || {
            rules
                .iter()
                .enumerate()
                .map(|(bit, (_, r))| (1u64 << bit, *r))
        };
        let side = |pick: fn(&FilterRule) -> &[IpNet]| Side {
            v4: Intervals::build(bits().flat_map(|(bit, r)| {
                pick(r).iter().filter_map(move |n| match n {
                    IpNet::V4(n) => Some((u32::from(n.network()), u32::from(n.broadcast()), bit)),
                    IpNet::V6(_) => None,
                })
            })),
            v6: Intervals::build(bits().flat_map(|(bit, r)| {
                pick(r).iter().filter_map(move |n| match n {
                    IpNet::V6(n) => Some((u128::from(n.network()), u128::from(n.broadcast()), bit)),
                    IpNet::V4(_) => None,
                })
            })),
        };
        let ports_of = |proto: Proto| {
            Intervals::build(bits().flat_map(move |(bit, r)| {
                r.ports
                    .iter()
                    .filter(move |p| p.proto == proto)
                    .map(move |p| (p.first, p.last, bit))
            }))
        };
        let mask_where = |f: fn(&FilterRule) -> bool| {
            bits().filter(|(_, r)| f(r)).fold(0, |m, (bit, _)| m | bit)
        };
        Self {
            rules: rules.iter().map(|(i, _)| *i).collect(),
            from: side(|r| &r.from),
            to: side(|r| &r.to),
            ports: Ports {
                any: mask_where(|r| r.ports.is_empty()),
                tcp: ports_of(Proto::Tcp),
                udp: ports_of(Proto::Udp),
                icmp: mask_where(|r| r.ports.iter().any(|p| p.proto == Proto::Icmp)),
            },
        }
    }

    /// The policy index of the first of this chunk's rules matching the flow.
    #[inline]
    fn first_match(
        &self,
        src: IpAddr,
        dst: IpAddr,
        proto: u8,
        icmp: bool,
        dport: u16,
    ) -> Option<u32> {
        let p = &self.ports;
        let mut m = p.any
            | match proto {
                TCP => p.tcp.mask(dport),
                UDP => p.udp.mask(dport),
                _ if icmp => p.icmp,
                _ => 0,
            };
        if m == 0 {
            return None;
        }
        m &= self.from.mask(src);
        if m == 0 {
            return None;
        }
        m &= self.to.mask(dst);
        (m != 0).then(|| self.rules[m.trailing_zeros() as usize])
    }
}

impl Side {
    #[inline]
    fn mask(&self, addr: IpAddr) -> u64 {
        match addr {
            IpAddr::V4(a) => self.v4.mask(u32::from(a)),
            IpAddr::V6(a) => self.v6.mask(u128::from(a)),
        }
    }
}

/// Keys an interval map can be built over.
trait Key: Copy + Ord {
    /// The next key, `None` past the largest.
    fn next(self) -> Option<Self>;
}

impl Key for u16 {
    fn next(self) -> Option<Self> {
        self.checked_add(1)
    }
}
impl Key for u32 {
    fn next(self) -> Option<Self> {
        self.checked_add(1)
    }
}
impl Key for u128 {
    fn next(self) -> Option<Self> {
        self.checked_add(1)
    }
}

impl<K: Key> Intervals<K> {
    /// The step function of inclusive ranges `(first, last, bit)`; ranges may overlap.
    fn build(ranges: impl Iterator<Item = (K, K, u64)>) -> Self {
        // +1 at a range's first key, -1 after its last: a bit holds where its count is positive.
        let mut events: Vec<(K, u64, bool)> = Vec::new();
        for (first, last, bit) in ranges.filter(|(f, l, _)| f <= l) {
            events.push((first, bit, true));
            if let Some(after) = last.next() {
                events.push((after, bit, false));
            }
        }
        events.sort_by_key(|e| e.0);
        let mut counts = [0u32; 64];
        let (mut starts, mut masks): (Vec<K>, Vec<u64>) = (Vec::new(), Vec::new());
        let mut i = 0;
        while i < events.len() {
            let at = events[i].0;
            while i < events.len() && events[i].0 == at {
                let (_, bit, open) = events[i];
                let c = &mut counts[bit.trailing_zeros() as usize];
                *c = if open { *c + 1 } else { c.saturating_sub(1) };
                i += 1;
            }
            let mask = counts
                .iter()
                .enumerate()
                .filter(|(_, c)| **c > 0)
                .fold(0u64, |m, (b, _)| m | 1 << b);
            if masks.last() != Some(&mask) {
                starts.push(at);
                masks.push(mask);
            }
        }
        Self {
            starts: starts.into(),
            masks: masks.into(),
        }
    }

    #[inline]
    fn mask(&self, key: K) -> u64 {
        let i = self.starts.partition_point(|s| *s <= key);
        i.checked_sub(1).map_or(0, |i| self.masks[i])
    }
}

#[cfg(test)]
mod tests;
