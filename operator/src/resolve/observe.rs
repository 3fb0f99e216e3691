//! A whole observation -> its client and the edges it adds to the map.
//!
//! - A connection is one call to `serverIp:serverPort`, carrying the names the client resolved
//!   to that IP (recorded from its DNS observations).
//! - A DNS answer is a call to each answer IP, seen by DNS, without a port: a Service name gives
//!   the Service's workload (or the Service), a headless name its pods' workloads, an internet
//!   name an internet target with that domain and its IPs.
//!
//! The observation waits (`Pending`) while its client or any of its targets is pending; dropped
//! targets (ambiguous, expired, ...) add no edge. DNS answers delivered to the cluster DNS pods
//! are the upstream lookups they make for their clients, not calls of their own: skipped.

use trafficmap_api::observed::{PortProtocol, Protocol, SeenBy, WorkloadRef};
use trafficmap_api::render::{NODE_KIND, SERVICE_KIND};
use trafficmap_api::report::{ClientId, Observation};

use super::aggregate::{EdgeTarget, ObservedEdge, TargetKey};
use super::client::ClientResolution;
use super::ip_history::Lookup;
use super::services::BackendTarget;
use super::target::TargetResolution;
use super::{Attempt, DropReason, Index, PendingReason, SeenRange, Workload};

/// What an observation amounts to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ObservationOutcome {
    /// The client and the edges to fold into its map (possibly none, e.g. cluster DNS calls).
    Edges {
        /// The calling workload.
        client: Workload,
        /// Its calls.
        edges: Vec<ObservedEdge>,
    },
    /// Not resolvable yet: queue it and retry.
    Pending(PendingReason),
    /// Nothing to record.
    Skipped(SkipReason),
}

/// Why an observation adds nothing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SkipReason {
    /// The client is a node (or a hostNetwork pod the sniffer could not identify).
    ClientIsNode(String),
    /// A DNS answer to a cluster DNS pod: its upstream lookup on behalf of other clients.
    ClusterDnsUpstream,
    /// The client, or the connection's only target, was dropped.
    Dropped(DropReason),
    /// The client's namespace is excluded (`--exclude-namespace`).
    ClientNamespaceExcluded(String),
}

impl Index {
    /// Resolves an observation at its own time. Record a DNS observation's answers with
    /// [`Index::record_dns_answers`] first (once, not on every retry).
    pub fn resolve_observation(&self, obs: &Observation, attempt: Attempt) -> ObservationOutcome {
        let (first, last) = match obs {
            Observation::Dns(d) => (d.first_seen_ms, d.last_seen_ms),
            Observation::Connection(c) => (c.first_seen_ms, c.last_seen_ms),
        };
        let seen = SeenRange {
            first_ms: first.min(last),
            last_ms: last.max(first),
        };
        if let Observation::Dns(d) = obs
            && self.is_cluster_dns_pod(&d.client, seen)
        {
            return ObservationOutcome::Skipped(SkipReason::ClusterDnsUpstream);
        }
        let client = match self.resolve_client(obs.client(), seen, attempt) {
            ClientResolution::Workload(w)
                if self.config.excluded_namespaces.contains(&w.namespace) =>
            {
                return ObservationOutcome::Skipped(SkipReason::ClientNamespaceExcluded(
                    w.namespace.clone(),
                ));
            }
            ClientResolution::Workload(w) => w,
            ClientResolution::Node { name } => {
                return ObservationOutcome::Skipped(SkipReason::ClientIsNode(name));
            }
            ClientResolution::Pending(r) => return ObservationOutcome::Pending(r),
            ClientResolution::Dropped(r) => {
                return ObservationOutcome::Skipped(SkipReason::Dropped(r));
            }
        };
        let mut edges = Vec::new();
        match obs {
            Observation::Connection(c) => {
                let names = self.dns.names_for(&c.client, c.server_ip, seen);
                let port = PortProtocol {
                    port: c.server_port,
                    protocol: c.protocol,
                };
                let seen_by = match c.protocol {
                    Protocol::Tcp => SeenBy::Tcp,
                    Protocol::Udp => SeenBy::Udp,
                };
                match self.resolve_target(c.server_ip, Some(port), seen, &names, attempt) {
                    TargetResolution::Pending(r) => return ObservationOutcome::Pending(r),
                    TargetResolution::Dropped(r) => {
                        return ObservationOutcome::Skipped(SkipReason::Dropped(r));
                    }
                    target => edges.extend(edges_for(target, Some(port), &names, seen_by, seen)),
                }
            }
            Observation::Dns(d) => {
                let names = vec![d.name.clone()];
                for ip in &d.ips {
                    match self.resolve_target(*ip, None, seen, &names, attempt) {
                        TargetResolution::Pending(r) => return ObservationOutcome::Pending(r),
                        target => edges.extend(edges_for(target, None, &names, SeenBy::Dns, seen)),
                    }
                }
            }
        }
        ObservationOutcome::Edges { client, edges }
    }

    /// Whether `client` is a pod backing the cluster DNS Service over `seen`.
    fn is_cluster_dns_pod(&self, client: &ClientId, seen: SeenRange) -> bool {
        let uid = match &client.pod_uid {
            Some(uid) => Some(uid.clone()),
            None => match self.pods.holder(client.ip, seen) {
                Lookup::Held(uid) => Some(uid),
                _ => None,
            },
        };
        uid.is_some_and(|uid| {
            self.services.is_possible_backend(
                &self.config.cluster_dns,
                &BackendTarget::Pod(uid),
                seen,
            )
        })
    }
}

fn edges_for(
    target: TargetResolution,
    port: Option<PortProtocol>,
    names: &[String],
    seen_by: SeenBy,
    seen: SeenRange,
) -> Vec<ObservedEdge> {
    let service_or_node = |namespace: String, name: String, kind: &str| {
        EdgeTarget::InCluster(TargetKey {
            target: Workload::new(WorkloadRef {
                name,
                namespace,
                kind: kind.to_string(),
            }),
            service: None,
        })
    };
    let targets = match target {
        TargetResolution::Workload {
            workload,
            via_service,
        } => vec![EdgeTarget::InCluster(TargetKey {
            target: workload,
            service: via_service,
        })],
        TargetResolution::Service { namespace, name } => {
            vec![service_or_node(namespace, name, SERVICE_KIND)]
        }
        TargetResolution::Node { name } => vec![service_or_node(String::new(), name, NODE_KIND)],
        TargetResolution::Internet { ip, dns_names } if dns_names.is_empty() => {
            vec![EdgeTarget::Internet { dns_name: None, ip }]
        }
        TargetResolution::Internet { ip, dns_names } => dns_names
            .into_iter()
            .map(|name| EdgeTarget::Internet {
                dns_name: Some(name),
                ip,
            })
            .collect(),
        TargetResolution::ClusterDns
        | TargetResolution::Pending(_)
        | TargetResolution::Dropped(_) => Vec::new(),
    };
    targets
        .into_iter()
        .map(|target| ObservedEdge {
            dns_names: match target {
                EdgeTarget::InCluster(_) => names.to_vec(),
                EdgeTarget::Internet { .. } => Vec::new(),
            },
            target,
            port,
            seen_by,
            first_seen_ms: seen.first_ms,
            last_seen_ms: seen.last_ms,
        })
        .collect()
}
