//! Client resolution: which workload made a call.
//!
//! 1. A pod UID from the sniffer wins when that pod is known (for hostNetwork pods the client IP
//!    is the node's, and only the UID tells which pod); an unknown UID waits for the pod watch.
//! 2. Otherwise the pod that held the client IP at the observation's time.
//! 3. Otherwise a node IP is the node itself: not a workload, so the caller skips it; several
//!    hostNetwork pods share that IP and none is guessed.
//! 4. Otherwise an IP in a pod range waits for the pod watch; anything else is not in the cluster.

use trafficmap_api::report::ClientId;

use super::ip_history::Lookup;
use super::{Attempt, DropReason, Index, PendingReason, SeenRange, Unresolved, Workload};

/// Who made a call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientResolution {
    /// A workload.
    Workload(Workload),
    /// A node (or an unidentified hostNetwork pod on it): not a workload.
    Node {
        /// Node name.
        name: String,
    },
    /// Not resolvable yet; retry later.
    Pending(PendingReason),
    /// Never resolvable; drop.
    Dropped(DropReason),
}

impl From<Result<Workload, Unresolved>> for ClientResolution {
    fn from(r: Result<Workload, Unresolved>) -> Self {
        match r {
            Ok(w) => ClientResolution::Workload(w),
            Err(Unresolved::Pending(reason)) => ClientResolution::Pending(reason),
            Err(Unresolved::Dropped(reason)) => ClientResolution::Dropped(reason),
        }
    }
}

impl Index {
    /// Resolves the client of an observation seen over `seen`.
    pub fn resolve_client(
        &self,
        client: &ClientId,
        seen: SeenRange,
        attempt: Attempt,
    ) -> ClientResolution {
        if self.settling(seen, attempt) {
            return ClientResolution::Pending(PendingReason::Settling);
        }
        if let Some(uid) = &client.pod_uid {
            return match self.pod_workload(uid, attempt) {
                Some(named) => named.into(),
                None => Err(Unresolved::wait(
                    PendingReason::UnknownPod(uid.clone()),
                    attempt,
                ))
                .into(),
            };
        }
        let ip = client.ip;
        match self.pods.holder(ip, seen) {
            Lookup::Held(uid) => {
                return match self.pod_workload(&uid, attempt) {
                    Some(named) => named.into(),
                    None => Err(Unresolved::wait(PendingReason::UnknownPod(uid), attempt)).into(),
                };
            }
            Lookup::Ambiguous => return ClientResolution::Dropped(DropReason::AmbiguousIp(ip)),
            Lookup::Expired => return ClientResolution::Dropped(DropReason::Expired),
            Lookup::Free => {}
        }
        match self.nodes.holder(ip, seen) {
            Lookup::Held(name) => ClientResolution::Node { name },
            Lookup::Ambiguous => ClientResolution::Dropped(DropReason::AmbiguousIp(ip)),
            Lookup::Expired => ClientResolution::Dropped(DropReason::Expired),
            Lookup::Free if self.is_pod_range(ip) => {
                Err(Unresolved::wait(PendingReason::UnknownIp(ip), attempt)).into()
            }
            Lookup::Free => ClientResolution::Dropped(DropReason::NotInCluster(ip)),
        }
    }
}
