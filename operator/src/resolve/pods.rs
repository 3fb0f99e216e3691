//! Pods by UID and by name, and which pod held each pod IP over time.
//!
//! hostNetwork pods are kept by UID (a sniffer-reported UID names them) but never claim IPs:
//! their IPs are their node's, shared with every other hostNetwork pod there. Terminated pods
//! (`Succeeded`/`Failed`) release their IPs when seen terminated, although `status.podIPs` still
//! lists them, because the IPs may already belong to new pods.

use std::net::IpAddr;

use super::inputs::PodInfo;
use super::ip_history::{HistoryHandover, IpHistory, Lookup};
use super::{SeenRange, TimeMs};
use crate::fast_hash::FastMap;

#[derive(Clone, Debug)]
struct PodRecord {
    info: PodInfo,
    claimed: Vec<IpAddr>,
    deleted_at_ms: Option<TimeMs>,
}

/// Pods, including recently deleted ones, and the pod IP history.
#[derive(Clone, Debug)]
pub struct PodStore {
    by_uid: FastMap<String, PodRecord>,
    by_name: FastMap<(String, String), String>,
    ips: IpHistory<String>,
    retention_ms: u64,
}

impl PodStore {
    /// An empty store; see [`IpHistory::new`] for the parameters.
    pub fn new(retention_ms: u64, guard_ms: u64, complete_since_ms: TimeMs) -> Self {
        PodStore {
            by_uid: FastMap::default(),
            by_name: FastMap::default(),
            ips: IpHistory::new(retention_ms, guard_ms, complete_since_ms),
            retention_ms,
        }
    }

    /// Its IP history for a successor (see [`IpHistory::handover`]).
    pub fn handover(&self, limit: usize) -> HistoryHandover {
        self.ips.handover(limit)
    }

    /// Takes over a predecessor's IP history (see [`IpHistory::inherit`]).
    pub fn inherit(&mut self, handover: &HistoryHandover, checkpoint_ms: TimeMs) {
        self.ips.inherit(handover, checkpoint_ms);
    }

    /// Adds or updates a pod seen at `at_ms`. Its IPs are held from `ips_since_ms` (never later
    /// than `at_ms`); IPs it no longer lists, or all of them once terminated, are released at `at_ms`.
    pub fn apply(&mut self, pod: PodInfo, at_ms: TimeMs) {
        let old = self.by_uid.get(&pod.uid).map(|r| r.claimed.clone());
        let claimed: Vec<IpAddr> = if pod.host_network || pod.terminated {
            Vec::new()
        } else {
            pod.ips.clone()
        };
        let old = old.unwrap_or_default();
        for ip in old.iter().filter(|ip| !claimed.contains(ip)) {
            self.ips.release(*ip, &pod.uid, at_ms);
        }
        let since = pod.ips_since_ms.map_or(at_ms, |s| s.min(at_ms));
        for ip in claimed.iter().filter(|ip| !old.contains(ip)) {
            self.ips.claim(*ip, &pod.uid, since);
        }
        self.by_name
            .insert((pod.namespace.clone(), pod.name.clone()), pod.uid.clone());
        self.by_uid.insert(
            pod.uid.clone(),
            PodRecord {
                info: pod,
                claimed,
                deleted_at_ms: None,
            },
        );
    }

    /// Marks a pod deleted at `at_ms` and releases its IPs then.
    pub fn delete(&mut self, uid: &str, at_ms: TimeMs) {
        let Some(record) = self.by_uid.get_mut(uid) else {
            return;
        };
        for ip in record.claimed.drain(..) {
            self.ips.release(ip, &record.info.uid, at_ms);
        }
        record.deleted_at_ms.get_or_insert(at_ms);
    }

    /// The pod with `uid`, deleted or not.
    pub fn get(&self, uid: &str) -> Option<&PodInfo> {
        self.by_uid.get(uid).map(|r| &r.info)
    }

    /// UID of the latest pod seen with this namespace and name.
    pub fn uid_by_name(&self, namespace: &str, name: &str) -> Option<&str> {
        self.by_name
            .get(&(namespace.to_string(), name.to_string()))
            .map(String::as_str)
    }

    /// UID of the pod that held `ip` over `range`.
    pub fn holder(&self, ip: IpAddr, range: SeenRange) -> Lookup<String> {
        self.ips.lookup(ip, range)
    }

    /// Forgets pods deleted, and IP holdings released, more than the retention before `now_ms`.
    pub fn gc(&mut self, now_ms: TimeMs) {
        self.ips.gc(now_ms);
        let retention = self.retention_ms;
        let by_name = &mut self.by_name;
        self.by_uid.retain(|uid, r| {
            let keep = r
                .deleted_at_ms
                .is_none_or(|d| d.saturating_add(retention) > now_ms);
            if !keep {
                let key = (r.info.namespace.clone(), r.info.name.clone());
                if by_name.get(&key) == Some(uid) {
                    by_name.remove(&key);
                }
            }
            keep
        });
    }

    /// Number of pods held.
    pub fn len(&self) -> usize {
        self.by_uid.len()
    }

    /// Whether no pod is held.
    pub fn is_empty(&self) -> bool {
        self.by_uid.is_empty()
    }
}

/// A pod UID held inline, as the key of the index's memo of pods' workloads: finding it reads
/// no heap string. Kubernetes UIDs are 36-byte UUIDs; longer ones get no key (and no memo).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PodKey {
    len: u8,
    bytes: [u8; PodKey::MAX],
}

impl PodKey {
    /// Longest UID with a key.
    pub const MAX: usize = 39;

    /// The key of `uid`, if it fits.
    pub fn new(uid: &str) -> Option<Self> {
        let len = uid.len();
        if len > Self::MAX {
            return None;
        }
        let mut bytes = [0; Self::MAX];
        bytes[..len].copy_from_slice(uid.as_bytes());
        Some(PodKey {
            len: len as u8,
            bytes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RETENTION: u64 = 600_000;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("valid IP")
    }

    fn pod(uid: &str, name: &str, ips: &[&str], since: TimeMs) -> PodInfo {
        PodInfo {
            uid: uid.into(),
            namespace: "shop".into(),
            name: name.into(),
            ips: ips.iter().map(|s| ip(s)).collect(),
            host_network: false,
            node_name: Some("n1".into()),
            owner: None,
            workload_name_annotation: None,
            ips_since_ms: Some(since),
            terminated: false,
        }
    }

    fn store() -> PodStore {
        PodStore::new(RETENTION, 2_000, 0)
    }

    #[test]
    fn pod_keys_tell_uids_apart_and_long_ones_get_none() {
        let uid = "0b4cbd6e-3f2a-4c8e-9a55-0e5f7f0c1d2a";
        assert_eq!(PodKey::new(uid), PodKey::new(uid));
        assert_ne!(PodKey::new(uid), PodKey::new(&uid[..35]));
        assert_ne!(PodKey::new("a"), PodKey::new("a\0"));
        assert!(PodKey::new(&"a".repeat(PodKey::MAX)).is_some());
        assert_eq!(PodKey::new(&"a".repeat(PodKey::MAX + 1)), None);
    }

    #[test]
    fn ip_is_held_from_the_sandbox_time_not_from_when_the_event_arrived() {
        let mut pods = store();
        pods.apply(pod("a", "web-1", &["10.244.0.5"], 10_000), 15_000);
        assert_eq!(
            pods.holder(ip("10.244.0.5"), SeenRange::at(13_000)),
            Lookup::Held("a".into())
        );
    }

    #[test]
    fn deleted_pod_still_resolves_at_earlier_times_and_its_ip_passes_to_the_next_pod() {
        let mut pods = store();
        pods.apply(pod("a", "web-1", &["10.244.0.5"], 10_000), 10_000);
        pods.delete("a", 50_000);
        pods.apply(pod("b", "job-1", &["10.244.0.5"], 60_000), 60_000);
        let x = ip("10.244.0.5");
        assert_eq!(
            pods.holder(x, SeenRange::at(40_000)),
            Lookup::Held("a".into())
        );
        assert_eq!(
            pods.holder(x, SeenRange::at(70_000)),
            Lookup::Held("b".into())
        );
        assert!(pods.get("a").is_some());
    }

    #[test]
    fn terminated_pods_release_their_ips_although_status_still_lists_them() {
        let mut pods = store();
        let mut done = pod("a", "job-1", &["10.244.0.5"], 10_000);
        pods.apply(done.clone(), 10_000);
        done.terminated = true;
        pods.apply(done, 30_000);
        pods.apply(pod("b", "web-2", &["10.244.0.5"], 40_000), 40_000);
        let x = ip("10.244.0.5");
        assert_eq!(
            pods.holder(x, SeenRange::at(20_000)),
            Lookup::Held("a".into())
        );
        assert_eq!(
            pods.holder(x, SeenRange::at(45_000)),
            Lookup::Held("b".into())
        );
    }

    #[test]
    fn host_network_pods_claim_no_ips() {
        let mut pods = store();
        let mut p = pod("h", "node-agent", &["192.168.1.10"], 10_000);
        p.host_network = true;
        pods.apply(p, 10_000);
        assert_eq!(
            pods.holder(ip("192.168.1.10"), SeenRange::at(20_000)),
            Lookup::Free
        );
        assert!(pods.get("h").is_some());
    }

    #[test]
    fn deleted_pods_are_forgotten_after_the_retention_and_names_follow_the_newest_pod() {
        let mut pods = store();
        pods.apply(pod("a", "db-0", &["10.244.0.5"], 10_000), 10_000);
        pods.apply(pod("b", "db-0", &["10.244.0.9"], 20_000), 20_000);
        pods.delete("a", 20_000);
        assert_eq!(pods.uid_by_name("shop", "db-0"), Some("b"));
        pods.gc(20_000 + RETENTION);
        assert!(pods.get("a").is_none());
        assert_eq!(pods.uid_by_name("shop", "db-0"), Some("b"));
        assert_eq!(pods.len(), 1);
    }
}
