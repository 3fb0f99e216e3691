//! The traffic map: resolved edges folded per client workload, convertible to and from the
//! `ObservedTraffic` status so the operator can rebuild it on restart, and able to tell a
//! material change from a mere `lastSeen` move (for write coalescing).

use std::cmp::Ordering;
use std::collections::hash_map::Entry;
use std::collections::{BTreeSet, HashMap};
use std::hash::{BuildHasher, Hash};
use std::net::IpAddr;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use thiserror::Error;
use trafficmap_api::observed::{
    InternetTarget, ObservedTarget, ObservedTraffic, ObservedTrafficStatus, PortProtocol, SeenBy,
    WorkloadRef,
};

use super::convert::time_ms;
use super::{TimeMs, Workload};
use crate::fast_hash::FastMap;

/// An in-cluster target: sorted by namespace, name, kind, then Service.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TargetKey {
    /// Namespace (empty for nodes), name and kind (the root owner's, `Service` or `Node`) of
    /// what was called: a workload is the one resolution shares, so that finding it in a
    /// client's targets compares a pointer and a stored hash rather than three names.
    pub target: Workload,
    /// The Service the workload was called through.
    pub service: Option<String>,
}

impl TargetKey {
    /// The target `namespace`/`name` of `kind`, called through `service`.
    pub fn new(namespace: &str, name: &str, kind: &str, service: Option<&str>) -> Self {
        TargetKey {
            target: Workload::new(WorkloadRef {
                name: name.to_string(),
                namespace: namespace.to_string(),
                kind: kind.to_string(),
            }),
            service: service.map(str::to_string),
        }
    }
}

impl PartialOrd for TargetKey {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for TargetKey {
    fn cmp(&self, other: &Self) -> Ordering {
        let (a, b) = (&self.target, &other.target);
        let target = if a == b {
            Ordering::Equal
        } else {
            (&a.namespace, &a.name, &a.kind).cmp(&(&b.namespace, &b.name, &b.kind))
        };
        target.then_with(|| self.service.cmp(&other.service))
    }
}

/// What was called.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EdgeTarget {
    /// Something in the cluster.
    InCluster(TargetKey),
    /// Something outside: one target per DNS name, or per IP when no name was seen.
    Internet {
        /// The name the client resolved to `ip`.
        dns_name: Option<String>,
        /// The server IP.
        ip: IpAddr,
    },
}

/// One resolved observation: a client called `target`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObservedEdge {
    /// The target.
    pub target: EdgeTarget,
    /// Server port and protocol (`None` for a DNS lookup).
    pub port: Option<PortProtocol>,
    /// Names the client resolved to reach an in-cluster target.
    pub dns_names: Vec<String>,
    /// How it was seen.
    pub seen_by: SeenBy,
    /// First seen.
    pub first_seen_ms: TimeMs,
    /// Last seen.
    pub last_seen_ms: TimeMs,
}

/// How a change affects the written status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Change {
    /// Nothing changed.
    Unchanged,
    /// Only `lastSeen` moved forward.
    LastSeenOnly,
    /// A target, port, name, way of seeing or `firstSeen` changed.
    Material,
}

/// Why a status cannot be read back.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum AggregateError {
    /// An internet target lists something that is not an IP.
    #[error("internet target IP {0:?} is not an IP address")]
    BadIp(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Facts {
    ports: BTreeSet<PortProtocol>,
    dns_names: BTreeSet<String>,
    ips: BTreeSet<IpAddr>,
    seen_by: BTreeSet<SeenBy>,
    first_seen_ms: TimeMs,
    last_seen_ms: TimeMs,
}

impl Facts {
    fn new(first_seen_ms: TimeMs, last_seen_ms: TimeMs) -> Self {
        Facts {
            ports: BTreeSet::new(),
            dns_names: BTreeSet::new(),
            ips: BTreeSet::new(),
            seen_by: BTreeSet::new(),
            first_seen_ms,
            last_seen_ms,
        }
    }

    /// Merges `other` into `self`, returning what that changed.
    fn merge(&mut self, other: Facts) -> Change {
        let mut material = false;
        for port in other.ports {
            material |= self.ports.insert(port);
        }
        for name in other.dns_names {
            material |= self.dns_names.insert(name);
        }
        for ip in other.ips {
            material |= self.ips.insert(ip);
        }
        for way in other.seen_by {
            material |= self.seen_by.insert(way);
        }
        self.widen(other.first_seen_ms, other.last_seen_ms, material)
    }

    /// Widens the times to cover `first_seen_ms..=last_seen_ms` and says what changed, given
    /// whether anything besides the times (`material`) already did. Runs per observation, so
    /// it compares in place instead of against a copy.
    fn widen(&mut self, first_seen_ms: TimeMs, last_seen_ms: TimeMs, material: bool) -> Change {
        let earlier = first_seen_ms < self.first_seen_ms;
        self.first_seen_ms = self.first_seen_ms.min(first_seen_ms);
        let later = last_seen_ms > self.last_seen_ms;
        self.last_seen_ms = self.last_seen_ms.max(last_seen_ms);
        if material || earlier {
            Change::Material
        } else if later {
            Change::LastSeenOnly
        } else {
            Change::Unchanged
        }
    }

    /// Whether these facts already hold all that `edge` (to their target) tells, times
    /// aside but an earlier first sighting.
    fn cover(&self, edge: &ObservedEdge) -> bool {
        edge.port.as_ref().is_none_or(|p| self.ports.contains(p))
            && self.seen_by.contains(&edge.seen_by)
            && self.first_seen_ms <= edge.first_seen_ms
    }

    #[cfg(test)]
    fn change(before: &Facts, after: &Facts) -> Change {
        let same_but_last_seen = Facts {
            last_seen_ms: after.last_seen_ms,
            ..before.clone()
        };
        if same_but_last_seen != *after {
            Change::Material
        } else if before.last_seen_ms != after.last_seen_ms {
            Change::LastSeenOnly
        } else {
            Change::Unchanged
        }
    }
}

/// Internet targets: named ones (by name) first, then bare IPs.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum InternetKey {
    Domain(String),
    Ip(IpAddr),
}

/// Most internet targets (distinct domains or bare IPs) kept for one client. Past this, new
/// ones are refused (and counted by the engine): a workload resolving or calling endless
/// unique names cannot grow the operator's memory or its ObservedTraffic past what the API
/// server stores, and what it was already seen calling stays.
pub const MAX_INTERNET_TARGETS_PER_CLIENT: usize = 512;

/// Everything one client workload was seen calling. Targets are hashed, not sorted: every
/// observation looks its target up, and sorting a client's targets once per status costs
/// less. Internet targets are named by what reports alone say, so they keep SipHash (see
/// [`crate::fast_hash`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientEdges {
    targets: FastMap<TargetKey, Facts>,
    internet: HashMap<InternetKey, Facts>,
}

impl ClientEdges {
    /// Whether [`ClientEdges::record`] would keep `edge`: false for a new internet target
    /// once the client has [`MAX_INTERNET_TARGETS_PER_CLIENT`].
    pub fn accepts(&self, edge: &ObservedEdge) -> bool {
        match &edge.target {
            EdgeTarget::InCluster(_) => true,
            EdgeTarget::Internet { dns_name, ip } => {
                let key = dns_name
                    .clone()
                    .map_or(InternetKey::Ip(*ip), InternetKey::Domain);
                self.internet.len() < MAX_INTERNET_TARGETS_PER_CLIENT
                    || self.internet.contains_key(&key)
            }
        }
    }

    /// Whether recording `edge` would change more than `lastSeen`: a new target, port, name,
    /// address or way of seeing it, or an earlier first sighting.
    pub fn is_news(&self, edge: &ObservedEdge) -> bool {
        let covered = match &edge.target {
            EdgeTarget::InCluster(key) => self.targets.get(key).is_some_and(|facts| {
                facts.cover(edge) && edge.dns_names.iter().all(|n| facts.dns_names.contains(n))
            }),
            EdgeTarget::Internet { dns_name, ip } => {
                let key = dns_name
                    .clone()
                    .map_or(InternetKey::Ip(*ip), InternetKey::Domain);
                self.internet
                    .get(&key)
                    .is_some_and(|facts| facts.cover(edge) && facts.ips.contains(ip))
            }
        };
        !covered
    }

    /// Folds in one edge, returning what that changed.
    pub fn record(&mut self, edge: ObservedEdge) -> Change {
        let ObservedEdge {
            target,
            port,
            dns_names,
            seen_by,
            first_seen_ms,
            last_seen_ms,
        } = edge;
        let (facts, mut material) = match target {
            EdgeTarget::InCluster(key) => {
                let (facts, mut new) =
                    facts_of(&mut self.targets, key, first_seen_ms, last_seen_ms);
                for name in dns_names {
                    new |= facts.dns_names.insert(name);
                }
                (facts, new)
            }
            EdgeTarget::Internet { dns_name, ip } => {
                let key = dns_name.map_or(InternetKey::Ip(ip), InternetKey::Domain);
                let (facts, new) = facts_of(&mut self.internet, key, first_seen_ms, last_seen_ms);
                let new_ip = facts.ips.insert(ip);
                (facts, new | new_ip)
            }
        };
        material |= port.is_some_and(|p| facts.ports.insert(p));
        material |= facts.seen_by.insert(seen_by);
        facts.widen(first_seen_ms, last_seen_ms, material)
    }

    /// What changed from `earlier` to `self` (the engine tracks this as it records, see
    /// [`TrafficMap::clients`]; tests compare whole maps with it).
    #[cfg(test)]
    pub fn change_since(&self, earlier: &ClientEdges) -> Change {
        fn compare<'a, K: Ord + 'a>(
            a: impl IntoIterator<Item = (&'a K, &'a Facts)>,
            b: impl IntoIterator<Item = (&'a K, &'a Facts)>,
        ) -> Change {
            use std::collections::BTreeMap;
            let (a, b): (BTreeMap<_, _>, BTreeMap<_, _>) =
                (a.into_iter().collect(), b.into_iter().collect());
            if !a.keys().eq(b.keys()) {
                return Change::Material;
            }
            a.values()
                .zip(b.values())
                .map(|(before, after)| Facts::change(before, after))
                .max()
                .unwrap_or(Change::Unchanged)
        }
        compare(&earlier.targets, &self.targets).max(compare(&earlier.internet, &self.internet))
    }

    /// Number of targets, in-cluster and internet.
    pub fn target_count(&self) -> usize {
        self.targets.len() + self.internet.len()
    }

    /// Latest `lastSeen` of all targets.
    pub fn last_seen_ms(&self) -> Option<TimeMs> {
        self.targets
            .values()
            .chain(self.internet.values())
            .map(|f| f.last_seen_ms)
            .max()
    }

    /// The status fields this map owns (targets, internet targets, count, last seen); the
    /// caller adds `uncoveredTargets` and conditions.
    pub fn to_status(&self) -> ObservedTrafficStatus {
        let mut sorted: Vec<_> = self.targets.iter().collect();
        sorted.sort_unstable_by(|a, b| a.0.cmp(b.0));
        let targets = sorted
            .into_iter()
            .map(|(key, f)| ObservedTarget {
                name: key.target.name.clone(),
                namespace: key.target.namespace.clone(),
                kind: key.target.kind.clone(),
                service: key.service.clone(),
                ports: f.ports.iter().copied().collect(),
                dns_names: f.dns_names.iter().cloned().collect(),
                seen_by: f.seen_by.iter().copied().collect(),
                first_seen: to_time(f.first_seen_ms),
                last_seen: to_time(f.last_seen_ms),
            })
            .collect();
        let mut sorted: Vec<_> = self.internet.iter().collect();
        sorted.sort_unstable_by(|a, b| a.0.cmp(b.0));
        let internet_targets = sorted
            .into_iter()
            .map(|(key, f)| InternetTarget {
                dns_name: match key {
                    InternetKey::Domain(name) => Some(name.clone()),
                    InternetKey::Ip(_) => None,
                },
                ips: f.ips.iter().map(IpAddr::to_string).collect(),
                ports: f.ports.iter().copied().collect(),
                seen_by: f.seen_by.iter().copied().collect(),
                first_seen: to_time(f.first_seen_ms),
                last_seen: to_time(f.last_seen_ms),
            })
            .collect();
        ObservedTrafficStatus {
            targets,
            internet_targets,
            target_count: u32::try_from(self.target_count()).unwrap_or(u32::MAX),
            last_seen: self.last_seen_ms().map(to_time),
            ..ObservedTrafficStatus::default()
        }
    }

    /// Reads back a status written by [`ClientEdges::to_status`] (duplicates are merged).
    pub fn from_status(status: &ObservedTrafficStatus) -> Result<Self, AggregateError> {
        let mut edges = ClientEdges::default();
        for t in &status.targets {
            let mut facts = Facts::new(from_time(&t.first_seen), from_time(&t.last_seen));
            facts.ports.extend(t.ports.iter().copied());
            facts.dns_names.extend(t.dns_names.iter().cloned());
            facts.seen_by.extend(t.seen_by.iter().copied());
            let key = TargetKey::new(&t.namespace, &t.name, &t.kind, t.service.as_deref());
            merge_into(&mut edges.targets, key, facts);
        }
        for t in &status.internet_targets {
            let ips = t
                .ips
                .iter()
                .map(|s| s.parse().map_err(|_| AggregateError::BadIp(s.clone())))
                .collect::<Result<BTreeSet<IpAddr>, _>>()?;
            let keys: Vec<InternetKey> = match &t.dns_name {
                Some(name) => vec![InternetKey::Domain(name.clone())],
                None => ips.iter().map(|ip| InternetKey::Ip(*ip)).collect(),
            };
            for key in keys {
                let mut facts = Facts::new(from_time(&t.first_seen), from_time(&t.last_seen));
                facts.ports.extend(t.ports.iter().copied());
                facts.seen_by.extend(t.seen_by.iter().copied());
                match &key {
                    InternetKey::Domain(_) => facts.ips.extend(ips.iter().copied()),
                    InternetKey::Ip(ip) => {
                        facts.ips.insert(*ip);
                    }
                }
                merge_into(&mut edges.internet, key, facts);
            }
        }
        Ok(edges)
    }
}

/// The facts kept under `key`, and whether they are new (empty, over the edge's times).
fn facts_of<K: Hash + Eq, S: BuildHasher>(
    map: &mut HashMap<K, Facts, S>,
    key: K,
    first_seen_ms: TimeMs,
    last_seen_ms: TimeMs,
) -> (&mut Facts, bool) {
    match map.entry(key) {
        Entry::Occupied(entry) => (entry.into_mut(), false),
        Entry::Vacant(entry) => (entry.insert(Facts::new(first_seen_ms, last_seen_ms)), true),
    }
}

fn merge_into<K: Hash + Eq, S: BuildHasher>(
    map: &mut HashMap<K, Facts, S>,
    key: K,
    facts: Facts,
) -> Change {
    match map.get_mut(&key) {
        Some(existing) => existing.merge(facts),
        None => {
            map.insert(key, facts);
            Change::Material
        }
    }
}

fn to_time(ms: TimeMs) -> Time {
    let ms = i64::try_from(ms).unwrap_or(i64::MAX);
    Time(Timestamp::from_millisecond(ms).unwrap_or(Timestamp::MAX))
}

fn from_time(time: &Time) -> TimeMs {
    time_ms(time).unwrap_or(0)
}

/// The per-client map of everything observed. Hashed rather than sorted: every observation
/// looks up its client, and a search among thousands of names costs more than sorting them
/// once per flush.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrafficMap {
    clients: FastMap<Workload, ClientEntry>,
}

/// One client's edges, and the largest change to them since its status was last handed to the
/// writer (see [`TrafficMap::mark_handed`]): what a copy of the handed edges would tell, without
/// keeping one per client.
#[derive(Clone, Debug, PartialEq, Eq)]
struct ClientEntry {
    edges: ClientEdges,
    unhanded: Change,
}

impl ClientEntry {
    /// A client first seen now: everything about it is news.
    fn new() -> Self {
        ClientEntry {
            edges: ClientEdges::default(),
            unhanded: Change::Material,
        }
    }

    /// [`TrafficMap::record`] for this client.
    fn record(&mut self, edge: ObservedEdge) -> Option<Change> {
        if !self.edges.accepts(&edge) {
            return None;
        }
        let change = self.edges.record(edge);
        self.unhanded = self.unhanded.max(change);
        Some(change)
    }
}

impl TrafficMap {
    /// An empty map.
    pub fn new() -> Self {
        TrafficMap::default()
    }

    /// Folds in an edge of `client`, returning what that changed for the client's status;
    /// `None` when the client's edges refuse it (see [`ClientEdges::accepts`]).
    pub fn record(&mut self, client: &Workload, edge: ObservedEdge) -> Option<Change> {
        // Looked up before inserting: cloning the client's name per observation costs more
        // than the second search on its first one.
        if let Some(entry) = self.clients.get_mut(client) {
            return entry.record(edge);
        }
        self.clients
            .entry(client.clone())
            .or_insert_with(ClientEntry::new)
            .record(edge)
    }

    /// Whether recording `edge` for `client` would change more than `lastSeen`.
    pub fn is_news(&self, client: &Workload, edge: &ObservedEdge) -> bool {
        self.clients
            .get(client)
            .is_none_or(|entry| entry.edges.is_news(edge))
    }

    /// One client's edges.
    pub fn get(&self, client: &Workload) -> Option<&ClientEdges> {
        self.clients.get(client).map(|entry| &entry.edges)
    }

    /// All clients, sorted, with the largest change to each since its status was last handed
    /// over ([`Change::Material`] for one never handed over).
    pub fn clients(&self) -> impl Iterator<Item = (&Workload, &ClientEdges, Change)> {
        let mut clients: Vec<_> = self
            .clients
            .iter()
            .map(|(client, entry)| (client, &entry.edges, entry.unhanded))
            .collect();
        clients.sort_unstable_by(|a, b| a.0.cmp(b.0));
        clients.into_iter()
    }

    /// The client's status, as it is now, was handed to the writer.
    pub fn mark_handed(&mut self, client: &Workload) {
        if let Some(entry) = self.clients.get_mut(client) {
            entry.unhanded = Change::Unchanged;
        }
    }

    /// Number of clients.
    pub fn client_count(&self) -> usize {
        self.clients.len()
    }

    /// Number of targets of all clients, in-cluster and internet.
    pub fn target_count(&self) -> usize {
        self.clients
            .values()
            .map(|entry| entry.edges.target_count())
            .sum()
    }

    /// Forgets one client (e.g. after `kubectl trafficmap reset`).
    pub fn remove(&mut self, client: &Workload) -> Option<ClientEdges> {
        self.clients.remove(client).map(|entry| entry.edges)
    }

    /// Forgets everything.
    pub fn clear(&mut self) {
        self.clients.clear();
    }

    /// Rebuilds the map from stored `ObservedTraffic` objects (on start), merging with whatever
    /// is already in it; `intern` gives each client the shared [`Workload`] resolution uses.
    pub fn restore<'a>(
        &mut self,
        objects: impl IntoIterator<Item = &'a ObservedTraffic>,
        mut intern: impl FnMut(WorkloadRef) -> Workload,
    ) -> Result<(), AggregateError> {
        for ot in objects {
            let Some(status) = &ot.status else { continue };
            let edges = ClientEdges::from_status(status)?;
            // What is stored counts as handed over (written).
            let entry = self
                .clients
                .entry(intern(ot.spec.client.clone()))
                .or_insert_with(|| ClientEntry {
                    edges: ClientEdges::default(),
                    unhanded: Change::Unchanged,
                });
            for (key, facts) in edges.targets {
                let key = TargetKey {
                    target: intern(key.target.get().clone()),
                    service: key.service,
                };
                merge_into(&mut entry.edges.targets, key, facts);
            }
            for (key, facts) in edges.internet {
                merge_into(&mut entry.edges.internet, key, facts);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
#[path = "aggregate_tests.rs"]
mod tests;
