//! Addresses into prefixes, the form a [`FilterRule`](wgmesh_config::netmap::FilterRule)'s sides
//! take: [`merge`] turns sorted addresses, [`merge_spans`] ranges of addresses ([`Span`]), into
//! the fewest sorted, disjoint prefixes that hold exactly them; [`without`] is a subnet minus
//! some of its addresses, as ranges.
//!
//! Pure, no I/O.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

/// An inclusive range of addresses of one family. Orders IPv4 before IPv6, then by first
/// address, as `IpAddr` does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Span {
    v6: bool,
    lo: u128,
    hi: u128,
}

impl Span {
    /// The one address `addr`.
    pub(crate) fn addr(addr: IpAddr) -> Self {
        let (v6, n) = number(addr);
        Self { v6, lo: n, hi: n }
    }

    /// Every address of `net`.
    pub(crate) fn net(net: IpNet) -> Self {
        let (v6, lo) = number(net.network());
        let (_, hi) = number(net.broadcast());
        Self { v6, lo, hi }
    }
}

/// The fewest prefixes holding exactly `addrs` (sorted ascending, without repeats), sorted and
/// disjoint. Runs of consecutive addresses become aligned blocks: 10.0.0.4 to 10.0.0.7 is
/// 10.0.0.4/30.
pub(crate) fn merge(addrs: impl IntoIterator<Item = IpAddr>) -> Vec<IpNet> {
    merge_spans(addrs.into_iter().map(Span::addr).collect())
}

/// The fewest prefixes holding exactly the addresses of `spans` (in any order; they may overlap
/// or touch), sorted and disjoint.
pub(crate) fn merge_spans(mut spans: Vec<Span>) -> Vec<IpNet> {
    spans.sort_unstable();
    let mut out = Vec::new();
    let mut run: Option<Span> = None;
    for s in spans {
        run = match run {
            // Overlapping or touching (`hi + 1 >= s.lo`) spans of one family join.
            Some(r) if r.v6 == s.v6 && r.hi.checked_add(1).is_none_or(|next| next >= s.lo) => {
                Some(Span {
                    hi: r.hi.max(s.hi),
                    ..r
                })
            }
            Some(r) => {
                push_range(&mut out, r.v6, r.lo, r.hi);
                Some(s)
            }
            None => Some(s),
        };
    }
    if let Some(r) = run {
        push_range(&mut out, r.v6, r.lo, r.hi);
    }
    out
}

/// The addresses of `net` but `holes` (ascending; those outside `net` are ignored), as the
/// ranges between them, ascending.
pub(crate) fn without(net: IpNet, holes: impl IntoIterator<Item = IpAddr>) -> Vec<Span> {
    let whole = Span::net(net);
    let mut out = Vec::new();
    // The first address not yet given or removed; `None` once past the end of `net`.
    let mut next = Some(whole.lo);
    for hole in holes {
        let (v6, n) = number(hole);
        let Some(from) = next else { break };
        if v6 != whole.v6 || n < from || n > whole.hi {
            continue;
        }
        if n > from {
            out.push(Span {
                hi: n - 1,
                lo: from,
                ..whole
            });
        }
        next = n.checked_add(1).filter(|&m| m <= whole.hi);
    }
    if let Some(from) = next {
        out.push(Span { lo: from, ..whole });
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

    #[test]
    fn a_subnet_without_some_addresses() {
        let net = |s: &str| -> IpNet { s.parse().unwrap() };
        let show = |spans: Vec<Span>| -> Vec<String> {
            merge_spans(spans).iter().map(ToString::to_string).collect()
        };
        let a = |s: &str| -> IpAddr { s.parse().unwrap() };
        assert_eq!(show(without(net("10.0.0.0/30"), [])), ["10.0.0.0/30"]);
        assert_eq!(
            show(without(
                net("10.0.0.0/24"),
                [a("10.0.0.0"), a("10.0.0.255")]
            )),
            [
                "10.0.0.1/32",
                "10.0.0.2/31",
                "10.0.0.4/30",
                "10.0.0.8/29",
                "10.0.0.16/28",
                "10.0.0.32/27",
                "10.0.0.64/26",
                "10.0.0.128/26",
                "10.0.0.192/27",
                "10.0.0.224/28",
                "10.0.0.240/29",
                "10.0.0.248/30",
                "10.0.0.252/31",
                "10.0.0.254/32"
            ]
        );
        // Holes outside the subnet, or of the other family, are ignored.
        assert_eq!(
            show(without(
                net("10.0.1.0/31"),
                [a("10.0.0.9"), a("10.0.1.1"), a("::1")]
            )),
            ["10.0.1.0/32"]
        );
        assert_eq!(
            show(without(net("10.0.1.0/32"), [a("10.0.1.0")])),
            Vec::<String>::new()
        );
        // The very last address of the family.
        assert_eq!(
            show(without(net("255.255.255.254/31"), [a("255.255.255.254")])),
            ["255.255.255.255/32"]
        );
        assert_eq!(
            show(without(net("fd00::/126"), [a("fd00::1")])),
            ["fd00::/128", "fd00::2/127"]
        );
        assert_eq!(show(without(net("::/0"), [a("::")])).len(), 128);
        // Spans that overlap or touch join.
        let spans = vec![
            Span::net(net("10.0.0.4/30")),
            Span::addr(a("10.0.0.3")),
            Span::net(net("10.0.0.0/29")),
            Span::addr(a("10.0.0.8")),
        ];
        assert_eq!(show(spans), ["10.0.0.0/29", "10.0.0.8/32"]);
    }

    proptest! {
        #[test]
        fn a_subnet_without_holes_holds_exactly_the_rest(
            holes in prop::collection::btree_set(0u32..64, 0..20),
            extra in prop::collection::btree_set(64u32..128, 0..10),
        ) {
            let addr = |n: u32| IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + n));
            let net: IpNet = "10.0.0.0/26".parse().unwrap();
            // Spans of the subnet's rest, and single addresses beyond it, merged together.
            let mut spans = without(net, holes.iter().map(|&n| addr(n)));
            spans.extend(extra.iter().map(|&n| Span::addr(addr(n))));
            let merged = merge_spans(spans);
            for n in 0u32..130 {
                let inside = if n < 64 { !holes.contains(&n) } else { extra.contains(&n) };
                prop_assert_eq!(
                    wgmesh_config::netmap::FilterRule::side_holds(&merged, addr(n)),
                    inside,
                    "{}", n
                );
            }
            for w in merged.windows(2) {
                prop_assert!(w[0] < w[1] && !w[0].contains(&w[1].network()));
                let siblings =
                    w[0].prefix_len() == w[1].prefix_len() && w[0].supernet() == w[1].supernet();
                prop_assert!(!siblings, "{} and {} could merge", w[0], w[1]);
            }
        }

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
