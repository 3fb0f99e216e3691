//! Prometheus metrics: one registry whose collector reads [`Counters`] at each scrape, so the
//! threads keep counting with plain atomics and there is a single set of numbers.

use std::fmt;
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use crate::counters::{Counters, CountersSnapshot};

/// Prefix of every metric name.
pub const METRIC_PREFIX: &str = "trafficmap_sniffer";

/// A registry holding every sniffer metric.
pub fn registry(counters: Arc<Counters>) -> Registry {
    let mut registry = Registry::with_prefix(METRIC_PREFIX);
    registry.register_collector(Box::new(CountersCollector(counters)));
    registry
}

/// The whole registry in the text exposition format.
pub fn render(registry: &Registry) -> Result<String, fmt::Error> {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, registry)?;
    Ok(text)
}

/// Encodes [`Counters`] as metrics.
#[derive(Debug)]
struct CountersCollector(Arc<Counters>);

/// A counter: name (without `_total`), help, value.
type CounterRow = (&'static str, &'static str, u64);

#[rustfmt::skip]
fn counter_rows(s: &CountersSnapshot) -> [CounterRow; 27] {
    [
        ("packets", "Frames read from the capture ring (after the kernel's DNS filter).", s.frames),
        ("kernel_packets", "Packets the kernel passed to the capture ring.", s.kernel_packets),
        ("kernel_drops", "Packets the kernel dropped because the capture ring was full.", s.kernel_drops),
        ("kernel_queue_freezes", "Times the capture ring froze because user space fell behind.", s.kernel_queue_freezes),
        ("dns_responses", "DNS messages read, copies from other interfaces excluded.", s.dns_responses),
        ("dns_copies", "Copies of a DNS response already seen on another interface.", s.dns_copies),
        ("dns_memo_hits", "DNS responses answered from the memo of recent messages rather than parsed.", s.dns_memo_hits),
        ("dns_answers", "DNS responses parsed that gave addresses for their question.", s.dns_answers),
        ("dns_not_responses", "Messages from port 53 that are not responses to a standard query.", s.dns_not_responses),
        ("dns_error_rcode", "DNS responses with an error RCODE.", s.dns_error_rcode),
        ("dns_without_addresses", "NOERROR DNS responses without A or AAAA answers.", s.dns_without_addresses),
        ("dns_client_by_interface", "DNS answers whose client pod came from the host-side veth the response was sent on.", s.dns_client_by_interface),
        ("dns_client_by_address", "DNS answers whose client pod came from the client address.", s.dns_client_by_address),
        ("dns_client_mismatch", "DNS answers whose veth and client address named different pods (the veth was trusted).", s.dns_client_mismatch),
        ("events_dropped", "DNS events dropped because the output thread fell behind.", s.events_dropped),
        ("scans", "Completed socket scans.", s.scans),
        ("scan_errors", "Network namespaces that could not be scanned.", s.scan_errors),
        ("namespaces_scanned", "Network namespaces scanned, summed over scans.", s.namespaces_scanned),
        ("sockets_scanned", "Sockets returned by sock_diag or the BPF iterator, summed over scans.", s.sockets_scanned),
        ("bpf_scans", "Socket scans that read every namespace's sockets in one pass of the BPF iterator (the others used sock_diag per namespace).", s.bpf_scans),
        ("observations_emitted", "Observations produced (new, changed or refreshed).", s.observations_emitted),
        ("observations_reported", "Observations in reports the operator accepted.", s.observations_reported),
        ("reports_sent", "Reports the operator accepted.", s.reports_sent),
        ("reports_dropped", "Reports dropped because the operator refused them for good (4xx).", s.reports_dropped),
        ("observations_rejected", "Observations in reports the operator refused for good.", s.observations_rejected),
        ("buffer_dropped_observations", "Observations dropped, oldest first, because the report buffer was full.", s.buffer_dropped),
        ("dedup_entries_evicted", "Deduplication entries (DNS answers, connections) forgotten because their table was full; seen again, they are reported again.", s.dedup_evicted),
    ]
}

fn encode_counter(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: impl prometheus_client::encoding::EncodeCounterValue,
) -> fmt::Result {
    let counter = ConstCounter::new(value);
    let metric = encoder.encode_descriptor(name, help, None, counter.metric_type())?;
    counter.encode(metric)
}

fn encode_gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: impl prometheus_client::encoding::EncodeGaugeValue,
) -> fmt::Result {
    let gauge = ConstGauge::new(value);
    let metric = encoder.encode_descriptor(name, help, None, gauge.metric_type())?;
    gauge.encode(metric)
}

/// A counter family with one label.
fn encode_labelled_counters<'a>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    label: &str,
    values: impl IntoIterator<Item = (&'a str, u64)>,
) -> fmt::Result {
    let mut metric = encoder.encode_descriptor(
        name,
        help,
        None,
        prometheus_client::metrics::MetricType::Counter,
    )?;
    for (value, count) in values {
        let labels = [(label, value)];
        ConstCounter::new(count).encode(metric.encode_family(&labels)?)?;
    }
    Ok(())
}

impl Collector for CountersCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let s = self.0.snapshot();
        for (name, help, value) in counter_rows(&s) {
            encode_counter(&mut encoder, name, help, value)?;
        }
        encode_labelled_counters(
            &mut encoder,
            "dns_parse_errors",
            "Frames that could not be parsed as DNS responses, by kind.",
            "kind",
            s.parse_errors.iter().map(|(k, v)| (*k, *v)),
        )?;
        encode_labelled_counters(
            &mut encoder,
            "report_failures",
            "Report requests that failed, by reason.",
            "reason",
            s.report_failures.iter().map(|(k, v)| (*k, *v)),
        )?;
        let seconds = |us: u64| us as f64 / 1e6;
        encode_counter(
            &mut encoder,
            "scan_duration_seconds",
            "Time spent scanning sockets.",
            seconds(s.scan_duration_us_total),
        )?;
        encode_gauge(
            &mut encoder,
            "last_scan_duration_seconds",
            "Duration of the latest socket scan.",
            seconds(s.last_scan_duration_us),
        )?;
        encode_gauge(
            &mut encoder,
            "last_scan_timestamp_seconds",
            "When the latest socket scan finished (0: none yet).",
            s.last_scan_end_ms as f64 / 1e3,
        )?;
        encode_gauge(
            &mut encoder,
            "buffer_bytes",
            "Bytes of observations waiting in the report buffer (serialized JSON).",
            s.buffer_bytes,
        )?;
        encode_gauge(
            &mut encoder,
            "buffered_observations",
            "Observations waiting in the report buffer.",
            s.buffered_observations,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::ParseErrorKind;
    use crate::report::deliver::FailureReason;

    #[test]
    fn every_counter_is_exposed_under_the_prefix() {
        let counters = Arc::new(Counters::default());
        Counters::add(&counters.frames, 7);
        Counters::add(&counters.kernel_drops, 2);
        counters.parse_error(ParseErrorKind::Malformed);
        counters.report_failure(FailureReason::ServerError);
        Counters::set(&counters.buffer_bytes, 1234);
        Counters::set(&counters.last_scan_duration_us, 1_500);
        let text = render(&registry(Arc::clone(&counters))).expect("renders");
        for line in [
            "trafficmap_sniffer_packets_total 7",
            "trafficmap_sniffer_kernel_drops_total 2",
            "trafficmap_sniffer_dns_parse_errors_total{kind=\"malformed\"} 1",
            "trafficmap_sniffer_report_failures_total{reason=\"server_error\"} 1",
            "trafficmap_sniffer_report_failures_total{reason=\"tls\"} 0",
            "trafficmap_sniffer_buffer_bytes 1234",
            "trafficmap_sniffer_last_scan_duration_seconds 0.0015",
            "trafficmap_sniffer_reports_sent_total 0",
            "trafficmap_sniffer_dns_client_mismatch_total 0",
            "trafficmap_sniffer_buffer_dropped_observations_total 0",
            "# TYPE trafficmap_sniffer_scan_duration_seconds counter",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing `{line}` in\n{text}"
            );
        }
        assert!(text.ends_with("# EOF\n"));
    }
}
