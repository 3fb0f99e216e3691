//! A classic BPF interpreter for the instructions our filter uses, with the kernel's rules for
//! negative offsets (`SKF_AD_OFF`, `SKF_NET_OFF`) and out-of-bounds loads (the packet is
//! dropped). Test-only: the kernel runs the real thing.

use libc::sock_filter;

/// What the kernel knows about a packet when it runs a socket filter.
pub struct SkBuff<'a> {
    /// Bytes from the link-layer header on (what an AF_PACKET SOCK_RAW socket sees).
    pub data: &'a [u8],
    /// Offset of the network header in `data`.
    pub network_offset: usize,
    /// `skb->protocol`, host order.
    pub protocol: u16,
}

fn load(skb: &SkBuff<'_>, offset: i64, size: usize) -> Option<u32> {
    let ad_off = i64::from(libc::SKF_AD_OFF);
    let net_off = i64::from(libc::SKF_NET_OFF);
    let start = if offset >= 0 {
        usize::try_from(offset).ok()?
    } else if offset >= ad_off {
        return (offset == ad_off + i64::from(libc::SKF_AD_PROTOCOL))
            .then_some(u32::from(skb.protocol));
    } else if offset >= net_off {
        skb.network_offset + usize::try_from(offset - net_off).ok()?
    } else {
        return None;
    };
    let bytes = skb.data.get(start..start.checked_add(size)?)?;
    Some(bytes.iter().fold(0u32, |acc, b| (acc << 8) | u32::from(*b)))
}

/// Runs `prog` over `skb` and returns the number of bytes to keep (0 = drop).
pub fn run(prog: &[sock_filter], skb: &SkBuff<'_>) -> u32 {
    let (mut a, mut x) = (0u32, 0u32);
    let mut pc = 0usize;
    while let Some(ins) = prog.get(pc) {
        pc += 1;
        let k = ins.k;
        let size = match ins.code & 0x18 {
            0x00 => 4,
            0x08 => 2,
            _ => 1,
        };
        match ins.code {
            // ld{w,h,b} [k]
            0x20 | 0x28 | 0x30 => match load(skb, i64::from(k as i32), size) {
                Some(v) => a = v,
                None => return 0,
            },
            // ld{w,h,b} [x + k]
            0x40 | 0x48 | 0x50 => match load(skb, i64::from(x) + i64::from(k as i32), size) {
                Some(v) => a = v,
                None => return 0,
            },
            0x54 => a &= k,                                                  // and #k
            0x64 => a = a.checked_shl(k).unwrap_or(0),                       // lsh #k
            0x07 => x = a,                                                   // tax
            0x15 => pc += usize::from(if a == k { ins.jt } else { ins.jf }), // jeq #k
            0x45 => pc += usize::from(if a & k != 0 { ins.jt } else { ins.jf }), // jset #k
            0x06 => return k,                                                // ret #k
            other => panic!("opcode {other:#x} is not supported by the test interpreter"),
        }
    }
    0
}
