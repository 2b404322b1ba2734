//! Longest-prefix match from an inner destination address to a peer, over the peers' allowed IPs
//! ("cryptokey routing", WireGuard paper section 2).
//!
//! Built once per configuration change and then only read, so lookups take no lock and allocate
//! nothing. Prefixes are kept per length in hash maps, longest length first: a lookup masks the
//! address once per distinct prefix length present (usually one or two) — the same scheme as the
//! kernel's old hash FIB, and plenty for the few hundred prefixes of a cluster. The maps use
//! FxHash, not the default SipHash (a third of a lookup's cost): their keys are the configured
//! prefixes, which no packet can add to, so there is no hash flooding to defend against.
//!
//! Pure: no I/O, no clock.

use std::net::IpAddr;

use ipnet::IpNet;
use rustc_hash::FxHashMap as HashMap;

/// An immutable longest-prefix-match table from IP prefixes to values.
#[derive(Debug, Clone)]
pub struct AllowedIps<T> {
    v4: Table<u32, T>,
    v6: Table<u128, T>,
}

#[derive(Debug, Clone)]
struct Table<K, T> {
    /// (prefix length, network bits -> value), longest first.
    levels: Vec<(u8, HashMap<K, T>)>,
}

impl<T> Default for AllowedIps<T> {
    fn default() -> Self {
        Self {
            v4: Table { levels: Vec::new() },
            v6: Table { levels: Vec::new() },
        }
    }
}

impl<T: Clone> AllowedIps<T> {
    /// Builds a table. A later entry with the same prefix replaces an earlier one; callers that
    /// need exclusivity check it beforehand (the agent config rejects overlaps).
    pub fn build(entries: impl IntoIterator<Item = (IpNet, T)>) -> Self {
        let mut table = Self::default();
        for (net, value) in entries {
            match net {
                IpNet::V4(n) => table
                    .v4
                    .insert(n.prefix_len(), u32::from(n.network()), value),
                IpNet::V6(n) => table
                    .v6
                    .insert(n.prefix_len(), u128::from(n.network()), value),
            }
        }
        table
    }

    /// The value of the longest prefix containing `addr`.
    #[inline]
    pub fn lookup(&self, addr: IpAddr) -> Option<&T> {
        match addr {
            IpAddr::V4(a) => self.v4.lookup(u32::from(a), 32),
            IpAddr::V6(a) => self.v6.lookup(u128::from(a), 128),
        }
    }

    /// Whether the table holds no prefix at all.
    pub fn is_empty(&self) -> bool {
        self.v4.levels.is_empty() && self.v6.levels.is_empty()
    }
}

trait Bits: Copy + Eq + std::hash::Hash + std::ops::BitAnd<Output = Self> {
    fn mask(len: u8, width: u8) -> Self;
}

impl Bits for u32 {
    fn mask(len: u8, width: u8) -> Self {
        if len == 0 {
            0
        } else {
            Self::MAX << (width - len)
        }
    }
}

impl Bits for u128 {
    fn mask(len: u8, width: u8) -> Self {
        if len == 0 {
            0
        } else {
            Self::MAX << (width - len)
        }
    }
}

impl<K: Bits, T> Table<K, T> {
    fn insert(&mut self, len: u8, network: K, value: T) {
        let at = match self.levels.iter().position(|(l, _)| *l <= len) {
            Some(i) if self.levels[i].0 == len => i,
            Some(i) => {
                self.levels.insert(i, (len, HashMap::default()));
                i
            }
            None => {
                self.levels.push((len, HashMap::default()));
                self.levels.len() - 1
            }
        };
        self.levels[at].1.insert(network, value);
    }

    #[inline]
    fn lookup(&self, addr: K, width: u8) -> Option<&T> {
        self.levels
            .iter()
            .find_map(|(len, nets)| nets.get(&(addr & K::mask(*len, width))))
    }
}

/// Whether `addr` lies in any of `nets`. For the per-peer source check, where a peer has a
/// handful of prefixes and a linear scan beats any index.
#[inline]
pub fn contains_any(nets: &[IpNet], addr: IpAddr) -> bool {
    nets.iter().any(|n| net_contains(n, addr))
}

/// Whether `net` holds `addr` (an address of the other family never): `IpNet::contains` in a
/// few instructions, for the per-packet checks.
#[inline]
pub fn net_contains(net: &IpNet, addr: IpAddr) -> bool {
    match (net, addr) {
        (IpNet::V4(n), IpAddr::V4(a)) => {
            let diff = u32::from(a) ^ u32::from(n.addr());
            n.prefix_len() == 0 || diff >> (32 - u32::from(n.prefix_len())) == 0
        }
        (IpNet::V6(n), IpAddr::V6(a)) => {
            let diff = u128::from(a) ^ u128::from(n.addr());
            n.prefix_len() == 0 || diff >> (128 - u32::from(n.prefix_len())) == 0
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }
    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    proptest::proptest! {
        #[test]
        fn net_contains_agrees_with_ipnet(
            bits in proptest::prelude::any::<u128>(),
            other in proptest::prelude::any::<u128>(),
            len in 0u8..=128,
            v4 in proptest::prelude::any::<bool>(),
            near in proptest::prelude::any::<bool>(),
        ) {
            // `near`: an address sharing the prefix's top bits, so both outcomes are drawn.
            let (net, addr): (IpNet, IpAddr) = if v4 {
                let (len, bits, other) = (len % 33, bits as u32, other as u32);
                let a = if near { bits ^ other.checked_shr(u32::from(len)).unwrap_or(0) } else { other };
                (ipnet::Ipv4Net::new(bits.into(), len).unwrap().into(), IpAddr::V4(a.into()))
            } else {
                let a = if near { bits ^ other.checked_shr(u32::from(len)).unwrap_or(0) } else { other };
                (ipnet::Ipv6Net::new(bits.into(), len).unwrap().into(), IpAddr::V6(a.into()))
            };
            proptest::prop_assert_eq!(net_contains(&net, addr), net.contains(&addr));
            let other_family: IpAddr = if v4 { "::1".parse().unwrap() } else { "10.0.0.1".parse().unwrap() };
            proptest::prop_assert!(!net_contains(&net, other_family));
        }
    }

    #[test]
    fn longest_prefix_wins() {
        let t = AllowedIps::build([
            (net("10.42.0.0/16"), 'a'),
            (net("10.42.2.0/24"), 'b'),
            (net("10.42.2.128/25"), 'c'),
            (net("0.0.0.0/0"), 'd'),
        ]);
        assert_eq!(t.lookup(ip("10.42.1.9")), Some(&'a'));
        assert_eq!(t.lookup(ip("10.42.2.9")), Some(&'b'));
        assert_eq!(t.lookup(ip("10.42.2.200")), Some(&'c'));
        assert_eq!(t.lookup(ip("192.0.2.1")), Some(&'d'));
    }

    #[test]
    fn misses_and_families_are_separate() {
        let t = AllowedIps::build([(net("10.42.2.0/24"), 1), (net("fd00::/64"), 2)]);
        assert_eq!(t.lookup(ip("10.42.3.1")), None);
        assert_eq!(t.lookup(ip("fd00::5")), Some(&2));
        assert_eq!(t.lookup(ip("fd01::5")), None);
        assert_eq!(t.lookup(ip("::ffff:10.42.2.1")), None);
        assert!(AllowedIps::<u8>::build([]).is_empty());
    }

    #[test]
    fn host_routes_and_full_length() {
        let t = AllowedIps::build([(net("10.0.0.1/32"), 1), (net("::1/128"), 2)]);
        assert_eq!(t.lookup(ip("10.0.0.1")), Some(&1));
        assert_eq!(t.lookup(ip("10.0.0.2")), None);
        assert_eq!(t.lookup(ip("::1")), Some(&2));
    }

    #[test]
    fn source_check() {
        let nets = [net("10.42.2.0/24")];
        assert!(contains_any(&nets, ip("10.42.2.7")));
        assert!(!contains_any(&nets, ip("10.99.0.1")));
        assert!(!contains_any(&[], ip("10.42.2.7")));
    }
}
