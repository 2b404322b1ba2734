//! The control plane's limits, pure (the time is passed in):
//!
//! - [`RefusalLimiter`]: an address (an IPv6 /64) whose requests keep being refused as
//!   unauthenticated or malformed is answered `429` for a while without the request reaching
//!   the control plane's lock, store or audit log. Requests that carry a credential someone
//!   holds (a host's, the admin token) are still served, so a flood from one address cannot
//!   lock out the hosts behind it; joins from it wait until the window ends.
//! - [`ConnectionCounts`]: how many connections each source address holds, counted before the
//!   TLS handshake, so that one address cannot take every connection slot.
//! - [`HostBudget`]: a token bucket per host: for endpoint reports ([`ENDPOINT_RATE`]),
//!   workload reports ([`WORKLOADS_RATE`]) and key reports ([`KEY_REPORTS_RATE`]), the calls of a joined host that commit to the store
//!   and change other agents' netmaps, and for its calls refused `400` or `403`
//!   ([`HOST_REFUSAL_RATE`]), which an agent hardly ever makes.
//! - [`NetmapPacer`]: a minimum interval between the netmaps long polls hand one host, so a
//!   burst of changes costs each agent one netmap per interval (the latest state), and a host
//!   polling in a loop costs at most one compiled netmap per interval.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::time::{Duration, Instant};

use crate::ids::HostId;

/// Refusals allowed per address (an IPv6 /64) and window before it is limited.
pub const REFUSALS_PER_WINDOW: u32 = 100;
/// The window, and how long a limited address stays limited.
pub const WINDOW: Duration = Duration::from_secs(10);
/// Most addresses tracked at once. When full, windows that ended are forgotten, then live ones
/// that are not limited; a limited one never is.
const MAX_TRACKED: usize = 65_536;

/// Counts refusals per address in fixed windows. Addresses are keyed as the connection counts
/// key them ([`address_key`]): an IPv6 address by its /64, an IPv4-mapped one as IPv4.
#[derive(Debug)]
pub struct RefusalLimiter {
    windows: HashMap<IpAddr, Window>,
    /// Most addresses tracked ([`MAX_TRACKED`]; less in tests).
    max: usize,
    /// Refusals of addresses that found the table full of limited windows, counted together
    /// (so a spread-out flood is still limited, as one).
    overflow: Option<Window>,
    /// No room is looked for again before this (the first limited window's end): the last look
    /// freed little, and looking costs a pass over the table.
    full_until: Option<Instant>,
}

#[derive(Debug, Clone, Copy)]
struct Window {
    started: Instant,
    refusals: u32,
}

impl Window {
    fn new(now: Instant) -> Self {
        Self {
            started: now,
            refusals: 0,
        }
    }

    fn ends(&self) -> Instant {
        self.started + WINDOW
    }

    /// How long this window still limits, if it does at `now`.
    fn limited_for(&self, now: Instant) -> Option<Duration> {
        let left = self.ends().saturating_duration_since(now);
        (self.refusals >= REFUSALS_PER_WINDOW && !left.is_zero()).then_some(left)
    }

    fn count(&mut self, now: Instant) {
        if now >= self.ends() {
            *self = Self::new(now);
        }
        self.refusals = self.refusals.saturating_add(1);
    }
}

impl Default for RefusalLimiter {
    fn default() -> Self {
        Self::tracking(MAX_TRACKED)
    }
}

impl RefusalLimiter {
    /// A limiter tracking at most `max` addresses (at least 8).
    fn tracking(max: usize) -> Self {
        Self {
            windows: HashMap::new(),
            max: max.max(8),
            overflow: None,
            full_until: None,
        }
    }

    /// Whether requests from `addr` are refused without being looked at, at `now`.
    pub fn is_limited(&self, addr: IpAddr, now: Instant) -> bool {
        self.limited_for(addr, now).is_some()
    }

    /// How long requests from `addr` are still refused without being looked at, if they are
    /// at `now` (for `Retry-After`).
    pub fn limited_for(&self, addr: IpAddr, now: Instant) -> Option<Duration> {
        match self.windows.get(&address_key(addr)) {
            Some(w) => w.limited_for(now),
            None if self.windows.len() >= self.max => {
                self.overflow.and_then(|w| w.limited_for(now))
            }
            None => None,
        }
    }

    /// Records that a request from `addr` was refused at `now`.
    pub fn refused(&mut self, addr: IpAddr, now: Instant) {
        let key = address_key(addr);
        if !self.windows.contains_key(&key)
            && self.windows.len() >= self.max
            && !self.make_room(now)
        {
            self.overflow.get_or_insert(Window::new(now)).count(now);
            return;
        }
        self.windows
            .entry(key)
            .or_insert_with(|| Window::new(now))
            .count(now)
    }

    /// Forgets the windows that ended, then, if still full, the live ones that do not limit;
    /// never one that limits. Returns whether there is room for one more.
    fn make_room(&mut self, now: Instant) -> bool {
        if self.full_until.is_some_and(|until| now < until) {
            return false;
        }
        self.windows.retain(|_, w| now < w.ends());
        if self.windows.len() >= self.max {
            self.windows.retain(|_, w| w.limited_for(now).is_some());
        }
        self.full_until = None;
        if self.windows.len() > self.max - self.max / 8 {
            self.full_until = self.windows.values().map(Window::ends).min();
        }
        self.windows.len() < self.max
    }
}

/// Default most connections one source address (an IPv6 /64) may hold at once (control.toml's
/// `max_connections_per_address`).
pub use wgmesh_config::control::DEFAULT_MAX_CONNECTIONS_PER_ADDRESS;

/// Connections held per source address. IPv6 addresses count per /64: one machine usually
/// holds a whole /64, so counting single addresses would not limit it.
#[derive(Debug)]
pub struct ConnectionCounts {
    cap: u32,
    held: HashMap<IpAddr, u32>,
}

impl ConnectionCounts {
    /// Counts with at most `cap` connections per address (at least 1).
    pub fn new(cap: u32) -> Self {
        Self {
            cap: cap.max(1),
            held: HashMap::new(),
        }
    }

    /// Counts a new connection from `addr`, or returns false (and counts nothing) when the
    /// address already holds the most allowed.
    pub fn open(&mut self, addr: IpAddr) -> bool {
        let n = self.held.entry(address_key(addr)).or_insert(0);
        if *n >= self.cap {
            return false;
        }
        *n += 1;
        true
    }

    /// Forgets one connection from `addr` that [`ConnectionCounts::open`] counted.
    pub fn close(&mut self, addr: IpAddr) {
        let key = address_key(addr);
        if let Some(n) = self.held.get_mut(&key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.held.remove(&key);
            }
        }
    }

    /// The connections `addr` holds now.
    pub fn held(&self, addr: IpAddr) -> u32 {
        self.held.get(&address_key(addr)).copied().unwrap_or(0)
    }
}

/// The key an address is counted under: IPv4 addresses (also IPv4-mapped IPv6 ones) as they
/// are, IPv6 addresses by their /64.
pub fn address_key(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V4(_) => addr,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

/// Endpoint reports a host may make at once before it is limited. An agent reports only when
/// its endpoint changes (start, roaming), a handful of times at most.
pub const ENDPOINT_BURST: u32 = 10;
/// After the burst, one endpoint report per this interval.
pub const ENDPOINT_REFILL: Duration = Duration::from_secs(6);
/// The endpoint reports' budget of each host.
pub const ENDPOINT_RATE: Rate = Rate {
    burst: ENDPOINT_BURST,
    refill: ENDPOINT_REFILL,
};
/// Workload reports a host may make at once before it is limited. An agent reports its whole
/// list after each attach, detach or relabel, and coalesces what changes while it waits.
pub const WORKLOADS_BURST: u32 = 20;
/// After the burst, one workload report per this interval.
pub const WORKLOADS_REFILL: Duration = Duration::from_secs(2);
/// The workload reports' budget of each host: each changed report is a store commit (an
/// fsync) and, under a policy, a new netmap for every host.
pub const WORKLOADS_RATE: Rate = Rate {
    burst: WORKLOADS_BURST,
    refill: WORKLOADS_REFILL,
};
/// Key reports a host may make at once before it is limited. An agent reports twice per
/// rotation (its new key, then that its peers moved), and again after a lost reply.
pub const KEY_REPORTS_BURST: u32 = 10;
/// After the burst, one key report per this interval.
pub const KEY_REPORTS_REFILL: Duration = Duration::from_secs(6);
/// The key reports' budget of each host: an announced key is a store commit and a new
/// netmap for every peer of the host.
pub const KEY_REPORTS_RATE: Rate = Rate {
    burst: KEY_REPORTS_BURST,
    refill: KEY_REPORTS_REFILL,
};
/// Calls of a host that may be refused `403` (another host's records, an admin route) or `400`
/// (a malformed request) before its calls are answered `429`. An agent makes next to none.
pub const HOST_REFUSAL_BURST: u32 = 20;
/// After the burst, one more refused call per this interval.
pub const HOST_REFUSAL_REFILL: Duration = Duration::from_secs(1);
/// The budget of each host for calls refused `400` or `403`.
pub const HOST_REFUSAL_RATE: Rate = Rate {
    burst: HOST_REFUSAL_BURST,
    refill: HOST_REFUSAL_REFILL,
};
/// Most hosts tracked at once (buckets that are full again are dropped first).
const MAX_HOSTS_TRACKED: usize = 65_536;

/// A token bucket's size and refill interval.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Tokens at once.
    pub burst: u32,
    /// One more token per this interval, up to `burst`.
    pub refill: Duration,
}

/// A token bucket per host: `burst` at once, then one per `refill`. [`ENDPOINT_RATE`] budgets
/// endpoint reports, [`WORKLOADS_RATE`] workload reports; [`HOST_REFUSAL_RATE`] the calls
/// refused `400` or `403`.
#[derive(Debug)]
pub struct HostBudget {
    rate: Rate,
    buckets: HashMap<HostId, Bucket>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: u32,
    /// When the tokens were last counted up.
    refilled: Instant,
}

impl Bucket {
    fn refill(&mut self, rate: Rate, now: Instant) {
        let elapsed = now.saturating_duration_since(self.refilled);
        let periods = elapsed.as_nanos() / rate.refill.as_nanos().max(1);
        let earned = u32::try_from(periods).unwrap_or(u32::MAX);
        if earned == 0 {
            return;
        }
        self.tokens = self.tokens.saturating_add(earned).min(rate.burst);
        self.refilled = if self.tokens == rate.burst {
            now
        } else {
            self.refilled + rate.refill * earned
        };
    }

    /// How long until the next token, when there is none.
    fn empty_for(&self, rate: Rate, now: Instant) -> Option<Duration> {
        (self.tokens == 0).then(|| (self.refilled + rate.refill).saturating_duration_since(now))
    }
}

impl HostBudget {
    /// A bucket of `rate` per host.
    pub fn new(rate: Rate) -> Self {
        Self {
            rate: Rate {
                burst: rate.burst.max(1),
                refill: rate.refill,
            },
            buckets: HashMap::new(),
        }
    }

    /// Takes one token of `host` at `now`, or says how long to wait for the next one.
    pub fn take(&mut self, host: HostId, now: Instant) -> Result<(), Duration> {
        let rate = self.rate;
        if self.buckets.len() >= MAX_HOSTS_TRACKED && !self.buckets.contains_key(&host) {
            self.buckets.retain(|_, b| {
                b.refill(rate, now);
                b.tokens < rate.burst
            });
        }
        let bucket = self.buckets.entry(host).or_insert(Bucket {
            tokens: rate.burst,
            refilled: now,
        });
        bucket.refill(rate, now);
        if let Some(wait) = bucket.empty_for(rate, now) {
            return Err(wait);
        }
        bucket.tokens -= 1;
        Ok(())
    }

    /// How long until `host` has a token again, if it has none at `now` (takes nothing).
    pub fn empty_for(&self, host: HostId, now: Instant) -> Option<Duration> {
        let mut bucket = *self.buckets.get(&host)?;
        bucket.refill(self.rate, now);
        bucket.empty_for(self.rate, now)
    }
}

/// Default minimum interval between two netmaps handed to one host.
pub const DEFAULT_NETMAP_INTERVAL: Duration = Duration::from_millis(500);

/// When each host may be handed its next netmap.
#[derive(Debug)]
pub struct NetmapPacer {
    interval: Duration,
    next: HashMap<String, Instant>,
}

impl NetmapPacer {
    /// A pacer handing each host at most one netmap per `interval`.
    pub fn new(interval: Duration) -> Self {
        Self {
            interval,
            next: HashMap::new(),
        }
    }

    /// Reserves the next netmap for `host`, wanted at `now`: returns when to compile and send
    /// it (`now`, or later when the host got one less than an interval ago). Concurrent polls
    /// of one host are spaced an interval apart, as each takes the next free time.
    pub fn reserve(&mut self, host: &str, now: Instant) -> Instant {
        if self.next.len() >= MAX_HOSTS_TRACKED && !self.next.contains_key(host) {
            self.next.retain(|_, at| *at > now);
        }
        let at = match self.next.get(host) {
            Some(next) if *next > now => *next,
            _ => now,
        };
        self.next.insert(host.to_owned(), at + self.interval);
        at
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_is_limited_after_too_many_refusals_until_its_window_ends() {
        let mut l = RefusalLimiter::default();
        let t0 = Instant::now();
        let bad: IpAddr = "198.18.0.66".parse().unwrap();
        let good: IpAddr = "198.18.0.1".parse().unwrap();
        for _ in 0..REFUSALS_PER_WINDOW - 1 {
            l.refused(bad, t0);
        }
        assert!(!l.is_limited(bad, t0));
        l.refused(bad, t0);
        assert!(l.is_limited(bad, t0));
        assert!(l.is_limited(bad, t0 + WINDOW - Duration::from_millis(1)));
        assert!(!l.is_limited(good, t0), "other addresses are not limited");
        assert!(!l.is_limited(bad, t0 + WINDOW), "the window ended");
        // A new window starts counting from zero.
        l.refused(bad, t0 + WINDOW);
        assert!(!l.is_limited(bad, t0 + WINDOW));
    }

    #[test]
    fn connections_are_capped_per_address_and_per_ipv6_64() {
        let mut c = ConnectionCounts::new(2);
        let a: IpAddr = "198.18.0.66".parse().unwrap();
        let b: IpAddr = "198.18.0.67".parse().unwrap();
        assert!(c.open(a) && c.open(a));
        assert!(!c.open(a), "a third connection is over the cap");
        assert!(c.open(b), "another address has its own count");
        c.close(a);
        assert_eq!(c.held(a), 1);
        assert!(c.open(a), "a closed connection frees its place");
        let v6a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let v6b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let v6c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert!(c.open(v6a) && c.open(v6b));
        assert!(!c.open(v6a), "one /64 counts as one address");
        assert!(c.open(v6c));
        let mapped: IpAddr = "::ffff:198.18.0.66".parse().unwrap();
        assert!(
            !c.open(mapped),
            "an IPv4-mapped address counts as the IPv4 address"
        );
        c.close(a);
        c.close(a);
        c.close(a);
        assert_eq!(c.held(a), 0, "closing more than opened does not underflow");
        assert!(
            !c.held.contains_key(&a),
            "an address with no connection is forgotten"
        );
    }

    #[test]
    fn endpoint_budget_allows_a_burst_then_one_per_refill() {
        let mut b = HostBudget::new(ENDPOINT_RATE);
        let t0 = Instant::now();
        let h = HostId(1);
        for _ in 0..ENDPOINT_BURST {
            assert!(b.take(h, t0).is_ok());
        }
        let wait = b.take(h, t0).unwrap_err();
        assert_eq!(wait, ENDPOINT_REFILL);
        assert!(
            b.take(HostId(2), t0).is_ok(),
            "another host has its own budget"
        );
        let t1 = t0 + ENDPOINT_REFILL / 2;
        assert_eq!(b.take(h, t1).unwrap_err(), ENDPOINT_REFILL / 2);
        let t2 = t0 + ENDPOINT_REFILL;
        assert!(b.take(h, t2).is_ok(), "one report per refill interval");
        assert!(b.take(h, t2).is_err());
        // A long pause refills to the burst, not beyond.
        let t3 = t2 + ENDPOINT_REFILL * 1000;
        for _ in 0..ENDPOINT_BURST {
            assert!(b.take(h, t3).is_ok());
        }
        assert!(b.take(h, t3).is_err());
    }

    #[test]
    fn netmap_pacer_spaces_netmaps_of_one_host() {
        let i = Duration::from_millis(500);
        let mut p = NetmapPacer::new(i);
        let t0 = Instant::now();
        assert_eq!(p.reserve("host-a", t0), t0, "the first netmap goes at once");
        assert_eq!(
            p.reserve("host-a", t0),
            t0 + i,
            "the next waits an interval"
        );
        assert_eq!(
            p.reserve("host-a", t0),
            t0 + 2 * i,
            "concurrent polls are spaced"
        );
        assert_eq!(p.reserve("host-b", t0), t0, "other hosts are not held back");
        let later = t0 + 10 * i;
        assert_eq!(
            p.reserve("host-a", later),
            later,
            "after a quiet interval, at once"
        );
    }

    #[test]
    fn tracking_stays_bounded() {
        let mut l = RefusalLimiter::default();
        let t0 = Instant::now();
        for i in 0..(MAX_TRACKED as u32 + 10) {
            l.refused(IpAddr::from(i.to_be_bytes()), t0);
        }
        assert!(l.windows.len() <= MAX_TRACKED);
    }

    /// Limits `addr` at `now` (as many refusals as a window allows).
    fn limit(l: &mut RefusalLimiter, addr: IpAddr, now: Instant) {
        for _ in 0..REFUSALS_PER_WINDOW {
            l.refused(addr, now);
        }
    }

    #[test]
    fn refusals_count_per_ipv6_64_and_ipv4_mapped_as_ipv4() {
        let mut l = RefusalLimiter::default();
        let t0 = Instant::now();
        // One refusal from each of 100 addresses of one /64: limited as one.
        for i in 0..REFUSALS_PER_WINDOW {
            let a = Ipv6Addr::new(0x2001, 0xdb8, 7, 9, i as u16, 0xbeef, 3, i as u16);
            l.refused(IpAddr::V6(a), t0);
        }
        let other_in_64: IpAddr = "2001:db8:7:9:ffff::1".parse().unwrap();
        let next_64: IpAddr = "2001:db8:7:a::1".parse().unwrap();
        assert_eq!(l.limited_for(other_in_64, t0), Some(WINDOW));
        assert!(!l.is_limited(next_64, t0), "another /64 has its own window");
        // An IPv4 address and its IPv4-mapped form share one window.
        let v4: IpAddr = "198.18.0.66".parse().unwrap();
        let mapped: IpAddr = "::ffff:198.18.0.66".parse().unwrap();
        for _ in 0..REFUSALS_PER_WINDOW / 2 {
            l.refused(v4, t0);
            l.refused(mapped, t0);
        }
        assert!(l.is_limited(v4, t0) && l.is_limited(mapped, t0));
        let later = t0 + Duration::from_secs(4);
        assert_eq!(
            l.limited_for(v4, later),
            Some(WINDOW - Duration::from_secs(4))
        );
    }

    #[test]
    fn a_full_table_forgets_only_windows_that_do_not_limit() {
        let mut l = RefusalLimiter::tracking(64);
        let t0 = Instant::now();
        let bad: IpAddr = "198.18.0.66".parse().unwrap();
        limit(&mut l, bad, t0);
        // A flood of fresh addresses, one refusal each, many times the table's size.
        for i in 0..10_000u32 {
            l.refused(IpAddr::from((0x0a00_0000 + i).to_be_bytes()), t0);
            assert!(l.windows.len() <= 64);
        }
        assert!(l.is_limited(bad, t0), "a limited address stays limited");
        // Windows that ended go first, and make room without a live window being dropped.
        let t1 = t0 + WINDOW;
        let mut l = RefusalLimiter::tracking(64);
        for i in 0..63u32 {
            l.refused(IpAddr::from((0x0b00_0000 + i).to_be_bytes()), t0);
        }
        let live: IpAddr = "198.18.0.7".parse().unwrap();
        l.refused(live, t1 - Duration::from_millis(1));
        l.refused("198.18.0.8".parse().unwrap(), t1);
        assert!(l.windows.contains_key(&live), "a live window is kept");
        assert_eq!(l.windows.len(), 2, "the 63 ended windows were forgotten");
    }

    #[test]
    fn a_table_full_of_limited_windows_limits_new_addresses_together() {
        let mut l = RefusalLimiter::tracking(16);
        let t0 = Instant::now();
        for i in 0..16u32 {
            limit(&mut l, IpAddr::from((0x0a00_0000 + i).to_be_bytes()), t0);
        }
        let newcomer: IpAddr = "198.18.0.9".parse().unwrap();
        assert!(!l.is_limited(newcomer, t0), "one refusal limits nobody");
        // Untracked addresses share one window: together they are limited like one address.
        for i in 0..REFUSALS_PER_WINDOW {
            l.refused(IpAddr::from((0x0c00_0000 + i).to_be_bytes()), t0);
        }
        assert!(l.is_limited(newcomer, t0));
        for i in 0..16u32 {
            assert!(l.is_limited(IpAddr::from((0x0a00_0000 + i).to_be_bytes()), t0));
        }
        // Once the limited windows end, new addresses are tracked on their own again.
        let t1 = t0 + WINDOW;
        assert!(!l.is_limited(newcomer, t1));
        l.refused(newcomer, t1);
        assert!(l.windows.contains_key(&newcomer));
        assert!(!l.is_limited(newcomer, t1));
    }

    #[test]
    fn refused_calls_budget_a_burst_then_one_per_refill_and_says_how_long() {
        let mut b = HostBudget::new(HOST_REFUSAL_RATE);
        let t0 = Instant::now();
        let h = HostId(7);
        assert_eq!(
            b.empty_for(h, t0),
            None,
            "an unknown host has its whole budget"
        );
        for _ in 0..HOST_REFUSAL_BURST {
            assert_eq!(b.empty_for(h, t0), None);
            b.take(h, t0).unwrap();
        }
        assert_eq!(b.empty_for(h, t0), Some(HOST_REFUSAL_REFILL));
        assert_eq!(b.empty_for(HostId(8), t0), None, "hosts are counted apart");
        let t1 = t0 + HOST_REFUSAL_REFILL / 4;
        assert_eq!(b.empty_for(h, t1), Some(HOST_REFUSAL_REFILL * 3 / 4));
        // Looking takes nothing: after the refill interval one token is there.
        let t2 = t0 + HOST_REFUSAL_REFILL;
        assert_eq!(b.empty_for(h, t2), None);
        b.take(h, t2).unwrap();
        assert_eq!(b.empty_for(h, t2), Some(HOST_REFUSAL_REFILL));
    }
}
