use super::*;

const MAX_PACKET: usize = 1280 + 64;

fn vnet(gso_type: u8, gso_size: u16, csum_start: u16, csum_offset: u16, flags: u8) -> Vec<u8> {
    let mut h = vec![flags, gso_type];
    for f in [0u16, gso_size, csum_start, csum_offset] {
        h.extend_from_slice(&f.to_ne_bytes());
    }
    h
}

/// A TCP/IPv4 super-packet (32-byte TCP header) with `payload`, flags PSH|ACK|FIN|CWR.
fn tcp4_super(payload: &[u8], gso_size: u16) -> Vec<u8> {
    let mut p = vec![0u8; 20 + 32];
    p[0] = 0x45;
    p[4..6].copy_from_slice(&0xfff0u16.to_be_bytes()); // the IDs wrap
    p[6] = 0x40;
    p[8] = 64;
    p[9] = 6;
    p[12..16].copy_from_slice(&[10, 42, 1, 2]);
    p[16..20].copy_from_slice(&[10, 42, 2, 2]);
    p[24..28].copy_from_slice(&0xffff_f000u32.to_be_bytes()); // the sequence wraps
    p[32] = 8 << 4;
    p[33] = TCP_FIN | TCP_PSH | TCP_CWR | 0x10;
    p.extend_from_slice(payload);
    let mut read = vnet(GSO_TCPV4, gso_size, 20, 16, F_NEEDS_CSUM);
    read.extend_from_slice(&p);
    read
}

/// A UDP/IPv6 super-packet (USO).
fn udp6_super(payload: &[u8], gso_size: u16) -> Vec<u8> {
    let mut p = vec![0u8; 40 + 8];
    p[0] = 0x60;
    p[6] = 17;
    p[7] = 64;
    p[8..24].copy_from_slice(&"fd00::1".parse::<std::net::Ipv6Addr>().unwrap().octets());
    p[24..40].copy_from_slice(&"fd00::2".parse::<std::net::Ipv6Addr>().unwrap().octets());
    p[40..42].copy_from_slice(&4000u16.to_be_bytes());
    p[42..44].copy_from_slice(&5000u16.to_be_bytes());
    p.extend_from_slice(payload);
    let mut read = vnet(GSO_UDP_L4, gso_size, 40, 6, F_NEEDS_CSUM);
    read.extend_from_slice(&p);
    read
}

fn payload(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i % 251) as u8).collect()
}

/// Splits `read` into batches of `slots` buffers, as the `tx` thread does.
fn split_all(read: &mut [u8], slots: usize) -> Vec<Vec<u8>> {
    let mut split = Split::begin(read, MAX_PACKET).expect("begin");
    let mut bufs = vec![vec![0u8; MAX_PACKET]; slots];
    let mut sizes = vec![0usize; slots];
    let mut out = Vec::new();
    while !split.is_done() {
        let n = split.fill(read, &mut bufs, &mut sizes);
        assert!(n > 0 && n <= slots);
        out.extend((0..n).map(|i| bufs[i][..sizes[i]].to_vec()));
    }
    assert_eq!(split.fill(read, &mut bufs, &mut sizes), 0);
    out
}

fn transport_sum_ok(seg: &[u8], v6: bool, proto: u64, l4: usize) -> bool {
    let addrs = if v6 { &seg[8..40] } else { &seg[12..20] };
    let pseudo = sum_words(addrs, proto + (seg.len() - l4) as u64);
    fold(sum_words(&seg[l4..], pseudo)) == 0xffff
}

#[test]
fn a_tiny_mss_super_packet_splits_whole_across_many_small_batches() {
    let data = payload(65_000);
    let mut read = tcp4_super(&data, 88);
    let segs = split_all(&mut read, 7);
    assert_eq!(segs.len(), 65_000_usize.div_ceil(88));
    let mut joined = Vec::new();
    for (i, s) in segs.iter().enumerate() {
        let last = i == segs.len() - 1;
        assert_eq!(usize::from(u16::from_be_bytes([s[2], s[3]])), s.len());
        assert_eq!(s.len(), 52 + if last { 65_000 % 88 } else { 88 });
        let id = u16::from_be_bytes([s[4], s[5]]);
        assert_eq!(id, 0xfff0u16.wrapping_add(i as u16));
        assert_eq!(fold(sum_words(&s[..20], 0)), 0xffff, "IPv4 checksum of {i}");
        let seq = u32::from_be_bytes([s[24], s[25], s[26], s[27]]);
        assert_eq!(seq, 0xffff_f000u32.wrapping_add(88 * i as u32));
        let flags = s[33];
        assert_eq!(flags & (TCP_FIN | TCP_PSH) != 0, last, "FIN/PSH of {i}");
        assert_eq!(flags & TCP_CWR != 0, i == 0, "CWR of {i}");
        assert_eq!(flags & 0x10, 0x10);
        assert!(transport_sum_ok(s, false, 6, 20), "TCP checksum of {i}");
        joined.extend_from_slice(&s[52..]);
    }
    assert_eq!(joined, data);
    // Any batch size gives the same segments.
    assert_eq!(split_all(&mut tcp4_super(&data, 88), 1), segs);
    assert_eq!(split_all(&mut tcp4_super(&data, 88), 256), segs);
}

#[test]
fn a_uso_super_packet_over_ipv6_splits_with_udp_lengths_and_checksums() {
    let data = payload(10_000);
    let segs = split_all(&mut udp6_super(&data, 1200), 3);
    assert_eq!(segs.len(), 9);
    let mut joined = Vec::new();
    for s in &segs {
        assert_eq!(usize::from(u16::from_be_bytes([s[4], s[5]])), s.len() - 40);
        assert_eq!(
            usize::from(u16::from_be_bytes([s[44], s[45]])),
            s.len() - 40
        );
        assert!(transport_sum_ok(s, true, 17, 40));
        joined.extend_from_slice(&s[48..]);
    }
    assert_eq!(joined, data);
}

#[test]
fn a_plain_packet_is_copied_with_its_partial_checksum_completed() {
    // A UDP/IPv4 packet whose checksum field holds the pseudo-header's sum, as the kernel
    // leaves it.
    let mut p = vec![0u8; 28 + 5];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&33u16.to_be_bytes());
    p[9] = 17;
    p[12..16].copy_from_slice(&[10, 42, 1, 2]);
    p[16..20].copy_from_slice(&[10, 42, 2, 2]);
    p[24..26].copy_from_slice(&13u16.to_be_bytes());
    p[28..].copy_from_slice(b"hello");
    let pseudo = fold(sum_words(&p[12..20], 17 + 13));
    p[26..28].copy_from_slice(&pseudo.to_be_bytes());
    let mut read = vnet(GSO_NONE, 0, 20, 6, F_NEEDS_CSUM);
    read.extend_from_slice(&p);
    let segs = split_all(&mut read, 4);
    assert_eq!(segs.len(), 1);
    assert_eq!(segs[0].len(), p.len());
    assert!(transport_sum_ok(&segs[0], false, 17, 20));
    // Without the flag it is copied as it is.
    let mut read = vnet(GSO_NONE, 0, 0, 0, 0);
    read.extend_from_slice(&p);
    assert_eq!(split_all(&mut read, 1), vec![p]);
}

#[test]
fn malformed_reads_are_refused_not_split() {
    let refused = |mut read: Vec<u8>| Split::begin(&mut read, MAX_PACKET).unwrap_err();
    assert_eq!(
        refused(vec![0; VNET_HDR_LEN]),
        SplitError::TooShort { len: 10 }
    );
    let mut r = tcp4_super(&payload(100), 88);
    r[1] = 3; // UFO, never negotiated
    assert_eq!(refused(r), SplitError::GsoType { gso_type: 3 });
    let mut r = tcp4_super(&payload(100), 88);
    r[VNET_HDR_LEN + 32] = 2 << 4; // an 8-byte TCP header
    assert!(matches!(refused(r), SplitError::Header { .. }));
    let mut r = tcp4_super(&payload(100), 0);
    r[4] = 0;
    assert!(matches!(refused(r), SplitError::Header { .. }));
    let mut r = tcp4_super(&payload(100), 88);
    r[1] = GSO_TCPV6; // IPv4 packet, IPv6 type
    assert!(matches!(refused(r), SplitError::Header { .. }));
    assert!(matches!(
        refused(tcp4_super(&[], 88)),
        SplitError::Header { .. }
    ));
    assert_eq!(
        refused(tcp4_super(&payload(3000), 1500)),
        SplitError::TooLong {
            len: 1552,
            max: MAX_PACKET
        }
    );
    let mut big = vnet(GSO_NONE, 0, 0, 0, 0);
    big.extend_from_slice(&vec![0x45; 2000]);
    assert!(matches!(refused(big), SplitError::TooLong { .. }));
    // A checksum field past the end.
    let mut r = vnet(GSO_NONE, 0, 20, 60, F_NEEDS_CSUM);
    r.extend_from_slice(&[0x45; 40]);
    assert!(matches!(refused(r), SplitError::Header { .. }));
}

#[test]
fn arbitrary_reads_never_panic_and_split_into_bounded_segments() {
    // xorshift: deterministic, no dependency.
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut bufs = vec![vec![0u8; MAX_PACKET]; 3];
    let mut sizes = vec![0usize; 3];
    let mut split_ok = 0;
    for _ in 0..20_000 {
        // Start from a valid super-packet half the time, then damage a few bytes.
        let mut read = if next() % 2 == 0 {
            let gso = (next() % 1400) as u16 + 1;
            if next() % 2 == 0 {
                tcp4_super(&payload((next() % 9000) as usize), gso)
            } else {
                udp6_super(&payload((next() % 9000) as usize), gso)
            }
        } else {
            (0..next() % 200).map(|_| next() as u8).collect()
        };
        for _ in 0..next() % 4 {
            if !read.is_empty() {
                let at = (next() as usize) % read.len().min(80);
                read[at] = next() as u8;
            }
        }
        let Ok(mut split) = Split::begin(&mut read, MAX_PACKET) else {
            continue;
        };
        split_ok += 1;
        let mut rounds = 0;
        while !split.is_done() {
            let n = split.fill(&read, &mut bufs, &mut sizes);
            assert!(n > 0 && sizes[..n].iter().all(|&s| s <= MAX_PACKET));
            rounds += 1;
            assert!(rounds < 20_000, "the split does not end");
        }
    }
    assert!(split_ok > 1000, "only {split_ok} reads were splittable");
}
