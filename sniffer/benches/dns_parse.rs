//! `dns_parse`: one typical A response, from the captured Ethernet frame to the observation the
//! sniffer emits (frame -> DNS answer -> aggregated `Observation`), as the capture and output
//! threads do it, on a node as full as the kubelet allows by default (110 pods, each behind a
//! host-side veth the scan found). Run with `cargo bench -p trafficmap-sniffer --bench
//! dns_parse`.
//!
//! The `dns_parse` responses differ from recent ones only in their ID and port, as a node's
//! resolver repeats its answer for a name: the decoder answers them from its memo of recent
//! messages. `dns_parse_new_name` is the same path for responses to names not seen recently,
//! which are parsed.
//!
//! Baseline `simple_dns_parse`: `simple_dns::Packet::parse` of the same DNS messages alone, the
//! part of the path the library does.

use std::collections::HashMap;
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use trafficmap_sniffer::aggregate::Aggregator;
use trafficmap_sniffer::counters::Counters;
use trafficmap_sniffer::dns::{Decoded, DnsDecoder, Link};
use trafficmap_sniffer::events::DnsEvent;
use trafficmap_sniffer::scan::PodLink;

/// `dig @10.123.0.2 svc.test.local A` answered by dnsmasq: one A record, TTL 300 (the frame of
/// the sniffer's unit tests).
const UDP4_A_SVC: &str = concat!(
    "e2e29e8530647e513c6e48150800450000576eae40004011b6ed0a7b00020a7b00030035de1b0043",
    "154f691485800001000100000001037376630474657374056c6f63616c0000010001c00c00010001",
    "0000012c00040a7b003200002904d0000000000000",
);
/// Offsets in the frame of the UDP destination port, of the DNS message ID and of the first
/// label of the queried name ("svc").
const DEST_PORT_OFFSET: usize = 36;
const DNS_ID_OFFSET: usize = 42;
const FIRST_LABEL_OFFSET: usize = 55;
/// Distinct responses cycled through, so no iteration is a copy of the one before: twice as
/// many as the decoder's memo holds, so in `dns_parse_new_name` none is remembered when it
/// comes round again.
const DISTINCT_FRAMES: usize = 2 * trafficmap_sniffer::dns::memo::DEFAULT_ENTRIES;
/// Pods on the node: the kubelet's default `maxPods`.
const NODE_PODS: u8 = 110;
/// The fixture's client address (10.123.0.3) is the first pod's.
const FIRST_POD_HOST: u8 = 3;
/// Host-side veth index of the first pod; the others follow.
const FIRST_VETH: i32 = 100;

/// The scan's view of the node: each pod's address and host-side veth.
fn node() -> (HashMap<IpAddr, String>, HashMap<i32, PodLink>) {
    (0..NODE_PODS)
        .map(|pod| {
            let uid = format!("5f0c1a2e-7d3b-4c8e-9a61-{:012x}", pod);
            let ip = IpAddr::V4(Ipv4Addr::new(10, 123, 0, FIRST_POD_HOST + pod));
            let link = PodLink {
                netns_inode: 4_026_532_000 + u64::from(pod),
                pod_uid: Some(uid.clone()),
            };
            ((ip, uid), (FIRST_VETH + i32::from(pod), link))
        })
        .unzip()
}

/// `DISTINCT_FRAMES` responses differing in port and ID; with `distinct_names`, also in the
/// queried name (`i` in three base-36 digits instead of "svc").
fn frames(distinct_names: bool) -> Vec<Vec<u8>> {
    let template: Vec<u8> = (0..UDP4_A_SVC.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&UDP4_A_SVC[i..i + 2], 16).expect("hex fixture"))
        .collect();
    (0..DISTINCT_FRAMES)
        .map(|i| {
            let mut frame = template.clone();
            let port = 20_000 + i as u16;
            frame[DEST_PORT_OFFSET..DEST_PORT_OFFSET + 2].copy_from_slice(&port.to_be_bytes());
            frame[DNS_ID_OFFSET..DNS_ID_OFFSET + 2].copy_from_slice(&(i as u16).to_be_bytes());
            if distinct_names {
                const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
                let label = [i / (36 * 36) % 36, i / 36 % 36, i % 36].map(|d| DIGITS[d]);
                frame[FIRST_LABEL_OFFSET..FIRST_LABEL_OFFSET + 3].copy_from_slice(&label);
            }
            frame
        })
        .collect()
}

/// The sniffer's path, frame to observations, over `frames` in turn, as `name`.
fn decode_and_aggregate(c: &mut Criterion, name: &str, frames: &[Vec<u8>]) {
    let counters = Counters::default();
    let mut decoder = DnsDecoder::default();
    let mut decoded = Decoded::default();
    for frame in frames {
        decoder.decode_into(Link::Ethernet(frame), 0, &counters, &mut decoded);
        assert_eq!(decoded.answers.len(), 1, "{name}: a frame gave no answer");
    }
    let mut decoder = DnsDecoder::default();
    // Refreshing at every sighting: each answer becomes an `Observation`, the costliest case.
    let mut aggregator = Aggregator::with_refresh(Duration::ZERO);
    let (pod_ips, pod_links) = node();
    aggregator.set_pod_ips(pod_ips);
    aggregator.set_pod_links(pod_links);
    let mut now_ms = 1_700_000_000_000_u64;
    let mut next = 0usize;
    c.bench_function(name, |b| {
        b.iter(|| {
            let frame = &frames[next % frames.len()];
            next += 1;
            // Time moves on each round, as it does on the wire.
            now_ms += 1;
            decoder.decode_into(
                Link::Ethernet(black_box(frame)),
                now_ms,
                &counters,
                &mut decoded,
            );
            let mut emitted = 0;
            for answer in decoded.answers.drain(..) {
                let event = DnsEvent {
                    client_ip: answer.client_ip,
                    answer: answer.answer,
                    seen_ms: now_ms,
                    ifindex: 2,
                    // Sent on the client pod's veth, as the host's bridge does.
                    sent_on: vec![FIRST_VETH],
                };
                emitted += aggregator.dns(&event, &counters).len();
            }
            black_box(emitted)
        })
    });
}

/// Responses repeating recent ones but for their ID and port: answered from the memo.
fn dns_parse(c: &mut Criterion) {
    decode_and_aggregate(c, "dns_parse", &frames(false));
}

/// Responses for names not seen recently: each is parsed.
fn dns_parse_new_name(c: &mut Criterion) {
    decode_and_aggregate(c, "dns_parse_new_name", &frames(true));
}

/// The DNS message inside a fixture frame (after Ethernet, IPv4 and UDP headers).
const DNS_MESSAGE_OFFSET: usize = DNS_ID_OFFSET;

fn simple_dns_parse(c: &mut Criterion) {
    let frames = frames(false);
    let mut next = 0usize;
    c.bench_function("simple_dns_parse", |b| {
        b.iter(|| {
            let message = &frames[next % DISTINCT_FRAMES][DNS_MESSAGE_OFFSET..];
            next += 1;
            let packet = simple_dns::Packet::parse(black_box(message)).expect("fixture parses");
            black_box(packet.answers.len())
        })
    });
}

criterion_group!(benches, dns_parse, dns_parse_new_name, simple_dns_parse);
criterion_main!(benches);
