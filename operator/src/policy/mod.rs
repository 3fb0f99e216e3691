//! The map as network policy that enforcement engines apply: what the cluster must tell about
//! its workloads ([`inventory`]), what the policies must allow whatever the engine
//! ([`allowed`]), its renderings as Kubernetes NetworkPolicy ([`networkpolicy`]) and as
//! CiliumNetworkPolicy ([`cilium`]), NetworkPolicy's semantics over a call ([`evaluate`]), and
//! the observed calls that the cluster's policies would block ([`blocked`]).
//! Pure: the CLI gathers the inventory and writes the files.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::Timestamp;
use trafficmap_api::naming::client_intents_name;

use inventory::WorkloadKey;

pub mod allowed;
pub mod blocked;
pub mod calls;
pub mod cilium;
pub mod evaluate;
pub mod inventory;
pub mod networkpolicy;

#[cfg(test)]
mod tests;

/// One drafted policy object, and since when the calls it allows have been observed.
#[derive(Clone, Debug, PartialEq)]
pub struct Drafted<P> {
    /// The object.
    pub policy: P,
    /// The first observation of the calls it allows.
    pub since: Option<Timestamp>,
}

/// The policies of every workload, and what could not be expressed.
#[derive(Clone, Debug, PartialEq)]
pub struct Rendered<P> {
    /// Per workload, its egress and/or ingress policy (sorted by workload, egress first).
    pub policies: BTreeMap<WorkloadKey, Vec<Drafted<P>>>,
    /// One line per policy left out, saying why.
    pub notes: Vec<String>,
}

impl<P> Default for Rendered<P> {
    fn default() -> Self {
        Rendered {
            policies: BTreeMap::new(),
            notes: Vec::new(),
        }
    }
}

/// Name and namespace of `workload`'s policy for `direction` (`egress`, `ingress`):
/// `trafficmap-<workload>-<direction>` in its namespace, with no label or owner of ours.
pub fn metadata(workload: &WorkloadKey, direction: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(client_intents_name(&format!(
            "trafficmap-{}-{direction}",
            workload.name
        ))),
        namespace: Some(workload.namespace.clone()),
        ..ObjectMeta::default()
    }
}
