//! The map as Kubernetes NetworkPolicy: per client workload an egress policy (cluster DNS, each
//! observed target on the pod ports its calls reach, internet targets as ipBlocks of the
//! addresses seen), and per server workload an ingress policy (each observed client on those
//! ports). Deterministic: sorted, nothing time-dependent.
//!
//! The rule is to never block an observed call. Where a call cannot be expressed (a workload
//! whose pods cannot be selected), the policy that would have to allow it is left out, which
//! leaves that workload unisolated in that direction, and a note says why.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use k8s_openapi::api::networking::v1::{
    IPBlock, NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyIngressRule, NetworkPolicyPeer,
    NetworkPolicyPort, NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use trafficmap_api::ObservedTraffic;
use trafficmap_api::naming::client_intents_name;
use trafficmap_api::observed::{ObservedTarget, Protocol};
use trafficmap_api::render::{NODE_KIND, SERVICE_KIND};

use super::inventory::{Inventory, WorkloadKey};

/// Label every namespace carries with its own name.
const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";
/// DNS's port.
const DNS_PORT: i32 = 53;
/// The API server's Service.
const API_SERVER: (&str, &str) = ("default", "kubernetes");

/// The policies of every workload, and what could not be expressed.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Rendered {
    /// Per workload, its egress and/or ingress policy (sorted by workload).
    pub policies: BTreeMap<WorkloadKey, Vec<NetworkPolicy>>,
    /// One line per policy left out, saying why.
    pub notes: Vec<String>,
}

/// A destination or source, before it becomes a NetworkPolicyPeer: sorted and deduplicated.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Peer {
    /// The pods of a workload (or a Service's backends) in a namespace.
    Pods(String, SelectorKey),
    /// Addresses.
    Ips(Vec<IpAddr>),
}

/// A label selector in a sortable form: its matchLabels and its matchExpressions as JSON.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct SelectorKey(BTreeMap<String, String>, String);

impl SelectorKey {
    fn of(selector: &LabelSelector) -> Self {
        SelectorKey(
            selector.match_labels.clone().unwrap_or_default(),
            serde_json::to_string(&selector.match_expressions).unwrap_or_default(),
        )
    }

    fn selector(&self) -> LabelSelector {
        LabelSelector {
            match_labels: (!self.0.is_empty()).then(|| self.0.clone()),
            match_expressions: serde_json::from_str(&self.1).ok().flatten(),
        }
    }
}

/// Ports by protocol, as NetworkPolicy writes them.
type Ports = BTreeSet<(String, PortKey)>;

/// A port number or name, sortable.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum PortKey {
    Number(i32),
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

/// Rules of one policy being built: peer -> ports.
type Rules = BTreeMap<Peer, Ports>;

/// Renders `observed` with what `inventory` knows; see the module docs.
pub fn render(observed: &[ObservedTraffic], inventory: &Inventory) -> Rendered {
    let mut egress: BTreeMap<WorkloadKey, Option<Rules>> = BTreeMap::new();
    let mut ingress: BTreeMap<WorkloadKey, Option<Rules>> = BTreeMap::new();
    let mut notes = Vec::new();
    for ot in observed {
        let client = WorkloadKey::new(&ot.spec.client.namespace, &ot.spec.client.name);
        let Some(status) = &ot.status else { continue };
        if status.targets.is_empty() && status.internet_targets.is_empty() {
            continue;
        }
        let source = peer_of_workload(inventory, &client);
        let egress_rules = egress
            .entry(client.clone())
            .or_insert_with(|| Some(Rules::new()));
        for target in &status.targets {
            let ports = target_ports(inventory, target);
            match destination(inventory, target) {
                Ok(peers) => {
                    if let Some(rules) = egress_rules.as_mut() {
                        for peer in peers {
                            rules.entry(peer).or_default().extend(ports.iter().cloned());
                        }
                    }
                }
                Err(why) => {
                    if egress_rules.take().is_some() {
                        notes.push(format!(
                            "no egress policy for {}.{}: {why}",
                            client.name, client.namespace
                        ));
                    }
                }
            }
            let Some(server) = pod_workload(target) else {
                continue;
            };
            if !inventory.workloads.contains_key(&server) {
                continue; // not selectable: no ingress policy for it (noted below)
            }
            let server_rules = ingress
                .entry(server.clone())
                .or_insert_with(|| Some(Rules::new()));
            match &source {
                Ok(peer) => {
                    if let Some(rules) = server_rules.as_mut() {
                        rules.entry(peer.clone()).or_default().extend(ports);
                    }
                }
                Err(why) => {
                    if server_rules.take().is_some() {
                        notes.push(format!(
                            "no ingress policy for {}.{}: its client {}.{}: {why}",
                            server.name, server.namespace, client.name, client.namespace
                        ));
                    }
                }
            }
        }
        if let Some(rules) = egress_rules.as_mut() {
            for target in &status.internet_targets {
                let ips: Vec<IpAddr> = target.ips.iter().filter_map(|ip| ip.parse().ok()).collect();
                if ips.is_empty() {
                    continue;
                }
                let ports: Ports = target
                    .ports
                    .iter()
                    .map(|p| (protocol(p.protocol), PortKey::Number(i32::from(p.port))))
                    .collect();
                rules.entry(Peer::Ips(ips)).or_default().extend(ports);
            }
        }
    }

    let mut policies: BTreeMap<WorkloadKey, Vec<NetworkPolicy>> = BTreeMap::new();
    for (client, rules) in egress {
        let Some(rules) = rules else { continue };
        match inventory.workloads.get(&client) {
            Some(pods) if !pods.host_network => {
                let policy = egress_policy(&client, &pods.selector, rules, inventory);
                policies.entry(client).or_default().push(policy);
            }
            Some(_) => notes.push(format!(
                "no egress policy for {}.{}: its pods use the host network, which NetworkPolicy does not select",
                client.name, client.namespace
            )),
            None => notes.push(format!(
                "no egress policy for {}.{}: its pods cannot be selected (workload not found, or its pod template has no labels)",
                client.name, client.namespace
            )),
        }
    }
    for (server, rules) in ingress {
        let Some(rules) = rules else { continue };
        let Some(pods) = inventory.workloads.get(&server) else {
            continue;
        };
        if pods.host_network {
            continue;
        }
        let policy = ingress_policy(&server, &pods.selector, rules);
        policies.entry(server).or_default().push(policy);
    }
    notes.sort();
    notes.dedup();
    Rendered { policies, notes }
}

/// The workload a target's pods belong to, for targets that are pods of a workload.
fn pod_workload(target: &ObservedTarget) -> Option<WorkloadKey> {
    (target.kind != SERVICE_KIND && target.kind != NODE_KIND)
        .then(|| WorkloadKey::new(&target.namespace, &target.name))
}

/// Where calls to `target` go, as peers.
fn destination(inventory: &Inventory, target: &ObservedTarget) -> Result<Vec<Peer>, String> {
    if target.kind == NODE_KIND {
        return node_peer(inventory).map(|p| vec![p]);
    }
    if target.kind == SERVICE_KIND {
        if (target.namespace.as_str(), target.name.as_str()) == API_SERVER {
            let ips: Vec<IpAddr> = inventory.api_server.iter().map(|(ip, _)| *ip).collect();
            if ips.is_empty() {
                return Err("the API server's endpoints are not known".into());
            }
            return Ok(vec![Peer::Ips(sorted(ips))]);
        }
        return Err(format!(
            "calls to Service {}.{} reach pods of several workloads",
            target.name, target.namespace
        ));
    }
    let key = WorkloadKey::new(&target.namespace, &target.name);
    match inventory.workloads.get(&key) {
        Some(pods) if pods.host_network => node_peer(inventory).map(|p| vec![p]),
        Some(pods) => Ok(vec![Peer::Pods(
            target.namespace.clone(),
            SelectorKey::of(&pods.selector),
        )]),
        None => Err(format!(
            "the pods of its target {}.{} cannot be selected",
            target.name, target.namespace
        )),
    }
}

/// Where a workload's calls come from, as a peer.
fn peer_of_workload(inventory: &Inventory, workload: &WorkloadKey) -> Result<Peer, String> {
    match inventory.workloads.get(workload) {
        Some(pods) if pods.host_network => node_peer(inventory),
        Some(pods) => Ok(Peer::Pods(
            workload.namespace.clone(),
            SelectorKey::of(&pods.selector),
        )),
        None => Err("its pods cannot be selected".into()),
    }
}

fn node_peer(inventory: &Inventory) -> Result<Peer, String> {
    if inventory.node_ips.is_empty() {
        return Err("the nodes' addresses are not known".into());
    }
    Ok(Peer::Ips(sorted(inventory.node_ips.clone())))
}

fn sorted(mut ips: Vec<IpAddr>) -> Vec<IpAddr> {
    ips.sort();
    ips.dedup();
    ips
}

/// The pod ports the calls to `target` reach (and, for the API server, its endpoints' port).
fn target_ports(inventory: &Inventory, target: &ObservedTarget) -> Ports {
    let mut ports = Ports::new();
    for p in &target.ports {
        let proto = protocol(p.protocol);
        for pod_port in inventory.pod_ports(
            &target.namespace,
            target.service.as_deref(),
            p.port,
            p.protocol,
        ) {
            ports.insert((proto.clone(), PortKey::of(&pod_port)));
        }
    }
    if (target.namespace.as_str(), target.name.as_str()) == API_SERVER {
        for (_, port) in &inventory.api_server {
            ports.insert(("TCP".into(), PortKey::Number(i32::from(*port))));
        }
    }
    ports
}

fn protocol(p: Protocol) -> String {
    p.as_str().to_string()
}

fn policy_name(workload: &WorkloadKey, direction: &str) -> String {
    client_intents_name(&format!("trafficmap-{}-{direction}", workload.name))
}

fn metadata(workload: &WorkloadKey, direction: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(policy_name(workload, direction)),
        namespace: Some(workload.namespace.clone()),
        ..ObjectMeta::default()
    }
}

fn egress_policy(
    client: &WorkloadKey,
    selector: &LabelSelector,
    rules: Rules,
    inventory: &Inventory,
) -> NetworkPolicy {
    let dns_ports = Some(vec![
        port_of("UDP", &PortKey::Number(DNS_PORT)),
        port_of("TCP", &PortKey::Number(DNS_PORT)),
    ]);
    let dns = NetworkPolicyEgressRule {
        to: inventory
            .cluster_dns
            .as_ref()
            .map(|(ns, sel)| peers(&Peer::Pods(ns.clone(), SelectorKey::of(sel)))),
        ports: dns_ports,
    };
    let mut egress = vec![dns];
    egress.extend(rules.into_iter().map(|(p, ports)| {
        NetworkPolicyEgressRule {
            to: Some(peers(&p)),
            ports: Some(
                ports
                    .iter()
                    .map(|(proto, port)| port_of(proto, port))
                    .collect(),
            ),
        }
    }));
    NetworkPolicy {
        metadata: metadata(client, "egress"),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(selector.clone()),
            policy_types: Some(vec!["Egress".into()]),
            egress: Some(egress),
            ingress: None,
        }),
    }
}

fn ingress_policy(server: &WorkloadKey, selector: &LabelSelector, rules: Rules) -> NetworkPolicy {
    let ingress = rules
        .into_iter()
        .map(|(p, ports)| NetworkPolicyIngressRule {
            from: Some(peers(&p)),
            ports: Some(
                ports
                    .iter()
                    .map(|(proto, port)| port_of(proto, port))
                    .collect(),
            ),
        })
        .collect();
    NetworkPolicy {
        metadata: metadata(server, "ingress"),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(selector.clone()),
            policy_types: Some(vec!["Ingress".into()]),
            ingress: Some(ingress),
            egress: None,
        }),
    }
}

/// The NetworkPolicyPeers of a peer: one for a workload's pods, one per address.
fn peers(p: &Peer) -> Vec<NetworkPolicyPeer> {
    match p {
        Peer::Pods(namespace, selector) => vec![NetworkPolicyPeer {
            namespace_selector: Some(LabelSelector {
                match_labels: Some(BTreeMap::from([(
                    NAMESPACE_NAME_LABEL.to_string(),
                    namespace.clone(),
                )])),
                match_expressions: None,
            }),
            pod_selector: Some(selector.selector()),
            ip_block: None,
        }],
        Peer::Ips(ips) => ips
            .iter()
            .map(|ip| NetworkPolicyPeer {
                ip_block: Some(IPBlock {
                    cidr: host_cidr(*ip),
                    except: None,
                }),
                ..NetworkPolicyPeer::default()
            })
            .collect(),
    }
}

fn host_cidr(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => format!("{v4}/32"),
        IpAddr::V6(v6) => format!("{v6}/128"),
    }
}

fn port_of(protocol: &str, port: &PortKey) -> NetworkPolicyPort {
    NetworkPolicyPort {
        protocol: Some(protocol.to_string()),
        port: Some(match port {
            PortKey::Number(n) => IntOrString::Int(*n),
            PortKey::Name(s) => IntOrString::String(s.clone()),
        }),
        end_port: None,
    }
}
