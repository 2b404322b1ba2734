//! The forwarding sysctls: the host forwards only between the bridge and the TUN device, never
//! for every interface, and every value changed can be put back.
//!
//! IPv4 decides forwarding on the input device, so `net.ipv4.conf.<bridge>.forwarding` and
//! `net.ipv4.conf.<tun>.forwarding` are enough; `ip_forward` and `conf.all.forwarding` stay as
//! they were. IPv6 does the same where the kernel has `net.ipv6.conf.<iface>.force_forwarding`
//! (Linux 6.17 and later): the bridge and the TUN device get `force_forwarding` (and their own
//! `forwarding`, the router role) and nothing else changes.
//!
//! On an older kernel IPv6 forwards only when `net.ipv6.conf.all.forwarding` is on (a host-wide
//! switch, which also copies itself into every interface and `default`), and an interface that
//! forwards ignores router advertisements unless its `accept_ra` is 2. That fallback (a known
//! limit, README "Forwarding"): every interface whose `accept_ra` is 1 gets 2 first (the underlay
//! keeps honouring its routers), then each interface's `forwarding` and `default`'s are set
//! explicitly, then `all`: each of those is a recorded change, so [`restore_order`] can put back
//! every interface's own value after `all`.
//!
//! [`plan`] and [`restore_order`] are pure; [`plan_forwarding`], [`apply`] and [`restore`] do the
//! `/proc/sys` I/O of the calling thread's network namespace. The caller records each change
//! before it applies it (the agent keeps them in a state file), so a killed agent's changes can
//! be restored by the next one.

use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::link::check_ifname;
use super::HostError;

/// The address family of a sysctl.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    /// `net.ipv4`.
    Ipv4,
    /// `net.ipv6`.
    Ipv6,
}

/// Which per-interface setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Knob {
    /// `forwarding`.
    Forwarding,
    /// `accept_ra` (IPv6).
    AcceptRa,
    /// `force_forwarding` (IPv6, Linux 6.17 and later): forward what arrives on this interface
    /// whatever `all.forwarding` says.
    ForceForwarding,
    /// `rp_filter` (IPv4): reverse-path filtering, 1 strict, 2 loose.
    RpFilter,
    /// `proxy_arp` (IPv4): answer ARP for addresses routed elsewhere.
    ProxyArp,
    /// `proxy_arp_pvlan` (IPv4): answer ARP also for addresses behind the asking interface.
    ProxyArpPvlan,
    /// `proxy_ndp` (IPv6): answer neighbour solicitations for the proxy entries.
    ProxyNdp,
    /// `net.<family>.neigh.<iface>.proxy_delay`: how long proxied answers wait (1/100 s).
    ProxyDelay,
}

/// One setting `net.<family>.conf.<iface>.<knob>`; `iface` may be `all` or `default`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Sysctl {
    /// The family.
    pub family: Family,
    /// The interface, `all` or `default`.
    pub iface: String,
    /// The setting.
    pub knob: Knob,
}

/// A sysctl the agent changes from `old` to `new`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SysctlChange {
    /// The setting.
    #[serde(flatten)]
    pub sysctl: Sysctl,
    /// Its value before the agent changed it.
    pub old: i64,
    /// The value the agent sets.
    pub new: i64,
}

/// What must forward: the bridge and the TUN device, and whether the subnet is IPv6.
#[derive(Debug, Clone, Copy)]
pub struct ForwardingTargets<'a> {
    /// The bridge's name.
    pub bridge: &'a str,
    /// The TUN device's name.
    pub tun: &'a str,
    /// Whether the host's subnet is IPv6.
    pub v6: bool,
}

impl Sysctl {
    /// `net.<family>.conf.<iface>.<knob>`.
    pub fn new(family: Family, iface: &str, knob: Knob) -> Self {
        Self {
            family,
            iface: iface.to_owned(),
            knob,
        }
    }

    /// Its `/proc/sys` file; refused when `iface` is not an interface name (a state file is
    /// input: it never names another file).
    pub fn path(&self) -> Result<PathBuf, HostError> {
        check_ifname(&self.iface)?;
        let family = match self.family {
            Family::Ipv4 => "ipv4",
            Family::Ipv6 => "ipv6",
        };
        let knob = match self.knob {
            Knob::Forwarding => "forwarding",
            Knob::AcceptRa => "accept_ra",
            Knob::ForceForwarding => "force_forwarding",
            Knob::RpFilter => "rp_filter",
            Knob::ProxyArp => "proxy_arp",
            Knob::ProxyArpPvlan => "proxy_arp_pvlan",
            Knob::ProxyNdp => "proxy_ndp",
            Knob::ProxyDelay => "proxy_delay",
        };
        let section = if self.knob == Knob::ProxyDelay {
            "neigh"
        } else {
            "conf"
        };
        Ok(Path::new("/proc/sys/net")
            .join(family)
            .join(section)
            .join(&self.iface)
            .join(knob))
    }

    /// Whether it belongs to a real interface rather than `all` or `default`.
    fn is_interface(&self) -> bool {
        self.iface != "all" && self.iface != "default"
    }
}

/// The changes that make the targets forward, in the order to apply them, given each setting's
/// `current` value (`None`: no such setting, skipped) and, for IPv6 on a kernel without
/// `force_forwarding`, every interface of `net.ipv6.conf` (`v6_ifaces`, without `all` and
/// `default`). Settings already at their value are left out.
pub fn plan(
    targets: &ForwardingTargets<'_>,
    v6_ifaces: &[String],
    mut current: impl FnMut(&Sysctl) -> Option<i64>,
) -> Vec<SysctlChange> {
    let mut wanted: Vec<(Sysctl, i64)> = Vec::new();
    if targets.v6 {
        if has_force_forwarding(targets, &mut current) {
            for iface in [targets.bridge, targets.tun] {
                for knob in [Knob::Forwarding, Knob::ForceForwarding] {
                    wanted.push((Sysctl::new(Family::Ipv6, iface, knob), 1));
                }
            }
        } else {
            wanted.extend(host_wide_v6(targets, v6_ifaces, &mut current));
        }
    }
    for iface in [targets.bridge, targets.tun] {
        wanted.push((Sysctl::new(Family::Ipv4, iface, Knob::Forwarding), 1));
    }
    wanted
        .into_iter()
        .filter_map(|(sysctl, new)| {
            let old = current(&sysctl)?;
            (old != new).then_some(SysctlChange { sysctl, old, new })
        })
        .collect()
}

/// Whether IPv6 can forward per interface here: both targets have `force_forwarding`.
pub fn has_force_forwarding(
    targets: &ForwardingTargets<'_>,
    mut current: impl FnMut(&Sysctl) -> Option<i64>,
) -> bool {
    [targets.bridge, targets.tun]
        .iter()
        .all(|iface| current(&Sysctl::new(Family::Ipv6, iface, Knob::ForceForwarding)).is_some())
}

/// The fallback without `force_forwarding`: `accept_ra` 1 becomes 2 on every interface but the
/// bridge and the TUN device, whose `accept_ra` becomes 0 (a router advertisement from a
/// workload must never give the host a route), then every interface's `forwarding`,
/// `default`'s and `all`'s become 1.
fn host_wide_v6(
    targets: &ForwardingTargets<'_>,
    v6_ifaces: &[String],
    current: &mut impl FnMut(&Sysctl) -> Option<i64>,
) -> Vec<(Sysctl, i64)> {
    let mut wanted = Vec::new();
    let real = v6_ifaces
        .iter()
        .filter(|i| i.as_str() != "all" && i.as_str() != "default");
    for iface in [targets.bridge, targets.tun] {
        wanted.push((Sysctl::new(Family::Ipv6, iface, Knob::AcceptRa), 0));
    }
    for iface in real.clone() {
        if iface == targets.bridge || iface == targets.tun {
            continue;
        }
        let accept_ra = Sysctl::new(Family::Ipv6, iface, Knob::AcceptRa);
        if current(&accept_ra) == Some(1) {
            wanted.push((accept_ra, 2));
        }
    }
    for iface in real.map(String::as_str).chain(["default", "all"]) {
        wanted.push((Sysctl::new(Family::Ipv6, iface, Knob::Forwarding), 1));
    }
    wanted
}

/// The order to restore `changes` (made in that order) in: the reverse, so that `all` goes back
/// before each interface's own value.
pub fn restore_order(changes: &[SysctlChange]) -> impl Iterator<Item = &SysctlChange> {
    changes.iter().rev()
}

/// Reads the current values and [`plan`]s the changes that make `targets` forward.
pub fn plan_forwarding(targets: &ForwardingTargets<'_>) -> Result<Vec<SysctlChange>, HostError> {
    let v6_ifaces = if targets.v6 {
        ipv6_interfaces()?
    } else {
        Vec::new()
    };
    let mut failed = None;
    let changes = plan(targets, &v6_ifaces, |s| match read(s) {
        Ok(v) => v,
        Err(e) => {
            failed.get_or_insert(e);
            None
        }
    });
    if let Some(e) = failed {
        return Err(e);
    }
    let has_ipv6 = || {
        matches!(
            read(&Sysctl::new(Family::Ipv6, "all", Knob::Forwarding)),
            Ok(Some(_))
        )
    };
    if targets.v6 && has_ipv6() && !has_force_forwarding(targets, |s| read(s).ok().flatten()) {
        tracing::warn!(
            "this kernel has no net.ipv6.conf.<interface>.force_forwarding (Linux 6.17): IPv6 \
             forwarding is switched on host-wide (net.ipv6.conf.all.forwarding)"
        );
    }
    Ok(changes)
}

/// Sets `change`'s new value.
pub fn apply(change: &SysctlChange) -> Result<(), HostError> {
    write(&change.sysctl, change.new)
}

/// Puts `change`'s old value back. Returns `Ok(false)` when its interface no longer exists
/// (nothing to restore).
pub fn restore(change: &SysctlChange) -> Result<bool, HostError> {
    let path = change.sysctl.path()?;
    if change.sysctl.is_interface() && !path.exists() {
        return Ok(false);
    }
    write(&change.sysctl, change.old).map(|()| true)
}

/// The value of `sysctl`; `None` when there is no such file (an interface that is gone).
pub(super) fn read(sysctl: &Sysctl) -> Result<Option<i64>, HostError> {
    let path = sysctl.path()?;
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(HostError::Sysctl { path, source }),
    };
    text.trim()
        .parse()
        .map(Some)
        .map_err(|e| HostError::Sysctl {
            path,
            source: io::Error::new(io::ErrorKind::InvalidData, e),
        })
}

fn write(sysctl: &Sysctl, value: i64) -> Result<(), HostError> {
    let path = sysctl.path()?;
    std::fs::write(&path, value.to_string()).map_err(|source| HostError::Sysctl { path, source })
}

/// The interfaces listed in `/proc/sys/net/ipv6/conf` (without `all` and `default`); none when
/// IPv6 is disabled.
fn ipv6_interfaces() -> Result<Vec<String>, HostError> {
    let dir = Path::new("/proc/sys/net/ipv6/conf");
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(HostError::Sysctl {
                path: dir.to_owned(),
                source,
            })
        }
    };
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n != "all" && n != "default")
        .collect();
    names.sort();
    Ok(names)
}

#[cfg(test)]
pub(super) mod tests {
    use std::collections::HashMap;

    use super::*;

    fn key(family: Family, iface: &str, knob: Knob) -> Sysctl {
        Sysctl::new(family, iface, knob)
    }

    /// The settings `list` gives, as the `current` a plan reads (also `proxy`'s tests').
    pub(in crate::host) fn values(list: &[(Family, &str, Knob, i64)]) -> HashMap<Sysctl, i64> {
        list.iter()
            .map(|(f, i, k, v)| (key(*f, i, *k), *v))
            .collect()
    }

    pub(in crate::host) const T4: ForwardingTargets<'static> = ForwardingTargets {
        bridge: "wgmbr0",
        tun: "wgm0",
        v6: false,
    };

    #[test]
    fn ipv4_forwards_on_the_bridge_and_the_tun_only() {
        use Family::Ipv4;
        use Knob::Forwarding;
        let now = values(&[
            (Ipv4, "wgmbr0", Forwarding, 0),
            (Ipv4, "wgm0", Forwarding, 0),
            (Ipv4, "eth0", Forwarding, 0),
            (Ipv4, "all", Forwarding, 0),
        ]);
        let changes = plan(&T4, &["eth0".into()], |s| now.get(s).copied());
        let touched: Vec<(&str, i64, i64)> = changes
            .iter()
            .map(|c| (c.sysctl.iface.as_str(), c.old, c.new))
            .collect();
        assert_eq!(touched, [("wgmbr0", 0, 1), ("wgm0", 0, 1)]);
        assert!(changes.iter().all(|c| c.sysctl.family == Ipv4));
        // Already forwarding (a restart over a kill -9 that was restored): nothing to change.
        let on = values(&[
            (Ipv4, "wgmbr0", Forwarding, 1),
            (Ipv4, "wgm0", Forwarding, 1),
        ]);
        assert!(plan(&T4, &[], |s| on.get(s).copied()).is_empty());
        // A device without the setting is skipped.
        assert!(plan(&T4, &[], |_| None).is_empty());
    }

    /// Each planned change as (family, interface, knob, old, new).
    pub(in crate::host) fn touched(
        changes: &[SysctlChange],
    ) -> Vec<(Family, &str, Knob, i64, i64)> {
        changes
            .iter()
            .map(|c| {
                let s = &c.sysctl;
                (s.family, s.iface.as_str(), s.knob, c.old, c.new)
            })
            .collect()
    }

    #[test]
    fn ipv6_forwards_on_the_bridge_and_the_tun_only_where_the_kernel_can() {
        use Family::{Ipv4, Ipv6};
        use Knob::{AcceptRa, ForceForwarding, Forwarding};
        let now = values(&[
            (Ipv4, "wgmbr0", Forwarding, 0),
            (Ipv4, "wgm0", Forwarding, 0),
            (Ipv6, "wgmbr0", Forwarding, 0),
            (Ipv6, "wgm0", Forwarding, 1),
            (Ipv6, "wgmbr0", ForceForwarding, 0),
            (Ipv6, "wgm0", ForceForwarding, 0),
            (Ipv6, "eth0", ForceForwarding, 0),
            (Ipv6, "eth0", AcceptRa, 1),
            (Ipv6, "eth0", Forwarding, 0),
            (Ipv6, "all", Forwarding, 0),
        ]);
        let ifaces: Vec<String> = ["eth0", "wgmbr0", "wgm0"].map(String::from).into();
        let targets = ForwardingTargets { v6: true, ..T4 };
        assert!(has_force_forwarding(&targets, |s| now.get(s).copied()));
        let changes = plan(&targets, &ifaces, |s| now.get(s).copied());
        let touched = touched(&changes);
        // Neither `all` nor the underlay (nor its accept_ra) is touched.
        assert_eq!(
            touched,
            [
                (Ipv6, "wgmbr0", Forwarding, 0, 1),
                (Ipv6, "wgmbr0", ForceForwarding, 0, 1),
                (Ipv6, "wgm0", ForceForwarding, 0, 1),
                (Ipv4, "wgmbr0", Forwarding, 0, 1),
                (Ipv4, "wgm0", Forwarding, 0, 1),
            ]
        );
        // The state file names the new setting.
        let json = serde_json::to_value(&changes[1]).unwrap();
        assert_eq!(json["knob"], "force_forwarding");
    }

    #[test]
    fn ipv6_without_force_forwarding_keeps_router_advertisements_and_records_every_interface() {
        use Family::{Ipv4, Ipv6};
        use Knob::{AcceptRa, Forwarding};
        let now = values(&[
            (Ipv4, "wgmbr0", Forwarding, 0),
            (Ipv4, "wgm0", Forwarding, 1),
            (Ipv6, "eth0", AcceptRa, 1),
            (Ipv6, "eth1", AcceptRa, 0),
            (Ipv6, "lo", AcceptRa, 2),
            (Ipv6, "wgmbr0", AcceptRa, 1),
            (Ipv6, "wgm0", AcceptRa, 1),
            (Ipv6, "wgmbr0", Forwarding, 0),
            (Ipv6, "wgm0", Forwarding, 0),
            (Ipv6, "eth0", Forwarding, 0),
            (Ipv6, "eth1", Forwarding, 1),
            (Ipv6, "lo", Forwarding, 0),
            (Ipv6, "default", Forwarding, 0),
            (Ipv6, "all", Forwarding, 0),
        ]);
        let ifaces: Vec<String> = ["eth0", "eth1", "lo", "wgmbr0", "wgm0", "all"]
            .map(String::from)
            .into();
        let targets = ForwardingTargets { v6: true, ..T4 };
        let changes = plan(&targets, &ifaces, |s| now.get(s).copied());
        let touched = touched(&changes);
        assert_eq!(
            touched,
            [
                // No router advertisement from a workload gives the host a route.
                (Ipv6, "wgmbr0", AcceptRa, 1, 0),
                (Ipv6, "wgm0", AcceptRa, 1, 0),
                // accept_ra first: forwarding switched on purges RA routes where it is not 2.
                (Ipv6, "eth0", AcceptRa, 1, 2),
                (Ipv6, "eth0", Forwarding, 0, 1),
                (Ipv6, "lo", Forwarding, 0, 1),
                (Ipv6, "wgmbr0", Forwarding, 0, 1),
                (Ipv6, "wgm0", Forwarding, 0, 1),
                (Ipv6, "default", Forwarding, 0, 1),
                (Ipv6, "all", Forwarding, 0, 1),
                (Ipv4, "wgmbr0", Forwarding, 0, 1),
            ]
        );
        // Restored in reverse: `all` back first, then each interface's own value.
        let order: Vec<&str> = restore_order(&changes)
            .map(|c| c.sysctl.iface.as_str())
            .collect();
        assert_eq!(
            order,
            [
                "wgmbr0", "all", "default", "wgm0", "wgmbr0", "lo", "eth0", "eth0", "wgm0",
                "wgmbr0"
            ]
        );
        assert_eq!(
            restore_order(&changes).last().unwrap().sysctl.knob,
            AcceptRa
        );
    }

    #[test]
    fn paths_are_built_from_interface_names_only() {
        let s = key(Family::Ipv6, "eth0", Knob::AcceptRa);
        assert_eq!(
            s.path().unwrap(),
            Path::new("/proc/sys/net/ipv6/conf/eth0/accept_ra")
        );
        let s = key(Family::Ipv4, "wgmbr0", Knob::ProxyDelay);
        assert_eq!(
            s.path().unwrap(),
            Path::new("/proc/sys/net/ipv4/neigh/wgmbr0/proxy_delay")
        );
        for bad in ["..", "a/b", "", "x".repeat(16).as_str()] {
            assert!(
                key(Family::Ipv4, bad, Knob::Forwarding).path().is_err(),
                "{bad:?}"
            );
        }
        // The state file's shape.
        let change = SysctlChange {
            sysctl: key(Family::Ipv4, "wgmbr0", Knob::Forwarding),
            old: 0,
            new: 1,
        };
        let json = serde_json::to_value(&change).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"family": "ipv4", "iface": "wgmbr0", "knob": "forwarding", "old": 0, "new": 1})
        );
        let bad = r#"{"family": "ipv4", "iface": "x", "knob": "accept_local", "old": 0, "new": 1}"#;
        assert!(serde_json::from_str::<SysctlChange>(bad).is_err());
    }
}
