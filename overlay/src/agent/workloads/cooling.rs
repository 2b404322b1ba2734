//! Freed addresses that may not be given out yet ([`Cooling`]).
//!
//! The policy knows a workload by its address: every host's filter, compiled by the control
//! plane, says what the workload at 10.9.1.2 may reach and what may reach it. When that workload
//! goes and another one takes its address, the filters still speak of the old one until each host
//! has applied a netmap without it. So an address that was in a list reported to the control plane
//! and left it *cools*: it is given to no one until the control plane has acknowledged a list
//! without it, and [`COOL_SECS`] more have passed for the other hosts' netmaps. An address freed
//! while the control plane is unreachable stays out of use until it is back.
//!
//! Pure: the agent passes the report generations and the time.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// Seconds a freed address cools once the control plane holds a list without it: time for
/// every host to have long-polled the netmap that forgets the old workload.
pub const COOL_SECS: u64 = 30;

/// One cooling address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CoolingEntry {
    /// The report generation of the first list without it (0 after a restart: the first list
    /// acknowledged then is without it).
    #[serde(skip)]
    generation: u64,
    /// When the control plane acknowledged a list without it (Unix seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    acknowledged_at: Option<u64>,
}

/// The addresses reported last, and the ones cooling.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cooling {
    /// The addresses of the list published last.
    #[serde(default)]
    listed: BTreeSet<IpAddr>,
    #[serde(default)]
    cooling: BTreeMap<IpAddr, CoolingEntry>,
}

impl Cooling {
    /// The list of generation `generation` holds `addresses`: those that left the last list
    /// start to cool, those back in it (re-attached) stop.
    pub fn published(&mut self, generation: u64, addresses: BTreeSet<IpAddr>) {
        for gone in self.listed.difference(&addresses) {
            self.cooling.insert(
                *gone,
                CoolingEntry {
                    generation,
                    acknowledged_at: None,
                },
            );
        }
        for back in &addresses {
            self.cooling.remove(back);
        }
        self.listed = addresses;
    }

    /// The control plane holds the list of generation `held` (at `now`, Unix seconds); addresses
    /// cool for [`COOL_SECS`] from then, and those done go.
    pub fn settle(&mut self, held: u64, now: u64) {
        self.cooling.retain(|_, e| {
            if e.acknowledged_at.is_none() && held != 0 && e.generation <= held {
                e.acknowledged_at = Some(now);
            }
            e.acknowledged_at
                .is_none_or(|at| now < at.saturating_add(COOL_SECS))
        });
    }

    /// Why `ip` may not be given out, if it cools.
    pub fn holder(&self, ip: IpAddr) -> Option<String> {
        let e = self.cooling.get(&ip)?;
        Some(match e.acknowledged_at {
            None => "a workload that left it, until the control plane knows it is gone".to_owned(),
            Some(_) => format!(
                "a workload that left it, for up to {COOL_SECS}s more while every host's policy \
                 forgets it"
            ),
        })
    }

    /// Whether nothing is recorded.
    pub fn is_empty(&self) -> bool {
        self.listed.is_empty() && self.cooling.is_empty()
    }

    /// After a restart: report generations start again.
    pub fn restarted(mut self) -> Self {
        for e in self.cooling.values_mut() {
            e.generation = 0;
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(ips: &[&str]) -> BTreeSet<IpAddr> {
        ips.iter().map(|s| s.parse().unwrap()).collect()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_freed_address_cools_until_acknowledged_and_then_for_cool_secs() {
        let mut c = Cooling::default();
        c.published(1, set(&["10.9.1.2", "10.9.1.3"]));
        c.settle(1, 100);
        assert!(
            c.holder(ip("10.9.1.2")).is_none(),
            "listed addresses are held by their workload"
        );
        c.published(2, set(&["10.9.1.3"]));
        assert!(c.holder(ip("10.9.1.2")).is_some());
        // The control plane is unreachable: it cools however long that lasts.
        c.settle(1, 10_000);
        assert!(c.holder(ip("10.9.1.2")).unwrap().contains("control plane"));
        c.settle(2, 10_001);
        assert!(c.holder(ip("10.9.1.2")).unwrap().contains("policy"));
        c.settle(2, 10_001 + COOL_SECS - 1);
        assert!(c.holder(ip("10.9.1.2")).is_some());
        c.settle(2, 10_001 + COOL_SECS);
        assert!(c.holder(ip("10.9.1.2")).is_none());
    }

    #[test]
    fn an_address_back_in_the_list_stops_cooling_and_a_restart_waits_for_the_next_ack() {
        let mut c = Cooling::default();
        c.published(1, set(&["10.9.1.2"]));
        c.published(2, set(&[]));
        c.published(3, set(&["10.9.1.2"]));
        assert!(c.holder(ip("10.9.1.2")).is_none());
        c.published(4, set(&[]));
        // Saved and loaded by a restarted agent, whose generations start at 1 again.
        let json = serde_json::to_string(&c).unwrap();
        let mut again: Cooling = serde_json::from_str::<Cooling>(&json).unwrap().restarted();
        assert!(again.holder(ip("10.9.1.2")).is_some());
        again.settle(0, 50);
        assert!(again
            .holder(ip("10.9.1.2"))
            .unwrap()
            .contains("control plane"));
        again.settle(1, 50);
        assert!(again.holder(ip("10.9.1.2")).unwrap().contains("policy"));
    }
}
