//! The semantics of Kubernetes NetworkPolicy over one call, independent of any CNI: whether the
//! policies let a connection from one endpoint to another on a port through, and if not, which
//! side isolates it. What `diff` needs to say which observed calls policies would block.
//!
//! The rules (networking.k8s.io/v1):
//! - A pod is isolated for egress (ingress) when a policy in its namespace selects it and lists
//!   `Egress` (`Ingress`) in its policy types; `policyTypes` left out means `Ingress`, plus
//!   `Egress` when the policy has egress rules. Host-network pods are never selected.
//! - An isolated pod's connection is allowed when a rule of one of the policies selecting it
//!   matches: any of its peers matches the other end (none listed: everything), and any of its
//!   ports matches the destination port (none listed: every port). Named ports are looked up
//!   in the destination pod's container ports.
//! - A call goes through when the source's egress and the destination's ingress both allow it.

use std::collections::BTreeMap;
use std::net::IpAddr;

use k8s_openapi::api::networking::v1::{NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use trafficmap_api::coverage::ip_matches;
use trafficmap_api::observed::Protocol;

/// One end of a call.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Endpoint {
    /// Its address.
    pub ip: Option<IpAddr>,
    /// The pod, when the end is a pod (not a node or an address outside the cluster).
    pub pod: Option<PodEnd>,
}

/// A pod at one end of a call.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PodEnd {
    /// Its namespace.
    pub namespace: String,
    /// Its namespace's labels.
    pub namespace_labels: BTreeMap<String, String>,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// Runs in the node's network namespace (policies do not select it).
    pub host_network: bool,
    /// Its containers' named ports.
    pub named_ports: BTreeMap<String, (u16, Protocol)>,
}

/// A connection to evaluate: the destination port is the pod port (after any Service's DNAT).
#[derive(Clone, Debug, PartialEq)]
pub struct Connection {
    /// Who connects.
    pub from: Endpoint,
    /// Whom.
    pub to: Endpoint,
    /// Destination port.
    pub port: u16,
    /// Transport protocol.
    pub protocol: Protocol,
}

/// What the policies say of a connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// It goes through.
    Allowed,
    /// Blocked: by the source's egress isolation, the destination's ingress isolation, or both,
    /// with the names (`namespace/name`) of the policies that isolate that side.
    Blocked {
        /// Policies isolating the source for egress, when its egress blocks the call.
        egress: Vec<String>,
        /// Policies isolating the destination for ingress, when its ingress blocks the call.
        ingress: Vec<String>,
    },
}

/// What `policies` say of `connection`; see the module docs.
pub fn evaluate(policies: &[NetworkPolicy], connection: &Connection) -> Verdict {
    let egress = side(policies, connection, Direction::Egress);
    let ingress = side(policies, connection, Direction::Ingress);
    if egress.is_empty() && ingress.is_empty() {
        Verdict::Allowed
    } else {
        Verdict::Blocked { egress, ingress }
    }
}

/// One rule of a policy, as this side reads it: its peers and its ports.
type Rule<'a> = (
    Option<&'a Vec<NetworkPolicyPeer>>,
    Option<&'a Vec<NetworkPolicyPort>>,
);

#[derive(Clone, Copy, PartialEq, Eq)]
enum Direction {
    Egress,
    Ingress,
}

/// The policies that isolate this side of the connection without allowing it (empty: this
/// side lets it through).
fn side(policies: &[NetworkPolicy], c: &Connection, direction: Direction) -> Vec<String> {
    let (local, remote) = match direction {
        Direction::Egress => (&c.from, &c.to),
        Direction::Ingress => (&c.to, &c.from),
    };
    let Some(pod) = local.pod.as_ref().filter(|p| !p.host_network) else {
        return Vec::new();
    };
    let isolating: Vec<&NetworkPolicy> = policies
        .iter()
        .filter(|p| p.metadata.namespace.as_deref() == Some(pod.namespace.as_str()))
        .filter(|p| isolates(p, direction))
        .filter(|p| {
            p.spec
                .as_ref()
                .and_then(|s| s.pod_selector.as_ref())
                .is_none_or(|sel| selects(sel, &pod.labels))
        })
        .collect();
    if isolating.is_empty() {
        return Vec::new();
    }
    let destination_ports = c.to.pod.as_ref().map(|p| &p.named_ports);
    let allowed = isolating.iter().any(|p| {
        let namespace = p.metadata.namespace.as_deref().unwrap_or_default();
        let spec = p.spec.as_ref();
        let rules: Vec<Rule> = match direction {
            Direction::Egress => spec
                .and_then(|s| s.egress.as_ref())
                .into_iter()
                .flatten()
                .map(|r| (r.to.as_ref(), r.ports.as_ref()))
                .collect(),
            Direction::Ingress => spec
                .and_then(|s| s.ingress.as_ref())
                .into_iter()
                .flatten()
                .map(|r| (r.from.as_ref(), r.ports.as_ref()))
                .collect(),
        };
        rules.iter().any(|(peers, ports)| {
            let peer_ok = peers.is_none_or(|peers| {
                peers.is_empty()
                    || peers
                        .iter()
                        .any(|peer| peer_matches(peer, namespace, remote))
            });
            let port_ok = ports.is_none_or(|ports| {
                ports.is_empty()
                    || ports
                        .iter()
                        .any(|p| port_matches(p, c.port, c.protocol, destination_ports))
            });
            peer_ok && port_ok
        })
    });
    if allowed {
        return Vec::new();
    }
    let mut names: Vec<String> = isolating
        .iter()
        .map(|p| {
            format!(
                "{}/{}",
                p.metadata.namespace.as_deref().unwrap_or_default(),
                p.metadata.name.as_deref().unwrap_or_default()
            )
        })
        .collect();
    names.sort();
    names
}

/// Whether `policy` isolates the pods it selects in `direction`.
fn isolates(policy: &NetworkPolicy, direction: Direction) -> bool {
    let Some(spec) = &policy.spec else {
        return direction == Direction::Ingress;
    };
    match &spec.policy_types {
        Some(types) => types.iter().any(|t| {
            t == match direction {
                Direction::Egress => "Egress",
                Direction::Ingress => "Ingress",
            }
        }),
        None => match direction {
            Direction::Ingress => true,
            Direction::Egress => spec.egress.is_some(),
        },
    }
}

/// Whether `peer` (of a policy in `namespace`) matches the endpoint `remote`.
fn peer_matches(peer: &NetworkPolicyPeer, namespace: &str, remote: &Endpoint) -> bool {
    if let Some(block) = &peer.ip_block {
        return remote.ip.is_some_and(|ip| {
            ip_matches(&block.cidr, ip)
                && !block
                    .except
                    .iter()
                    .flatten()
                    .any(|except| ip_matches(except, ip))
        });
    }
    let Some(pod) = remote.pod.as_ref().filter(|p| !p.host_network) else {
        return false;
    };
    let namespace_ok = match &peer.namespace_selector {
        Some(sel) => selects(sel, &pod.namespace_labels),
        None => pod.namespace == namespace,
    };
    let pod_ok = peer
        .pod_selector
        .as_ref()
        .is_none_or(|sel| selects(sel, &pod.labels));
    namespace_ok && pod_ok && (peer.namespace_selector.is_some() || peer.pod_selector.is_some())
}

fn port_matches(
    rule: &NetworkPolicyPort,
    port: u16,
    protocol: Protocol,
    named: Option<&BTreeMap<String, (u16, Protocol)>>,
) -> bool {
    let rule_protocol = match rule.protocol.as_deref().unwrap_or("TCP") {
        "TCP" => Protocol::Tcp,
        "UDP" => Protocol::Udp,
        _ => return false,
    };
    if rule_protocol != protocol {
        return false;
    }
    match &rule.port {
        None => true,
        Some(IntOrString::Int(n)) => {
            let end = rule.end_port.unwrap_or(*n);
            (*n..=end).contains(&i32::from(port))
        }
        Some(IntOrString::String(name)) => named
            .and_then(|ports| ports.get(name))
            .is_some_and(|(p, proto)| *p == port && *proto == protocol),
    }
}

/// Whether `selector` selects an object with `labels` (the empty selector selects everything).
pub fn selects(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let by_labels = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let by_expressions = selector.match_expressions.iter().flatten().all(|e| {
        let value = labels.get(&e.key);
        let values = e.values.as_deref().unwrap_or_default();
        match e.operator.as_str() {
            "In" => value.is_some_and(|v| values.contains(v)),
            "NotIn" => value.is_none_or(|v| !values.contains(v)),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            _ => false,
        }
    });
    by_labels && by_expressions
}
