//! The per-packet work of the data path allocates nothing: sealing and opening data messages,
//! cryptokey routing, batching for GSO and TCP coalescing for TUN writes, run here with a
//! counting allocator over many packets after the buffers are set up.

use std::alloc::{GlobalAlloc, Layout, System};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};

use wgmesh_config::PrivateKey;
use wgmesh_overlay::datapath::batch::TxBatch;
use wgmesh_overlay::datapath::gro::{Gro, VNET_HDR_LEN};
use wgmesh_overlay::peers::noise::{Decapsulated, Encapsulated, LocalIdentity, Tunnel};
use wgmesh_overlay::peers::route::{contains_any, AllowedIps};
use wgmesh_overlay::peers::wire;

struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

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

#[test]
fn sealing_routing_batching_opening_and_coalescing_allocate_nothing() {
    let a = LocalIdentity::new(&PrivateKey::generate());
    let b = LocalIdentity::new(&PrivateKey::generate());
    let mut ta = Tunnel::new(&a, &b.public_key(), None, None, 1);
    let mut tb = Tunnel::new(&b, &a.public_key(), None, None, 2);
    let from: std::net::IpAddr = "198.18.0.1".parse().unwrap();
    let dst: SocketAddr = "198.18.0.2:51820".parse().unwrap();
    let mut buf = vec![0u8; 2048];
    let mut out = vec![0u8; 2048];

    // Handshake (allowed to allocate).
    let Encapsulated::HandshakeInit(n) = ta.encapsulate(&segment(0, 10), &mut buf) else {
        panic!("expected an initiation");
    };
    let Decapsulated::Reply(r) = tb.decapsulate(from, &buf[..n], &mut out) else {
        panic!("expected a response");
    };
    let Decapsulated::Reply(k) = ta.decapsulate(from, &out[..r], &mut buf) else {
        panic!("expected a keepalive");
    };
    while ta.flush_queued(&mut out).is_some() {}
    tb.decapsulate(from, &buf[..k], &mut out);

    let routes = AllowedIps::build([("10.42.2.0/24".parse().unwrap(), 7u32)]);
    let allowed = ["10.42.1.0/24".parse().unwrap()];
    let packets: Vec<Vec<u8>> = (0..64).map(|i| segment(1 + i * 1380, 1380)).collect();
    let mut batch = TxBatch::new(64 * 1600, 64);
    let mut tun_bufs: Vec<Vec<u8>> = (0..64)
        .map(|_| Vec::with_capacity(2 * VNET_HDR_LEN + 65_535))
        .collect();
    let mut gro = Gro::new(64);
    let mut delivered = 0usize;

    let before = ALLOCATIONS.load(Ordering::Relaxed);
    for _round in 0..20 {
        // Sender: route and seal into one batch.
        for p in &packets {
            let d = wire::inner_destination(p).unwrap();
            assert_eq!(routes.lookup(d), Some(&7));
            match ta.encapsulate(p, batch.space()) {
                Encapsulated::Data(len) => batch.commit(dst, len),
                other => panic!("unexpected {other:?}"),
            }
        }
        // Receiver: open each datagram of each GSO run, check its source, coalesce.
        let mut used = 0;
        batch.for_each_run(64, |run| {
            for d in batch.bytes(run.start, run.len).chunks(run.segment) {
                assert_eq!(wire::classify(d), Some(wire::MessageKind::Data));
                let t = &mut tun_bufs[used];
                t.resize(VNET_HDR_LEN + d.len(), 0);
                match tb.decapsulate(from, d, &mut t[VNET_HDR_LEN..]) {
                    Decapsulated::Packet { len, source } => {
                        assert!(contains_any(&allowed, source));
                        t.truncate(VNET_HDR_LEN + len);
                        used += 1;
                    }
                    other => panic!("unexpected {other:?}"),
                }
            }
        });
        delivered += gro.coalesce(&mut tun_bufs[..used], VNET_HDR_LEN).len();
        batch.clear();
    }
    let allocations = ALLOCATIONS.load(Ordering::Relaxed) - before;
    assert!(delivered > 0);
    assert_eq!(
        allocations, 0,
        "{allocations} allocations for 1280 packets through the data path"
    );
}
