//! Pure conversions from the Kubernetes objects the watchers receive to the slim inputs.

use std::net::IpAddr;

use k8s_openapi::api::core::v1::{Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};
use kube::Resource;
use thiserror::Error;
use trafficmap_api::observed::Protocol;

use super::TimeMs;
use super::inputs::{
    EndpointInfo, EndpointPortInfo, EndpointSliceInfo, NodeInfo, OwnerMeta, OwnerRef, PodInfo,
    ServiceInfo, ServicePortInfo,
};
use super::naming::{DEPRECATED_SERVICE_NAME_ANNOTATION, WORKLOAD_NAME_ANNOTATION};

/// Label on an EndpointSlice naming its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// Pod condition set when the sandbox and its network are ready (Kubernetes 1.29+).
const POD_READY_TO_START_CONTAINERS: &str = "PodReadyToStartContainers";

/// Why an object cannot be converted.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ConversionError {
    /// A field every stored object has is missing (the object did not come from the API server).
    #[error("object has no {0}")]
    MissingField(&'static str),
}

fn required(value: Option<&String>, field: &'static str) -> Result<String, ConversionError> {
    value
        .filter(|v| !v.is_empty())
        .cloned()
        .ok_or(ConversionError::MissingField(field))
}

/// Milliseconds since the epoch of a Kubernetes timestamp (`None` before the epoch).
pub fn time_ms(time: &Time) -> Option<TimeMs> {
    TimeMs::try_from(time.0.as_millisecond()).ok()
}

fn owner_ref(refs: Option<&Vec<OwnerReference>>) -> Option<OwnerRef> {
    // The intents-operator follows the first owner reference, not necessarily the controller.
    refs.and_then(|r| r.first()).map(|r| OwnerRef {
        api_version: r.api_version.clone(),
        kind: r.kind.clone(),
        name: r.name.clone(),
        uid: r.uid.clone(),
    })
}

fn parse_ips<'a>(values: impl IntoIterator<Item = &'a String>) -> Vec<IpAddr> {
    let mut ips: Vec<IpAddr> = values.into_iter().filter_map(|v| v.parse().ok()).collect();
    ips.sort();
    ips.dedup();
    ips
}

fn protocol(value: Option<&String>) -> Option<Protocol> {
    match value.map_or("TCP", String::as_str) {
        "TCP" => Some(Protocol::Tcp),
        "UDP" => Some(Protocol::Udp),
        _ => None,
    }
}

fn port_name(name: Option<&String>) -> Option<String> {
    name.filter(|n| !n.is_empty()).cloned()
}

impl TryFrom<&Pod> for PodInfo {
    type Error = ConversionError;

    fn try_from(pod: &Pod) -> Result<Self, Self::Error> {
        let meta = &pod.metadata;
        let spec = pod.spec.as_ref();
        let status = pod.status.as_ref();
        let annotations = meta.annotations.as_ref();
        let annotation = |key: &str| annotations.and_then(|a| a.get(key)).cloned();
        let mut ips = status
            .and_then(|s| s.pod_ips.as_ref())
            .map(|ips| parse_ips(ips.iter().map(|p| &p.ip)))
            .unwrap_or_default();
        if ips.is_empty() {
            ips = parse_ips(status.and_then(|s| s.pod_ip.as_ref()));
        }
        let sandbox_ready = status
            .and_then(|s| s.conditions.as_ref())
            .and_then(|cs| {
                cs.iter()
                    .find(|c| c.type_ == POD_READY_TO_START_CONTAINERS && c.status == "True")
            })
            .and_then(|c| c.last_transition_time.as_ref());
        let ips_since = sandbox_ready
            .or_else(|| status.and_then(|s| s.start_time.as_ref()))
            .or(meta.creation_timestamp.as_ref());
        let phase = status.and_then(|s| s.phase.as_deref());
        Ok(PodInfo {
            uid: required(meta.uid.as_ref(), "metadata.uid")?,
            namespace: required(meta.namespace.as_ref(), "metadata.namespace")?,
            name: required(meta.name.as_ref(), "metadata.name")?,
            ips,
            host_network: spec.and_then(|s| s.host_network).unwrap_or(false),
            node_name: spec.and_then(|s| s.node_name.clone()),
            owner: owner_ref(meta.owner_references.as_ref()),
            workload_name_annotation: annotation(WORKLOAD_NAME_ANNOTATION)
                .or_else(|| annotation(DEPRECATED_SERVICE_NAME_ANNOTATION)),
            ips_since_ms: ips_since.and_then(time_ms),
            terminated: matches!(phase, Some("Succeeded" | "Failed")),
        })
    }
}

impl OwnerMeta {
    /// From the metadata of an object of `kind` (metadata-only watches report the kind
    /// `PartialObjectMetadata`, so the kind comes from the watched type).
    pub fn from_object_meta(kind: &str, meta: &ObjectMeta) -> Result<Self, ConversionError> {
        Ok(OwnerMeta {
            uid: required(meta.uid.as_ref(), "metadata.uid")?,
            kind: kind.to_string(),
            name: required(meta.name.as_ref(), "metadata.name")?,
            namespace: required(meta.namespace.as_ref(), "metadata.namespace")?,
            owner: owner_ref(meta.owner_references.as_ref()),
        })
    }

    /// From any namespaced object of a static type, including `PartialObjectMeta<K>`.
    pub fn from_resource<R: Resource<DynamicType = ()>>(obj: &R) -> Result<Self, ConversionError> {
        Self::from_object_meta(&R::kind(&()), obj.meta())
    }
}

impl TryFrom<&Service> for ServiceInfo {
    type Error = ConversionError;

    fn try_from(svc: &Service) -> Result<Self, Self::Error> {
        let meta = &svc.metadata;
        let spec = svc.spec.as_ref();
        let mut cluster_ips = spec
            .and_then(|s| s.cluster_ips.as_ref())
            .map(parse_ips)
            .unwrap_or_default();
        if cluster_ips.is_empty() {
            // "None" (headless) and "" do not parse, so they leave the list empty.
            cluster_ips = parse_ips(spec.and_then(|s| s.cluster_ip.as_ref()));
        }
        let mut ports: Vec<ServicePortInfo> = spec
            .and_then(|s| s.ports.as_ref())
            .into_iter()
            .flatten()
            .filter_map(|p| {
                Some(ServicePortInfo {
                    name: port_name(p.name.as_ref()),
                    port: u16::try_from(p.port).ok()?,
                    protocol: protocol(p.protocol.as_ref())?,
                })
            })
            .collect();
        ports.sort();
        Ok(ServiceInfo {
            namespace: required(meta.namespace.as_ref(), "metadata.namespace")?,
            name: required(meta.name.as_ref(), "metadata.name")?,
            cluster_ips,
            ports,
            created_ms: meta.creation_timestamp.as_ref().and_then(time_ms),
            created_while_watched: false,
        })
    }
}

impl TryFrom<&EndpointSlice> for EndpointSliceInfo {
    type Error = ConversionError;

    fn try_from(slice: &EndpointSlice) -> Result<Self, Self::Error> {
        let meta = &slice.metadata;
        let endpoints = slice
            .endpoints
            .iter()
            .flatten()
            .map(|e| {
                let conditions = e.conditions.as_ref();
                let ready = conditions.and_then(|c| c.ready).unwrap_or(true);
                let serving = conditions.and_then(|c| c.serving).unwrap_or(ready);
                let pod_ref = e
                    .target_ref
                    .as_ref()
                    .filter(|r| r.kind.as_deref() == Some("Pod"));
                EndpointInfo {
                    addresses: parse_ips(&e.addresses),
                    serving: ready || serving,
                    pod_uid: pod_ref.and_then(|r| r.uid.clone()),
                    pod_name: pod_ref.and_then(|r| r.name.clone()),
                }
            })
            .collect();
        let mut ports: Vec<EndpointPortInfo> = slice
            .ports
            .iter()
            .flatten()
            .filter_map(|p| {
                Some(EndpointPortInfo {
                    name: port_name(p.name.as_ref()),
                    port: p.port.and_then(|port| u16::try_from(port).ok()),
                    protocol: protocol(p.protocol.as_ref())?,
                })
            })
            .collect();
        ports.sort();
        Ok(EndpointSliceInfo {
            namespace: required(meta.namespace.as_ref(), "metadata.namespace")?,
            name: required(meta.name.as_ref(), "metadata.name")?,
            service_name: meta
                .labels
                .as_ref()
                .and_then(|l| l.get(SERVICE_NAME_LABEL))
                .cloned(),
            endpoints,
            ports,
        })
    }
}

impl TryFrom<&Node> for NodeInfo {
    type Error = ConversionError;

    fn try_from(node: &Node) -> Result<Self, Self::Error> {
        let meta = &node.metadata;
        let ips = parse_ips(
            node.status
                .as_ref()
                .and_then(|s| s.addresses.as_ref())
                .into_iter()
                .flatten()
                .filter(|a| a.type_ == "InternalIP" || a.type_ == "ExternalIP")
                .map(|a| &a.address),
        );
        let spec = node.spec.as_ref();
        let mut cidrs: Vec<&String> = spec
            .and_then(|s| s.pod_cidrs.as_ref())
            .into_iter()
            .flatten()
            .collect();
        cidrs.extend(spec.and_then(|s| s.pod_cidr.as_ref()));
        let mut pod_cidrs: Vec<_> = cidrs.into_iter().filter_map(|c| c.parse().ok()).collect();
        pod_cidrs.sort();
        pod_cidrs.dedup();
        Ok(NodeInfo {
            name: required(meta.name.as_ref(), "metadata.name")?,
            ips,
            pod_cidrs,
            created_ms: meta.creation_timestamp.as_ref().and_then(time_ms),
        })
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::apps::v1::ReplicaSet;
    use kube::core::PartialObjectMeta;
    use serde_json::json;

    use super::*;

    fn from_json<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> T {
        serde_json::from_value(value).expect("valid object")
    }

    #[test]
    fn pod_conversion_keeps_ips_owner_annotation_and_sandbox_time() {
        let pod: Pod = from_json(json!({
            "metadata": {"name": "web-5d-x", "namespace": "shop", "uid": "pod-1",
                "creationTimestamp": "2025-01-01T00:00:00Z",
                "annotations": {"intents.otterize.com/service-name": "legacy",
                                "intents.otterize.com/workload-name": "checkout"},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                    "name": "web-5d", "uid": "rs-1", "controller": true}]},
            "spec": {"containers": [], "nodeName": "n1"},
            "status": {"phase": "Running", "podIP": "10.244.0.5",
                "podIPs": [{"ip": "10.244.0.5"}, {"ip": "fd00::5"}],
                "startTime": "2025-01-01T00:00:05Z",
                "conditions": [{"type": "PodReadyToStartContainers", "status": "True",
                    "lastTransitionTime": "2025-01-01T00:00:07Z"}]}
        }));
        let info = PodInfo::try_from(&pod).expect("converts");
        assert_eq!(info.uid, "pod-1");
        assert_eq!(
            info.ips,
            vec![
                "10.244.0.5".parse::<IpAddr>().expect("ip"),
                "fd00::5".parse().expect("ip")
            ]
        );
        assert_eq!(info.workload_name_annotation.as_deref(), Some("checkout"));
        assert_eq!(info.owner.as_ref().map(|o| o.uid.as_str()), Some("rs-1"));
        assert_eq!(info.node_name.as_deref(), Some("n1"));
        assert_eq!(info.ips_since_ms, Some(1_735_689_607_000));
        assert!(!info.host_network && !info.terminated);
    }

    #[test]
    fn deprecated_service_name_annotation_is_used_when_workload_name_is_absent() {
        let pod: Pod = from_json(json!({
            "metadata": {"name": "p", "namespace": "ns", "uid": "u",
                "annotations": {"intents.otterize.com/service-name": "legacy"}},
            "spec": {"containers": [], "hostNetwork": true},
            "status": {"phase": "Succeeded", "startTime": "2025-01-01T00:00:05Z"}
        }));
        let info = PodInfo::try_from(&pod).expect("converts");
        assert_eq!(info.workload_name_annotation.as_deref(), Some("legacy"));
        assert!(info.host_network && info.terminated);
        assert!(info.ips.is_empty());
        assert_eq!(info.ips_since_ms, Some(1_735_689_605_000));
    }

    #[test]
    fn objects_without_identity_are_refused() {
        let pod: Pod = from_json(json!({"metadata": {"name": "p", "namespace": "ns"}}));
        assert_eq!(
            PodInfo::try_from(&pod),
            Err(ConversionError::MissingField("metadata.uid"))
        );
    }

    #[test]
    fn owner_meta_takes_its_kind_from_the_watched_type() {
        let rs: PartialObjectMeta<ReplicaSet> = from_json(json!({
            "apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata",
            "metadata": {"name": "web-5d", "namespace": "shop", "uid": "rs-1",
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment",
                    "name": "web", "uid": "d-1"}]}
        }));
        let meta = OwnerMeta::from_resource(&rs).expect("converts");
        assert_eq!(meta.kind, "ReplicaSet");
        assert_eq!(meta.owner.map(|o| o.kind), Some("Deployment".to_string()));
    }

    #[test]
    fn headless_service_has_no_cluster_ips_and_sctp_ports_are_skipped() {
        let svc: Service = from_json(json!({
            "metadata": {"name": "db", "namespace": "shop"},
            "spec": {"clusterIP": "None", "clusterIPs": ["None"], "ports": [
                {"port": 5432, "name": "pg"}, {"port": 53, "protocol": "UDP"},
                {"port": 9, "protocol": "SCTP"}]}
        }));
        let info = ServiceInfo::try_from(&svc).expect("converts");
        assert!(info.cluster_ips.is_empty());
        assert_eq!(info.ports.len(), 2);
        let pg = info.ports.iter().find(|p| p.port == 5432).expect("pg port");
        assert_eq!(
            (pg.protocol, pg.name.as_deref()),
            (Protocol::Tcp, Some("pg"))
        );
        let dns = info.ports.iter().find(|p| p.port == 53).expect("dns port");
        assert_eq!((dns.protocol, dns.name.as_deref()), (Protocol::Udp, None));
    }

    #[test]
    fn endpoint_slice_conversion_reads_pod_refs_and_serving_state() {
        let slice: EndpointSlice = from_json(json!({
            "addressType": "IPv4",
            "metadata": {"name": "web-abc", "namespace": "shop",
                "labels": {"kubernetes.io/service-name": "web"}},
            "endpoints": [
                {"addresses": ["10.244.0.5"], "conditions": {"ready": true},
                 "targetRef": {"kind": "Pod", "name": "web-1", "uid": "pod-1"}},
                {"addresses": ["10.244.0.6"],
                 "conditions": {"ready": false, "serving": true, "terminating": true}},
                {"addresses": ["10.244.0.7"], "conditions": {"ready": false, "serving": false}}],
            "ports": [{"name": "", "port": 8080, "protocol": "TCP"}]
        }));
        let info = EndpointSliceInfo::try_from(&slice).expect("converts");
        assert_eq!(info.service_name.as_deref(), Some("web"));
        let serving: Vec<bool> = info.endpoints.iter().map(|e| e.serving).collect();
        assert_eq!(serving, vec![true, true, false]);
        assert_eq!(info.endpoints[0].pod_uid.as_deref(), Some("pod-1"));
        assert_eq!(info.ports[0].name, None);
        assert_eq!(info.ports[0].port, Some(8080));
    }

    #[test]
    fn node_conversion_keeps_internal_and_external_ips_and_pod_cidrs() {
        let node: Node = from_json(json!({
            "metadata": {"name": "n1"},
            "spec": {"podCIDR": "10.244.0.0/24", "podCIDRs": ["10.244.0.0/24", "fd00:1::/64"]},
            "status": {"addresses": [{"type": "InternalIP", "address": "192.168.1.10"},
                {"type": "Hostname", "address": "n1"},
                {"type": "ExternalIP", "address": "203.0.113.10"}]}
        }));
        let info = NodeInfo::try_from(&node).expect("converts");
        assert_eq!(info.ips.len(), 2);
        assert_eq!(info.pod_cidrs.len(), 2);
    }
}
