//! [`merge`]: sorted addresses into the fewest sorted, disjoint prefixes that hold exactly them,
//! the form a [`FilterRule`](wgmesh_config::netmap::FilterRule)'s sides take.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

/// The fewest prefixes holding exactly `addrs` (sorted ascending, without repeats), sorted and
/// disjoint. Runs of consecutive addresses become aligned blocks: 10.0.0.4 to 10.0.0.7 is
/// 10.0.0.4/30.
pub(crate) fn merge(addrs: impl IntoIterator<Item = IpAddr>) -> Vec<IpNet> {
    let mut out = Vec::new();
    let mut run: Option<(bool, u128, u128)> = None;
    for addr in addrs {
        let (v6, n) = number(addr);
        run = match run {
            Some((rv6, lo, hi)) if rv6 == v6 && hi.checked_add(1) == Some(n) => Some((v6, lo, n)),
            Some((rv6, lo, hi)) => {
                push_range(&mut out, rv6, lo, hi);
                Some((v6, n, n))
            }
            None => Some((v6, n, n)),
        };
    }
    if let Some((v6, lo, hi)) = run {
        push_range(&mut out, v6, lo, hi);
    }
    out
}

fn number(addr: IpAddr) -> (bool, u128) {
    match addr {
        IpAddr::V4(a) => (false, u128::from(u32::from(a))),
        IpAddr::V6(a) => (true, u128::from(a)),
    }
}

/// Appends the fewest aligned blocks covering `lo..=hi`.
fn push_range(out: &mut Vec<IpNet>, v6: bool, mut lo: u128, hi: u128) {
    let bits: u32 = if v6 { 128 } else { 32 };
    loop {
        // The largest block that starts at `lo` (alignment) and ends by `hi` (fit).
        let align = if lo == 0 { bits } else { lo.trailing_zeros() };
        let span = hi - lo;
        let fit = match span.checked_add(1) {
            Some(count) => 127 - count.leading_zeros(),
            None => 128,
        };
        let k = align.min(fit).min(bits);
        out.push(prefix(v6, lo, (bits - k) as u8));
        if k == 128 {
            return;
        }
        let size = 1u128 << k;
        if span < size {
            return;
        }
        lo += size;
    }
}

fn prefix(v6: bool, n: u128, len: u8) -> IpNet {
    let net = if v6 {
        IpNet::new(IpAddr::V6(Ipv6Addr::from(n)), len)
    } else {
        // `n` came from a u32 and blocks never pass the range's end.
        let addr = u32::try_from(n).unwrap_or(u32::MAX);
        IpNet::new(IpAddr::V4(Ipv4Addr::from(addr)), len)
    };
    net.expect("prefix lengths are at most the address width")
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use proptest::prelude::*;

    use super::*;

    fn nets(addrs: &[&str]) -> Vec<String> {
        let addrs: BTreeSet<IpAddr> = addrs.iter().map(|a| a.parse().unwrap()).collect();
        merge(addrs).iter().map(ToString::to_string).collect()
    }

    #[test]
    fn runs_become_aligned_blocks() {
        assert_eq!(nets(&[]), Vec::<String>::new());
        assert_eq!(nets(&["10.0.0.5"]), ["10.0.0.5/32"]);
        assert_eq!(
            nets(&["10.0.0.4", "10.0.0.5", "10.0.0.6", "10.0.0.7"]),
            ["10.0.0.4/30"]
        );
        assert_eq!(
            nets(&["10.0.0.3", "10.0.0.4", "10.0.0.5", "10.0.0.9"]),
            ["10.0.0.3/32", "10.0.0.4/31", "10.0.0.9/32"]
        );
        assert_eq!(nets(&["0.0.0.0", "0.0.0.1"]), ["0.0.0.0/31"]);
        assert_eq!(nets(&["255.255.255.255"]), ["255.255.255.255/32"]);
        assert_eq!(
            nets(&["fd00::1", "fd00::2", "fd00::3"]),
            ["fd00::1/128", "fd00::2/127"]
        );
        // The two families never merge, and IPv4 sorts first.
        assert_eq!(
            nets(&["::", "255.255.255.255"]),
            ["255.255.255.255/32", "::/128"]
        );
    }

    proptest! {
        #[test]
        fn merged_prefixes_hold_exactly_the_addresses_and_are_fewest(
            set in prop::collection::btree_set(0u32..64, 0..40),
        ) {
            let addrs: Vec<IpAddr> =
                set.iter().map(|n| IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + n))).collect();
            let merged = merge(addrs.iter().copied());
            for n in 0u32..64 {
                let a = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + n));
                prop_assert_eq!(
                    wgmesh_config::netmap::FilterRule::side_holds(&merged, a),
                    set.contains(&n)
                );
            }
            for w in merged.windows(2) {
                prop_assert!(w[0] < w[1] && !w[0].contains(&w[1].network()));
            }
            // Fewest: no two neighbours are the halves of one prefix.
            for w in merged.windows(2) {
                let siblings =
                    w[0].prefix_len() == w[1].prefix_len() && w[0].supernet() == w[1].supernet();
                prop_assert!(!siblings, "{} and {} could merge", w[0], w[1]);
            }
        }
    }
}
