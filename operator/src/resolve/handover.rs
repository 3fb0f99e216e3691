//! The history one operator hands to the next. An operator knows who held each IP only from
//! its own start; a replacement that resolves a call seen shortly before its start cannot tell
//! whether an address it sees held now had another holder then, and drops the call as
//! ambiguous. The predecessor's releases of pod, ClusterIP and node addresses, with the time
//! from which it knew them all and the time it handed them over, settle that
//! ([`super::ip_history`]). Pure: `crate::handover` stores it.

use serde::{Deserialize, Serialize};

use super::ip_history::HistoryHandover;
use super::{Index, TimeMs};

/// Version of [`Handover`]'s layout; another version is ignored.
pub const HANDOVER_VERSION: u32 = 1;
/// Most releases per history: about 40 bytes each as JSON, so three full ones stay well
/// under a ConfigMap's 1 MiB.
pub const MAX_RELEASES: usize = 8_000;

/// Everything a successor inherits.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Handover {
    /// [`HANDOVER_VERSION`].
    pub version: u32,
    /// When it was handed over, milliseconds since the epoch.
    pub checkpoint_ms: TimeMs,
    /// Pod IPs.
    pub pods: HistoryHandover,
    /// Service ClusterIPs.
    pub services: HistoryHandover,
    /// Node addresses.
    pub nodes: HistoryHandover,
}

impl Index {
    /// This index's history for a successor, as of `now_ms`.
    pub fn handover(&self, now_ms: TimeMs) -> Handover {
        Handover {
            version: HANDOVER_VERSION,
            checkpoint_ms: now_ms,
            pods: self.pods.handover(MAX_RELEASES),
            services: self.services.handover(MAX_RELEASES),
            nodes: self.nodes.handover(MAX_RELEASES),
        }
    }

    /// Takes over a predecessor's history; `false` (and nothing taken) for another version.
    pub fn inherit(&mut self, handover: &Handover) -> bool {
        if handover.version != HANDOVER_VERSION {
            return false;
        }
        let at = handover.checkpoint_ms;
        self.pods.inherit(&handover.pods, at);
        self.services.inherit(&handover.services, at);
        self.nodes.inherit(&handover.nodes, at);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resolve::SeenRange;
    use crate::resolve::fixtures::{config, ip, pod};
    use crate::resolve::ip_history::Lookup;

    /// An index whose watches started at `started`, with pod `web` at 10.244.0.7 since 5 s.
    fn index_with_web(started: TimeMs) -> Index {
        let mut index = Index::new(config(), started);
        let mut web = pod("web", "10.244.0.7", None);
        web.ips_since_ms = Some(5_000);
        index.apply_pod(web, started.max(5_000));
        index
    }

    #[test]
    fn a_replacement_that_inherits_attributes_a_call_seen_just_after_the_claim() {
        let handover = index_with_web(0).handover(9_000);
        let text = serde_json::to_string(&handover).expect("JSON");
        let handover: Handover = serde_json::from_str(&text).expect("read back");

        // Its replacement starts at 10 s; the call was seen at 6 s, a second after the claim.
        let seen = SeenRange::at(6_000);
        let alone = index_with_web(10_000);
        assert_eq!(alone.pods.holder(ip("10.244.0.7"), seen), Lookup::Ambiguous);
        let mut heir = index_with_web(10_000);
        assert!(heir.inherit(&handover));
        assert_eq!(
            heir.pods.holder(ip("10.244.0.7"), seen),
            Lookup::Held("web".to_string())
        );

        let other = Handover {
            version: HANDOVER_VERSION + 1,
            ..handover
        };
        assert!(!index_with_web(10_000).inherit(&other));
    }
}
