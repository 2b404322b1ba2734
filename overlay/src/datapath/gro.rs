//! Receive coalescing (GRO) for writes to a TUN device opened with `IFF_VNET_HDR`: consecutive
//! TCP segments of one flow in a batch are merged into one super-packet, written with a
//! virtio-net header asking the kernel to treat it as TSO (`GSO_TCPV4`/`GSO_TCPV6`) with a
//! partial checksum. The kernel then handles one large packet instead of dozens — the single
//! largest saving on the receive side.
//!
//! The merge rules follow the kernel's own `tcp_gro_receive`: same addresses and ports, the
//! next sequence number, equal ACK number, window, flags (PSH ends a super-packet), TCP options
//! and IP header fields, equal segment sizes (a shorter one ends it), and a valid TCP checksum
//! on every segment merged (we recompute nothing the sender got wrong).
//!
//! Pure: works in place on the caller's buffers, allocates nothing per packet, no I/O.

use std::ops::Range;

pub use super::vnet::VNET_HDR_LEN;
use super::vnet::{fold, sum_words, F_NEEDS_CSUM, GSO_TCPV4, GSO_TCPV6};

const TCP_FLAG_PSH: u8 = 0x08;
const TCP_FLAG_ACK: u8 = 0x10;
/// Largest IP packet (the IPv4 total length and IPv6 payload length are 16 bits).
const MAX_PACKET: usize = 65_535;

/// Reusable coalescing state; create once per thread.
pub struct Gro {
    flows: Vec<Flow>,
    order: Vec<usize>,
}

#[derive(Debug, Clone, Copy)]
struct Flow {
    /// Buffer holding the super-packet (the flow's first segment).
    head: usize,
    v6: bool,
    ip_len: usize,
    tcp_len: usize,
    /// Payload size of each segment but the last.
    segment: usize,
    next_seq: u32,
    segments: usize,
    psh: bool,
    closed: bool,
}

/// What the merge rules look at in one TCP segment.
#[derive(Debug, Clone, Copy)]
struct Segment {
    v6: bool,
    ip_len: usize,
    tcp_len: usize,
    payload: usize,
    seq: u32,
    psh: bool,
}

impl Gro {
    /// State for batches of up to `batch` packets.
    pub fn new(batch: usize) -> Self {
        Self {
            flows: Vec::with_capacity(batch),
            order: Vec::with_capacity(batch),
        }
    }

    /// Coalesces the packets in `bufs` (each starts at `offset`, which leaves room for the
    /// virtio-net header) and writes a virtio-net header in front of each packet to be written.
    /// Returns the indexes of the buffers to write, in order; each is to be written from
    /// `offset - VNET_HDR_LEN`. A buffer only grows within its capacity.
    pub fn coalesce(&mut self, bufs: &mut [Vec<u8>], offset: usize) -> &[usize] {
        assert!(offset >= VNET_HDR_LEN, "no room for the virtio-net header");
        self.flows.clear();
        self.order.clear();
        for i in 0..bufs.len() {
            let Some(seg) = tcp_segment(&bufs[i][offset..]) else {
                // A packet of an open flow that cannot join it (a pure ACK, FIN, RST) ends the
                // flow, so nothing after it is merged ahead of it.
                self.close_flow_of(bufs, offset, i);
                self.order.push(i);
                continue;
            };
            if let Some(f) = self.mergeable(bufs, offset, i, &seg) {
                let (before, rest) = bufs.split_at_mut(i);
                let head = &mut before[self.flows[f].head];
                let packet = &rest[0][offset..];
                head.extend_from_slice(&packet[seg.ip_len + seg.tcp_len..]);
                let flow = &mut self.flows[f];
                flow.segments += 1;
                flow.next_seq = flow.next_seq.wrapping_add(seg.payload as u32);
                if seg.psh || seg.payload < flow.segment {
                    flow.psh |= seg.psh;
                    flow.closed = true;
                }
                continue;
            }
            self.flows.push(Flow {
                head: i,
                v6: seg.v6,
                ip_len: seg.ip_len,
                tcp_len: seg.tcp_len,
                segment: seg.payload,
                next_seq: seg.seq.wrapping_add(seg.payload as u32),
                segments: 1,
                psh: seg.psh,
                closed: seg.psh,
            });
            self.order.push(i);
        }
        for &i in &self.order {
            bufs[i][offset - VNET_HDR_LEN..offset].fill(0);
        }
        for f in self.flows.iter().filter(|f| f.segments > 1) {
            finish(&mut bufs[f.head][offset - VNET_HDR_LEN..], f);
        }
        &self.order
    }

    /// Closes the flow, if any, that the TCP packet `i` (not a merge candidate) belongs to.
    fn close_flow_of(&mut self, bufs: &[Vec<u8>], offset: usize, i: usize) {
        let packet = &bufs[i][offset..];
        let Some(seg) = tcp_header(packet) else {
            return;
        };
        let key = flow_key(packet, &seg);
        if let Some(f) =
            self.flows.iter_mut().rev().find(|f| {
                f.v6 == seg.v6 && flow_key(&bufs[f.head][offset..], &segment_of(f)) == key
            })
        {
            f.closed = true;
        }
    }

    /// The open flow that packet `i` continues, if its headers allow merging.
    fn mergeable(&self, bufs: &[Vec<u8>], offset: usize, i: usize, seg: &Segment) -> Option<usize> {
        let packet = &bufs[i][offset..];
        let key = flow_key(packet, seg);
        // The latest flow with this key; older ones were closed or cut off.
        let f = self.flows.iter().rposition(|f| {
            f.v6 == seg.v6 && flow_key(&bufs[f.head][offset..], &segment_of(f)) == key
        })?;
        let flow = &self.flows[f];
        let head = &bufs[flow.head][offset..];
        let can = !flow.closed
            && seg.seq == flow.next_seq
            && seg.payload <= flow.segment
            && seg.ip_len == flow.ip_len
            && seg.tcp_len == flow.tcp_len
            && head.len() + seg.payload <= MAX_PACKET
            && bufs[flow.head].len() + seg.payload <= bufs[flow.head].capacity()
            && same_ip_fields(head, packet, seg.v6)
            && same_tcp_fields(head, packet, seg.ip_len, seg.tcp_len)
            && tcp_checksum_valid(packet, seg);
        // The head's own checksum is checked when it becomes a head of more than one.
        (can && (flow.segments > 1 || tcp_checksum_valid(head, &segment_of(flow)))).then_some(f)
    }
}

fn segment_of(f: &Flow) -> Segment {
    Segment {
        v6: f.v6,
        ip_len: f.ip_len,
        tcp_len: f.tcp_len,
        payload: f.segment,
        seq: 0,
        psh: f.psh,
    }
}

/// Addresses and ports: the bytes that name the flow.
fn flow_key<'a>(packet: &'a [u8], seg: &Segment) -> (&'a [u8], &'a [u8]) {
    let addrs: Range<usize> = if seg.v6 { 8..40 } else { 12..20 };
    (&packet[addrs], &packet[seg.ip_len..seg.ip_len + 4])
}

/// Parses any TCP packet enough to name its flow (IPv4 without options, IPv6 without extension
/// headers, as [`tcp_segment`] requires of merge candidates).
fn tcp_header(packet: &[u8]) -> Option<Segment> {
    let (v6, ip_len) = match packet.first()? >> 4 {
        4 if packet[0] == 0x45 && packet.get(9)? == &6 => (false, 20),
        6 if packet.get(6)? == &6 => (true, 40),
        _ => return None,
    };
    (packet.len() >= ip_len + 20).then_some(Segment {
        v6,
        ip_len,
        tcp_len: 20,
        payload: 0,
        seq: 0,
        psh: false,
    })
}

/// Parses an IPv4 (no options, not a fragment) or IPv6 (no extension headers) TCP segment with
/// payload whose flags are ACK or ACK|PSH: the only packets worth merging.
fn tcp_segment(packet: &[u8]) -> Option<Segment> {
    let (v6, ip_len, total) = match packet.first()? >> 4 {
        4 => {
            let total = usize::from(u16::from_be_bytes([*packet.get(2)?, *packet.get(3)?]));
            let fragment = u16::from_be_bytes([*packet.get(6)?, *packet.get(7)?]) & 0x3fff;
            if packet[0] != 0x45 || packet.get(9)? != &6 || fragment != 0 {
                return None;
            }
            (false, 20, total)
        }
        6 => {
            let payload = usize::from(u16::from_be_bytes([*packet.get(4)?, *packet.get(5)?]));
            if packet.get(6)? != &6 {
                return None;
            }
            (true, 40, 40 + payload)
        }
        _ => return None,
    };
    if total != packet.len() || packet.len() < ip_len + 20 {
        return None;
    }
    let tcp = &packet[ip_len..];
    let tcp_len = usize::from(tcp[12] >> 4) * 4;
    let flags = tcp[13];
    if tcp_len < 20 || tcp.len() <= tcp_len || flags & !TCP_FLAG_PSH != TCP_FLAG_ACK {
        return None;
    }
    Some(Segment {
        v6,
        ip_len,
        tcp_len,
        payload: tcp.len() - tcp_len,
        seq: u32::from_be_bytes([tcp[4], tcp[5], tcp[6], tcp[7]]),
        psh: flags & TCP_FLAG_PSH != 0,
    })
}

/// IPv4: TOS, TTL and the DF bit; IPv6: version, traffic class, flow label and hop limit.
fn same_ip_fields(a: &[u8], b: &[u8], v6: bool) -> bool {
    if v6 {
        a[..4] == b[..4] && a[7] == b[7]
    } else {
        a[1] == b[1] && a[8] == b[8] && (a[6] & 0x40) == (b[6] & 0x40)
    }
}

/// ACK number, data offset, flags but PSH, window, and the options.
fn same_tcp_fields(a: &[u8], b: &[u8], ip_len: usize, tcp_len: usize) -> bool {
    let (a, b) = (&a[ip_len..ip_len + tcp_len], &b[ip_len..ip_len + tcp_len]);
    a[8..13] == b[8..13]
        && (a[13] & !TCP_FLAG_PSH) == (b[13] & !TCP_FLAG_PSH)
        && a[14..16] == b[14..16]
        && a[20..] == b[20..]
}

/// Turns a merged head into a TSO super-packet: lengths, IPv4 header checksum, PSH, the TCP
/// checksum field seeded with the pseudo-header sum, and the virtio-net header. `buf` starts
/// with the header's room.
fn finish(buf: &mut [u8], f: &Flow) {
    let (hdr, packet) = buf.split_at_mut(VNET_HDR_LEN);
    let len = packet.len();
    if f.v6 {
        packet[4..6].copy_from_slice(&((len - 40) as u16).to_be_bytes());
    } else {
        packet[2..4].copy_from_slice(&(len as u16).to_be_bytes());
        packet[10..12].fill(0);
        let sum = !fold(sum_words(&packet[..20], 0));
        packet[10..12].copy_from_slice(&sum.to_be_bytes());
    }
    let tcp_total = len - f.ip_len;
    if f.psh {
        packet[f.ip_len + 13] |= TCP_FLAG_PSH;
    }
    let seed = fold(pseudo_header_sum(packet, f.v6, tcp_total));
    packet[f.ip_len + 16..f.ip_len + 18].copy_from_slice(&seed.to_be_bytes());
    hdr[0] = F_NEEDS_CSUM;
    hdr[1] = if f.v6 { GSO_TCPV6 } else { GSO_TCPV4 };
    // The legacy header is in the host's byte order (no TUNSETVNETLE/BE is set).
    hdr[2..4].copy_from_slice(&((f.ip_len + f.tcp_len) as u16).to_ne_bytes());
    hdr[4..6].copy_from_slice(&(f.segment as u16).to_ne_bytes());
    hdr[6..8].copy_from_slice(&(f.ip_len as u16).to_ne_bytes());
    hdr[8..10].copy_from_slice(&16u16.to_ne_bytes());
}

fn tcp_checksum_valid(packet: &[u8], seg: &Segment) -> bool {
    let tcp_total = packet.len() - seg.ip_len;
    let sum = pseudo_header_sum(packet, seg.v6, tcp_total);
    fold(sum_words(&packet[seg.ip_len..], sum)) == 0xffff
}

/// The TCP pseudo-header (addresses, protocol, TCP length), summed.
fn pseudo_header_sum(packet: &[u8], v6: bool, tcp_total: usize) -> u64 {
    let addrs = if v6 { &packet[8..40] } else { &packet[12..20] };
    sum_words(addrs, 6 + tcp_total as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    const OFF: usize = VNET_HDR_LEN;

    /// A TCP/IPv4 segment with a correct checksum.
    fn tcp4(seq: u32, payload: &[u8], flags: u8) -> Vec<u8> {
        let total = 20 + 32 + payload.len();
        let mut p = vec![0u8; total];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
        p[6] = 0x40; // DF
        p[8] = 64;
        p[9] = 6;
        p[12..16].copy_from_slice(&[10, 42, 1, 2]);
        p[16..20].copy_from_slice(&[10, 42, 2, 2]);
        let ip_sum = !fold(sum_words(&p[..20], 0));
        p[10..12].copy_from_slice(&ip_sum.to_be_bytes());
        let t = &mut p[20..];
        t[0..2].copy_from_slice(&40000u16.to_be_bytes());
        t[2..4].copy_from_slice(&5201u16.to_be_bytes());
        t[4..8].copy_from_slice(&seq.to_be_bytes());
        t[8..12].copy_from_slice(&777u32.to_be_bytes());
        t[12] = 8 << 4; // 32-byte header: 12 bytes of options (timestamps)
        t[13] = flags;
        t[14..16].copy_from_slice(&500u16.to_be_bytes());
        t[20..32].copy_from_slice(&[1, 1, 8, 10, 0, 0, 0, 9, 0, 0, 0, 7]);
        t[32..].copy_from_slice(payload);
        set_tcp_checksum(&mut p, false);
        p
    }

    fn set_tcp_checksum(p: &mut [u8], v6: bool) {
        let ip_len = if v6 { 40 } else { 20 };
        p[ip_len + 16..ip_len + 18].fill(0);
        let tcp_total = p.len() - ip_len;
        let sum = pseudo_header_sum(p, v6, tcp_total);
        let c = !fold(sum_words(&p[ip_len..], sum));
        p[ip_len + 16..ip_len + 18].copy_from_slice(&c.to_be_bytes());
    }

    fn tcp6(seq: u32, payload: &[u8]) -> Vec<u8> {
        let total = 40 + 20 + payload.len();
        let mut p = vec![0u8; total];
        p[0] = 0x60;
        p[4..6].copy_from_slice(&((total - 40) as u16).to_be_bytes());
        p[6] = 6;
        p[7] = 64;
        p[23] = 1;
        p[39] = 2;
        let t = &mut p[40..];
        t[4..8].copy_from_slice(&seq.to_be_bytes());
        t[12] = 5 << 4;
        t[13] = TCP_FLAG_ACK;
        t[20..].copy_from_slice(payload);
        set_tcp_checksum(&mut p, true);
        p
    }

    fn batch(packets: &[Vec<u8>]) -> Vec<Vec<u8>> {
        packets
            .iter()
            .map(|p| {
                let mut b = Vec::with_capacity(OFF + MAX_PACKET + OFF);
                b.resize(OFF, 0);
                b.extend_from_slice(p);
                b
            })
            .collect()
    }

    fn payload(n: usize, fill: u8) -> Vec<u8> {
        (0..n).map(|i| fill.wrapping_add(i as u8)).collect()
    }

    /// What the kernel would do with a super-packet: cut it back into segments.
    fn resegment(buf: &[u8]) -> Vec<Vec<u8>> {
        let (hdr, p) = buf.split_at(VNET_HDR_LEN);
        if hdr[1] == 0 {
            return vec![p.to_vec()];
        }
        let hdr_len = usize::from(u16::from_ne_bytes([hdr[2], hdr[3]]));
        let seg = usize::from(u16::from_ne_bytes([hdr[4], hdr[5]]));
        p[hdr_len..].chunks(seg).map(|c| c.to_vec()).collect()
    }

    #[test]
    fn consecutive_segments_merge_into_a_valid_super_packet() {
        let (a, b, c) = (payload(1000, 1), payload(1000, 2), payload(400, 3));
        let mut bufs = batch(&[
            tcp4(1, &a, TCP_FLAG_ACK),
            tcp4(1001, &b, TCP_FLAG_ACK),
            tcp4(2001, &c, TCP_FLAG_ACK | TCP_FLAG_PSH),
        ]);
        let mut gro = Gro::new(8);
        let order = gro.coalesce(&mut bufs, OFF).to_vec();
        assert_eq!(order, vec![0]);
        let buf = &bufs[0];
        let (hdr, p) = buf.split_at(VNET_HDR_LEN);
        assert_eq!(hdr[0], F_NEEDS_CSUM);
        assert_eq!(hdr[1], GSO_TCPV4);
        assert_eq!(u16::from_ne_bytes([hdr[2], hdr[3]]), 52);
        assert_eq!(u16::from_ne_bytes([hdr[4], hdr[5]]), 1000);
        assert_eq!(u16::from_ne_bytes([hdr[6], hdr[7]]), 20);
        assert_eq!(u16::from_ne_bytes([hdr[8], hdr[9]]), 16);
        assert_eq!(usize::from(u16::from_be_bytes([p[2], p[3]])), p.len());
        assert_eq!(p.len(), 52 + 2400);
        assert_eq!(fold(sum_words(&p[..20], 0)), 0xffff, "IPv4 header checksum");
        assert_ne!(p[33] & TCP_FLAG_PSH, 0, "PSH carried over");
        assert_eq!(&p[52..1052], &a[..]);
        assert_eq!(&p[1052..2052], &b[..]);
        assert_eq!(&p[2052..], &c[..]);
        // The checksum field holds the pseudo-header seed: adding the segment gives a valid sum.
        let seeded = fold(sum_words(&p[20..], 0));
        let pseudo = fold(pseudo_header_sum(p, false, p.len() - 20));
        assert_eq!(u16::from_be_bytes([p[36], p[37]]), pseudo);
        assert_ne!(seeded, 0);
        assert_eq!(resegment(buf).len(), 3);
    }

    #[test]
    fn gaps_flag_changes_and_bad_checksums_do_not_merge() {
        let p = payload(1000, 9);
        let mut bad = tcp4(2001, &p, TCP_FLAG_ACK);
        bad[60] ^= 0xff; // payload corrupted after the checksum was computed
        let mut bufs = batch(&[
            tcp4(1, &p, TCP_FLAG_ACK),
            tcp4(1001, &p, TCP_FLAG_ACK),        // merges with 0
            tcp4(5001, &p, TCP_FLAG_ACK),        // gap: new flow head
            tcp4(6001, &p, TCP_FLAG_ACK | 0x01), // FIN: not a candidate
            bad.clone(),
        ]);
        let mut gro = Gro::new(8);
        let order = gro.coalesce(&mut bufs, OFF).to_vec();
        assert_eq!(order, vec![0, 2, 3, 4]);
        assert_eq!(bufs[0].len(), OFF + 52 + 2000);
        for i in [2, 3, 4] {
            assert_eq!(
                &bufs[i][..OFF],
                &[0u8; OFF],
                "plain packets get an empty header"
            );
        }
        assert_eq!(
            &bufs[4][OFF..],
            &bad[..],
            "an invalid segment is passed on untouched"
        );
    }

    #[test]
    fn a_short_segment_or_psh_closes_the_flow() {
        let mut bufs = batch(&[
            tcp4(1, &payload(1000, 1), TCP_FLAG_ACK),
            tcp4(1001, &payload(500, 2), TCP_FLAG_ACK),
            tcp4(1501, &payload(1000, 3), TCP_FLAG_ACK),
        ]);
        let order = Gro::new(8).coalesce(&mut bufs, OFF).to_vec();
        assert_eq!(order, vec![0, 2]);
        assert_eq!(bufs[0].len(), OFF + 52 + 1500);
        assert_eq!(&bufs[2][..OFF], &[0u8; OFF], "a single segment stays plain");
    }

    #[test]
    fn a_pure_ack_of_the_flow_keeps_later_data_behind_it() {
        let mut ack = tcp4(1001, &[], TCP_FLAG_ACK);
        set_tcp_checksum(&mut ack, false);
        let mut bufs = batch(&[
            tcp4(1, &payload(1000, 1), TCP_FLAG_ACK),
            ack,
            tcp4(1001, &payload(1000, 2), TCP_FLAG_ACK),
        ]);
        let order = Gro::new(8).coalesce(&mut bufs, OFF).to_vec();
        assert_eq!(
            order,
            vec![0, 1, 2],
            "data after the ACK must not jump ahead of it"
        );
        assert_eq!(bufs[0].len(), OFF + 52 + 1000);
    }

    #[test]
    fn other_flows_and_other_packets_pass_through_in_order() {
        let mut other = tcp4(1001, &payload(1000, 5), TCP_FLAG_ACK);
        other[19] = 3; // another destination
        set_tcp_checksum(&mut other, false);
        let mut udp = vec![0u8; 28];
        udp[0] = 0x45;
        udp[2..4].copy_from_slice(&28u16.to_be_bytes());
        udp[9] = 17;
        let mut bufs = batch(&[
            tcp4(1, &payload(1000, 1), TCP_FLAG_ACK),
            other,
            udp,
            tcp4(1001, &payload(1000, 2), TCP_FLAG_ACK),
        ]);
        let order = Gro::new(8).coalesce(&mut bufs, OFF).to_vec();
        assert_eq!(order, vec![0, 1, 2]);
        assert_eq!(bufs[0].len(), OFF + 52 + 2000);
    }

    #[test]
    fn ipv6_segments_merge() {
        let mut bufs = batch(&[tcp6(7, &payload(1200, 1)), tcp6(1207, &payload(1200, 2))]);
        let order = Gro::new(8).coalesce(&mut bufs, OFF).to_vec();
        assert_eq!(order, vec![0]);
        let p = &bufs[0][OFF..];
        assert_eq!(bufs[0][1], GSO_TCPV6);
        assert_eq!(usize::from(u16::from_be_bytes([p[4], p[5]])), 20 + 2400);
    }

    #[test]
    fn capacity_and_size_limits_are_respected() {
        let p = payload(1400, 1);
        let packets: Vec<Vec<u8>> = (0..60)
            .map(|i| tcp4(1 + i * 1400, &p, TCP_FLAG_ACK))
            .collect();
        let mut bufs = batch(&packets);
        let order = Gro::new(64).coalesce(&mut bufs, OFF).to_vec();
        assert!(order.len() >= 2, "60 x 1400 bytes exceed one IP packet");
        for &i in &order {
            assert!(bufs[i].len() - OFF <= MAX_PACKET);
        }
        let total: usize = order.iter().map(|&i| resegment(&bufs[i]).len()).sum();
        assert_eq!(total, 60);
        // A buffer without spare capacity is never grown.
        let mut tight: Vec<Vec<u8>> = batch(&packets[..2])
            .into_iter()
            .map(|b| {
                let mut t = Vec::with_capacity(b.len());
                t.extend_from_slice(&b);
                t
            })
            .collect();
        let order = Gro::new(8).coalesce(&mut tight, OFF).to_vec();
        assert_eq!(order, vec![0, 1]);
    }
}
