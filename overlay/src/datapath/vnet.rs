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
///
/// Eight bytes at a time in the machine's byte order, with end-around carry; the one's-complement
/// sum is the same in either byte order up to a swap of the folded result (RFC 1071, 2(B)).
pub(super) fn sum_words(data: &[u8], initial: u64) -> u64 {
    let mut acc = 0u64;
    let mut add = |word: u64| {
        let (sum, carry) = acc.overflowing_add(word);
        acc = sum + u64::from(carry);
    };
    let mut chunks = data.chunks_exact(8);
    for c in &mut chunks {
        add(u64::from_ne_bytes([
            c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7],
        ]));
    }
    let rest = chunks.remainder();
    let mut tail = [0u8; 8];
    tail[..rest.len()].copy_from_slice(rest);
    add(u64::from_ne_bytes(tail));
    initial + native_to_be(fold(acc))
}

/// A 16-bit one's-complement sum taken in the machine's byte order, as the big-endian one.
fn native_to_be(sum: u16) -> u64 {
    u64::from(if cfg!(target_endian = "little") {
        sum.swap_bytes()
    } else {
        sum
    })
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

    /// The plain statement: big-endian 16-bit words, an odd byte padded.
    fn reference(data: &[u8], initial: u64) -> u64 {
        data.chunks(2)
            .map(|w| u64::from(u16::from_be_bytes([w[0], *w.get(1).unwrap_or(&0)])))
            .fold(initial, |a, w| a + w)
    }

    proptest::proptest! {
        #[test]
        fn sum_words_folds_like_the_plain_sum(
            data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..3000),
            initial in 0u64..(1 << 40),
            ones in proptest::prelude::any::<bool>(),
        ) {
            // All-ones data drives every carry.
            let data = if ones { vec![0xff; data.len()] } else { data };
            proptest::prop_assert_eq!(fold(sum_words(&data, initial)), fold(reference(&data, initial)));
        }
    }
}
