//! Target resolution: what a server IP (and port) was at the time of the call.
//!
//! In order, at the observation's time:
//! 1. a ClusterIP -> its Service: the cluster DNS Service is no target; the API server Service is
//!    a `Service` target; otherwise the Service's possible backends (on the called port) -> their
//!    pods -> workloads: exactly one workload, with fully known membership, is that `Workload`
//!    (via the Service); several workloads, unknown pods behind it, or no backends, is the
//!    `Service` itself. Never one workload picked from several.
//! 2. a pod IP -> that pod's workload; a DNS name of a headless Service the pod backs gives
//!    `via_service`; a backend of the cluster DNS Service on port 53 is the cluster DNS.
//! 3. an address endpoint of the API server Service (on its port) -> the API server `Service`.
//! 4. a node IP -> `Node`. hostNetwork pods listen on their node's IPs, and a node IP and port do
//!    not say which of them answered, so they are the node, never a guessed pod.
//! 5. any other IP in a pod or Service range -> `Pending` (the watch is behind), dropped on the
//!    last attempt; outside the ranges -> `Internet`, with the names outside the cluster domain
//!    that the client resolved to that IP.
//!
//! An IP whose holder at that time is ambiguous (reuse, straddling a handover) is dropped.

use std::net::IpAddr;

use trafficmap_api::observed::PortProtocol;

use super::dns_names::{self, DnsName};
use super::ip_history::Lookup;
use super::services::{BackendTarget, Backends};
use super::{
    Attempt, DropReason, Index, PendingReason, SeenRange, ServiceKey, Unresolved, Workload,
};

/// The cluster DNS port: calls to cluster DNS pods on it are DNS lookups, not targets.
pub const DNS_PORT: u16 = 53;

/// What a call's server was.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TargetResolution {
    /// A workload, called through `via_service` when there was one.
    Workload {
        /// The called workload.
        workload: Workload,
        /// The Service it was reached through (ClusterIP, or a headless Service's name).
        via_service: Option<String>,
    },
    /// A Service as a whole: the API server, or one whose backends are not one known workload.
    Service {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
    },
    /// A node (its IP; hostNetwork pods included).
    Node {
        /// Node name.
        name: String,
    },
    /// The cluster DNS Service: not a target.
    ClusterDns,
    /// Outside the cluster.
    Internet {
        /// The server IP.
        ip: IpAddr,
        /// Internet names the client resolved to that IP, sorted.
        dns_names: Vec<String>,
    },
    /// Not resolvable yet; retry later.
    Pending(PendingReason),
    /// Never resolvable; drop.
    Dropped(DropReason),
}

impl From<Unresolved> for TargetResolution {
    fn from(u: Unresolved) -> Self {
        match u {
            Unresolved::Pending(r) => TargetResolution::Pending(r),
            Unresolved::Dropped(r) => TargetResolution::Dropped(r),
        }
    }
}

fn service_target(key: &ServiceKey) -> TargetResolution {
    TargetResolution::Service {
        namespace: key.namespace.clone(),
        name: key.name.clone(),
    }
}

/// Maps an ambiguous or expired lookup to a drop; `None` for `Free`; `Some(Ok)` for a holder.
fn decided<K>(lookup: Lookup<K>, ip: IpAddr) -> Option<Result<K, DropReason>> {
    match lookup {
        Lookup::Held(k) => Some(Ok(k)),
        Lookup::Ambiguous => Some(Err(DropReason::AmbiguousIp(ip))),
        Lookup::Expired => Some(Err(DropReason::Expired)),
        Lookup::Free => None,
    }
}

impl Index {
    /// Resolves a call to `server_ip` on `port` (`None` for a DNS answer) seen over `seen`;
    /// `dns_names` are the names the client resolved to `server_ip` (see
    /// [`Index::record_dns_answers`]).
    pub fn resolve_target(
        &self,
        server_ip: IpAddr,
        port: Option<PortProtocol>,
        seen: SeenRange,
        dns_names: &[String],
        attempt: Attempt,
    ) -> TargetResolution {
        if self.settling(seen, attempt) {
            return TargetResolution::Pending(PendingReason::Settling);
        }
        match decided(self.services.service_at(server_ip, seen), server_ip) {
            Some(Ok(key)) => return self.via_cluster_ip(&key, port, seen, attempt),
            Some(Err(drop)) => return TargetResolution::Dropped(drop),
            None => {}
        }
        match decided(self.pods.holder(server_ip, seen), server_ip) {
            Some(Ok(uid)) => return self.pod_target(&uid, port, seen, dns_names, attempt),
            Some(Err(drop)) => return TargetResolution::Dropped(drop),
            None => {}
        }
        let api = &self.config.api_server;
        if self.services.is_backend_address(api, server_ip, port, seen) {
            return service_target(api);
        }
        match decided(self.nodes.holder(server_ip, seen), server_ip) {
            Some(Ok(name)) => return TargetResolution::Node { name },
            Some(Err(drop)) => return TargetResolution::Dropped(drop),
            None => {}
        }
        if self.is_cluster_range(server_ip) {
            return Unresolved::wait(PendingReason::UnknownIp(server_ip), attempt).into();
        }
        let domain = &self.config.cluster_domain;
        TargetResolution::Internet {
            ip: server_ip,
            dns_names: dns_names
                .iter()
                .filter(|n| dns_names::classify(n, domain) == DnsName::External)
                .cloned()
                .collect(),
        }
    }

    fn via_cluster_ip(
        &self,
        key: &ServiceKey,
        port: Option<PortProtocol>,
        seen: SeenRange,
        attempt: Attempt,
    ) -> TargetResolution {
        if *key == self.config.cluster_dns {
            return TargetResolution::ClusterDns;
        }
        if *key == self.config.api_server {
            return service_target(key);
        }
        let (targets, complete) = match self.services.backends(key, port, seen) {
            Backends::Known { targets, complete } => (targets, complete),
            Backends::NoSuchPort => {
                let port = port.map_or(0, |p| p.port);
                return TargetResolution::Dropped(DropReason::NoSuchServicePort(key.clone(), port));
            }
            Backends::NotYetSeen if attempt.last => return service_target(key),
            Backends::NotYetSeen => {
                return TargetResolution::Pending(PendingReason::UnknownBackends(key.clone()));
            }
        };
        // The one workload behind every backend, if there is exactly one.
        let mut only: Option<Workload> = None;
        let mut several = false;
        let mut unknown = false;
        for target in targets {
            match self.backend_workload(target, &key.namespace, seen, attempt) {
                Ok(w) => match &only {
                    None => only = Some(w),
                    Some(first) => several |= *first != w,
                },
                Err(Unresolved::Pending(reason)) => return TargetResolution::Pending(reason),
                Err(Unresolved::Dropped(_)) => unknown = true,
            }
        }
        match only {
            Some(workload) if complete && !unknown && !several => TargetResolution::Workload {
                workload,
                via_service: Some(key.name.clone()),
            },
            _ => service_target(key),
        }
    }

    /// The workload behind one endpoint; `Dropped` when it is not a pod we can name.
    fn backend_workload(
        &self,
        target: &BackendTarget,
        namespace: &str,
        seen: SeenRange,
        attempt: Attempt,
    ) -> Result<Workload, Unresolved> {
        let held;
        let uid = match target {
            BackendTarget::Pod(uid) => uid.as_str(),
            BackendTarget::PodName(name) => match self.pods.uid_by_name(namespace, name) {
                Some(uid) => uid,
                None => {
                    return Err(Unresolved::wait(
                        PendingReason::UnknownPod(name.clone()),
                        attempt,
                    ));
                }
            },
            BackendTarget::Address(ip) => match self.pods.holder(*ip, seen) {
                Lookup::Held(uid) => {
                    held = uid;
                    held.as_str()
                }
                _ => return Err(Unresolved::Dropped(DropReason::AmbiguousIp(*ip))),
            },
        };
        self.pod_workload(uid, attempt).unwrap_or_else(|| {
            Err(Unresolved::wait(
                PendingReason::UnknownPod(uid.to_string()),
                attempt,
            ))
        })
    }

    fn pod_target(
        &self,
        uid: &str,
        port: Option<PortProtocol>,
        seen: SeenRange,
        dns_names: &[String],
        attempt: Attempt,
    ) -> TargetResolution {
        let Some(pod) = self.pods.get(uid) else {
            return Unresolved::wait(PendingReason::UnknownPod(uid.to_string()), attempt).into();
        };
        let backend = BackendTarget::Pod(uid.to_string());
        let dns_port = port.is_none_or(|p| p.port == DNS_PORT);
        if dns_port
            && self
                .services
                .is_possible_backend(&self.config.cluster_dns, &backend, seen)
        {
            return TargetResolution::ClusterDns;
        }
        let workload = match self.workload_of(pod, attempt) {
            Ok(w) => w,
            Err(u) => return u.into(),
        };
        let domain = &self.config.cluster_domain;
        let via_service = dns_names
            .iter()
            .filter_map(|n| match dns_names::classify(n, domain) {
                DnsName::Cluster(name) => name.service().cloned(),
                DnsName::External => None,
            })
            .filter(|svc| {
                svc.namespace == pod.namespace
                    && self.services.is_possible_backend(svc, &backend, seen)
            })
            .map(|svc| svc.name.clone())
            .min();
        TargetResolution::Workload {
            workload,
            via_service,
        }
    }
}
