//! Otterize `ClientIntents` (`k8s.otterize.com/v2beta1`), the subset trafficmap drafts and reads.
//!
//! The CRD belongs to the Otterize intents-operator; trafficmap never generates it. Target kinds
//! trafficmap does not produce (kafka, sql, aws, gcp, azure) are kept as raw JSON so that
//! hand-written intents read for `diff` round-trip without loss.

use std::collections::BTreeMap;

use kube::CustomResource;
use serde::{Deserialize, Serialize};

/// Desired access of one client workload.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "k8s.otterize.com",
    version = "v2beta1",
    kind = "ClientIntents",
    plural = "clientintents",
    namespaced,
    status = "ClientIntentsStatus",
    schema = "disabled",
    derive = "PartialEq",
    derive = "Default"
)]
#[serde(rename_all = "camelCase")]
pub struct ClientIntentsSpec {
    /// The client workload.
    pub workload: Workload,
    /// What it may call.
    pub targets: Vec<Target>,
}

/// A client workload by name and, optionally, kind.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct Workload {
    /// Workload name.
    pub name: String,
    /// Root owner kind (Deployment, StatefulSet, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
}

/// One target; exactly one of the fields is set.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct Target {
    /// A Kubernetes workload (or resource of `kind`), `name` or `name.namespace`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubernetes: Option<KubernetesTarget>,
    /// A Kubernetes Service, `name` or `name.namespace` (the API server is `kubernetes.default`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<ServiceTarget>,
    /// Destinations outside the cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub internet: Option<InternetTarget>,
    /// Target types trafficmap does not draft (kafka, sql, aws, gcp, azure), kept verbatim.
    #[serde(flatten)]
    pub other: BTreeMap<String, serde_json::Value>,
}

/// A Kubernetes target.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct KubernetesTarget {
    /// `name` in the client's namespace, or `name.namespace`.
    pub name: String,
    /// Kind of the target (the root owner kind, or `Service`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// HTTP-level rules, kept when read; trafficmap drafts none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<Vec<serde_json::Value>>,
}

/// A Kubernetes Service target.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct ServiceTarget {
    /// `name` in the client's namespace, or `name.namespace`.
    pub name: String,
    /// HTTP-level rules, kept when read; trafficmap drafts none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<Vec<serde_json::Value>>,
}

/// Internet destinations.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct InternetTarget {
    /// DNS names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub domains: Vec<String>,
    /// IP addresses or CIDRs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ips: Vec<String>,
    /// Ports; empty means any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<u16>,
}

/// Status the intents-operator and network mapper maintain.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ClientIntentsStatus {
    /// Whether the intents were applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub up_to_date: Option<bool>,
    /// Last reconciled generation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// IPs that internet domains resolved to.
    #[serde(
        default,
        rename = "resolvedIPs",
        skip_serializing_if = "Option::is_none"
    )]
    pub resolved_ips: Option<Vec<ResolvedIps>>,
}

/// IPs one DNS name resolved to.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct ResolvedIps {
    /// DNS name.
    pub dns: String,
    /// IPs it resolved to.
    pub ips: Vec<String>,
}
