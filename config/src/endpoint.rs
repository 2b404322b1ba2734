//! The one rule of which underlay addresses no WireGuard peer can be reached at: the control
//! plane refuses them as a host's endpoint (at join and in endpoint reports), and the agent
//! refuses to move a peer's endpoint to them when a packet seems to come from there (a roam).
//!
//! Pure: no I/O.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// A class of address no peer can be reached at on the underlay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unusable {
    /// `0.0.0.0/8` ("this network", RFC 791: only ever a source) or `::`.
    Unspecified,
    /// `127.0.0.0/8` or `::1`: this host itself.
    Loopback,
    /// `224.0.0.0/4` or `ff00::/8`: a group, not a host (a reflection vector).
    Multicast,
    /// `169.254.0.0/16` or `fe80::/10`: only meaningful on one link (in IPv6, with a zone that
    /// other hosts do not have).
    LinkLocal,
    /// `255.255.255.255`.
    Broadcast,
}

impl Unusable {
    /// The class of `ip` (an IPv4-mapped IPv6 address counts as the IPv4 address it is), if it
    /// is one no peer can be reached at.
    pub fn of(ip: IpAddr) -> Option<Self> {
        match ip.to_canonical() {
            IpAddr::V4(v4) => Self::of_v4(v4),
            IpAddr::V6(v6) => Self::of_v6(v6),
        }
    }

    fn of_v4(ip: Ipv4Addr) -> Option<Self> {
        Some(if ip.octets()[0] == 0 {
            Self::Unspecified
        } else if ip.is_loopback() {
            Self::Loopback
        } else if ip.is_multicast() {
            Self::Multicast
        } else if ip.is_link_local() {
            Self::LinkLocal
        } else if ip.is_broadcast() {
            Self::Broadcast
        } else {
            return None;
        })
    }

    fn of_v6(ip: Ipv6Addr) -> Option<Self> {
        Some(if ip.is_unspecified() {
            Self::Unspecified
        } else if ip.is_loopback() {
            Self::Loopback
        } else if ip.is_multicast() {
            Self::Multicast
        } else if ip.segments()[0] & 0xffc0 == 0xfe80 {
            Self::LinkLocal
        } else {
            return None;
        })
    }
}

impl fmt::Display for Unusable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Unspecified => "unspecified",
            Self::Loopback => "loopback",
            Self::Multicast => "multicast",
            Self::LinkLocal => "link-local",
            Self::Broadcast => "broadcast",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_class_and_the_usable_rest() {
        use Unusable::*;
        for (addr, want) in [
            ("198.18.0.5", None),
            ("10.43.0.1", None),
            ("192.0.2.1", None),
            ("2001:db8::5", None),
            ("fd00::1", None),
            ("::ffff:198.18.0.5", None),
            ("0.0.0.0", Some(Unspecified)),
            ("0.1.2.3", Some(Unspecified)),
            ("::", Some(Unspecified)),
            ("::ffff:0.0.0.0", Some(Unspecified)),
            ("127.0.0.1", Some(Loopback)),
            ("127.9.9.9", Some(Loopback)),
            ("::1", Some(Loopback)),
            ("::ffff:127.0.0.1", Some(Loopback)),
            ("224.0.0.1", Some(Multicast)),
            ("239.255.255.250", Some(Multicast)),
            ("ff02::1", Some(Multicast)),
            ("169.254.1.1", Some(LinkLocal)),
            ("fe80::1", Some(LinkLocal)),
            ("febf::1", Some(LinkLocal)),
            ("fec0::1", None),
            ("255.255.255.255", Some(Broadcast)),
            ("::ffff:255.255.255.255", Some(Broadcast)),
        ] {
            let ip: IpAddr = addr.parse().unwrap();
            assert_eq!(Unusable::of(ip), want, "{addr}");
        }
        assert_eq!(LinkLocal.to_string(), "link-local");
    }
}
