//! Nodes: which node held each node IP over time, and the pod ranges nodes announce.

use std::net::IpAddr;

use super::cidr::IpCidr;
use super::inputs::NodeInfo;
use super::ip_history::{HistoryHandover, IpHistory, Lookup};
use super::{SeenRange, TimeMs};
use crate::fast_hash::FastMap;

#[derive(Clone, Debug)]
struct NodeRecord {
    info: NodeInfo,
    deleted: bool,
}

/// Nodes and the node IP history.
#[derive(Clone, Debug)]
pub struct NodeIndex {
    by_name: FastMap<String, NodeRecord>,
    ips: IpHistory<String>,
}

impl NodeIndex {
    /// An empty index; see [`IpHistory::new`] for the parameters.
    pub fn new(retention_ms: u64, guard_ms: u64, complete_since_ms: TimeMs) -> Self {
        NodeIndex {
            by_name: FastMap::default(),
            ips: IpHistory::new(retention_ms, guard_ms, complete_since_ms),
        }
    }

    /// Adds or updates a node seen at `at_ms`. A new node holds its IPs since its creation; IPs
    /// an existing node gains or loses change hands at `at_ms`.
    pub fn apply(&mut self, node: NodeInfo, at_ms: TimeMs) {
        let old = self.by_name.get(&node.name).filter(|r| !r.deleted);
        let since = match old {
            Some(_) => at_ms,
            None => node.created_ms.map_or(at_ms, |c| c.min(at_ms)),
        };
        let old_ips = old.map(|r| r.info.ips.clone()).unwrap_or_default();
        for ip in old_ips.iter().filter(|ip| !node.ips.contains(ip)) {
            self.ips.release(*ip, &node.name, at_ms);
        }
        for ip in node.ips.iter().filter(|ip| !old_ips.contains(ip)) {
            self.ips.claim(*ip, &node.name, since);
        }
        self.by_name.insert(
            node.name.clone(),
            NodeRecord {
                info: node,
                deleted: false,
            },
        );
    }

    /// Removes a node at `at_ms`; its IPs stay in the history for the retention.
    pub fn delete(&mut self, name: &str, at_ms: TimeMs) {
        if let Some(record) = self.by_name.get_mut(name) {
            for ip in &record.info.ips {
                self.ips.release(*ip, &record.info.name, at_ms);
            }
            record.deleted = true;
        }
    }

    /// Name of the node that held `ip` over `range`.
    pub fn holder(&self, ip: IpAddr, range: SeenRange) -> Lookup<String> {
        self.ips.lookup(ip, range)
    }

    /// Pod ranges announced by current nodes (`spec.podCIDRs`).
    pub fn pod_cidrs(&self) -> impl Iterator<Item = &IpCidr> {
        self.by_name
            .values()
            .filter(|r| !r.deleted)
            .flat_map(|r| r.info.pod_cidrs.iter())
    }

    /// Its IP history for a successor (see [`IpHistory::handover`]).
    pub fn handover(&self, limit: usize) -> HistoryHandover {
        self.ips.handover(limit)
    }

    /// Takes over a predecessor's IP history (see [`IpHistory::inherit`]).
    pub fn inherit(&mut self, handover: &HistoryHandover, checkpoint_ms: TimeMs) {
        self.ips.inherit(handover, checkpoint_ms);
    }

    /// Forgets released node IPs after the retention, and deleted nodes.
    pub fn gc(&mut self, now_ms: TimeMs) {
        self.ips.gc(now_ms);
        self.by_name.retain(|_, r| !r.deleted);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("valid IP")
    }

    fn node(name: &str, ips: &[&str], created_ms: TimeMs) -> NodeInfo {
        NodeInfo {
            name: name.into(),
            ips: ips.iter().map(|s| ip(s)).collect(),
            pod_cidrs: vec!["10.244.1.0/24".parse().expect("cidr")],
            created_ms: Some(created_ms),
        }
    }

    #[test]
    fn node_ip_is_attributed_to_the_node_that_had_it_then() {
        let mut nodes = NodeIndex::new(600_000, 2_000, 0);
        nodes.apply(node("n1", &["192.168.1.10"], 1_000), 5_000);
        nodes.apply(node("n1", &["192.168.1.11"], 1_000), 100_000);
        nodes.apply(node("n2", &["192.168.1.10"], 180_000), 200_000);
        let x = ip("192.168.1.10");
        assert_eq!(
            nodes.holder(x, SeenRange::at(50_000)),
            Lookup::Held("n1".into())
        );
        assert_eq!(nodes.holder(x, SeenRange::at(150_000)), Lookup::Free);
        assert_eq!(
            nodes.holder(ip("192.168.1.11"), SeenRange::at(150_000)),
            Lookup::Held("n1".into())
        );
        assert_eq!(
            nodes.holder(x, SeenRange::at(250_000)),
            Lookup::Held("n2".into())
        );
        assert_eq!(nodes.pod_cidrs().count(), 2);
    }

    #[test]
    fn deleted_nodes_stop_announcing_pod_ranges() {
        let mut nodes = NodeIndex::new(600_000, 2_000, 0);
        nodes.apply(node("n1", &["192.168.1.10"], 1_000), 5_000);
        nodes.delete("n1", 10_000);
        assert_eq!(nodes.pod_cidrs().count(), 0);
        assert_eq!(
            nodes.holder(ip("192.168.1.10"), SeenRange::at(8_000)),
            Lookup::Held("n1".into())
        );
    }
}
