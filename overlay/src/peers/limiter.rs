//! Handshake limiting per source address, as kernel WireGuard does (its `ratelimiter.c`): a
//! token bucket for each source — an IPv4 address, or an IPv6 /64 (one host usually holds a whole
//! /64) — so that one address, or a few, get only their share of the handshake thread however
//! fast they send. As in the kernel, only messages that prove their source address — a valid
//! cookie (mac2, [`cookie`](super::cookie)) — are charged, and only under load: charging
//! anything else would let a sender faking a real peer's address spend that peer's share.
//!
//! The table has a fixed size and allocates nothing after [`SourceLimiter::new`]: it is
//! set-associative, the source's set is chosen by a keyed hash (the key is the caller's seed, so
//! an attacker cannot aim many addresses at one set), and a new source takes the slot of its
//! set's least recently seen source. A source evicted that way starts again with a full bucket,
//! which is what an idle bucket holds anyway; only a sender spreading over thousands of
//! addresses at once gains from it, and such a flood meets the global budget and cookies.
//!
//! Pure: no I/O, no clock (`now` is passed in), no randomness (the seed is passed in).

use std::hash::{Hash, Hasher};
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Handshake messages a second one source may have handled (kernel WireGuard: 20).
pub const PACKETS_PER_SECOND: u64 = 20;
/// How many a source may send at once after a quiet time (kernel WireGuard: 5; a little more
/// here, for several hosts behind one NAT address or in one IPv6 /64 starting together).
pub const BURST: u64 = 10;
/// Sources tracked at once: sets × ways.
pub const SETS: usize = 1024;
/// Sources per set.
pub const WAYS: usize = 4;

/// Cost of one message in nanoseconds of credit; a bucket holds `BURST` of them.
const COST: u64 = 1_000_000_000 / PACKETS_PER_SECOND;
const CAPACITY: u64 = COST * BURST;

/// Per-source token buckets in a fixed-size table; owned by one thread (no lock inside).
pub struct SourceLimiter {
    slots: Box<[Slot]>,
    seed: [u64; 2],
}

#[derive(Clone, Copy)]
struct Slot {
    /// The source ([`source_key`]); `None` when the slot is free.
    key: Option<u128>,
    /// Credit in nanoseconds at `last`.
    credit: u64,
    last: Instant,
}

/// What [`SourceLimiter::allow`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// Within the source's share: hand the message on.
    Pass,
    /// Over the source's share: drop it (the initiator retries later).
    Drop,
}

impl SourceLimiter {
    /// An empty table. `seed` keys the hash that spreads sources over sets: give it 128 random
    /// bits. `now` fills the free slots (their time is never read while they are free).
    pub fn new(seed: [u64; 2], now: Instant) -> Self {
        let free = Slot {
            key: None,
            credit: 0,
            last: now,
        };
        Self {
            slots: vec![free; SETS * WAYS].into_boxed_slice(),
            seed,
        }
    }

    /// Charges one handshake message from `source` at `now`: [`Limit::Pass`] while the source
    /// has credit, [`Limit::Drop`] when it has spent it. Time going backwards adds no credit.
    pub fn allow(&mut self, now: Instant, source: IpAddr) -> Limit {
        let key = source_key(source);
        let set = self.set_of(key);
        let ways = &mut self.slots[set * WAYS..(set + 1) * WAYS];
        let slot = match ways.iter().position(|s| s.key == Some(key)) {
            Some(i) => &mut ways[i],
            None => {
                let i = ways
                    .iter()
                    .enumerate()
                    .min_by_key(|(_, s)| (s.key.is_some(), s.last))
                    .map_or(0, |(i, _)| i);
                ways[i] = Slot {
                    key: Some(key),
                    credit: CAPACITY,
                    last: now,
                };
                &mut ways[i]
            }
        };
        let earned = now.saturating_duration_since(slot.last);
        slot.credit = slot.credit.saturating_add(nanos(earned)).min(CAPACITY);
        slot.last = slot.last.max(now);
        if slot.credit >= COST {
            slot.credit -= COST;
            Limit::Pass
        } else {
            Limit::Drop
        }
    }

    fn set_of(&self, key: u128) -> usize {
        // SipHash (std's fixed-key hasher) over the secret seed and the key: a keyed hash.
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.seed.hash(&mut h);
        key.hash(&mut h);
        (h.finish() % SETS as u64) as usize
    }
}

/// The bucket a source address belongs to: an IPv4 address (as its IPv4-mapped IPv6 form), or an
/// IPv6 address's /64. A mapped IPv4 address counts as IPv4.
pub fn source_key(source: IpAddr) -> u128 {
    match source.to_canonical() {
        IpAddr::V4(v4) => 0xffff_0000_0000 | u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6) & !u128::from(u64::MAX),
    }
}

/// One token bucket for the whole host (the receive thread's cookie replies): `per_second`
/// a second, `burst` at once.
pub struct Bucket {
    cost: u64,
    capacity: u64,
    credit: u64,
    last: Instant,
}

impl Bucket {
    /// A full bucket at `now`.
    pub fn new(per_second: u64, burst: u64, now: Instant) -> Self {
        let cost = 1_000_000_000 / per_second.max(1);
        let capacity = cost.saturating_mul(burst.max(1));
        Self {
            cost,
            capacity,
            credit: capacity,
            last: now,
        }
    }

    /// Takes one token at `now`: [`Limit::Pass`] while there is one. Time going backwards adds
    /// no credit.
    pub fn allow(&mut self, now: Instant) -> Limit {
        if self.has_credit(now) {
            self.credit -= self.cost;
            Limit::Pass
        } else {
            Limit::Drop
        }
    }

    /// Whether a token is there at `now`, taking none.
    pub fn has_credit(&mut self, now: Instant) -> bool {
        let earned = nanos(now.saturating_duration_since(self.last));
        self.credit = self.credit.saturating_add(earned).min(self.capacity);
        self.last = self.last.max(now);
        self.credit >= self.cost
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests;
