//! DNS capture: an AF_PACKET socket on every interface of the host namespace, a TPACKET_V3
//! ring, and a classic BPF filter so that only responses from port 53 reach user space.
//!
//! Every packet type is kept, outgoing ones included: a response from a resolver in the host
//! namespace to a pod is only ever *sent* by the host, so dropping `PACKET_OUTGOING` would lose
//! it. The several copies of one response (server veth in, client veth out, loopback twice)
//! are recognised by [`crate::dns::CopyFilter`], and the aggregator dedups by client and name
//! on top. The capture interface index is logged at debug level; mapping a host-side veth to
//! its peer's namespace is not done: pod identity for DNS comes from the scan's per-namespace
//! address map instead.

pub mod filter;
pub mod ring;

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use thiserror::Error;

use crate::counters::Counters;
use crate::dns::{DnsDecoder, Link};
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
    counters: &Counters,
    events: &EventSender,
    stop: &AtomicBool,
) -> Result<(), CaptureError> {
    let mut decoder = DnsDecoder::default();
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
            for answer in decoder.decode(link, seen_ms, counters) {
                tracing::debug!(
                    client = %answer.client_ip,
                    name = %answer.answer.name,
                    ifindex = packet.ifindex,
                    pkttype = packet.pkttype,
                    "DNS answer"
                );
                events.send_dns(
                    DnsEvent {
                        client_ip: answer.client_ip,
                        answer: answer.answer,
                        seen_ms,
                        ifindex: packet.ifindex,
                    },
                    counters,
                );
            }
        })?;
        if Instant::now() >= stats_due {
            record_stats(&ring, counters)?;
            stats_due = Instant::now() + STATS_INTERVAL;
        }
    }
    record_stats(&ring, counters)
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
    counters: Arc<Counters>,
    events: EventSender,
    stop: Arc<AtomicBool>,
) -> Result<std::thread::JoinHandle<Result<(), CaptureError>>, CaptureError> {
    let ring = open(geometry)?;
    tracing::info!(?geometry, "capturing DNS responses on all interfaces");
    std::thread::Builder::new()
        .name("capture".into())
        .spawn(move || run(ring, &counters, &events, &stop))
        .map_err(|source| CaptureError::Syscall {
            what: "start the capture thread",
            source,
        })
}

#[cfg(test)]
mod kernel_tests;
