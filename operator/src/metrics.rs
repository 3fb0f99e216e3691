//! The operator's Prometheus metrics: one registry, served on `/metrics`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// A `reason` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    /// Why.
    pub reason: String,
}

impl ReasonLabel {
    /// A label with this reason.
    pub fn new(reason: impl Into<String>) -> Self {
        ReasonLabel {
            reason: reason.into(),
        }
    }
}

/// A `resource` and `result` label for API writes.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WriteLabel {
    /// `observedtraffic`, `observedtraffic_status` or `clientintents`.
    pub resource: String,
    /// `ok` or `error`.
    pub result: String,
}

/// Every metric the operator exports.
pub struct Metrics {
    registry: Registry,
    /// Reports accepted.
    pub reports_accepted: Counter,
    /// Reports rejected, by reason (auth, size, malformed, overloaded).
    pub reports_rejected: Family<ReasonLabel, Counter>,
    /// Observations received in accepted reports.
    pub observations: Counter,
    /// Observations resolved into edges.
    pub observations_resolved: Counter,
    /// Observations that added nothing, by reason.
    pub observations_skipped: Family<ReasonLabel, Counter>,
    /// Observations still waiting for the watches to catch up.
    pub observations_pending: Gauge,
    /// Observations dropped unresolved after waiting, or evicted from a full queue.
    pub observations_unresolved: Family<ReasonLabel, Counter>,
    /// Client workloads in the map.
    pub clients: Gauge,
    /// Edges (client, target) in the map.
    pub edges: Gauge,
    /// Writes to the API server.
    pub api_writes: Family<WriteLabel, Counter>,
    /// Seconds from a status being handed to the writer to its being written.
    pub reconcile_seconds: Histogram,
    /// Statuses waiting for the writer or being written.
    pub writes_waiting: Gauge,
    /// Seconds a report request waited for its changes to be written.
    pub ack_wait_seconds: Histogram,
    /// 1 while this replica is the leader.
    pub leader: Gauge,
    /// DNS answers remembered to name connections.
    pub dns_answers: Gauge,
    /// Edges not added to the map, by reason (a client at its internet target limit).
    pub edges_refused: Family<ReasonLabel, Counter>,
    /// DNS answers forgotten early because the cache was full.
    pub dns_answers_evicted: Counter,
    /// Observed calls the cluster's policies would block, by what blocks them (`clientintents`,
    /// `networkpolicy`), as of the last audit.
    pub calls_would_be_blocked: Family<ByLabel, Gauge>,
}

/// What blocks a call.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ByLabel {
    /// `clientintents` or `networkpolicy`.
    pub by: String,
}

impl Metrics {
    /// Creates the metrics and registers them under the `trafficmap_operator` prefix.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("trafficmap_operator");
        let metrics = Metrics {
            reports_accepted: Counter::default(),
            reports_rejected: Family::default(),
            observations: Counter::default(),
            observations_resolved: Counter::default(),
            observations_skipped: Family::default(),
            observations_pending: Gauge::default(),
            observations_unresolved: Family::default(),
            clients: Gauge::default(),
            edges: Gauge::default(),
            api_writes: Family::default(),
            writes_waiting: Gauge::default(),
            reconcile_seconds: Histogram::new([
                0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
            ]),
            ack_wait_seconds: Histogram::new([0.001, 0.01, 0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0]),
            leader: Gauge::default(),
            dns_answers: Gauge::default(),
            edges_refused: Family::default(),
            dns_answers_evicted: Counter::default(),
            calls_would_be_blocked: Family::default(),
            registry: Registry::default(),
        };
        registry.register(
            "reports_accepted",
            "Reports accepted",
            metrics.reports_accepted.clone(),
        );
        registry.register(
            "reports_rejected",
            "Reports rejected, by reason",
            metrics.reports_rejected.clone(),
        );
        registry.register(
            "observations",
            "Observations received",
            metrics.observations.clone(),
        );
        registry.register(
            "observations_resolved",
            "Observations resolved into edges",
            metrics.observations_resolved.clone(),
        );
        registry.register(
            "observations_skipped",
            "Observations that added nothing, by reason",
            metrics.observations_skipped.clone(),
        );
        registry.register(
            "observations_pending",
            "Observations waiting for the watches",
            metrics.observations_pending.clone(),
        );
        registry.register(
            "observations_unresolved",
            "Observations dropped unresolved, by reason",
            metrics.observations_unresolved.clone(),
        );
        registry.register(
            "clients",
            "Client workloads in the map",
            metrics.clients.clone(),
        );
        registry.register("edges", "Edges in the map", metrics.edges.clone());
        registry.register(
            "api_writes",
            "Writes to the API server",
            metrics.api_writes.clone(),
        );
        registry.register(
            "reconcile_seconds",
            "Handed to the writer to written, in seconds",
            metrics.reconcile_seconds.clone(),
        );
        registry.register(
            "writes_waiting",
            "Statuses waiting for the writer or being written",
            metrics.writes_waiting.clone(),
        );
        registry.register(
            "report_ack_wait_seconds",
            "Seconds a report waited for its changes to be written before its answer",
            metrics.ack_wait_seconds.clone(),
        );
        registry.register(
            "leader",
            "1 while this replica leads",
            metrics.leader.clone(),
        );
        registry.register(
            "dns_answers",
            "DNS answers remembered to name connections",
            metrics.dns_answers.clone(),
        );
        registry.register(
            "edges_refused",
            "Edges not added to the map, by reason",
            metrics.edges_refused.clone(),
        );
        registry.register(
            "calls_would_be_blocked",
            "Observed calls the cluster's ClientIntents or NetworkPolicies would block, by what blocks them",
            metrics.calls_would_be_blocked.clone(),
        );
        registry.register(
            "dns_answers_evicted",
            "DNS answers forgotten early because the cache was full",
            metrics.dns_answers_evicted.clone(),
        );
        Metrics {
            registry,
            ..metrics
        }
    }

    /// Counts one API write.
    pub fn api_write(&self, resource: &str, ok: bool) {
        self.api_writes
            .get_or_create(&WriteLabel {
                resource: resource.to_string(),
                result: if ok { "ok" } else { "error" }.to_string(),
            })
            .inc();
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_are_exported_with_their_labels() {
        let m = Metrics::new();
        m.reports_rejected
            .get_or_create(&ReasonLabel::new("wrong_identity"))
            .inc();
        m.api_write("clientintents", true);
        let text = m.encode();
        assert!(
            text.contains(
                "trafficmap_operator_reports_rejected_total{reason=\"wrong_identity\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "trafficmap_operator_api_writes_total{resource=\"clientintents\",result=\"ok\"} 1"
            ),
            "{text}"
        );
    }
}
