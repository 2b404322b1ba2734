//! Builds TCP and UDP packets over IPv4 or IPv6 with valid lengths and checksums, for the
//! packet targets' structured inputs.

use crate::checksum;

pub(crate) const TCP: u8 = 6;
pub(crate) const UDP: u8 = 17;
pub(crate) const ACK: u8 = 0x10;
pub(crate) const PSH: u8 = 0x08;

/// What to build.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Spec {
    pub(crate) v6: bool,
    pub(crate) proto: u8,
    /// Source port (names the flow).
    pub(crate) sport: u16,
    pub(crate) seq: u32,
    pub(crate) flags: u8,
    /// Bytes of TCP options (a multiple of 4, at most 40).
    pub(crate) options: usize,
    pub(crate) ttl: u8,
}

impl Spec {
    pub(crate) fn ip_len(&self) -> usize {
        if self.v6 {
            40
        } else {
            20
        }
    }

    pub(crate) fn transport_len(&self) -> usize {
        if self.proto == TCP {
            20 + self.options
        } else {
            8
        }
    }

    pub(crate) fn header_len(&self) -> usize {
        self.ip_len() + self.transport_len()
    }
}

/// The packet `spec` describes, carrying `payload`, with valid lengths and checksums.
pub(crate) fn build(spec: &Spec, payload: &[u8]) -> Vec<u8> {
    let ip_len = spec.ip_len();
    let total = spec.header_len() + payload.len();
    let mut p = vec![0u8; total];
    if spec.v6 {
        p[0] = 0x60;
        p[4..6].copy_from_slice(&((total - 40) as u16).to_be_bytes());
        p[6] = spec.proto;
        p[7] = spec.ttl;
        p[8..24].copy_from_slice(&[0xfd, 0x42, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
        p[24..40].copy_from_slice(&[0xfd, 0x42, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
    } else {
        p[0] = 0x45;
        p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
        p[4..6].copy_from_slice(&0x1234u16.to_be_bytes());
        p[6] = 0x40;
        p[8] = spec.ttl;
        p[9] = spec.proto;
        p[12..16].copy_from_slice(&[10, 42, 1, 2]);
        p[16..20].copy_from_slice(&[10, 42, 2, 2]);
        checksum::set_ipv4(&mut p, 20);
    }
    let t = &mut p[ip_len..];
    t[0..2].copy_from_slice(&spec.sport.to_be_bytes());
    t[2..4].copy_from_slice(&5201u16.to_be_bytes());
    if spec.proto == TCP {
        t[4..8].copy_from_slice(&spec.seq.to_be_bytes());
        t[8..12].copy_from_slice(&777u32.to_be_bytes());
        t[12] = (((20 + spec.options) / 4) as u8) << 4;
        t[13] = spec.flags;
        t[14..16].copy_from_slice(&500u16.to_be_bytes());
        for (i, b) in t[20..20 + spec.options].iter_mut().enumerate() {
            *b = if i % 4 == 0 { 1 } else { i as u8 };
        }
        t[20 + spec.options..].copy_from_slice(payload);
        checksum::set_transport(&mut p, spec.v6, TCP, ip_len, 16);
    } else {
        t[4..6].copy_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
        t[8..].copy_from_slice(payload);
        checksum::set_transport(&mut p, spec.v6, UDP, ip_len, 6);
    }
    p
}

/// `n` payload bytes that differ from packet to packet (`tag`), so that a misplaced segment shows.
pub(crate) fn payload(n: usize, tag: u32) -> Vec<u8> {
    (0..n)
        .map(|i| (tag as usize).wrapping_mul(31).wrapping_add(i) as u8)
        .collect()
}
