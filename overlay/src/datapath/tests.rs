//! The batch code of the data threads, driven without sockets between two hosts' peer sets.

use std::net::SocketAddr;

use crate::peers::counters::{HostDropCounts, HostDrops};
use crate::peers::fixture::{addr, ipv4, Pair, A_ADDR, B_ADDR};
use crate::peers::peer::PeerRun;
use crate::peers::wire::MessageKind;

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
    let mut batch = TxBatch::new(16 * 1600, 16);
    seal(&ta, &drops, &bufs, &sizes(&bufs), &mut batch);
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
    let mut batch = TxBatch::new(16 * 1600, 16);
    seal(&ta, &drops, &bufs, &sizes(&bufs), &mut batch);

    let mut opened = Opened::new(8, 4);
    let mut run = PeerRun::new();
    let from = addr(A_ADDR);
    for (_, d) in datagrams(&batch) {
        assert_eq!(opened.open(&tb, &mut run, &drops, from, &d), None);
    }
    // A data message for an index nobody has, junk, and a handshake initiation.
    let mut stranger = [0u8; 64];
    stranger[0] = 4;
    stranger[4..8].copy_from_slice(&0xffff_ff00u32.to_le_bytes());
    assert_eq!(opened.open(&tb, &mut run, &drops, from, &stranger), None);
    assert_eq!(opened.open(&tb, &mut run, &drops, from, b"junk"), None);
    let mut init = [0u8; 148];
    init[0] = 1;
    assert_eq!(
        opened.open(&tb, &mut run, &drops, from, &init),
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
    let mut batch = TxBatch::new(4 * 1600, 4);
    seal(&ta, &drops, &bufs, &sizes(&bufs), &mut batch);
    let mut opened = Opened::new(4, 4);
    let mut run = PeerRun::new();
    for (_, d) in datagrams(&batch) {
        assert_eq!(opened.open(&tb, &mut run, &drops, addr(A_ADDR), &d), None);
    }
    run.release();
    let mut written = Vec::new();
    assert!(opened.drain(true, |p| written.push(p.to_vec())));
    assert_eq!(written.len(), 1);
    // A lone packet goes out behind an all-zero header: no GSO, no checksum offload asked.
    assert_eq!(&written[0][..VNET_HDR_LEN], &[0u8; VNET_HDR_LEN]);
    assert_eq!(&written[0][VNET_HDR_LEN..], &packet[..]);
}
