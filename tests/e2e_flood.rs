//! Floods that must not cut a host off (issue 9, item 4, data path):
//!
//! - a flood of valid-MAC1 handshake initiations from random keys, from a few addresses (four)
//!   on the underlay, at a host while two real peers restart and handshake with it again: their
//!   handshakes complete within a few seconds, their traffic keeps flowing, and the host's
//!   `status` shows the flood dropped by its per-source limiter (only each source's share,
//!   about 20 a second, ever reaches the handshake thread);
//! - TCP with an MSS of 88 through the tunnel (TSO super-packets of 700 segments): `iperf3 -M 88`
//!   completes, no TUN read is dropped, and a ping every 10 ms beside it loses nothing and
//!   does not stall.
//!
//! How a broken limiter shows here: the flood fills the handshake queue and spends the host's
//! handshake budget, so a restarted peer's initiation is dropped or answered with a cookie and
//! its pings fail for 5 s or more, or the `unknown_peer` count (flood initiations that got as far
//! as identifying their sender) grows with the flood instead of with the clock. A broken split
//! drops super-packets (iperf3 stalls or reports retransmissions with no throughput) or stalls
//! egress (a ping's round trip of 20 ms or more).

mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use common::flood::{initiations, ping_run, Flood};
use common::scenario::{assert_pings, two_hosts, workload, HostDef};
use common::spoof::SpoofFlood;
use common::*;

/// The per-source share (overlay/src/peers/limiter.rs): burst and rate.
const BURST: u64 = 10;
const PER_SECOND: u64 = 20;
/// Handshake messages without a cookie the host queues a second, and at once
/// (overlay/src/datapath/rx.rs).
const HOST_BUDGET: u64 = 100;

/// The flood takes a core for itself; the latency test must not run beside it.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

#[test]
fn initiation_flood_from_a_few_addresses_does_not_stop_real_peers_handshakes() {
    let _alone = one_at_a_time();
    let Some(c) = Cluster::new("initiation_flood_from_a_few_addresses") else {
        return;
    };
    let defs = [
        HostDef {
            tag: "a",
            subnet: "10.42.1.0/24",
            port: 51820,
        },
        HostDef {
            tag: "b",
            subnet: "10.42.2.0/24",
            port: 51821,
        },
        HostDef {
            tag: "c",
            subnet: "10.42.3.0/24",
            port: 51822,
        },
        // The flooder: a namespace on the same underlay, with no agent.
        HostDef {
            tag: "f",
            subnet: "10.42.4.0/24",
            port: 51823,
        },
    ];
    let hs = hosts_without_last_agent(&c, &defs);
    let (a, b, cc, f) = (&hs[0], &hs[1], &hs[2], &hs[3]);
    let (wa, ipa) = workload(&c, a, "wa");
    let (wb, ipb) = workload(&c, b, "wb");
    let (wc, ipc) = workload(&c, cc, "wc");
    assert_pings(&wa, &ipb, Duration::from_secs(15));
    assert_pings(&wa, &ipc, Duration::from_secs(15));

    // A few source addresses: the flooder's own and three more on its underlay interface.
    let mut sources = vec![f.ip];
    for last in [40u8, 41, 42] {
        let ip = Ipv4Addr::new(198, 18, 0, last);
        f.ns.run(&["ip", "addr", "add", &format!("{ip}/24"), "dev", UNDERLAY_IF]);
        sources.push(ip);
    }
    let target: SocketAddr = a.endpoint().parse().unwrap();
    let flood = Flood::start(
        &f.ns,
        &sources,
        target,
        initiations(a.agent.public_key(), 64),
    );
    let flood_start = Instant::now();
    assert_eventually(Duration::from_secs(5), "the flood going", || {
        flood.sent() > 20_000
    });

    // Both peers start over (new sessions, new handshakes with a), one after the other, while
    // the flood goes on.
    for (peer, w, ip_peer) in [(b, &wb, &ipb), (cc, &wc, &ipc)] {
        peer.agent.kill9();
        peer.agent.restart();
        let started = Instant::now();
        assert_eventually(
            Duration::from_secs(4),
            &format!("{} handshaking with a during the flood", peer.ns.name()),
            || ping(&wa, ip_peer) && ping(w, &ipa),
        );
        eprintln!(
            "{} back {:?} after its restart",
            peer.ns.name(),
            started.elapsed()
        );
    }
    // Traffic keeps flowing to both, at once, under the flood.
    let from = &wa;
    std::thread::scope(|s| {
        let runs = [&ipb, &ipc].map(|ip| s.spawn(move || ping_run(from, ip, 50, "0.05")));
        for (r, ip) in runs.into_iter().zip([&ipb, &ipc]) {
            let r = r.join().expect("ping");
            assert!(
                r.received + 2 >= r.transmitted,
                "ping wa -> {ip} during the flood lost too much: {}",
                r.summary()
            );
        }
    });

    let seconds = flood_start.elapsed().as_secs_f64();
    let sent = flood.stop();
    let dropped = a.agent.status()["dropped"].clone();
    let limited = counter(&dropped, "handshake_rate_limited");
    let unknown = counter(&dropped, "unknown_peer");
    eprintln!("flood: {sent} initiations in {seconds:.1} s; host a dropped: {dropped}");
    // Every flood initiation is refused; only the sources' shares got as far as the handshake
    // thread (refused there as an unknown key); the rest was dropped by the limiter.
    // Under load (cookies, overlay/src/datapath/rx.rs) no message without a cookie is queued
    // beyond the host's budget: the flood's share of the handshake thread is that budget.
    let share = HOST_BUDGET + (HOST_BUDGET as f64 * (seconds + 1.0)) as u64;
    assert!(
        unknown <= share,
        "{unknown} flood initiations reached the handshake thread in {seconds:.1} s (share {share})"
    );
    assert!(
        limited
            + unknown
            + counter(&dropped, "handshake_queue_full")
            + counter(&dropped, "handshake_under_load")
            >= sent * 9 / 10,
        "host a saw only {limited} + {unknown} of {sent} flood initiations"
    );
    assert!(limited > 10 * unknown, "{dropped}");
}

/// Hosts on a bridge underlay where host 0 knows every other but the last and they know it;
/// the last host's agent is configured but never started (it is the flooder's namespace).
fn hosts_without_last_agent(c: &Cluster, defs: &[HostDef<'_>]) -> Vec<scenario::Host> {
    let links: Vec<(usize, usize)> = (1..defs.len() - 1).flat_map(|i| [(0, i), (i, 0)]).collect();
    let hs = scenario::hosts_prepared(c, defs, &links);
    for h in &hs[..defs.len() - 1] {
        h.agent.start();
    }
    hs
}

#[test]
fn iperf3_with_mss_88_completes_without_stalling_a_parallel_ping() {
    let _alone = one_at_a_time();
    let Some(c) = Cluster::new("iperf3_with_mss_88") else {
        return;
    };
    let (a, b) = two_hosts(&c, 51820, 51821);
    let (wa, _ipa) = workload(&c, &a, "wa");
    let (wb, ipb) = workload(&c, &b, "wb");
    assert_pings(&wa, &ipb, Duration::from_secs(15));

    let log = b.agent.dir().join("iperf3-server.log");
    let _server = wb.spawn(
        &[
            "iperf3",
            "-s",
            "-1",
            "--forceflush",
            "-B",
            &ipb,
            "-p",
            "5201",
        ],
        &[],
        &log,
    );
    assert_eventually(Duration::from_secs(5), "iperf3 server listening", || {
        std::fs::read_to_string(&log).is_ok_and(|l| l.contains("listening"))
    });
    // A 32 KB window keeps the stream's own queue (bufferbloat: the TUN queue holds what the
    // window lets out) under a few milliseconds at debug-build speed, and still makes the
    // kernel hand over super-packets of a few hundred 88-byte segments.
    let (iperf, ping) = std::thread::scope(|s| {
        let iperf = s.spawn(|| {
            wa.exec(&[
                "iperf3", "-c", &ipb, "-p", "5201", "-M", "88", "-w", "32K", "-t", "6", "-J",
            ])
        });
        // Start the ping once the stream is going, end it before the stream does.
        std::thread::sleep(Duration::from_millis(500));
        let ping = ping_run(&wa, &ipb, 400, "0.01");
        (iperf.join().expect("iperf3"), ping)
    });
    let out = String::from_utf8_lossy(&iperf.stdout);
    let report: serde_json::Value = serde_json::from_str(&out)
        .unwrap_or_else(|e| panic!("iperf3 -J printed no JSON ({e}): {out}"));
    assert!(
        iperf.status.success() && report.get("error").is_none(),
        "iperf3 -M 88 failed: {out}"
    );
    let received = report["end"]["sum_received"]["bytes"].as_u64().unwrap_or(0);
    let bps = report["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .unwrap_or(0.0);
    let mss = report["start"]["tcp_mss"].as_u64().unwrap_or(0);
    let retransmits = &report["end"]["sum_sent"]["retransmits"];
    eprintln!(
        "iperf3 -M 88: {received} bytes, {:.1} Mbit/s, mss {mss}, {retransmits} retransmits; \
         ping: {}",
        bps / 1e6,
        ping.summary()
    );
    assert!(received > 0 && bps > 0.0, "no throughput: {out}");
    assert!(
        mss > 0 && mss <= 88,
        "the stream did not use the small MSS: {mss}"
    );
    // Segments dropped while splitting come back as retransmissions (tens of thousands when
    // every super-packet of more than 128 segments was dropped); a few come from queues.
    let segments = received / 88;
    let retransmits = retransmits.as_u64().unwrap_or(u64::MAX);
    assert!(
        retransmits <= segments / 100,
        "{retransmits} retransmissions for {segments} segments: super-packets were dropped"
    );
    assert_eq!(
        ping.received,
        ping.transmitted,
        "ping beside iperf3 -M 88 lost packets: {}",
        ping.summary()
    );
    // A stalled egress (the old 20 ms pause after each super-packet it could not split, every
    // time the window grew past 128 segments) holds a share of the replies 20 ms or more; a
    // loaded 2-core CI machine alone puts a few replies past 15 ms, so the bound is on the 90th
    // percentile, with a loose one on the worst.
    assert!(
        ping.quantile_ms(0.9) < 15.0 && ping.max_ms() < 200.0,
        "ping beside iperf3 -M 88 stalled: {}",
        ping.summary()
    );
    let st = a.agent.status();
    assert_eq!(
        st["dropped"]["malformed"], 0,
        "host a dropped TUN reads: {st}"
    );
}

/// A flood of valid-MAC1 initiations (random keys) faked to come from a real peer's own address
/// and port, at a few thousand a second, while that peer restarts and handshakes again: its
/// handshake completes within seconds and its traffic flows, because nothing unproven (no mac2)
/// is charged to the peer's share — under load the flood only gets cookie replies, which go to
/// the real peer and are dropped there as for no index of its.
///
/// How the old design shows here: every faked initiation spent the peer's share (20 a second),
/// so the real peer's initiations were dropped as "rate limited" nearly every time: b is not
/// back within 4 s (its first initiation dropped, the retry comes 5 s later), and a's
/// `handshake_rate_limited` counts the whole flood.
#[test]
fn spoofed_flood_from_a_real_peers_address_does_not_stop_its_handshakes() {
    let _alone = one_at_a_time();
    let Some(c) = Cluster::new("spoofed_flood_from_a_real_peer") else {
        return;
    };
    let defs = [
        HostDef {
            tag: "a",
            subnet: "10.42.1.0/24",
            port: 51820,
        },
        HostDef {
            tag: "b",
            subnet: "10.42.2.0/24",
            port: 51821,
        },
        // The flooder: a namespace on the same underlay, with no agent.
        HostDef {
            tag: "f",
            subnet: "10.42.4.0/24",
            port: 51823,
        },
    ];
    let hs = hosts_without_last_agent(&c, &defs);
    let (a, b, f) = (&hs[0], &hs[1], &hs[2]);
    let (wa, ipa) = workload(&c, a, "wa");
    let (wb, ipb) = workload(&c, b, "wb");
    assert_pings(&wa, &ipb, Duration::from_secs(15));

    let target: SocketAddr = a.endpoint().parse().unwrap();
    let (SocketAddr::V4(target), SocketAddr::V4(victim)) =
        (target, b.endpoint().parse::<SocketAddr>().unwrap())
    else {
        panic!("IPv4 underlay expected");
    };
    let flood = SpoofFlood::start(
        &f.ns,
        victim,
        target,
        initiations(a.agent.public_key(), 64),
        SPOOFED_PER_SECOND,
    );
    let flood_start = Instant::now();
    assert_eventually(Duration::from_secs(5), "the spoofed flood going", || {
        flood.sent() > SPOOFED_PER_SECOND
    });

    // The real peer starts over (new session, new handshake with a) under the flood.
    b.agent.kill9();
    b.agent.restart();
    let started = Instant::now();
    // Under load b's first initiation gets a cookie reply and b sends it again at once, with
    // the cookie; a first initiation dropped would cost b 5 s (the protocol's retry).
    assert_eventually(
        Duration::from_secs(4),
        "b handshaking with a under a flood faked from b's address",
        || ping(&wa, &ipb) && ping(&wb, &ipa),
    );
    eprintln!("b back {:?} after its restart", started.elapsed());
    let r = ping_run(&wa, &ipb, 40, "0.1");
    assert!(
        r.received + 2 >= r.transmitted,
        "ping wa -> {ipb} under the spoofed flood lost too much: {}",
        r.summary()
    );

    let seconds = flood_start.elapsed().as_secs_f64();
    let sent = flood.stop();
    let dropped = a.agent.status()["dropped"].clone();
    eprintln!("spoofed flood: {sent} initiations in {seconds:.1} s; host a dropped: {dropped}");
    assert!(
        sent as f64 >= SPOOFED_PER_SECOND as f64 * seconds / 2.0,
        "the flood sent only {sent} in {seconds:.1} s"
    );
    // Nothing the flood sent was charged to b's address: it carried no cookie.
    let limited = counter(&dropped, "handshake_rate_limited");
    assert!(
        limited <= BURST + PER_SECOND,
        "{limited} handshake messages charged to a source's share: {dropped}"
    );
}

/// The spoofed flood's rate: far over a source's share (20 a second), within what the receive
/// thread answers with cookies from its pool (2,000 a second).
const SPOOFED_PER_SECOND: u64 = 1_000;
