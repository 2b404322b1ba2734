//! The legacy virtio-net header that TUN (opened with `IFF_VNET_HDR`) puts before each packet
//! (`struct virtio_net_hdr`, linux/virtio_net.h), and the Internet checksum helpers, shared by
//! [`gro`](super::gro) (writes) and [`tso`](super::tso) (reads).
//!
//! Pure.

/// Size of the legacy virtio-net header (`struct virtio_net_hdr`).
pub const VNET_HDR_LEN: usize = 10;

/// Header flag: the transport checksum is partial (`VIRTIO_NET_HDR_F_NEEDS_CSUM`).
pub(super) const F_NEEDS_CSUM: u8 = 1;
/// GSO types (`VIRTIO_NET_HDR_GSO_*`).
pub(super) const GSO_NONE: u8 = 0;
pub(super) const GSO_TCPV4: u8 = 1;
pub(super) const GSO_TCPV6: u8 = 4;
pub(super) const GSO_UDP_L4: u8 = 5;
pub(super) const GSO_ECN: u8 = 0x80;

/// One's-complement sum of big-endian 16-bit words (an odd last byte is padded with zero),
/// added to `initial`; not folded.
pub(super) fn sum_words(data: &[u8], initial: u64) -> u64 {
    let mut sum = initial;
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        sum += u64::from(u32::from_be_bytes([c[0], c[1], c[2], c[3]]));
    }
    let rest = chunks.remainder();
    let mut tail = [0u8; 4];
    tail[..rest.len()].copy_from_slice(rest);
    sum + u64::from(u32::from_be_bytes(tail))
}

/// Folds a wide one's-complement sum into 16 bits.
pub(super) fn fold(mut sum: u64) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_helpers_match_a_known_header() {
        // RFC 1071-style check on a real IPv4 header (checksum 0xb861).
        let h = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0xb8, 0x61, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(fold(sum_words(&h, 0)), 0xffff);
        assert_eq!(fold(sum_words(&[0xff], 0)), 0xff00);
    }
}
