//! Which routes are the agent's, and whether a prefix it would route into the tunnel overrides
//! a route that is not: the pure decision behind "the agent never replaces or removes a route
//! it did not create".
//!
//! The agent marks every route it creates with its own rtnetlink route protocol,
//! [`ROUTE_PROTOCOL`], so it can tell them from everyone else's (the kernel's connected routes,
//! DHCP's, an administrator's `ip route add`, other daemons'), also after a `kill -9`: the
//! kernel keeps the number with the route. The I/O shell (`route`) dumps the main table as
//! [`HostRoute`]s and asks [`conflict`] before routing a peer's prefix.
//!
//! This module performs no I/O.

use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;

/// The rtnetlink route protocol (`proto` in `ip route`) of every route the agent creates: 119,
/// unassigned in iproute2's `rt_protos` (and not used by Calico's 80, BIRD's 12 or the kernel's
/// 0–4). `ip route show proto 119` lists the agent's routes; a line `119 wgmesh` in
/// `/etc/iproute2/rt_protos.d/wgmesh.conf` makes `ip` print the name.
pub const ROUTE_PROTOCOL: u8 = 119;

/// The kernel's main routing table (`RT_TABLE_MAIN`), the only one the agent routes in.
pub const MAIN_TABLE: u32 = 254;

/// What a route does with a packet (the kernel's `RTN_*` type), as far as the agent cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RouteKind {
    /// A gateway or direct route.
    Unicast,
    /// `unreachable`: dropped, the sender gets an ICMP "host unreachable".
    Unreachable,
    /// `blackhole`: dropped silently.
    Blackhole,
    /// `prohibit`: dropped, the sender gets an ICMP "administratively prohibited".
    Prohibit,
    /// Any other type (local, broadcast, multicast, throw, …).
    Other,
}

/// One route of the host's main table, as the decision needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostRoute {
    /// Destination prefix (host bits zero).
    pub dst: IpNet,
    /// The route protocol number (`proto`); [`ROUTE_PROTOCOL`] for the agent's own.
    pub protocol: u8,
    /// The routing table.
    pub table: u32,
    /// The route's type.
    pub kind: RouteKind,
    /// The output device's name (or `#index` if it has none we know), if it has one.
    pub device: Option<String>,
    /// The gateway, if it has one.
    pub gateway: Option<IpAddr>,
}

impl HostRoute {
    /// Whether the agent created this route (its protocol is [`ROUTE_PROTOCOL`]).
    pub fn is_ours(&self) -> bool {
        self.protocol == ROUTE_PROTOCOL
    }
}

impl fmt::Display for HostRoute {
    /// As `ip route` prints it: `unreachable 10.42.0.0/16 proto 119`, `10.42.9.0/24 dev dummy0
    /// proto kernel`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            RouteKind::Unicast | RouteKind::Other => {}
            RouteKind::Unreachable => write!(f, "unreachable ")?,
            RouteKind::Blackhole => write!(f, "blackhole ")?,
            RouteKind::Prohibit => write!(f, "prohibit ")?,
        }
        if self.dst.prefix_len() == 0 {
            write!(f, "default")?;
        } else {
            write!(f, "{}", self.dst)?;
        }
        if let Some(gateway) = self.gateway {
            write!(f, " via {gateway}")?;
        }
        if let Some(device) = &self.device {
            write!(f, " dev {device}")?;
        }
        write!(f, " proto {}", protocol_name(self.protocol))?;
        if self.table != MAIN_TABLE {
            write!(f, " table {}", self.table)?;
        }
        Ok(())
    }
}

/// An address a prefix routed into the tunnel must not contain, and what it is ("the control
/// plane", "the endpoint of peer host-b"): the tunnel's own packets would be routed into it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Guarded {
    /// The address.
    pub addr: IpAddr,
    /// What it is, for the log line.
    pub what: String,
}

/// Why a prefix may not be routed into the tunnel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Conflict {
    /// It lies outside the cluster CIDR, so the cluster's `unreachable` route would not close
    /// it when the tunnel's route goes. (Validation of agent.toml and of netmaps refuses this
    /// already; see [`conflict`].)
    OutsideCluster {
        /// The cluster CIDR.
        cluster: IpNet,
    },
    /// It is equal to, inside or around a route the agent did not create.
    Route(HostRoute),
    /// It contains an address the tunnel's own packets go to.
    Address(Guarded),
}

impl fmt::Display for Conflict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::OutsideCluster { cluster } => {
                write!(f, "it lies outside the cluster CIDR {cluster}")
            }
            Self::Route(route) => write!(f, "it would override the route `{route}`"),
            Self::Address(g) => write!(f, "it contains {}, {}", g.addr, g.what),
        }
    }
}

/// Whether routing `prefix` into the tunnel would override something that is not the agent's,
/// and what. In this order: `prefix` must lie inside `cluster`; it must not contain a
/// `guarded` address; and it must not be equal to, contain or lie inside any route in `routes`
/// that is not the agent's, except a route as wide as the cluster or wider (a default route,
/// an administrator's `10.0.0.0/8 via vpn-gw` around `cluster_cidr` 10.42.0.0/16): the
/// cluster's `unreachable` route already overrides its part of the cluster, which is what
/// [`cluster_conflict`] accepts. Routes of other tables and of the other IP family are ignored.
///
/// "Inside the cluster" is checked three times on purpose, as defence in depth: agent.toml's
/// validation refuses such a prefix at its line, `Netmap::check` refuses such a netmap, and
/// this check is the last one before a route is added, whatever the settings came from.
pub fn conflict(
    prefix: IpNet,
    cluster: IpNet,
    routes: &[HostRoute],
    guarded: &[Guarded],
) -> Option<Conflict> {
    if !cluster.contains(&prefix) {
        return Some(Conflict::OutsideCluster { cluster });
    }
    if let Some(g) = guarded.iter().find(|g| prefix.contains(&g.addr)) {
        return Some(Conflict::Address(g.clone()));
    }
    routes
        .iter()
        .filter(|r| !r.is_ours() && r.table == MAIN_TABLE && !r.dst.contains(&cluster))
        .find(|r| overlaps(&prefix, &r.dst))
        .cloned()
        .map(Conflict::Route)
}

/// The route, not the agent's, whose destination is exactly `cluster`, if any: the cluster's
/// `unreachable` route would take its place (the kernel prefers neither by specificity), so the
/// agent refuses to start instead. Routes inside or around the cluster CIDR are fine: the more
/// specific ones keep their traffic, and a wider one gives up the cluster's part of it, which
/// is what `cluster_cidr` declares.
pub fn cluster_conflict(cluster: IpNet, routes: &[HostRoute]) -> Option<&HostRoute> {
    routes
        .iter()
        .find(|r| !r.is_ours() && r.table == MAIN_TABLE && r.dst == cluster)
}

/// The shortest cluster CIDR the agent closes: an `unreachable` route for a wider one (a
/// control plane that pins `0.0.0.0/1`) would swallow most of the host's own traffic.
pub const MIN_CLUSTER_PREFIX: u8 = 8;

/// Why `cluster` may not be closed on this host, if it may not: it is wider than
/// [`MIN_CLUSTER_PREFIX`], or it holds a `guarded` address (the control plane, this host's
/// endpoint) that the host reaches outside the overlay — closing it would cut the host off.
/// (The host's own and connected networks inside it stay reachable: their routes are more
/// specific than the cluster's `unreachable` route.)
pub fn cluster_hazard(cluster: IpNet, guarded: &[Guarded]) -> Option<String> {
    if cluster.prefix_len() < MIN_CLUSTER_PREFIX {
        return Some(format!(
            "it is wider than /{MIN_CLUSTER_PREFIX}, so its unreachable route would take most of the host's own traffic"
        ));
    }
    guarded
        .iter()
        .find(|g| cluster.contains(&g.addr))
        .map(|g| format!("it contains {}, {}", g.addr, g.what))
}

/// Same family and one contains the other (prefixes with zero host bits).
fn overlaps(a: &IpNet, b: &IpNet) -> bool {
    a.contains(b) || b.contains(a)
}

/// iproute2's name for a route protocol number, or the number.
fn protocol_name(protocol: u8) -> String {
    match protocol {
        0 => "unspec".into(),
        1 => "redirect".into(),
        2 => "kernel".into(),
        3 => "boot".into(),
        4 => "static".into(),
        9 => "ra".into(),
        16 => "dhcp".into(),
        ROUTE_PROTOCOL => "119 (wgmesh)".into(),
        n => n.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn route(dst: &str, protocol: u8, device: &str) -> HostRoute {
        HostRoute {
            dst: net(dst),
            protocol,
            table: MAIN_TABLE,
            kind: RouteKind::Unicast,
            device: Some(device.into()),
            gateway: None,
        }
    }

    /// A host: default route, the underlay, a foreign 10.9.0.0/24, our guard and a tunnel
    /// route.
    fn host() -> Vec<HostRoute> {
        let mut default = route("0.0.0.0/0", 4, "eth0");
        default.gateway = Some("198.18.0.254".parse().unwrap());
        let mut guard = route("10.0.0.0/8", ROUTE_PROTOCOL, "lo");
        guard.kind = RouteKind::Unreachable;
        guard.device = None;
        vec![
            default,
            route("198.18.0.0/24", 2, "eth0"),
            route("10.9.0.0/24", 2, "dummy0"),
            guard,
            route("10.42.2.0/24", ROUTE_PROTOCOL, "wgm0"),
        ]
    }

    const CLUSTER: &str = "10.0.0.0/8";

    fn check(prefix: &str) -> Option<Conflict> {
        conflict(net(prefix), net(CLUSTER), &host(), &[])
    }

    #[test]
    fn a_prefix_clear_of_foreign_routes_is_fine() {
        assert_eq!(check("10.42.3.0/24"), None);
        // Our own routes (guard, tunnel routes) never conflict, the default route neither.
        assert_eq!(check("10.42.2.0/24"), None);
        assert_eq!(check("10.42.0.0/16"), None);
    }

    #[test]
    fn equal_inside_or_around_a_foreign_route_conflicts() {
        let foreign = route("10.9.0.0/24", 2, "dummy0");
        for prefix in ["10.9.0.0/24", "10.9.0.128/25", "10.9.0.7/32", "10.8.0.0/15"] {
            assert_eq!(
                check(prefix),
                Some(Conflict::Route(foreign.clone())),
                "{prefix}"
            );
        }
        assert_eq!(
            check("10.9.0.0/24").unwrap().to_string(),
            "it would override the route `10.9.0.0/24 dev dummy0 proto kernel`"
        );
    }

    #[test]
    fn outside_the_cluster_conflicts() {
        for prefix in ["198.18.0.0/24", "0.0.0.0/1", "11.0.0.0/8", "0.0.0.0/0"] {
            assert_eq!(
                check(prefix),
                Some(Conflict::OutsideCluster {
                    cluster: net(CLUSTER)
                }),
                "{prefix}"
            );
        }
        // The family differs: never inside.
        assert!(matches!(
            check("fd00::/64"),
            Some(Conflict::OutsideCluster { .. })
        ));
    }

    #[test]
    fn a_prefix_holding_a_guarded_address_conflicts() {
        let g = Guarded {
            addr: "10.7.0.10".parse().unwrap(),
            what: "the control plane".into(),
        };
        let found = conflict(
            net("10.7.0.0/16"),
            net(CLUSTER),
            &host(),
            std::slice::from_ref(&g),
        );
        assert_eq!(found, Some(Conflict::Address(g)));
        assert_eq!(
            found.unwrap().to_string(),
            "it contains 10.7.0.10, the control plane"
        );
    }

    #[test]
    fn other_tables_and_families_are_ignored() {
        let mut other_table = route("10.42.5.0/24", 2, "eth1");
        other_table.table = 100;
        let v6 = route("fd00::/64", 2, "eth0");
        let routes = [other_table, v6];
        assert_eq!(
            conflict(net("10.42.5.0/24"), net(CLUSTER), &routes, &[]),
            None
        );
        let v6_route = route("fd42:1::/64", 2, "dummy0");
        let found = conflict(
            net("fd42:1::/48"),
            net("fd42::/16"),
            std::slice::from_ref(&v6_route),
            &[],
        );
        assert_eq!(found, Some(Conflict::Route(v6_route)));
    }

    #[test]
    fn a_foreign_route_around_the_cluster_lets_every_peer_prefix_through() {
        // 10.0.0.0/8 via vpn-gw, cluster_cidr 10.42.0.0/16: the cluster route takes the
        // cluster's part of the /8, so the peers inside it are routed too.
        let mut vpn = route("10.0.0.0/8", 4, "vpn0");
        vpn.gateway = Some("198.18.0.9".parse().unwrap());
        let routes = [vpn, route("10.42.9.0/24", 2, "dummy0")];
        let cluster = net("10.42.0.0/16");
        assert_eq!(cluster_conflict(cluster, &routes), None);
        for prefix in ["10.42.2.0/24", "10.42.128.0/17", "10.42.0.0/16"] {
            let found = conflict(net(prefix), cluster, &routes, &[]);
            assert!(
                !matches!(&found, Some(Conflict::Route(r)) if r.dst == net("10.0.0.0/8")),
                "{prefix}: {found:?}"
            );
        }
        assert_eq!(conflict(net("10.42.2.0/24"), cluster, &routes, &[]), None);
        // A foreign route inside the cluster still conflicts.
        assert_eq!(
            conflict(net("10.42.9.0/24"), cluster, &routes, &[]),
            Some(Conflict::Route(routes[1].clone()))
        );
    }

    #[test]
    fn the_cluster_route_refuses_only_an_equal_foreign_route() {
        let routes = host();
        assert_eq!(cluster_conflict(net(CLUSTER), &routes), None);
        assert_eq!(cluster_conflict(net("10.9.0.0/16"), &routes), None);
        let taken = route("10.9.0.0/24", 2, "dummy0");
        assert_eq!(cluster_conflict(net("10.9.0.0/24"), &routes), Some(&taken));
    }

    #[test]
    fn routes_print_as_ip_route_does() {
        let routes = host();
        assert_eq!(
            routes[0].to_string(),
            "default via 198.18.0.254 dev eth0 proto static"
        );
        assert_eq!(
            routes[3].to_string(),
            "unreachable 10.0.0.0/8 proto 119 (wgmesh)"
        );
    }

    #[test]
    fn a_cluster_that_would_cut_the_host_off_is_refused() {
        let control = Guarded {
            addr: "198.18.0.10".parse().unwrap(),
            what: "the control plane's address".into(),
        };
        let guarded = [control];
        let wide = cluster_hazard(net("0.0.0.0/1"), &guarded).unwrap();
        assert!(wide.contains("wider than /8"), "{wide}");
        assert!(cluster_hazard(net("::/4"), &[]).is_some());
        let holds = cluster_hazard(net("198.18.0.0/16"), &guarded).unwrap();
        assert!(
            holds.contains("198.18.0.10, the control plane's address"),
            "{holds}"
        );
        assert_eq!(cluster_hazard(net("10.0.0.0/8"), &guarded), None);
        assert_eq!(cluster_hazard(net("fd00::/8"), &guarded), None);
    }
}
