//! The port program's verdicts on frames, run by an interpreter of the classic BPF
//! instructions it uses (with the kernel's rule that a load past the end returns 0).

use super::*;

const MAC: [u8; 6] = [0x0a, 0x58, 10, 42, 1, 2];
const OTHER_MAC: [u8; 6] = [0x0a, 0x58, 10, 42, 1, 3];

/// Runs `program` on `frame` (from its Ethernet header); `vlan`: the frame had a VLAN tag.
fn run(program: &[Insn], frame: &[u8], vlan: bool) -> u32 {
    run_checked(program, frame, vlan).unwrap_or(0)
}

/// [`run`], with `None` where a load past the end ended the program (with 0, a pass).
fn run_checked(program: &[Insn], frame: &[u8], vlan: bool) -> Option<u32> {
    let (mut a, mut pc) = (0u32, 0usize);
    let load = |at: u32, size: usize| -> Option<u32> {
        if at == VLAN_TAG_PRESENT {
            return Some(u32::from(vlan));
        }
        let bytes = frame.get(at as usize..at as usize + size)?;
        Some(bytes.iter().fold(0u32, |v, b| (v << 8) | u32::from(*b)))
    };
    loop {
        let i = program[pc];
        pc += 1;
        match i.code {
            LD_W_ABS | LD_H_ABS | LD_B_ABS => {
                let size = match i.code {
                    LD_W_ABS => 4,
                    LD_H_ABS => 2,
                    _ => 1,
                };
                a = load(i.k, size)?;
            }
            LD_LEN => a = frame.len() as u32,
            AND_K => a &= i.k,
            JEQ_K | JGE_K => {
                let yes = if i.code == JEQ_K { a == i.k } else { a >= i.k };
                pc += usize::from(if yes { i.jt } else { i.jf });
            }
            RET_K => return Some(i.k),
            other => panic!("unexpected opcode {other:#x}"),
        }
    }
}

fn eth(src: [u8; 6], ethertype: u16, body: &[u8]) -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&src);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(body);
    f
}

fn ipv4(src: &str) -> Vec<u8> {
    let mut p = vec![0u8; 28];
    p[0] = 0x45;
    p[12..16].copy_from_slice(&src.parse::<Ipv4Addr>().unwrap().octets());
    p
}

fn arp(sha: [u8; 6], spa: &str) -> Vec<u8> {
    let mut p = vec![0u8; 28];
    p[8..14].copy_from_slice(&sha);
    p[14..18].copy_from_slice(&spa.parse::<Ipv4Addr>().unwrap().octets());
    p
}

fn ipv6(src: &str, next: u8, icmp_type: u8) -> Vec<u8> {
    let mut p = vec![0u8; 48];
    p[0] = 0x60;
    p[6] = next;
    p[8..24].copy_from_slice(&src.parse::<Ipv6Addr>().unwrap().octets());
    p[40] = icmp_type;
    p
}

#[test]
fn an_ipv4_port_passes_its_own_address_and_arp_only() {
    let prog = port_program(MAC, "10.42.1.2".parse().unwrap());
    let verdict = |frame: Vec<u8>| run(&prog, &frame, false);
    assert_eq!(verdict(eth(MAC, 0x0800, &ipv4("10.42.1.2"))), PASS);
    assert_eq!(verdict(eth(MAC, 0x0806, &arp(MAC, "10.42.1.2"))), PASS);
    // Another source address, another MAC, ARP claiming another address or MAC.
    assert_eq!(verdict(eth(MAC, 0x0800, &ipv4("10.42.1.3"))), DROP);
    assert_eq!(verdict(eth(OTHER_MAC, 0x0800, &ipv4("10.42.1.2"))), DROP);
    assert_eq!(verdict(eth(MAC, 0x0806, &arp(MAC, "10.42.1.3"))), DROP);
    assert_eq!(
        verdict(eth(MAC, 0x0806, &arp(OTHER_MAC, "10.42.1.2"))),
        DROP
    );
    assert_eq!(
        verdict(eth(OTHER_MAC, 0x0806, &arp(MAC, "10.42.1.2"))),
        DROP
    );
    // The other family, other EtherTypes, VLAN tags.
    assert_eq!(verdict(eth(MAC, 0x86dd, &ipv6("fe80::1", 17, 0))), DROP);
    assert_eq!(verdict(eth(MAC, 0x8100, &ipv4("10.42.1.2"))), DROP);
    let tagged = eth(MAC, 0x0800, &ipv4("10.42.1.2"));
    assert_eq!(run(&prog, &tagged, true), DROP);
}

#[test]
fn truncated_frames_are_dropped_not_passed() {
    for addr in ["10.42.1.2", "fd42:1::2"] {
        let addr: IpAddr = addr.parse().unwrap();
        let prog = port_program(MAC, addr);
        let (full, headers) = match addr {
            IpAddr::V4(_) => (eth(MAC, 0x0800, &ipv4("10.42.1.2")), 14 + 20),
            IpAddr::V6(_) => (eth(MAC, 0x86dd, &ipv6("fd42:1::2", 58, 128)), 14 + 41),
        };
        assert_eq!(run(&prog, &full, false), PASS, "{addr}");
        for len in 0..full.len() {
            // Never a load past the end (which would pass), and no pass without the headers.
            let verdict = run_checked(&prog, &full[..len], false);
            assert!(verdict.is_some(), "{addr}: {len} bytes read past the end");
            if len < headers {
                assert_eq!(verdict, Some(DROP), "{addr}: {len} bytes");
            }
        }
        let arp_cut = eth(MAC, 0x0806, &arp(MAC, "10.42.1.2")[..27]);
        assert_eq!(run(&prog, &arp_cut, false), DROP, "{addr}: short ARP");
    }
}

#[test]
fn an_ipv6_port_passes_its_own_link_local_and_unspecified_sources_but_no_router_messages() {
    let prog = port_program(MAC, "fd42:1::2".parse().unwrap());
    let verdict = |src: &str, next: u8, icmp: u8| {
        run(&prog, &eth(MAC, 0x86dd, &ipv6(src, next, icmp)), false)
    };
    for src in ["fd42:1::2", "fe80::858:aff:fe2a:102", "febf::1", "::"] {
        assert_eq!(verdict(src, 17, 0), PASS, "{src}");
        assert_eq!(verdict(src, 58, 135), PASS, "{src}: neighbour solicitation");
    }
    for src in [
        "fd42:1::3",
        "fd42:2::2",
        "fec0::1",
        "::1",
        "fd42:1::2:0:0:0",
    ] {
        assert_eq!(verdict(src, 17, 0), DROP, "{src}");
    }
    for (kind, what) in [(134, "router advertisement"), (137, "redirect")] {
        assert_eq!(verdict("fe80::1", 58, kind), DROP, "{what}");
    }
    // Behind an extension header, only from its own address: no RA hidden behind one.
    for next in [0, 43, 44, 60] {
        assert_eq!(
            verdict("fe80::1", next, 134),
            DROP,
            "link-local, header {next}"
        );
        assert_eq!(verdict("::", next, 134), DROP, "unspecified, header {next}");
        assert_eq!(
            verdict("fd42:1::3", next, 0),
            DROP,
            "another address, header {next}"
        );
        assert_eq!(
            verdict("fd42:1::2", next, 0),
            PASS,
            "its own address, header {next}"
        );
    }
    let other_mac = eth(OTHER_MAC, 0x86dd, &ipv6("fd42:1::2", 17, 0));
    assert_eq!(run(&prog, &other_mac, false), DROP);
    assert_eq!(
        run(&prog, &eth(MAC, 0x0800, &ipv4("10.42.1.2")), false),
        DROP
    );
    assert_eq!(
        run(&prog, &eth(MAC, 0x0806, &arp(MAC, "10.42.1.2")), false),
        DROP
    );
}

#[test]
fn the_filter_is_one_direct_action_bpf_program_replacing_its_predecessor() {
    let prog = port_program(MAC, "10.42.1.2".parse().unwrap());
    let (qdisc, filter) = port_messages(7, &prog);
    assert_eq!(qdisc.header.index, 7);
    assert!(qdisc
        .attributes
        .contains(&TcAttribute::Kind("clsact".into())));
    assert_eq!(filter.header.info >> 16, u32::from(PRIORITY));
    assert_eq!(u16::from_be(filter.header.info as u16), ETH_P_ALL);
    assert_eq!(filter.header.handle, TcHandle { major: 0, minor: 1 });
    assert!(filter.attributes.contains(&TcAttribute::Kind("bpf".into())));
    let options = filter
        .attributes
        .iter()
        .find_map(|a| match a {
            TcAttribute::Options(o) => Some(o.clone()),
            _ => None,
        })
        .expect("options");
    let ops = options
        .iter()
        .find_map(|o| match o {
            TcOption::Bpf(TcFilterBpfOption::Other(nla))
                if rtnetlink::packet_core::Nla::kind(nla) == TCA_BPF_OPS =>
            {
                Some(rtnetlink::packet_core::Nla::value_len(nla))
            }
            _ => None,
        })
        .expect("the program");
    assert_eq!(ops, prog.len() * 8);
    // Every jump lands inside the program.
    for (at, i) in prog.iter().enumerate() {
        if is_jump(i.code) {
            assert!(
                at + 1 + usize::from(i.jt.max(i.jf)) < prog.len(),
                "{at}: {i:?}"
            );
        }
    }
}
