//! What the watchers tell the engine about the cluster.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use trafficmap_api::observed::WorkloadRef;

use crate::resolve::{EndpointSliceInfo, NodeInfo, OwnerMeta, PodInfo, ServiceInfo, TimeMs};

/// A change in the cluster, as the watchers report it.
#[derive(Clone, Debug)]
pub enum ClusterEvent {
    /// A pod was added or changed.
    PodApplied(PodInfo),
    /// A pod is gone (by UID).
    PodDeleted(String),
    /// An owner object was added or changed.
    OwnerApplied(OwnerMeta),
    /// An owner object is gone (by UID).
    OwnerDeleted(String),
    /// A Service was added or changed.
    ServiceApplied(ServiceInfo),
    /// A Service is gone.
    ServiceDeleted {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
    },
    /// An EndpointSlice was added or changed.
    SliceApplied(EndpointSliceInfo),
    /// An EndpointSlice is gone.
    SliceDeleted {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
    },
    /// A node was added or changed.
    NodeApplied(NodeInfo),
    /// A node is gone (by name).
    NodeDeleted(String),
    /// Someone deleted an ObservedTraffic (`kubectl trafficmap reset`): forget that client.
    ObservedTrafficDeleted(WorkloadRef),
    /// The audit's `WouldBeBlocked` condition of a client changed: its status carries it from
    /// now on (see [`crate::reconcile::audit`]).
    Audited {
        /// The client.
        client: WorkloadRef,
        /// The condition to write.
        condition: Condition,
    },
}

/// A cluster event with the time it arrived.
#[derive(Clone, Debug)]
pub struct Stamped {
    /// The event.
    pub event: ClusterEvent,
    /// Arrival time, ms since the epoch.
    pub at_ms: TimeMs,
}
