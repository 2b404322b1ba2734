//! Parsing of the few header fields the data path looks at: the WireGuard message type and
//! receiver index of a datagram, and the source and destination of an inner IP packet.
//!
//! Pure: no I/O, no clock. Every function takes untrusted bytes and never panics.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The four WireGuard message types (WireGuard paper, section 5.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageKind {
    /// Type 1: handshake initiation (148 bytes).
    HandshakeInit,
    /// Type 2: handshake response (92 bytes), addressed by receiver index.
    HandshakeResponse,
    /// Type 3: cookie reply (64 bytes), addressed by receiver index.
    CookieReply,
    /// Type 4: transport data (at least 32 bytes), addressed by receiver index.
    Data,
}

/// Size of a handshake initiation message.
pub const HANDSHAKE_INIT_LEN: usize = 148;
/// Size of a handshake response message.
pub const HANDSHAKE_RESPONSE_LEN: usize = 92;
/// Size of a cookie reply message.
pub const COOKIE_REPLY_LEN: usize = 64;
/// Header (16 bytes) plus Poly1305 tag (16 bytes) of a data message.
pub const DATA_OVERHEAD: usize = 32;

/// Classifies a datagram by its first four bytes (type and three reserved zero bytes) and length.
/// Returns `None` for anything that is not a well-formed WireGuard message.
pub fn classify(datagram: &[u8]) -> Option<MessageKind> {
    let head: [u8; 4] = datagram.get(..4)?.try_into().ok()?;
    let kind = match u32::from_le_bytes(head) {
        1 if datagram.len() == HANDSHAKE_INIT_LEN => MessageKind::HandshakeInit,
        2 if datagram.len() == HANDSHAKE_RESPONSE_LEN => MessageKind::HandshakeResponse,
        3 if datagram.len() == COOKIE_REPLY_LEN => MessageKind::CookieReply,
        4 if datagram.len() >= DATA_OVERHEAD => MessageKind::Data,
        _ => return None,
    };
    Some(kind)
}

/// The receiver index of a response, cookie reply or data message (bytes 4..8 for data and cookie
/// replies, 8..12 for responses), shifted right by 8 to drop boringtun's session counter: what is
/// left is the 24-bit peer index we handed to `Tunn::new`.
pub fn peer_index(kind: MessageKind, datagram: &[u8]) -> Option<u32> {
    let at = match kind {
        MessageKind::HandshakeInit => return None,
        MessageKind::HandshakeResponse => 8,
        MessageKind::CookieReply | MessageKind::Data => 4,
    };
    let raw: [u8; 4] = datagram.get(at..at + 4)?.try_into().ok()?;
    Some(u32::from_le_bytes(raw) >> 8)
}

/// The destination address of an IPv4 or IPv6 packet.
pub fn inner_destination(packet: &[u8]) -> Option<IpAddr> {
    match packet.first()? >> 4 {
        4 => v4_at(packet, 16).map(IpAddr::V4),
        6 => v6_at(packet, 24).map(IpAddr::V6),
        _ => None,
    }
}

/// The source address of an IPv4 or IPv6 packet.
pub fn inner_source(packet: &[u8]) -> Option<IpAddr> {
    match packet.first()? >> 4 {
        4 => v4_at(packet, 12).map(IpAddr::V4),
        6 => v6_at(packet, 8).map(IpAddr::V6),
        _ => None,
    }
}

fn v4_at(packet: &[u8], at: usize) -> Option<Ipv4Addr> {
    if packet.len() < 20 {
        return None;
    }
    let raw: [u8; 4] = packet.get(at..at + 4)?.try_into().ok()?;
    Some(Ipv4Addr::from(raw))
}

fn v6_at(packet: &[u8], at: usize) -> Option<Ipv6Addr> {
    if packet.len() < 40 {
        return None;
    }
    let raw: [u8; 16] = packet.get(at..at + 16)?.try_into().ok()?;
    Some(Ipv6Addr::from(raw))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ipv4(src: [u8; 4], dst: [u8; 4]) -> Vec<u8> {
        let mut p = vec![0u8; 28];
        p[0] = 0x45;
        p[12..16].copy_from_slice(&src);
        p[16..20].copy_from_slice(&dst);
        p
    }

    #[test]
    fn classifies_by_type_reserved_bytes_and_length() {
        let mut init = vec![0u8; HANDSHAKE_INIT_LEN];
        init[0] = 1;
        assert_eq!(classify(&init), Some(MessageKind::HandshakeInit));
        init[1] = 1; // reserved bytes must be zero
        assert_eq!(classify(&init), None);
        let mut resp = vec![0u8; HANDSHAKE_RESPONSE_LEN];
        resp[0] = 2;
        assert_eq!(classify(&resp), Some(MessageKind::HandshakeResponse));
        assert_eq!(classify(&resp[..91]), None);
        let mut data = vec![0u8; 32];
        data[0] = 4;
        assert_eq!(classify(&data), Some(MessageKind::Data));
        assert_eq!(classify(&data[..31]), None);
        assert_eq!(classify(&[4, 0, 0]), None);
        assert_eq!(classify(b"GET / HTTP/1.1\r\n"), None);
    }

    #[test]
    fn peer_index_drops_the_session_byte() {
        let mut data = vec![0u8; 48];
        data[0] = 4;
        data[4..8].copy_from_slice(&((0x00ab_cdefu32 << 8) | 7).to_le_bytes());
        assert_eq!(peer_index(MessageKind::Data, &data), Some(0x00ab_cdef));
        let mut resp = vec![0u8; HANDSHAKE_RESPONSE_LEN];
        resp[0] = 2;
        resp[8..12].copy_from_slice(&(0x12u32 << 8).to_le_bytes());
        assert_eq!(
            peer_index(MessageKind::HandshakeResponse, &resp),
            Some(0x12)
        );
        assert_eq!(peer_index(MessageKind::HandshakeInit, &[0; 148]), None);
    }

    #[test]
    fn inner_addresses_v4_and_v6() {
        let p = ipv4([10, 42, 1, 2], [10, 42, 2, 3]);
        assert_eq!(inner_source(&p), Some("10.42.1.2".parse().unwrap()));
        assert_eq!(inner_destination(&p), Some("10.42.2.3".parse().unwrap()));
        assert_eq!(inner_source(&p[..19]), None);
        let mut v6 = vec![0u8; 40];
        v6[0] = 0x60;
        v6[8 + 15] = 1;
        v6[24 + 15] = 2;
        assert_eq!(inner_source(&v6), Some("::1".parse().unwrap()));
        assert_eq!(inner_destination(&v6), Some("::2".parse().unwrap()));
        assert_eq!(inner_destination(&[]), None);
        assert_eq!(inner_destination(&[0x55; 40]), None);
    }
}
