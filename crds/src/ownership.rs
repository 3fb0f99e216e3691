//! Whose a ClientIntents is. A draft is trafficmap's only while nobody else has written it: the
//! usual GitOps flow applies the reviewed file over the draft (same name, same object), and from
//! then on the object is the user's. The API server records every writer in
//! `metadata.managedFields`, so that, not a label anybody can copy, says who wrote what.
//!
//! Pure: the operator, `kubectl trafficmap reset` and the tests read the same verdict.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ManagedFieldsEntry, OwnerReference};
use serde_json::Value;

use crate::intents::ClientIntents;
use crate::{FIELD_MANAGER, MANAGED_BY_LABEL, MANAGED_BY_VALUE};

/// Field manager of the operator's `status.resolvedIPs` writes (kept apart from
/// [`FIELD_MANAGER`], so that what it owns on the status is plain to see).
pub const RESOLVED_IPS_MANAGER: &str = "trafficmap-resolved-ips";
/// API group of ObservedTraffic, whose objects own the drafts.
const OBSERVED_TRAFFIC_GROUP: &str = "trafficmap.io/";

/// Who a ClientIntents belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ownership {
    /// trafficmap's draft: carries our mark and nobody else wrote it.
    Draft,
    /// Someone else's, whatever marks of ours it still carries: `writers` are the field
    /// managers that wrote it (empty when it never carried our mark).
    User {
        /// Field managers other than trafficmap's that wrote its spec or metadata.
        writers: Vec<String>,
    },
}

/// Whose `intents` is: see the module docs.
pub fn ownership(intents: &ClientIntents) -> Ownership {
    let writers = foreign_writers(intents);
    if writers.is_empty() && carries_our_label(intents) {
        Ownership::Draft
    } else {
        Ownership::User { writers }
    }
}

/// Whether `intents` is trafficmap's draft (see [`ownership`]).
pub fn is_draft(intents: &ClientIntents) -> bool {
    ownership(intents) == Ownership::Draft
}

/// Whether `intents` still carries a mark of ours: our label, or an owner reference to an
/// ObservedTraffic. A user's object with one of these must lose it ([`release_patch`]).
pub fn carries_our_marks(intents: &ClientIntents) -> bool {
    carries_our_label(intents) || owner_references(intents).any(is_ours_as_owner)
}

fn carries_our_label(intents: &ClientIntents) -> bool {
    intents
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(MANAGED_BY_LABEL))
        .is_some_and(|v| v == MANAGED_BY_VALUE)
}

fn owner_references(intents: &ClientIntents) -> impl Iterator<Item = &OwnerReference> {
    intents.metadata.owner_references.iter().flatten()
}

fn is_ours_as_owner(reference: &OwnerReference) -> bool {
    reference.kind == "ObservedTraffic" && reference.api_version.starts_with(OBSERVED_TRAFFIC_GROUP)
}

/// A JSON merge patch that removes our marks from `intents` and nothing else: our owner
/// references (the others are kept) and our label. It carries the resourceVersion read, so it
/// fails (409) rather than undo a change made since. `None` when there is nothing to remove.
pub fn release_patch(intents: &ClientIntents) -> Option<Value> {
    if !carries_our_marks(intents) {
        return None;
    }
    let kept: Vec<&OwnerReference> = owner_references(intents)
        .filter(|r| !is_ours_as_owner(r))
        .collect();
    let mut metadata = serde_json::json!({
        "resourceVersion": intents.metadata.resource_version,
        "ownerReferences": if kept.is_empty() { Value::Null } else { serde_json::json!(kept) },
    });
    if carries_our_label(intents) {
        metadata["labels"] = serde_json::json!({ MANAGED_BY_LABEL: null });
    }
    Some(serde_json::json!({ "metadata": metadata }))
}

/// Field managers other than ours that wrote anything of `intents` but its status, its
/// finalizers and its owner references (the intents-operator adds a finalizer and writes the
/// status; the garbage collector edits owner references): sorted, deduplicated.
pub fn foreign_writers(intents: &ClientIntents) -> Vec<String> {
    let mut writers: Vec<String> = intents
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .filter(|entry| wrote_content(entry))
        .filter_map(|entry| entry.manager.clone())
        .filter(|manager| manager != FIELD_MANAGER && manager != RESOLVED_IPS_MANAGER)
        .collect();
    writers.sort();
    writers.dedup();
    writers
}

/// Whether a managedFields entry owns something that makes the object someone's: anything
/// outside the status subresource but finalizers and owner references.
fn wrote_content(entry: &ManagedFieldsEntry) -> bool {
    if entry.subresource.as_deref().is_some_and(|s| !s.is_empty()) {
        return false;
    }
    let Some(fields) = entry.fields_v1.as_ref().and_then(|f| f.0.as_object()) else {
        // An entry without a field set says nothing; an unreadable one is counted.
        return entry.fields_v1.is_some();
    };
    fields.iter().any(|(key, value)| match key.as_str() {
        "f:metadata" => value.as_object().is_none_or(|meta| {
            meta.keys()
                .any(|k| !matches!(k.as_str(), "." | "f:finalizers" | "f:ownerReferences"))
        }),
        "f:status" => false,
        _ => true,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::apimachinery::pkg::apis::meta::v1::FieldsV1;
    use serde_json::json;

    use super::*;

    fn entry(manager: &str, subresource: Option<&str>, fields: Value) -> ManagedFieldsEntry {
        ManagedFieldsEntry {
            manager: Some(manager.into()),
            operation: Some("Apply".into()),
            subresource: subresource.map(Into::into),
            fields_v1: Some(FieldsV1(fields)),
            ..ManagedFieldsEntry::default()
        }
    }

    fn spec_fields() -> Value {
        json!({"f:spec": {"f:targets": {}, "f:workload": {"f:name": {}}}})
    }

    fn draft() -> ClientIntents {
        let mut ci = ClientIntents::new("checkout", Default::default());
        ci.metadata.labels = Some(BTreeMap::from([(
            MANAGED_BY_LABEL.into(),
            MANAGED_BY_VALUE.into(),
        )]));
        ci.metadata.owner_references = Some(vec![
            OwnerReference {
                api_version: "apps/v1".into(),
                kind: "Deployment".into(),
                name: "x".into(),
                uid: "u0".into(),
                ..OwnerReference::default()
            },
            OwnerReference {
                api_version: "trafficmap.io/v1alpha1".into(),
                kind: "ObservedTraffic".into(),
                name: "checkout.deployment.shop".into(),
                uid: "u1".into(),
                ..OwnerReference::default()
            },
        ]);
        let mut ours = spec_fields();
        ours["f:metadata"] =
            json!({"f:labels": {"f:app.kubernetes.io/managed-by": {}}, "f:ownerReferences": {}});
        ci.metadata.managed_fields = Some(vec![entry(FIELD_MANAGER, None, ours)]);
        ci
    }

    fn with(mut ci: ClientIntents, extra: ManagedFieldsEntry) -> ClientIntents {
        ci.metadata
            .managed_fields
            .get_or_insert_with(Vec::new)
            .push(extra);
        ci
    }

    #[test]
    fn a_draft_nobody_else_wrote_is_ours() {
        assert_eq!(ownership(&draft()), Ownership::Draft);
    }

    #[test]
    fn a_reviewed_copy_applied_over_the_draft_makes_it_the_users() {
        for manager in [
            "gitops",
            "kubectl-client-side-apply",
            "argocd-controller",
            "kubectl-edit",
        ] {
            let ci = with(draft(), entry(manager, None, spec_fields()));
            assert_eq!(
                ownership(&ci),
                Ownership::User {
                    writers: vec![manager.into()]
                },
                "{manager}"
            );
        }
        let labelled = with(
            draft(),
            entry(
                "flux",
                None,
                json!({"f:metadata": {"f:labels": {"f:kustomize.toolkit.fluxcd.io/name": {}}}}),
            ),
        );
        assert!(!is_draft(&labelled));
    }

    #[test]
    fn status_finalizers_and_owner_references_by_others_leave_a_draft_ours() {
        let ci = with(
            with(
                with(
                    draft(),
                    entry(
                        "intents-operator",
                        Some("status"),
                        json!({"f:status": {"f:upToDate": {}}}),
                    ),
                ),
                entry(
                    "intents-operator",
                    None,
                    json!({"f:metadata": {"f:finalizers": {".": {}}}}),
                ),
            ),
            entry(
                RESOLVED_IPS_MANAGER,
                Some("status"),
                json!({"f:status": {"f:resolvedIPs": {}}}),
            ),
        );
        assert_eq!(ownership(&ci), Ownership::Draft);
    }

    #[test]
    fn an_object_without_our_label_is_never_ours() {
        let mut ci = draft();
        ci.metadata.labels = None;
        assert_eq!(ownership(&ci), Ownership::User { writers: vec![] });
        assert!(
            carries_our_marks(&ci),
            "the owner reference is still ours to drop"
        );
    }

    #[test]
    fn releasing_removes_our_owner_reference_and_label_only_if_unchanged() {
        let mut ci = draft();
        ci.metadata.resource_version = Some("7".into());
        let patch = release_patch(&ci).expect("marks to drop");
        assert_eq!(
            patch,
            json!({"metadata": {
                "resourceVersion": "7",
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "x", "uid": "u0"}],
                "labels": {"app.kubernetes.io/managed-by": null},
            }})
        );
        let mut only_ours = draft();
        only_ours
            .metadata
            .owner_references
            .as_mut()
            .expect("refs")
            .remove(0);
        only_ours.metadata.labels = None;
        assert_eq!(
            release_patch(&only_ours),
            Some(json!({"metadata": {"resourceVersion": null, "ownerReferences": null}}))
        );
        let mut bare = draft();
        bare.metadata.labels = None;
        bare.metadata
            .owner_references
            .as_mut()
            .expect("refs")
            .truncate(1);
        assert!(!carries_our_marks(&bare));
        assert_eq!(release_patch(&bare), None);
    }
}
