//! What the data path does per packet under a flood allocates nothing: splitting a TSO
//! super-packet of a tiny MSS into batch after batch ([`Split`]), and charging handshake
//! messages from many sources to the per-source limiter ([`SourceLimiter`]), run here with a
//! counting allocator (`counting`, shared with `no_alloc.rs`: it counts the calling thread's
//! allocations) after their buffers are set up.

mod counting;

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use wgmesh_overlay::datapath::tso::Split;
use wgmesh_overlay::peers::limiter::{Limit, SourceLimiter};

/// A virtio-net header (TCPv4 GSO, segment size `mss`) and a TCP/IPv4 super-packet.
fn super_packet(payload: usize, mss: u16) -> Vec<u8> {
    let mut read = vec![1u8, 1]; // NEEDS_CSUM, GSO_TCPV4
    for f in [40u16, mss, 20, 16] {
        read.extend_from_slice(&f.to_ne_bytes());
    }
    let mut p = vec![0u8; 40 + payload];
    p[0] = 0x45;
    p[8] = 64;
    p[9] = 6;
    p[12..16].copy_from_slice(&[10, 42, 1, 2]);
    p[16..20].copy_from_slice(&[10, 42, 2, 2]);
    p[32] = 5 << 4;
    p[33] = 0x18;
    read.extend_from_slice(&p);
    read
}

#[test]
fn splitting_tiny_mss_super_packets_and_limiting_sources_allocate_nothing() {
    let mut read = super_packet(65_000, 88);
    let mut bufs = vec![vec![0u8; 1344]; 256];
    let mut sizes = vec![0usize; 256];
    let t0 = Instant::now();
    let mut limiter = SourceLimiter::new([1, 2], t0);
    let (mut segments, mut passed) = (0usize, 0usize);

    counting::assert_counting();
    let before = counting::allocations();
    for round in 0..10u32 {
        let mut split = Split::begin(&mut read, 1344).expect("a valid super-packet");
        while !split.is_done() {
            // A batch with 37 free buffers: the split goes on in the next one.
            segments += split.fill(&read, &mut bufs[..37], &mut sizes[..37]);
        }
        for i in 0..10_000u32 {
            let now = t0 + Duration::from_micros(u64::from(round * 10_000 + i));
            let source = IpAddr::V4(Ipv4Addr::from(0xc612_0000 + i % 5000));
            passed += usize::from(limiter.allow(now, source) == Limit::Pass);
        }
    }
    let allocations = counting::allocations() - before;
    assert_eq!(segments, 10 * 65_000usize.div_ceil(88));
    assert!(passed > 0);
    assert_eq!(allocations, 0, "the split and the limiter allocated");
}
