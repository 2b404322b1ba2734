//! Helpers for the same-host tests: what the kernel of a host namespace says about the
//! same-host rule and table, a port's filters and isolation, the TUN device's counters, and a
//! workload faking another's address (with `arping`).

use super::netns::Netns;

/// The agent's TUN device and bridge in every test host.
pub const TUN: &str = "wgm0";
pub const BRIDGE: &str = "wgmbr0";

/// Whether `arping` (Habets' arping, Debian's `arping` package) is installed.
pub fn has_arping() -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join("arping").exists()))
        .unwrap_or(false)
}

/// Packets the kernel handed to the agent through `dev` (its `tx`) and the agent wrote back
/// (its `rx`): `(to_agent, from_agent)`.
pub fn tun_counters(ns: &Netns, dev: &str) -> (u64, u64) {
    let json = ns.run(&["ip", "-j", "-s", "link", "show", "dev", dev]);
    let v: serde_json::Value = serde_json::from_str(&json).expect("ip -j prints JSON");
    let stats = &v[0]["stats64"];
    let n = |dir: &str| {
        stats[dir]["packets"]
            .as_u64()
            .unwrap_or_else(|| panic!("{json}"))
    };
    (n("tx"), n("rx"))
}

/// `ip rule` lines of protocol 119, both families.
pub fn our_rules(ns: &Netns) -> Vec<String> {
    let mut rules: Vec<String> = ["-4", "-6"]
        .iter()
        .flat_map(|f| {
            ns.run(&["ip", f, "rule", "show"])
                .lines()
                .filter(|l| l.contains(" proto 119"))
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect();
    rules.sort();
    rules
}

/// `ip route show table 119` lines, both families.
pub fn table_119(ns: &Netns) -> Vec<String> {
    let mut routes: Vec<String> = ["-4", "-6"]
        .iter()
        .flat_map(|f| {
            // An IPv6 table that never held a route does not exist: none.
            let out = ns.exec(&["ip", f, "route", "show", "table", "119"]);
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .map(|l| l.trim_end().to_owned())
                .collect::<Vec<_>>()
        })
        .collect();
    routes.sort();
    routes
}

/// The ingress filters of `dev` (`tc filter show dev DEV ingress`), one string.
pub fn ingress_filters(ns: &Netns, dev: &str) -> String {
    ns.run(&["tc", "filter", "show", "dev", dev, "ingress"])
}

/// Whether the bridge port `dev` is isolated.
pub fn is_isolated(ns: &Netns, dev: &str) -> bool {
    ns.run(&["ip", "-d", "link", "show", "dev", dev])
        .contains("isolated on")
}

/// The host-side veth of the workload namespace `w` (as `host_ifname_for` names it).
pub fn host_ifname(w: &Netns) -> String {
    const FNV_OFFSET: u32 = 0x811c_9dc5;
    const FNV_PRIME: u32 = 0x0100_0193;
    let hash = w.name().bytes().fold(FNV_OFFSET, |hash, byte| {
        (hash ^ u32::from(byte)).wrapping_mul(FNV_PRIME)
    });
    format!("wgmv{hash:08x}")
}

/// Makes `attacker` claim `victim_ip` (an IPv4 address of its subnet, prefix `len`): adds it to
/// its `eth0` and announces it with gratuitous ARP requests and replies.
pub fn claim_by_arp(attacker: &Netns, victim_ip: &str, len: u8) {
    attacker.run(&[
        "ip",
        "addr",
        "add",
        &format!("{victim_ip}/{len}"),
        "dev",
        "eth0",
    ]);
    for mode in [&["-U"][..], &["-U", "-P"]] {
        let mut args = vec![
            "arping", "-q", "-c", "3", "-w", "1", "-i", "eth0", "-S", victim_ip,
        ];
        args.extend_from_slice(mode);
        args.push(victim_ip);
        // arping exits 1 when nobody answers, which is what should happen.
        let _ = attacker.exec(&args);
    }
}
