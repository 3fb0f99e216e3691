//! The node simulator: one Kubernetes node on this machine, with pods as network namespaces.
//!
//! - [`kubelet`] registers the Node, binds unscheduled pods to it, starts each pod (netns, veth
//!   on the bridge, lowest free IP, resolv.conf, pod cgroup, the pod's [`traffic`] process) and
//!   writes its status; it tears pods down when they are deleted and finalizes the deletion.
//! - [`network`] is the host side: bridge, veths, routes, a forward filter that keeps pod traffic
//!   inside the namespaces we created; [`ipam`] hands out pod IPs (lowest free first).
//! - [`addons`] runs the cluster's DNS (the real CoreDNS) and kube-proxy (the real one, nftables
//!   mode) for this node; [`internet`] is a namespace with "external" hosts and their DNS.
//! - [`cleanup`] removes whatever a killed run left behind.

pub mod addons;
pub mod calls;
pub mod cgroup;
pub mod cleanup;
pub mod internet;
pub mod ipam;
pub mod kubelet;
pub mod network;
pub mod spec;
pub mod sys;
pub mod traffic;

use std::net::Ipv4Addr;
use std::path::PathBuf;

/// Name of the simulated node.
pub const NODE_NAME: &str = "tm-node";
/// The node's pod range (spec.podCIDR); the bridge holds its first address.
pub const POD_CIDR: &str = "10.244.0.0/24";
/// The cluster-wide pod range (kube-proxy's --cluster-cidr, the operator's --pod-cidr).
pub const CLUSTER_POD_CIDR: &str = "10.244.0.0/16";
/// The Service range of the local control plane.
pub const SERVICE_CIDR: &str = "10.96.0.0/16";
/// The bridge's address, pods' default gateway.
pub const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 244, 0, 1);
/// The node's InternalIP (on the bridge): hostNetwork pods' IP, where CoreDNS listens.
pub const NODE_IP: Ipv4Addr = Ipv4Addr::new(10, 255, 0, 1);
/// ClusterIP of `kube-system/kube-dns`.
pub const CLUSTER_DNS_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
/// Cluster DNS domain.
pub const CLUSTER_DOMAIN: &str = "cluster.local";
/// The host bridge.
pub const BRIDGE: &str = "tm-br0";
/// Prefix of pods' host-side veths: `tmv<first 8 hex of the UID>`.
pub const POD_VETH_PREFIX: &str = "tmv";
/// Prefix of pod network namespaces: `tm-pod-<first 8 hex of the UID>`.
pub const POD_NETNS_PREFIX: &str = "tm-pod-";
/// Annotation carrying the pod's [`spec::TrafficSpec`] as JSON.
pub const TRAFFIC_ANNOTATION: &str = "trafficmap.io/traffic";
/// nftables table of the simulator's forward filter.
pub const NFT_TABLE: &str = "trafficmap-node";

/// The `trafficmap-node` binary, which pods' processes and external hosts run (`traffic`): this
/// process when it is `trafficmap-node`, else the built one (a test binary runs scenarios too).
pub fn node_binary() -> crate::Result<PathBuf> {
    let own = std::env::current_exe().map_err(|e| crate::Error::Http {
        what: "own executable".into(),
        source: Box::new(e),
    })?;
    if own.file_name().is_some_and(|n| n == "trafficmap-node") {
        Ok(own)
    } else {
        crate::operator::bin_path("trafficmap-node")
    }
}

/// Directory for the simulator's run-time state (pid files, logs of pods):
/// `/run/trafficmap-node`.
pub fn state_dir() -> PathBuf {
    PathBuf::from("/run/trafficmap-node")
}

/// An exclusive hold on the node: one `run`, `scenario` or `cleanup` at a time on this machine
/// (they share the bridge, the pod address range and the names). Released when dropped.
pub struct NodeLock {
    _file: std::fs::File,
}

impl NodeLock {
    /// Takes the lock (`<state dir>/lock`), failing at once if another process holds it.
    pub fn acquire() -> crate::Result<Self> {
        use std::os::fd::AsRawFd;
        let dir = state_dir();
        let path = dir.join("lock");
        let file = std::fs::create_dir_all(&dir)
            .and_then(|_| {
                std::fs::OpenOptions::new()
                    .create(true)
                    .truncate(false)
                    .write(true)
                    .open(&path)
            })
            .map_err(|e| crate::Error::Http {
                what: format!("open {}", path.display()),
                source: Box::new(e),
            })?;
        // SAFETY: flock on a descriptor this function owns.
        let locked = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0;
        if !locked {
            return Err(crate::Error::Exited(format!(
                "another trafficmap-node run, scenario or cleanup holds {}; wait for it or stop it",
                path.display()
            )));
        }
        Ok(NodeLock { _file: file })
    }
}

/// The pod's short id: the first 8 hex digits of its UID.
pub fn short_uid(uid: &str) -> String {
    uid.chars().filter(|c| *c != '-').take(8).collect()
}

/// Name of a pod's network namespace.
pub fn pod_netns(uid: &str) -> String {
    format!("{POD_NETNS_PREFIX}{}", short_uid(uid))
}

/// Name of a pod's host-side veth (at most 15 characters).
pub fn pod_veth(uid: &str) -> String {
    format!("{POD_VETH_PREFIX}{}", short_uid(uid))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_names_fit_in_an_interface_name() {
        let uid = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0";
        assert_eq!(pod_netns(uid), "tm-pod-0f1e2d3c");
        assert_eq!(pod_veth(uid), "tmv0f1e2d3c");
        assert!(pod_veth(uid).len() <= 15);
    }
}
