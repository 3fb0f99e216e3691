//! Owner objects (ReplicaSets, Deployments, Jobs, CronJobs, ...) by UID, for the owner walk.

use super::TimeMs;
use super::inputs::{OwnerMeta, OwnerRef};
use crate::fast_hash::FastMap;

/// An API group and kind, e.g. `apps` / `ReplicaSet`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GroupKind {
    /// API group (`""` for core).
    pub group: String,
    /// Kind.
    pub kind: String,
}

impl GroupKind {
    /// A group and kind.
    pub fn new(group: &str, kind: &str) -> Self {
        GroupKind {
            group: group.to_string(),
            kind: kind.to_string(),
        }
    }
}

/// The owner kinds the intents-operator's RBAC lets it read (and so walks through); the
/// operator watches the same kinds' metadata.
pub fn default_owner_kinds() -> Vec<GroupKind> {
    vec![
        GroupKind::new("apps", "ReplicaSet"),
        GroupKind::new("apps", "Deployment"),
        GroupKind::new("apps", "StatefulSet"),
        GroupKind::new("apps", "DaemonSet"),
        GroupKind::new("batch", "Job"),
        GroupKind::new("batch", "CronJob"),
    ]
}

#[derive(Clone, Debug)]
struct OwnerRecord {
    meta: OwnerMeta,
    deleted_at_ms: Option<TimeMs>,
}

/// Owners by UID, including recently deleted ones (so late observations of their pods still name
/// the right workload).
#[derive(Clone, Debug)]
pub struct OwnerIndex {
    by_uid: FastMap<String, OwnerRecord>,
    watched: Vec<GroupKind>,
    retention_ms: u64,
}

impl OwnerIndex {
    /// An empty index that walks through the `watched` kinds and keeps deleted owners for
    /// `retention_ms`.
    pub fn new(watched: Vec<GroupKind>, retention_ms: u64) -> Self {
        OwnerIndex {
            by_uid: FastMap::default(),
            watched,
            retention_ms,
        }
    }

    /// Adds or updates an owner; true when it replaced a different description of the same
    /// UID (which may rename the workloads below it), false for a new UID or a repeat.
    pub fn apply(&mut self, meta: OwnerMeta) -> bool {
        let changed = self.by_uid.get(&meta.uid).is_some_and(|r| r.meta != meta);
        self.by_uid.insert(
            meta.uid.clone(),
            OwnerRecord {
                meta,
                deleted_at_ms: None,
            },
        );
        changed
    }

    /// Marks an owner deleted at `at_ms`; it is forgotten after the retention.
    pub fn delete(&mut self, uid: &str, at_ms: TimeMs) {
        if let Some(record) = self.by_uid.get_mut(uid) {
            record.deleted_at_ms.get_or_insert(at_ms);
        }
    }

    /// The owner with `uid`, deleted or not.
    pub fn get(&self, uid: &str) -> Option<&OwnerMeta> {
        self.by_uid.get(uid).map(|r| &r.meta)
    }

    /// Whether the operator watches owners of this reference's kind (and so can walk past it).
    pub fn is_watched(&self, owner: &OwnerRef) -> bool {
        self.watched
            .iter()
            .any(|gk| gk.kind == owner.kind && gk.group == owner.group())
    }

    /// Forgets owners deleted more than the retention before `now_ms`.
    pub fn gc(&mut self, now_ms: TimeMs) {
        let retention = self.retention_ms;
        self.by_uid.retain(|_, r| {
            r.deleted_at_ms
                .is_none_or(|d| d.saturating_add(retention) > now_ms)
        });
    }

    /// Number of owners held.
    pub fn len(&self) -> usize {
        self.by_uid.len()
    }

    /// Whether no owner is held.
    pub fn is_empty(&self) -> bool {
        self.by_uid.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(uid: &str) -> OwnerMeta {
        OwnerMeta {
            uid: uid.into(),
            kind: "ReplicaSet".into(),
            name: "web-5d".into(),
            namespace: "shop".into(),
            owner: None,
        }
    }

    #[test]
    fn deleted_owners_are_kept_for_the_retention() {
        let mut owners = OwnerIndex::new(default_owner_kinds(), 1_000);
        owners.apply(meta("rs-1"));
        owners.delete("rs-1", 5_000);
        owners.gc(5_999);
        assert!(owners.get("rs-1").is_some());
        owners.gc(6_000);
        assert!(owners.is_empty());
    }

    #[test]
    fn only_watched_kinds_are_walked_through() {
        let owners = OwnerIndex::new(default_owner_kinds(), 1_000);
        let reference = |api_version: &str, kind: &str| OwnerRef {
            api_version: api_version.into(),
            kind: kind.into(),
            name: "x".into(),
            uid: "u".into(),
        };
        assert!(owners.is_watched(&reference("apps/v1", "ReplicaSet")));
        assert!(owners.is_watched(&reference("batch/v1", "CronJob")));
        assert!(!owners.is_watched(&reference("argoproj.io/v1alpha1", "Rollout")));
        assert!(!owners.is_watched(&reference("v1", "Node")));
    }
}
