//! The map as `cilium.io/v2` CiliumNetworkPolicy, from what [`super::allowed`] says each
//! workload's policies must allow: the same policies as [`super::networkpolicy`], left out in
//! the same cases, written in Cilium's terms. Per client workload an egress policy: cluster DNS
//! through Cilium's DNS proxy (so that `toFQDNs` learns the answers), each target's pods on the
//! pod ports its calls reach, the nodes and the API server as entities, internet targets by DNS
//! name and by the addresses seen. Per server workload an ingress policy from its clients.
//! Deterministic: sorted, nothing time-dependent.
//!
//! Why each peer is written as it is (Cilium v1.20 semantics):
//! - Pods: `toEndpoints`/`fromEndpoints` with the workload's selector and the pod namespace
//!   label, as Cilium adds it to a selector that names none.
//! - Nodes and host-network pods: the `host` and `remote-node` entities; Cilium's CIDR rules
//!   never match node addresses.
//! - The API server: the `kube-apiserver` entity, on the Service port and its endpoints' port
//!   (policy sees the backend after Service translation).
//! - Internet by name: `toFQDNs` allows only addresses that Cilium's DNS proxy saw returned to
//!   the pod after the policy took effect. A pod that reuses an earlier answer (a cached one, a
//!   pooled connection) or asks another resolver would be blocked, so the addresses the map saw
//!   are allowed as `toCIDR` too.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use trafficmap_api::ObservedTraffic;

use super::allowed::{Destination, PortKey, Ports, SelectorKey, Side, Source, allowed};
use super::inventory::{Inventory, WorkloadKey};
use super::{Drafted, Rendered};

pub mod spec;

#[cfg(test)]
mod tests;

use spec::{
    API_VERSION, CiliumNetworkPolicy, DnsRule, EgressRule, Entity, FqdnSelector, IngressRule, KIND,
    L7Rules, MAX_PORTS, PortProtocol, PortRule, Rule,
};

/// The label Cilium gives every pod with its namespace's name.
pub const POD_NAMESPACE_LABEL: &str = "k8s:io.kubernetes.pod.namespace";
/// DNS's port.
const DNS_PORT: &str = "53";
/// Longest name `toFQDNs.matchName` takes.
const MAX_MATCH_NAME: usize = 255;

/// Renders `observed` with what `inventory` knows; see the module docs.
pub fn render(
    observed: &[ObservedTraffic],
    inventory: &Inventory,
) -> Rendered<CiliumNetworkPolicy> {
    let allowed = allowed(observed, inventory);
    let mut rendered = Rendered {
        notes: allowed.notes,
        ..Rendered::default()
    };
    for (client, side) in allowed.egress {
        match egress_policy(&client, &side, inventory) {
            Ok(policy) => rendered.policies.entry(client).or_default().push(policy),
            Err(why) => rendered.notes.push(format!(
                "no egress policy for {}.{}: {why}",
                client.name, client.namespace
            )),
        }
    }
    for (server, side) in allowed.ingress {
        let policy = ingress_policy(&server, &side);
        rendered.policies.entry(server).or_default().push(policy);
    }
    rendered.notes.sort();
    rendered.notes.dedup();
    rendered
}

fn egress_policy(
    client: &WorkloadKey,
    side: &Side<Destination>,
    inventory: &Inventory,
) -> Result<Drafted<CiliumNetworkPolicy>, String> {
    let mut egress = vec![cluster_dns(inventory)];
    // Internet targets with the same ports share a rule: one by names, one by addresses.
    let mut names: BTreeMap<&Ports, BTreeSet<&str>> = BTreeMap::new();
    let mut addresses: BTreeMap<&Ports, BTreeSet<IpAddr>> = BTreeMap::new();
    for (to, ports) in &side.rules {
        let to_ports = port_rules(ports);
        match to {
            Destination::Pods(namespace, selector) => egress.push(EgressRule {
                to_endpoints: vec![pods(namespace, selector)],
                to_ports,
                ..EgressRule::default()
            }),
            Destination::Nodes => egress.push(EgressRule {
                to_entities: vec![Entity::Host, Entity::RemoteNode],
                to_ports,
                ..EgressRule::default()
            }),
            Destination::ApiServer => egress.push(EgressRule {
                to_entities: vec![Entity::KubeApiserver],
                to_ports,
                ..EgressRule::default()
            }),
            Destination::Internet { name, ips } => {
                match name.as_deref() {
                    Some(name) if is_match_name(name) => {
                        names.entry(ports).or_default().insert(name);
                    }
                    _ if ips.is_empty() => {
                        return Err(format!(
                            "its internet target {} is not a name Cilium matches, and no address of it was seen",
                            name.as_deref().unwrap_or_default()
                        ));
                    }
                    _ => {}
                }
                addresses
                    .entry(ports)
                    .or_default()
                    .extend(ips.iter().copied());
            }
        }
    }
    for (ports, names) in names {
        egress.push(EgressRule {
            to_fqdns: names
                .into_iter()
                .map(|n| FqdnSelector {
                    match_name: n.to_string(),
                })
                .collect(),
            to_ports: port_rules(ports),
            ..EgressRule::default()
        });
    }
    for (ports, ips) in addresses.into_iter().filter(|(_, ips)| !ips.is_empty()) {
        egress.push(EgressRule {
            to_cidr: ips.into_iter().map(host_cidr).collect(),
            to_ports: port_rules(ports),
            ..EgressRule::default()
        });
    }
    Ok(Drafted {
        policy: policy(client, "egress", &side.selector, Vec::new(), egress),
        since: side.since,
    })
}

fn ingress_policy(server: &WorkloadKey, side: &Side<Source>) -> Drafted<CiliumNetworkPolicy> {
    let ingress = side
        .rules
        .iter()
        .map(|(from, ports)| match from {
            Source::Pods(namespace, selector) => IngressRule {
                from_endpoints: vec![pods(namespace, selector)],
                to_ports: port_rules(ports),
                ..IngressRule::default()
            },
            Source::Nodes => IngressRule {
                from_entities: vec![Entity::Host, Entity::RemoteNode],
                to_ports: port_rules(ports),
                ..IngressRule::default()
            },
        })
        .collect();
    Drafted {
        policy: policy(server, "ingress", &side.selector, ingress, Vec::new()),
        since: side.since,
    }
}

fn policy(
    workload: &WorkloadKey,
    direction: &str,
    selector: &LabelSelector,
    ingress: Vec<IngressRule>,
    egress: Vec<EgressRule>,
) -> CiliumNetworkPolicy {
    CiliumNetworkPolicy {
        api_version: API_VERSION.to_string(),
        kind: KIND.to_string(),
        metadata: super::metadata(workload, direction),
        spec: Rule {
            endpoint_selector: selector.clone(),
            ingress,
            egress,
        },
    }
}

/// DNS to the cluster DNS pods (anywhere when they are not known) on 53/UDP and 53/TCP,
/// through Cilium's DNS proxy, every name allowed.
fn cluster_dns(inventory: &Inventory) -> EgressRule {
    let port = |protocol: &str| PortProtocol {
        port: DNS_PORT.to_string(),
        protocol: protocol.to_string(),
    };
    EgressRule {
        to_endpoints: inventory
            .cluster_dns
            .iter()
            .map(|(namespace, selector)| pods(namespace, &SelectorKey::of(selector)))
            .collect(),
        to_ports: vec![PortRule {
            ports: vec![port("UDP"), port("TCP")],
            rules: Some(L7Rules {
                dns: vec![DnsRule {
                    match_pattern: "*".to_string(),
                }],
            }),
        }],
        ..EgressRule::default()
    }
}

/// The pods `selector` selects in `namespace`.
fn pods(namespace: &str, selector: &SelectorKey) -> LabelSelector {
    let mut selector = selector.selector();
    selector
        .match_labels
        .get_or_insert_with(BTreeMap::new)
        .insert(POD_NAMESPACE_LABEL.to_string(), namespace.to_string());
    selector
}

/// `ports` as port rules of at most [`MAX_PORTS`] each; none (every port) when empty.
fn port_rules(ports: &Ports) -> Vec<PortRule> {
    let ports: Vec<PortProtocol> = ports
        .iter()
        .map(|(protocol, port)| PortProtocol {
            port: match port {
                PortKey::Number(n) => n.to_string(),
                PortKey::Name(name) => name.clone(),
            },
            protocol: protocol.clone(),
        })
        .collect();
    ports
        .chunks(MAX_PORTS)
        .map(|chunk| PortRule {
            ports: chunk.to_vec(),
            rules: None,
        })
        .collect()
}

fn host_cidr(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => format!("{v4}/32"),
        IpAddr::V6(v6) => format!("{v6}/128"),
    }
}

/// Whether `name` is one `toFQDNs.matchName` takes: labels of `[-a-zA-Z0-9_]` joined by single
/// dots, an optional final dot, at most 255 characters.
pub fn is_match_name(name: &str) -> bool {
    name.len() <= MAX_MATCH_NAME
        && name
            .strip_suffix('.')
            .unwrap_or(name)
            .split('.')
            .all(|label| {
                !label.is_empty()
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            })
}
