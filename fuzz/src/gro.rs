//! Target `gro`: receive coalescing ([`Gro::coalesce`]) over a batch of packets as the receive
//! path hands it over (each at the virtio-net header's offset, in buffers with room for a
//! 64 KB super-packet).
//!
//! Input: a list of operations, each making one packet of the batch — a TCP segment of one of
//! two flows over IPv4 or IPv6 (usually the flow's next one, with a valid checksum; sometimes
//! out of order, short, with other flags or a bad checksum), raw bytes, or a flip of bytes in
//! the previous packet. Invariants: the written buffers are in batch order; a plain one is its
//! input packet untouched; a super-packet has consistent lengths, IPv4 checksum, TCP checksum
//! seed and virtio-net header, and cut at its segment size gives back exactly the payloads of
//! input segments of its flow, in order, with consecutive sequence numbers; every input
//! packet is written exactly once; no buffer is reallocated.

use std::cell::RefCell;

use wgmesh_overlay::datapath::gro::{Gro, VNET_HDR_LEN};

use crate::checksum;
use crate::packet::{self, Spec, ACK, PSH, TCP};
use crate::Input;

const OFF: usize = VNET_HDR_LEN;
const MAX_BATCH: usize = 64;

/// Runs one input.
pub fn run(data: &[u8]) {
    coalesce_and_check(data);
}

/// Runs one input; returns how many super-packets were written.
fn coalesce_and_check(data: &[u8]) -> usize {
    thread_local! {
        /// The receive path's buffers, kept from input to input (allocating 64 of 64 KB each
        /// time would be most of the work).
        static BUFS: RefCell<Vec<Vec<u8>>> = RefCell::new(
            (0..MAX_BATCH).map(|_| Vec::with_capacity(2 * OFF + 65_535)).collect()
        );
    }
    BUFS.with_borrow_mut(|pool| check_batch(data, pool))
}

fn check_batch(data: &[u8], pool: &mut [Vec<u8>]) -> usize {
    let packets = batch(&mut Input::new(data));
    let bufs = &mut pool[..packets.len()];
    for (b, p) in bufs.iter_mut().zip(&packets) {
        b.clear();
        b.resize(OFF, 0);
        b.extend_from_slice(p);
    }
    let capacities: Vec<usize> = bufs.iter().map(Vec::capacity).collect();
    let mut gro = Gro::new(MAX_BATCH);
    let order = gro.coalesce(bufs, OFF).to_vec();
    for (b, cap) in bufs.iter().zip(&capacities) {
        assert_eq!(b.capacity(), *cap, "a buffer was reallocated");
    }
    assert!(order.windows(2).all(|w| w[0] < w[1]), "order {order:?}");
    let mut used = vec![false; packets.len()];
    for &i in &order {
        check_output(&bufs[i], i, &packets, &mut used);
    }
    assert!(used.iter().all(|&u| u), "an input packet was lost");
    order.iter().filter(|&&i| bufs[i][1] != 0).count()
}

struct Flow {
    spec: Spec,
    next: u32,
    mss: usize,
}

fn batch(input: &mut Input<'_>) -> Vec<Vec<u8>> {
    let mut flows: Vec<Flow> = (0..4u16)
        .map(|f| Flow {
            spec: Spec {
                v6: f >= 2,
                proto: TCP,
                sport: 40_000 + f,
                seq: 1000 * u32::from(f),
                flags: ACK,
                options: if f.is_multiple_of(2) { 12 } else { 0 },
                ttl: 64,
            },
            next: 1000 * u32::from(f),
            mss: 100 + 37 * usize::from(f),
        })
        .collect();
    let mut packets: Vec<Vec<u8>> = Vec::new();
    let mut tag = 0u32;
    while !input.is_empty() && packets.len() < MAX_BATCH {
        let op = input.u8();
        tag += 1;
        match op % 8 {
            0..=4 => {
                let flow = &mut flows[usize::from(op >> 6)];
                let choice = input.u8();
                let len = match choice % 8 {
                    0 => 0,
                    1 => usize::from(input.u8()) % flow.mss,
                    2 => usize::from(input.u16()) % 1500,
                    _ => flow.mss,
                };
                let mut spec = flow.spec;
                spec.seq = flow.next;
                if choice & 0x08 != 0 {
                    spec.seq = spec.seq.wrapping_add(u32::from(input.u8()));
                }
                spec.flags = match (choice >> 4) % 8 {
                    0 => ACK | PSH,
                    1 => ACK | 0x01,
                    2 => 0x02,
                    3 => ACK | 0x04,
                    4 => input.u8(),
                    _ => ACK,
                };
                if choice & 0x80 != 0 && op & 0x08 != 0 {
                    spec.ttl = input.u8();
                }
                let mut p = packet::build(&spec, &packet::payload(len, tag));
                if op & 0x10 != 0 && choice & 0x04 != 0 {
                    let at = spec.ip_len() + 16;
                    p[at] ^= 1; // a bad TCP checksum
                }
                flow.next = spec.seq.wrapping_add(len as u32);
                packets.push(p);
            }
            5 => {
                let n = usize::from(input.u8());
                packets.push(input.bytes(n).to_vec());
            }
            _ => {
                if let Some(p) = packets.last_mut().filter(|p| !p.is_empty()) {
                    let at = usize::from(input.u16()) % p.len();
                    p[at] ^= input.u8() | 1;
                }
            }
        }
    }
    packets
}

fn check_output(buf: &[u8], i: usize, inputs: &[Vec<u8>], used: &mut [bool]) {
    let (hdr, p) = buf.split_at(OFF);
    assert!(!used[i], "packet {i} written twice");
    used[i] = true;
    if hdr[1] == 0 {
        assert!(
            hdr.iter().all(|&b| b == 0),
            "a plain packet's header {hdr:?}"
        );
        assert_eq!(p, &inputs[i][..], "a packet that was not merged changed");
        return;
    }
    let v6 = match hdr[1] {
        1 => false,
        4 => true,
        t => panic!("GSO type {t}"),
    };
    let field = |at: usize| usize::from(u16::from_ne_bytes([hdr[at], hdr[at + 1]]));
    let (hdr_len, gso, csum_start, csum_offset) = (field(2), field(4), field(6), field(8));
    let ip_len = if v6 { 40 } else { 20 };
    assert_eq!(hdr[0], 1, "NEEDS_CSUM");
    assert_eq!((csum_start, csum_offset), (ip_len, 16));
    assert!(gso > 0 && hdr_len >= ip_len + 20 && hdr_len < p.len());
    if v6 {
        assert_eq!(usize::from(u16::from_be_bytes([p[4], p[5]])) + 40, p.len());
    } else {
        assert_eq!(usize::from(u16::from_be_bytes([p[2], p[3]])), p.len());
        assert!(checksum::ipv4_valid(&p[..20]), "IPv4 header checksum");
    }
    let seed = checksum::fold(checksum::pseudo(p, v6, TCP, p.len() - ip_len));
    assert_eq!(u16::from_be_bytes([p[ip_len + 16], p[ip_len + 17]]), seed);
    let chunks: Vec<&[u8]> = p[hdr_len..].chunks(gso).collect();
    assert!(chunks.len() >= 2, "a super-packet of one segment");
    let head = &inputs[i];
    assert_eq!(&head[hdr_len..], chunks[0], "the head's payload");
    let key = flow_key(head, ip_len);
    let mut seq = seq_of(head, ip_len).wrapping_add(chunks[0].len() as u32);
    let mut last = i;
    for chunk in &chunks[1..] {
        let j = (last + 1..inputs.len())
            .find(|&j| {
                let q = &inputs[j];
                !used[j]
                    && q.len() == hdr_len + chunk.len()
                    && flow_key(q, ip_len) == key
                    && seq_of(q, ip_len) == seq
                    && &q[hdr_len..] == *chunk
            })
            .unwrap_or_else(|| panic!("a merged segment (seq {seq}) is not an input packet"));
        used[j] = true;
        last = j;
        seq = seq.wrapping_add(chunk.len() as u32);
    }
}

fn flow_key(p: &[u8], ip_len: usize) -> &[u8] {
    let addrs = if ip_len == 40 { 8 } else { 12 };
    &p[addrs..ip_len + 4]
}

fn seq_of(p: &[u8], ip_len: usize) -> u32 {
    let t = &p[ip_len..];
    u32::from_be_bytes([t[4], t[5], t[6], t[7]])
}

/// Seeds (0x73: the flow's next full segment, ACK): a run of one flow ending short, two
/// interleaved flows ending with a PSH, a pure ACK between segments, IPv6 flows, a raw packet
/// between segments, and a bad checksum.
pub fn seeds() -> Vec<Vec<u8>> {
    vec![
        vec![0, 0x73, 0, 0x73, 0, 0x73, 0, 0x71, 50],
        vec![0, 0x73, 0x40, 0x73, 0, 0x73, 0x40, 0x73, 0, 0x03],
        vec![0, 0x73, 0, 0x73, 0, 0x70, 0, 0x73, 0, 0x73],
        vec![0x80, 0x73, 0x80, 0x73, 0xc0, 0x73, 0xc0, 0x73, 0x80, 0x73],
        vec![0, 0x73, 0, 0x73, 5, 3, 1, 2, 3, 0, 0x73],
        vec![0, 0x73, 0x10, 0x77, 0, 0x73, 0, 0x73],
    ]
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_seeds_merge() {
        let merged: Vec<usize> = super::seeds()
            .iter()
            .map(|s| super::coalesce_and_check(s))
            .collect();
        assert_eq!(merged, [1, 2, 2, 2, 1, 1]);
    }
}
