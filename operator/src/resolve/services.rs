//! Services: which Service held each ClusterIP over time, and which endpoints backed each
//! Service over time (from EndpointSlices).
//!
//! Backend membership is recorded as intervals at the times the slices changed. Slice updates
//! lag the pod changes behind them, so a backend counts as *possibly* serving over its interval
//! widened by `slack_ms` on both sides. Resolution uses every possible backend, so a change of
//! backends shows up as several candidates (and the caller answers with the Service rather than
//! one of its workloads), never as the wrong single one. Membership before the first slice of a
//! Service was seen is unknown, which the lookup reports as [`Backends::Known::complete`] false.

use std::collections::BTreeSet;
use std::net::IpAddr;

use trafficmap_api::observed::PortProtocol;

use super::inputs::{EndpointPortInfo, EndpointSliceInfo, ServiceInfo};
use super::ip_history::{HistoryHandover, IpHistory, Lookup};
use super::shared::Interner;
use super::{SeenRange, ServiceKey, ServiceName, TimeMs};
use crate::fast_hash::FastMap;

/// What an endpoint points at.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum BackendTarget {
    /// A pod, by UID (`targetRef.uid`).
    Pod(String),
    /// A pod known only by name (`targetRef` without UID).
    PodName(String),
    /// An address with no pod reference (the API server, manually managed endpoints).
    Address(IpAddr),
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct BackendEntry {
    target: BackendTarget,
    port: Option<EndpointPortInfo>,
}

#[derive(Clone, Debug)]
struct BackendInterval {
    entry: BackendEntry,
    from_ms: TimeMs,
    until_ms: Option<TimeMs>,
}

#[derive(Clone, Debug, Default)]
struct BackendHistory {
    first_slice_at_ms: Option<TimeMs>,
    intervals: Vec<BackendInterval>,
}

#[derive(Clone, Debug)]
struct ServiceRecord {
    info: ServiceInfo,
    deleted_at_ms: Option<TimeMs>,
}

/// The endpoints that may have served a Service over a time range.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Backends<'a> {
    /// The possible backends; `complete` is false when membership at that time is not fully known.
    Known {
        /// Possible backends, sorted, each once. Borrowed: a lookup runs for every observation
        /// of a call through a ClusterIP, and cloning pod UIDs into a set was a tenth of it.
        targets: Vec<&'a BackendTarget>,
        /// Whether membership was known for the whole range.
        complete: bool,
    },
    /// The Service has no port with this number and protocol: the call reached no endpoint.
    NoSuchPort,
    /// No EndpointSlice of the Service has been seen yet.
    NotYetSeen,
}

/// Timing parameters of a [`ServiceIndex`].
#[derive(Clone, Copy, Debug)]
pub struct ServiceTiming {
    /// How long released ClusterIPs, ended memberships and deleted Services are kept.
    pub retention_ms: u64,
    /// Clock guard for ClusterIP holdings (see [`IpHistory`]).
    pub guard_ms: u64,
    /// How far slice changes may lag the changes behind them.
    pub slack_ms: u64,
    /// When the watches started: Services created later have fully known membership.
    pub started_at_ms: TimeMs,
}

/// Services, ClusterIP history, EndpointSlices and backend membership history.
#[derive(Clone, Debug)]
pub struct ServiceIndex {
    services: FastMap<ServiceKey, ServiceRecord>,
    cluster_ips: IpHistory<ServiceKey>,
    slices: FastMap<(String, String), EndpointSliceInfo>,
    /// The names of each Service's slices (in its namespace): a slice event recomputes one
    /// Service's backends from its own slices, not by searching every slice in the cluster.
    slices_of: FastMap<ServiceKey, BTreeSet<String>>,
    backends: FastMap<ServiceKey, BackendHistory>,
    /// One shared key per Service name, so that the maps above find it by pointer.
    names: Interner<ServiceName>,
    timing: ServiceTiming,
}

impl ServiceIndex {
    /// An empty index.
    pub fn new(timing: ServiceTiming) -> Self {
        ServiceIndex {
            services: FastMap::default(),
            cluster_ips: IpHistory::new(timing.retention_ms, timing.guard_ms, timing.started_at_ms),
            slices: FastMap::default(),
            slices_of: FastMap::default(),
            backends: FastMap::default(),
            names: Interner::default(),
            timing,
        }
    }

    /// Adds or updates a Service seen at `at_ms`; ClusterIPs are held from its creation.
    pub fn apply_service(&mut self, info: ServiceInfo, at_ms: TimeMs) {
        let key = self.key(&info.namespace, &info.name);
        let old_ips = self
            .services
            .get(&key)
            .filter(|r| r.deleted_at_ms.is_none())
            .map(|r| r.info.cluster_ips.clone())
            .unwrap_or_default();
        for ip in old_ips.iter().filter(|ip| !info.cluster_ips.contains(ip)) {
            self.cluster_ips.release(*ip, &key, at_ms);
        }
        let since = info.created_ms.map_or(at_ms, |c| c.min(at_ms));
        for ip in info.cluster_ips.iter().filter(|ip| !old_ips.contains(ip)) {
            self.cluster_ips.claim(*ip, &key, since);
        }
        self.services.insert(
            key,
            ServiceRecord {
                info,
                deleted_at_ms: None,
            },
        );
    }

    /// Marks a Service deleted at `at_ms` and releases its ClusterIPs then.
    pub fn delete_service(&mut self, key: &ServiceKey, at_ms: TimeMs) {
        if let Some(record) = self.services.get_mut(key) {
            for ip in &record.info.cluster_ips {
                self.cluster_ips.release(*ip, key, at_ms);
            }
            record.deleted_at_ms.get_or_insert(at_ms);
        }
    }

    /// Adds or updates an EndpointSlice seen at `at_ms`.
    pub fn apply_slice(&mut self, slice: EndpointSliceInfo, at_ms: TimeMs) {
        let id = (slice.namespace.clone(), slice.name.clone());
        let old_service = self.slices.get(&id).and_then(slice_service);
        let new_service = slice
            .service_name
            .as_ref()
            .map(|name| self.key(&slice.namespace, name));
        if let Some(old) = &old_service {
            self.forget_slice_of(old, &slice.name);
        }
        if let Some(new) = &new_service {
            self.slices_of
                .entry(new.clone())
                .or_default()
                .insert(slice.name.clone());
        }
        self.slices.insert(id, slice);
        for key in [old_service, new_service].into_iter().flatten() {
            self.recompute_backends(&key, at_ms);
        }
    }

    /// The shared key of the Service `namespace`/`name`.
    fn key(&mut self, namespace: &str, name: &str) -> ServiceKey {
        self.names.intern(ServiceName {
            namespace: namespace.to_string(),
            name: name.to_string(),
        })
    }

    fn forget_slice_of(&mut self, key: &ServiceKey, slice_name: &str) {
        if let Some(names) = self.slices_of.get_mut(key) {
            names.remove(slice_name);
            if names.is_empty() {
                self.slices_of.remove(key);
            }
        }
    }

    /// Removes an EndpointSlice at `at_ms`.
    pub fn delete_slice(&mut self, namespace: &str, name: &str, at_ms: TimeMs) {
        let removed = self
            .slices
            .remove(&(namespace.to_string(), name.to_string()));
        if let Some(key) = removed.as_ref().and_then(slice_service) {
            self.forget_slice_of(&key, name);
            self.recompute_backends(&key, at_ms);
        }
    }

    fn recompute_backends(&mut self, key: &ServiceKey, at_ms: TimeMs) {
        let current: Vec<BackendEntry> = self
            .slices_of
            .get(key)
            .into_iter()
            .flatten()
            .filter_map(|name| self.slices.get(&(key.namespace.clone(), name.clone())))
            .flat_map(slice_entries)
            .collect();
        let history = self.backends.entry(key.clone()).or_default();
        history.first_slice_at_ms.get_or_insert(at_ms);
        for interval in history.intervals.iter_mut() {
            if interval.until_ms.is_none() && !current.contains(&interval.entry) {
                interval.until_ms = Some(at_ms);
            }
        }
        for entry in current {
            let open = history
                .intervals
                .iter()
                .any(|i| i.until_ms.is_none() && i.entry == entry);
            if !open {
                history.intervals.push(BackendInterval {
                    entry,
                    from_ms: at_ms,
                    until_ms: None,
                });
            }
        }
    }

    /// Its ClusterIP history for a successor (see [`IpHistory::handover`]).
    pub fn handover(&self, limit: usize) -> HistoryHandover {
        self.cluster_ips.handover(limit)
    }

    /// Takes over a predecessor's IP history (see [`IpHistory::inherit`]).
    pub fn inherit(&mut self, handover: &HistoryHandover, checkpoint_ms: TimeMs) {
        self.cluster_ips.inherit(handover, checkpoint_ms);
    }

    /// The Service that held `cluster_ip` over `range`.
    pub fn service_at(&self, cluster_ip: IpAddr, range: SeenRange) -> Lookup<ServiceKey> {
        self.cluster_ips.lookup(cluster_ip, range)
    }

    /// A Service by key, deleted or not.
    pub fn get(&self, key: &ServiceKey) -> Option<&ServiceInfo> {
        self.services.get(key).map(|r| &r.info)
    }

    /// The endpoints that may have served `key` on `port` (any port when `None`) over `range`.
    pub fn backends(
        &self,
        key: &ServiceKey,
        port: Option<PortProtocol>,
        range: SeenRange,
    ) -> Backends<'_> {
        let Some(history) = self.backends.get(key) else {
            return Backends::NotYetSeen;
        };
        let Some(first_slice_at) = history.first_slice_at_ms else {
            return Backends::NotYetSeen;
        };
        let names = match (port, self.get(key)) {
            (Some(p), Some(svc)) if !svc.ports.is_empty() => {
                let names: Vec<Option<&str>> = svc
                    .ports
                    .iter()
                    .filter(|sp| sp.port == p.port && sp.protocol == p.protocol)
                    .map(|sp| sp.name.as_deref())
                    .collect();
                if names.is_empty() {
                    return Backends::NoSuchPort;
                }
                Some((names, p.protocol))
            }
            _ => None,
        };
        let mut targets: Vec<&BackendTarget> = self
            .possible(history, range)
            .filter(|i| match (&names, &i.entry.port) {
                (Some((names, protocol)), Some(ep)) => {
                    ep.protocol == *protocol && names.contains(&ep.name.as_deref())
                }
                _ => true,
            })
            .map(|i| &i.entry.target)
            .collect();
        targets.sort_unstable();
        targets.dedup();
        let created_while_watched = self.get(key).is_some_and(|s| {
            s.created_while_watched || s.created_ms.is_some_and(|c| c >= self.timing.started_at_ms)
        });
        // Watched since its creation: every membership change is known (before the first slice,
        // none). Otherwise membership is known from the first slice seen, plus slack for clocks.
        let complete = created_while_watched
            || first_slice_at.saturating_add(self.timing.slack_ms) <= range.first_ms;
        Backends::Known { targets, complete }
    }

    /// Whether `target` may have backed `key` (on any port) over `range`.
    pub fn is_possible_backend(
        &self,
        key: &ServiceKey,
        target: &BackendTarget,
        range: SeenRange,
    ) -> bool {
        self.backends
            .get(key)
            .is_some_and(|h| self.possible(h, range).any(|i| &i.entry.target == target))
    }

    /// Whether `ip` (with endpoint `port`, any when `None`) may have been an address endpoint of
    /// `key` over `range`; used to recognise direct calls to the API server.
    pub fn is_backend_address(
        &self,
        key: &ServiceKey,
        ip: IpAddr,
        port: Option<PortProtocol>,
        range: SeenRange,
    ) -> bool {
        let target = BackendTarget::Address(ip);
        self.backends.get(key).is_some_and(|h| {
            self.possible(h, range).any(|i| {
                i.entry.target == target
                    && match (port, &i.entry.port) {
                        (Some(p), Some(ep)) => ep.port == Some(p.port) && ep.protocol == p.protocol,
                        _ => true,
                    }
            })
        })
    }

    fn possible<'a>(
        &self,
        history: &'a BackendHistory,
        range: SeenRange,
    ) -> impl Iterator<Item = &'a BackendInterval> {
        let slack = self.timing.slack_ms;
        history.intervals.iter().filter(move |i| {
            i.from_ms.saturating_sub(slack) <= range.last_ms
                && i.until_ms
                    .is_none_or(|u| range.first_ms < u.saturating_add(slack))
        })
    }

    /// Forgets ended memberships, released ClusterIPs and deleted Services after the retention.
    pub fn gc(&mut self, now_ms: TimeMs) {
        let retention = self.timing.retention_ms;
        let alive = |end: Option<TimeMs>| end.is_none_or(|e| e.saturating_add(retention) > now_ms);
        self.cluster_ips.gc(now_ms);
        self.services.retain(|_, r| alive(r.deleted_at_ms));
        for history in self.backends.values_mut() {
            history.intervals.retain(|i| alive(i.until_ms));
        }
        let services = &self.services;
        self.backends
            .retain(|key, h| !h.intervals.is_empty() || services.contains_key(key));
        self.names.forget_unused();
    }
}

fn slice_service(slice: &EndpointSliceInfo) -> Option<ServiceKey> {
    slice
        .service_name
        .as_ref()
        .map(|name| ServiceKey::new(&slice.namespace, name))
}

fn slice_entries(slice: &EndpointSliceInfo) -> Vec<BackendEntry> {
    let ports: Vec<Option<EndpointPortInfo>> = if slice.ports.is_empty() {
        vec![None]
    } else {
        slice.ports.iter().cloned().map(Some).collect()
    };
    let mut entries = Vec::new();
    for endpoint in slice.endpoints.iter().filter(|e| e.serving) {
        let targets: Vec<BackendTarget> = match (&endpoint.pod_uid, &endpoint.pod_name) {
            (Some(uid), _) => vec![BackendTarget::Pod(uid.clone())],
            (None, Some(name)) => vec![BackendTarget::PodName(name.clone())],
            (None, None) => endpoint
                .addresses
                .iter()
                .map(|ip| BackendTarget::Address(*ip))
                .collect(),
        };
        for target in targets {
            for port in &ports {
                entries.push(BackendEntry {
                    target: target.clone(),
                    port: port.clone(),
                });
            }
        }
    }
    entries
}

#[cfg(test)]
#[path = "services_tests.rs"]
mod tests;
