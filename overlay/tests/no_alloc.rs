//! The per-packet work of the data path allocates nothing: the data threads' own batch code —
//! [`seal`] (routing, the peer's sealing decision, GSO batching) on one host and [`Opened`]
//! (the peer's opening decision with roaming and the cryptokey check, TCP coalescing) on the
//! other — run here with a counting allocator over many packets after the buffers are set up.

mod counting;

use std::net::SocketAddr;
use std::sync::Arc;

use wgmesh_config::PrivateKey;
use wgmesh_overlay::datapath::batch::TxBatch;
use wgmesh_overlay::datapath::open::Opened;
use wgmesh_overlay::datapath::seal::seal;
use wgmesh_overlay::peers::counters::HostDrops;
use wgmesh_overlay::peers::local::HostNets;
use wgmesh_overlay::peers::noise::LocalIdentity;
use wgmesh_overlay::peers::peer::{HandshakeReceived, Outbound, PeerRun};
use wgmesh_overlay::peers::set::PeerSet;
use wgmesh_overlay::peers::settings::{PeerKeys, PeerSettings};

/// A TCP/IPv4 segment 10.42.1.2:40000 -> 10.42.2.2:5201 with valid checksums.
fn segment(seq: u32, len: usize) -> Vec<u8> {
    let total = 40 + len;
    let mut p = vec![0u8; total];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    p[8] = 64;
    p[9] = 6;
    p[12..16].copy_from_slice(&[10, 42, 1, 2]);
    p[16..20].copy_from_slice(&[10, 42, 2, 2]);
    let ip = !fold(sum(&p[..20], 0));
    p[10..12].copy_from_slice(&ip.to_be_bytes());
    p[20..22].copy_from_slice(&40000u16.to_be_bytes());
    p[22..24].copy_from_slice(&5201u16.to_be_bytes());
    p[24..28].copy_from_slice(&seq.to_be_bytes());
    p[32] = 5 << 4;
    p[33] = 0x10;
    for (i, b) in p[40..].iter_mut().enumerate() {
        *b = i as u8;
    }
    let pseudo = sum(&p[12..20], 6 + (total - 20) as u64);
    let tcp = !fold(sum(&p[20..], pseudo));
    p[36..38].copy_from_slice(&tcp.to_be_bytes());
    p
}

fn sum(data: &[u8], mut acc: u64) -> u64 {
    for c in data.chunks(2) {
        acc += u64::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
    }
    acc
}

fn fold(mut s: u64) -> u16 {
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    s as u16
}

/// Host A (10.42.1.0/24) with peer B, host B (10.42.2.0/24) with peer A, their tunnels set up
/// by a real handshake through the peers' own decisions.
fn two_hosts() -> (PeerSet, PeerSet) {
    let ia = Arc::new(LocalIdentity::new(&PrivateKey::generate()));
    let ib = Arc::new(LocalIdentity::new(&PrivateKey::generate()));
    let peer = |key, net: &str, endpoint: &str| PeerSettings {
        name: None,
        keys: PeerKeys::one(key),
        endpoint: Some(endpoint.parse().unwrap()),
        allowed_ips: vec![net.parse().unwrap()],
        persistent_keepalive: None,
        preshared_key: None,
    };
    let nets = |subnet: &str| {
        HostNets::new(
            subnet.parse().unwrap(),
            "10.42.0.0/16".parse().unwrap(),
            vec![],
        )
    };
    let mut a = PeerSet::new(ia.clone(), 1, nets("10.42.1.0/24"));
    let mut b = PeerSet::new(ib.clone(), 2, nets("10.42.2.0/24"));
    a.apply(&[peer(ib.public_key(), "10.42.2.0/24", B)])
        .unwrap();
    b.apply(&[peer(ia.public_key(), "10.42.1.0/24", A)])
        .unwrap();

    let (ta, tb) = (a.table(), b.table());
    let (pa, pb) = (ta.peers().next().unwrap(), tb.peers().next().unwrap());
    let (mut m1, mut m2) = ([0u8; 256], [0u8; 256]);
    let Outbound::Send(init) = pa.lock().handle_outbound(&segment(0, 10), &mut m1) else {
        panic!("expected an initiation");
    };
    let HandshakeReceived::Reply(r) =
        pb.lock()
            .handle_handshake(A.parse().unwrap(), &m1[..init.len], &mut m2)
    else {
        panic!("expected a response");
    };
    let HandshakeReceived::Reply(k) =
        pa.lock()
            .handle_handshake(B.parse().unwrap(), &m2[..r], &mut m1)
    else {
        panic!("expected a keepalive");
    };
    let mut plain = [0u8; 256];
    pb.lock()
        .handle_data(A.parse().unwrap(), &m1[..k], &mut plain);
    while pa.lock().poll_queued(&mut m1).is_some() {}
    (a, b)
}

const A: &str = "198.18.0.1:51820";
const B: &str = "198.18.0.2:51820";

#[test]
fn sealing_routing_batching_opening_and_coalescing_allocate_nothing() {
    let (a, b) = two_hosts();
    let (ta, tb) = (a.table(), b.table());
    let drops = HostDrops::default();
    let from: SocketAddr = A.parse().unwrap();

    let bufs: Vec<Vec<u8>> = (0..64).map(|i| segment(1 + i * 1380, 1380)).collect();
    let sizes: Vec<usize> = bufs.iter().map(Vec::len).collect();
    let mut batch = TxBatch::new(64 * 1600, 64);
    let mut opened = Opened::new(64, 32);
    let mut delivered = 0usize;
    let mut bytes = 0usize;

    counting::assert_counting();
    let before = counting::allocations();
    for _round in 0..20 {
        // Host A: route and seal the whole batch, as its `tx` thread does.
        seal(&ta, &drops, &bufs, &sizes, &mut batch);
        // Host B: open each datagram of each GSO run, as its `rx` thread does, then coalesce.
        let mut run = PeerRun::new();
        batch.for_each_run(64, |r| {
            for d in batch.bytes(r.start, r.len).chunks(r.segment) {
                assert!(!opened.is_full());
                assert!(opened.open(&tb, &mut run, &drops, from, d).is_none());
            }
        });
        run.release();
        opened.drain(true, |p| {
            delivered += 1;
            bytes += p.len();
        });
        batch.clear();
    }
    let allocations = counting::allocations() - before;
    assert_eq!(drops.counts(), Default::default(), "nothing was dropped");
    let counters = *tb.peers().next().unwrap().lock().counters();
    assert_eq!(
        counters.rx_packets,
        20 * 64,
        "every packet was opened and accepted"
    );
    assert!(
        delivered > 0 && delivered < 20 * 64,
        "coalesced: {delivered} writes"
    );
    assert!(bytes > 20 * 64 * 1380);
    assert_eq!(
        allocations, 0,
        "{allocations} allocations for 1280 packets through the data path"
    );
}
