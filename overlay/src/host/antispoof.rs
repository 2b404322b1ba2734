//! Anti-spoofing on a workload's bridge port: one tc filter at the ingress of the host end of
//! its veth (a `clsact` qdisc), which runs before the bridge learns a source MAC or the host
//! sees a packet. It passes only untagged frames from the workload's own MAC that carry
//!
//! - IPv4 from its own address, or ARP whose sender address and sender MAC are its own (an
//!   IPv4 workload);
//! - IPv6 from its own address, from a link-local address, or from `::` (duplicate address
//!   detection), except router advertisements and redirects, and with an extension header
//!   first only from its own address (an IPv6 workload);
//!
//! and drops everything else (another source address, another MAC, VLAN tags, the other IP
//! family). A workload therefore cannot send with a neighbour's address, nor claim it by ARP;
//! its neighbour-discovery claims reach nobody (its port is isolated, and the bridge's entries
//! for workloads are permanent: [`HostNet::pin_neighbour`](super::HostNet)).
//!
//! The filter is `cls_bpf` running a classic BPF program in direct-action mode (its return
//! value is the verdict: `TC_ACT_OK` or `TC_ACT_SHOT`). `flower`, `matchall` and the `gact`
//! action that would express the same are modules many kernels leave out (the test machines'
//! among them); `cls_bpf` is built into every kernel with `CONFIG_NET_CLS_BPF`, needs no
//! action module and no program loaded through `bpf(2)`, and being one filter it is replaced
//! atomically, so a port guarded again (after a restart) is never unguarded for a moment.
//!
//! [`port_program`] builds the program (pure, and unit-tested with an interpreter of the few
//! instructions it uses); [`HostNet::guard_port`] installs it. The filter goes with the veth.
//! Performs I/O.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use futures::StreamExt;
use rtnetlink::packet_core::{
    DefaultNla, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE,
    NLM_F_REQUEST,
};
use rtnetlink::packet_route::tc::{TcAttribute, TcFilterBpfOption, TcHandle, TcMessage, TcOption};
use rtnetlink::packet_route::RouteNetlinkMessage;

use super::error::errno;
use super::{HostError, HostNet};

const ETH_P_ALL: u16 = 0x0003;
const ETH_P_IP: u32 = 0x0800;
const ETH_P_ARP: u32 = 0x0806;
const ETH_P_IPV6: u32 = 0x86dd;
const IPPROTO_ICMPV6: u32 = 58;
const ND_ROUTER_ADVERT: u32 = 134;
const ND_REDIRECT: u32 = 137;
/// IPv6 extension headers that may stand before an ICMPv6 message: hop-by-hop options,
/// routing, fragment, destination options.
const IPV6_EXTENSIONS: [u32; 4] = [0, 43, 44, 60];
/// The verdicts (`TC_ACT_OK`, `TC_ACT_SHOT`).
const PASS: u32 = 0;
const DROP: u32 = 2;
/// The filter's priority and handle on the port.
const PRIORITY: u16 = 10;
/// `TCA_BPF_*` attributes and the direct-action flag.
const TCA_BPF_OPS_LEN: u16 = 4;
const TCA_BPF_OPS: u16 = 5;
const TCA_BPF_FLAG_ACT_DIRECT: u32 = 1;
const TCA_BPF_FLAGS: u16 = 8;

/// Classic BPF opcodes used here (linux/bpf_common.h).
const LD_W_ABS: u16 = 0x20;
const LD_H_ABS: u16 = 0x28;
const LD_B_ABS: u16 = 0x30;
const LD_LEN: u16 = 0x80;
const AND_K: u16 = 0x54;
const JEQ_K: u16 = 0x15;
const JGE_K: u16 = 0x35;
const RET_K: u16 = 0x06;
/// `SKF_AD_OFF + SKF_AD_VLAN_TAG_PRESENT`: loads 1 if the frame had a VLAN tag.
const VLAN_TAG_PRESENT: u32 = 0xffff_f000 + 48;

/// Frame offsets: Ethernet source MAC and type; IPv4 source; ARP sender MAC and address; IPv6
/// next header, source and (without extension headers) ICMPv6 type.
const ETH_SRC: u32 = 6;
const ETH_TYPE: u32 = 12;
const IPV4_SRC: u32 = 14 + 12;
const ARP_SHA: u32 = 14 + 8;
const ARP_SPA: u32 = 14 + 14;
const IPV6_NEXT: u32 = 14 + 6;
const IPV6_SRC: u32 = 14 + 8;
const ICMPV6_TYPE: u32 = 14 + 40;

/// One classic BPF instruction (`struct sock_filter`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Insn {
    code: u16,
    jt: u8,
    jf: u8,
    k: u32,
}

/// Where a conditional jump goes.
#[derive(Debug, Clone, Copy)]
enum To {
    Next,
    Pass,
    Drop,
    Label(&'static str),
}

/// A program under construction: instructions with symbolic jump targets.
#[derive(Default)]
struct Asm {
    insns: Vec<(u16, To, To, u32)>,
    labels: HashMap<&'static str, usize>,
}

impl Asm {
    fn load(&mut self, code: u16, k: u32) {
        self.insns.push((code, To::Next, To::Next, k));
    }

    /// `if A == k goto yes else goto no`.
    fn jeq(&mut self, k: u32, yes: To, no: To) {
        self.insns.push((JEQ_K, yes, no, k));
    }

    /// Drops the frame unless it has at least `min` bytes. Needed before every load: a load
    /// past the end ends a classic program with 0, which is `TC_ACT_OK`.
    fn expect_len(&mut self, min: u32) {
        self.load(LD_LEN, 0);
        self.insns.push((JGE_K, To::Next, To::Drop, min));
    }

    fn and(&mut self, k: u32) {
        self.insns.push((AND_K, To::Next, To::Next, k));
    }

    fn label(&mut self, name: &'static str) {
        self.labels.insert(name, self.insns.len());
    }

    /// Loads the word at `offset` and drops the frame unless it equals `k`.
    fn expect_word(&mut self, offset: u32, k: u32) {
        self.load(LD_W_ABS, offset);
        self.jeq(k, To::Next, To::Drop);
    }

    /// Drops the frame unless the 6 bytes at `offset` are `mac`.
    fn expect_mac(&mut self, offset: u32, mac: [u8; 6]) {
        self.expect_word(offset, u32::from_be_bytes([mac[0], mac[1], mac[2], mac[3]]));
        self.load(LD_H_ABS, offset + 4);
        self.jeq(
            u32::from(u16::from_be_bytes([mac[4], mac[5]])),
            To::Next,
            To::Drop,
        );
    }

    /// Appends `ret PASS`, `ret DROP` and resolves every jump.
    fn finish(self) -> Vec<Insn> {
        let pass = self.insns.len();
        let drop = pass + 1;
        let target = |to: To, at: usize| -> u8 {
            let index = match to {
                To::Next => at + 1,
                To::Pass => pass,
                To::Drop => drop,
                To::Label(name) => self.labels[name],
            };
            // Programs here are a few dozen instructions: offsets always fit.
            u8::try_from(index - (at + 1)).expect("a short forward jump")
        };
        let mut out: Vec<Insn> = self
            .insns
            .iter()
            .enumerate()
            .map(|(at, &(code, jt, jf, k))| Insn {
                code,
                jt: if is_jump(code) { target(jt, at) } else { 0 },
                jf: if is_jump(code) { target(jf, at) } else { 0 },
                k,
            })
            .collect();
        for verdict in [PASS, DROP] {
            out.push(Insn {
                code: RET_K,
                jt: 0,
                jf: 0,
                k: verdict,
            });
        }
        out
    }
}

fn is_jump(code: u16) -> bool {
    code == JEQ_K || code == JGE_K
}

/// The program that passes what the workload with `mac` and `addr` may send (see the
/// [module documentation](self)) and drops the rest.
pub(super) fn port_program(mac: [u8; 6], addr: IpAddr) -> Vec<Insn> {
    let mut asm = Asm::default();
    asm.expect_len(14);
    asm.load(LD_W_ABS, VLAN_TAG_PRESENT);
    asm.jeq(0, To::Next, To::Drop);
    asm.expect_mac(ETH_SRC, mac);
    asm.load(LD_H_ABS, ETH_TYPE);
    match addr {
        IpAddr::V4(ip) => ipv4(&mut asm, mac, ip),
        IpAddr::V6(ip) => ipv6(&mut asm, ip),
    }
    asm.finish()
}

/// With the EtherType in A: IPv4 from `ip`, or ARP from `mac` and `ip`.
fn ipv4(asm: &mut Asm, mac: [u8; 6], ip: Ipv4Addr) {
    let ip = u32::from(ip);
    asm.jeq(ETH_P_IP, To::Next, To::Label("arp"));
    asm.expect_len(14 + 20);
    asm.load(LD_W_ABS, IPV4_SRC);
    asm.jeq(ip, To::Pass, To::Drop);
    asm.label("arp");
    asm.jeq(ETH_P_ARP, To::Next, To::Drop);
    asm.expect_len(14 + 28);
    asm.expect_mac(ARP_SHA, mac);
    asm.load(LD_W_ABS, ARP_SPA);
    asm.jeq(ip, To::Pass, To::Drop);
}

/// With the EtherType in A: IPv6 that is no router advertisement or redirect, from `ip`, a
/// link-local address or `::`. A packet with an extension header first (hop-by-hop, routing,
/// fragment, destination options) must come from `ip` itself: a router advertisement or
/// redirect hidden behind one (RFC 7113's evasion) would otherwise pass from a link-local
/// address, and the only such packets a link-local source sends legitimately are MLD reports,
/// which the overlay, isolating every port, has no use for.
fn ipv6(asm: &mut Asm, ip: Ipv6Addr) {
    asm.jeq(ETH_P_IPV6, To::Next, To::Drop);
    asm.expect_len(14 + 40);
    asm.load(LD_B_ABS, IPV6_NEXT);
    asm.jeq(IPPROTO_ICMPV6, To::Next, To::Label("extension"));
    asm.expect_len(ICMPV6_TYPE + 1);
    asm.load(LD_B_ABS, ICMPV6_TYPE);
    asm.jeq(ND_ROUTER_ADVERT, To::Drop, To::Next);
    asm.jeq(ND_REDIRECT, To::Drop, To::Label("source"));
    asm.label("extension");
    for header in IPV6_EXTENSIONS {
        asm.jeq(header, To::Label("own only"), To::Next);
    }
    asm.label("source");
    let words = |a: Ipv6Addr| {
        let o = a.octets();
        [0, 4, 8, 12].map(|i| u32::from_be_bytes([o[i], o[i + 1], o[i + 2], o[i + 3]]))
    };
    let own = words(ip);
    asm.load(LD_W_ABS, IPV6_SRC);
    asm.jeq(own[0], To::Label("own"), To::Next);
    asm.jeq(0, To::Label("unspecified"), To::Next);
    asm.and(0xffc0_0000);
    asm.jeq(0xfe80_0000, To::Pass, To::Drop);
    asm.label("own only");
    asm.load(LD_W_ABS, IPV6_SRC);
    asm.jeq(own[0], To::Label("own"), To::Drop);
    asm.label("own");
    rest_of_source(asm, own);
    asm.label("unspecified");
    rest_of_source(asm, [0; 4]);
}

/// With the first word of the IPv6 source matched: passes if the other three are `words`'.
fn rest_of_source(asm: &mut Asm, words: [u32; 4]) {
    asm.expect_word(IPV6_SRC + 4, words[1]);
    asm.expect_word(IPV6_SRC + 8, words[2]);
    asm.load(LD_W_ABS, IPV6_SRC + 12);
    asm.jeq(words[3], To::Pass, To::Drop);
}

/// The `clsact` qdisc of port `index`, and the filter running `program` on its ingress
/// (`tc filter replace dev <index> ingress pref 10 handle 1 protocol all bpf da bytecode ..`).
fn port_messages(index: u32, program: &[Insn]) -> (TcMessage, TcMessage) {
    let index = i32::try_from(index).unwrap_or(i32::MAX);
    let mut qdisc = TcMessage::with_index(index);
    qdisc.header.parent = TcHandle::CLSACT;
    qdisc.header.handle = TcHandle {
        major: 0xffff,
        minor: 0,
    };
    qdisc
        .attributes
        .push(TcAttribute::Kind("clsact".to_owned()));

    let mut filter = TcMessage::with_index(index);
    filter.header.parent = TcHandle {
        major: 0xffff,
        minor: TcHandle::MIN_INGRESS,
    };
    filter.header.handle = TcHandle { major: 0, minor: 1 };
    // `TC_H_MAKE(priority << 16, htons(protocol))`, as tc sends it.
    filter.header.info = (u32::from(PRIORITY) << 16) | u32::from(ETH_P_ALL.to_be());
    let mut ops = Vec::with_capacity(program.len() * 8);
    for insn in program {
        ops.extend_from_slice(&insn.code.to_ne_bytes());
        ops.extend_from_slice(&[insn.jt, insn.jf]);
        ops.extend_from_slice(&insn.k.to_ne_bytes());
    }
    let count = u16::try_from(program.len()).unwrap_or(u16::MAX);
    let option =
        |kind, value| TcOption::Bpf(TcFilterBpfOption::Other(DefaultNla::new(kind, value)));
    filter.attributes.push(TcAttribute::Kind("bpf".to_owned()));
    filter.attributes.push(TcAttribute::Options(vec![
        option(TCA_BPF_OPS_LEN, count.to_ne_bytes().to_vec()),
        option(TCA_BPF_OPS, ops),
        option(
            TCA_BPF_FLAGS,
            TCA_BPF_FLAG_ACT_DIRECT.to_ne_bytes().to_vec(),
        ),
        TcOption::Bpf(TcFilterBpfOption::ProgName("wgmesh-port".to_owned())),
    ]));
    (qdisc, filter)
}

impl HostNet {
    /// Guards the port `index` (called `name`, for errors) of the workload with `mac` and
    /// `addr`: adds its `clsact` qdisc unless present and replaces its filter. Idempotent.
    pub async fn guard_port(
        &self,
        index: u32,
        name: &str,
        mac: [u8; 6],
        addr: IpAddr,
    ) -> Result<(), HostError> {
        let (qdisc, filter) = port_messages(index, &port_program(mac, addr));
        let qdisc_request = RouteNetlinkMessage::NewQueueDiscipline(qdisc);
        match self.request(qdisc_request, NLM_F_CREATE | NLM_F_EXCL).await {
            Ok(()) => {}
            Err(e) if errno(&e) == Some(libc::EEXIST) => {}
            Err(source) => {
                return Err(HostError::netlink(
                    "add",
                    format!("qdisc clsact on link {name:?}"),
                    source,
                ))
            }
        }
        let request = RouteNetlinkMessage::NewTrafficFilter(filter);
        self.request(request, NLM_F_CREATE | NLM_F_REPLACE)
            .await
            .map_err(|source| {
                HostError::netlink(
                    "replace",
                    format!("the anti-spoofing filter on link {name:?}"),
                    source,
                )
            })
    }

    /// Sends one request and waits for the kernel's acknowledgement.
    pub(super) async fn request(
        &self,
        message: RouteNetlinkMessage,
        flags: u16,
    ) -> Result<(), rtnetlink::Error> {
        let mut request = NetlinkMessage::from(message);
        request.header.flags = NLM_F_REQUEST | NLM_F_ACK | flags;
        let mut handle = self.handle.clone();
        let mut response = handle.request(request)?;
        while let Some(message) = response.next().await {
            if let NetlinkPayload::Error(e) = message.payload {
                return Err(rtnetlink::Error::NetlinkError(e));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
