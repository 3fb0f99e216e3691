//! Resolution of sniffer observations to workloads: pure, event-fed, no I/O.
//!
//! The watchers convert Kubernetes objects to slim inputs ([`inputs`], [`convert`]) and feed
//! them to an [`Index`] with `apply_*` / `delete_*`, stamped with the time they arrived. Ingest
//! asks the index to resolve each observation *at the observation's own time*
//! ([`Index::resolve_observation`], or [`Index::resolve_client`] and [`Index::resolve_target`]),
//! parks what is not resolvable yet in a [`PendingQueue`], and folds resolved edges into a
//! [`TrafficMap`] that converts to and from `ObservedTraffic` status.
//!
//! The map becomes network policy, so every rule prefers "don't know" over a guess: ambiguous
//! IPs are dropped, unknown owners wait, and a Service whose backends span several workloads
//! (or are not fully known) stays a Service.

pub mod aggregate;
pub mod cidr;
pub mod client;
pub mod convert;
pub mod dns_names;
pub mod handover;
pub mod inputs;
pub mod ip_history;
pub mod naming;
pub mod nodes;
pub mod observe;
pub mod owners;
pub mod pending;
pub mod pods;
pub mod services;
pub mod shared;
pub mod target;

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::fmt;
use std::net::IpAddr;

use trafficmap_api::observed::WorkloadRef;
use trafficmap_api::report::{ClientId, DnsObservation};

use crate::fast_hash::FastMap;

pub use aggregate::{Change, ClientEdges, EdgeTarget, ObservedEdge, TargetKey, TrafficMap};
pub use cidr::IpCidr;
pub use client::ClientResolution;
pub use inputs::{EndpointSliceInfo, NodeInfo, OwnerMeta, OwnerRef, PodInfo, ServiceInfo};
pub use naming::{MissingOwner, NamingError};
pub use observe::{ObservationOutcome, SkipReason};
pub use owners::GroupKind;
pub use pending::PendingQueue;
pub use shared::Shared;
pub use target::TargetResolution;

use dns_names::DnsAnswers;
use nodes::NodeIndex;
use owners::OwnerIndex;
use pods::{PodKey, PodStore};
use services::{ServiceIndex, ServiceTiming};
use shared::Interner;

/// Milliseconds since the Unix epoch.
pub type TimeMs = u64;

/// How long released IPs, deleted objects and DNS answers are remembered.
pub const DEFAULT_RETENTION_MS: u64 = 10 * 60 * 1_000;
/// Clock disagreement tolerated at IP handovers (node clocks, one-second API timestamps).
pub const DEFAULT_CLOCK_GUARD_MS: u64 = 2_000;
/// How far EndpointSlice changes may lag the pod changes behind them.
pub const DEFAULT_BACKEND_SLACK_MS: u64 = 5_000;
/// How long after an observation the watches get to report changes before it is resolved.
pub const DEFAULT_SETTLE_MS: u64 = 3_000;
/// How long after its TTL a DNS answer still names the IPs it returned.
pub const DEFAULT_DNS_ANSWER_SLACK_MS: u64 = 2 * 60 * 1_000;

/// The time span over which an observation was seen (`firstSeenMs..=lastSeenMs`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SeenRange {
    /// First time seen.
    pub first_ms: TimeMs,
    /// Last time seen, not before `first_ms`.
    pub last_ms: TimeMs,
}

impl SeenRange {
    /// A range; `None` when `first_ms` is after `last_ms`.
    pub fn new(first_ms: TimeMs, last_ms: TimeMs) -> Option<Self> {
        (first_ms <= last_ms).then_some(SeenRange { first_ms, last_ms })
    }

    /// A single moment.
    pub fn at(t_ms: TimeMs) -> Self {
        SeenRange {
            first_ms: t_ms,
            last_ms: t_ms,
        }
    }
}

/// A workload, shared (see [`shared`]).
pub type Workload = Shared<WorkloadRef>;

impl Workload {
    /// A workload of its own (the index hands out shared ones).
    pub fn new(name: WorkloadRef) -> Self {
        Shared::share(name)
    }
}

/// A Service by namespace and name, shared (see [`shared`]).
pub type ServiceKey = Shared<ServiceName>;

impl ServiceKey {
    /// A Service key of its own (the Service index hands out shared ones).
    pub fn new(namespace: &str, name: &str) -> Self {
        Shared::share(ServiceName {
            namespace: namespace.to_string(),
            name: name.to_string(),
        })
    }
}

/// A Service's namespace and name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServiceName {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
}

impl fmt::Display for ServiceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// One try at resolving: `now_ms` is the operator's clock; the last try (after the pending
/// deadline) gives final answers instead of waiting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Attempt {
    /// Current time.
    pub now_ms: TimeMs,
    /// Whether this is the last try.
    pub last: bool,
}

impl Attempt {
    /// A try that may answer "pending".
    pub fn retryable(now_ms: TimeMs) -> Self {
        Attempt {
            now_ms,
            last: false,
        }
    }

    /// The last try: unknown owners are roots, unknown IPs and pods are dropped.
    pub fn last(now_ms: TimeMs) -> Self {
        Attempt { now_ms, last: true }
    }
}

/// Why something cannot be resolved yet; the caller retries until its deadline.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PendingReason {
    /// The watches may not have reported changes up to the observation's time yet.
    Settling,
    /// An IP in a cluster range that no known pod or Service held then.
    UnknownIp(IpAddr),
    /// A pod UID (from the sniffer or an endpoint) not seen yet.
    UnknownPod(String),
    /// An owner in a pod's chain not seen yet.
    UnknownOwner(NamingError),
    /// No EndpointSlice of the Service seen yet.
    UnknownBackends(ServiceKey),
}

/// Why an observation (or one of its targets) is dropped for good.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// More than one holder may have had the IP then; guessing could open a hole.
    AmbiguousIp(IpAddr),
    /// The observation is older than the retained history.
    Expired,
    /// A ClusterIP call on a port the Service does not expose.
    NoSuchServicePort(ServiceKey, u16),
    /// The client IP is outside the cluster's pod ranges and not a node.
    NotInCluster(IpAddr),
    /// The owner chain cannot be named (too long or cyclic).
    Unnamable(NamingError),
    /// Still unresolvable on the last attempt.
    Unresolved(PendingReason),
}

/// Cluster facts and timing for an [`Index`].
#[derive(Clone, Debug)]
pub struct ResolveConfig {
    /// Cluster DNS domain.
    pub cluster_domain: String,
    /// Pod ranges (node `spec.podCIDRs` are added automatically).
    pub pod_cidrs: Vec<IpCidr>,
    /// Service ClusterIP ranges.
    pub service_cidrs: Vec<IpCidr>,
    /// The cluster DNS Service; calls to it are not targets.
    pub cluster_dns: ServiceKey,
    /// The API server Service.
    pub api_server: ServiceKey,
    /// Namespaces whose workloads are never mapped as clients (they may still be targets).
    pub excluded_namespaces: BTreeSet<String>,
    /// Owner kinds that are watched and walked through.
    pub owner_kinds: Vec<GroupKind>,
    /// See [`DEFAULT_RETENTION_MS`].
    pub retention_ms: u64,
    /// See [`DEFAULT_CLOCK_GUARD_MS`].
    pub clock_guard_ms: u64,
    /// See [`DEFAULT_BACKEND_SLACK_MS`].
    pub backend_slack_ms: u64,
    /// See [`DEFAULT_SETTLE_MS`].
    pub settle_ms: u64,
    /// See [`DEFAULT_DNS_ANSWER_SLACK_MS`].
    pub dns_answer_slack_ms: u64,
    /// Most DNS answers remembered (see [`dns_names::DEFAULT_MAX_DNS_ANSWERS`]).
    pub max_dns_answers: usize,
}

impl Default for ResolveConfig {
    fn default() -> Self {
        ResolveConfig {
            cluster_domain: "cluster.local".into(),
            pod_cidrs: Vec::new(),
            service_cidrs: Vec::new(),
            cluster_dns: ServiceKey::new("kube-system", "kube-dns"),
            api_server: ServiceKey::new("default", "kubernetes"),
            excluded_namespaces: BTreeSet::new(),
            owner_kinds: owners::default_owner_kinds(),
            retention_ms: DEFAULT_RETENTION_MS,
            clock_guard_ms: DEFAULT_CLOCK_GUARD_MS,
            backend_slack_ms: DEFAULT_BACKEND_SLACK_MS,
            settle_ms: DEFAULT_SETTLE_MS,
            dns_answer_slack_ms: DEFAULT_DNS_ANSWER_SLACK_MS,
            max_dns_answers: dns_names::DEFAULT_MAX_DNS_ANSWERS,
        }
    }
}

/// Everything resolution knows about the cluster, fed by watch events.
#[derive(Clone, Debug)]
pub struct Index {
    config: ResolveConfig,
    pods: PodStore,
    owners: OwnerIndex,
    services: ServiceIndex,
    nodes: NodeIndex,
    dns: DnsAnswers,
    /// Workloads named with every owner known, by pod UID: every observation names its client
    /// and its backends, and walking their owners each time took a fifth of the engine's time.
    /// An entry goes when its pod changes; all go when an owner changes or history is
    /// forgotten.
    workloads: RefCell<FastMap<PodKey, Workload>>,
    /// The one shared [`Workload`] of each name handed out.
    interner: RefCell<Interner<WorkloadRef>>,
}

impl Index {
    /// An empty index whose watches started at `started_at_ms` (history before then is unknown).
    pub fn new(config: ResolveConfig, started_at_ms: TimeMs) -> Self {
        let (retention, guard) = (config.retention_ms, config.clock_guard_ms);
        Index {
            pods: PodStore::new(retention, guard, started_at_ms),
            owners: OwnerIndex::new(config.owner_kinds.clone(), retention),
            services: ServiceIndex::new(ServiceTiming {
                retention_ms: retention,
                guard_ms: guard,
                slack_ms: config.backend_slack_ms,
                started_at_ms,
            }),
            nodes: NodeIndex::new(retention, guard, started_at_ms),
            dns: DnsAnswers::with_capacity(
                config.dns_answer_slack_ms,
                guard,
                config.max_dns_answers,
            ),
            config,
            workloads: RefCell::default(),
            interner: RefCell::default(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &ResolveConfig {
        &self.config
    }

    /// A pod was added or changed.
    pub fn apply_pod(&mut self, pod: PodInfo, at_ms: TimeMs) {
        if let Some(key) = PodKey::new(&pod.uid) {
            self.workloads.get_mut().remove(&key);
        }
        self.pods.apply(pod, at_ms);
    }

    /// A pod was deleted.
    pub fn delete_pod(&mut self, uid: &str, at_ms: TimeMs) {
        self.pods.delete(uid, at_ms);
    }

    /// An owner (ReplicaSet, Deployment, Job, ...) was added or changed.
    pub fn apply_owner(&mut self, owner: OwnerMeta) {
        if self.owners.apply(owner) {
            self.workloads.get_mut().clear();
        }
    }

    /// An owner was deleted.
    pub fn delete_owner(&mut self, uid: &str, at_ms: TimeMs) {
        self.owners.delete(uid, at_ms);
    }

    /// A Service was added or changed.
    pub fn apply_service(&mut self, service: ServiceInfo, at_ms: TimeMs) {
        self.services.apply_service(service, at_ms);
    }

    /// A Service was deleted.
    pub fn delete_service(&mut self, namespace: &str, name: &str, at_ms: TimeMs) {
        self.services
            .delete_service(&ServiceKey::new(namespace, name), at_ms);
    }

    /// An EndpointSlice was added or changed.
    pub fn apply_endpoint_slice(&mut self, slice: EndpointSliceInfo, at_ms: TimeMs) {
        self.services.apply_slice(slice, at_ms);
    }

    /// An EndpointSlice was deleted.
    pub fn delete_endpoint_slice(&mut self, namespace: &str, name: &str, at_ms: TimeMs) {
        self.services.delete_slice(namespace, name, at_ms);
    }

    /// A node was added or changed.
    pub fn apply_node(&mut self, node: NodeInfo, at_ms: TimeMs) {
        self.nodes.apply(node, at_ms);
    }

    /// A node was deleted.
    pub fn delete_node(&mut self, name: &str, at_ms: TimeMs) {
        self.nodes.delete(name, at_ms);
    }

    /// Remembers which names a client resolved to which IPs, so its connections to those IPs
    /// carry the names. Call before resolving the DNS observation itself.
    pub fn record_dns_answers(&mut self, dns: &DnsObservation) {
        self.dns.record(dns);
    }

    /// DNS answers remembered now, and how many were forgotten early because the cache was
    /// full.
    pub fn dns_answers_held_and_evicted(&self) -> (usize, u64) {
        (self.dns.len(), self.dns.evicted())
    }

    /// Names `client` resolved to `ip` that were valid when a call over `seen` began (the
    /// `dns_names` argument of [`Index::resolve_target`]).
    pub fn dns_names_for(&self, client: &ClientId, ip: IpAddr, seen: SeenRange) -> Vec<String> {
        self.dns.names_for(client, ip, seen)
    }

    /// Forgets whatever ended more than the retention before `now_ms`.
    pub fn gc(&mut self, now_ms: TimeMs) {
        self.workloads.get_mut().clear();
        self.interner.get_mut().forget_unused();
        self.pods.gc(now_ms);
        self.owners.gc(now_ms);
        self.services.gc(now_ms);
        self.nodes.gc(now_ms);
        self.dns.gc(now_ms);
    }

    /// The shared [`Workload`] named `name`, the one resolution hands out for it.
    pub fn intern(&self, name: WorkloadRef) -> Workload {
        self.interner.borrow_mut().intern(name)
    }

    /// Whether `ip` is in a pod range (configured or announced by a node).
    pub fn is_pod_range(&self, ip: IpAddr) -> bool {
        self.config.pod_cidrs.iter().any(|c| c.contains(ip))
            || self.nodes.pod_cidrs().any(|c| c.contains(ip))
    }

    /// Whether `ip` is in a pod or Service range.
    pub fn is_cluster_range(&self, ip: IpAddr) -> bool {
        self.is_pod_range(ip) || self.config.service_cidrs.iter().any(|c| c.contains(ip))
    }

    /// Whether a retryable attempt must wait because the observation is too fresh for the watches.
    fn settling(&self, seen: SeenRange, attempt: Attempt) -> bool {
        !attempt.last && seen.last_ms.saturating_add(self.config.settle_ms) > attempt.now_ms
    }

    /// The workload of the pod `uid`, or why not (yet); `None` for an unknown pod.
    fn pod_workload(&self, uid: &str, attempt: Attempt) -> Option<Result<Workload, Unresolved>> {
        match self.remembered(uid) {
            Some(workload) => Some(Ok(workload)),
            None => self.pods.get(uid).map(|pod| self.name_pod(pod, attempt)),
        }
    }

    /// The workload of `pod`, or why not (yet).
    fn workload_of(&self, pod: &PodInfo, attempt: Attempt) -> Result<Workload, Unresolved> {
        match self.remembered(&pod.uid) {
            Some(workload) => Ok(workload),
            None => self.name_pod(pod, attempt),
        }
    }

    /// The workload remembered for the pod `uid`.
    fn remembered(&self, uid: &str) -> Option<Workload> {
        let key = PodKey::new(uid)?;
        self.workloads.borrow().get(&key).cloned()
    }

    /// Walks `pod`'s owners. Only names found with every owner known are remembered: on a last
    /// attempt a missing owner is taken as the root, for this once.
    fn name_pod(&self, pod: &PodInfo, attempt: Attempt) -> Result<Workload, Unresolved> {
        let named = match naming::workload_for_pod(pod, &self.owners, MissingOwner::Wait) {
            Err(NamingError::OwnerNotKnown { .. }) if attempt.last => {
                naming::workload_for_pod(pod, &self.owners, MissingOwner::IsRoot)
                    .map(|name| self.intern(name))
            }
            Ok(name) => {
                let workload = self.intern(name);
                if let Some(key) = PodKey::new(&pod.uid) {
                    self.workloads.borrow_mut().insert(key, workload.clone());
                }
                Ok(workload)
            }
            Err(err) => Err(err),
        };
        named.map_err(|e| match e {
            NamingError::OwnerNotKnown { .. } => {
                Unresolved::Pending(PendingReason::UnknownOwner(e))
            }
            NamingError::ChainTooLong { .. } => Unresolved::Dropped(DropReason::Unnamable(e)),
        })
    }
}

/// Why one step of resolution did not produce an answer.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Unresolved {
    Pending(PendingReason),
    Dropped(DropReason),
}

impl Unresolved {
    /// Pending on a retryable attempt, dropped as unresolved on the last.
    fn wait(reason: PendingReason, attempt: Attempt) -> Self {
        if attempt.last {
            Unresolved::Dropped(DropReason::Unresolved(reason))
        } else {
            Unresolved::Pending(reason)
        }
    }
}

#[cfg(test)]
pub(crate) mod fixtures;
#[cfg(test)]
mod tests;
