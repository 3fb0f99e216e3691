//! The filter and ring in the real kernel, inside a private network namespace (needs root).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use super::*;
use crate::dns::fixtures::{UDP4_A_SVC, UDP4_CNAME_CHAIN, UDP6_AAAA_SVC, hex};
use crate::dns::{Transport, dns_segment};
use crate::test_support::private_netns_with_loopback;

/// The DNS message inside a fixture frame (Ethernet + IPv4/IPv6 + UDP headers skipped).
fn dns_message(fixture: &str, headers: usize) -> Vec<u8> {
    hex(fixture)[headers..].to_vec()
}

fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "this test needs root (AF_PACKET, unshare(CLONE_NEWNET)); run cargo test as root"
    );
}

#[test]
fn the_kernel_delivers_only_responses_from_port_53() {
    require_root();
    std::thread::spawn(|| {
        private_netns_with_loopback();
        let geometry = RingGeometry {
            block_bytes: 1 << 16,
            block_count: 4,
        };
        let mut ring = open(geometry).expect("ring opens as root");

        let client = UdpSocket::bind("127.0.0.1:40000").expect("client");
        let dns = UdpSocket::bind("127.0.0.1:53").expect("port 53");
        let other = UdpSocket::bind("127.0.0.1:5353").expect("port 5353");
        let a = dns_message(UDP4_A_SVC, 42);
        dns.send_to(&a, "127.0.0.1:40000").expect("send");
        other.send_to(&a, "127.0.0.1:40000").expect("send");
        client
            .send_to(&a, "127.0.0.1:53")
            .expect("send query-like to 53");

        let client6 = UdpSocket::bind("[::1]:40000").expect("client v6");
        let dns6 = UdpSocket::bind("[::1]:53").expect("port 53 v6");
        let other6 = UdpSocket::bind("[::1]:5353").expect("port 5353 v6");
        let aaaa = dns_message(UDP6_AAAA_SVC, 62);
        dns6.send_to(&aaaa, "[::1]:40000").expect("send");
        other6.send_to(&aaaa, "[::1]:40000").expect("send");
        let _ = client6;

        let listener = TcpListener::bind("127.0.0.1:53").expect("tcp 53");
        let mut stream = TcpStream::connect("127.0.0.1:53").expect("connect");
        let (mut served, _) = listener.accept().expect("accept");
        let chain = dns_message(UDP4_CNAME_CHAIN, 42);
        let mut framed = (chain.len() as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(&chain);
        served.write_all(&framed).expect("tcp response");
        stream.write_all(b"\0\x05query").expect("tcp query");
        let mut buf = vec![0u8; framed.len()];
        stream.read_exact(&mut buf).expect("read response");

        let counters = Counters::default();
        let mut decoder = DnsDecoder::default();
        let mut answers = Vec::new();
        let mut sources = Vec::new();
        let until = Instant::now() + Duration::from_secs(2);
        while Instant::now() < until {
            ring.next_block(Duration::from_millis(100), |packet| {
                Counters::inc(&counters.frames);
                assert!(
                    packet.timestamp_ms.abs_diff(crate::now_ms()) < 10_000,
                    "kernel timestamp"
                );
                let segment =
                    dns_segment(Link::Ethernet(packet.data)).expect("only DNS passes the filter");
                sources.push((segment.server.port(), segment.transport, packet.pkttype));
                answers.extend(decoder.decode(Link::Ethernet(packet.data), 0, &counters));
            })
            .expect("ring read");
        }
        assert!(
            sources.iter().all(|(port, _, _)| *port == 53),
            "{sources:?}"
        );
        assert!(
            sources
                .iter()
                .any(|(_, t, p)| *t == Transport::Tcp && *p == libc::PACKET_OUTGOING)
        );
        assert!(
            sources
                .iter()
                .any(|(_, t, p)| *t == Transport::Udp && *p == libc::PACKET_HOST)
        );
        let names: Vec<(String, String)> = answers
            .iter()
            .map(|a| (a.client_ip.to_string(), a.answer.name.clone()))
            .collect();
        assert_eq!(
            names,
            [
                ("127.0.0.1".to_owned(), "svc.test.local".to_owned()),
                ("::1".to_owned(), "svc.test.local".to_owned()),
                ("127.0.0.1".to_owned(), "app.test.local".to_owned()),
            ]
        );
        // Each response crossed lo twice (sent, then received): the second copy is dropped.
        assert_eq!(
            counters
                .dns_copies
                .load(std::sync::atomic::Ordering::Relaxed),
            3
        );
        let stats = ring.stats().expect("stats");
        assert_eq!(stats.drops, 0);
        assert_eq!(
            u64::from(stats.packets),
            counters.frames.load(std::sync::atomic::Ordering::Relaxed)
        );
    })
    .join()
    .expect("kernel test thread");
}
