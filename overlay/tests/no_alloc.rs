//! The per-packet work of the data path allocates nothing: the data threads' own batch code —
//! [`seal`] (routing, the peer's sealing decision, GSO batching) on one host and [`Opened`]
//! (the peer's opening decision with roaming and the cryptokey check, TCP coalescing) on the
//! other — run here with a counting allocator over many packets after the buffers are set up;
//! then again under a policy, with new flows (filter and conntrack), their replies, and
//! denied flows handed to the audit queue.

mod counting;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use wgmesh_config::netmap::{FilterRule, HostFilter};
use wgmesh_config::policy::Action;
use wgmesh_config::PrivateKey;
use wgmesh_overlay::datapath::audit::AuditTap;
use wgmesh_overlay::datapath::batch::TxBatch;
use wgmesh_overlay::datapath::open::Opened;
use wgmesh_overlay::datapath::seal::seal;
use wgmesh_overlay::peers::counters::HostDrops;
use wgmesh_overlay::peers::filter::Filter;
use wgmesh_overlay::peers::lanes::LaneSlot;
use wgmesh_overlay::peers::local::HostNets;
use wgmesh_overlay::peers::noise::LocalIdentity;
use wgmesh_overlay::peers::peer::{HandshakeReceived, Outbound, PeerRun};
use wgmesh_overlay::peers::set::PeerSet;
use wgmesh_overlay::peers::settings::{PeerKeys, PeerSettings};

/// A TCP/IPv4 segment 10.42.1.2:40000 -> 10.42.2.2:5201 with valid checksums.
fn segment(seq: u32, len: usize) -> Vec<u8> {
    tcp([10, 42, 1, 2], 40000, [10, 42, 2, 2], 5201, seq, len)
}

/// A TCP/IPv4 segment (ACK) from `src`:`sport` to `dst`:`dport`, with valid checksums.
fn tcp(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16, seq: u32, len: usize) -> Vec<u8> {
    let total = 40 + len;
    let mut p = vec![0u8; total];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    p[8] = 64;
    p[9] = 6;
    p[12..16].copy_from_slice(&src);
    p[16..20].copy_from_slice(&dst);
    let ip = !fold(sum(&p[..20], 0));
    p[10..12].copy_from_slice(&ip.to_be_bytes());
    p[20..22].copy_from_slice(&sport.to_be_bytes());
    p[22..24].copy_from_slice(&dport.to_be_bytes());
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
        pair_psks: Vec::new(),
        key_epoch: None,
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

    // New peers have one lane: the current one, lane bit clear.
    const LANE: LaneSlot = LaneSlot::FIRST;
    let (ta, tb) = (a.table(), b.table());
    let (pa, pb) = (ta.peers().next().unwrap(), tb.peers().next().unwrap());
    let (mut m1, mut m2) = ([0u8; 256], [0u8; 256]);
    let open = Arc::new(Filter::allow_all());
    let now = Instant::now();
    let Outbound::Send(init) = pa
        .lock()
        .handle_outbound(now, &open, &segment(0, 10), &mut m1)
    else {
        panic!("expected an initiation");
    };
    let HandshakeReceived::Reply(r) =
        pb.lock()
            .handle_handshake(LANE, A.parse().unwrap(), &m1[..init.len], &mut m2)
    else {
        panic!("expected a response");
    };
    let HandshakeReceived::Reply(k) =
        pa.lock()
            .handle_handshake(LANE, B.parse().unwrap(), &m2[..r], &mut m1)
    else {
        panic!("expected a keepalive");
    };
    let mut plain = [0u8; 256];
    pb.lock()
        .handle_data(now, &open, A.parse().unwrap(), &m1[..k], &mut plain);
    while pa.lock().poll_queued(LANE, &mut m1).is_some() {}
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
    let audit = AuditTap::disabled();
    let mut opened = Opened::new(64, 32, audit.clone());
    let mut delivered = 0usize;
    let mut bytes = 0usize;

    counting::assert_counting();
    let before = counting::allocations();
    for _round in 0..20 {
        // Host A: route and seal the whole batch, as its `tx` thread does.
        seal(
            &ta,
            &drops,
            &audit,
            Instant::now(),
            &bufs,
            &sizes,
            &mut batch,
        );
        // Host B: open each datagram of each GSO run, as its `rx` thread does, then coalesce.
        let mut run = PeerRun::new();
        batch.for_each_run(64, |r| {
            for d in batch.bytes(r.start, r.len).chunks(r.segment) {
                assert!(!opened.is_full());
                let now = Instant::now();
                assert!(opened.open(&tb, &mut run, &drops, now, from, d).is_none());
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

/// One round's packets: from A, and B's replies.
type Round = (Vec<Vec<u8>>, Vec<Vec<u8>>);

/// Host A's and B's policy: A's 10.42.1.2 may reach B's 10.42.2.2 on TCP 5201; everything
/// else is denied.
fn policy() -> HostFilter {
    HostFilter {
        default: Action::Deny,
        rules: vec![FilterRule {
            name: "iperf".into(),
            action: Action::Allow,
            from: vec!["10.42.1.2/32".parse().unwrap()],
            to: vec!["10.42.2.2/32".parse().unwrap()],
            ports: vec!["tcp/5201".parse().unwrap()],
        }],
    }
}

/// Seals `bufs` on `from_table` and opens the datagrams on `to_table`, coming from `from`;
/// returns the packets delivered.
fn through(
    from_table: &wgmesh_overlay::peers::table::PeerTable,
    to_table: &wgmesh_overlay::peers::table::PeerTable,
    from: SocketAddr,
    bufs: &[Vec<u8>],
    sizes: &[usize],
    (batch, opened, audit, drops): (&mut TxBatch, &mut Opened, &AuditTap, &HostDrops),
) -> usize {
    seal(from_table, drops, audit, Instant::now(), bufs, sizes, batch);
    let mut run = PeerRun::new();
    let now = Instant::now();
    batch.for_each_run(64, |r| {
        for d in batch.bytes(r.start, r.len).chunks(r.segment) {
            assert!(opened
                .open(to_table, &mut run, drops, now, from, d)
                .is_none());
        }
    });
    run.release();
    let mut delivered = 0;
    opened.drain(false, |_| delivered += 1);
    batch.clear();
    delivered
}

#[test]
fn policing_new_flows_replies_and_denials_allocates_nothing() {
    let (mut a, mut b) = two_hosts();
    let t0 = Instant::now();
    a.apply_policy(t0, Some(&policy()));
    b.apply_policy(t0, Some(&policy()));
    let (ta, tb) = (a.table(), b.table());
    let (from_a, from_b): (SocketAddr, SocketAddr) = (A.parse().unwrap(), B.parse().unwrap());
    let drops = HostDrops::default();
    let (audit, denials) = AuditTap::bounded(4096);
    let mut batch = TxBatch::new(64 * 1600, 64);
    let mut opened = Opened::new(64, 32, audit.clone());
    // Every round: 48 new flows (new source ports) A -> B, their replies B -> A, and 16 new
    // denied flows (other ports) that A refuses before sealing.
    let rounds: Vec<Round> = (0..20u16)
        .map(|round| {
            let port = |i: u16| 41000 + round * 64 + i;
            let mut out: Vec<Vec<u8>> = (0..48)
                .map(|i| tcp([10, 42, 1, 2], port(i), [10, 42, 2, 2], 5201, 1, 1000))
                .collect();
            let denied = |i: u16| 2000 + round * 16 + i;
            out.extend(
                (0..16).map(|i| tcp([10, 42, 1, 2], port(48), [10, 42, 2, 2], denied(i), 1, 100)),
            );
            let back = (0..48)
                .map(|i| tcp([10, 42, 2, 2], 5201, [10, 42, 1, 2], port(i), 1, 100))
                .collect();
            (out, back)
        })
        .collect();
    let lens = |bufs: &[Vec<u8>]| bufs.iter().map(Vec::len).collect::<Vec<usize>>();
    let sizes: Vec<(Vec<usize>, Vec<usize>)> =
        rounds.iter().map(|(o, b)| (lens(o), lens(b))).collect();
    let (batch, opened, audit, drops) = (&mut batch, &mut opened, &audit, &drops);

    counting::assert_counting();
    let before = counting::allocations();
    let (mut there, mut back) = (0, 0);
    for (i, (out, replies)) in rounds.iter().enumerate() {
        there += through(
            &ta,
            &tb,
            from_a,
            out,
            &sizes[i].0,
            (batch, opened, audit, drops),
        );
        back += through(
            &tb,
            &ta,
            from_b,
            replies,
            &sizes[i].1,
            (batch, opened, audit, drops),
        );
    }
    let allocations = counting::allocations() - before;

    assert_eq!(
        (there, back),
        (20 * 48, 20 * 48),
        "new flows and their replies pass"
    );
    let pa = ta.peers().next().unwrap().lock();
    assert_eq!(pa.counters().dropped.policy_denied, 20 * 16);
    let ct = pa
        .guard()
        .expect("a policy gives every peer a guard")
        .conntrack();
    assert_eq!(ct.live(Instant::now()), 20 * 48);
    assert_eq!(denials.len(), 20 * 16, "each denied flow is audited once");
    let counts: Vec<_> = ta.filter().denied().collect();
    assert_eq!(counts, [(Some("iperf"), 0), (None, 20 * 16)]);
    assert_eq!(
        allocations, 0,
        "{allocations} allocations for 2560 packets through filter and conntrack"
    );
}
