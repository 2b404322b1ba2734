use proptest::prelude::*;

use super::*;
use crate::peers::fixture::{icmp, ip, tcp, udp};

fn addr(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn tcp_and_udp_give_ports_and_flags() {
    let p = parse(&ip("10.42.1.2", "10.42.2.2", TCP, &tcp(40000, 80, TCP_SYN))).unwrap();
    assert_eq!(
        (p.src, p.dst, p.proto),
        (addr("10.42.1.2"), addr("10.42.2.2"), TCP)
    );
    assert_eq!(
        p.l4,
        L4::Ports {
            sport: 40000,
            dport: 80,
            tcp_flags: TCP_SYN
        }
    );
    assert_eq!(p.first_fragment, None);
    let p = parse(&ip("fd42:1::2", "fd42:2::2", UDP, &udp(5353, 53))).unwrap();
    assert_eq!(
        p.l4,
        L4::Ports {
            sport: 5353,
            dport: 53,
            tcp_flags: 0
        }
    );
    let p = parse(&ip("10.0.0.1", "10.0.0.2", 47, &[0; 4])).unwrap();
    assert_eq!((p.proto, p.l4), (47, L4::Other));
}

#[test]
fn ipv4_options_and_ipv6_extension_headers_are_walked() {
    // IHL 6: one word of options before the TCP header.
    let mut v4 = ip(
        "10.0.0.1",
        "10.0.0.2",
        TCP,
        &[[1u8, 1, 1, 0].as_slice(), &tcp(1, 2, 0)].concat(),
    );
    v4[0] = 0x46;
    assert!(matches!(
        parse(&v4).unwrap().l4,
        L4::Ports {
            sport: 1,
            dport: 2,
            ..
        }
    ));
    // Hop-by-hop (8 bytes), then destination options (16 bytes), then UDP.
    let mut ext = vec![60, 0, 0, 0, 0, 0, 0, 0];
    ext.extend_from_slice(&[UDP, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    ext.extend_from_slice(&udp(7, 9));
    let p = parse(&ip("fd00::1", "fd00::2", 0, &ext)).unwrap();
    assert_eq!(p.proto, UDP);
    assert!(matches!(
        p.l4,
        L4::Ports {
            sport: 7,
            dport: 9,
            ..
        }
    ));
    // An extension header running past the packet is malformed.
    let cut = ip("fd00::1", "fd00::2", 0, &ext[..12]);
    assert_eq!(parse(&cut), Err(ParseError::Malformed));
    // More extension headers than are walked.
    let many: Vec<u8> = (0..=MAX_EXTENSION_HEADERS)
        .flat_map(|_| [60, 0, 0, 0, 0, 0, 0, 0])
        .collect();
    assert_eq!(
        parse(&ip("fd00::1", "fd00::2", 60, &many)),
        Err(ParseError::Malformed)
    );
}

#[test]
fn icmp_echo_errors_and_others() {
    let req = parse(&ip("10.0.0.1", "10.0.0.2", ICMP, &icmp(8, 77, &[]))).unwrap();
    assert_eq!(
        req.l4,
        L4::Echo {
            id: 77,
            request: true
        }
    );
    let rep = parse(&ip("fd00::2", "fd00::1", ICMPV6, &icmp(129, 77, &[]))).unwrap();
    assert_eq!(
        rep.l4,
        L4::Echo {
            id: 77,
            request: false
        }
    );
    // ICMPv6's numbers mean nothing in IPv4 and the other way round.
    let odd = parse(&ip("10.0.0.1", "10.0.0.2", ICMPV6, &icmp(128, 1, &[]))).unwrap();
    assert_eq!(odd.l4, L4::Other);
    let other = parse(&ip("10.0.0.1", "10.0.0.2", ICMP, &icmp(13, 1, &[]))).unwrap();
    assert_eq!(other.l4, L4::IcmpOther);

    // Port unreachable, quoting the UDP packet 10.0.0.2:5000 -> 10.0.0.1:53 (cut after 8 bytes
    // of its payload, as RFC 792 allows).
    let quoted = ip("10.0.0.2", "10.0.0.1", UDP, &udp(5000, 53));
    let err = ip("10.0.0.1", "10.0.0.2", ICMP, &icmp(3, 0, &quoted[..28]));
    let L4::IcmpError(q) = parse(&err).unwrap().l4 else {
        panic!("an error");
    };
    assert_eq!(
        (q.src, q.dst, q.proto),
        (addr("10.0.0.2"), addr("10.0.0.1"), UDP)
    );
    assert_eq!(
        q.l4,
        QuotedL4::Ports {
            sport: 5000,
            dport: 53
        }
    );
    // Packet too big quoting an echo request; an error quoting an error relates to nothing.
    let echo = ip("fd00::1", "fd00::2", ICMPV6, &icmp(128, 9, &[]));
    let big = ip("fd00::9", "fd00::1", ICMPV6, &icmp(2, 0, &echo));
    let L4::IcmpError(q) = parse(&big).unwrap().l4 else {
        panic!("an error");
    };
    assert_eq!(
        q.l4,
        QuotedL4::Echo {
            id: 9,
            request: true
        }
    );
    let nested = ip("fd00::9", "fd00::1", ICMPV6, &icmp(1, 0, &big));
    let L4::IcmpError(q) = parse(&nested).unwrap().l4 else {
        panic!("an error");
    };
    assert_eq!(q.l4, QuotedL4::Other);
    // A quote of the other family, or too short for its ports, is malformed.
    let v6_in_v4 = ip("10.0.0.1", "10.0.0.2", ICMP, &icmp(3, 0, &echo));
    assert_eq!(parse(&v6_in_v4), Err(ParseError::Malformed));
    let short = ip("10.0.0.1", "10.0.0.2", ICMP, &icmp(3, 0, &quoted[..22]));
    assert_eq!(parse(&short), Err(ParseError::Malformed));
}

#[test]
fn fragments_first_and_later() {
    let mut first = ip("10.0.0.1", "10.0.0.2", UDP, &udp(1, 2));
    first[4..6].copy_from_slice(&0x1234u16.to_be_bytes());
    first[6] = 0x20; // more fragments, offset 0
    let p = parse(&first).unwrap();
    assert_eq!(p.first_fragment, Some(0x1234));
    assert!(matches!(
        p.l4,
        L4::Ports {
            sport: 1,
            dport: 2,
            ..
        }
    ));
    let mut later = first.clone();
    later[6..8].copy_from_slice(&185u16.to_be_bytes()); // offset 185 * 8, last fragment
    let p = parse(&later).unwrap();
    assert_eq!(
        (p.l4, p.first_fragment),
        (L4::Fragment { id: 0x1234 }, None)
    );

    // IPv6: a fragment header (offset 0, M) before UDP, then a later fragment of the same.
    let mut frag = vec![UDP, 0, 0, 1, 0, 0, 0xab, 0xcd];
    frag.extend_from_slice(&udp(3, 4));
    let p = parse(&ip("fd00::1", "fd00::2", 44, &frag)).unwrap();
    assert_eq!((p.proto, p.first_fragment), (UDP, Some(0xabcd)));
    let later = ip(
        "fd00::1",
        "fd00::2",
        44,
        &[UDP, 0, 0x05, 0x00, 0, 0, 0xab, 0xcd, 1, 2, 3],
    );
    let p = parse(&later).unwrap();
    assert_eq!((p.proto, p.l4), (UDP, L4::Fragment { id: 0xabcd }));
}

#[test]
fn bad_headers_are_errors() {
    let good = ip("10.0.0.1", "10.0.0.2", TCP, &tcp(1, 2, 0));
    let mut long = good.clone();
    long[2..4].copy_from_slice(&100u16.to_be_bytes());
    let mut ihl = good.clone();
    ihl[0] = 0x44;
    let mut jumbo = ip("fd00::1", "fd00::2", TCP, &tcp(1, 2, 0));
    jumbo[4..6].copy_from_slice(&[0, 0]);
    for bad in [
        &good[..39],
        &long,
        &ihl,
        &jumbo,
        &[][..],
        &[0x55; 60],
        &[0x45; 10],
    ] {
        assert_eq!(parse(bad), Err(ParseError::Malformed), "{bad:?}");
    }
    // A packet longer than its total length is read to its total length.
    let mut padded = good.clone();
    padded.extend_from_slice(&[0; 6]);
    assert!(parse(&padded).is_ok());
}

proptest! {
    #[test]
    fn any_bytes_parse_or_fail_without_panicking(bytes in prop::collection::vec(any::<u8>(), 0..120)) {
        let _ = parse(&bytes);
    }

    #[test]
    fn cut_or_changed_packets_never_panic(cut in 0usize..80, at in 0usize..80, byte in any::<u8>()) {
        let quoted = ip("fd00::2", "fd00::1", UDP, &udp(5000, 53));
        for mut p in [
            ip("10.0.0.1", "10.0.0.2", TCP, &tcp(1, 2, 0)),
            ip("fd00::1", "fd00::2", ICMPV6, &icmp(1, 0, &quoted)),
        ] {
            if let Some(b) = p.get_mut(at) {
                *b = byte;
            }
            p.truncate(cut);
            let _ = parse(&p);
        }
    }
}
