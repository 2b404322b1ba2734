//! [`HostNets`]: what a peer's packets may reach on this host, and where a peer may never roam.
//!
//! - A packet from a peer is delivered only when its destination is inside this host's overlay
//!   subnet (its workloads and the gateway): never to the host's underlay address, to other
//!   networks the host routes, or to other peers' subnets ([`HostNets::delivers`]; the policy
//!   issue refines who may reach what inside the subnet).
//! - A peer's endpoint never moves to an address that would loop through our own tunnel (the
//!   cluster CIDR, our subnet, any prefix routed into the TUN), to one of this host's own
//!   addresses, or to an address no peer can be reached at (loopback, unspecified, multicast,
//!   link-local, broadcast: [`Unusable`], the rule the control plane applies to the endpoints
//!   hosts report) ([`HostNets::roam_refusal`]).
//!
//! The agent builds it from the subnet, the cluster CIDR and the host's addresses and hands it to
//! the [`PeerSet`](super::set::PeerSet), which adds the prefixes routed into the TUN and gives
//! every peer the same snapshot. No I/O, no clock.

use std::net::IpAddr;

use ipnet::IpNet;
use wgmesh_config::endpoint::Unusable;

/// This host's networks, as the peers' per-packet decisions need them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostNets {
    subnet: IpNet,
    cluster: IpNet,
    host_addrs: Vec<IpAddr>,
    /// Prefixes routed into the TUN device (the peers' allowed IPs), added by the peer set.
    routed: Vec<IpNet>,
}

/// Why a peer's endpoint was not moved to an address, decided by [`HostNets::roam_refusal`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoamRefusal {
    /// An address no peer can be reached at (loopback, multicast, ...).
    Unusable(Unusable),
    /// Inside the cluster CIDR, this host's subnet or a prefix routed into the tunnel: sending
    /// there would loop through our own tunnel.
    Overlay,
    /// One of this host's own addresses.
    OwnAddress,
}

impl HostNets {
    /// The host with overlay `subnet`, in the cluster `cluster`, whose network interfaces hold
    /// `host_addrs`.
    pub fn new(subnet: IpNet, cluster: IpNet, host_addrs: Vec<IpAddr>) -> Self {
        Self {
            subnet,
            cluster,
            host_addrs: host_addrs.into_iter().map(|a| a.to_canonical()).collect(),
            routed: Vec::new(),
        }
    }

    /// The same host, with `routed` as the prefixes routed into the tunnel.
    pub(super) fn with_routed(&self, routed: impl IntoIterator<Item = IpNet>) -> Self {
        Self {
            routed: routed.into_iter().collect(),
            ..self.clone()
        }
    }

    /// The host's overlay subnet.
    pub fn subnet(&self) -> IpNet {
        self.subnet
    }

    /// Whether a packet from a peer to `dst` is for this host's overlay subnet: the one rule of
    /// what a peer may reach here.
    #[inline]
    pub fn delivers(&self, dst: IpAddr) -> bool {
        super::route::net_contains(&self.subnet, dst)
    }

    /// Why a peer's endpoint must not move to `ip`; `None` if it may.
    pub fn roam_refusal(&self, ip: IpAddr) -> Option<RoamRefusal> {
        let ip = ip.to_canonical();
        if let Some(class) = Unusable::of(ip) {
            return Some(RoamRefusal::Unusable(class));
        }
        let overlay = [&self.subnet, &self.cluster]
            .into_iter()
            .chain(&self.routed)
            .any(|net| net.contains(&ip));
        if overlay {
            return Some(RoamRefusal::Overlay);
        }
        self.host_addrs
            .contains(&ip)
            .then_some(RoamRefusal::OwnAddress)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets() -> HostNets {
        HostNets::new(
            "10.42.1.0/24".parse().unwrap(),
            "10.42.0.0/16".parse().unwrap(),
            vec!["198.18.0.1".parse().unwrap(), "fd00::1".parse().unwrap()],
        )
        .with_routed(["10.99.0.0/24".parse().unwrap()])
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn only_the_subnet_is_delivered() {
        let n = nets();
        assert!(n.delivers(ip("10.42.1.1")), "the gateway");
        assert!(n.delivers(ip("10.42.1.77")), "a workload");
        for other in [
            "198.18.0.1",
            "10.42.2.2",
            "10.99.0.1",
            "8.8.8.8",
            "224.0.0.1",
            "fd00::1",
        ] {
            assert!(!n.delivers(ip(other)), "{other}");
        }
        let v6 = HostNets::new(
            "fd42:1::/64".parse().unwrap(),
            "fd42::/48".parse().unwrap(),
            vec![],
        );
        assert!(v6.delivers(ip("fd42:1::5")));
        assert!(!v6.delivers(ip("fd42:2::5")));
        assert!(!v6.delivers(ip("10.42.1.5")));
    }

    #[test]
    fn roaming_is_refused_into_the_overlay_our_host_and_unusable_addresses() {
        use Unusable::*;
        let n = nets();
        let cases = [
            ("198.18.0.2", None),
            ("2001:db8::2", None),
            ("127.0.0.1", Some(RoamRefusal::Unusable(Loopback))),
            ("::1", Some(RoamRefusal::Unusable(Loopback))),
            ("0.0.0.0", Some(RoamRefusal::Unusable(Unspecified))),
            ("0.1.2.3", Some(RoamRefusal::Unusable(Unspecified))),
            ("::", Some(RoamRefusal::Unusable(Unspecified))),
            ("224.0.0.5", Some(RoamRefusal::Unusable(Multicast))),
            ("ff02::1", Some(RoamRefusal::Unusable(Multicast))),
            ("169.254.7.7", Some(RoamRefusal::Unusable(LinkLocal))),
            ("fe80::7", Some(RoamRefusal::Unusable(LinkLocal))),
            ("255.255.255.255", Some(RoamRefusal::Unusable(Broadcast))),
            ("::ffff:127.0.0.1", Some(RoamRefusal::Unusable(Loopback))),
            ("10.42.1.5", Some(RoamRefusal::Overlay)),
            ("10.42.200.5", Some(RoamRefusal::Overlay)),
            ("10.99.0.3", Some(RoamRefusal::Overlay)),
            ("::ffff:10.42.3.3", Some(RoamRefusal::Overlay)),
            ("198.18.0.1", Some(RoamRefusal::OwnAddress)),
            ("::ffff:198.18.0.1", Some(RoamRefusal::OwnAddress)),
            ("fd00::1", Some(RoamRefusal::OwnAddress)),
        ];
        for (addr, want) in cases {
            assert_eq!(n.roam_refusal(ip(addr)), want, "{addr}");
        }
        // A routed prefix outside the cluster CIDR counts as overlay too.
        let routed_out = HostNets::new(
            "10.42.1.0/24".parse().unwrap(),
            "10.42.0.0/16".parse().unwrap(),
            vec![],
        )
        .with_routed(["192.0.2.0/24".parse().unwrap()]);
        assert_eq!(routed_out.roam_refusal(ip("192.0.3.1")), None);
        assert_eq!(
            routed_out.roam_refusal(ip("192.0.2.1")),
            Some(RoamRefusal::Overlay)
        );
    }
}
