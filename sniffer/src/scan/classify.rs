//! The listening-port rule: which sockets of one namespace are the client side of a call.
//!
//! A TCP socket (ESTABLISHED or SYN_SENT) is client-side when its local port is not a TCP
//! LISTEN port in the same namespace; a connected UDP socket (remote port set) when its local
//! port is not bound by an unconnected UDP socket there. Calls to loopback stay inside the
//! namespace and are not reported.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};

use trafficmap_api::observed::Protocol;

/// TCP states as sock_diag reports them (include/net/tcp_states.h).
pub mod tcp_state {
    /// Connected.
    pub const ESTABLISHED: u8 = 1;
    /// Connecting.
    pub const SYN_SENT: u8 = 2;
    /// Unconnected; for UDP, a bound (or never connected) socket.
    pub const CLOSE: u8 = 7;
    /// Listening.
    pub const LISTEN: u8 = 10;
}

/// One socket from sock_diag or the BPF iterator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SocketRecord {
    /// TCP or UDP.
    pub protocol: Protocol,
    /// TCP state (UDP uses ESTABLISHED for connected, CLOSE otherwise).
    pub state: u8,
    /// Local address and port (IPv4-mapped IPv6 already turned into IPv4).
    pub local: SocketAddr,
    /// Remote address and port.
    pub remote: SocketAddr,
    /// Socket inode, to find the owning process.
    pub inode: u32,
    /// A process holding the socket, when the source knows it (the BPF iterator does).
    pub pid: Option<u32>,
}

/// Turns `::ffff:a.b.c.d` into `a.b.c.d`; other addresses are returned as they are.
pub fn unmap(address: SocketAddr) -> SocketAddr {
    match address.ip() {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), address.port()),
            None => address,
        },
        IpAddr::V4(_) => address,
    }
}

/// The client-side sockets among all sockets of one namespace.
pub fn client_sockets(sockets: &[SocketRecord]) -> Vec<SocketRecord> {
    let mut filter = ClientFilter::default();
    for socket in sockets {
        filter.add(socket);
    }
    filter.finish()
}

/// [`client_sockets`] fed one socket at a time, keeping only listening ports and the sockets
/// that may be client-side: a namespace's server and loopback sockets are never held.
#[derive(Debug, Default)]
pub struct ClientFilter {
    listening: HashSet<(Protocol, u16)>,
    candidates: Vec<SocketRecord>,
}

impl ClientFilter {
    /// Takes one socket of the namespace.
    pub fn add(&mut self, socket: &SocketRecord) {
        let listens = match socket.protocol {
            Protocol::Tcp => socket.state == tcp_state::LISTEN,
            Protocol::Udp => socket.state == tcp_state::CLOSE && socket.remote.port() == 0,
        };
        if listens {
            self.listening
                .insert((socket.protocol, socket.local.port()));
            return;
        }
        let connected = match socket.protocol {
            Protocol::Tcp => matches!(socket.state, tcp_state::ESTABLISHED | tcp_state::SYN_SENT),
            Protocol::Udp => socket.state == tcp_state::ESTABLISHED,
        };
        let remote = socket.remote.ip();
        if connected
            && !remote.is_loopback()
            && !remote.is_unspecified()
            && socket.remote.port() != 0
        {
            self.candidates.push(*socket);
        }
    }

    /// The client-side sockets, in the order they came: those whose local port is not
    /// listening. A socket held by several processes (same inode) is given once.
    pub fn finish(self) -> Vec<SocketRecord> {
        let ClientFilter {
            listening,
            candidates,
        } = self;
        let mut inodes = HashSet::new();
        candidates
            .into_iter()
            .filter(|s| !listening.contains(&(s.protocol, s.local.port())))
            .filter(|s| s.inode == 0 || inodes.insert(s.inode))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    /// A socket with an inode of its own.
    fn socket(protocol: Protocol, state: u8, local: &str, remote: &str) -> SocketRecord {
        static INODES: AtomicU32 = AtomicU32::new(1);
        SocketRecord {
            protocol,
            state,
            local: local.parse().expect("local"),
            remote: remote.parse().expect("remote"),
            inode: INODES.fetch_add(1, Ordering::Relaxed),
            pid: None,
        }
    }

    use Protocol::{Tcp, Udp};
    use tcp_state::*;

    #[test]
    fn outgoing_tcp_is_client_side_and_accepted_tcp_is_not() {
        let sockets = [
            socket(Tcp, LISTEN, "0.0.0.0:8080", "0.0.0.0:0"),
            socket(Tcp, ESTABLISHED, "10.0.0.5:8080", "10.0.0.9:41000"),
            socket(Tcp, ESTABLISHED, "10.0.0.5:43210", "10.0.1.7:5432"),
            socket(Tcp, SYN_SENT, "10.0.0.5:43211", "10.0.1.8:443"),
        ];
        let clients = client_sockets(&sockets);
        let remotes: Vec<String> = clients.iter().map(|s| s.remote.to_string()).collect();
        assert_eq!(remotes, ["10.0.1.7:5432", "10.0.1.8:443"]);
    }

    #[test]
    fn connected_udp_is_client_side_unless_its_port_is_bound() {
        let sockets = [
            socket(Udp, CLOSE, "0.0.0.0:5353", "0.0.0.0:0"),
            socket(Udp, ESTABLISHED, "10.0.0.5:5353", "10.0.0.9:5353"),
            socket(Udp, ESTABLISHED, "10.0.0.5:51000", "10.96.0.10:53"),
            socket(Udp, CLOSE, "10.0.0.5:51001", "0.0.0.0:0"),
        ];
        let clients = client_sockets(&sockets);
        assert_eq!(clients.len(), 1);
        assert_eq!(clients[0].remote.to_string(), "10.96.0.10:53");
    }

    #[test]
    fn a_tcp_listener_does_not_make_udp_on_that_port_a_server() {
        let sockets = [
            socket(Tcp, LISTEN, "0.0.0.0:9000", "0.0.0.0:0"),
            socket(Udp, ESTABLISHED, "10.0.0.5:9000", "10.0.1.1:9999"),
        ];
        assert_eq!(client_sockets(&sockets).len(), 1);
    }

    #[test]
    fn a_socket_held_by_two_processes_is_one_call() {
        let shared = socket(Tcp, ESTABLISHED, "10.0.0.5:43210", "10.0.1.7:5432");
        let other = socket(Tcp, ESTABLISHED, "10.0.0.5:43211", "10.0.1.7:5432");
        let sockets = [
            shared,
            SocketRecord {
                pid: Some(2),
                ..shared
            },
            other,
        ];
        assert_eq!(client_sockets(&sockets), vec![shared, other]);
        // Without an inode, nothing tells two sockets apart: each is kept.
        let unknown = SocketRecord { inode: 0, ..shared };
        assert_eq!(client_sockets(&[unknown, unknown]).len(), 2);
    }

    #[test]
    fn the_order_of_listeners_and_connections_does_not_matter() {
        let accepted = socket(Tcp, ESTABLISHED, "10.0.0.5:8080", "10.0.0.9:41000");
        let listener = socket(Tcp, LISTEN, "0.0.0.0:8080", "0.0.0.0:0");
        assert!(client_sockets(&[accepted, listener]).is_empty());
        assert!(client_sockets(&[listener, accepted]).is_empty());
    }

    #[test]
    fn loopback_calls_are_not_reported() {
        let sockets = [
            socket(Tcp, ESTABLISHED, "127.0.0.1:40000", "127.0.0.1:6379"),
            socket(Tcp, ESTABLISHED, "[::1]:40001", "[::1]:6379"),
        ];
        assert!(client_sockets(&sockets).is_empty());
    }

    #[test]
    fn mapped_addresses_become_ipv4() {
        let mapped: SocketAddr = "[::ffff:10.0.0.5]:80".parse().expect("addr");
        assert_eq!(unmap(mapped).to_string(), "10.0.0.5:80");
        let plain: SocketAddr = "[fd00::1]:80".parse().expect("addr");
        assert_eq!(unmap(plain), plain);
    }
}
