//! Per-address limit on refused requests: an address whose requests keep being refused as
//! unauthenticated or malformed is answered `429` for a while without the request reaching the
//! control plane's store or its audit log. Requests that authenticate (a host's credential, the
//! admin token) are still served, so a flood from one address cannot lock out the hosts behind
//! it; joins from it wait until the window ends.
//!
//! Pure: the time is passed in.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

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
    fn tracking_stays_bounded() {
        let mut l = RefusalLimiter::default();
        let t0 = Instant::now();
        for i in 0..(MAX_TRACKED as u32 + 10) {
            l.refused(IpAddr::from(i.to_be_bytes()), t0);
        }
        assert!(l.windows.len() <= MAX_TRACKED);
    }
}
