//! Helpers for the forwarding and bridge tests: a namespace's forwarding-related sysctls, link
//! MACs and neighbour entries, counted ICMP echoes.

use std::collections::BTreeMap;

use super::netns::Netns;

/// Every `forwarding`, `accept_ra` and (where the kernel has it) `force_forwarding` setting of
/// `ns` (IPv4 and IPv6, every interface, `all`, `default`) and `ip_forward`, by path.
pub fn sysctls(ns: &Netns) -> BTreeMap<String, String> {
    let script = "grep -Hs . /proc/sys/net/ipv4/ip_forward /proc/sys/net/ipv4/conf/*/forwarding \
                  /proc/sys/net/ipv6/conf/*/forwarding /proc/sys/net/ipv6/conf/*/accept_ra \
                  /proc/sys/net/ipv6/conf/*/force_forwarding; true";
    ns.run(&["sh", "-c", script])
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.to_owned(), v.trim().to_owned()))
        .collect()
}

/// The entries of `after` for the interfaces (and `all`/`default`) of `before` that differ:
/// `(path, before, after)`. Interfaces only in `after` (the agent's own) are left out.
pub fn changed(
    before: &BTreeMap<String, String>,
    after: &BTreeMap<String, String>,
) -> Vec<(String, String, String)> {
    before
        .iter()
        .filter_map(|(k, v)| {
            let now = after.get(k).cloned().unwrap_or_else(|| "<gone>".into());
            (&now != v).then(|| (k.clone(), v.clone(), now))
        })
        .collect()
}

/// One sysctl of `ns`.
pub fn sysctl(ns: &Netns, path: &str) -> String {
    ns.run(&["cat", path]).trim().to_owned()
}

/// The MAC of link `ifname` in `ns`.
pub fn mac(ns: &Netns, ifname: &str) -> String {
    let out = ns.run(&["ip", "-o", "link", "show", "dev", ifname]);
    out.split_whitespace()
        .skip_while(|w| *w != "link/ether")
        .nth(1)
        .unwrap_or_else(|| panic!("no MAC for {ifname} in {}: {out}", ns.name()))
        .to_owned()
}

/// The MAC `ns` has in its neighbour table for `ip`, if any.
pub fn neighbour(ns: &Netns, ip: &str) -> Option<String> {
    let out = ns.run(&["ip", "neigh", "show", ip]);
    out.split_whitespace()
        .skip_while(|w| *w != "lladdr")
        .nth(1)
        .map(str::to_owned)
}

/// The names of the links whose master is `bridge` in `ns`.
pub fn bridge_ports(ns: &Netns, bridge: &str) -> Vec<String> {
    ns.run(&["ip", "-o", "link", "show", "master", bridge])
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n).to_owned())
        .collect()
}

/// ICMP echo requests `ns` has received (`Icmp: InEchos` of `/proc/net/snmp`).
pub fn icmp_in_echos(ns: &Netns) -> i64 {
    let counters = super::sweep::snmp(ns);
    *counters
        .get("Icmp.InEchos")
        .unwrap_or_else(|| panic!("no Icmp InEchos in {}: {counters:?}", ns.name()))
}
