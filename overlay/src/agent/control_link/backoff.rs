//! How long the control link waits before it tries again.

use std::time::Duration;

use crate::agent::random::random_u32;

/// Exponential backoff with jitter: 0.5 s, 1 s, 2 s, ... up to 10 s, each ±20 %.
pub(super) struct Backoff(crate::backoff::Backoff);

impl Backoff {
    pub(super) fn new() -> Self {
        Self(crate::backoff::Backoff::new(
            Duration::from_millis(500),
            Duration::from_secs(10),
        ))
    }

    pub(super) fn next(&mut self) -> Duration {
        let jitter = f64::from(random_u32()) / f64::from(u32::MAX) * 0.4 + 0.8;
        self.0.next_wait().mul_f64(jitter)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_its_cap_with_bounded_jitter() {
        let mut b = Backoff::new();
        let waits: Vec<Duration> = (0..8).map(|_| b.next()).collect();
        assert!(waits[0] >= Duration::from_millis(400) && waits[0] <= Duration::from_millis(600));
        assert!(waits[1] >= Duration::from_millis(800) && waits[1] <= Duration::from_millis(1200));
        for w in &waits[5..] {
            assert!(
                *w >= Duration::from_secs(8) && *w <= Duration::from_secs(12),
                "{w:?}"
            );
        }
    }
}
