//! The slim objects the watchers feed into the [`Index`](super::Index): only the fields
//! resolution uses. Conversions from the Kubernetes objects are in `convert.rs`.

use std::net::IpAddr;

use trafficmap_api::observed::Protocol;

use super::TimeMs;
use super::cidr::IpCidr;

/// An entry of `metadata.ownerReferences`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct OwnerRef {
    /// `apps/v1`, `batch/v1`, ...
    pub api_version: String,
    /// Kind of the owner.
    pub kind: String,
    /// Name of the owner, in the dependent's namespace.
    pub name: String,
    /// UID of the owner.
    pub uid: String,
}

impl OwnerRef {
    /// API group of the owner (`""` for the core group).
    pub fn group(&self) -> &str {
        self.api_version
            .rsplit_once('/')
            .map_or("", |(group, _version)| group)
    }
}

/// A pod, as resolution needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodInfo {
    /// `metadata.uid`.
    pub uid: String,
    /// `metadata.namespace`.
    pub namespace: String,
    /// `metadata.name`.
    pub name: String,
    /// `status.podIPs` (or `status.podIP`).
    pub ips: Vec<IpAddr>,
    /// `spec.hostNetwork`: the pod's IPs are its node's.
    pub host_network: bool,
    /// `spec.nodeName`.
    pub node_name: Option<String>,
    /// The first owner reference (the one the intents-operator follows).
    pub owner: Option<OwnerRef>,
    /// `intents.otterize.com/workload-name`, else the deprecated `intents.otterize.com/service-name`.
    pub workload_name_annotation: Option<String>,
    /// Earliest time the pod can have held its IPs: the `PodReadyToStartContainers` condition's
    /// transition (sandbox network set up), else `status.startTime`, else `creationTimestamp`.
    pub ips_since_ms: Option<TimeMs>,
    /// `status.phase` is `Succeeded` or `Failed`: the sandbox is gone and its IPs may be reused
    /// although `status.podIPs` still lists them.
    pub terminated: bool,
}

/// The metadata of a possible owner (ReplicaSet, Deployment, Job, CronJob, ...).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OwnerMeta {
    /// `metadata.uid`.
    pub uid: String,
    /// Kind of the object (from the watched type, not from the metadata-only response).
    pub kind: String,
    /// `metadata.name`.
    pub name: String,
    /// `metadata.namespace`.
    pub namespace: String,
    /// Its own first owner reference.
    pub owner: Option<OwnerRef>,
}

/// A port of a Service.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServicePortInfo {
    /// Port name (`None` when unnamed); EndpointSlice ports carry the same name.
    pub name: Option<String>,
    /// The Service port.
    pub port: u16,
    /// Transport protocol.
    pub protocol: Protocol,
}

/// A Service, as resolution needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceInfo {
    /// `metadata.namespace`.
    pub namespace: String,
    /// `metadata.name`.
    pub name: String,
    /// `spec.clusterIPs`; empty for headless (`None`) and ExternalName Services.
    pub cluster_ips: Vec<IpAddr>,
    /// TCP and UDP ports.
    pub ports: Vec<ServicePortInfo>,
    /// `metadata.creationTimestamp` (ClusterIPs are allocated at creation).
    pub created_ms: Option<TimeMs>,
    /// Set by the watch when the Service first arrived as a live event after the initial list:
    /// it was created while watched, so its whole membership history is known. (Comparing
    /// `created_ms`, floored to the second, with the watch start cannot tell within a second.)
    pub created_while_watched: bool,
}

/// One endpoint of an EndpointSlice.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointInfo {
    /// Endpoint addresses.
    pub addresses: Vec<IpAddr>,
    /// Ready, or serving while terminating: it may receive traffic.
    pub serving: bool,
    /// `targetRef.uid` when the target is a Pod.
    pub pod_uid: Option<String>,
    /// `targetRef.name` when the target is a Pod.
    pub pod_name: Option<String>,
}

/// A port of an EndpointSlice.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EndpointPortInfo {
    /// The Service port name this port serves (`None` when unnamed).
    pub name: Option<String>,
    /// The backend port.
    pub port: Option<u16>,
    /// Transport protocol.
    pub protocol: Protocol,
}

/// An EndpointSlice, as resolution needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointSliceInfo {
    /// `metadata.namespace`.
    pub namespace: String,
    /// `metadata.name`.
    pub name: String,
    /// Label `kubernetes.io/service-name`.
    pub service_name: Option<String>,
    /// Endpoints.
    pub endpoints: Vec<EndpointInfo>,
    /// TCP and UDP ports.
    pub ports: Vec<EndpointPortInfo>,
}

/// A node, as resolution needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeInfo {
    /// `metadata.name`.
    pub name: String,
    /// `status.addresses` of type InternalIP and ExternalIP.
    pub ips: Vec<IpAddr>,
    /// `spec.podCIDRs`: added to the pod ranges the index treats as in-cluster.
    pub pod_cidrs: Vec<IpCidr>,
    /// `metadata.creationTimestamp`.
    pub created_ms: Option<TimeMs>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_group_comes_from_the_api_version() {
        let mut owner = OwnerRef {
            api_version: "apps/v1".into(),
            kind: "ReplicaSet".into(),
            name: "web-5d".into(),
            uid: "u".into(),
        };
        assert_eq!(owner.group(), "apps");
        owner.api_version = "v1".into();
        assert_eq!(owner.group(), "");
    }
}
