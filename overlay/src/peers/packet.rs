//! What the policy needs to know about an inner IP packet: its addresses, its transport protocol
//! and ports, TCP flags, which kind of ICMP message it is (and, for an ICMP error, the flow of the
//! packet it quotes), and whether it is a fragment.
//!
//! IPv4 options and IPv6 extension headers (hop-by-hop, routing, fragment, destination options,
//! AH; at most [`MAX_EXTENSION_HEADERS`]) are walked. A packet whose headers do not fit its bytes
//! is an error, never a panic: [`parse`] takes untrusted bytes.
//!
//! Pure: no I/O, no clock, no allocation.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// IP protocol numbers the policy looks into.
pub const TCP: u8 = 6;
/// UDP.
pub const UDP: u8 = 17;
/// ICMP for IPv4.
pub const ICMP: u8 = 1;
/// ICMPv6.
pub const ICMPV6: u8 = 58;

/// TCP flags (RFC 9293 section 3.1).
pub const TCP_FIN: u8 = 0x01;
/// SYN.
pub const TCP_SYN: u8 = 0x02;
/// RST.
pub const TCP_RST: u8 = 0x04;
/// ACK.
pub const TCP_ACK: u8 = 0x10;

/// IPv6 extension headers walked before giving up on a packet.
pub const MAX_EXTENSION_HEADERS: usize = 8;

/// The policy's view of one packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet {
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// The transport protocol (after IPv6 extension headers).
    pub proto: u8,
    /// What the transport header says.
    pub l4: L4,
    /// For the first fragment of a fragmented packet, the fragment identification that the
    /// other fragments carry.
    pub first_fragment: Option<u32>,
}

/// The transport part of a [`Packet`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum L4 {
    /// TCP or UDP; `tcp_flags` is 0 for UDP.
    Ports {
        /// Source port.
        sport: u16,
        /// Destination port.
        dport: u16,
        /// The TCP flags byte.
        tcp_flags: u8,
    },
    /// An ICMP echo request (`request`) or reply with this identifier.
    Echo {
        /// The echo identifier.
        id: u16,
        /// Request (IPv4 type 8, IPv6 128) or reply (0, 129).
        request: bool,
    },
    /// An ICMP error (destination unreachable, time exceeded, parameter problem, packet too big)
    /// quoting the start of the packet it is about.
    IcmpError(Quoted),
    /// Any other ICMP message.
    IcmpOther,
    /// A protocol without ports.
    Other,
    /// A fragment other than the first: no transport header; `id` is the fragment
    /// identification.
    Fragment {
        /// The identification shared by the fragments of one packet.
        id: u32,
    },
}

/// The packet an ICMP error quotes: enough of it to find its flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quoted {
    /// Its source.
    pub src: IpAddr,
    /// Its destination.
    pub dst: IpAddr,
    /// Its transport protocol.
    pub proto: u8,
    /// Its ports or echo identifier.
    pub l4: QuotedL4,
}

/// The transport part of a [`Quoted`] packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuotedL4 {
    /// TCP or UDP ports.
    Ports {
        /// Source port.
        sport: u16,
        /// Destination port.
        dport: u16,
    },
    /// An ICMP echo request or reply.
    Echo {
        /// The echo identifier.
        id: u16,
        /// Whether it was a request.
        request: bool,
    },
    /// Another protocol, another ICMP message, or a later fragment.
    Other,
}

/// Why a packet could not be parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseError {
    /// Not IPv4 or IPv6, or a header does not fit the bytes.
    Malformed,
}

/// Parses an IPv4 or IPv6 packet.
pub fn parse(packet: &[u8]) -> Result<Packet, ParseError> {
    let ip = match packet.first().map(|b| b >> 4) {
        Some(4) => ipv4(packet, true)?,
        Some(6) => ipv6(packet, true)?,
        _ => return Err(ParseError::Malformed),
    };
    let l4 = match ip.fragment {
        Fragment::Later(id) => L4::Fragment { id },
        _ => transport(ip.proto, ip.src.is_ipv6(), ip.payload, Depth::Outer)?,
    };
    Ok(Packet {
        src: ip.src,
        dst: ip.dst,
        proto: ip.proto,
        l4,
        first_fragment: match ip.fragment {
            Fragment::First(id) => Some(id),
            _ => None,
        },
    })
}

/// An IP header's fields, and the bytes after it (and its extension headers).
struct Ip<'p> {
    src: IpAddr,
    dst: IpAddr,
    proto: u8,
    fragment: Fragment,
    payload: &'p [u8],
}

enum Fragment {
    /// Not fragmented.
    Whole,
    /// The first fragment of a packet with this identification.
    First(u32),
    /// A later fragment.
    Later(u32),
}

/// Whether a transport header belongs to the packet itself or to one an ICMP error quotes (whose
/// end may be cut off and which must not be an ICMP error itself).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Depth {
    Outer,
    Quoted,
}

/// The IPv4 header; `whole` requires the total length to fit (a quoted header may be cut off).
fn ipv4(p: &[u8], whole: bool) -> Result<Ip<'_>, ParseError> {
    let head = p.get(..20).ok_or(ParseError::Malformed)?;
    let ihl = usize::from(head[0] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([head[2], head[3]]));
    if ihl < 20 || ihl > p.len() || (whole && (total < ihl || total > p.len())) {
        return Err(ParseError::Malformed);
    }
    let end = if whole { total } else { p.len() };
    let id = u32::from(u16::from_be_bytes([head[4], head[5]]));
    let flags = u16::from_be_bytes([head[6], head[7]]);
    let fragment = match (flags & 0x1fff, flags & 0x2000 != 0) {
        (0, false) => Fragment::Whole,
        (0, true) => Fragment::First(id),
        _ => Fragment::Later(id),
    };
    Ok(Ip {
        src: IpAddr::V4(Ipv4Addr::new(head[12], head[13], head[14], head[15])),
        dst: IpAddr::V4(Ipv4Addr::new(head[16], head[17], head[18], head[19])),
        proto: head[9],
        fragment,
        payload: &p[ihl..end],
    })
}

/// The IPv6 header and its extension headers; `whole` requires the payload length to fit.
fn ipv6(p: &[u8], whole: bool) -> Result<Ip<'_>, ParseError> {
    let head = p.get(..40).ok_or(ParseError::Malformed)?;
    let payload_len = usize::from(u16::from_be_bytes([head[4], head[5]]));
    let end = if whole { 40 + payload_len } else { p.len() };
    if whole && (payload_len == 0 || end > p.len()) {
        // A payload length of 0 announces a jumbogram, which no tunnel carries.
        return Err(ParseError::Malformed);
    }
    let addr = |at: usize| {
        let raw: [u8; 16] = head[at..at + 16]
            .try_into()
            .expect("16 bytes of a 40-byte header");
        IpAddr::V6(Ipv6Addr::from(raw))
    };
    let (mut next, mut at, mut fragment) = (head[6], 40, Fragment::Whole);
    for _ in 0..MAX_EXTENSION_HEADERS {
        let ext = p.get(at..end).ok_or(ParseError::Malformed)?;
        let len = match next {
            0 | 43 | 60 => usize::from(*ext.get(1).ok_or(ParseError::Malformed)?) * 8 + 8,
            51 => usize::from(*ext.get(1).ok_or(ParseError::Malformed)?) * 4 + 8,
            44 => {
                let f = ext.get(..8).ok_or(ParseError::Malformed)?;
                let off_m = u16::from_be_bytes([f[2], f[3]]);
                let id = u32::from_be_bytes([f[4], f[5], f[6], f[7]]);
                fragment = match (off_m >> 3, off_m & 1 != 0) {
                    (0, false) => Fragment::Whole,
                    (0, true) => Fragment::First(id),
                    _ => Fragment::Later(id),
                };
                8
            }
            _ => {
                return Ok(Ip {
                    src: addr(8),
                    dst: addr(24),
                    proto: next,
                    fragment,
                    payload: ext,
                })
            }
        };
        if ext.len() < len {
            return Err(ParseError::Malformed);
        }
        next = ext[0];
        at += len;
        if matches!(fragment, Fragment::Later(_)) {
            // The rest of a later fragment is not a header.
            break;
        }
    }
    if matches!(fragment, Fragment::Later(_)) {
        return Ok(Ip {
            src: addr(8),
            dst: addr(24),
            proto: next,
            fragment,
            payload: &[],
        });
    }
    Err(ParseError::Malformed)
}

/// The transport header of protocol `proto` at the start of `payload`.
fn transport(proto: u8, v6: bool, payload: &[u8], depth: Depth) -> Result<L4, ParseError> {
    // A quoted packet needs only its ports (RFC 792 quotes at least 8 bytes of it).
    let (tcp_min, udp_min) = match depth {
        Depth::Outer => (20, 8),
        Depth::Quoted => (4, 4),
    };
    let ports = |min: usize, flags: bool| -> Result<L4, ParseError> {
        let h = payload.get(..min).ok_or(ParseError::Malformed)?;
        Ok(L4::Ports {
            sport: u16::from_be_bytes([h[0], h[1]]),
            dport: u16::from_be_bytes([h[2], h[3]]),
            tcp_flags: if flags && depth == Depth::Outer {
                h[13]
            } else {
                0
            },
        })
    };
    match (proto, v6) {
        (TCP, _) => ports(tcp_min, true),
        (UDP, _) => ports(udp_min, false),
        (ICMP, false) | (ICMPV6, true) => icmp(v6, payload, depth),
        _ => Ok(L4::Other),
    }
}

fn icmp(v6: bool, payload: &[u8], depth: Depth) -> Result<L4, ParseError> {
    let h = payload.get(..8).ok_or(ParseError::Malformed)?;
    let id = u16::from_be_bytes([h[4], h[5]]);
    let (request, reply, error) = if v6 {
        (h[0] == 128, h[0] == 129, matches!(h[0], 1..=4))
    } else {
        (h[0] == 8, h[0] == 0, matches!(h[0], 3 | 11 | 12))
    };
    Ok(match depth {
        _ if request || reply => L4::Echo { id, request },
        Depth::Outer if error => L4::IcmpError(quoted(v6, &payload[8..])?),
        Depth::Outer => L4::IcmpOther,
        // An error about an error: nothing to relate it to.
        Depth::Quoted => L4::Other,
    })
}

/// The packet an ICMP error quotes: of the same family, not a later fragment.
fn quoted(v6: bool, bytes: &[u8]) -> Result<Quoted, ParseError> {
    let ip = match (bytes.first().map(|b| b >> 4), v6) {
        (Some(4), false) => ipv4(bytes, false)?,
        (Some(6), true) => ipv6(bytes, false)?,
        _ => return Err(ParseError::Malformed),
    };
    let l4 = match ip.fragment {
        Fragment::Later(_) => QuotedL4::Other,
        _ => match transport(ip.proto, v6, ip.payload, Depth::Quoted)? {
            L4::Ports { sport, dport, .. } => QuotedL4::Ports { sport, dport },
            L4::Echo { id, request } => QuotedL4::Echo { id, request },
            _ => QuotedL4::Other,
        },
    };
    Ok(Quoted {
        src: ip.src,
        dst: ip.dst,
        proto: ip.proto,
        l4,
    })
}

#[cfg(test)]
mod tests;
