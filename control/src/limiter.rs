//! The control plane's limits, pure (the time is passed in):
//!
//! - [`RefusalLimiter`]: an address whose requests keep being refused as unauthenticated or
//!   malformed is answered `429` for a while without the request reaching the control plane's
//!   store or its audit log. Requests that authenticate (a host's credential, the admin token)
//!   are still served, so a flood from one address cannot lock out the hosts behind it; joins
//!   from it wait until the window ends.
//! - [`ConnectionCounts`]: how many connections each source address holds, counted before the
//!   TLS handshake, so that one address cannot take every connection slot.
//! - [`EndpointBudget`]: a token bucket per host for endpoint reports, the one call of a joined
//!   host that changes every agent's netmap.
//! - [`NetmapPacer`]: a minimum interval between the netmaps long polls hand one host, so a
//!   burst of changes costs each agent one netmap per interval (the latest state), and a host
//!   polling in a loop costs at most one compiled netmap per interval.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::time::{Duration, Instant};

use crate::ids::HostId;

/// Refusals allowed per address and window before it is limited.
pub const REFUSALS_PER_WINDOW: u32 = 100;
/// The window, and how long a limited address stays limited.
pub const WINDOW: Duration = Duration::from_secs(10);
/// Most addresses tracked at once; beyond that the oldest windows are forgotten first.
const MAX_TRACKED: usize = 65_536;

/// Counts refusals per address in fixed windows.
#[derive(Debug, Default)]
pub struct RefusalLimiter {
    windows: HashMap<IpAddr, Window>,
}

#[derive(Debug, Clone, Copy)]
struct Window {
    started: Instant,
    refusals: u32,
}

impl RefusalLimiter {
    /// Whether requests from `addr` are refused without being looked at, at `now`.
    pub fn is_limited(&self, addr: IpAddr, now: Instant) -> bool {
        self.windows.get(&addr).is_some_and(|w| {
            w.refusals >= REFUSALS_PER_WINDOW && now.duration_since(w.started) < WINDOW
        })
    }

    /// Records that a request from `addr` was refused at `now`.
    pub fn refused(&mut self, addr: IpAddr, now: Instant) {
        if self.windows.len() >= MAX_TRACKED && !self.windows.contains_key(&addr) {
            self.windows
                .retain(|_, w| now.duration_since(w.started) < WINDOW);
            if self.windows.len() >= MAX_TRACKED {
                // Still full of live windows (a spread-out flood): start over rather than grow.
                self.windows.clear();
            }
        }
        let w = self.windows.entry(addr).or_insert(Window {
            started: now,
            refusals: 0,
        });
        if now.duration_since(w.started) >= WINDOW {
            *w = Window {
                started: now,
                refusals: 0,
            };
        }
        w.refusals = w.refusals.saturating_add(1);
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
fn address_key(addr: IpAddr) -> IpAddr {
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
/// Most hosts tracked at once (buckets that are full again are dropped first).
const MAX_HOSTS_TRACKED: usize = 65_536;

/// A token bucket per host for endpoint reports: [`ENDPOINT_BURST`] at once, then one per
/// [`ENDPOINT_REFILL`].
#[derive(Debug, Default)]
pub struct EndpointBudget {
    buckets: HashMap<HostId, Bucket>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: u32,
    /// When the tokens were last counted up.
    refilled: Instant,
}

impl Bucket {
    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.refilled);
        let periods = elapsed.as_nanos() / ENDPOINT_REFILL.as_nanos();
        let earned = u32::try_from(periods).unwrap_or(u32::MAX);
        if earned == 0 {
            return;
        }
        self.tokens = self.tokens.saturating_add(earned).min(ENDPOINT_BURST);
        self.refilled = if self.tokens == ENDPOINT_BURST {
            now
        } else {
            self.refilled + ENDPOINT_REFILL * earned
        };
    }
}

impl EndpointBudget {
    /// Takes one endpoint report of `host` at `now` from its budget, or says how long to wait
    /// for the next one.
    pub fn take(&mut self, host: HostId, now: Instant) -> Result<(), Duration> {
        if self.buckets.len() >= MAX_HOSTS_TRACKED && !self.buckets.contains_key(&host) {
            self.buckets.retain(|_, b| {
                b.refill(now);
                b.tokens < ENDPOINT_BURST
            });
        }
        let bucket = self.buckets.entry(host).or_insert(Bucket {
            tokens: ENDPOINT_BURST,
            refilled: now,
        });
        bucket.refill(now);
        if bucket.tokens == 0 {
            let next = bucket.refilled + ENDPOINT_REFILL;
            return Err(next.saturating_duration_since(now));
        }
        bucket.tokens -= 1;
        Ok(())
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
        let mut b = EndpointBudget::default();
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
}
