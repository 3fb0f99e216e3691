//! TCP and UDP sockets of the calling thread's network namespace, from NETLINK_SOCK_DIAG.
//!
//! A netlink socket belongs to the namespace it was created in, so [`dump_sockets`] opens a
//! fresh one on every call, after the scan thread entered the namespace to dump.
//!
//! Unless `net.ipv4.tcp_child_ehash_entries` gave each namespace a table of its own, every
//! namespace shares the host's TCP hash table, and each TCP dump walks every socket on the
//! node to pick out the namespace's own. That walk is nearly all of a scan's cost. The kernel's
//! `SOCK_DIAG_BY_FAMILY` request asks for one family, so IPv4 and IPv6 took two walks; the
//! older `TCPDIAG_GETSOCK` request, still served by every kernel with `inet_diag`, returns both
//! families from one walk. TCP is dumped that way, and with two family requests only if the
//! kernel refuses it. UDP has no such request; its table is walked per family.

use std::sync::atomic::{AtomicBool, Ordering};

use netlink_packet_core::{
    NLM_F_DUMP, NLM_F_REQUEST, NLMSG_DONE, NLMSG_ERROR, NetlinkBuffer, NetlinkHeader,
    NetlinkMessage, Parseable,
};
use netlink_packet_sock_diag::SockDiagMessage;
use netlink_packet_sock_diag::constants::{
    AF_INET, AF_INET6, IPPROTO_TCP, IPPROTO_UDP, SOCK_DIAG_BY_FAMILY,
};
use netlink_packet_sock_diag::inet::{
    ExtensionFlags, InetRequest, InetResponseHeader, SocketId, StateFlags,
};
use netlink_sys::protocols::NETLINK_SOCK_DIAG;
use netlink_sys::{Socket, SocketAddr as NetlinkAddr};
use trafficmap_api::observed::Protocol;

use super::ScanError;
use super::classify::{SocketRecord, unmap};

/// Receive buffer: the kernel sizes dump datagrams to the reader's buffer, up to 32 KiB.
const RECV_BUFFER_BYTES: usize = 64 * 1024;
/// `TCPDIAG_GETSOCK` (linux/inet_diag.h): a TCP dump of both families.
const TCPDIAG_GETSOCK: u16 = 18;
/// `struct nlmsghdr`: length, type, flags, sequence and port.
const NETLINK_HEADER_LEN: usize = 16;
/// Size of the request's `struct inet_diag_req`: family, two prefix lengths and extensions,
/// the 48-byte socket id, states and an unused word.
const COMPAT_REQUEST_LEN: usize = 4 + 48 + 4 + 4;
/// Set once the kernel refused `TCPDIAG_GETSOCK`: later scans ask per family straight away.
static COMPAT_REFUSED: AtomicBool = AtomicBool::new(false);

fn netlink_error(what: &'static str) -> impl FnOnce(std::io::Error) -> ScanError {
    move |source| ScanError::Netlink { what, source }
}

fn tcp_states() -> StateFlags {
    StateFlags::ESTABLISHED | StateFlags::SYN_SENT | StateFlags::LISTEN
}

/// Dumps TCP (ESTABLISHED, SYN_SENT, LISTEN) and UDP (connected and bound) sockets, IPv4 and
/// IPv6, of the current network namespace.
pub fn dump_sockets() -> Result<Vec<SocketRecord>, ScanError> {
    let socket = open()?;
    let mut records = Vec::new();
    let mut buffer = vec![0u8; RECV_BUFFER_BYTES];
    let mut sequence = 0;
    if !COMPAT_REFUSED.load(Ordering::Relaxed)
        && !dump_tcp_at_once(&socket, &mut buffer, &mut sequence, &mut records)?
    {
        dump_per_family(
            &socket,
            &mut buffer,
            &mut sequence,
            Protocol::Tcp,
            &mut records,
        )?;
    }
    dump_per_family(
        &socket,
        &mut buffer,
        &mut sequence,
        Protocol::Udp,
        &mut records,
    )?;
    Ok(records)
}

/// TCP of both families with one `TCPDIAG_GETSOCK` dump; false (and remembered) when the kernel
/// refuses the request, so that TCP is dumped per family instead.
fn dump_tcp_at_once(
    socket: &Socket,
    buffer: &mut [u8],
    sequence: &mut u32,
    records: &mut Vec<SocketRecord>,
) -> Result<bool, ScanError> {
    *sequence += 1;
    send(socket, &compat_request(tcp_states(), *sequence))?;
    match receive_dump(socket, buffer, Protocol::Tcp, records) {
        Ok(()) => Ok(true),
        // Only the kernel's own error answer means the request is not served; a failing
        // socket is an error like any other.
        Err(ScanError::DumpRefused(source)) if records.is_empty() => {
            COMPAT_REFUSED.store(true, Ordering::Relaxed);
            tracing::warn!(
                error = %source,
                "the kernel refused a TCPDIAG_GETSOCK dump; dumping TCP per family \
                 (two walks of the TCP hash table per namespace)"
            );
            Ok(false)
        }
        Err(other) => Err(other),
    }
}

fn open() -> Result<Socket, ScanError> {
    let mut socket =
        Socket::new(NETLINK_SOCK_DIAG).map_err(netlink_error("open sock_diag socket"))?;
    socket
        .bind_auto()
        .map_err(netlink_error("bind sock_diag socket"))?;
    socket
        .connect(&NetlinkAddr::new(0, 0))
        .map_err(netlink_error("connect sock_diag socket"))?;
    Ok(socket)
}

/// One `SOCK_DIAG_BY_FAMILY` dump per family of `protocol`'s sockets in the states we keep.
fn dump_per_family(
    socket: &Socket,
    buffer: &mut [u8],
    sequence: &mut u32,
    protocol: Protocol,
    records: &mut Vec<SocketRecord>,
) -> Result<(), ScanError> {
    let (number, states) = match protocol {
        Protocol::Tcp => (IPPROTO_TCP, tcp_states()),
        // UDP reuses TCP states: ESTABLISHED when connected, CLOSE when only bound.
        Protocol::Udp => (IPPROTO_UDP, StateFlags::ESTABLISHED | StateFlags::CLOSE),
    };
    for family in [AF_INET, AF_INET6] {
        *sequence += 1;
        send(
            socket,
            &family_request(family, number, states.clone(), *sequence),
        )?;
        receive_dump(socket, buffer, protocol, records)?;
    }
    Ok(())
}

/// A `SOCK_DIAG_BY_FAMILY` dump request for one family and protocol.
fn family_request(family: u8, protocol: u8, states: StateFlags, sequence: u32) -> Vec<u8> {
    let request = InetRequest {
        family,
        protocol,
        extensions: ExtensionFlags::empty(),
        states,
        socket_id: if family == AF_INET {
            SocketId::new_v4()
        } else {
            SocketId::new_v6()
        },
    };
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | NLM_F_DUMP;
    header.sequence_number = sequence;
    let mut packet = NetlinkMessage::new(header, SockDiagMessage::InetRequest(request).into());
    packet.finalize();
    let mut bytes = vec![0u8; packet.buffer_len()];
    packet.serialize(&mut bytes);
    bytes
}

/// A `TCPDIAG_GETSOCK` dump request (`struct inet_diag_req`, no filter): TCP sockets of both
/// families in the given states.
fn compat_request(states: StateFlags, sequence: u32) -> Vec<u8> {
    let total = NETLINK_HEADER_LEN + COMPAT_REQUEST_LEN;
    let mut bytes = vec![0u8; total];
    let mut header = NetlinkBuffer::new(&mut bytes[..]);
    header.set_length(total as u32);
    header.set_message_type(TCPDIAG_GETSOCK);
    header.set_flags(NLM_F_REQUEST | NLM_F_DUMP);
    header.set_sequence_number(sequence);
    // Family, prefix lengths, extensions and socket id stay zero: any socket, no extensions.
    let states_at = NETLINK_HEADER_LEN + 4 + 48;
    bytes[states_at..states_at + 4].copy_from_slice(&states.bits().to_ne_bytes());
    bytes
}

fn send(socket: &Socket, request: &[u8]) -> Result<(), ScanError> {
    socket
        .send(request, 0)
        .map_err(netlink_error("send sock_diag request"))?;
    Ok(())
}

fn receive_dump(
    socket: &Socket,
    buffer: &mut [u8],
    protocol: Protocol,
    records: &mut Vec<SocketRecord>,
) -> Result<(), ScanError> {
    loop {
        let size = socket
            .recv(&mut &mut buffer[..], libc::MSG_TRUNC)
            .map_err(netlink_error("receive sock_diag dump"))?;
        if size > buffer.len() {
            return Err(ScanError::Decode(format!(
                "sock_diag datagram of {size} bytes truncated"
            )));
        }
        let mut offset = 0;
        while offset < size {
            let message = NetlinkBuffer::new_checked(&buffer[offset..size])
                .map_err(|e| ScanError::Decode(e.to_string()))?;
            let length = message.length() as usize;
            match message.message_type() {
                NLMSG_DONE => return Ok(()),
                NLMSG_ERROR => {
                    let code = message
                        .payload()
                        .first_chunk::<4>()
                        .map_or(0, |c| i32::from_ne_bytes(*c));
                    if code != 0 {
                        return Err(ScanError::DumpRefused(std::io::Error::from_raw_os_error(
                            -code,
                        )));
                    }
                }
                SOCK_DIAG_BY_FAMILY | TCPDIAG_GETSOCK => {
                    records.push(record(protocol, message.payload())?);
                }
                _ => {}
            }
            if length == 0 {
                break;
            }
            offset += length.next_multiple_of(4);
        }
    }
}

/// One socket from a dump message's `struct inet_diag_msg`.
fn record(protocol: Protocol, payload: &[u8]) -> Result<SocketRecord, ScanError> {
    let header =
        InetResponseHeader::parse(payload).map_err(|e| ScanError::Decode(e.to_string()))?;
    let id = &header.socket_id;
    Ok(SocketRecord {
        protocol,
        state: header.state,
        local: unmap(std::net::SocketAddr::new(id.source_address, id.source_port)),
        remote: unmap(std::net::SocketAddr::new(
            id.destination_address,
            id.destination_port,
        )),
        inode: header.inode,
        pid: None,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};

    use super::super::classify::{client_sockets, tcp_state};
    use super::*;

    #[test]
    fn our_own_sockets_show_up_with_their_state() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("listen");
        let port = listener.local_addr().expect("addr").port();
        let client = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        let udp = UdpSocket::bind("127.0.0.1:0").expect("bind");
        udp.connect(("127.0.0.1", 9)).expect("connect udp");

        let records = dump_sockets().expect("sock_diag dump works unprivileged");
        let local = client.local_addr().expect("addr");
        assert!(records.iter().any(|r| r.protocol == Protocol::Tcp
            && r.state == tcp_state::LISTEN
            && r.local.port() == port));
        assert!(records.iter().any(|r| r.protocol == Protocol::Tcp
            && r.state == tcp_state::ESTABLISHED
            && r.local == local
            && r.inode != 0));
        let udp_local = udp.local_addr().expect("addr");
        assert!(records.iter().any(|r| r.protocol == Protocol::Udp
            && r.state == tcp_state::ESTABLISHED
            && r.local == udp_local));
        // All loopback: none is reported as a call.
        assert!(
            client_sockets(&records)
                .iter()
                .all(|r| !r.remote.ip().is_loopback())
        );
    }

    /// A TCP listener on `address` with one connection to it: three sockets.
    fn connected(address: &str) -> Option<(TcpListener, TcpStream, TcpStream)> {
        let listener = TcpListener::bind(address).ok()?;
        let client = TcpStream::connect(listener.local_addr().ok()?).ok()?;
        let (accepted, _) = listener.accept().ok()?;
        Some((listener, client, accepted))
    }

    #[test]
    fn one_tcp_walk_finds_what_the_two_family_walks_find() {
        let v4 = connected("127.0.0.1:0").expect("IPv4 loopback");
        // IPv6 may be off on a CI host; the IPv4 half still has to agree.
        let v6 = connected("[::1]:0");
        let mut ports: BTreeSet<u16> = BTreeSet::new();
        ports.insert(v4.0.local_addr().expect("addr").port());
        if let Some((listener, _, _)) = &v6 {
            ports.insert(listener.local_addr().expect("addr").port());
        }
        // Other tests open sockets concurrently: compare ours only.
        let ours = |records: &[SocketRecord]| -> BTreeSet<(u8, SocketAddr, SocketAddr)> {
            records
                .iter()
                .filter(|r| ports.contains(&r.local.port()) || ports.contains(&r.remote.port()))
                .map(|r| (r.state, r.local, r.remote))
                .collect()
        };

        let socket = open().expect("sock_diag socket");
        let mut buffer = vec![0u8; RECV_BUFFER_BYTES];
        let mut one_walk = Vec::new();
        send(&socket, &compat_request(tcp_states(), 1)).expect("send");
        receive_dump(&socket, &mut buffer, Protocol::Tcp, &mut one_walk).expect("TCPDIAG_GETSOCK");
        let mut per_family = Vec::new();
        let mut sequence = 1;
        dump_per_family(
            &socket,
            &mut buffer,
            &mut sequence,
            Protocol::Tcp,
            &mut per_family,
        )
        .expect("SOCK_DIAG_BY_FAMILY");

        let found = ours(&one_walk);
        let expected = if v6.is_some() { 6 } else { 3 };
        assert_eq!(found.len(), expected, "{found:?}");
        assert_eq!(found, ours(&per_family));
        assert!(one_walk.iter().all(|r| r.protocol == Protocol::Tcp));
    }

    #[test]
    fn the_kernel_refusing_a_request_is_told_apart_from_other_failures() {
        let socket = open().expect("sock_diag socket");
        let mut buffer = vec![0u8; RECV_BUFFER_BYTES];
        // A family past AF_MAX: the kernel answers the dump with EINVAL.
        let mut request = family_request(AF_INET, IPPROTO_TCP, tcp_states(), 1);
        request[NETLINK_HEADER_LEN] = u8::MAX;
        send(&socket, &request).expect("send");
        let mut records = Vec::new();
        let refused = receive_dump(&socket, &mut buffer, Protocol::Tcp, &mut records)
            .expect_err("the kernel refuses an unknown family");
        assert!(
            matches!(&refused, ScanError::DumpRefused(e) if e.raw_os_error() == Some(libc::EINVAL)),
            "{refused}"
        );
    }
}
