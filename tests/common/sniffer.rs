//! A sniffer on the underlay for the "no cleartext, ever" tests: a namespace plugged into the
//! hosts' underlay bridge that every host's default route points at, so that anything a host
//! sends outside the tunnel towards an address it has no better route for lands there. Captures
//! run on the sniffer's side and on every host's underlay interface (segmented, so they show
//! what a wire would carry); [`Watch::finish`] checks that no frame carries an overlay address
//! (IPv4 or IPv6) and that every IPv4 packet between two hosts is a WireGuard message between
//! their ports. The underlay is IPv4 (198.18.0.n) with IPv6 beside it (2001:2::n), so that an
//! IPv6 overlay packet that left the tunnel would follow the IPv6 default route to the sniffer.
//!
//! Also here: a static pair of hosts on a bridge (the control-mode pair comes from
//! `control::control_and_joined_hosts`), and [`Load`], pings and a UDP stream between two
//! workloads that keep running while the test breaks things.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::time::Duration;

use super::agent::AgentSpec;
use super::control::host_ip;
use super::netns::{Netns, Proc};
use super::pcap::{self, Capture, Frame};
use super::scenario::Host;
use super::{wait_until, Bridge, Cluster, UNDERLAY_IF};

/// The sniffer's underlay address: every host's default gateway.
pub const SNIFFER_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 254);

/// The sniffer's IPv6 underlay address (in 2001:2::/48, the IPv6 benchmarking range), every
/// host's IPv6 default gateway; host `n` has `2001:2::n`.
pub const SNIFFER_IP6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 0xfe);

/// The overlay: every test address of workloads and subnets lies in 10.0.0.0/8 (IPv4) or
/// fd00::/8 (IPv6).
pub const OVERLAY: (Ipv4Addr, u8) = (Ipv4Addr::new(10, 0, 0, 0), 8);

/// The sniffer namespace on the underlay bridge.
pub struct Sniffer {
    pub ns: Netns,
}

impl Sniffer {
    /// Plugs a sniffer into `bridge` at [`SNIFFER_IP`] and [`SNIFFER_IP6`] and makes it the
    /// default gateway of every host in `hosts`, for both families (each host gets the IPv6
    /// underlay address `2001:2::n` for its `198.18.0.n`). It forwards nothing (a new namespace
    /// has forwarding off).
    pub fn plug(c: &Cluster, bridge: &Bridge, hosts: &[&Host]) -> Self {
        let ns = c.netns("snf");
        bridge.plug(&ns, SNIFFER_IP);
        add_ip6(&ns, SNIFFER_IP6);
        for h in hosts {
            let n = h.ip.octets()[3];
            add_ip6(&h.ns, Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, n.into()));
            h.ns.run(&[
                "ip",
                "route",
                "replace",
                "default",
                "via",
                &SNIFFER_IP.to_string(),
            ]);
            let gw6 = SNIFFER_IP6.to_string();
            h.ns.run(&["ip", "-6", "route", "replace", "default", "via", &gw6]);
        }
        Self { ns }
    }
}

/// Running captures: the sniffer's side, and each host's underlay.
pub struct Watch {
    sniffer: Capture,
    hosts: Vec<(String, Ipv4Addr, u16, Capture)>,
}

impl Watch {
    /// Starts capturing on the sniffer and on each host's `ul0` (after making the kernel
    /// segment GSO batches before `ul0`, so every datagram is seen as the wire carries it).
    pub fn start(c: &Cluster, sniffer: &Sniffer, hosts: &[&Host]) -> Self {
        let hosts = hosts
            .iter()
            .map(|h| {
                c.force_segmentation(&h.ns);
                let cap = Capture::start(&h.ns, UNDERLAY_IF);
                (h.ns.name().to_owned(), h.ip, h.port, cap)
            })
            .collect();
        Self {
            sniffer: Capture::start(&sniffer.ns, UNDERLAY_IF),
            hosts,
        }
    }

    /// Stops every capture and asserts what the module documentation says; `what` names the
    /// scenario in the failure. Returns the number of WireGuard data messages seen between the
    /// hosts (so a test can check that traffic flowed at all).
    pub fn finish(self, what: &str) -> usize {
        let mut errors = Vec::new();
        let frames = parse(self.sniffer.stop());
        errors.extend(overlay_frames("sniffer", &frames));
        let ends: Vec<(Ipv4Addr, u16)> = self.hosts.iter().map(|h| (h.1, h.2)).collect();
        let mut data = 0;
        for (name, ip, port, cap) in self.hosts {
            let frames = parse(cap.stop());
            errors.extend(overlay_frames(&name, &frames));
            for &other in ends.iter().filter(|e| e.0 != ip) {
                match pcap::check_wireguard_only(&frames, (ip, port), other) {
                    Ok(sum) => {
                        eprintln!("{what}: {name} ({} frames): {sum:?}", frames.len());
                        data += sum.data;
                    }
                    Err(e) => errors.extend(e.into_iter().map(|e| format!("{name}: {e}"))),
                }
            }
        }
        assert!(
            errors.is_empty(),
            "{what}: the underlay carried cleartext or non-WireGuard packets:\n{}",
            errors[..errors.len().min(20)].join("\n")
        );
        data
    }
}

/// Adds `ip`/64 to the underlay interface of `ns`, usable at once (no duplicate detection).
fn add_ip6(ns: &Netns, ip: Ipv6Addr) {
    let cidr = format!("{ip}/64");
    ns.run(&[
        "ip",
        "-6",
        "addr",
        "add",
        &cidr,
        "dev",
        UNDERLAY_IF,
        "nodad",
    ]);
}

fn parse(bytes: Vec<u8>) -> Vec<Frame> {
    pcap::parse(&bytes).expect("parse capture")
}

/// Frames whose source or destination is an overlay address (IPv4 or IPv6).
fn overlay_frames(where_: &str, frames: &[Frame]) -> Vec<String> {
    let in_overlay = |a: Ipv4Addr| {
        let mask = u32::MAX << (32 - OVERLAY.1);
        u32::from(a) & mask == u32::from(OVERLAY.0)
    };
    // fd00::/8
    let in_overlay6 = |a: Ipv6Addr| a.octets()[0] == 0xfd;
    frames
        .iter()
        .enumerate()
        .filter_map(|(i, f)| {
            let (src, dst, protocol) = match (&f.ipv4, &f.ipv6) {
                (Some(ip), _) if in_overlay(ip.src) || in_overlay(ip.dst) => {
                    (ip.src.to_string(), ip.dst.to_string(), ip.protocol)
                }
                (_, Some(ip)) if in_overlay6(ip.src) || in_overlay6(ip.dst) => {
                    (ip.src.to_string(), ip.dst.to_string(), ip.next_header)
                }
                _ => return None,
            };
            Some(format!(
                "{where_}: frame {i}: overlay packet in the clear: {src} -> {dst} protocol {protocol}"
            ))
        })
        .collect()
}

/// Hosts "a" (10.42.1.0/24, 198.18.0.1) and "b" (10.42.2.0/24, 198.18.0.2) on a fresh bridge,
/// static peers of each other, configured but not started.
pub fn static_pair_on_bridge(c: &Cluster) -> (Bridge, Host, Host) {
    static_pair_with_subnets(c, ["10.42.1.0/24", "10.42.2.0/24"])
}

/// Like [`static_pair_on_bridge`], with the overlay subnets `subnets` (both IPv4, in
/// 10.0.0.0/8, or both IPv6, in fd00::/8: the cluster CIDR the agents get by default).
pub fn static_pair_with_subnets(c: &Cluster, subnets: [&str; 2]) -> (Bridge, Host, Host) {
    let bridge = c.bridge();
    let make = |tag: &str, n: u8, subnet: &str| {
        let ns = c.netns(tag);
        bridge.plug(&ns, host_ip(n));
        let agent = c.agent_prepared(&ns, AgentSpec::new(&format!("host-{tag}"), subnet, 51820));
        Host {
            ns,
            ip: host_ip(n),
            port: 51820,
            agent,
        }
    };
    let a = make("a", 1, subnets[0]);
    let b = make("b", 2, subnets[1]);
    for (h, o) in [(&a, &b), (&b, &a)] {
        h.agent
            .set_spec(h.agent.spec().peer(o.agent.as_peer(Some(&o.endpoint()))));
    }
    (bridge, a, b)
}

/// Traffic from one workload to another that keeps running until dropped: a ping every 20 ms,
/// large pings every 10 ms, and (with [`Load::stream`]) a 4 Mbit/s UDP stream (iperf3).
pub struct Load {
    procs: Vec<Proc>,
    dir: Arc<tempfile::TempDir>,
}

impl Load {
    /// Pings `to_ip` from `from`, answered or not.
    pub fn pings(from: &Netns, to_ip: &str) -> Self {
        let dir = Arc::new(
            tempfile::Builder::new()
                .prefix("wgm-load")
                .tempdir()
                .expect("tempdir"),
        );
        let log = |n: &str| dir.path().join(n);
        let procs = vec![
            from.spawn(&["ping", "-n", "-i", "0.02", to_ip], &[], &log("ping.log")),
            from.spawn(
                &["ping", "-n", "-i", "0.01", "-s", "1300", to_ip],
                &[],
                &log("ping-large.log"),
            ),
        ];
        Self { procs, dir }
    }

    /// [`Load::pings`], and a UDP stream from `from` to an iperf3 server started in `to` (at
    /// `to_ip`). Returns once the server has received part of the stream, so start it while
    /// the tunnel works; panics if that takes longer than 10 s.
    pub fn stream(from: &Netns, to: &Netns, to_ip: &str) -> Self {
        let mut load = Self::pings(from, to_ip);
        let log = |n: &str| load.dir.path().join(n);
        let mut server = to.spawn(
            &["iperf3", "-s", "-p", "5201", "--forceflush"],
            &[],
            &log("iperf3-s.log"),
        );
        let listening = wait_until(Duration::from_secs(10), || {
            server.log().contains("listening") || !server.is_running()
        });
        assert!(
            listening && server.is_running(),
            "the iperf3 server in {} did not start: {}",
            to.name(),
            server.log()
        );
        let mut client = from.spawn(
            &[
                "iperf3",
                "-c",
                to_ip,
                "-p",
                "5201",
                "-u",
                "-b",
                "4M",
                "-l",
                "1200",
                "-t",
                "600",
                "--forceflush",
            ],
            &[],
            &log("iperf3-c.log"),
        );
        let streaming = wait_until(Duration::from_secs(10), || {
            received_some(&server.log()) || !client.is_running()
        });
        assert!(
            streaming && client.is_running(),
            "the UDP stream from {} to {to_ip} does not arrive:\nclient: {}\nserver: {}",
            from.name(),
            client.log(),
            server.log()
        );
        load.procs.extend([server, client]);
        load
    }
}

/// Whether an iperf3 server's log reports an interval in which it received data (`[  5]
/// 0.00-1.00   sec   489 KBytes  4.00 Mbits/sec ...`, not `0.00 Bytes`).
pub fn received_some(log: &str) -> bool {
    log.lines().any(|l| {
        l.starts_with('[')
            && !l.starts_with("[ ID]")
            && l.contains(" sec ")
            && l.contains("bits/sec")
            && !l.contains(" 0.00 Bytes")
    })
}
