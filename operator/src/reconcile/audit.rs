//! The audit: every `--audit-interval`, which observed calls the ClientIntents and
//! NetworkPolicies already in the cluster would block ([`crate::policy::blocked`]), so that
//! nobody learns it from an outage. It reads the map back from ObservedTraffic, as the CLI's
//! `diff` does, and the cluster's policies; the workloads' pods, namespaces and Services are
//! read only when there is a NetworkPolicy to evaluate.
//!
//! The counts go to the metric `calls_would_be_blocked{by}`. Each client whose ObservedTraffic
//! does not yet say what the audit found gets a `WouldBeBlocked` condition through the engine,
//! which carries it in every status it hands the writer from then on: a restart rewrites
//! nothing that is still true.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use trafficmap_api::WorkloadRef;

use crate::cli::cluster::Cluster;
use crate::cli::error::CliError;
use crate::engine::{ClusterEvent, Stamped};
use crate::metrics::{ByLabel, Metrics};
use crate::now_ms;
use crate::policy::blocked::{BlockedCall, counts, would_be_blocked};
use crate::policy::calls::observed_calls;
use crate::policy::evaluate::evaluate;
use crate::policy::inventory::WorkloadKey;
use crate::reconcile::intents::condition;

/// The ObservedTraffic condition the audit sets.
pub const AUDIT_CONDITION: &str = "WouldBeBlocked";
/// Calls named in the condition's message; the rest are counted.
const CALLS_IN_MESSAGE: usize = 10;

/// The audit task.
pub struct Audit {
    cluster: Cluster,
    metrics: Arc<Metrics>,
    interval: Duration,
    cluster_dns: String,
    events: mpsc::Sender<Stamped>,
}

impl Audit {
    /// An audit every `interval` (never when zero), with `cluster_dns` (`namespace/name`) for
    /// the DNS egress NetworkPolicy must allow. A client whose written condition differs from
    /// the audit's goes to the engine on `events` ([`ClusterEvent::Audited`]).
    pub fn new(
        client: Client,
        metrics: Arc<Metrics>,
        interval: Duration,
        cluster_dns: String,
        events: mpsc::Sender<Stamped>,
    ) -> Self {
        Audit {
            cluster: Cluster::from_client(client),
            metrics,
            interval,
            cluster_dns,
            events,
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
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            let audited = match self.audit().await {
                Ok(audited) => audited,
                Err(err) => {
                    tracing::warn!(%err, "audit of the cluster's policies failed; trying again at the next interval");
                    continue;
                }
            };
            let (by_intents, by_policy) = counts(&audited.blocked);
            self.set_gauge("clientintents", by_intents);
            self.set_gauge("networkpolicy", by_policy);
            if by_intents + by_policy > 0 {
                tracing::warn!(
                    by_clientintents = by_intents,
                    by_networkpolicy = by_policy,
                    "observed calls would be blocked by the cluster's policies (ObservedTraffic condition WouldBeBlocked)"
                );
            }
            let now = Time(Timestamp::now());
            for (client, written) in audited.clients {
                let key = WorkloadKey::new(&client.namespace, &client.name);
                let calls: Vec<String> = audited
                    .blocked
                    .get(&key)
                    .map(|calls| calls.iter().map(BlockedCall::describe).collect())
                    .unwrap_or_default();
                let condition = audit_condition(&calls, written.as_ref(), now.clone());
                if !same(written.as_ref(), &condition) {
                    let event = Stamped {
                        event: ClusterEvent::Audited { client, condition },
                        at_ms: now_ms(),
                    };
                    if self.events.send(event).await.is_err() {
                        return;
                    }
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

    /// The clients of the map with their written condition, and what would block their calls.
    async fn audit(&self) -> Result<Audited, CliError> {
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
            .map(|ot| {
                let written = ot.status.iter().flat_map(|s| &s.conditions);
                let written = written
                    .into_iter()
                    .find(|c| c.type_ == AUDIT_CONDITION)
                    .cloned();
                (ot.spec.client.clone(), written)
            })
            .collect();
        let blocked = would_be_blocked(&observed, &intents, &judged);
        Ok(Audited { clients, blocked })
    }
}

/// What one audit found.
struct Audited {
    /// Every client of the map, with the `WouldBeBlocked` condition its status has.
    clients: Vec<(WorkloadRef, Option<Condition>)>,
    /// What would block their calls (clients with nothing blocked left out).
    blocked: BTreeMap<WorkloadKey, Vec<BlockedCall>>,
}

/// Whether `written` says what `condition` says (the transition time aside).
fn same(written: Option<&Condition>, condition: &Condition) -> bool {
    written.is_some_and(|w| {
        (&w.status, &w.reason, &w.message)
            == (&condition.status, &condition.reason, &condition.message)
    })
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
    fn only_a_change_of_status_reason_or_message_counts_as_different() {
        let calls = vec!["pay.shop (ClientIntents)".to_string()];
        let written = audit_condition(&calls, None, at(10));
        assert!(same(
            Some(&written),
            &audit_condition(&calls, Some(&written), at(20))
        ));
        assert!(!same(None, &written));
        let more = vec![calls[0].clone(), "cart.shop (ClientIntents)".to_string()];
        assert!(!same(
            Some(&written),
            &audit_condition(&more, Some(&written), at(20))
        ));
    }
}
