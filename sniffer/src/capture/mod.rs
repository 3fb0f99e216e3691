//! DNS capture: an AF_PACKET socket on every interface of the host namespace, a TPACKET_V3
//! ring, and a classic BPF filter so that only responses from port 53 reach user space.
//!
//! Every packet type is kept, outgoing ones included: a response from a resolver in the host
//! namespace to a pod is only ever *sent* by the host, so dropping `PACKET_OUTGOING` would lose
//! it. The several copies of one response (server veth in, client veth out, loopback twice)
//! are recognised by [`crate::dns::CopyFilter`], and the aggregator dedups by client and name
//! on top.
//!
//! The copies still tell something: the one the host *sent* (`PACKET_OUTGOING`) on a host-side
//! veth went to the namespace at the other end of that veth, i.e. to the client's. The first
//! copy is usually the server's (received on the server's veth), so the answers of one ring
//! block are held in a [`Batch`] until the block is walked, collecting the interfaces each
//! response was sent on ([`DnsEvent::sent_on`]); the output thread maps them to pods with the
//! scan's veth map (see [`crate::aggregate`]). The two copies of a forwarded response are
//! written in one kernel pass, so they share a block unless it was retired between them; then
//! the late copy is only counted and the response is attributed by its address.

pub mod filter;
pub mod ring;

use std::collections::HashMap;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use thiserror::Error;

use crate::counters::Counters;
use crate::dns::{Decoded, DnsDecoder, Link};
use crate::events::{DnsEvent, EventSender};
use crate::now_ms;
pub use ring::{PacketRing, RingGeometry};

/// How long one wait for a block lasts, so a stop request is seen promptly.
const POLL_INTERVAL: Duration = Duration::from_millis(200);
/// How often kernel drop counters are read.
const STATS_INTERVAL: Duration = Duration::from_secs(1);
const ARPHRD_ETHER: u16 = 1;
const ARPHRD_LOOPBACK: u16 = 772;

/// Why capture could not start or stopped.
#[derive(Debug, Error)]
pub enum CaptureError {
    /// A system call failed.
    #[error("cannot {what}: {source}")]
    Syscall {
        /// What we were doing.
        what: &'static str,
        /// The OS error.
        source: io::Error,
    },
    /// Block size or count the kernel would refuse.
    #[error(
        "ring geometry {0:?} is invalid: block size must be a multiple of 2048 (and of the page size), block count at least 1"
    )]
    BadGeometry(RingGeometry),
    /// More than 65535 BPF instructions.
    #[error("BPF program is too long")]
    FilterTooLong,
}

/// Opens the capture ring with the DNS filter attached.
pub fn open(geometry: RingGeometry) -> Result<PacketRing, CaptureError> {
    PacketRing::open(geometry, &filter::dns_response_filter())
}

/// Reads the ring until `stop` is set, sending each DNS answer to the output thread.
pub fn run(
    mut ring: PacketRing,
    mut decoder: DnsDecoder,
    counters: &Counters,
    events: &EventSender,
    stop: &AtomicBool,
) -> Result<(), CaptureError> {
    let mut decoded = Decoded::default();
    let mut batch = Batch::default();
    let mut stats_due = Instant::now() + STATS_INTERVAL;
    while !stop.load(Ordering::Relaxed) {
        ring.next_block(POLL_INTERVAL, |packet| {
            let seen_ms = if packet.timestamp_ms == 0 {
                now_ms()
            } else {
                packet.timestamp_ms
            };
            Counters::inc(&counters.frames);
            let link = match packet.hatype {
                ARPHRD_ETHER | ARPHRD_LOOPBACK => Link::Ethernet(packet.data),
                _ => Link::Ip(packet.data.get(packet.network_offset..).unwrap_or_default()),
            };
            decoder.decode_into(link, seen_ms, counters, &mut decoded);
            batch.add(
                &mut decoded,
                packet.ifindex,
                packet.pkttype == libc::PACKET_OUTGOING,
                seen_ms,
            );
        })?;
        for event in batch.drain() {
            tracing::debug!(
                client = %event.client_ip,
                name = %event.answer.name,
                ifindex = event.ifindex,
                sent_on = ?event.sent_on,
                "DNS answer"
            );
            events.send_dns(event, counters);
        }
        if Instant::now() >= stats_due {
            record_stats(&ring, counters)?;
            stats_due = Instant::now() + STATS_INTERVAL;
        }
    }
    record_stats(&ring, counters)
}

/// The answers of one ring block, with the interfaces their copies were sent on.
#[derive(Debug, Default)]
pub struct Batch {
    events: Vec<DnsEvent>,
    by_response: HashMap<u64, usize>,
}

impl Batch {
    /// Adds what one frame held, leaving `decoded` empty for the next frame: new answers
    /// become events; a copy sent by the host adds its interface to the event of the
    /// response it repeats, when that is in this batch.
    pub fn add(&mut self, decoded: &mut Decoded, ifindex: i32, outgoing: bool, seen_ms: u64) {
        if outgoing {
            for id in decoded.copies.drain(..) {
                if let Some(event) = self
                    .by_response
                    .get(&id)
                    .and_then(|at| self.events.get_mut(*at))
                    && !event.sent_on.contains(&ifindex)
                {
                    event.sent_on.push(ifindex);
                }
            }
        }
        decoded.copies.clear();
        for answer in decoded.answers.drain(..) {
            self.by_response
                .insert(answer.response_id, self.events.len());
            self.events.push(DnsEvent {
                client_ip: answer.client_ip,
                answer: answer.answer,
                seen_ms,
                ifindex,
                sent_on: if outgoing { vec![ifindex] } else { Vec::new() },
            });
        }
    }

    /// The events gathered so far, in capture order; the batch is empty after, and keeps its
    /// room for the next block.
    pub fn drain(&mut self) -> std::vec::Drain<'_, DnsEvent> {
        self.by_response.clear();
        self.events.drain(..)
    }
}

fn record_stats(ring: &PacketRing, counters: &Counters) -> Result<(), CaptureError> {
    let stats = ring.stats()?;
    Counters::add(&counters.kernel_packets, u64::from(stats.packets));
    Counters::add(&counters.kernel_drops, u64::from(stats.drops));
    Counters::add(&counters.kernel_queue_freezes, u64::from(stats.freezes));
    if stats.drops > 0 {
        tracing::warn!(
            drops = stats.drops,
            "kernel dropped packets: the capture ring is too small or we are too slow"
        );
    }
    Ok(())
}

/// Starts capture on its own thread. The ring is opened here, so permission errors surface
/// before the thread starts.
pub fn spawn(
    geometry: RingGeometry,
    memo_entries: usize,
    counters: Arc<Counters>,
    events: EventSender,
    stop: Arc<AtomicBool>,
) -> Result<std::thread::JoinHandle<Result<(), CaptureError>>, CaptureError> {
    let ring = open(geometry)?;
    tracing::info!(
        ?geometry,
        memo_entries,
        "capturing DNS responses on all interfaces"
    );
    let decoder = DnsDecoder::with_memo(memo_entries);
    std::thread::Builder::new()
        .name("capture".into())
        .spawn(move || run(ring, decoder, &counters, &events, &stop))
        .map_err(|source| CaptureError::Syscall {
            what: "start the capture thread",
            source,
        })
}

#[cfg(test)]
mod kernel_tests;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::{ClientAnswer, DnsAnswer};

    fn answer(id: u64) -> Decoded {
        Decoded {
            answers: vec![ClientAnswer {
                client_ip: "10.0.0.5".parse().expect("ip"),
                answer: DnsAnswer {
                    name: format!("n{id}.test"),
                    ips: vec!["10.1.0.1".parse().expect("ip")],
                    ttl_seconds: 30,
                },
                response_id: id,
            }],
            copies: Vec::new(),
        }
    }

    fn copy(id: u64) -> Decoded {
        Decoded {
            answers: Vec::new(),
            copies: vec![id],
        }
    }

    #[test]
    fn copies_sent_by_the_host_add_their_interface_to_the_first_copy() {
        let mut batch = Batch::default();
        // Received on the server's veth (7), sent on the bridge (3) and the client's veth (9),
        // received again somewhere (11), sent on the client's veth twice.
        batch.add(&mut answer(1), 7, false, 100);
        batch.add(&mut copy(1), 3, true, 100);
        batch.add(&mut copy(1), 9, true, 100);
        batch.add(&mut copy(1), 11, false, 100);
        batch.add(&mut copy(1), 9, true, 100);
        // A resolver in the host namespace: its first copy is already a sent one.
        batch.add(&mut answer(2), 9, true, 101);
        let events: Vec<DnsEvent> = batch.drain().collect();
        assert_eq!(events.len(), 2);
        assert_eq!(
            (events[0].ifindex, events[0].sent_on.clone()),
            (7, vec![3, 9])
        );
        assert_eq!((events[1].ifindex, events[1].sent_on.clone()), (9, vec![9]));
        assert_eq!(batch.drain().len(), 0);
        // A copy of a response flushed with an earlier block changes nothing.
        batch.add(&mut copy(1), 9, true, 102);
        assert_eq!(batch.drain().len(), 0);
    }
}
