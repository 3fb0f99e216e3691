//! The DNS response generator: varied responses (A, AAAA, CNAME chains) from port 53, sent
//! as whole Ethernet frames from a packet socket with `sendmmsg`, at a paced rate. Runs inside the generator namespace
//! (`trafficmap-bench gen-dns`) and prints how many it sent and over how long.

use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use super::{BenchError, Result};

/// Distinct responses cycled through (a third of each kind).
pub const DISTINCT_RESPONSES: usize = 3_000;
/// Messages per `sendmmsg` call.
const BATCH: usize = 64;
/// First client port; ports cycle over [`PORT_SPAN`] so each response is a distinct one.
const FIRST_PORT: u16 = 1_024;
const PORT_SPAN: u64 = 60_000;
const TTL_SECONDS: u32 = 30;

fn push_name(out: &mut Vec<u8>, name: &str) {
    for label in name.split('.') {
        out.push(label.len() as u8);
        out.extend_from_slice(label.as_bytes());
    }
    out.push(0);
}

/// One answer record.
enum Record<'a> {
    A([u8; 4]),
    Aaaa([u8; 16]),
    Cname(&'a str),
}

/// A response (ID 0, to be stamped) to `qname`/`qtype` with the `chain` of `(owner, record)`.
fn response(qname: &str, qtype: u16, chain: &[(&str, Record<'_>)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(160);
    out.extend_from_slice(&[0, 0, 0x81, 0x80, 0, 1]);
    out.extend_from_slice(&(chain.len() as u16).to_be_bytes());
    out.extend_from_slice(&[0, 0, 0, 0]);
    push_name(&mut out, qname);
    out.extend_from_slice(&qtype.to_be_bytes());
    out.extend_from_slice(&[0, 1]);
    for (owner, record) in chain {
        push_name(&mut out, owner);
        let (rtype, data): (u16, Vec<u8>) = match record {
            Record::A(a) => (1, a.to_vec()),
            Record::Aaaa(a) => (28, a.to_vec()),
            Record::Cname(target) => {
                let mut d = Vec::new();
                push_name(&mut d, target);
                (5, d)
            }
        };
        out.extend_from_slice(&rtype.to_be_bytes());
        out.extend_from_slice(&[0, 1]);
        out.extend_from_slice(&TTL_SECONDS.to_be_bytes());
        out.extend_from_slice(&(data.len() as u16).to_be_bytes());
        out.extend_from_slice(&data);
    }
    out
}

/// The responses the generator cycles through: in-cluster A records, internet AAAA records
/// and two-step CNAME chains ending in an A record.
pub fn responses() -> Vec<Vec<u8>> {
    (0..DISTINCT_RESPONSES)
        .map(|i| {
            let [_, _, hi, lo] = (i as u32).to_be_bytes();
            match i % 3 {
                0 => {
                    let name = format!("svc-{i}.ns-{}.svc.cluster.local", i % 50);
                    response(&name, 1, &[(&name, Record::A([10, 96, hi, lo]))])
                }
                1 => {
                    let name = format!("api-{i}.example.com");
                    let mut v6 = [0u8; 16];
                    v6[..2].copy_from_slice(&[0xfd, 0x00]);
                    v6[14..].copy_from_slice(&[hi, lo]);
                    response(&name, 28, &[(&name, Record::Aaaa(v6))])
                }
                _ => {
                    let name = format!("www-{i}.example.net");
                    let edge = format!("edge-{i}.cdn.example.net");
                    let host = format!("e{i}.a.example.org");
                    response(
                        &name,
                        1,
                        &[
                            (&name, Record::Cname(&edge)),
                            (&edge, Record::Cname(&host)),
                            (&host, Record::A([203, 0, hi, lo])),
                        ],
                    )
                }
            }
        })
        .collect()
}

/// What a generator run did.
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
pub struct Sent {
    /// Responses the kernel accepted.
    pub sent: u64,
    /// Seconds from the first to the last send.
    pub seconds: f64,
}

/// Ethernet + IPv4 + UDP header bytes before the DNS message.
const HEADERS: usize = 14 + 20 + 8;
/// Offset of the UDP destination port in a frame.
const DEST_PORT_AT: usize = 14 + 20 + 2;
/// Destination MAC of the frames: not the capture side's, so its stack drops them at once
/// (`PACKET_OTHERHOST`) after the packet taps saw them; no ICMP, no socket lookup.
const OTHER_HOST_MAC: [u8; 6] = [0x02, 0x54, 0x4d, 0x42, 0x00, 0x02];
const SOURCE_MAC: [u8; 6] = [0x02, 0x54, 0x4d, 0x42, 0x00, 0x01];

fn ipv4_checksum(header: &[u8]) -> u16 {
    let mut sum: u32 = header
        .chunks(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// A whole Ethernet frame carrying `message` from `source:53` to `client` (port 0, ID as in
/// `message`; both stamped per send). The UDP checksum is 0 ("none"), valid for IPv4.
pub fn frame(source: Ipv4Addr, client: Ipv4Addr, message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADERS + message.len());
    out.extend_from_slice(&OTHER_HOST_MAC);
    out.extend_from_slice(&SOURCE_MAC);
    out.extend_from_slice(&[0x08, 0x00]);
    let total = (20 + 8 + message.len()) as u16;
    let mut ip = vec![0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 17, 0, 0];
    ip[2..4].copy_from_slice(&total.to_be_bytes());
    ip.extend_from_slice(&source.octets());
    ip.extend_from_slice(&client.octets());
    let checksum = ipv4_checksum(&ip);
    ip[10..12].copy_from_slice(&checksum.to_be_bytes());
    out.extend_from_slice(&ip);
    out.extend_from_slice(&53u16.to_be_bytes());
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(&((8 + message.len()) as u16).to_be_bytes());
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(message);
    out
}

/// A packet socket sending whole frames on `interface`, bypassing the qdisc.
fn packet_socket(interface: &str) -> Result<OwnedFd> {
    let name = std::ffi::CString::new(interface)
        .map_err(|_| BenchError::Failed(format!("bad interface name {interface}")))?;
    // SAFETY: if_nametoindex reads a NUL-terminated string we own.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if index == 0 {
        return Err(BenchError::Io {
            what: format!("interface {interface}"),
            source: std::io::Error::last_os_error(),
        });
    }
    // SAFETY: socket(2) with constant arguments; the fd is owned right away.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) };
    if fd < 0 {
        return Err(BenchError::Io {
            what: "packet socket".into(),
            source: std::io::Error::last_os_error(),
        });
    }
    // SAFETY: fd is a socket we just opened and own from here on.
    let socket = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: sockaddr_ll is plain data; zero then fill is the documented use.
    let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    addr.sll_family = libc::AF_PACKET as u16;
    addr.sll_ifindex = index as i32;
    let one: libc::c_int = 1;
    // SAFETY: bind and setsockopt read the structs we pass, with their sizes.
    unsafe {
        if libc::bind(
            socket.as_raw_fd(),
            (&addr as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        ) != 0
        {
            return Err(BenchError::Io {
                what: format!("bind the packet socket to {interface}"),
                source: std::io::Error::last_os_error(),
            });
        }
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_PACKET,
            libc::PACKET_QDISC_BYPASS,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as u32,
        );
    }
    Ok(socket)
}

/// Sends responses from `source:53` to `client` (ports varying) on `interface` at `rate` per
/// second for `duration`, as whole frames from a packet socket. Each response gets its own
/// (port, ID), so none is a copy of another.
pub fn generate(
    interface: &str,
    source: Ipv4Addr,
    client: Ipv4Addr,
    rate: u64,
    duration: Duration,
) -> Result<Sent> {
    let socket = packet_socket(interface)?;
    let templates: Vec<Vec<u8>> = responses()
        .iter()
        .map(|m| frame(source, client, m))
        .collect();
    let mut buffers = vec![[0u8; 512]; BATCH];
    let mut lengths = [0usize; BATCH];
    let started = Instant::now();
    let mut sent: u64 = 0;
    let mut seq: u64 = 0;
    loop {
        let elapsed = started.elapsed();
        if elapsed >= duration {
            break;
        }
        let due = (elapsed.as_secs_f64() * rate as f64) as u64;
        let want = due.saturating_sub(sent).min(BATCH as u64) as usize;
        if want == 0 {
            std::thread::sleep(Duration::from_micros(50));
            continue;
        }
        for slot in 0..want {
            let s = seq + slot as u64;
            let template = &templates[(s as usize) % templates.len()];
            let buffer = &mut buffers[slot];
            buffer[..template.len()].copy_from_slice(template);
            let port = FIRST_PORT + (s % PORT_SPAN) as u16;
            buffer[DEST_PORT_AT..DEST_PORT_AT + 2].copy_from_slice(&port.to_be_bytes());
            let id = ((s / PORT_SPAN) as u16).wrapping_add(s as u16);
            buffer[HEADERS..HEADERS + 2].copy_from_slice(&id.to_be_bytes());
            lengths[slot] = template.len();
        }
        let accepted = send_batch(&socket, &mut buffers, &lengths, want)?;
        sent += accepted as u64;
        seq += accepted as u64;
    }
    Ok(Sent {
        sent,
        seconds: started.elapsed().as_secs_f64(),
    })
}

fn send_batch(
    socket: &OwnedFd,
    buffers: &mut [[u8; 512]],
    lengths: &[usize],
    count: usize,
) -> Result<usize> {
    let mut iovecs: Vec<libc::iovec> = buffers
        .iter_mut()
        .zip(lengths)
        .take(count)
        .map(|(b, len)| libc::iovec {
            iov_base: b.as_mut_ptr().cast(),
            iov_len: *len,
        })
        .collect();
    let mut headers: Vec<libc::mmsghdr> = iovecs
        .iter_mut()
        .map(|iov| {
            // SAFETY: mmsghdr is plain data; zero is "no address, no control data".
            let mut header: libc::mmsghdr = unsafe { std::mem::zeroed() };
            header.msg_hdr.msg_iov = iov;
            header.msg_hdr.msg_iovlen = 1;
            header
        })
        .collect();
    // SAFETY: `headers` points at `count` valid messages whose buffers live until the call
    // returns.
    let result = unsafe {
        libc::sendmmsg(
            socket.as_raw_fd(),
            headers.as_mut_ptr(),
            headers.len() as u32,
            0,
        )
    };
    if result < 0 {
        let err = std::io::Error::last_os_error();
        if matches!(err.raw_os_error(), Some(libc::ENOBUFS | libc::EAGAIN)) {
            return Ok(0);
        }
        return Err(BenchError::Io {
            what: "sendmmsg".into(),
            source: err,
        });
    }
    Ok(result as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_carry_a_valid_ipv4_header() {
        let f = frame(
            Ipv4Addr::new(10, 200, 0, 1),
            Ipv4Addr::new(10, 200, 0, 2),
            &[0; 12],
        );
        assert_eq!(f.len(), HEADERS + 12);
        assert_eq!(
            ipv4_checksum(&f[14..34]),
            0,
            "checksum of a valid header is 0"
        );
        assert_eq!(&f[34..36], &53u16.to_be_bytes());
    }

    #[test]
    fn every_kind_of_response_is_a_valid_dns_response() {
        for (i, message) in responses().iter().take(3).enumerate() {
            let parsed = simple_dns_like_check(message);
            assert_eq!(parsed, [1, 1, 3][i], "answers of response {i}");
        }
    }

    /// Answer count from the header, after checking the message is a NOERROR response.
    fn simple_dns_like_check(message: &[u8]) -> u16 {
        assert_eq!(message[2] & 0x80, 0x80, "QR bit");
        assert_eq!(message[3] & 0x0f, 0, "RCODE");
        u16::from_be_bytes([message[6], message[7]])
    }
}
