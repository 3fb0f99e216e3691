//! TCP and UDP sockets of the calling thread's network namespace, from NETLINK_SOCK_DIAG.
//!
//! A netlink socket belongs to the namespace it was created in, so [`dump_sockets`] opens a
//! fresh one on every call, after the scan thread entered the namespace to dump.

use netlink_packet_core::{
    NLM_F_DUMP, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_sock_diag::SockDiagMessage;
use netlink_packet_sock_diag::constants::{AF_INET, AF_INET6, IPPROTO_TCP, IPPROTO_UDP};
use netlink_packet_sock_diag::inet::{ExtensionFlags, InetRequest, SocketId, StateFlags};
use netlink_sys::protocols::NETLINK_SOCK_DIAG;
use netlink_sys::{Socket, SocketAddr as NetlinkAddr};
use trafficmap_api::observed::Protocol;

use super::ScanError;
use super::classify::{SocketRecord, unmap};

/// Receive buffer: the kernel sizes dump datagrams to the reader's buffer, up to 32 KiB.
const RECV_BUFFER_BYTES: usize = 64 * 1024;

fn netlink_error(what: &'static str) -> impl FnOnce(std::io::Error) -> ScanError {
    move |source| ScanError::Netlink { what, source }
}

/// Dumps TCP (ESTABLISHED, SYN_SENT, LISTEN) and UDP (connected and bound) sockets, IPv4 and
/// IPv6, of the current network namespace.
pub fn dump_sockets() -> Result<Vec<SocketRecord>, ScanError> {
    let mut socket =
        Socket::new(NETLINK_SOCK_DIAG).map_err(netlink_error("open sock_diag socket"))?;
    socket
        .bind_auto()
        .map_err(netlink_error("bind sock_diag socket"))?;
    socket
        .connect(&NetlinkAddr::new(0, 0))
        .map_err(netlink_error("connect sock_diag socket"))?;
    let tcp_states = StateFlags::ESTABLISHED | StateFlags::SYN_SENT | StateFlags::LISTEN;
    // UDP reuses TCP states: ESTABLISHED when connected, CLOSE when only bound.
    let udp_states = StateFlags::ESTABLISHED | StateFlags::CLOSE;
    let mut records = Vec::new();
    let mut buffer = vec![0u8; RECV_BUFFER_BYTES];
    let requests = [
        (AF_INET, IPPROTO_TCP, &tcp_states),
        (AF_INET6, IPPROTO_TCP, &tcp_states),
        (AF_INET, IPPROTO_UDP, &udp_states),
        (AF_INET6, IPPROTO_UDP, &udp_states),
    ];
    for (sequence, (family, protocol, states)) in requests.into_iter().enumerate() {
        let request = InetRequest {
            family,
            protocol,
            extensions: ExtensionFlags::empty(),
            states: states.clone(),
            socket_id: if family == AF_INET {
                SocketId::new_v4()
            } else {
                SocketId::new_v6()
            },
        };
        let kind = if protocol == IPPROTO_TCP {
            Protocol::Tcp
        } else {
            Protocol::Udp
        };
        send_request(&socket, request, sequence as u32 + 1)?;
        receive_dump(&socket, &mut buffer, kind, &mut records)?;
    }
    Ok(records)
}

fn send_request(socket: &Socket, request: InetRequest, sequence: u32) -> Result<(), ScanError> {
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | NLM_F_DUMP;
    header.sequence_number = sequence;
    let mut packet = NetlinkMessage::new(header, SockDiagMessage::InetRequest(request).into());
    packet.finalize();
    let mut bytes = vec![0u8; packet.buffer_len()];
    packet.serialize(&mut bytes);
    socket
        .send(&bytes, 0)
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
            let message = NetlinkMessage::<SockDiagMessage>::deserialize(&buffer[offset..size])
                .map_err(|e| ScanError::Decode(e.to_string()))?;
            let length = message.header.length as usize;
            match message.payload {
                NetlinkPayload::Done(_) => return Ok(()),
                NetlinkPayload::Error(error) if error.code.is_some() => {
                    return Err(ScanError::Netlink {
                        what: "dump sockets",
                        source: error.to_io(),
                    });
                }
                NetlinkPayload::InnerMessage(SockDiagMessage::InetResponse(response)) => {
                    let header = &response.header;
                    let id = &header.socket_id;
                    records.push(SocketRecord {
                        protocol,
                        state: header.state,
                        local: unmap(std::net::SocketAddr::new(id.source_address, id.source_port)),
                        remote: unmap(std::net::SocketAddr::new(
                            id.destination_address,
                            id.destination_port,
                        )),
                        inode: header.inode,
                    });
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

#[cfg(test)]
mod tests {
    use std::net::{TcpListener, TcpStream, UdpSocket};

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
}
