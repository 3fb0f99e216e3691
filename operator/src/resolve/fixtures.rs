//! Test builders: hand-made watch events for a small cluster.

use std::net::IpAddr;

use trafficmap_api::observed::{PortProtocol, Protocol, WorkloadRef};
use trafficmap_api::report::ClientId;

use super::inputs::{EndpointInfo, EndpointPortInfo, ServicePortInfo};
use super::{
    Attempt, EndpointSliceInfo, Index, NodeInfo, OwnerMeta, OwnerRef, PodInfo, ResolveConfig,
    SeenRange, ServiceInfo, TimeMs,
};

/// Namespace of the fixtures.
pub const NS: &str = "shop";
/// When the fixtures' objects appeared.
pub const CREATED: TimeMs = 1_000;
/// A moment well after the fixtures appeared.
pub const T: TimeMs = 100_000;

pub fn ip(s: &str) -> IpAddr {
    s.parse().expect("valid IP")
}

pub fn config() -> ResolveConfig {
    ResolveConfig {
        pod_cidrs: vec!["10.244.0.0/16".parse().expect("cidr")],
        service_cidrs: vec!["10.96.0.0/16".parse().expect("cidr")],
        ..ResolveConfig::default()
    }
}

pub fn index() -> Index {
    Index::new(config(), 0)
}

/// A retryable attempt well after `t` (the watches have settled).
pub fn attempt_after(t: TimeMs) -> Attempt {
    Attempt::retryable(t + 60_000)
}

pub fn at(t: TimeMs) -> SeenRange {
    SeenRange::at(t)
}

pub fn tcp(port: u16) -> Option<PortProtocol> {
    Some(PortProtocol {
        port,
        protocol: Protocol::Tcp,
    })
}

pub fn client(ip_: &str, pod_uid: Option<&str>) -> ClientId {
    ClientId {
        ip: ip(ip_),
        pod_uid: pod_uid.map(str::to_string),
    }
}

pub fn owner_ref(kind: &str, name: &str) -> OwnerRef {
    let api_version = match kind {
        "Job" | "CronJob" => "batch/v1",
        _ => "apps/v1",
    };
    OwnerRef {
        api_version: api_version.into(),
        kind: kind.into(),
        name: name.into(),
        uid: format!("uid-{name}"),
    }
}

pub fn workload(name: &str, kind: &str) -> WorkloadRef {
    WorkloadRef {
        name: name.into(),
        namespace: NS.into(),
        kind: kind.into(),
    }
}

pub fn pod(uid: &str, ip_: &str, owner: Option<OwnerRef>) -> PodInfo {
    PodInfo {
        uid: uid.into(),
        namespace: NS.into(),
        name: format!("pod-{uid}"),
        ips: vec![ip(ip_)],
        host_network: false,
        node_name: Some("n1".into()),
        owner,
        workload_name_annotation: None,
        ips_since_ms: Some(CREATED),
        terminated: false,
    }
}

/// Adds a Deployment `name` with ReplicaSet `name-rs`, and returns the owner ref for its pods.
pub fn deployment(index: &mut Index, name: &str) -> OwnerRef {
    let rs = format!("{name}-rs");
    index.apply_owner(OwnerMeta {
        uid: format!("uid-{name}"),
        kind: "Deployment".into(),
        name: name.into(),
        namespace: NS.into(),
        owner: None,
    });
    index.apply_owner(OwnerMeta {
        uid: format!("uid-{rs}"),
        kind: "ReplicaSet".into(),
        name: rs.clone(),
        namespace: NS.into(),
        owner: Some(owner_ref("Deployment", name)),
    });
    owner_ref("ReplicaSet", &rs)
}

/// Adds a pod of Deployment `deploy` (creating the Deployment's owners).
pub fn deployment_pod(index: &mut Index, deploy: &str, uid: &str, ip_: &str) {
    let owner = deployment(index, deploy);
    index.apply_pod(pod(uid, ip_, Some(owner)), CREATED);
}

pub fn service(namespace: &str, name: &str, cluster_ip: Option<&str>, port: u16) -> ServiceInfo {
    ServiceInfo {
        namespace: namespace.into(),
        name: name.into(),
        cluster_ips: cluster_ip.map(ip).into_iter().collect(),
        ports: vec![ServicePortInfo {
            name: Some("p".into()),
            port,
            protocol: Protocol::Tcp,
        }],
        created_ms: Some(CREATED),
        created_while_watched: false,
    }
}

pub fn slice(namespace: &str, service: &str, pod_uids: &[&str], port: u16) -> EndpointSliceInfo {
    EndpointSliceInfo {
        namespace: namespace.into(),
        name: format!("{service}-slice"),
        service_name: Some(service.into()),
        endpoints: pod_uids
            .iter()
            .map(|uid| EndpointInfo {
                addresses: vec![],
                serving: true,
                pod_uid: Some((*uid).to_string()),
                pod_name: None,
            })
            .collect(),
        ports: vec![EndpointPortInfo {
            name: Some("p".into()),
            port: Some(port),
            protocol: Protocol::Tcp,
        }],
    }
}

/// A ClusterIP Service `name` in the fixtures' namespace backed by `pod_uids`.
pub fn backed_service(index: &mut Index, name: &str, cluster_ip: &str, pod_uids: &[&str]) {
    index.apply_service(service(NS, name, Some(cluster_ip), 80), CREATED);
    index.apply_endpoint_slice(slice(NS, name, pod_uids, 8080), CREATED);
}

pub fn node(name: &str, ip_: &str) -> NodeInfo {
    NodeInfo {
        name: name.into(),
        ips: vec![ip(ip_)],
        pod_cidrs: vec![],
        created_ms: Some(CREATED),
    }
}
