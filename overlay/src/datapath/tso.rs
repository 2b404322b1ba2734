//! What TUN hands over with offloads on — a virtio-net header, then one packet or a TCP/UDP
//! super-packet (TSO/USO) — cut into packets of the segment size the kernel asked for, a few at
//! a time: [`Split::fill`] writes as many segments as the free buffers hold and remembers where
//! it stopped, so a super-packet of any segment size (an MSS of 88 makes 700 segments of a 64 KB
//! super-packet) is split whole, in order, into batch after batch, with nothing dropped and
//! nothing allocated.
//!
//! Each segment gets the super-packet's headers with its own lengths, IPv4 ID, TCP sequence
//! number and flags (FIN and PSH only on the last segment, CWR only on the first, as Linux's own
//! segmentation does) and fresh checksums. A packet that is not a super-packet is copied, with
//! its transport checksum completed when the kernel left it partial.
//!
//! No I/O: the `tx` thread reads TUN before and seals what comes out.

use thiserror::Error;

use super::vnet::{
    fold, sum_words, F_NEEDS_CSUM, GSO_ECN, GSO_NONE, GSO_TCPV4, GSO_TCPV6, GSO_UDP_L4,
    VNET_HDR_LEN,
};

const TCP_FIN: u8 = 0x01;
const TCP_PSH: u8 = 0x08;
const TCP_CWR: u8 = 0x80;

/// Why a packet read from TUN could not be split.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum SplitError {
    /// Shorter than a virtio-net header and one byte.
    #[error("TUN read of {len} bytes is shorter than a virtio-net header and a packet")]
    TooShort {
        /// Bytes read.
        len: usize,
    },
    /// A GSO type other than TCPv4, TCPv6 and UDP (USO).
    #[error("unsupported virtio-net GSO type {gso_type}")]
    GsoType {
        /// The header's `gso_type`.
        gso_type: u8,
    },
    /// Headers that do not fit the packet or contradict the virtio-net header.
    #[error("malformed super-packet: {what}")]
    Header {
        /// What is wrong.
        what: &'static str,
    },
    /// A segment (or the packet) is longer than a buffer of the batch.
    #[error("segment of {len} bytes does not fit a {max}-byte buffer")]
    TooLong {
        /// Bytes of the segment.
        len: usize,
        /// Bytes of a buffer.
        max: usize,
    },
}

/// The packet in the read buffer and how far it has been split. [`Split::default`] holds
/// nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct Split {
    /// Bytes of the packet after the virtio-net header.
    len: usize,
    /// Where the next segment's payload starts (`len`: done).
    next: usize,
    /// Segments written so far.
    index: usize,
    /// `None`: a plain packet, copied whole.
    gso: Option<Gso>,
}

#[derive(Debug, Clone, Copy)]
struct Gso {
    tcp: bool,
    v6: bool,
    /// Where the transport header starts (the IP header's length, with IPv6 extensions).
    l4: usize,
    /// IP and transport headers.
    hdr_len: usize,
    /// Payload bytes per segment.
    size: usize,
    /// The first segment's TCP sequence number.
    seq: u32,
    /// The first segment's IPv4 ID.
    id: u16,
}

impl Split {
    /// Takes the packet `read` from TUN (virtio-net header first) that is to be split into
    /// buffers of `max_packet` bytes. A plain packet's partial checksum is completed in place.
    pub fn begin(read: &mut [u8], max_packet: usize) -> Result<Self, SplitError> {
        if read.len() <= VNET_HDR_LEN {
            return Err(SplitError::TooShort { len: read.len() });
        }
        let (hdr, packet) = read.split_at_mut(VNET_HDR_LEN);
        let field = |at: usize| usize::from(u16::from_ne_bytes([hdr[at], hdr[at + 1]]));
        let (flags, gso_type) = (hdr[0], hdr[1] & !GSO_ECN);
        let (gso_size, csum_start, csum_offset) = (field(4), field(6), field(8));
        let len = packet.len();
        let gso = match gso_type {
            GSO_NONE => {
                if flags & F_NEEDS_CSUM != 0 {
                    complete_checksum(packet, csum_start, csum_offset)?;
                }
                if len > max_packet {
                    return Err(SplitError::TooLong {
                        len,
                        max: max_packet,
                    });
                }
                None
            }
            GSO_TCPV4 | GSO_TCPV6 | GSO_UDP_L4 => {
                Some(Gso::parse(packet, gso_type, gso_size, csum_start)?)
            }
            gso_type => return Err(SplitError::GsoType { gso_type }),
        };
        if let Some(g) = &gso {
            let first = g.hdr_len + g.size.min(len - g.hdr_len);
            if first > max_packet {
                return Err(SplitError::TooLong {
                    len: first,
                    max: max_packet,
                });
            }
        }
        Ok(Self {
            len,
            next: gso.map_or(0, |g| g.hdr_len),
            index: 0,
            gso,
        })
    }

    /// Whether every segment has been written (or nothing was begun).
    pub fn is_done(&self) -> bool {
        self.next >= self.len
    }

    /// Writes the next segments of the packet in `read` (the buffer given to [`Split::begin`])
    /// into `bufs`, one each, setting `sizes`; returns how many, at most `bufs.len()`. Call again
    /// with fresh buffers until [`Split::is_done`].
    pub fn fill(&mut self, read: &[u8], bufs: &mut [Vec<u8>], sizes: &mut [usize]) -> usize {
        let packet = &read[VNET_HDR_LEN..VNET_HDR_LEN + self.len];
        let mut n = 0;
        while !self.is_done() && n < bufs.len() && n < sizes.len() {
            let out = &mut bufs[n];
            sizes[n] = match &self.gso {
                None => {
                    out[..self.len].copy_from_slice(packet);
                    self.next = self.len;
                    self.len
                }
                Some(g) => {
                    let size = g.size.min(self.len - self.next);
                    let last = self.next + size == self.len;
                    let total = g.hdr_len + size;
                    out[..g.hdr_len].copy_from_slice(&packet[..g.hdr_len]);
                    out[g.hdr_len..total].copy_from_slice(&packet[self.next..self.next + size]);
                    g.finish(&mut out[..total], self.index, last);
                    self.next += size;
                    total
                }
            };
            self.index += 1;
            n += 1;
        }
        n
    }
}

impl Gso {
    fn parse(packet: &[u8], gso_type: u8, size: usize, l4: usize) -> Result<Self, SplitError> {
        let bad = |what| Err(SplitError::Header { what });
        let v6 = match packet[0] >> 4 {
            4 if gso_type != GSO_TCPV6 => false,
            6 if gso_type != GSO_TCPV4 => true,
            _ => return bad("IP version does not match the GSO type"),
        };
        if size == 0 {
            return bad("segment size 0");
        }
        let ip_min = if v6 { 40 } else { 20 };
        if l4 < ip_min || (!v6 && usize::from(packet[0] & 0x0f) * 4 != l4) {
            return bad("transport header offset is not after the IP header");
        }
        let tcp = gso_type != GSO_UDP_L4;
        // The kernel's hdr_len is not trusted (it may cover a whole segment on the forwarding
        // path): the transport header's own length is.
        let hdr_len = if tcp {
            let Some(&offset) = packet.get(l4 + 12) else {
                return bad("TCP header cut short");
            };
            let tcp_len = usize::from(offset >> 4) * 4;
            if !(20..=60).contains(&tcp_len) {
                return bad("TCP header length outside 20..=60");
            }
            l4 + tcp_len
        } else {
            l4 + 8
        };
        if hdr_len >= packet.len() {
            return bad("no payload after the headers");
        }
        let be32 = |at: usize| {
            u32::from_be_bytes([packet[at], packet[at + 1], packet[at + 2], packet[at + 3]])
        };
        Ok(Self {
            tcp,
            v6,
            l4,
            hdr_len,
            size,
            seq: if tcp { be32(l4 + 4) } else { 0 },
            id: if v6 {
                0
            } else {
                u16::from_be_bytes([packet[4], packet[5]])
            },
        })
    }

    /// Sets segment `index`'s lengths, IDs, sequence number, flags and checksums.
    fn finish(&self, seg: &mut [u8], index: usize, last: bool) {
        let total = seg.len();
        let l4_len = total - self.l4;
        if self.v6 {
            seg[4..6].copy_from_slice(&((total - 40) as u16).to_be_bytes());
        } else {
            seg[2..4].copy_from_slice(&(total as u16).to_be_bytes());
            let id = self.id.wrapping_add(index as u16);
            seg[4..6].copy_from_slice(&id.to_be_bytes());
            seg[10..12].fill(0);
            let sum = !fold(sum_words(&seg[..self.l4], 0));
            seg[10..12].copy_from_slice(&sum.to_be_bytes());
        }
        let (proto, csum_at) = if self.tcp {
            let seq = self.seq.wrapping_add((self.size * index) as u32);
            seg[self.l4 + 4..self.l4 + 8].copy_from_slice(&seq.to_be_bytes());
            let flags = &mut seg[self.l4 + 13];
            if index > 0 {
                *flags &= !TCP_CWR;
            }
            if !last {
                *flags &= !(TCP_FIN | TCP_PSH);
            }
            (6u64, self.l4 + 16)
        } else {
            seg[self.l4 + 4..self.l4 + 6].copy_from_slice(&(l4_len as u16).to_be_bytes());
            (17u64, self.l4 + 6)
        };
        seg[csum_at..csum_at + 2].fill(0);
        let addrs = if self.v6 { &seg[8..40] } else { &seg[12..20] };
        let pseudo = sum_words(addrs, proto + l4_len as u64);
        let mut sum = !fold(sum_words(&seg[self.l4..], pseudo));
        if !self.tcp && sum == 0 {
            sum = 0xffff; // UDP: 0 means "no checksum"
        }
        seg[csum_at..csum_at + 2].copy_from_slice(&sum.to_be_bytes());
    }
}

/// Completes a partial transport checksum: the field holds the pseudo-header's sum, the rest is
/// summed from `start` to the end.
fn complete_checksum(packet: &mut [u8], start: usize, offset: usize) -> Result<(), SplitError> {
    let at = start + offset;
    if at + 2 > packet.len() {
        return Err(SplitError::Header {
            what: "checksum field outside the packet",
        });
    }
    let sum = !fold(sum_words(&packet[start..], 0));
    packet[at..at + 2].copy_from_slice(&sum.to_be_bytes());
    Ok(())
}

#[cfg(test)]
mod tests;
