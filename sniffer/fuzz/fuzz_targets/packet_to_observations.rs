//! Captured bytes -> DNS answers -> observations, as the capture and output threads do it.
//!
//! Properties: nothing panics; every observation the sniffer would send passes the operator's
//! own validation (`Observation::validate`), so hostile packets can never make the sniffer
//! report garbage; the counters account for every DNS message.
//!
//! Input layout: byte 0 picks the link type (even: Ethernet, odd: bare IP) and whether the
//! frame is fed twice (a copy on a second interface); the rest is the frame.

#![no_main]

use libfuzzer_sys::fuzz_target;
use trafficmap_sniffer::aggregate::Aggregator;
use trafficmap_sniffer::counters::Counters;
use trafficmap_sniffer::dns::{DnsDecoder, Link};
use trafficmap_sniffer::events::DnsEvent;

const SEEN_MS: u64 = 1_700_000_000_000;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, frame)) = data.split_first() else {
        return;
    };
    let link = if mode & 1 == 0 {
        Link::Ethernet(frame)
    } else {
        Link::Ip(frame)
    };
    let counters = Counters::default();
    let mut decoder = DnsDecoder::default();
    let mut aggregator = Aggregator::default();
    let repeats = if mode & 2 == 0 { 1 } else { 2 };
    for copy in 0..repeats {
        let decoded = decoder.decode_frame(link, SEEN_MS + copy, &counters);
        if copy > 0 {
            assert!(
                decoded.answers.is_empty(),
                "a repeated frame was decoded twice"
            );
        }
        for answer in decoded.answers {
            assert!(!answer.answer.ips.is_empty(), "an answer without addresses");
            let event = DnsEvent {
                client_ip: answer.client_ip,
                answer: answer.answer,
                seen_ms: SEEN_MS,
                ifindex: 1,
                sent_on: vec![2],
            };
            for observation in aggregator.dns(&event, &counters) {
                if let Err(reason) = observation.validate() {
                    panic!(
                        "sniffer produced an observation the operator rejects: {reason}: {observation:?}"
                    );
                }
            }
        }
    }
});
