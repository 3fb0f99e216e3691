//! The classic BPF program attached to the capture socket: only packets sent from UDP or TCP
//! port 53, over IPv4 or IPv6, reach user space.
//!
//! Offsets are relative to the network header (`SKF_NET_OFF`) and the protocol comes from
//! `skb->protocol` (`SKF_AD_PROTOCOL`), so the same program works on Ethernet, loopback and
//! raw-IP interfaces. IPv4 options are honoured through the IHL; non-first IPv4 fragments are
//! dropped (they carry no ports). IPv6 is matched when the next header is UDP or TCP directly.

use libc::sock_filter;

// Classic BPF opcodes (linux/bpf_common.h).
const BPF_LD: u16 = 0x00;
const BPF_ALU: u16 = 0x04;
const BPF_JMP: u16 = 0x05;
const BPF_RET: u16 = 0x06;
const BPF_MISC: u16 = 0x07;
const BPF_W: u16 = 0x00;
const BPF_H: u16 = 0x08;
const BPF_B: u16 = 0x10;
const BPF_ABS: u16 = 0x20;
const BPF_IND: u16 = 0x40;
const BPF_AND: u16 = 0x50;
const BPF_LSH: u16 = 0x60;
const BPF_JEQ: u16 = 0x10;
const BPF_JSET: u16 = 0x40;
const BPF_K: u16 = 0x00;
const BPF_TAX: u16 = 0x00;

/// Base of loads relative to the network header (linux/filter.h `SKF_NET_OFF`).
const NET: u32 = libc::SKF_NET_OFF as u32;
/// Load of `skb->protocol` in host order (`SKF_AD_OFF + SKF_AD_PROTOCOL`).
const AD_PROTOCOL: u32 = (libc::SKF_AD_OFF + libc::SKF_AD_PROTOCOL) as u32;

const ETH_P_IP: u32 = 0x0800;
const ETH_P_IPV6: u32 = 0x86dd;
const IPPROTO_TCP: u32 = 6;
const IPPROTO_UDP: u32 = 17;
const DNS_PORT: u32 = 53;
/// IPv4 fragment offset bits of the flags/fragment word.
const IPV4_FRAGMENT_OFFSET_MASK: u32 = 0x1fff;
const IPV6_HEADER_BYTES: u32 = 40;
/// Bytes of an accepted packet to copy: all of it (a GRO-merged TCP segment can be 64 KiB).
pub const SNAP_BYTES: u32 = 262_144;

/// Jump targets of [`dns_response_filter`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Label {
    V4,
    V4Ports,
    V6,
    V6Ports,
    Accept,
    Drop,
}

/// One instruction with symbolic jump targets, resolved by [`assemble`].
#[derive(Debug, Clone, Copy)]
enum Op {
    Stmt(u16, u32),
    /// Conditional jump: (opcode, k, target if true, target if false); `None` = next.
    Jump(u16, u32, Option<Label>, Option<Label>),
    Mark(Label),
}

fn program() -> [Op; 25] {
    use Label::*;
    use Op::*;
    let jeq = BPF_JMP | BPF_JEQ | BPF_K;
    [
        Stmt(BPF_LD | BPF_W | BPF_ABS, AD_PROTOCOL),
        Jump(jeq, ETH_P_IP, Some(V4), None),
        Jump(jeq, ETH_P_IPV6, Some(V6), Some(Drop)),
        Mark(V4),
        Stmt(BPF_LD | BPF_B | BPF_ABS, NET.wrapping_add(9)), // protocol
        Jump(jeq, IPPROTO_UDP, Some(V4Ports), None),
        Jump(jeq, IPPROTO_TCP, Some(V4Ports), Some(Drop)),
        Mark(V4Ports),
        Stmt(BPF_LD | BPF_H | BPF_ABS, NET.wrapping_add(6)), // flags + fragment offset
        Jump(
            BPF_JMP | BPF_JSET | BPF_K,
            IPV4_FRAGMENT_OFFSET_MASK,
            Some(Drop),
            None,
        ),
        Stmt(BPF_LD | BPF_B | BPF_ABS, NET), // version + IHL
        Stmt(BPF_ALU | BPF_AND | BPF_K, 0x0f),
        Stmt(BPF_ALU | BPF_LSH | BPF_K, 2),
        Stmt(BPF_MISC | BPF_TAX, 0),         // X = IPv4 header length
        Stmt(BPF_LD | BPF_H | BPF_IND, NET), // source port at X
        Jump(jeq, DNS_PORT, Some(Accept), Some(Drop)),
        Mark(V6),
        Stmt(BPF_LD | BPF_B | BPF_ABS, NET.wrapping_add(6)), // next header
        Jump(jeq, IPPROTO_UDP, Some(V6Ports), None),
        Jump(jeq, IPPROTO_TCP, Some(V6Ports), Some(Drop)),
        Mark(V6Ports),
        Stmt(
            BPF_LD | BPF_H | BPF_ABS,
            NET.wrapping_add(IPV6_HEADER_BYTES),
        ),
        Jump(jeq, DNS_PORT, Some(Accept), Some(Drop)),
        Mark(Accept),
        Stmt(BPF_RET | BPF_K, SNAP_BYTES),
    ]
}

/// Resolves labels to forward offsets. `Drop` is the final `ret #0`, appended here.
fn assemble(ops: &[Op]) -> Vec<sock_filter> {
    let mut positions = Vec::new();
    let mut index = 0usize;
    for op in ops {
        match op {
            Op::Mark(label) => positions.push((*label, index)),
            _ => index += 1,
        }
    }
    positions.push((Label::Drop, index));
    let at = |label: Label| {
        positions
            .iter()
            .find(|(l, _)| *l == label)
            .map(|(_, i)| *i)
            .unwrap_or(index)
    };
    let mut out = Vec::with_capacity(index + 1);
    for op in ops {
        match *op {
            Op::Mark(_) => {}
            Op::Stmt(code, k) => out.push(sock_filter {
                code,
                jt: 0,
                jf: 0,
                k,
            }),
            Op::Jump(code, k, on_true, on_false) => {
                let here = out.len();
                let offset = |target: Option<Label>| match target {
                    None => 0,
                    // Targets are always later instructions, a few dozen at most.
                    Some(label) => u8::try_from(at(label) - here - 1).unwrap_or(u8::MAX),
                };
                out.push(sock_filter {
                    code,
                    jt: offset(on_true),
                    jf: offset(on_false),
                    k,
                });
            }
        }
    }
    out.push(sock_filter {
        code: BPF_RET | BPF_K,
        jt: 0,
        jf: 0,
        k: 0,
    });
    out
}

/// The filter program: accept (up to [`SNAP_BYTES`]) UDP/TCP packets from port 53.
pub fn dns_response_filter() -> Vec<sock_filter> {
    assemble(&program())
}

#[cfg(test)]
pub(crate) mod interpreter;

#[cfg(test)]
mod tests {
    use super::interpreter::{SkBuff, run};
    use super::*;
    use crate::dns::fixtures::{TCP4_CNAME_CHAIN, UDP4_A_SVC, UDP6_AAAA_SVC, hex};

    mod fx {
        use super::*;
        pub fn udp4() -> Vec<u8> {
            hex(UDP4_A_SVC)
        }
        pub fn udp6() -> Vec<u8> {
            hex(UDP6_AAAA_SVC)
        }
        pub fn tcp4() -> Vec<u8> {
            hex(TCP4_CNAME_CHAIN)
        }
    }

    fn skb(frame: &[u8]) -> SkBuff<'_> {
        let protocol = u16::from_be_bytes([frame[12], frame[13]]);
        SkBuff {
            data: frame,
            network_offset: 14,
            protocol,
        }
    }

    #[test]
    fn jumps_land_inside_the_program() {
        let prog = dns_response_filter();
        assert_eq!(prog.len(), 21);
        for (i, ins) in prog.iter().enumerate() {
            if ins.code & 0x07 == BPF_JMP {
                assert!(i + 1 + usize::from(ins.jt) < prog.len());
                assert!(i + 1 + usize::from(ins.jf) < prog.len());
                assert!(ins.jt != u8::MAX && ins.jf != u8::MAX);
            }
        }
        assert_eq!(prog.last().map(|i| i.k), Some(0));
    }

    #[test]
    fn dns_responses_pass_whole() {
        let prog = dns_response_filter();
        for frame in [fx::udp4(), fx::udp6(), fx::tcp4()] {
            assert_eq!(run(&prog, &skb(&frame)), SNAP_BYTES);
        }
    }

    #[test]
    fn ipv4_options_are_skipped_through_the_ihl() {
        let prog = dns_response_filter();
        let frame = fx::udp4();
        // Insert 4 bytes of options (NOPs) and bump the IHL from 5 to 6.
        let mut with_options = frame[..34].to_vec();
        with_options[14] = 0x46;
        with_options.extend_from_slice(&[1, 1, 1, 1]);
        with_options.extend_from_slice(&frame[34..]);
        assert_eq!(run(&prog, &skb(&with_options)), SNAP_BYTES);
        // Without the IHL bump the "source port" read is the options, and it is dropped.
        with_options[14] = 0x45;
        assert_eq!(run(&prog, &skb(&with_options)), 0);
    }

    #[test]
    fn everything_else_is_dropped() {
        let prog = dns_response_filter();
        let mut query = fx::udp4();
        query[34..38].copy_from_slice(&[0xd4, 0x31, 0x00, 0x35]); // 54321 -> 53
        assert_eq!(run(&prog, &skb(&query)), 0);
        let mut icmp = fx::udp4();
        icmp[23] = 1;
        assert_eq!(run(&prog, &skb(&icmp)), 0);
        let mut fragment = fx::udp4();
        fragment[21] = 0x10;
        assert_eq!(run(&prog, &skb(&fragment)), 0);
        let mut arp = fx::udp4();
        arp[12..14].copy_from_slice(&[0x08, 0x06]);
        assert_eq!(run(&prog, &skb(&arp)), 0);
        let mut v6_query = fx::udp6();
        v6_query[54..56].copy_from_slice(&[0xd4, 0x31]);
        assert_eq!(run(&prog, &skb(&v6_query)), 0);
        let mut v6_ext = fx::udp6();
        v6_ext[20] = 0; // hop-by-hop options first
        assert_eq!(run(&prog, &skb(&v6_ext)), 0);
        let short = &fx::udp4()[..30];
        assert_eq!(run(&prog, &skb(short)), 0);
    }

    #[test]
    fn raw_ip_interfaces_match_through_the_network_offset() {
        let prog = dns_response_filter();
        let frame = fx::udp4();
        let raw = SkBuff {
            data: &frame[14..],
            network_offset: 0,
            protocol: 0x0800,
        };
        assert_eq!(run(&prog, &raw), SNAP_BYTES);
    }
}
