//! Would-be-blocked: which observed calls the policies already in the cluster would block,
//! before anyone enforces them. ClientIntents are read as the Otterize intents-operator
//! enforces them ([`trafficmap_api::coverage::blocked_by_intents`]); NetworkPolicies by their
//! own semantics ([`super::evaluate`]). The operator audits the cluster with this and reports
//! the count as a metric and, per client, as an ObservedTraffic condition.

use std::collections::BTreeMap;

use trafficmap_api::coverage::{blocked_by_intents, names_client};
use trafficmap_api::{ClientIntents, ObservedTraffic};

use super::calls::ObservedCall;
use super::evaluate::Verdict;
use super::inventory::WorkloadKey;

/// What would block a call.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum BlockedBy {
    /// The cluster's ClientIntents, once enforced.
    ClientIntents,
    /// NetworkPolicy: the policies isolating the client for egress, the target for ingress.
    NetworkPolicy {
        /// `namespace/name` of the policies isolating the client's egress, when it blocks.
        egress: Vec<String>,
        /// `namespace/name` of the policies isolating the target's ingress, when it blocks.
        ingress: Vec<String>,
    },
}

/// One observed call that would be blocked.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct BlockedCall {
    /// The target, as `name.namespace` or `internet:<name or ip>`, with the port for
    /// NetworkPolicy (which decides per port).
    pub call: String,
    /// What blocks it.
    pub by: BlockedBy,
}

impl BlockedCall {
    /// One line: `pay.shop on 8080/TCP (NetworkPolicy ingress: shop/deny)`.
    pub fn describe(&self) -> String {
        match &self.by {
            BlockedBy::ClientIntents => format!("{} (ClientIntents)", self.call),
            BlockedBy::NetworkPolicy { egress, ingress } => {
                let mut sides = Vec::new();
                if !egress.is_empty() {
                    sides.push(format!("egress: {}", egress.join(", ")));
                }
                if !ingress.is_empty() {
                    sides.push(format!("ingress: {}", ingress.join(", ")));
                }
                format!("{} (NetworkPolicy {})", self.call, sides.join("; "))
            }
        }
    }
}

/// Per client, the observed calls that `intents` (every ClientIntents in the cluster) would
/// block, and those that NetworkPolicy blocks in `judged`; sorted, without repeats. Clients
/// with nothing blocked are left out.
pub fn would_be_blocked(
    observed: &[ObservedTraffic],
    intents: &[ClientIntents],
    judged: &[(ObservedCall, Verdict)],
) -> BTreeMap<WorkloadKey, Vec<BlockedCall>> {
    let mut blocked: BTreeMap<WorkloadKey, Vec<BlockedCall>> = BTreeMap::new();
    if !intents.is_empty() {
        for ot in observed {
            let client = &ot.spec.client;
            let mut own = ClientIntents::default();
            own.metadata.namespace = Some(client.namespace.clone());
            for ci in intents.iter().filter(|ci| names_client(ci, client)) {
                own.spec.targets.extend(ci.spec.targets.iter().cloned());
            }
            let calls = blocked_by_intents(ot, &own, intents);
            if !calls.is_empty() {
                blocked
                    .entry(WorkloadKey::new(&client.namespace, &client.name))
                    .or_default()
                    .extend(calls.into_iter().map(|call| BlockedCall {
                        call,
                        by: BlockedBy::ClientIntents,
                    }));
            }
        }
    }
    for (call, verdict) in judged {
        let Verdict::Blocked { egress, ingress } = verdict else {
            continue;
        };
        blocked
            .entry(call.client.clone())
            .or_default()
            .push(BlockedCall {
                call: format!(
                    "{} on {}/{}",
                    call.target,
                    call.connection.port,
                    call.connection.protocol.as_str()
                ),
                by: BlockedBy::NetworkPolicy {
                    egress: egress.clone(),
                    ingress: ingress.clone(),
                },
            });
    }
    for calls in blocked.values_mut() {
        calls.sort();
        calls.dedup();
    }
    blocked
}

/// The calls of each kind in `blocked`: (by ClientIntents, by NetworkPolicy).
pub fn counts(blocked: &BTreeMap<WorkloadKey, Vec<BlockedCall>>) -> (usize, usize) {
    let calls = blocked.values().flatten();
    let by_intents = calls
        .clone()
        .filter(|c| c.by == BlockedBy::ClientIntents)
        .count();
    (by_intents, calls.count() - by_intents)
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::networking::v1::NetworkPolicy;
    use serde_json::json;
    use trafficmap_api::intents::{ClientIntentsSpec, KubernetesTarget, Target, Workload};

    use super::*;
    use crate::cli::fixtures::{client, target};
    use crate::policy::calls::observed_calls;
    use crate::policy::evaluate::evaluate;
    use crate::policy::tests::inventory;

    fn intents_of(name: &str, namespace: &str, targets: &[&str]) -> ClientIntents {
        let mut ci = ClientIntents::new(
            name,
            ClientIntentsSpec {
                workload: Workload {
                    name: name.into(),
                    kind: None,
                },
                targets: targets
                    .iter()
                    .map(|t| Target {
                        kubernetes: Some(KubernetesTarget {
                            name: t.to_string(),
                            kind: None,
                            http: None,
                        }),
                        ..Target::default()
                    })
                    .collect(),
            },
        );
        ci.metadata.namespace = Some(namespace.into());
        ci
    }

    /// checkout calls ledger (pay) on 9090, through its Service (pod port 9091).
    fn map() -> Vec<ObservedTraffic> {
        vec![client(
            "checkout",
            "shop",
            vec![target("ledger", "pay", 9090)],
            vec![],
        )]
    }

    #[test]
    fn intents_that_protect_a_server_block_its_undeclared_clients() {
        let gateway = intents_of("gateway", "pay", &["ledger"]);
        let blocked = would_be_blocked(&map(), std::slice::from_ref(&gateway), &[]);
        let calls = &blocked[&WorkloadKey::new("shop", "checkout")];
        assert_eq!(calls.len(), 1);
        assert_eq!(calls[0].describe(), "ledger.pay (ClientIntents)");
        assert_eq!(counts(&blocked), (1, 0));

        let own = intents_of("checkout", "shop", &["ledger.pay"]);
        assert!(would_be_blocked(&map(), &[gateway, own], &[]).is_empty());
    }

    #[test]
    fn a_network_policy_that_isolates_the_server_blocks_the_call_on_its_pod_port() {
        let deny: NetworkPolicy = serde_json::from_value(json!({
            "metadata": {"name": "ledger-only-from-gateway", "namespace": "pay"},
            "spec": {
                "podSelector": {"matchLabels": {"app": "ledger"}},
                "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "gateway"}}}]}]
            }
        }))
        .expect("a NetworkPolicy");
        let (calls, notes) = observed_calls(&map(), &inventory());
        assert!(notes.is_empty(), "{notes:?}");
        let judged: Vec<_> = calls
            .into_iter()
            .map(|c| {
                let verdict = evaluate(std::slice::from_ref(&deny), &c.connection);
                (c, verdict)
            })
            .collect();
        let blocked = would_be_blocked(&map(), &[], &judged);
        let calls = &blocked[&WorkloadKey::new("shop", "checkout")];
        assert_eq!(
            calls[0].describe(),
            "ledger.pay on 9091/TCP (NetworkPolicy ingress: pay/ledger-only-from-gateway)"
        );
        assert_eq!(counts(&blocked), (0, 1));
        // Without the policy the same call goes through.
        let (calls, _) = observed_calls(&map(), &inventory());
        let judged: Vec<_> = calls
            .into_iter()
            .map(|c| {
                let verdict = evaluate(&[], &c.connection);
                (c, verdict)
            })
            .collect();
        assert!(would_be_blocked(&map(), &[], &judged).is_empty());
    }
}
