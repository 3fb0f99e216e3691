//! What the capture and scan threads send to the output thread.

use std::net::IpAddr;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};

use crate::counters::Counters;
use crate::dns::DnsAnswer;
use crate::scan::ScanReport;

/// Events queued for the output thread at most; past this, DNS events are dropped and counted.
pub const EVENT_QUEUE_CAPACITY: usize = 16_384;

/// A DNS answer seen on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsEvent {
    /// Destination of the response.
    pub client_ip: IpAddr,
    /// What it said.
    pub answer: DnsAnswer,
    /// When it was captured, milliseconds since the Unix epoch.
    pub seen_ms: u64,
    /// Interface it was captured on (the first copy's).
    pub ifindex: i32,
    /// Interfaces the host sent a copy of it on (`PACKET_OUTGOING`), in capture order: a
    /// host-side veth here names the client's namespace.
    pub sent_on: Vec<i32>,
}

/// One message to the output thread.
#[derive(Debug)]
pub enum Event {
    /// From the capture thread.
    Dns(DnsEvent),
    /// From the scan thread, once per scan.
    Scan(ScanReport),
}

/// The sending side, cloned into each producer thread.
#[derive(Debug, Clone)]
pub struct EventSender(SyncSender<Event>);

/// A bounded queue of events.
pub fn channel() -> (EventSender, Receiver<Event>) {
    let (tx, rx) = sync_channel(EVENT_QUEUE_CAPACITY);
    (EventSender(tx), rx)
}

impl EventSender {
    /// Queues a DNS event without blocking the capture loop; counts it when dropped.
    pub fn send_dns(&self, event: DnsEvent, counters: &Counters) {
        match self.0.try_send(Event::Dns(event)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => Counters::inc(&counters.events_dropped),
            Err(TrySendError::Disconnected(_)) => {}
        }
    }

    /// Queues a scan report, waiting for room. False when the output thread is gone.
    pub fn send_scan(&self, report: ScanReport) -> bool {
        self.0.send(Event::Scan(report)).is_ok()
    }
}
