//! Frame -> the UDP or TCP payload sent from port 53, with pnet's packet types.
//!
//! Every length is checked here before slicing: header fields (IHL, total length, UDP length,
//! TCP data offset) are attacker-controlled and never trusted to fit the captured bytes.

use std::net::{IpAddr, SocketAddr};

use pnet_packet::Packet;
use pnet_packet::ethernet::{EtherType, EtherTypes, EthernetPacket};
use pnet_packet::ip::{IpNextHeaderProtocol, IpNextHeaderProtocols};
use pnet_packet::ipv4::Ipv4Packet;
use pnet_packet::ipv6::Ipv6Packet;
use pnet_packet::tcp::TcpPacket;
use pnet_packet::udp::UdpPacket;
use pnet_packet::vlan::VlanPacket;

use super::DnsParseError;

/// The DNS server port.
pub const DNS_PORT: u16 = 53;
const IPV4_MIN_HEADER_BYTES: usize = 20;
const IPV6_HEADER_BYTES: usize = 40;
const UDP_HEADER_BYTES: usize = 8;
const TCP_MIN_HEADER_BYTES: usize = 20;
/// More-fragments flag in the IPv4 flags field as pnet returns it.
const IPV4_MORE_FRAGMENTS: u8 = 0b001;

/// Captured bytes and how they start.
#[derive(Debug, Clone, Copy)]
pub enum Link<'a> {
    /// An Ethernet frame (also loopback, whose header is zeroed), optionally 802.1Q tagged.
    Ethernet(&'a [u8]),
    /// A bare IPv4 or IPv6 packet (tun devices, IP-in-IP, WireGuard, ...).
    Ip(&'a [u8]),
}

/// Transport protocol of a DNS response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// One DNS message per datagram.
    Udp,
    /// Messages with a 2-byte length prefix.
    Tcp,
}

/// The transport payload of a packet sent from port 53.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DnsSegment<'a> {
    /// Destination of the response: the client.
    pub client: SocketAddr,
    /// Source of the response: the server (port 53).
    pub server: SocketAddr,
    /// UDP or TCP.
    pub transport: Transport,
    /// Bytes after the UDP or TCP header (may be empty for TCP control segments).
    pub payload: &'a [u8],
}

/// Finds the DNS payload in a captured frame.
pub fn dns_segment(link: Link<'_>) -> Result<DnsSegment<'_>, DnsParseError> {
    let ip = match link {
        Link::Ethernet(frame) => ethernet_payload(frame)?,
        Link::Ip(packet) => packet,
    };
    match ip.first().map(|b| b >> 4) {
        Some(4) => ipv4_segment(ip),
        Some(6) => ipv6_segment(ip),
        Some(version) => Err(DnsParseError::NotIp(u16::from(version))),
        None => Err(DnsParseError::Truncated("IP header")),
    }
}

fn ethernet_payload(frame: &[u8]) -> Result<&[u8], DnsParseError> {
    let eth = EthernetPacket::new(frame).ok_or(DnsParseError::Truncated("Ethernet header"))?;
    let header_len = frame.len() - eth.payload().len();
    let (ethertype, offset) = if eth.get_ethertype() == EtherTypes::Vlan {
        let vlan = VlanPacket::new(&frame[header_len..])
            .ok_or(DnsParseError::Truncated("802.1Q header"))?;
        (
            vlan.get_ethertype(),
            header_len + VlanPacket::minimum_packet_size(),
        )
    } else {
        (eth.get_ethertype(), header_len)
    };
    match ethertype {
        EtherTypes::Ipv4 | EtherTypes::Ipv6 => Ok(&frame[offset..]),
        EtherType(other) => Err(DnsParseError::NotIp(other)),
    }
}

fn ipv4_segment(ip: &[u8]) -> Result<DnsSegment<'_>, DnsParseError> {
    let packet = Ipv4Packet::new(ip).ok_or(DnsParseError::Truncated("IPv4 header"))?;
    let header_len = usize::from(packet.get_header_length()) * 4;
    let total_len = usize::from(packet.get_total_length());
    if header_len < IPV4_MIN_HEADER_BYTES || total_len < header_len || total_len > ip.len() {
        return Err(DnsParseError::Truncated("IPv4 packet"));
    }
    if packet.get_fragment_offset() != 0 {
        return Err(DnsParseError::Fragment);
    }
    if packet.get_flags() & IPV4_MORE_FRAGMENTS != 0 {
        // A first fragment: the DNS message continues in packets we do not reassemble.
        return Err(DnsParseError::Fragment);
    }
    transport_segment(
        packet.get_next_level_protocol(),
        IpAddr::V4(packet.get_source()),
        IpAddr::V4(packet.get_destination()),
        &ip[header_len..total_len],
    )
}

fn ipv6_segment(ip: &[u8]) -> Result<DnsSegment<'_>, DnsParseError> {
    let packet = Ipv6Packet::new(ip).ok_or(DnsParseError::Truncated("IPv6 header"))?;
    let end = IPV6_HEADER_BYTES + usize::from(packet.get_payload_length());
    if end > ip.len() {
        return Err(DnsParseError::Truncated("IPv6 packet"));
    }
    transport_segment(
        packet.get_next_header(),
        IpAddr::V6(packet.get_source()),
        IpAddr::V6(packet.get_destination()),
        &ip[IPV6_HEADER_BYTES..end],
    )
}

fn transport_segment(
    protocol: IpNextHeaderProtocol,
    source: IpAddr,
    destination: IpAddr,
    bytes: &[u8],
) -> Result<DnsSegment<'_>, DnsParseError> {
    let (transport, source_port, destination_port, payload) = match protocol {
        IpNextHeaderProtocols::Udp => {
            let udp = UdpPacket::new(bytes).ok_or(DnsParseError::Truncated("UDP header"))?;
            let udp_len = usize::from(udp.get_length());
            if udp_len < UDP_HEADER_BYTES || udp_len > bytes.len() {
                return Err(DnsParseError::Truncated("UDP datagram"));
            }
            let payload = &bytes[UDP_HEADER_BYTES..udp_len];
            (
                Transport::Udp,
                udp.get_source(),
                udp.get_destination(),
                payload,
            )
        }
        IpNextHeaderProtocols::Tcp => {
            let tcp = TcpPacket::new(bytes).ok_or(DnsParseError::Truncated("TCP header"))?;
            let header_len = usize::from(tcp.get_data_offset()) * 4;
            if header_len < TCP_MIN_HEADER_BYTES || header_len > bytes.len() {
                return Err(DnsParseError::Truncated("TCP header"));
            }
            let payload = &bytes[header_len..];
            (
                Transport::Tcp,
                tcp.get_source(),
                tcp.get_destination(),
                payload,
            )
        }
        IpNextHeaderProtocol(other) => return Err(DnsParseError::NotUdpOrTcp(other)),
    };
    if source_port != DNS_PORT {
        return Err(DnsParseError::NotFromPort53(source_port));
    }
    Ok(DnsSegment {
        client: SocketAddr::new(destination, destination_port),
        server: SocketAddr::new(source, source_port),
        transport,
        payload,
    })
}

/// The DNS messages in a segment: the whole datagram for UDP; for TCP, each 2-byte
/// length-prefixed message (several per segment are fine). A TCP segment that does not end
/// on a message boundary yields [`DnsParseError::TcpSplit`] last: we do not reassemble streams.
pub fn dns_messages<'a>(segment: &DnsSegment<'a>) -> DnsMessages<'a> {
    DnsMessages {
        transport: segment.transport,
        rest: segment.payload,
        done: false,
    }
}

/// Iterator returned by [`dns_messages`].
#[derive(Debug)]
pub struct DnsMessages<'a> {
    transport: Transport,
    rest: &'a [u8],
    done: bool,
}

impl<'a> Iterator for DnsMessages<'a> {
    type Item = Result<&'a [u8], DnsParseError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        match self.transport {
            Transport::Udp => {
                self.done = true;
                Some(Ok(self.rest))
            }
            Transport::Tcp => {
                let rest = self.rest;
                if rest.is_empty() {
                    self.done = true;
                    return None;
                }
                let declared = match rest {
                    [high, low, ..] => usize::from(u16::from_be_bytes([*high, *low])),
                    _ => usize::MAX,
                };
                let available = rest.len().saturating_sub(2);
                if declared > available {
                    self.done = true;
                    return Some(Err(DnsParseError::TcpSplit {
                        declared,
                        available,
                    }));
                }
                let (message, tail) = rest[2..].split_at(declared);
                self.rest = tail;
                Some(Ok(message))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;
    use super::*;

    #[test]
    fn udp_over_ipv4_yields_client_and_server() {
        let frame = hex(UDP4_A_SVC);
        let segment = dns_segment(Link::Ethernet(&frame)).expect("DNS segment");
        assert_eq!(segment.client.ip().to_string(), "10.123.0.3");
        assert_eq!(segment.server.to_string(), "10.123.0.2:53");
        assert_eq!(segment.transport, Transport::Udp);
        assert_eq!(dns_messages(&segment).count(), 1);
    }

    #[test]
    fn udp_over_ipv6_yields_the_v6_client() {
        let frame = hex(UDP6_AAAA_SVC);
        let segment = dns_segment(Link::Ethernet(&frame)).expect("DNS segment");
        assert_eq!(segment.client.ip().to_string(), "fd00:123::3");
    }

    #[test]
    fn tcp_control_segments_hold_no_message() {
        let frame = hex(TCP4_SYN_ACK);
        let segment = dns_segment(Link::Ethernet(&frame)).expect("DNS segment");
        assert_eq!(segment.transport, Transport::Tcp);
        assert_eq!(dns_messages(&segment).count(), 0);
    }

    #[test]
    fn tcp_segments_split_on_length_prefixes() {
        let frame = hex(TCP4_CNAME_CHAIN);
        let segment = dns_segment(Link::Ethernet(&frame)).expect("DNS segment");
        let one: Vec<_> = dns_messages(&segment).collect();
        assert_eq!(one.len(), 1);
        assert_eq!(one[0].as_ref().expect("whole message").len(), 115);

        let mut doubled = segment.payload.to_vec();
        doubled.extend_from_slice(segment.payload);
        let two = DnsSegment {
            payload: &doubled,
            ..segment
        };
        assert_eq!(dns_messages(&two).filter(Result::is_ok).count(), 2);

        let half = DnsSegment {
            payload: &segment.payload[..60],
            ..segment
        };
        let split: Vec<_> = dns_messages(&half).collect();
        assert_eq!(
            split,
            vec![Err(DnsParseError::TcpSplit {
                declared: 115,
                available: 58
            })]
        );
    }

    #[test]
    fn lying_length_fields_are_truncation_not_panics() {
        let frame = hex(UDP4_A_SVC);
        for cut in 0..frame.len() {
            let _ = dns_segment(Link::Ethernet(&frame[..cut]));
        }
        let mut big_udp_len = frame.clone();
        big_udp_len[38] = 0xff; // UDP length high byte
        assert_eq!(
            dns_segment(Link::Ethernet(&big_udp_len)),
            Err(DnsParseError::Truncated("UDP datagram"))
        );
        let mut big_ihl = frame.clone();
        big_ihl[14] = 0x4f;
        assert!(dns_segment(Link::Ethernet(&big_ihl)).is_err());
        let mut tiny_ihl = frame.clone();
        tiny_ihl[14] = 0x41;
        assert_eq!(
            dns_segment(Link::Ethernet(&tiny_ihl)),
            Err(DnsParseError::Truncated("IPv4 packet"))
        );
    }

    #[test]
    fn non_dns_frames_are_refused_with_a_reason() {
        let mut frame = hex(UDP4_A_SVC);
        frame[35] = 54; // source port 54
        assert_eq!(
            dns_segment(Link::Ethernet(&frame)),
            Err(DnsParseError::NotFromPort53(54))
        );
        let mut arp = hex(UDP4_A_SVC);
        arp[12..14].copy_from_slice(&[0x08, 0x06]);
        assert_eq!(
            dns_segment(Link::Ethernet(&arp)),
            Err(DnsParseError::NotIp(0x0806))
        );
        let mut icmp = hex(UDP4_A_SVC);
        icmp[23] = 1;
        assert_eq!(
            dns_segment(Link::Ethernet(&icmp)),
            Err(DnsParseError::NotUdpOrTcp(1))
        );
        let mut fragment = hex(UDP4_A_SVC);
        fragment[20] = 0x00;
        fragment[21] = 0x10; // fragment offset 16 (x8 bytes)
        assert_eq!(
            dns_segment(Link::Ethernet(&fragment)),
            Err(DnsParseError::Fragment)
        );
    }

    #[test]
    fn vlan_tagged_frames_are_read() {
        let frame = hex(UDP4_A_SVC);
        let mut tagged = frame[..12].to_vec();
        tagged.extend_from_slice(&[0x81, 0x00, 0x00, 0x2a]);
        tagged.extend_from_slice(&frame[12..]);
        let segment = dns_segment(Link::Ethernet(&tagged)).expect("DNS segment");
        assert_eq!(segment.client.ip().to_string(), "10.123.0.3");
    }
}
