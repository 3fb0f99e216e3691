//! What the policies drafted from the map must allow, whatever engine enforces them: per client
//! workload where its calls go and on which pod ports, per server workload where the calls it
//! received come from. Each renderer ([`super::networkpolicy`], [`super::cilium`]) writes this
//! in its own terms. Deterministic: sorted, nothing time-dependent.
//!
//! The rule is to never block an observed call. Where a call cannot be placed (a workload whose
//! pods cannot be selected, a Service spanning several workloads), the policy that would have to
//! allow it is left out, which leaves that workload unisolated in that direction, and a note
//! says why. Calls to a Service spanning several workloads are admitted by each workload it
//! selects; when its pods cannot be told, no workload of its namespace gets an ingress policy.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::Timestamp;
use trafficmap_api::ObservedTraffic;
use trafficmap_api::observed::{ObservedTarget, Protocol};
use trafficmap_api::render::{NODE_KIND, SERVICE_KIND};

use super::inventory::{Inventory, WorkloadKey};

/// The API server's Service.
pub const API_SERVER: (&str, &str) = ("default", "kubernetes");

/// Where calls go.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Destination {
    /// The pods of a workload in a namespace.
    Pods(String, SelectorKey),
    /// The nodes: node addresses and host-network pods.
    Nodes,
    /// The API server, at its endpoints.
    ApiServer,
    /// Addresses outside the cluster, with the DNS name they were reached by when one was seen.
    Internet {
        /// The DNS name the client resolved.
        name: Option<String>,
        /// The addresses seen, sorted.
        ips: Vec<IpAddr>,
    },
}

/// Where calls come from.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Source {
    /// The pods of a workload in a namespace.
    Pods(String, SelectorKey),
    /// The nodes: clients on the host network.
    Nodes,
}

/// A label selector in a sortable form: its matchLabels and its matchExpressions as JSON.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct SelectorKey(BTreeMap<String, String>, String);

impl SelectorKey {
    /// The key of `selector`.
    pub fn of(selector: &LabelSelector) -> Self {
        SelectorKey(
            selector.match_labels.clone().unwrap_or_default(),
            serde_json::to_string(&selector.match_expressions).unwrap_or_default(),
        )
    }

    /// The selector back.
    pub fn selector(&self) -> LabelSelector {
        LabelSelector {
            match_labels: (!self.0.is_empty()).then(|| self.0.clone()),
            match_expressions: serde_json::from_str(&self.1).ok().flatten(),
        }
    }
}

/// A port number or name, sortable.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum PortKey {
    /// A number.
    Number(i32),
    /// A container port's name.
    Name(String),
}

impl PortKey {
    fn of(port: &IntOrString) -> Self {
        match port {
            IntOrString::Int(n) => PortKey::Number(*n),
            IntOrString::String(s) => PortKey::Name(s.clone()),
        }
    }
}

/// Ports by protocol (`TCP`, `UDP`); empty means every port.
pub type Ports = BTreeSet<(String, PortKey)>;

/// What one policy must allow: peer -> ports.
pub type Rules<P> = BTreeMap<P, Ports>;

/// One workload's side of the calls: how to select its pods, what to allow, and since when the
/// calls have been observed.
#[derive(Clone, Debug, PartialEq)]
pub struct Side<P> {
    /// Selects the workload's pods in its namespace.
    pub selector: LabelSelector,
    /// What to allow.
    pub rules: Rules<P>,
    /// The first observation of these calls.
    pub since: Option<Timestamp>,
}

/// What every workload's policies must allow, and what could not be placed.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Allowed {
    /// Per client workload, where its calls go.
    pub egress: BTreeMap<WorkloadKey, Side<Destination>>,
    /// Per server workload, where the calls it received come from.
    pub ingress: BTreeMap<WorkloadKey, Side<Source>>,
    /// One line per policy left out, saying why.
    pub notes: Vec<String>,
}

/// A side being gathered: `None` once something it needs cannot be expressed.
struct Gathering<P> {
    rules: Option<Rules<P>>,
    since: Option<Timestamp>,
}

impl<P: Ord> Gathering<P> {
    fn new() -> Self {
        Gathering {
            rules: Some(Rules::new()),
            since: None,
        }
    }

    fn seen(&mut self, at: Timestamp) {
        self.since = Some(self.since.map_or(at, |s| s.min(at)));
    }

    fn allow(&mut self, peer: P, ports: &Ports) {
        if let Some(rules) = self.rules.as_mut() {
            rules.entry(peer).or_default().extend(ports.iter().cloned());
        }
    }

    /// Gives up on this side; true the first time (so the note is written once).
    fn give_up(&mut self) -> bool {
        self.rules.take().is_some()
    }
}

/// Gathers what `observed` needs allowed, with what `inventory` knows; see the module docs.
pub fn allowed(observed: &[ObservedTraffic], inventory: &Inventory) -> Allowed {
    let mut egress: BTreeMap<WorkloadKey, Gathering<Destination>> = BTreeMap::new();
    let mut ingress: BTreeMap<WorkloadKey, Gathering<Source>> = BTreeMap::new();
    let mut notes = Vec::new();
    // A Service whose pods cannot be told: (its namespace, a client calling it, why). Its pods
    // are those of the namespace (a Service's endpoints are nearly always its own namespace's).
    let mut blind: Vec<(String, WorkloadKey, String)> = Vec::new();
    for ot in observed {
        let client = WorkloadKey::new(&ot.spec.client.namespace, &ot.spec.client.name);
        let Some(status) = &ot.status else { continue };
        if status.targets.is_empty() && status.internet_targets.is_empty() {
            continue;
        }
        let source = source_of(inventory, &client);
        let out = egress.entry(client.clone()).or_insert_with(Gathering::new);
        for target in &status.targets {
            out.seen(target.first_seen.0);
            let ports = target_ports(inventory, target);
            match destination(inventory, target) {
                Ok(to) => out.allow(to, &ports),
                Err(why) => {
                    if out.give_up() {
                        notes.push(format!(
                            "no egress policy for {}.{}: {why}",
                            client.name, client.namespace
                        ));
                    }
                }
            }
            let servers = match servers_of(inventory, target) {
                Ok(Some(servers)) => servers,
                Ok(None) => continue,
                Err(why) => {
                    blind.push((target.namespace.clone(), client.clone(), why));
                    continue;
                }
            };
            for server in servers {
                let into = ingress.entry(server.clone()).or_insert_with(Gathering::new);
                into.seen(target.first_seen.0);
                match &source {
                    Ok(from) => into.allow(from.clone(), &ports),
                    Err(why) => {
                        if into.give_up() {
                            notes.push(format!(
                                "no ingress policy for {}.{}: its client {}.{}: {why}",
                                server.name, server.namespace, client.name, client.namespace
                            ));
                        }
                    }
                }
            }
        }
        for target in &status.internet_targets {
            out.seen(target.first_seen.0);
            let mut ips: Vec<IpAddr> = target.ips.iter().filter_map(|ip| ip.parse().ok()).collect();
            ips.sort();
            ips.dedup();
            if ips.is_empty() && target.dns_name.is_none() {
                continue;
            }
            let ports: Ports = target
                .ports
                .iter()
                .map(|p| (protocol(p.protocol), PortKey::Number(i32::from(p.port))))
                .collect();
            let to = Destination::Internet {
                name: target.dns_name.clone(),
                ips,
            };
            out.allow(to, &ports);
        }
    }

    for (namespace, client, why) in &blind {
        for (server, side) in ingress.iter_mut() {
            if server.namespace == *namespace && side.give_up() {
                notes.push(format!(
                    "no ingress policy for {}.{}: its client {}.{} calls {why}",
                    server.name, server.namespace, client.name, client.namespace
                ));
            }
        }
    }

    let mut allowed = Allowed::default();
    for (client, side) in egress {
        let Some(rules) = side.rules else { continue };
        match inventory.workloads.get(&client) {
            Some(pods) if !pods.host_network => {
                let side = Side {
                    selector: pods.selector.clone(),
                    rules,
                    since: side.since,
                };
                allowed.egress.insert(client, side);
            }
            Some(_) => notes.push(format!(
                "no egress policy for {}.{}: its pods use the host network, which namespaced policies do not select",
                client.name, client.namespace
            )),
            None => notes.push(format!(
                "no egress policy for {}.{}: its pods cannot be selected (workload not found, or its pod template has no labels)",
                client.name, client.namespace
            )),
        }
    }
    for (server, side) in ingress {
        let Some(rules) = side.rules else { continue };
        let Some(pods) = inventory.workloads.get(&server) else {
            continue;
        };
        if pods.host_network {
            continue;
        }
        let side = Side {
            selector: pods.selector.clone(),
            rules,
            since: side.since,
        };
        allowed.ingress.insert(server, side);
    }
    notes.sort();
    notes.dedup();
    allowed.notes = notes;
    allowed
}

/// The workloads whose pods receive the calls to `target` and may get an ingress policy:
/// the target's own for a workload, those the Service selects for a Service spanning several
/// workloads, `None` for nodes and the API server; `Err` when a Service's pods cannot be told.
fn servers_of(
    inventory: &Inventory,
    target: &ObservedTarget,
) -> Result<Option<Vec<WorkloadKey>>, String> {
    if target.kind == NODE_KIND || is_api_server(target) {
        return Ok(None);
    }
    if target.kind != SERVICE_KIND {
        let key = WorkloadKey::new(&target.namespace, &target.name);
        // A workload that cannot be selected gets no ingress policy.
        return Ok(inventory.workloads.contains_key(&key).then(|| vec![key]));
    }
    let service = inventory
        .services
        .get(&WorkloadKey::new(&target.namespace, &target.name))
        .filter(|s| !s.selector.is_empty())
        .ok_or_else(|| {
            format!(
                "Service {}.{}, whose pods cannot be told (not found, or it has no selector)",
                target.name, target.namespace
            )
        })?;
    let servers = inventory
        .workloads
        .iter()
        .filter(|(key, pods)| {
            key.namespace == target.namespace
                && service
                    .selector
                    .iter()
                    .all(|(k, v)| pods.labels.get(k) == Some(v))
        })
        .map(|(key, _)| key.clone())
        .collect();
    Ok(Some(servers))
}

/// Where calls to `target` go.
fn destination(inventory: &Inventory, target: &ObservedTarget) -> Result<Destination, String> {
    if target.kind == NODE_KIND {
        return Ok(Destination::Nodes);
    }
    if target.kind == SERVICE_KIND {
        if is_api_server(target) {
            if inventory.api_server.is_empty() {
                return Err("the API server's endpoints are not known".into());
            }
            return Ok(Destination::ApiServer);
        }
        return Err(format!(
            "calls to Service {}.{} reach pods of several workloads",
            target.name, target.namespace
        ));
    }
    let key = WorkloadKey::new(&target.namespace, &target.name);
    match inventory.workloads.get(&key) {
        Some(pods) if pods.host_network => Ok(Destination::Nodes),
        Some(pods) => Ok(Destination::Pods(
            target.namespace.clone(),
            SelectorKey::of(&pods.selector),
        )),
        None => Err(format!(
            "the pods of its target {}.{} cannot be selected",
            target.name, target.namespace
        )),
    }
}

/// Where a workload's calls come from.
fn source_of(inventory: &Inventory, workload: &WorkloadKey) -> Result<Source, String> {
    match inventory.workloads.get(workload) {
        Some(pods) if pods.host_network => Ok(Source::Nodes),
        Some(pods) => Ok(Source::Pods(
            workload.namespace.clone(),
            SelectorKey::of(&pods.selector),
        )),
        None => Err("its pods cannot be selected".into()),
    }
}

fn is_api_server(target: &ObservedTarget) -> bool {
    (target.namespace.as_str(), target.name.as_str()) == API_SERVER
}

/// The pod ports the calls to `target` reach (and, for the API server, its endpoints' port).
fn target_ports(inventory: &Inventory, target: &ObservedTarget) -> Ports {
    let service = match target.kind.as_str() {
        SERVICE_KIND => Some(target.service.as_deref().unwrap_or(&target.name)),
        _ => target.service.as_deref(),
    };
    let mut ports = Ports::new();
    for p in &target.ports {
        let proto = protocol(p.protocol);
        for pod_port in inventory.pod_ports(&target.namespace, service, p.port, p.protocol) {
            ports.insert((proto.clone(), PortKey::of(&pod_port)));
        }
    }
    if is_api_server(target) {
        for (_, port) in &inventory.api_server {
            ports.insert(("TCP".into(), PortKey::Number(i32::from(*port))));
        }
    }
    ports
}

fn protocol(p: Protocol) -> String {
    p.as_str().to_string()
}
