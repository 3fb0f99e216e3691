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

/// One socket from sock_diag.
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
    let listening: HashSet<(Protocol, u16)> = sockets
        .iter()
        .filter(|s| match s.protocol {
            Protocol::Tcp => s.state == tcp_state::LISTEN,
            Protocol::Udp => s.state == tcp_state::CLOSE && s.remote.port() == 0,
        })
        .map(|s| (s.protocol, s.local.port()))
        .collect();
    sockets
        .iter()
        .filter(|s| match s.protocol {
            Protocol::Tcp => matches!(s.state, tcp_state::ESTABLISHED | tcp_state::SYN_SENT),
            Protocol::Udp => s.state == tcp_state::ESTABLISHED && s.remote.port() != 0,
        })
        .filter(|s| !listening.contains(&(s.protocol, s.local.port())))
        .filter(|s| {
            let remote = s.remote.ip();
            !remote.is_loopback() && !remote.is_unspecified() && s.remote.port() != 0
        })
        .copied()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn socket(protocol: Protocol, state: u8, local: &str, remote: &str) -> SocketRecord {
        SocketRecord {
            protocol,
            state,
            local: local.parse().expect("local"),
            remote: remote.parse().expect("remote"),
            inode: 1,
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
