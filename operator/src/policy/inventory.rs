//! What rendering the map as network policy needs to know about the cluster, beyond
//! ObservedTraffic: how to select each workload's pods, which pod port each Service port leads
//! to, where cluster DNS runs, and the node and API server addresses. Plain data: the CLI fills
//! it from the API server ([`crate::cli::cluster`]), tests build it by hand.

use std::collections::BTreeMap;
use std::net::IpAddr;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use trafficmap_api::observed::Protocol;

/// A workload by namespace and name (as ObservedTraffic names it).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WorkloadKey {
    /// Namespace.
    pub namespace: String,
    /// Workload name.
    pub name: String,
}

impl WorkloadKey {
    /// The key of `name` in `namespace`.
    pub fn new(namespace: &str, name: &str) -> Self {
        WorkloadKey {
            namespace: namespace.to_string(),
            name: name.to_string(),
        }
    }
}

/// How to reach a workload's pods.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct WorkloadPods {
    /// Selects its pods (and no other workload's) in its namespace.
    pub selector: LabelSelector,
    /// Its pods run in the node's network namespace: policies cannot select them, and their
    /// traffic comes from and goes to node addresses.
    pub host_network: bool,
    /// The labels its pods carry (its pod template's).
    pub labels: BTreeMap<String, String>,
    /// Its containers' named ports.
    pub named_ports: BTreeMap<String, (u16, Protocol)>,
}

/// One port of a Service.
#[derive(Clone, Debug, PartialEq)]
pub struct ServicePort {
    /// The Service port clients connect to.
    pub port: u16,
    /// Its protocol.
    pub protocol: Protocol,
    /// The pod port it leads to (a number or a container port's name).
    pub target: IntOrString,
}

/// A Service, as far as ports and backends go.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ServiceInfo {
    /// Headless: clients connect to pod IPs, on pod ports.
    pub headless: bool,
    /// Its ports.
    pub ports: Vec<ServicePort>,
    /// Its pod selector; empty when it has none (its endpoints are written by hand).
    pub selector: BTreeMap<String, String>,
}

/// Everything rendering needs; see the module docs.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Inventory {
    /// Workloads whose pods can be selected.
    pub workloads: BTreeMap<WorkloadKey, WorkloadPods>,
    /// Services of the namespaces involved, by namespace and name.
    pub services: BTreeMap<WorkloadKey, ServiceInfo>,
    /// The cluster DNS pods: namespace and selector (from the cluster DNS Service).
    pub cluster_dns: Option<(String, LabelSelector)>,
    /// Addresses of the nodes (where hostNetwork pods and node targets live).
    pub node_ips: Vec<IpAddr>,
    /// Endpoints of `default/kubernetes`: the API server's addresses and port.
    pub api_server: Vec<(IpAddr, u16)>,
    /// Labels of the namespaces involved.
    pub namespace_labels: BTreeMap<String, BTreeMap<String, String>>,
}

impl Inventory {
    /// The pod ports that calls observed on `port` through Service `service` (in `namespace`)
    /// reach: the Service's target port when `port` is one of its ports (and `port` itself, in
    /// case some calls went to a pod IP directly), else `port`.
    pub fn pod_ports(
        &self,
        namespace: &str,
        service: Option<&str>,
        port: u16,
        protocol: Protocol,
    ) -> Vec<IntOrString> {
        let mut out = vec![IntOrString::Int(i32::from(port))];
        let info = service.and_then(|s| self.services.get(&WorkloadKey::new(namespace, s)));
        if let Some(info) = info.filter(|i| !i.headless) {
            for p in &info.ports {
                if p.port == port && p.protocol == protocol && !out.contains(&p.target) {
                    out.push(p.target.clone());
                }
            }
        }
        out
    }
}

/// How to select the pods of a workload object of `kind` (as JSON): its controller's selector
/// (Deployment, StatefulSet, DaemonSet, ReplicaSet, Job), its pod template's labels (CronJob,
/// whose Jobs get selectors of their own), or its own labels (Pod); `None` when that selects
/// nothing (no labels) or the kind is not one of these.
pub fn pods_of_object(kind: &str, object: &serde_json::Value) -> Option<WorkloadPods> {
    let labels_selector = |labels: &serde_json::Value| {
        serde_json::from_value::<BTreeMap<String, String>>(labels.clone())
            .ok()
            .filter(|l| !l.is_empty())
            .map(|l| LabelSelector {
                match_labels: Some(l),
                match_expressions: None,
            })
    };
    let spec = &object["spec"];
    let (selector, pod_meta, pod_spec) = match kind {
        "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" | "Job" => (
            serde_json::from_value::<LabelSelector>(spec["selector"].clone()).ok(),
            &spec["template"]["metadata"],
            &spec["template"]["spec"],
        ),
        "CronJob" => {
            let template = &spec["jobTemplate"]["spec"]["template"];
            (
                labels_selector(&template["metadata"]["labels"]),
                &template["metadata"],
                &template["spec"],
            )
        }
        "Pod" => (
            labels_selector(&object["metadata"]["labels"]),
            &object["metadata"],
            spec,
        ),
        _ => return None,
    };
    let labels = serde_json::from_value(pod_meta["labels"].clone()).unwrap_or_default();
    let named_ports = pod_spec["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|c| c["ports"].as_array().into_iter().flatten())
        .filter_map(|p| {
            let name = p["name"].as_str()?;
            let port = u16::try_from(p["containerPort"].as_u64()?).ok()?;
            let protocol = match p["protocol"].as_str().unwrap_or("TCP") {
                "TCP" => Protocol::Tcp,
                "UDP" => Protocol::Udp,
                _ => return None,
            };
            Some((name.to_string(), (port, protocol)))
        })
        .collect();
    let selector = selector.filter(|s| {
        s.match_labels.as_ref().is_some_and(|l| !l.is_empty())
            || s.match_expressions.as_ref().is_some_and(|e| !e.is_empty())
    })?;
    Some(WorkloadPods {
        selector,
        host_network: pod_spec["hostNetwork"].as_bool().unwrap_or(false),
        labels,
        named_ports,
    })
}
