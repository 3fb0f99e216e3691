//! The map as Kubernetes NetworkPolicy: per client workload an egress policy (cluster DNS, each
//! observed target on the pod ports its calls reach, internet targets as ipBlocks of the
//! addresses seen), and per server workload an ingress policy (each observed client on those
//! ports), from what [`super::allowed`] says they must allow. Deterministic: sorted, nothing
//! time-dependent.
//!
//! The rule is to never block an observed call. Where a call cannot be expressed (a workload
//! whose pods cannot be selected, nodes or API server whose addresses are not known), the policy
//! that would have to allow it is left out, which leaves that workload unisolated in that
//! direction, and a note says why.

use std::collections::BTreeMap;
use std::net::IpAddr;

use k8s_openapi::api::networking::v1::{
    IPBlock, NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyIngressRule, NetworkPolicyPeer,
    NetworkPolicyPort, NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use trafficmap_api::ObservedTraffic;

use super::allowed::{Destination, PortKey, Ports, SelectorKey, Side, Source, allowed};
use super::inventory::{Inventory, WorkloadKey};
use super::{Drafted, Rendered};

/// Label every namespace carries with its own name.
const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";
/// DNS's port.
const DNS_PORT: i32 = 53;

/// A NetworkPolicyPeer before it is written: sorted and deduplicated.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Peer {
    /// The pods of a workload (or a Service's backends) in a namespace.
    Pods(String, SelectorKey),
    /// Addresses.
    Ips(Vec<IpAddr>),
}

/// Rules of one policy being built: peer -> ports.
type Rules = BTreeMap<Peer, Ports>;

/// Renders `observed` with what `inventory` knows; see the module docs.
pub fn render(observed: &[ObservedTraffic], inventory: &Inventory) -> Rendered<NetworkPolicy> {
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
        match ingress_policy(&server, &side, inventory) {
            Ok(policy) => rendered.policies.entry(server).or_default().push(policy),
            Err(why) => rendered.notes.push(format!(
                "no ingress policy for {}.{}: {why}",
                server.name, server.namespace
            )),
        }
    }
    rendered.notes.sort();
    rendered.notes.dedup();
    rendered
}

/// The peer of a destination; `None` for internet targets seen at no address.
fn destination_peer(inventory: &Inventory, to: &Destination) -> Result<Option<Peer>, String> {
    Ok(match to {
        Destination::Pods(namespace, selector) => {
            Some(Peer::Pods(namespace.clone(), selector.clone()))
        }
        Destination::Nodes => Some(node_peer(inventory)?),
        Destination::ApiServer => {
            let ips: Vec<IpAddr> = inventory.api_server.iter().map(|(ip, _)| *ip).collect();
            if ips.is_empty() {
                return Err("the API server's endpoints are not known".into());
            }
            Some(Peer::Ips(sorted(ips)))
        }
        Destination::Internet { ips, .. } => {
            (!ips.is_empty()).then(|| Peer::Ips(sorted(ips.clone())))
        }
    })
}

fn source_peer(inventory: &Inventory, from: &Source) -> Result<Peer, String> {
    match from {
        Source::Pods(namespace, selector) => Ok(Peer::Pods(namespace.clone(), selector.clone())),
        Source::Nodes => {
            node_peer(inventory).map_err(|why| format!("its clients on the host network: {why}"))
        }
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

fn egress_policy(
    client: &WorkloadKey,
    side: &Side<Destination>,
    inventory: &Inventory,
) -> Result<Drafted<NetworkPolicy>, String> {
    let mut rules = Rules::new();
    for (to, ports) in &side.rules {
        if let Some(peer) = destination_peer(inventory, to)? {
            rules.entry(peer).or_default().extend(ports.iter().cloned());
        }
    }
    let dns = NetworkPolicyEgressRule {
        to: inventory
            .cluster_dns
            .as_ref()
            .map(|(ns, sel)| peers(&Peer::Pods(ns.clone(), SelectorKey::of(sel)))),
        ports: Some(vec![
            port_of("UDP", &PortKey::Number(DNS_PORT)),
            port_of("TCP", &PortKey::Number(DNS_PORT)),
        ]),
    };
    let mut egress = vec![dns];
    egress.extend(rules.iter().map(|(p, ports)| NetworkPolicyEgressRule {
        to: Some(peers(p)),
        ports: Some(ports_of(ports)),
    }));
    Ok(Drafted {
        policy: NetworkPolicy {
            metadata: super::metadata(client, "egress"),
            spec: Some(NetworkPolicySpec {
                pod_selector: Some(side.selector.clone()),
                policy_types: Some(vec!["Egress".into()]),
                egress: Some(egress),
                ingress: None,
            }),
        },
        since: side.since,
    })
}

fn ingress_policy(
    server: &WorkloadKey,
    side: &Side<Source>,
    inventory: &Inventory,
) -> Result<Drafted<NetworkPolicy>, String> {
    let mut rules = Rules::new();
    for (from, ports) in &side.rules {
        let peer = source_peer(inventory, from)?;
        rules.entry(peer).or_default().extend(ports.iter().cloned());
    }
    let ingress = rules
        .iter()
        .map(|(p, ports)| NetworkPolicyIngressRule {
            from: Some(peers(p)),
            ports: Some(ports_of(ports)),
        })
        .collect();
    Ok(Drafted {
        policy: NetworkPolicy {
            metadata: super::metadata(server, "ingress"),
            spec: Some(NetworkPolicySpec {
                pod_selector: Some(side.selector.clone()),
                policy_types: Some(vec!["Ingress".into()]),
                ingress: Some(ingress),
                egress: None,
            }),
        },
        since: side.since,
    })
}

fn ports_of(ports: &Ports) -> Vec<NetworkPolicyPort> {
    ports
        .iter()
        .map(|(proto, port)| port_of(proto, port))
        .collect()
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
