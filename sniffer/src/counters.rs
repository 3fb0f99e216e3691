//! Process-wide counters, shared by the capture, scan and output threads.
//!
//! Plain atomics so any thread can count without locks; [`Counters::snapshot`] gives a
//! serialisable copy that the Prometheus collector ([`crate::metrics`]) and the final log line
//! read, so there is one set of numbers.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

use crate::dns::ParseErrorKind;
use crate::report::deliver::FailureReason;

/// Everything the sniffer counts. Fields are public so each module bumps its own.
#[derive(Debug, Default)]
pub struct Counters {
    /// Frames read from the capture ring (after the kernel filter).
    pub frames: AtomicU64,
    /// DNS messages read, copies excluded.
    pub dns_responses: AtomicU64,
    /// Copies of a response already seen on another interface.
    pub dns_copies: AtomicU64,
    /// Responses answered from the memo of recent messages rather than parsed.
    pub dns_memo_hits: AtomicU64,
    /// Responses that gave addresses for their question.
    pub dns_answers: AtomicU64,
    /// Messages from port 53 that are not responses to a standard query.
    pub dns_not_responses: AtomicU64,
    /// Responses with an error RCODE (NXDOMAIN, SERVFAIL, ...).
    pub dns_error_rcode: AtomicU64,
    /// NOERROR responses without A/AAAA answers for the question.
    pub dns_without_addresses: AtomicU64,
    parse_errors: [AtomicU64; ParseErrorKind::ALL.len()],
    /// Packets the kernel passed to the ring (PACKET_STATISTICS `tp_packets`).
    pub kernel_packets: AtomicU64,
    /// Packets the kernel dropped because the ring was full (PACKET_STATISTICS `tp_drops`).
    pub kernel_drops: AtomicU64,
    /// Times the ring froze because user space fell behind (`tp_freeze_q_cnt`).
    pub kernel_queue_freezes: AtomicU64,
    /// DNS answers whose client pod came from the host-side veth the response was sent on.
    pub dns_client_by_interface: AtomicU64,
    /// DNS answers whose client pod came from the client address (no veth told).
    pub dns_client_by_address: AtomicU64,
    /// DNS answers whose veth and address named different pods (the veth was trusted).
    pub dns_client_mismatch: AtomicU64,
    /// Events dropped because the output thread fell behind.
    pub events_dropped: AtomicU64,
    /// Completed socket scans.
    pub scans: AtomicU64,
    /// Namespaces that could not be scanned (process gone, permission, netlink error).
    pub scan_errors: AtomicU64,
    /// Network namespaces scanned, summed over scans.
    pub namespaces_scanned: AtomicU64,
    /// Sockets returned by sock_diag or the BPF iterator, summed over scans.
    pub sockets_scanned: AtomicU64,
    /// Scans whose sockets came from the BPF iterator (the others used sock_diag).
    pub bpf_scans: AtomicU64,
    /// Duration of the latest scan, in microseconds.
    pub last_scan_duration_us: AtomicU64,
    /// Duration of all scans, in microseconds.
    pub scan_duration_us_total: AtomicU64,
    /// When the latest scan finished, milliseconds since the Unix epoch (0: none yet).
    pub last_scan_end_ms: AtomicU64,
    /// Observations written out (jsonl) or handed to the reporter.
    pub observations_emitted: AtomicU64,
    /// Reports the operator accepted.
    pub reports_sent: AtomicU64,
    /// Observations in reports the operator accepted.
    pub observations_reported: AtomicU64,
    report_failures: [AtomicU64; FailureReason::ALL.len()],
    /// Reports dropped because the operator refused them for good (4xx).
    pub reports_dropped: AtomicU64,
    /// Observations in reports the operator refused for good.
    pub observations_rejected: AtomicU64,
    /// Observations dropped, oldest first, because the report buffer was full.
    pub buffer_dropped: AtomicU64,
    /// Deduplication entries forgotten because their table was full (not by age).
    pub dedup_evicted: AtomicU64,
    /// Bytes waiting in the report buffer (a gauge).
    pub buffer_bytes: AtomicU64,
    /// Observations waiting in the report buffer (a gauge).
    pub buffered_observations: AtomicU64,
}

/// A copy of [`Counters`] at one moment; each field means what the counter of that name does.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CountersSnapshot {
    pub frames: u64,
    pub dns_responses: u64,
    pub dns_copies: u64,
    pub dns_memo_hits: u64,
    pub dns_answers: u64,
    pub dns_not_responses: u64,
    pub dns_error_rcode: u64,
    pub dns_without_addresses: u64,
    /// Parse errors by [`ParseErrorKind::label`].
    pub parse_errors: BTreeMap<&'static str, u64>,
    pub kernel_packets: u64,
    pub kernel_drops: u64,
    pub kernel_queue_freezes: u64,
    pub dns_client_by_interface: u64,
    pub dns_client_by_address: u64,
    pub dns_client_mismatch: u64,
    pub events_dropped: u64,
    pub scans: u64,
    pub scan_errors: u64,
    pub namespaces_scanned: u64,
    pub sockets_scanned: u64,
    pub bpf_scans: u64,
    pub last_scan_duration_us: u64,
    pub scan_duration_us_total: u64,
    pub last_scan_end_ms: u64,
    pub observations_emitted: u64,
    pub reports_sent: u64,
    pub observations_reported: u64,
    /// Report failures by [`FailureReason::label`].
    pub report_failures: BTreeMap<&'static str, u64>,
    pub reports_dropped: u64,
    pub observations_rejected: u64,
    pub buffer_dropped: u64,
    pub dedup_evicted: u64,
    pub buffer_bytes: u64,
    pub buffered_observations: u64,
}

impl Counters {
    /// Adds one.
    pub fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Adds `n`.
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Counts one parse error of `kind`.
    pub fn parse_error(&self, kind: ParseErrorKind) {
        Self::inc(&self.parse_errors[kind.index()]);
    }

    /// Counts one failed report request.
    pub fn report_failure(&self, reason: FailureReason) {
        Self::inc(&self.report_failures[reason.index()]);
    }

    /// Sets a gauge.
    pub fn set(gauge: &AtomicU64, value: u64) {
        gauge.store(value, Ordering::Relaxed);
    }

    /// Parse errors, indexed by [`ParseErrorKind::index`].
    pub fn parse_errors(&self) -> [u64; ParseErrorKind::ALL.len()] {
        std::array::from_fn(|i| self.parse_errors[i].load(Ordering::Relaxed))
    }

    /// A consistent-enough copy of every counter.
    pub fn snapshot(&self) -> CountersSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let errors = self.parse_errors();
        let failures = &self.report_failures;
        CountersSnapshot {
            frames: get(&self.frames),
            dns_responses: get(&self.dns_responses),
            dns_copies: get(&self.dns_copies),
            dns_memo_hits: get(&self.dns_memo_hits),
            dns_answers: get(&self.dns_answers),
            dns_not_responses: get(&self.dns_not_responses),
            dns_error_rcode: get(&self.dns_error_rcode),
            dns_without_addresses: get(&self.dns_without_addresses),
            parse_errors: ParseErrorKind::ALL
                .iter()
                .map(|k| (k.label(), errors[k.index()]))
                .collect(),
            kernel_packets: get(&self.kernel_packets),
            kernel_drops: get(&self.kernel_drops),
            kernel_queue_freezes: get(&self.kernel_queue_freezes),
            dns_client_by_interface: get(&self.dns_client_by_interface),
            dns_client_by_address: get(&self.dns_client_by_address),
            dns_client_mismatch: get(&self.dns_client_mismatch),
            events_dropped: get(&self.events_dropped),
            scans: get(&self.scans),
            scan_errors: get(&self.scan_errors),
            namespaces_scanned: get(&self.namespaces_scanned),
            sockets_scanned: get(&self.sockets_scanned),
            bpf_scans: get(&self.bpf_scans),
            last_scan_duration_us: get(&self.last_scan_duration_us),
            scan_duration_us_total: get(&self.scan_duration_us_total),
            last_scan_end_ms: get(&self.last_scan_end_ms),
            observations_emitted: get(&self.observations_emitted),
            reports_sent: get(&self.reports_sent),
            observations_reported: get(&self.observations_reported),
            report_failures: FailureReason::ALL
                .iter()
                .map(|r| (r.label(), get(&failures[r.index()])))
                .collect(),
            reports_dropped: get(&self.reports_dropped),
            observations_rejected: get(&self.observations_rejected),
            buffer_dropped: get(&self.buffer_dropped),
            dedup_evicted: get(&self.dedup_evicted),
            buffer_bytes: get(&self.buffer_bytes),
            buffered_observations: get(&self.buffered_observations),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_kinds_index_their_own_slot() {
        for (i, kind) in ParseErrorKind::ALL.iter().enumerate() {
            assert_eq!(kind.index(), i, "{kind:?}");
        }
    }

    #[test]
    fn parse_errors_are_labelled_in_the_snapshot() {
        let counters = Counters::default();
        counters.parse_error(ParseErrorKind::BogusCounts);
        counters.parse_error(ParseErrorKind::BogusCounts);
        Counters::inc(&counters.frames);
        let snapshot = counters.snapshot();
        assert_eq!(snapshot.frames, 1);
        assert_eq!(snapshot.parse_errors["bogus_counts"], 2);
        assert_eq!(snapshot.parse_errors["malformed"], 0);
        assert_eq!(snapshot.parse_errors.len(), ParseErrorKind::ALL.len());
    }

    #[test]
    fn report_failures_are_labelled_in_the_snapshot() {
        let counters = Counters::default();
        counters.report_failure(FailureReason::Tls);
        let snapshot = counters.snapshot();
        assert_eq!(snapshot.report_failures["tls"], 1);
        assert_eq!(snapshot.report_failures["server_error"], 0);
        assert_eq!(snapshot.report_failures.len(), FailureReason::ALL.len());
    }
}
