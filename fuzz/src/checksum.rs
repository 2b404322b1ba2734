//! Internet checksums for building and checking packets in the packet targets.

/// One's-complement sum of big-endian 16-bit words (an odd last byte padded with zero), added to
/// `initial`; not folded.
pub(crate) fn sum(data: &[u8], initial: u64) -> u64 {
    let mut s = initial;
    let mut words = data.chunks_exact(2);
    for w in &mut words {
        s += u64::from(u16::from_be_bytes([w[0], w[1]]));
    }
    if let [last] = words.remainder() {
        s += u64::from(*last) << 8;
    }
    s
}

/// Folds a wide sum into 16 bits.
pub(crate) fn fold(mut s: u64) -> u16 {
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    s as u16
}

/// The pseudo-header sum of a TCP or UDP packet (`proto`) of `transport_len` bytes behind an IP
/// header starting at `packet[0]`.
pub(crate) fn pseudo(packet: &[u8], v6: bool, proto: u8, transport_len: usize) -> u64 {
    let addrs = if v6 { &packet[8..40] } else { &packet[12..20] };
    sum(addrs, u64::from(proto) + transport_len as u64)
}

/// Whether the IPv4 header `header` has a valid checksum.
pub(crate) fn ipv4_valid(header: &[u8]) -> bool {
    fold(sum(header, 0)) == 0xffff
}

/// Whether the transport checksum of `packet` (IP header of `ip_len` bytes) is valid.
pub(crate) fn transport_valid(packet: &[u8], v6: bool, proto: u8, ip_len: usize) -> bool {
    let s = pseudo(packet, v6, proto, packet.len() - ip_len);
    fold(sum(&packet[ip_len..], s)) == 0xffff
}

/// Sets the transport checksum (at `ip_len + at`) of `packet`.
pub(crate) fn set_transport(packet: &mut [u8], v6: bool, proto: u8, ip_len: usize, at: usize) {
    packet[ip_len + at..ip_len + at + 2].fill(0);
    let s = pseudo(packet, v6, proto, packet.len() - ip_len);
    let c = !fold(sum(&packet[ip_len..], s));
    packet[ip_len + at..ip_len + at + 2].copy_from_slice(&c.to_be_bytes());
}

/// Sets the IPv4 header checksum of `packet`.
pub(crate) fn set_ipv4(packet: &mut [u8], ihl: usize) {
    packet[10..12].fill(0);
    let c = !fold(sum(&packet[..ihl], 0));
    packet[10..12].copy_from_slice(&c.to_be_bytes());
}
