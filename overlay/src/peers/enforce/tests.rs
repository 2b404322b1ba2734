//! The policy on single packets: host A (10.42.1.0/24) with a workload 10.42.1.2; the remote
//! frontend 10.42.2.2 may reach it on TCP 80, UDP 53 and ICMP; nothing else is allowed.

use std::time::Duration;

use wgmesh_config::netmap::{FilterRule, HostFilter};
use wgmesh_config::policy::Action;

use super::*;
use crate::peers::fixture::{icmp, ip, tcp, udp};
use crate::peers::packet::{TCP, TCP_ACK, TCP_SYN, UDP};

use Direction::{Egress, Ingress};

const APP: &str = "10.42.1.2";
const FRONT: &str = "10.42.2.2";

fn policy(ports: &[&str]) -> HostFilter {
    HostFilter {
        default: Action::Deny,
        rules: vec![FilterRule {
            name: "front-to-app".into(),
            action: Action::Allow,
            from: vec![format!("{FRONT}/32").parse().unwrap()],
            to: vec![format!("{APP}/32").parse().unwrap()],
            ports: ports.iter().map(|p| p.parse().unwrap()).collect(),
        }],
    }
}

fn filter(generation: u32) -> Arc<Filter> {
    Arc::new(Filter::new(
        &policy(&["tcp/80", "udp/53", "icmp"]),
        generation,
        None,
    ))
}

fn guard(t0: Instant) -> FlowGuard {
    FlowGuard::new(64, [11, 12], t0)
}

fn why(c: &Checked) -> Option<PeerDrop> {
    match c {
        Checked::Pass => None,
        Checked::Drop { why, .. } => Some(*why),
    }
}

fn reason(c: &Checked) -> Option<DenialReason> {
    match c {
        Checked::Drop {
            denial: Some(d), ..
        } => Some(d.reason),
        _ => None,
    }
}

#[test]
fn an_allowed_flow_and_its_replies_pass_other_flows_are_denied_and_counted() {
    let (t0, f) = (Instant::now(), filter(1));
    let mut g = guard(t0);
    let syn = ip(FRONT, APP, TCP, &tcp(40000, 80, TCP_SYN));
    let syn_ack = ip(APP, FRONT, TCP, &tcp(80, 40000, TCP_SYN | TCP_ACK));
    let ack = ip(FRONT, APP, TCP, &tcp(40000, 80, TCP_ACK));
    assert_eq!(g.check(&f, t0, Ingress, &syn), Checked::Pass);
    assert_eq!(g.check(&f, t0, Egress, &syn_ack), Checked::Pass);
    assert_eq!(g.check(&f, t0, Ingress, &ack), Checked::Pass);
    assert_eq!(g.conntrack().live(t0), 1);

    let other_port = ip(FRONT, APP, TCP, &tcp(40001, 8080, TCP_SYN));
    let reverse = ip(APP, FRONT, TCP, &tcp(40002, 80, TCP_SYN));
    let stranger = ip("10.42.2.3", APP, TCP, &tcp(40003, 80, TCP_SYN));
    for p in [&other_port, &reverse, &stranger] {
        let c = g.check(&f, t0, if p == &reverse { Egress } else { Ingress }, p);
        assert_eq!(why(&c), Some(PeerDrop::PolicyDenied));
        assert_eq!(reason(&c), Some(DenialReason::Policy(RuleRef::Default)));
    }
    let Checked::Drop {
        denial: Some(d), ..
    } = g.check(&f, t0, Ingress, &ip(FRONT, APP, UDP, &udp(9, 99)))
    else {
        panic!("denied");
    };
    assert_eq!((d.direction, d.proto, d.port), (Ingress, UDP, 99));
    assert_eq!(
        (d.src, d.dst),
        (FRONT.parse().unwrap(), APP.parse().unwrap())
    );
    let counts: Vec<_> = f.denied().collect();
    assert_eq!(counts, [(Some("front-to-app"), 0), (None, 4)]);
}

#[test]
fn icmp_echo_replies_and_errors_pass_only_on_tracked_flows() {
    let (t0, f) = (Instant::now(), filter(1));
    let mut g = guard(t0);
    // The frontend pings the app: the reply passes; the app's own ping is a new flow, denied.
    let ping = ip(FRONT, APP, ICMP, &icmp(8, 7, &[]));
    let pong = ip(APP, FRONT, ICMP, &icmp(0, 7, &[]));
    assert_eq!(g.check(&f, t0, Ingress, &ping), Checked::Pass);
    assert_eq!(g.check(&f, t0, Egress, &pong), Checked::Pass);
    let back = ip(APP, FRONT, ICMP, &icmp(8, 7, &[]));
    assert_eq!(
        why(&g.check(&f, t0, Egress, &back)),
        Some(PeerDrop::PolicyDenied)
    );
    let stray = ip(FRONT, APP, ICMP, &icmp(0, 7, &[]));
    let c = g.check(&f, t0, Ingress, &stray);
    assert_eq!(why(&c), Some(PeerDrop::PolicyUntracked));
    assert_eq!(reason(&c), Some(DenialReason::Untracked));

    // A UDP query to the app, answered by the app's kernel with port unreachable: the error
    // quotes the tracked query and goes back to its sender.
    let query = ip(FRONT, APP, UDP, &udp(5353, 53));
    assert_eq!(g.check(&f, t0, Ingress, &query), Checked::Pass);
    let unreachable = ip(APP, FRONT, ICMP, &icmp(3, 3, &query[..28]));
    assert_eq!(g.check(&f, t0, Egress, &unreachable), Checked::Pass);
    // An error about an untracked flow, or sent to someone else, does not pass.
    let untracked = ip(FRONT, APP, UDP, &udp(5353, 54));
    let about_other = ip(APP, FRONT, ICMP, &icmp(3, 3, &untracked[..28]));
    assert_eq!(
        why(&g.check(&f, t0, Egress, &about_other)),
        Some(PeerDrop::PolicyUntracked)
    );
    let elsewhere = ip(APP, "10.42.2.9", ICMP, &icmp(3, 3, &query[..28]));
    assert_eq!(
        why(&g.check(&f, t0, Egress, &elsewhere)),
        Some(PeerDrop::PolicyUntracked)
    );
    // Other ICMP is decided as `icmp` on its own: allowed from the frontend, not to it.
    let timestamp = ip(FRONT, APP, ICMP, &icmp(13, 1, &[]));
    assert_eq!(g.check(&f, t0, Ingress, &timestamp), Checked::Pass);
    let timestamp_back = ip(APP, FRONT, ICMP, &icmp(13, 1, &[]));
    assert_eq!(
        why(&g.check(&f, t0, Egress, &timestamp_back)),
        Some(PeerDrop::PolicyDenied)
    );
}

#[test]
fn a_new_policy_stops_the_flows_it_no_longer_allows() {
    let t0 = Instant::now();
    let mut g = guard(t0);
    let web = ip(FRONT, APP, TCP, &tcp(40000, 80, TCP_ACK));
    let dns = ip(FRONT, APP, UDP, &udp(5353, 53));
    let f1 = filter(1);
    assert_eq!(g.check(&f1, t0, Ingress, &web), Checked::Pass);
    assert_eq!(g.check(&f1, t0, Ingress, &dns), Checked::Pass);
    // Generation 2 allows only UDP 53: the established web flow stops, DNS goes on.
    let f2 = Arc::new(Filter::new(&policy(&["udp/53"]), 2, Some(&f1)));
    let reply = ip(APP, FRONT, TCP, &tcp(80, 40000, TCP_ACK));
    let c = g.check(&f2, t0, Egress, &reply);
    assert_eq!(why(&c), Some(PeerDrop::PolicyDenied));
    assert_eq!(reason(&c), Some(DenialReason::Policy(RuleRef::Default)));
    assert_eq!(g.check(&f2, t0, Ingress, &dns), Checked::Pass);
    assert_eq!(
        why(&g.check(&f2, t0, Ingress, &web)),
        Some(PeerDrop::PolicyDenied)
    );
    // The old policy again (generation 3): new flows work.
    let f3 = Arc::new(Filter::new(&policy(&["tcp/80", "udp/53"]), 3, Some(&f2)));
    assert_eq!(g.check(&f3, t0, Ingress, &web), Checked::Pass);
    assert_eq!(g.check(&f3, t0, Egress, &reply), Checked::Pass);
}

#[test]
fn a_full_table_refuses_new_flows_and_keeps_the_established_ones() {
    let (t0, f) = (Instant::now(), filter(1));
    let mut g = FlowGuard::new(16, [13, 14], t0);
    let established = ip(FRONT, APP, TCP, &tcp(40000, 80, TCP_ACK));
    assert_eq!(g.check(&f, t0, Ingress, &established), Checked::Pass);
    let mut full = 0;
    for port in 1..=200u16 {
        let c = g.check(&f, t0, Ingress, &ip(FRONT, APP, UDP, &udp(port, 53)));
        if why(&c) == Some(PeerDrop::ConntrackFull) {
            full += 1;
        }
        let reply = ip(APP, FRONT, TCP, &tcp(80, 40000, TCP_ACK));
        assert_eq!(g.check(&f, t0, Egress, &reply), Checked::Pass);
    }
    assert!(full >= 200 - 16, "{full} refused");
    assert_eq!(g.conntrack().refused(), full);
    assert!(g.conntrack().live(t0) <= 16);
}

#[test]
fn each_refused_flow_is_audited_once_a_while() {
    let (t0, f) = (Instant::now(), filter(1));
    let mut g = guard(t0);
    let ssh = |sport| ip(FRONT, APP, TCP, &tcp(sport, 22, TCP_SYN));
    assert!(reason(&g.check(&f, t0, Ingress, &ssh(40000))).is_some());
    // Its retries, from any source port, are the same flow: counted, not audited.
    for (s, sport) in [(1, 40000), (3, 40001), (30, 40002)] {
        let c = g.check(&f, t0 + Duration::from_secs(s), Ingress, &ssh(sport));
        assert_eq!(why(&c), Some(PeerDrop::PolicyDenied));
        assert_eq!(reason(&c), None);
    }
    // Another flow is audited; the first one again after a quiet minute.
    assert!(reason(&g.check(&f, t0, Ingress, &ip(FRONT, APP, TCP, &tcp(1, 23, 0)))).is_some());
    let later = t0 + Duration::from_secs(31 + u64::from(MEMO_SECONDS));
    assert!(reason(&g.check(&f, later, Ingress, &ssh(40003))).is_some());
}

#[test]
fn fragments_follow_their_first_and_malformed_packets_are_dropped() {
    let (t0, f) = (Instant::now(), filter(1));
    let mut g = guard(t0);
    let mut first = ip(FRONT, APP, UDP, &udp(5353, 53));
    first[4..6].copy_from_slice(&9u16.to_be_bytes());
    first[6] = 0x20;
    let mut later = first.clone();
    later[6..8].copy_from_slice(&3u16.to_be_bytes());
    let mut unknown = later.clone();
    unknown[4..6].copy_from_slice(&10u16.to_be_bytes());
    assert_eq!(
        why(&g.check(&f, t0, Ingress, &later)),
        Some(PeerDrop::PolicyMalformed)
    );
    assert_eq!(g.check(&f, t0, Ingress, &first), Checked::Pass);
    assert_eq!(g.check(&f, t0, Ingress, &later), Checked::Pass);
    assert_eq!(
        why(&g.check(&f, t0, Ingress, &unknown)),
        Some(PeerDrop::PolicyMalformed)
    );
    let c = g.check(&f, t0, Ingress, &[0x45, 0, 0]);
    assert_eq!(
        c,
        Checked::Drop {
            why: PeerDrop::PolicyMalformed,
            denial: None
        }
    );
}

#[test]
fn without_a_policy_nothing_is_parsed_or_tracked() {
    let t0 = Instant::now();
    let mut g = guard(t0);
    let open = Arc::new(Filter::allow_all());
    assert_eq!(g.check(&open, t0, Ingress, b"not a packet"), Checked::Pass);
    assert_eq!(
        g.check(&open, t0, Egress, &ip(APP, FRONT, TCP, &tcp(1, 2, 0))),
        Checked::Pass
    );
    assert_eq!(g.conntrack().live(t0), 0);
}

#[test]
fn local_flows_find_their_replies_whichever_end_starts() {
    let t0 = Instant::now();
    let local = |from: &str, to: &str| {
        let rule = |f: &str, t: &str| FilterRule {
            name: format!("{f}-{t}"),
            action: Action::Allow,
            from: vec![format!("{f}/32").parse().unwrap()],
            to: vec![format!("{t}/32").parse().unwrap()],
            ports: vec!["tcp/80".parse().unwrap()],
        };
        let host = HostFilter {
            default: Action::Deny,
            rules: vec![rule(from, to)],
        };
        Arc::new(Filter::new(&host, 1, None))
    };
    let (low, high) = ("10.42.1.2", "10.42.1.9");
    for (client, server) in [(low, high), (high, low)] {
        let f = local(client, server);
        let mut g = guard(t0);
        let syn = ip(client, server, TCP, &tcp(40000, 80, TCP_SYN));
        let syn_ack = ip(server, client, TCP, &tcp(80, 40000, TCP_SYN | TCP_ACK));
        assert_eq!(
            g.check_local(&f, t0, &syn),
            Checked::Pass,
            "{client} -> {server}"
        );
        assert_eq!(
            g.check_local(&f, t0, &syn_ack),
            Checked::Pass,
            "{server} -> {client}"
        );
        let reverse = ip(server, client, TCP, &tcp(40001, 80, TCP_SYN));
        let c = g.check_local(&f, t0, &reverse);
        assert_eq!(why(&c), Some(PeerDrop::PolicyDenied));
        let Checked::Drop {
            denial: Some(d), ..
        } = c
        else {
            panic!("audited");
        };
        assert_eq!(d.direction, Egress);
    }
}
