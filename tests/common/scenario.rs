//! Common topologies: N hosts on an underlay, each running an agent.

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use super::agent::{Agent, AgentSpec};
use super::netns::Netns;
use super::traffic::ping;
use super::{assert_eventually, Cluster};

/// A host namespace with its underlay address and its agent.
pub struct Host {
    pub ns: Netns,
    pub ip: Ipv4Addr,
    pub port: u16,
    pub agent: Arc<Agent>,
}

impl Host {
    /// "198.18.0.N:PORT".
    pub fn endpoint(&self) -> String {
        format!("{}:{}", self.ip, self.port)
    }

    /// Starts the agent (returns once its `status` answers; a joined agent's once it has a
    /// netmap).
    pub fn started(self) -> Self {
        self.agent.start();
        self
    }
}

/// One host to build: namespace tag, agent name, subnet, listen port.
pub struct HostDef<'a> {
    pub tag: &'a str,
    pub subnet: &'a str,
    pub port: u16,
}

/// Two IPv6 hosts, `a` (fd42:1::/64) and `b` (fd42:2::/64), both on port 51820; with
/// [`IPV6_PAIR_LINKS`], each has the other as its peer.
pub const IPV6_PAIR: [HostDef<'static>; 2] = [
    HostDef {
        tag: "a",
        subnet: "fd42:1::/64",
        port: 51820,
    },
    HostDef {
        tag: "b",
        subnet: "fd42:2::/64",
        port: 51820,
    },
];

/// The links of [`IPV6_PAIR`]: each host has the other as its peer.
pub const IPV6_PAIR_LINKS: [(usize, usize); 2] = [(0, 1), (1, 0)];

/// Builds hosts on a veth underlay (2 hosts) or a bridge (more), with agents whose
/// configs list the peers in `links`: `(i, j)` gives host i a `[[peer]]` for host j
/// (with j's endpoint). Agents are started in order and are ready on return.
pub fn hosts(c: &Cluster, defs: &[HostDef<'_>], links: &[(usize, usize)]) -> Vec<Host> {
    let hs = hosts_prepared(c, defs, links);
    for h in &hs {
        h.agent.start();
    }
    hs
}

/// Like [`hosts`], but the agents are configured and not started.
pub fn hosts_prepared(c: &Cluster, defs: &[HostDef<'_>], links: &[(usize, usize)]) -> Vec<Host> {
    let nss: Vec<Netns> = defs.iter().map(|d| c.netns(d.tag)).collect();
    let ips = if nss.len() == 2 {
        let (a, b) = c.veth_underlay(&nss[0], &nss[1]);
        vec![a, b]
    } else {
        c.bridge_underlay(&nss.iter().collect::<Vec<_>>())
    };
    let agents: Vec<Arc<Agent>> = defs
        .iter()
        .zip(&nss)
        .map(|(d, ns)| {
            c.agent_prepared(
                ns,
                AgentSpec::new(&format!("host-{}", d.tag), d.subnet, d.port),
            )
        })
        .collect();
    for (i, a) in agents.iter().enumerate() {
        let mut spec = a.spec();
        for &(_, j) in links.iter().filter(|l| l.0 == i) {
            let ep = format!("{}:{}", ips[j], defs[j].port);
            spec = spec.peer(agents[j].as_peer(Some(&ep)));
        }
        a.set_spec(spec);
    }
    nss.into_iter()
        .zip(ips)
        .zip(agents)
        .zip(defs)
        .map(|(((ns, ip), agent), d)| Host {
            ns,
            ip,
            port: d.port,
            agent,
        })
        .collect()
}

/// Two hosts "a" (10.42.1.0/24) and "b" (10.42.2.0/24) that know each other.
pub fn two_hosts(c: &Cluster, port_a: u16, port_b: u16) -> (Host, Host) {
    two_hosts_offload(c, port_a, port_b, None)
}

/// Like [`two_hosts`], with `offload` written into both configs (None: the key is absent).
/// Hosts "a" (10.42.1.0/24) and "b" (10.42.2.0/24) that know each other, configured but not
/// started.
pub fn two_hosts_prepared(c: &Cluster, port_a: u16, port_b: u16) -> (Host, Host) {
    let mut v = hosts_prepared(
        c,
        &[
            HostDef {
                tag: "a",
                subnet: "10.42.1.0/24",
                port: port_a,
            },
            HostDef {
                tag: "b",
                subnet: "10.42.2.0/24",
                port: port_b,
            },
        ],
        &[(0, 1), (1, 0)],
    );
    let b = v.pop().unwrap();
    let a = v.pop().unwrap();
    (a, b)
}

/// Like [`two_hosts`], with `offload` set in both configs (None: the key is left out).
pub fn two_hosts_offload(
    c: &Cluster,
    port_a: u16,
    port_b: u16,
    offload: Option<bool>,
) -> (Host, Host) {
    let (a, b) = two_hosts_prepared(c, port_a, port_b);
    for h in [&a, &b] {
        let mut spec = h.agent.spec();
        spec.offload = offload;
        h.agent.set_spec(spec);
        h.agent.start();
    }
    (a, b)
}

/// Creates a workload namespace and attaches it to `host`'s agent; returns (netns, ip).
pub fn workload(c: &Cluster, host: &Host, tag: &str) -> (Netns, String) {
    let w = c.netns(tag);
    let cidr = host.agent.attach(&w);
    let ip = super::ip_of(&cidr).to_string();
    let (family, inet) = if cidr.contains(':') {
        ("-6", "inet6")
    } else {
        ("-4", "inet")
    };
    let in_ns = w.run(&["ip", "-o", family, "addr", "show"]);
    assert!(
        in_ns.contains(&format!("{inet} {cidr}")),
        "attach printed {cidr} but the workload namespace has:\n{in_ns}"
    );
    (w, ip)
}

/// A workload `w{i}` attached to each host `i`; (netns, ip) in the order of `hosts`.
pub fn workloads(c: &Cluster, hosts: &[Host]) -> Vec<(Netns, String)> {
    hosts
        .iter()
        .enumerate()
        .map(|(i, h)| workload(c, h, &format!("w{i}")))
        .collect()
}

/// Waits until every workload pings every other (each pair within `timeout`).
pub fn assert_all_ping(wls: &[(Netns, String)], timeout: Duration) {
    for (i, (from, _)) in wls.iter().enumerate() {
        for (j, (_, to)) in wls.iter().enumerate() {
            if i != j {
                assert_pings(from, to, timeout);
            }
        }
    }
}

/// Waits until `from` can ping `to` (first packets may wait for a handshake).
pub fn assert_pings(from: &Netns, to: &str, timeout: Duration) {
    assert_eventually(
        timeout,
        &format!("ping from {} to {to}", from.name()),
        || ping(from, to),
    );
}

/// Asserts `status --json` of `agent` reports the offloads `on` (all of TUN offloads, UDP GSO
/// and UDP GRO) or off (none of them).
#[track_caller]
pub fn assert_offload_status(agent: &Agent, on: bool) {
    let st = agent.status();
    assert_eq!(
        st["offload"],
        serde_json::json!({"tun": on, "udp_gso": on, "udp_gro": on}),
        "agent in {} with offload {}: status --json reports other offloads: {st}",
        agent.ns.name(),
        if on { "on" } else { "off" }
    );
}
