//! Deciding a client's ClientIntents: emit trafficmap's draft, or leave someone else's intents
//! alone and report what they do not cover. Pure: the writer does the reading and writing.
//! Whose an existing object is comes from who wrote it ([`trafficmap_api::ownership`]).

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, OwnerReference, Time};
use kube::Resource;
use trafficmap_api::coverage::uncovered_targets;
use trafficmap_api::ownership::{Ownership, ownership};
use trafficmap_api::{ClientIntents, MANAGED_BY_LABEL, MANAGED_BY_VALUE, ObservedTraffic};

/// Condition type on ObservedTraffic about the draft.
pub const CONDITION_TYPE: &str = "ClientIntentsEmitted";

/// What to do about a client's ClientIntents.
#[derive(Clone, Debug, PartialEq)]
pub enum IntentsDecision {
    /// Apply this draft.
    Apply(Box<ClientIntents>),
    /// Touch nothing; the status says why (and lists uncovered targets for foreign intents).
    Skip {
        /// Condition reason.
        reason: &'static str,
        /// Condition message.
        message: String,
        /// Observed targets the existing intents do not allow.
        uncovered: Vec<String>,
    },
}

/// Decides for `observed` (with its status and uid) given the ClientIntents of the same name in
/// the client's namespace, if any. A draft carries our label and an owner reference to the
/// ObservedTraffic (so that it goes with it); the existing object's resourceVersion goes with
/// it, so that a reviewed copy applied since it was read makes the write fail, not vanish.
pub fn decide(observed: &ObservedTraffic, existing: Option<&ClientIntents>) -> IntentsDecision {
    if let Some((existing, Ownership::User { writers })) = existing.map(|e| (e, ownership(e))) {
        let uncovered = uncovered_targets(observed, existing);
        let name = existing.metadata.name.clone().unwrap_or_default();
        let by = if writers.is_empty() {
            "was not created by trafficmap".to_string()
        } else {
            format!("was written by {}", writers.join(", "))
        };
        let message = if uncovered.is_empty() {
            format!("ClientIntents {name} {by} and covers every observed call")
        } else {
            format!(
                "ClientIntents {name} {by}; {} observed call(s) are not covered",
                uncovered.len()
            )
        };
        return IntentsDecision::Skip {
            reason: "ExternallyManaged",
            message,
            uncovered,
        };
    }
    let mut draft = match trafficmap_api::render::try_render_client_intents(observed) {
        Ok(draft) => draft,
        Err(err) => {
            return IntentsDecision::Skip {
                reason: "InvalidClient",
                message: err.to_string(),
                uncovered: Vec::new(),
            };
        }
    };
    draft.metadata.labels = Some(BTreeMap::from([(
        MANAGED_BY_LABEL.to_string(),
        MANAGED_BY_VALUE.to_string(),
    )]));
    draft.metadata.resource_version = existing.and_then(|e| e.metadata.resource_version.clone());
    if let (Some(name), Some(uid)) = (&observed.metadata.name, &observed.metadata.uid) {
        draft.metadata.owner_references = Some(vec![OwnerReference {
            api_version: ObservedTraffic::api_version(&()).into_owned(),
            kind: ObservedTraffic::kind(&()).into_owned(),
            name: name.clone(),
            uid: uid.clone(),
            controller: Some(true),
            block_owner_deletion: None,
        }]);
    }
    IntentsDecision::Apply(Box::new(draft))
}

/// The condition `type_` with `status`, keeping `previous`'s transition time when status and
/// reason are unchanged.
pub fn condition(
    type_: &str,
    status: bool,
    reason: &str,
    message: String,
    previous: Option<&Condition>,
    now: Time,
) -> Condition {
    let status = if status { "True" } else { "False" }.to_string();
    let last_transition_time = match previous {
        Some(p) if p.status == status && p.reason == reason => p.last_transition_time.clone(),
        _ => now,
    };
    Condition {
        type_: type_.to_string(),
        status,
        reason: reason.to_string(),
        message,
        last_transition_time,
        observed_generation: None,
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{FieldsV1, ManagedFieldsEntry};
    use k8s_openapi::jiff::Timestamp;
    use trafficmap_api::WorkloadRef;
    use trafficmap_api::intents::{ClientIntentsSpec, Workload};
    use trafficmap_api::observed::{
        ObservedTarget, ObservedTrafficStatus, PortProtocol, Protocol, SeenBy,
    };

    use super::*;

    fn t(secs: i64) -> Time {
        Time(Timestamp::from_second(secs).expect("valid"))
    }

    fn observed() -> ObservedTraffic {
        let mut ot = ObservedTraffic::for_client(WorkloadRef {
            name: "checkout".into(),
            namespace: "shop".into(),
            kind: "Deployment".into(),
        });
        ot.metadata.uid = Some("0b4cbd6e-0000-0000-0000-000000000001".into());
        ot.status = Some(ObservedTrafficStatus {
            targets: vec![ObservedTarget {
                name: "cart".into(),
                namespace: "shop".into(),
                kind: "Deployment".into(),
                service: Some("cart".into()),
                ports: vec![PortProtocol {
                    port: 7070,
                    protocol: Protocol::Tcp,
                }],
                dns_names: vec![],
                seen_by: vec![SeenBy::Tcp],
                first_seen: t(1),
                last_seen: t(2),
            }],
            ..ObservedTrafficStatus::default()
        });
        ot
    }

    fn intents(labels: Option<BTreeMap<String, String>>, writers: &[&str]) -> ClientIntents {
        let mut ci = ClientIntents::new(
            "checkout",
            ClientIntentsSpec {
                workload: Workload {
                    name: "checkout".into(),
                    kind: None,
                },
                targets: vec![],
            },
        );
        ci.metadata.labels = labels;
        ci.metadata.resource_version = Some("42".into());
        ci.metadata.managed_fields = Some(
            writers
                .iter()
                .map(|manager| ManagedFieldsEntry {
                    manager: Some((*manager).into()),
                    operation: Some("Apply".into()),
                    fields_v1: Some(FieldsV1(serde_json::json!({"f:spec": {"f:targets": {}}}))),
                    ..ManagedFieldsEntry::default()
                })
                .collect(),
        );
        ci
    }

    fn labelled() -> Option<BTreeMap<String, String>> {
        Some(BTreeMap::from([(
            MANAGED_BY_LABEL.into(),
            MANAGED_BY_VALUE.into(),
        )]))
    }

    #[test]
    fn a_draft_is_applied_when_no_intents_exist_or_they_are_ours() {
        for existing in [None, Some(intents(labelled(), &["trafficmap"]))] {
            match decide(&observed(), existing.as_ref()) {
                IntentsDecision::Apply(draft) => {
                    let owner = &draft.metadata.owner_references.as_ref().expect("owner")[0];
                    assert_eq!(owner.kind, "ObservedTraffic");
                    assert_eq!(owner.uid, "0b4cbd6e-0000-0000-0000-000000000001");
                    assert_eq!(draft.metadata.labels, labelled());
                    assert_eq!(
                        draft.metadata.resource_version.as_deref(),
                        existing.as_ref().map(|_| "42"),
                        "the write is conditional on the object read"
                    );
                    assert_eq!(draft.spec.targets.len(), 1);
                }
                other => panic!("expected a draft, got {other:?}"),
            }
        }
    }

    #[test]
    fn a_client_no_draft_can_be_written_for_is_skipped_with_the_reason() {
        let mut bad = observed();
        bad.spec.client.namespace = "Not A Namespace".into();
        match decide(&bad, None) {
            IntentsDecision::Skip {
                reason, message, ..
            } => {
                assert_eq!(reason, "InvalidClient");
                assert!(message.contains("Not A Namespace"), "{message}");
            }
            other => panic!("expected a skip, got {other:?}"),
        }
    }

    #[test]
    fn someone_elses_intents_are_left_alone_and_uncovered_calls_reported() {
        for (existing, by) in [
            (intents(None, &[]), "was not created by trafficmap"),
            (
                intents(labelled(), &["trafficmap", "gitops"]),
                "was written by gitops",
            ),
        ] {
            match decide(&observed(), Some(&existing)) {
                IntentsDecision::Skip {
                    reason,
                    uncovered,
                    message,
                } => {
                    assert_eq!(reason, "ExternallyManaged");
                    assert_eq!(uncovered, ["cart.shop"]);
                    assert!(message.contains(by), "{message}");
                }
                other => panic!("expected a skip, got {other:?}"),
            }
        }
    }

    #[test]
    fn the_transition_time_moves_only_when_the_condition_changes() {
        let first = condition(CONDITION_TYPE, true, "Emitted", "ok".into(), None, t(10));
        let same = condition(
            CONDITION_TYPE,
            true,
            "Emitted",
            "ok again".into(),
            Some(&first),
            t(20),
        );
        assert_eq!(same.last_transition_time, t(10));
        let changed = condition(
            CONDITION_TYPE,
            false,
            "CRDNotInstalled",
            "no".into(),
            Some(&same),
            t(30),
        );
        assert_eq!(changed.last_transition_time, t(30));
    }
}
