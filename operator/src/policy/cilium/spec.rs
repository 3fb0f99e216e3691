//! The fields of `cilium.io/v2` `CiliumNetworkPolicy` that trafficmap writes, and only those,
//! as Cilium's published CRD names them (`third_party/cilium/ciliumnetworkpolicies.yaml`).
//! Serialize only: these types never read a policy back, so nothing is dropped unseen.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use serde::Serialize;

/// `apiVersion` of CiliumNetworkPolicy.
pub const API_VERSION: &str = "cilium.io/v2";
/// `kind` of CiliumNetworkPolicy.
pub const KIND: &str = "CiliumNetworkPolicy";

/// A CiliumNetworkPolicy: one rule, in `spec`.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CiliumNetworkPolicy {
    /// Always [`API_VERSION`].
    pub api_version: String,
    /// Always [`KIND`].
    pub kind: String,
    /// Name and namespace.
    pub metadata: ObjectMeta,
    /// The rule.
    pub spec: Rule,
}

/// A rule: the endpoints it selects, and what they may receive and send. An endpoint selected
/// by a rule with `ingress` (`egress`) rules is denied any other ingress (egress).
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Rule {
    /// The pods the rule applies to, in the policy's namespace.
    pub endpoint_selector: LabelSelector,
    /// What they may receive.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ingress: Vec<IngressRule>,
    /// What they may send.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub egress: Vec<EgressRule>,
}

/// One allowed destination (exactly one of the `to*` peers, or none for any destination) on
/// `toPorts` (every port when empty).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EgressRule {
    /// Pods by labels; without a namespace label, the policy's namespace.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub to_endpoints: Vec<LabelSelector>,
    /// Classes of peers without pod labels (nodes, the API server).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub to_entities: Vec<Entity>,
    /// Addresses outside the cluster.
    #[serde(rename = "toCIDR", skip_serializing_if = "Vec::is_empty")]
    pub to_cidr: Vec<String>,
    /// The addresses Cilium's DNS proxy saw returned for these names.
    #[serde(rename = "toFQDNs", skip_serializing_if = "Vec::is_empty")]
    pub to_fqdns: Vec<FqdnSelector>,
    /// Destination ports.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub to_ports: Vec<PortRule>,
}

/// One allowed source (exactly one of the `from*` peers) on `toPorts` (every port when empty).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct IngressRule {
    /// Pods by labels; without a namespace label, the policy's namespace.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub from_endpoints: Vec<LabelSelector>,
    /// Classes of peers without pod labels (nodes).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub from_entities: Vec<Entity>,
    /// Destination ports on the selected pods.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub to_ports: Vec<PortRule>,
}

/// Peers Cilium knows without labels of theirs (the ones trafficmap writes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Entity {
    /// The local node, host-network pods on it included.
    Host,
    /// Every other node, host-network pods on them included.
    RemoteNode,
    /// The Kubernetes API server, in or outside the cluster.
    KubeApiserver,
}

/// A DNS name, matched exactly (a final `.` is implied).
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FqdnSelector {
    /// The name.
    pub match_name: String,
}

/// Ports (at most [`MAX_PORTS`]), with optional layer-7 rules that also apply.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PortRule {
    /// The ports.
    pub ports: Vec<PortProtocol>,
    /// Layer-7 rules on them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rules: Option<L7Rules>,
}

/// Most ports one [`PortRule`] may hold.
pub const MAX_PORTS: usize = 40;

/// A port number or a container port's name, and its protocol.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PortProtocol {
    /// `"8080"` or `"http"`.
    pub port: String,
    /// `TCP` or `UDP`.
    pub protocol: String,
}

/// Layer-7 rules (the DNS ones only).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct L7Rules {
    /// The DNS lookups allowed; their answers feed `toFQDNs`.
    pub dns: Vec<DnsRule>,
}

/// A DNS lookup pattern.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DnsRule {
    /// `*` allows every name.
    pub match_pattern: String,
}
