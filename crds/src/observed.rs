//! `ObservedTraffic` (`trafficmap.io/v1alpha1`): the calls one client workload was seen making.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The client workload an `ObservedTraffic` object describes.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[kube(
    group = "trafficmap.io",
    version = "v1alpha1",
    kind = "ObservedTraffic",
    plural = "observedtraffics",
    singular = "observedtraffic",
    shortname = "ot",
    category = "trafficmap",
    status = "ObservedTrafficStatus",
    printcolumn = r#"{"name":"Client","type":"string","jsonPath":".spec.client.name"}"#,
    printcolumn = r#"{"name":"Namespace","type":"string","jsonPath":".spec.client.namespace"}"#,
    printcolumn = r#"{"name":"Kind","type":"string","jsonPath":".spec.client.kind"}"#,
    printcolumn = r#"{"name":"Targets","type":"integer","jsonPath":".status.targetCount"}"#,
    printcolumn = r#"{"name":"Last Seen","type":"date","jsonPath":".status.lastSeen"}"#,
    derive = "PartialEq"
)]
#[serde(rename_all = "camelCase")]
pub struct ObservedTrafficSpec {
    /// The workload that made the calls.
    pub client: WorkloadRef,
}

/// A workload as the Otterize intents-operator names it: the root owner of its pods (or the
/// `intents.otterize.com/workload-name` annotation), its namespace and the root owner's kind.
#[derive(
    Serialize, Deserialize, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, JsonSchema,
)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadRef {
    /// Workload name, with dots replaced by `_`.
    pub name: String,
    /// Namespace of the workload.
    pub namespace: String,
    /// Kind of the root owner (Deployment, StatefulSet, DaemonSet, CronJob, Job, Pod, ...);
    /// empty for workloads named by the `intents.otterize.com/workload-name` annotation, as the
    /// intents-operator leaves their kind unset.
    pub kind: String,
}

/// What was observed for one client workload.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ObservedTrafficStatus {
    /// In-cluster targets, sorted by namespace, name and kind.
    #[serde(default)]
    pub targets: Vec<ObservedTarget>,
    /// Targets outside the cluster, sorted by DNS name, then IP.
    #[serde(default)]
    pub internet_targets: Vec<InternetTarget>,
    /// Number of targets, in-cluster and internet (for `kubectl get`).
    #[serde(default)]
    pub target_count: u32,
    /// Latest `lastSeen` of all targets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen: Option<Time>,
    /// When this workload's ClientIntents were not created by trafficmap: the observed targets
    /// (`name.namespace`, or `internet:<name or ip>`) that those intents do not allow.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub uncovered_targets: Vec<String>,
    /// Conditions, e.g. `ClientIntentsEmitted`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// One in-cluster workload that the client called.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ObservedTarget {
    /// Workload name (as [`WorkloadRef::name`]); for the API server, `kubernetes`.
    pub name: String,
    /// Namespace of the target.
    pub namespace: String,
    /// Root owner kind of the target's pods (empty when named by annotation); `Service` for the
    /// API server and for Services whose backends span several workloads; `Node` for node IPs.
    pub kind: String,
    /// The Service through which it was called, when it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// Server ports and protocols, sorted.
    #[serde(default)]
    pub ports: Vec<PortProtocol>,
    /// DNS names the client resolved to reach it, sorted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns_names: Vec<String>,
    /// How the call was seen, sorted.
    #[serde(default)]
    pub seen_by: Vec<SeenBy>,
    /// First observation.
    pub first_seen: Time,
    /// Latest observation.
    pub last_seen: Time,
}

/// A target outside the cluster: one per DNS name, or one per IP seen without a name.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InternetTarget {
    /// The DNS name resolved to reach it, if one was seen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns_name: Option<String>,
    /// IPs it was reached at (or that its name resolved to), sorted.
    #[serde(default)]
    pub ips: Vec<String>,
    /// Server ports and protocols, sorted.
    #[serde(default)]
    pub ports: Vec<PortProtocol>,
    /// How the call was seen, sorted.
    #[serde(default)]
    pub seen_by: Vec<SeenBy>,
    /// First observation.
    pub first_seen: Time,
    /// Latest observation.
    pub last_seen: Time,
}

/// A server port with its transport protocol.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, JsonSchema,
)]
pub struct PortProtocol {
    /// Server port.
    pub port: u16,
    /// Transport protocol.
    pub protocol: Protocol,
}

/// Transport protocol of a call.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, JsonSchema,
)]
#[serde(rename_all = "UPPERCASE")]
pub enum Protocol {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

/// The evidence a call was seen by.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum SeenBy {
    /// A DNS response to the client named the target.
    Dns,
    /// A TCP connection from the client to the target.
    Tcp,
    /// A connected UDP socket from the client to the target.
    Udp,
}

impl Protocol {
    /// Its name as Kubernetes writes it (`TCP`, `UDP`), the serialized form.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
        }
    }
}

impl ObservedTraffic {
    /// Builds an object for `client` with an empty status, named by [`crate::naming::observed_traffic_name`].
    pub fn for_client(client: WorkloadRef) -> Self {
        let name = crate::naming::observed_traffic_name(&client);
        ObservedTraffic::new(&name, ObservedTrafficSpec { client })
    }
}
