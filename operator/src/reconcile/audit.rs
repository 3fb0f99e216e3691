//! The audit: every `--audit-interval`, which observed calls the ClientIntents and
//! NetworkPolicies already in the cluster would block ([`crate::policy::blocked`]), so that
//! nobody learns it from an outage. It reads the map back from ObservedTraffic, as the CLI's
//! `diff` does, and the cluster's policies; the workloads' pods, namespaces and Services are
//! read only when there is a NetworkPolicy to evaluate.
//!
//! The counts go to the metric `calls_would_be_blocked{by}`; each client's calls go to the
//! writer, which writes them in the `WouldBeBlocked` condition of its ObservedTraffic.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::Client;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::cli::cluster::Cluster;
use crate::cli::error::CliError;
use crate::metrics::{ByLabel, Metrics};
use crate::policy::blocked::{BlockedCall, counts, would_be_blocked};
use crate::policy::calls::observed_calls;
use crate::policy::evaluate::evaluate;
use crate::policy::inventory::WorkloadKey;
use crate::reconcile::intents::condition;
use crate::reconcile::intents_sync::ClientKey;

/// The ObservedTraffic condition the audit sets.
pub const AUDIT_CONDITION: &str = "WouldBeBlocked";
/// Calls named in the condition's message; the rest are counted.
const CALLS_IN_MESSAGE: usize = 10;

/// One client's calls that would be blocked, as of the latest audit (empty: none).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientAudit {
    /// The client workload.
    pub client: ClientKey,
    /// Each call, described (see [`BlockedCall::describe`]).
    pub blocked: Vec<String>,
}

/// The audit task.
pub struct Audit {
    cluster: Cluster,
    metrics: Arc<Metrics>,
    interval: Duration,
    cluster_dns: String,
    results: mpsc::UnboundedSender<ClientAudit>,
}

impl Audit {
    /// An audit every `interval` (never when zero), with `cluster_dns` (`namespace/name`) for
    /// the DNS egress NetworkPolicy must allow, sending each client's result to `results`
    /// when it changes.
    pub fn new(
        client: Client,
        metrics: Arc<Metrics>,
        interval: Duration,
        cluster_dns: String,
        results: mpsc::UnboundedSender<ClientAudit>,
    ) -> Self {
        Audit {
            cluster: Cluster::from_client(client),
            metrics,
            interval,
            cluster_dns,
            results,
        }
    }

    /// Audits until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        if self.interval.is_zero() {
            shutdown.cancelled().await;
            return;
        }
        let mut tick = tokio::time::interval(self.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last: BTreeMap<ClientKey, Vec<String>> = BTreeMap::new();
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            match self.audit().await {
                Ok((clients, blocked)) => {
                    let (by_intents, by_policy) = counts(&blocked);
                    self.set_gauge("clientintents", by_intents);
                    self.set_gauge("networkpolicy", by_policy);
                    if by_intents + by_policy > 0 {
                        tracing::warn!(
                            by_clientintents = by_intents,
                            by_networkpolicy = by_policy,
                            "observed calls would be blocked by the cluster's policies (ObservedTraffic condition WouldBeBlocked)"
                        );
                    }
                    let now = results(&clients, &blocked);
                    for (client, calls) in &now {
                        if last.get(client) != Some(calls) {
                            let _ = self.results.send(ClientAudit {
                                client: client.clone(),
                                blocked: calls.clone(),
                            });
                        }
                    }
                    last = now;
                }
                Err(err) => {
                    tracing::warn!(%err, "audit of the cluster's policies failed; trying again at the next interval")
                }
            }
        }
    }

    fn set_gauge(&self, by: &str, count: usize) {
        self.metrics
            .calls_would_be_blocked
            .get_or_create(&ByLabel { by: by.to_string() })
            .set(i64::try_from(count).unwrap_or(i64::MAX));
    }

    /// The clients of the map, and what would block their calls.
    async fn audit(
        &self,
    ) -> Result<(Vec<WorkloadKey>, BTreeMap<WorkloadKey, Vec<BlockedCall>>), CliError> {
        let observed = self.cluster.observed_traffic().await?;
        let intents = self.cluster.all_client_intents_if_installed().await?;
        let policies = self.cluster.all_network_policies().await?;
        let judged = if policies.is_empty() {
            Vec::new()
        } else {
            let inventory = self.cluster.inventory(&observed, &self.cluster_dns).await?;
            let (calls, notes) = observed_calls(&observed, &inventory);
            for note in notes {
                tracing::debug!(%note, "audit");
            }
            calls
                .into_iter()
                .map(|call| {
                    let verdict = evaluate(&policies, &call.connection);
                    (call, verdict)
                })
                .collect()
        };
        let clients = observed
            .iter()
            .map(|ot| WorkloadKey::new(&ot.spec.client.namespace, &ot.spec.client.name))
            .collect();
        Ok((clients, would_be_blocked(&observed, &intents, &judged)))
    }
}

/// The `WouldBeBlocked` condition for `blocked` (True when any call would be), keeping
/// `previous`'s transition time when unchanged.
pub fn audit_condition(blocked: &[String], previous: Option<&Condition>, now: Time) -> Condition {
    if blocked.is_empty() {
        let message =
            "The cluster's ClientIntents and NetworkPolicies let every observed call through"
                .to_string();
        return condition(
            AUDIT_CONDITION,
            false,
            "NothingBlocked",
            message,
            previous,
            now,
        );
    }
    let mut message = format!(
        "{} observed call(s) would be blocked: {}",
        blocked.len(),
        blocked
            .iter()
            .take(CALLS_IN_MESSAGE)
            .cloned()
            .collect::<Vec<_>>()
            .join("; ")
    );
    if blocked.len() > CALLS_IN_MESSAGE {
        message.push_str(&format!("; and {} more", blocked.len() - CALLS_IN_MESSAGE));
    }
    condition(
        AUDIT_CONDITION,
        true,
        "PoliciesWouldBlock",
        message,
        previous,
        now,
    )
}

/// Every client's described calls (empty for a client with none).
fn results(
    clients: &[WorkloadKey],
    blocked: &BTreeMap<WorkloadKey, Vec<BlockedCall>>,
) -> BTreeMap<ClientKey, Vec<String>> {
    clients
        .iter()
        .map(|key| {
            let calls = blocked
                .get(key)
                .map(|calls| calls.iter().map(BlockedCall::describe).collect())
                .unwrap_or_default();
            let client = ClientKey {
                namespace: key.namespace.clone(),
                name: key.name.clone(),
            };
            (client, calls)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use k8s_openapi::jiff::Timestamp;

    use super::*;

    fn at(s: i64) -> Time {
        Time(Timestamp::from_second(s).expect("a time"))
    }

    #[test]
    fn the_condition_names_the_calls_and_keeps_its_transition_time_while_unchanged() {
        let calls: Vec<String> = (0..12)
            .map(|i| format!("s{i}.shop (ClientIntents)"))
            .collect();
        let first = audit_condition(&calls, None, at(10));
        assert_eq!(first.type_, AUDIT_CONDITION);
        assert_eq!(first.status, "True");
        assert!(
            first.message.starts_with(
                "12 observed call(s) would be blocked: s0.shop (ClientIntents); s1.shop"
            )
        );
        assert!(first.message.ends_with("; and 2 more"), "{}", first.message);
        let again = audit_condition(&calls[..3], Some(&first), at(20));
        assert_eq!(again.last_transition_time, at(10));
        let cleared = audit_condition(&[], Some(&again), at(30));
        assert_eq!(
            (cleared.status.as_str(), cleared.last_transition_time),
            ("False", at(30))
        );
    }

    #[test]
    fn every_client_of_the_map_gets_a_result_even_with_nothing_blocked() {
        let shop = WorkloadKey::new("shop", "checkout");
        let pay = WorkloadKey::new("pay", "ledger");
        let blocked = BTreeMap::from([(
            shop.clone(),
            vec![BlockedCall {
                call: "ledger.pay".into(),
                by: crate::policy::blocked::BlockedBy::ClientIntents,
            }],
        )]);
        let got = results(&[shop, pay], &blocked);
        let key = |ns: &str, name: &str| ClientKey {
            namespace: ns.into(),
            name: name.into(),
        };
        assert_eq!(
            got[&key("shop", "checkout")],
            ["ledger.pay (ClientIntents)"]
        );
        assert!(got[&key("pay", "ledger")].is_empty());
    }
}
