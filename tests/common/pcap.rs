//! Packet capture with `tcpdump -w`, and a reader for classic pcap files (Ethernet).

use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::time::Duration;

use nix::sys::signal::Signal;

use super::netns::{Netns, Proc};
use super::wait_until;

/// A running `tcpdump -i IFACE -w FILE -U --immediate-mode -B 65536` inside a namespace: every packet is
/// handed to tcpdump and written as it arrives (no capture-ring block waiting for its buffer
/// timeout), so what was sent before [`Capture::stop`] is in the file.
pub struct Capture {
    proc: Proc,
    file: PathBuf,
    _dir: tempfile::TempDir,
}

impl Capture {
    /// Starts capturing and returns once tcpdump reports it is listening.
    pub fn start(ns: &Netns, iface: &str) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("wgm-pcap")
            .tempdir()
            .expect("tempdir");
        let file = dir.path().join("capture.pcap");
        let log = dir.path().join("tcpdump.log");
        let f = file.to_str().expect("utf-8 path").to_string();
        let mut proc = ns.spawn(
            &[
                "tcpdump",
                "-i",
                iface,
                "-w",
                &f,
                "-U",
                "--immediate-mode",
                // 64 MiB of capture buffer: with every packet handed over at once, the default
                // 2 MiB overflows under a bulk transfer and the kernel drops frames.
                "-B",
                "65536",
                "-n",
                "-s",
                "0",
                "-Z",
                "root",
            ],
            &[],
            &log,
        );
        let ready = wait_until(Duration::from_secs(10), || {
            proc.log().contains("listening on") || !proc.is_running()
        });
        assert!(
            ready && proc.is_running(),
            "tcpdump on {iface} in {} did not start: {}",
            ns.name(),
            proc.log()
        );
        Self {
            proc,
            file,
            _dir: dir,
        }
    }

    /// Stops tcpdump (SIGINT, by PID) and returns the capture file's bytes.
    pub fn stop(mut self) -> Vec<u8> {
        let st = self.proc.stop_with(Signal::SIGINT);
        assert!(st.is_some(), "tcpdump did not stop");
        eprintln!("tcpdump: {}", self.proc.log().trim());
        std::fs::read(&self.file).expect("read capture file")
    }
}

/// An IPv4 packet from a capture.
#[derive(Debug, Clone)]
pub struct Ipv4Packet {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub protocol: u8,
    /// Bytes after the IPv4 header (as captured).
    pub payload: Vec<u8>,
    /// IPv4 total length field.
    pub total_len: u16,
    /// More-fragments flag or a non-zero fragment offset.
    pub fragment: bool,
}

impl Ipv4Packet {
    /// (source port, destination port, UDP length field, UDP payload) when this is UDP.
    pub fn udp(&self) -> Option<(u16, u16, u16, &[u8])> {
        if self.protocol != 17 || self.fragment || self.payload.len() < 8 {
            return None;
        }
        let p = &self.payload;
        Some((
            u16::from_be_bytes([p[0], p[1]]),
            u16::from_be_bytes([p[2], p[3]]),
            u16::from_be_bytes([p[4], p[5]]),
            &p[8..],
        ))
    }
}

/// The addresses of an IPv6 packet from a capture.
#[derive(Debug, Clone)]
pub struct Ipv6Packet {
    pub src: Ipv6Addr,
    pub dst: Ipv6Addr,
    /// The first header after the fixed one.
    pub next_header: u8,
}

/// A frame from a capture: its ethertype and, when IPv4 or IPv6, the packet.
#[derive(Debug, Clone)]
pub struct Frame {
    pub ethertype: u16,
    pub ipv4: Option<Ipv4Packet>,
    pub ipv6: Option<Ipv6Packet>,
    /// True if the frame was cut short by the snap length.
    pub truncated: bool,
}

/// Parses a classic pcap file with Ethernet link type.
pub fn parse(bytes: &[u8]) -> Result<Vec<Frame>, String> {
    if bytes.len() < 24 {
        return Err(format!("pcap too short: {} bytes", bytes.len()));
    }
    let magic = u32::from_le_bytes(bytes[0..4].try_into().unwrap());
    let le = match magic {
        0xa1b2_c3d4 | 0xa1b2_3c4d => true,
        0xd4c3_b2a1 | 0x4d3c_b2a1 => false,
        m => return Err(format!("not a classic pcap file (magic {m:#x})")),
    };
    let u32_at = |b: &[u8], o: usize| {
        let a: [u8; 4] = b[o..o + 4].try_into().unwrap();
        if le {
            u32::from_le_bytes(a)
        } else {
            u32::from_be_bytes(a)
        }
    };
    let linktype = u32_at(bytes, 20);
    if linktype != 1 {
        return Err(format!("link type {linktype}, expected 1 (Ethernet)"));
    }
    let mut frames = Vec::new();
    let mut off = 24;
    while off < bytes.len() {
        if off + 16 > bytes.len() {
            return Err(format!("truncated record header at {off}"));
        }
        let caplen = u32_at(bytes, off + 8) as usize;
        let origlen = u32_at(bytes, off + 12) as usize;
        off += 16;
        if off + caplen > bytes.len() {
            return Err(format!("truncated record at {off}"));
        }
        let data = &bytes[off..off + caplen];
        off += caplen;
        frames.push(parse_ethernet(data, caplen < origlen));
    }
    Ok(frames)
}

fn parse_ethernet(data: &[u8], truncated: bool) -> Frame {
    if data.len() < 14 {
        return Frame {
            ethertype: 0,
            ipv4: None,
            ipv6: None,
            truncated: true,
        };
    }
    let mut ethertype = u16::from_be_bytes([data[12], data[13]]);
    let mut l3 = &data[14..];
    // 802.1Q tag
    if ethertype == 0x8100 && l3.len() >= 4 {
        ethertype = u16::from_be_bytes([l3[2], l3[3]]);
        l3 = &l3[4..];
    }
    let ipv4 = if ethertype == 0x0800 && l3.len() >= 20 && l3[0] >> 4 == 4 {
        let ihl = usize::from(l3[0] & 0x0f) * 4;
        let total_len = u16::from_be_bytes([l3[2], l3[3]]);
        let flags_frag = u16::from_be_bytes([l3[6], l3[7]]);
        let end = usize::from(total_len).min(l3.len()).max(ihl.min(l3.len()));
        Some(Ipv4Packet {
            src: Ipv4Addr::new(l3[12], l3[13], l3[14], l3[15]),
            dst: Ipv4Addr::new(l3[16], l3[17], l3[18], l3[19]),
            protocol: l3[9],
            payload: l3[ihl.min(l3.len())..end].to_vec(),
            total_len,
            fragment: flags_frag & 0x3fff != 0,
        })
    } else {
        None
    };
    let ipv6 = (ethertype == 0x86dd && l3.len() >= 40 && l3[0] >> 4 == 6).then(|| {
        let addr = |o: usize| Ipv6Addr::from(<[u8; 16]>::try_from(&l3[o..o + 16]).unwrap());
        Ipv6Packet {
            src: addr(8),
            dst: addr(24),
            next_header: l3[6],
        }
    });
    Frame {
        ethertype,
        ipv4,
        ipv6,
        truncated,
    }
}

/// True if `needle` occurs anywhere in `haystack`.
pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

/// Counts of WireGuard message types seen in a capture.
#[derive(Debug, Default, Clone, Copy)]
pub struct WireSummary {
    pub initiations: usize,
    pub responses: usize,
    pub cookies: usize,
    pub data: usize,
    pub data_bytes: usize,
    /// ICMP port-unreachable errors quoting a WireGuard datagram (sent by a kernel when a
    /// handshake reached a host before its agent listened; they carry no overlay data).
    pub icmp_port_unreachable: usize,
}

/// True if `ip` is an ICMP destination-unreachable quoting a UDP datagram between the two
/// given endpoints (in the direction the quote says, either way round).
fn icmp_quotes_wireguard(ip: &Ipv4Packet, a: (Ipv4Addr, u16), b: (Ipv4Addr, u16)) -> bool {
    let p = &ip.payload;
    if ip.protocol != 1 || p.len() < 8 + 20 + 8 || p[0] != 3 {
        return false;
    }
    let q = &p[8..];
    let ihl = usize::from(q[0] & 0x0f) * 4;
    if q[0] >> 4 != 4 || q[9] != 17 || q.len() < ihl + 8 {
        return false;
    }
    let src = Ipv4Addr::new(q[12], q[13], q[14], q[15]);
    let dst = Ipv4Addr::new(q[16], q[17], q[18], q[19]);
    let sport = u16::from_be_bytes([q[ihl], q[ihl + 1]]);
    let dport = u16::from_be_bytes([q[ihl + 2], q[ihl + 3]]);
    ((src, sport), (dst, dport)) == (a, b) || ((src, sport), (dst, dport)) == (b, a)
}

/// Checks every IPv4 packet between hosts `a` and `b`: UDP between `port_a` (on `a`) and
/// `port_b` (on `b`), a WireGuard message (type 1..=4 then three zero bytes, with the
/// length that type has). Returns the counts, or every violation found.
pub fn check_wireguard_only(
    frames: &[Frame],
    (a, port_a): (Ipv4Addr, u16),
    (b, port_b): (Ipv4Addr, u16),
) -> Result<WireSummary, Vec<String>> {
    let mut errors = Vec::new();
    let mut sum = WireSummary::default();
    for (i, f) in frames.iter().enumerate() {
        let Some(ip) = &f.ipv4 else { continue };
        let between = (ip.src == a && ip.dst == b) || (ip.src == b && ip.dst == a);
        if !between {
            continue;
        }
        if f.truncated {
            errors.push(format!("frame {i}: truncated by the capture"));
            continue;
        }
        if icmp_quotes_wireguard(ip, (a, port_a), (b, port_b)) {
            sum.icmp_port_unreachable += 1;
            continue;
        }
        let Some((sport, dport, ulen, payload)) = ip.udp() else {
            errors.push(format!(
                "frame {i}: {} -> {} protocol {} (fragment: {}) is not UDP",
                ip.src, ip.dst, ip.protocol, ip.fragment
            ));
            continue;
        };
        let (want_s, want_d) = if ip.src == a {
            (port_a, port_b)
        } else {
            (port_b, port_a)
        };
        if (sport, dport) != (want_s, want_d) {
            errors.push(format!(
                "frame {i}: {}:{sport} -> {}:{dport}, expected ports {want_s} -> {want_d}",
                ip.src, ip.dst
            ));
            continue;
        }
        if usize::from(ulen) != payload.len() + 8 {
            errors.push(format!(
                "frame {i}: UDP length {ulen} but {} payload bytes (a GSO super-packet?)",
                payload.len()
            ));
            continue;
        }
        if payload.len() < 4 || !(1..=4).contains(&payload[0]) || payload[1..4] != [0, 0, 0] {
            errors.push(format!(
                "frame {i}: {}:{sport} -> {}:{dport} payload does not start like a WireGuard message: {:02x?}",
                ip.src,
                ip.dst,
                &payload[..payload.len().min(8)]
            ));
            continue;
        }
        let len_ok = match payload[0] {
            1 => payload.len() == 148,
            2 => payload.len() == 92,
            3 => payload.len() == 64,
            // header 16 + (padded) plaintext + tag 16; padding stops at the MTU.
            _ => payload.len() >= 32,
        };
        if !len_ok {
            errors.push(format!(
                "frame {i}: WireGuard message type {} with wrong length {}",
                payload[0],
                payload.len()
            ));
            continue;
        }
        match payload[0] {
            1 => sum.initiations += 1,
            2 => sum.responses += 1,
            3 => sum.cookies += 1,
            _ => {
                sum.data += 1;
                sum.data_bytes += payload.len();
            }
        }
    }
    if errors.is_empty() {
        Ok(sum)
    } else {
        Err(errors)
    }
}
