//! The batch code of the data threads, driven without sockets between two hosts' peer sets.

use std::net::SocketAddr;
use std::time::Instant;

use crate::peers::counters::{HostDropCounts, HostDrops};
use crate::peers::fixture::{addr, ipv4, Pair, A_ADDR, B_ADDR};
use crate::peers::peer::PeerRun;
use crate::peers::table::PeerTable;
use crate::peers::wire::MessageKind;

use super::audit::AuditTap;
use super::batch::TxBatch;
use super::gro::VNET_HDR_LEN;
use super::open::Opened;
use super::seal::seal;

fn sizes(bufs: &[Vec<u8>]) -> Vec<usize> {
    bufs.iter().map(Vec::len).collect()
}

/// The datagrams of a sealed batch, with their destinations.
fn datagrams(batch: &TxBatch) -> Vec<(SocketAddr, Vec<u8>)> {
    let mut all = Vec::new();
    batch.for_each_run(64, |r| {
        for d in batch.bytes(r.start, r.len).chunks(r.segment) {
            all.push((r.dst, d.to_vec()));
        }
    });
    all
}

/// `bufs` sealed on `table` into a new batch with room for `slots` packets.
fn sealed(
    table: &PeerTable,
    drops: &HostDrops,
    audit: &AuditTap,
    bufs: &[Vec<u8>],
    slots: usize,
) -> TxBatch {
    let mut batch = TxBatch::new(slots * 1600, slots);
    seal(
        table,
        drops,
        audit,
        Instant::now(),
        bufs,
        &sizes(bufs),
        &mut batch,
    );
    batch
}

/// Opens every datagram of `batch` from `from` on `table`; none is a handshake message.
fn open_all<'t>(
    opened: &mut Opened,
    table: &'t PeerTable,
    run: &mut PeerRun<'t>,
    drops: &HostDrops,
    from: SocketAddr,
    batch: &TxBatch,
) {
    for (_, d) in datagrams(batch) {
        assert_eq!(
            opened.open(table, run, drops, Instant::now(), from, &d),
            None
        );
    }
}

#[test]
fn seal_routes_counts_what_has_no_peer_and_ignores_multicast() {
    let pair = Pair::new();
    pair.handshake_with(&ipv4([10, 42, 1, 2], [10, 42, 2, 2]));
    let ta = pair.a.table();
    let drops = HostDrops::default();
    let multicast = ipv4([10, 42, 1, 2], [224, 0, 0, 22]);
    let bufs = vec![
        ipv4([10, 42, 1, 2], [10, 42, 2, 2]), // to B
        ipv4([10, 42, 1, 2], [10, 42, 9, 9]), // nobody's
        multicast,
        vec![0x00; 10],                       // not IP
        ipv4([10, 42, 1, 3], [10, 42, 2, 7]), // to B
    ];
    let batch = sealed(&ta, &drops, &AuditTap::disabled(), &bufs, 16);
    let sent = datagrams(&batch);
    assert_eq!(sent.len(), 2);
    assert!(sent
        .iter()
        .all(|(dst, d)| *dst == addr(B_ADDR) && d[0] == 4));
    let expected = HostDropCounts {
        no_route: 1,
        unknown_peer: 0,
        malformed: 1,
        ..HostDropCounts::default()
    };
    assert_eq!(drops.counts(), expected);
    assert_eq!(Pair::only(&ta).lock().counters().tx_packets, 2);
}

#[test]
fn open_delivers_hands_over_handshakes_and_counts_strangers() {
    let pair = Pair::new();
    pair.handshake_with(&ipv4([10, 42, 1, 2], [10, 42, 2, 2]));
    let (ta, tb) = (pair.a.table(), pair.b.table());
    let drops = HostDrops::default();
    let bufs = vec![
        ipv4([10, 42, 1, 2], [10, 42, 2, 2]),
        ipv4([10, 42, 1, 2], [10, 42, 2, 3]),
    ];
    let batch = sealed(&ta, &drops, &AuditTap::disabled(), &bufs, 16);

    let mut opened = Opened::new(8, 4, AuditTap::disabled());
    let mut run = PeerRun::new();
    let from = addr(A_ADDR);
    open_all(&mut opened, &tb, &mut run, &drops, from, &batch);
    // A data message for an index nobody has, junk, and a handshake initiation.
    let mut stranger = [0u8; 64];
    stranger[0] = 4;
    stranger[4..8].copy_from_slice(&0xffff_ff00u32.to_le_bytes());
    assert_eq!(
        opened.open(&tb, &mut run, &drops, Instant::now(), from, &stranger),
        None
    );
    assert_eq!(
        opened.open(&tb, &mut run, &drops, Instant::now(), from, b"junk"),
        None
    );
    let mut init = [0u8; 148];
    init[0] = 1;
    assert_eq!(
        opened.open(&tb, &mut run, &drops, Instant::now(), from, &init),
        Some(MessageKind::HandshakeInit)
    );
    run.release();
    let expected = HostDropCounts {
        no_route: 0,
        unknown_peer: 1,
        malformed: 1,
        ..HostDropCounts::default()
    };
    assert_eq!(drops.counts(), expected);

    // Without offload each packet is written as it is; with offload behind a virtio-net header.
    let mut written = Vec::new();
    assert!(opened.drain(false, |p| written.push(p.to_vec())));
    assert_eq!(written, bufs);
    assert!(!opened.drain(false, |_| panic!("nothing is left")));
}

#[test]
fn open_with_offload_writes_behind_a_virtio_net_header() {
    let pair = Pair::new();
    let packet = ipv4([10, 42, 1, 2], [10, 42, 2, 2]);
    pair.handshake_with(&packet);
    let (ta, tb) = (pair.a.table(), pair.b.table());
    let drops = HostDrops::default();
    let bufs = vec![packet.clone()];
    let batch = sealed(&ta, &drops, &AuditTap::disabled(), &bufs, 4);
    let mut opened = Opened::new(4, 4, AuditTap::disabled());
    let mut run = PeerRun::new();
    open_all(&mut opened, &tb, &mut run, &drops, addr(A_ADDR), &batch);
    run.release();
    let mut written = Vec::new();
    assert!(opened.drain(true, |p| written.push(p.to_vec())));
    assert_eq!(written.len(), 1);
    // A lone packet goes out behind an all-zero header: no GSO, no checksum offload asked.
    assert_eq!(&written[0][..VNET_HDR_LEN], &[0u8; VNET_HDR_LEN]);
    assert_eq!(&written[0][VNET_HDR_LEN..], &packet[..]);
}

/// A's workload 10.42.1.2 may reach B's 10.42.2.2 on TCP 80; nothing else is allowed.
fn policy() -> wgmesh_config::netmap::HostFilter {
    use wgmesh_config::netmap::{FilterRule, HostFilter};
    use wgmesh_config::policy::Action;
    HostFilter {
        default: Action::Deny,
        rules: vec![FilterRule {
            name: "a-to-b-web".into(),
            action: Action::Allow,
            from: vec!["10.42.1.2/32".parse().unwrap()],
            to: vec!["10.42.2.2/32".parse().unwrap()],
            ports: vec!["tcp/80".parse().unwrap()],
        }],
    }
}

/// Seals `bufs` on `from_table` and opens what was sent on `to_table`: the packets delivered.
fn across(
    from_table: &PeerTable,
    to_table: &PeerTable,
    from: SocketAddr,
    audit: &AuditTap,
    bufs: &[Vec<u8>],
) -> Vec<Vec<u8>> {
    let drops = HostDrops::default();
    let batch = sealed(from_table, &drops, audit, bufs, 16);
    let mut opened = Opened::new(16, 4, audit.clone());
    let mut run = PeerRun::new();
    open_all(&mut opened, to_table, &mut run, &drops, from, &batch);
    run.release();
    let mut delivered = Vec::new();
    opened.drain(false, |p| delivered.push(p.to_vec()));
    assert_eq!(drops.counts(), HostDropCounts::default());
    delivered
}

#[test]
fn under_a_policy_allowed_flows_and_replies_pass_both_ways_the_rest_is_denied_and_counted() {
    use crate::peers::fixture::{icmp, ip, tcp};
    use crate::peers::packet::{ICMP, TCP, TCP_ACK, TCP_SYN};

    let mut pair = Pair::new();
    pair.handshake_with(&ipv4([10, 42, 1, 2], [10, 42, 2, 2]));
    let now = Instant::now();
    pair.a.apply_policy(now, Some(&policy()));
    pair.b.apply_policy(now, Some(&policy()));
    let (ta, tb) = (pair.a.table(), pair.b.table());
    let (audit, denials) = AuditTap::bounded(16);

    let syn = ip("10.42.1.2", "10.42.2.2", TCP, &tcp(40000, 80, TCP_SYN));
    let other_port = ip("10.42.1.2", "10.42.2.2", TCP, &tcp(40001, 8080, TCP_SYN));
    let ping = ip("10.42.1.2", "10.42.2.2", ICMP, &icmp(8, 1, &[]));
    let sent = across(
        &ta,
        &tb,
        addr(A_ADDR),
        &audit,
        &[syn.clone(), other_port, ping],
    );
    assert_eq!(sent, [syn], "only the allowed flow leaves A");
    let pa = Pair::only(&ta);
    assert_eq!(pa.lock().counters().dropped.policy_denied, 2);

    let syn_ack = ip(
        "10.42.2.2",
        "10.42.1.2",
        TCP,
        &tcp(80, 40000, TCP_SYN | TCP_ACK),
    );
    let reverse = ip("10.42.2.2", "10.42.1.2", TCP, &tcp(5000, 80, TCP_SYN));
    let back = across(&tb, &ta, addr(B_ADDR), &audit, &[syn_ack.clone(), reverse]);
    assert_eq!(
        back,
        [syn_ack],
        "the reply passes both ends; the reverse flow does not"
    );
    let ack = ip("10.42.1.2", "10.42.2.2", TCP, &tcp(40000, 80, TCP_ACK));
    assert_eq!(
        across(&ta, &tb, addr(A_ADDR), &audit, std::slice::from_ref(&ack)),
        [ack]
    );
    let pb = Pair::only(&tb);
    assert_eq!(pb.lock().counters().dropped.policy_denied, 1);
    assert_eq!(
        pb.lock().counters().rx_packets,
        1 + 2,
        "the handshake's packet, syn, ack"
    );

    // A sender that ignores the policy (A without it) is stopped at B's ingress.
    pair.a.apply_policy(now, None);
    let ta = pair.a.table();
    let sneaky = ip("10.42.1.2", "10.42.2.2", TCP, &tcp(40002, 22, TCP_SYN));
    assert!(across(&ta, &tb, addr(A_ADDR), &audit, &[sneaky]).is_empty());
    assert_eq!(pb.lock().counters().dropped.policy_denied, 2);
    let counts: Vec<_> = tb.filter().denied().collect();
    assert_eq!(counts, [(Some("a-to-b-web"), 0), (None, 2)]);

    // Each denied flow reached the audit queue once: A's two, B's reverse flow and B's
    // ingress refusal.
    let audited: Vec<_> = denials.try_iter().map(|d| (d.direction, d.port)).collect();
    use crate::peers::conntrack::Direction::{Egress, Ingress};
    assert_eq!(
        audited,
        [(Egress, 8080), (Egress, 0), (Egress, 80), (Ingress, 22)]
    );
}
