//! Target `tso`: splitting a TSO/USO super-packet read from TUN into packets of at most the
//! MSS, as the send path does for every read ([`Split`], a few free buffers at a time), into
//! buffers the size the send path uses.
//!
//! Input: a flag byte, then either a well-formed super-packet (TCP or UDP over IPv4 or IPv6,
//! any MSS, any payload length, with a matching virtio-net header) or raw header fields and raw
//! bytes. Invariants on success: as many segments as the payload needs, each of at most the
//! MSS (all but the last exactly), whose payloads concatenate to the original; each has the
//! original headers with correct lengths, IPv4 checksum, consecutive TCP sequence numbers and a
//! valid transport checksum.

use std::cell::RefCell;

use tun_rs::{
    VirtioNetHdr, VIRTIO_NET_HDR_GSO_TCPV4, VIRTIO_NET_HDR_GSO_TCPV6, VIRTIO_NET_HDR_GSO_UDP_L4,
};
use wgmesh_overlay::datapath::tso::Split;

use crate::checksum;
use crate::packet::{self, Spec, ACK, PSH, TCP, UDP};
use crate::Input;

/// The send path's buffers for an MTU of 1420 (`max(mtu, 1280) + 64` bytes), and how many
/// are always free for one super-packet's segments.
const BUF_LEN: usize = 1420 + 64;
const SLOTS: usize = 128;

/// Runs one input.
pub fn run(data: &[u8]) {
    split_and_check(data);
}

/// Runs one input; returns how many segments the split gave (0 when refused).
fn split_and_check(data: &[u8]) -> usize {
    let mut input = Input::new(data);
    let flags = input.u8();
    let v6 = flags & 1 != 0;
    let (hdr, mut packet) = if flags & 0x80 == 0 {
        well_formed(&mut input, flags)
    } else {
        raw(&mut input, v6)
    };
    let original = packet.clone();
    let Some(segments) = split(&mut packet, hdr, v6) else {
        return 0;
    };
    if hdr.gso_type & 0x7f == 0 {
        assert_eq!(segments.len(), 1, "a plain packet is one packet");
        assert_eq!(segments[0].len(), original.len());
        return 1;
    }
    let l4 = usize::from(hdr.csum_start);
    let hdr_len = if hdr.gso_type & 0x7f == VIRTIO_NET_HDR_GSO_UDP_L4 {
        l4 + 8
    } else {
        let offset = original
            .get(l4 + 12)
            .expect("a split TCP packet has a TCP header");
        l4 + usize::from(offset >> 4) * 4
    };
    check(&original, hdr, hdr_len, v6, &segments);
    segments.len()
}

/// The send path's split of one super-packet ([`Split`], as the `tx` thread drives it: a few
/// free buffers at a time until done): its segments, or `None` when it is refused.
fn split(packet: &mut [u8], hdr: VirtioNetHdr, _v6: bool) -> Option<Vec<Vec<u8>>> {
    thread_local! {
        /// The send path's buffers, kept from input to input.
        static BUFS: RefCell<(Vec<Vec<u8>>, Vec<usize>)> =
            RefCell::new((vec![vec![0u8; BUF_LEN]; SLOTS], vec![0usize; SLOTS]));
    }
    let mut read = vec![hdr.flags, hdr.gso_type];
    for field in [hdr.hdr_len, hdr.gso_size, hdr.csum_start, hdr.csum_offset] {
        read.extend_from_slice(&field.to_ne_bytes());
    }
    read.extend_from_slice(packet);
    let mut split = Split::begin(&mut read, BUF_LEN).ok()?;
    // Free buffers vary from fill to fill (1 to 8), as in a batch that is filling up.
    let mut free = 1 + packet.len() % 8;
    BUFS.with_borrow_mut(|(bufs, sizes)| {
        let mut segments = Vec::new();
        while !split.is_done() {
            let n = split.fill(&read, &mut bufs[..free], &mut sizes[..free]);
            assert!(n > 0, "a fill with free buffers made no progress");
            segments.extend(
                bufs[..n]
                    .iter()
                    .zip(&sizes[..n])
                    .map(|(b, &s)| b[..s].to_vec()),
            );
            free = 1 + (free * 5 + 3) % 8;
        }
        Some(segments)
    })
}

fn well_formed(input: &mut Input<'_>, flags: u8) -> (VirtioNetHdr, Vec<u8>) {
    let v6 = flags & 1 != 0;
    let udp = flags & 2 != 0;
    let spec = Spec {
        v6,
        proto: if udp { UDP } else { TCP },
        sport: 40_000,
        seq: input.u32(),
        flags: if flags & 4 != 0 { ACK | PSH } else { ACK },
        options: 4 * input.below(11),
        ttl: 64,
    };
    let mss = 1 + usize::from(input.u16()) % 1500;
    let len = usize::from(input.u16()) % 8000;
    let payload = match input.rest() {
        [] => packet::payload(len, 1),
        bytes => bytes.to_vec(),
    };
    let hdr = VirtioNetHdr {
        flags: 1,
        gso_type: match (udp, v6) {
            (true, _) => VIRTIO_NET_HDR_GSO_UDP_L4,
            (false, false) => VIRTIO_NET_HDR_GSO_TCPV4,
            (false, true) => VIRTIO_NET_HDR_GSO_TCPV6,
        },
        hdr_len: spec.header_len() as u16,
        gso_size: mss as u16,
        csum_start: spec.ip_len() as u16,
        csum_offset: if udp { 6 } else { 16 },
    };
    (hdr, packet::build(&spec, &payload))
}

fn raw(input: &mut Input<'_>, v6: bool) -> (VirtioNetHdr, Vec<u8>) {
    let hdr = VirtioNetHdr {
        flags: input.u8(),
        gso_type: input.u8(),
        hdr_len: input.u16(),
        gso_size: input.u16(),
        csum_start: input.u16(),
        csum_offset: input.u16(),
    };
    let mut packet = input.rest().to_vec();
    if let Some(b) = packet.first_mut() {
        *b = (*b & 0x0f) | if v6 { 0x60 } else { 0x40 };
    }
    (hdr, packet)
}

/// Checks the segments of `original` (whose headers are `hdr_len` bytes) against what the
/// virtio-net header `hdr` asked for.
fn check(original: &[u8], hdr: VirtioNetHdr, hdr_len: usize, v6: bool, segments: &[Vec<u8>]) {
    let ip_len = usize::from(hdr.csum_start);
    let mss = usize::from(hdr.gso_size);
    let tcp = hdr.gso_type & 0x7f != VIRTIO_NET_HDR_GSO_UDP_L4;
    let payload = &original[hdr_len..];
    assert_eq!(segments.len(), payload.len().div_ceil(mss), "segment count");
    let mut joined = Vec::with_capacity(payload.len());
    for (k, seg) in segments.iter().enumerate() {
        let size = seg.len();
        let data = &seg[hdr_len..];
        assert!(
            data.len() <= mss,
            "segment {k}: {} bytes over MSS {mss}",
            data.len()
        );
        if k + 1 < segments.len() {
            assert_eq!(data.len(), mss, "segment {k} is short");
        }
        joined.extend_from_slice(data);
        if v6 {
            assert_eq!(usize::from(u16::from_be_bytes([seg[4], seg[5]])) + 40, size);
        } else {
            assert_eq!(usize::from(u16::from_be_bytes([seg[2], seg[3]])), size);
            assert!(
                checksum::ipv4_valid(&seg[..ip_len]),
                "segment {k}: IPv4 checksum"
            );
        }
        if tcp {
            let seq = |p: &[u8]| {
                u32::from_be_bytes([p[ip_len + 4], p[ip_len + 5], p[ip_len + 6], p[ip_len + 7]])
            };
            assert_eq!(seq(seg), seq(original).wrapping_add((k * mss) as u32));
        }
        let proto = if tcp { TCP } else { UDP };
        assert!(
            checksum::transport_valid(seg, v6, proto, ip_len),
            "segment {k}: transport checksum"
        );
    }
    assert_eq!(
        joined, payload,
        "the segments' payloads are not the original's"
    );
}

/// Seeds: TCP over IPv4 and IPv6 at a usual and a tiny MSS, UDP, and a raw header.
pub fn seeds() -> Vec<Vec<u8>> {
    vec![
        vec![0, 0, 0, 0, 1, 0x05, 0x78, 0x0f, 0xa0],
        vec![1, 0, 0, 0, 1, 0x05, 0x50, 0x20, 0x00],
        vec![4, 0xff, 0xff, 0xff, 0xf0, 0, 0, 0x58, 0x1f, 0x40],
        vec![4, 0, 0, 0, 9, 3, 0, 0x08, 0x10, 0x00],
        vec![2, 0, 0, 0, 0, 0, 0x04, 0xb0, 0x10, 0x00],
        vec![3, 0, 0, 0, 0, 0, 0x05, 0x00, 0x10, 0x00],
        [
            &[0x80u8, 1, 1, 0, 40, 0, 100, 0, 20, 0, 16][..],
            &[0x45; 200],
        ]
        .concat(),
    ]
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_seeds_split() {
        let segments: Vec<usize> = super::seeds()
            .iter()
            .map(|s| super::split_and_check(s))
            .collect();
        assert!(
            segments.iter().filter(|&&n| n > 1).count() >= 4,
            "{segments:?}"
        );
    }
}
