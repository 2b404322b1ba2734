//! The sysctls same-host routing needs, beside forwarding: workloads on one host reach each
//! other only through the host (their bridge ports are isolated), so the bridge answers their
//! address resolution for one another, and what the agent writes back to its TUN device passes
//! the reverse-path check.
//!
//! - IPv4: `proxy_arp` and `proxy_arp_pvlan` on the bridge (the host answers a workload's ARP
//!   for another workload, also when the answer lies behind the same bridge), the bridge's
//!   `neigh.proxy_delay` 0 (proxied answers are otherwise held back up to 0.8 s), and loose
//!   `rp_filter` (2) on the TUN device when strict filtering (1) is in force for it: a
//!   same-host packet comes back out of the TUN device with a workload's source address, whose
//!   route is the bridge.
//! - IPv6: `proxy_ndp` on the bridge (answers for the per-workload proxy entries) and its
//!   `neigh.proxy_delay` 0. IPv6 has no `rp_filter`.
//!
//! [`plan`] is pure; [`plan_proxy`] reads the current values. Apply and restore them like the
//! forwarding changes ([`super::forwarding::apply`], [`super::forwarding::restore`]).

use super::forwarding::{self, Family, ForwardingTargets, Knob, Sysctl, SysctlChange};
use super::HostError;

/// The changes that let the targets' workloads reach each other through the host, given each
/// setting's `current` value (`None`: no such setting, skipped). Settings already at their
/// value are left out.
pub fn plan(
    targets: &ForwardingTargets<'_>,
    mut current: impl FnMut(&Sysctl) -> Option<i64>,
) -> Vec<SysctlChange> {
    let mut wanted: Vec<(Sysctl, i64)> = Vec::new();
    if targets.v6 {
        wanted.push((Sysctl::new(Family::Ipv6, targets.bridge, Knob::ProxyNdp), 1));
        wanted.push((
            Sysctl::new(Family::Ipv6, targets.bridge, Knob::ProxyDelay),
            0,
        ));
    } else {
        for knob in [Knob::ProxyArp, Knob::ProxyArpPvlan] {
            wanted.push((Sysctl::new(Family::Ipv4, targets.bridge, knob), 1));
        }
        wanted.push((
            Sysctl::new(Family::Ipv4, targets.bridge, Knob::ProxyDelay),
            0,
        ));
        // The kernel filters with the larger of `all` and the interface's value.
        let tun = Sysctl::new(Family::Ipv4, targets.tun, Knob::RpFilter);
        let all = current(&Sysctl::new(Family::Ipv4, "all", Knob::RpFilter)).unwrap_or(0);
        if current(&tun).is_some_and(|own| own.max(all) == 1) {
            wanted.push((tun, 2));
        }
    }
    wanted
        .into_iter()
        .filter_map(|(sysctl, new)| {
            let old = current(&sysctl)?;
            (old != new).then_some(SysctlChange { sysctl, old, new })
        })
        .collect()
}

/// Reads the current values and [`plan`]s the changes.
pub fn plan_proxy(targets: &ForwardingTargets<'_>) -> Result<Vec<SysctlChange>, HostError> {
    let mut failed = None;
    let changes = plan(targets, |s| match forwarding::read(s) {
        Ok(v) => v,
        Err(e) => {
            failed.get_or_insert(e);
            None
        }
    });
    match failed {
        Some(e) => Err(e),
        None => Ok(changes),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::forwarding::tests::{touched, values, T4};

    #[test]
    fn ipv4_proxies_arp_on_the_bridge_and_loosens_strict_rp_filter_on_the_tun() {
        use Family::Ipv4;
        use Knob::*;
        let fresh = |all: i64, tun: i64| {
            values(&[
                (Ipv4, "wgmbr0", ProxyArp, 0),
                (Ipv4, "wgmbr0", ProxyArpPvlan, 0),
                (Ipv4, "wgmbr0", ProxyDelay, 80),
                (Ipv4, "all", RpFilter, all),
                (Ipv4, "wgm0", RpFilter, tun),
                (Ipv4, "eth0", RpFilter, 1),
            ])
        };
        let now = fresh(1, 0);
        let changes = plan(&T4, |s| now.get(s).copied());
        assert_eq!(
            touched(&changes),
            [
                (Ipv4, "wgmbr0", ProxyArp, 0, 1),
                (Ipv4, "wgmbr0", ProxyArpPvlan, 0, 1),
                (Ipv4, "wgmbr0", ProxyDelay, 80, 0),
                (Ipv4, "wgm0", RpFilter, 0, 2),
            ]
        );
        // Strict on the TUN device alone is loosened too; loose or off anywhere is left alone.
        for (all, tun, loosened) in [(0, 1, true), (0, 0, false), (2, 1, false), (1, 2, false)] {
            let now = fresh(all, tun);
            let changes = plan(&T4, |s| now.get(s).copied());
            let rp = changes.iter().any(|c| c.sysctl.knob == RpFilter);
            assert_eq!(rp, loosened, "all={all} tun={tun}");
        }
        // Set already (a restart): nothing to change; no such settings: nothing either.
        let set = values(&[
            (Ipv4, "wgmbr0", ProxyArp, 1),
            (Ipv4, "wgmbr0", ProxyArpPvlan, 1),
            (Ipv4, "wgmbr0", ProxyDelay, 0),
            (Ipv4, "all", RpFilter, 1),
            (Ipv4, "wgm0", RpFilter, 2),
        ]);
        assert!(plan(&T4, |s| set.get(s).copied()).is_empty());
        assert!(plan(&T4, |_| None).is_empty());
    }

    #[test]
    fn ipv6_proxies_neighbour_discovery_on_the_bridge_only() {
        use Family::{Ipv4, Ipv6};
        use Knob::*;
        let now = values(&[
            (Ipv6, "wgmbr0", ProxyNdp, 0),
            (Ipv6, "wgmbr0", ProxyDelay, 80),
            (Ipv4, "wgmbr0", ProxyArp, 0),
            (Ipv4, "all", RpFilter, 1),
            (Ipv4, "wgm0", RpFilter, 1),
        ]);
        let targets = ForwardingTargets { v6: true, ..T4 };
        let changes = plan(&targets, |s| now.get(s).copied());
        assert_eq!(
            touched(&changes),
            [
                (Ipv6, "wgmbr0", ProxyNdp, 0, 1),
                (Ipv6, "wgmbr0", ProxyDelay, 80, 0),
            ]
        );
        // The state file names them.
        let json = serde_json::to_value(&changes[1]).unwrap();
        assert_eq!(json["knob"], "proxy_delay");
    }
}
