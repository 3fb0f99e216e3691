//! Workload names exactly as the Otterize intents-operator computes them (its
//! `podownerresolver.ResolvePodToServiceIdentity`), since it consumes the drafted ClientIntents:
//!
//! - The annotation `intents.otterize.com/workload-name`, else the deprecated
//!   `intents.otterize.com/service-name`, is the name, verbatim (no `.` -> `_`), and the kind is
//!   empty: the intents-operator does not walk the owners of annotated pods and labels them with
//!   an empty owner kind, so a target or workload `kind` other than empty would not match them.
//!   An empty annotation value is ignored (the intents-operator would take the empty string as
//!   the name, which no ClientIntents can select).
//! - Otherwise follow the *first* owner reference of the pod, then of each owner, to the root;
//!   the root's name with `.` replaced by `_` is the name and the root's kind is the kind. A pod
//!   without owners is itself (kind `Pod`).
//! - An owner kind the intents-operator cannot read (its RBAC covers Deployments, ReplicaSets,
//!   StatefulSets, DaemonSets, Jobs and CronJobs; reading anything else is forbidden) is the
//!   root: it names the workload after that owner reference.
//! - An owner the intents-operator cannot find is also the root there. Here an unknown owner
//!   means "not yet resolvable" ([`MissingOwner::Wait`]) because the watch may simply be behind;
//!   only a final attempt ([`MissingOwner::IsRoot`]) falls back to the intents-operator's rule.

use thiserror::Error;
use trafficmap_api::observed::WorkloadRef;

use super::inputs::PodInfo;
use super::owners::OwnerIndex;

/// Pod annotation that names the workload.
pub const WORKLOAD_NAME_ANNOTATION: &str = "intents.otterize.com/workload-name";
/// Deprecated pod annotation that names the workload when the current one is absent.
pub const DEPRECATED_SERVICE_NAME_ANNOTATION: &str = "intents.otterize.com/service-name";
/// Kind of a workload named by annotation: empty, as in the intents-operator.
pub const ANNOTATED_WORKLOAD_KIND: &str = "";
/// Kind of a pod without owners.
pub const POD_KIND: &str = "Pod";
/// Longest owner chain followed; longer chains (or cycles) are refused.
pub const MAX_OWNER_DEPTH: usize = 16;

/// What to do when an owner in the chain is not known.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MissingOwner {
    /// Report [`NamingError::OwnerNotKnown`] so the caller retries after the watch catches up.
    Wait,
    /// Treat the unknown owner reference as the root, as the intents-operator does on NotFound.
    IsRoot,
}

/// Why a pod's workload cannot be named (yet).
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum NamingError {
    /// An owner in the chain has not been seen (yet).
    #[error("owner {kind} {namespace}/{name} (uid {uid}) is not known yet")]
    OwnerNotKnown {
        /// Owner kind.
        kind: String,
        /// Owner name.
        name: String,
        /// Namespace of the pod.
        namespace: String,
        /// Owner UID.
        uid: String,
    },
    /// The owner chain is longer than [`MAX_OWNER_DEPTH`] (or loops).
    #[error("owner chain of pod {namespace}/{name} is longer than {MAX_OWNER_DEPTH}")]
    ChainTooLong {
        /// Namespace of the pod.
        namespace: String,
        /// Name of the pod.
        name: String,
    },
}

/// A Kubernetes object name as an Otterize workload name: dots become `_`.
pub fn otterize_name(resource_name: &str) -> String {
    resource_name.replace('.', "_")
}

/// The workload `pod` belongs to, by the rules in the module documentation.
pub fn workload_for_pod(
    pod: &PodInfo,
    owners: &OwnerIndex,
    missing: MissingOwner,
) -> Result<WorkloadRef, NamingError> {
    let workload = |name: String, kind: &str| WorkloadRef {
        name,
        namespace: pod.namespace.clone(),
        kind: kind.to_string(),
    };
    if let Some(name) = pod
        .workload_name_annotation
        .as_ref()
        .filter(|n| !n.is_empty())
    {
        return Ok(workload(name.clone(), ANNOTATED_WORKLOAD_KIND));
    }
    let (mut root_name, mut root_kind) = (pod.name.as_str(), POD_KIND);
    let mut next = pod.owner.as_ref();
    for _ in 0..MAX_OWNER_DEPTH {
        let Some(owner) = next else {
            return Ok(workload(otterize_name(root_name), root_kind));
        };
        if !owners.is_watched(owner) {
            return Ok(workload(otterize_name(&owner.name), &owner.kind));
        }
        match owners
            .get(&owner.uid)
            .filter(|m| m.namespace == pod.namespace)
        {
            Some(meta) => {
                (root_name, root_kind) = (meta.name.as_str(), meta.kind.as_str());
                next = meta.owner.as_ref();
            }
            None if missing == MissingOwner::IsRoot => {
                return Ok(workload(otterize_name(&owner.name), &owner.kind));
            }
            None => {
                return Err(NamingError::OwnerNotKnown {
                    kind: owner.kind.clone(),
                    name: owner.name.clone(),
                    namespace: pod.namespace.clone(),
                    uid: owner.uid.clone(),
                });
            }
        }
    }
    Err(NamingError::ChainTooLong {
        namespace: pod.namespace.clone(),
        name: pod.name.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resolve::inputs::{OwnerMeta, OwnerRef};
    use crate::resolve::owners::default_owner_kinds;

    fn reference(api_version: &str, kind: &str, name: &str) -> OwnerRef {
        OwnerRef {
            api_version: api_version.into(),
            kind: kind.into(),
            name: name.into(),
            uid: format!("uid-{name}"),
        }
    }

    fn owner(kind: &str, name: &str, parent: Option<OwnerRef>) -> OwnerMeta {
        OwnerMeta {
            uid: format!("uid-{name}"),
            kind: kind.into(),
            name: name.into(),
            namespace: "shop".into(),
            owner: parent,
        }
    }

    fn pod(owner: Option<OwnerRef>) -> PodInfo {
        PodInfo {
            uid: "pod-1".into(),
            namespace: "shop".into(),
            name: "web-5d-x".into(),
            ips: vec![],
            host_network: false,
            node_name: None,
            owner,
            workload_name_annotation: None,
            ips_since_ms: None,
            terminated: false,
        }
    }

    fn index(metas: Vec<OwnerMeta>) -> OwnerIndex {
        let mut owners = OwnerIndex::new(default_owner_kinds(), 600_000);
        for m in metas {
            owners.apply(m);
        }
        owners
    }

    fn named(name: &str, kind: &str) -> WorkloadRef {
        WorkloadRef {
            name: name.into(),
            namespace: "shop".into(),
            kind: kind.into(),
        }
    }

    #[test]
    fn pod_of_a_replicaset_of_a_deployment_is_the_deployment() {
        let owners = index(vec![
            owner(
                "ReplicaSet",
                "web-5d",
                Some(reference("apps/v1", "Deployment", "web")),
            ),
            owner("Deployment", "web", None),
        ]);
        let p = pod(Some(reference("apps/v1", "ReplicaSet", "web-5d")));
        let got = workload_for_pod(&p, &owners, MissingOwner::Wait);
        assert_eq!(got, Ok(named("web", "Deployment")));
    }

    #[test]
    fn job_owned_by_cronjob_resolves_to_the_cronjob() {
        let owners = index(vec![
            owner(
                "Job",
                "backup-2901",
                Some(reference("batch/v1", "CronJob", "backup")),
            ),
            owner("CronJob", "backup", None),
        ]);
        let p = pod(Some(reference("batch/v1", "Job", "backup-2901")));
        let got = workload_for_pod(&p, &owners, MissingOwner::Wait);
        assert_eq!(got, Ok(named("backup", "CronJob")));
    }

    #[test]
    fn pod_without_owner_is_itself() {
        let got = workload_for_pod(&pod(None), &index(vec![]), MissingOwner::Wait);
        assert_eq!(got, Ok(named("web-5d-x", "Pod")));
    }

    #[test]
    fn dots_in_the_root_name_become_underscores() {
        let owners = index(vec![owner("StatefulSet", "db.v1.2", None)]);
        let p = pod(Some(reference("apps/v1", "StatefulSet", "db.v1.2")));
        let got = workload_for_pod(&p, &owners, MissingOwner::Wait);
        assert_eq!(got, Ok(named("db_v1_2", "StatefulSet")));
    }

    #[test]
    fn workload_name_annotation_wins_verbatim_with_an_empty_kind() {
        let owners = index(vec![owner("StatefulSet", "db", None)]);
        let mut p = pod(Some(reference("apps/v1", "StatefulSet", "db")));
        p.workload_name_annotation = Some("payments.api".into());
        let got = workload_for_pod(&p, &owners, MissingOwner::Wait);
        assert_eq!(got, Ok(named("payments.api", ANNOTATED_WORKLOAD_KIND)));
    }

    #[test]
    fn annotated_pod_needs_no_owner_walk() {
        let mut p = pod(Some(reference("apps/v1", "ReplicaSet", "unknown")));
        p.workload_name_annotation = Some("checkout".into());
        let got = workload_for_pod(&p, &index(vec![]), MissingOwner::Wait);
        assert_eq!(got, Ok(named("checkout", "")));
    }

    #[test]
    fn unknown_owner_is_not_yet_resolvable_rather_than_a_wrong_name() {
        let owners = index(vec![owner(
            "ReplicaSet",
            "web-5d",
            Some(reference("apps/v1", "Deployment", "web")),
        )]);
        let p = pod(Some(reference("apps/v1", "ReplicaSet", "web-5d")));
        let got = workload_for_pod(&p, &owners, MissingOwner::Wait);
        assert!(
            matches!(got, Err(NamingError::OwnerNotKnown { ref kind, .. }) if kind == "Deployment")
        );
    }

    #[test]
    fn on_a_final_attempt_an_unknown_owner_is_the_root_as_in_the_intents_operator() {
        let owners = index(vec![owner(
            "ReplicaSet",
            "web-5d",
            Some(reference("apps/v1", "Deployment", "web")),
        )]);
        let p = pod(Some(reference("apps/v1", "ReplicaSet", "web-5d")));
        let got = workload_for_pod(&p, &owners, MissingOwner::IsRoot);
        assert_eq!(got, Ok(named("web", "Deployment")));
    }

    #[test]
    fn owner_of_an_unwatched_kind_is_the_root() {
        let owners = index(vec![owner(
            "ReplicaSet",
            "api-7f",
            Some(reference("argoproj.io/v1alpha1", "Rollout", "api")),
        )]);
        let p = pod(Some(reference("apps/v1", "ReplicaSet", "api-7f")));
        let got = workload_for_pod(&p, &owners, MissingOwner::Wait);
        assert_eq!(got, Ok(named("api", "Rollout")));
    }

    #[test]
    fn owner_cycles_are_refused() {
        let owners = index(vec![owner(
            "ReplicaSet",
            "loop",
            Some(reference("apps/v1", "ReplicaSet", "loop")),
        )]);
        let p = pod(Some(reference("apps/v1", "ReplicaSet", "loop")));
        let got = workload_for_pod(&p, &owners, MissingOwner::Wait);
        assert!(matches!(got, Err(NamingError::ChainTooLong { .. })));
    }
}
