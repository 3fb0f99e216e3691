use std::net::IpAddr;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use serde_json::{Value, json};
use trafficmap_api::ObservedTraffic;
use trafficmap_api::observed::Protocol;

use super::spec::{CiliumNetworkPolicy, EgressRule, Entity, IngressRule, PortRule};
use super::{POD_NAMESPACE_LABEL, is_match_name, render};
use crate::cli::fixtures::{client, internet, target};
use crate::policy::calls::observed_calls;
use crate::policy::evaluate::{Connection, Endpoint};
use crate::policy::inventory::{Inventory, WorkloadKey};
use crate::policy::tests::{inventory, pods};

/// checkout calls cart and ledger through their Services, the API server, the node's kubelet,
/// the host-network agent, two internet names on 443 and an unnamed address on 8443.
fn map() -> Vec<ObservedTraffic> {
    let mut api = target("kubernetes", "default", 443);
    api.kind = "Service".into();
    api.service = None;
    let mut node = target("node-1", "", 10250);
    node.kind = "Node".into();
    node.service = None;
    vec![client(
        "checkout",
        "shop",
        vec![
            target("cart", "shop", 80),
            target("ledger", "pay", 9090),
            api,
            node,
            target("agent", "shop", 9100),
        ],
        vec![
            internet(Some("api.stripe.com"), &["192.0.2.2", "192.0.2.1"], 443),
            internet(Some("hooks.slack.com"), &["198.51.100.7"], 443),
            internet(None, &["203.0.113.9"], 8443),
        ],
    )]
}

/// The shared inventory, with the host-network agent and cart's container port `http`.
fn cluster() -> Inventory {
    let mut inv = inventory();
    inv.workloads
        .insert(WorkloadKey::new("shop", "agent"), pods("agent", true));
    if let Some(cart) = inv.workloads.get_mut(&WorkloadKey::new("shop", "cart")) {
        cart.named_ports
            .insert("http".into(), (8080, Protocol::Tcp));
    }
    inv
}

fn policies_of(
    rendered: &crate::policy::Rendered<CiliumNetworkPolicy>,
    namespace: &str,
    name: &str,
) -> Vec<Value> {
    rendered
        .policies
        .get(&WorkloadKey::new(namespace, name))
        .into_iter()
        .flatten()
        .map(|d| serde_json::to_value(&d.policy).expect("json"))
        .collect()
}

fn tcp(ports: &[&str]) -> Value {
    json!([{"ports": ports.iter().map(|p| json!({"port": p, "protocol": "TCP"})).collect::<Vec<_>>()}])
}

fn pods_in(namespace: &str, app: &str) -> Value {
    json!({"matchLabels": {"app": app, POD_NAMESPACE_LABEL: namespace}})
}

#[test]
fn a_client_reaches_dns_through_the_proxy_its_targets_the_api_server_nodes_and_internet_names() {
    let rendered = render(&map(), &cluster());
    assert!(rendered.notes.is_empty(), "{:?}", rendered.notes);
    assert_eq!(
        policies_of(&rendered, "shop", "checkout"),
        [json!({
            "apiVersion": "cilium.io/v2",
            "kind": "CiliumNetworkPolicy",
            "metadata": {"name": "trafficmap-checkout-egress", "namespace": "shop"},
            "spec": {
                "endpointSelector": {"matchLabels": {"app": "checkout"}},
                "egress": [
                    {
                        "toEndpoints": [pods_in("kube-system", "kube-dns")],
                        "toPorts": [{
                            "ports": [{"port": "53", "protocol": "UDP"}, {"port": "53", "protocol": "TCP"}],
                            "rules": {"dns": [{"matchPattern": "*"}]},
                        }],
                    },
                    {"toEndpoints": [pods_in("pay", "ledger")], "toPorts": tcp(&["9090", "9091"])},
                    {"toEndpoints": [pods_in("shop", "cart")], "toPorts": tcp(&["80", "http"])},
                    {"toEntities": ["host", "remote-node"], "toPorts": tcp(&["9100", "10250"])},
                    {"toEntities": ["kube-apiserver"], "toPorts": tcp(&["443", "6443"])},
                    {
                        "toFQDNs": [{"matchName": "api.stripe.com"}, {"matchName": "hooks.slack.com"}],
                        "toPorts": tcp(&["443"]),
                    },
                    {
                        "toCIDR": ["192.0.2.1/32", "192.0.2.2/32", "198.51.100.7/32"],
                        "toPorts": tcp(&["443"]),
                    },
                    {"toCIDR": ["203.0.113.9/32"], "toPorts": tcp(&["8443"])},
                ],
            },
        })]
    );
    assert_eq!(
        policies_of(&rendered, "shop", "cart"),
        [json!({
            "apiVersion": "cilium.io/v2",
            "kind": "CiliumNetworkPolicy",
            "metadata": {"name": "trafficmap-cart-ingress", "namespace": "shop"},
            "spec": {
                "endpointSelector": {"matchLabels": {"app": "cart"}},
                "ingress": [{"fromEndpoints": [pods_in("shop", "checkout")], "toPorts": tcp(&["80", "http"])}],
            },
        })]
    );
    assert!(
        policies_of(&rendered, "shop", "agent").is_empty(),
        "a host-network server cannot be selected"
    );
    for policy in rendered.policies.values().flatten() {
        assert_cilium_accepts(&policy.policy);
    }
}

#[test]
fn host_network_clients_are_admitted_from_the_node_entities_and_get_no_egress_policy() {
    let map = [client(
        "agent",
        "shop",
        vec![target("cart", "shop", 80)],
        vec![],
    )];
    let rendered = render(&map, &cluster());
    assert!(policies_of(&rendered, "shop", "agent").is_empty());
    assert_eq!(
        policies_of(&rendered, "shop", "cart")[0]["spec"]["ingress"],
        json!([{"fromEntities": ["host", "remote-node"], "toPorts": tcp(&["80", "http"])}])
    );
    assert_eq!(
        rendered.notes,
        [
            "no egress policy for agent.shop: its pods use the host network, which namespaced policies do not select"
        ]
    );
}

#[test]
fn what_networkpolicy_cannot_express_is_left_out_here_too() {
    let map = [client(
        "checkout",
        "shop",
        vec![target("cart", "shop", 80), target("vanished", "shop", 80)],
        vec![],
    )];
    let rendered = render(&map, &cluster());
    assert!(policies_of(&rendered, "shop", "checkout").is_empty());
    assert_eq!(
        rendered.notes,
        crate::policy::networkpolicy::render(&map, &cluster()).notes
    );
    let mut unknown = cluster();
    unknown.api_server.clear();
    let rendered = render(&self::map(), &unknown);
    assert_eq!(
        rendered.notes,
        ["no egress policy for checkout.shop: the API server's endpoints are not known"],
        "without its endpoints' port, the calls would be blocked after Service translation"
    );
}

#[test]
fn an_internet_name_cilium_cannot_match_is_allowed_by_address_and_without_one_left_out() {
    assert!(is_match_name("api.stripe.com"));
    assert!(is_match_name("api.stripe.com."));
    assert!(is_match_name("_sip._tcp.example.org"));
    assert!(!is_match_name("*.stripe.com"));
    assert!(!is_match_name("a..b"));
    assert!(!is_match_name(""));
    assert!(!is_match_name(&"a".repeat(256)));
    let odd = |ips: &[&str]| {
        [client(
            "checkout",
            "shop",
            vec![],
            vec![internet(Some("bad name"), ips, 443)],
        )]
    };
    let rendered = render(&odd(&["192.0.2.1"]), &cluster());
    let egress = &policies_of(&rendered, "shop", "checkout")[0]["spec"]["egress"];
    assert_eq!(
        egress[1],
        json!({"toCIDR": ["192.0.2.1/32"], "toPorts": tcp(&["443"])})
    );
    assert_eq!(egress.as_array().map(Vec::len), Some(2));
    let rendered = render(&odd(&[]), &cluster());
    assert!(policies_of(&rendered, "shop", "checkout").is_empty());
    assert_eq!(
        rendered.notes,
        [
            "no egress policy for checkout.shop: its internet target bad name is not a name Cilium matches, and no address of it was seen"
        ]
    );
}

#[test]
fn more_ports_than_a_port_rule_holds_are_split() {
    let ports: Vec<u16> = (1000..1045).collect();
    let mut many = target("ledger", "pay", 0);
    many.ports = ports
        .iter()
        .map(|p| trafficmap_api::observed::PortProtocol {
            port: *p,
            protocol: Protocol::Tcp,
        })
        .collect();
    let rendered = render(
        &[client("checkout", "shop", vec![many], vec![])],
        &cluster(),
    );
    let egress = &policies_of(&rendered, "shop", "checkout")[0]["spec"]["egress"][1];
    let sizes: Vec<usize> = egress["toPorts"]
        .as_array()
        .expect("port rules")
        .iter()
        .map(|r| r["ports"].as_array().map_or(0, Vec::len))
        .collect();
    assert_eq!(sizes, [40, 5]);
}

#[test]
fn output_does_not_depend_on_the_order_of_observations() {
    let mut shuffled = map();
    if let Some(status) = shuffled[0].status.as_mut() {
        status.targets.reverse();
        status.internet_targets.reverse();
    }
    shuffled.insert(
        0,
        client("web", "shop", vec![target("cart", "shop", 80)], vec![]),
    );
    let mut ordered = map();
    ordered.push(client(
        "web",
        "shop",
        vec![target("cart", "shop", 80)],
        vec![],
    ));
    assert_eq!(render(&shuffled, &cluster()), render(&ordered, &cluster()));
}

#[test]
fn every_observed_call_passes_each_side_that_is_isolated() {
    let inv = cluster();
    let map = map();
    let rendered = render(&map, &inv);
    let policies: Vec<&CiliumNetworkPolicy> = rendered
        .policies
        .values()
        .flatten()
        .map(|d| &d.policy)
        .collect();
    let (calls, notes) = observed_calls(&map, &inv);
    assert!(notes.is_empty(), "{notes:?}");
    assert_eq!(calls.len(), 9, "every call is placed: {calls:?}");
    for call in &calls {
        let c = &call.connection;
        for (side, isolated, allowed) in [
            (
                "egress",
                egress_isolated(&policies, c),
                egress_allows(&policies, c, &inv),
            ),
            (
                "ingress",
                ingress_isolated(&policies, c),
                ingress_allows(&policies, c),
            ),
        ] {
            assert!(
                !isolated || allowed,
                "{side} blocks {} -> {} on {}",
                call.client.name,
                call.target,
                c.port
            );
        }
    }
    let stranger = Connection {
        to: Endpoint {
            ip: Some("192.0.2.3".parse().expect("ip")),
            pod: None,
        },
        ..calls[0].connection.clone()
    };
    assert!(
        egress_isolated(&policies, &stranger) && !egress_allows(&policies, &stranger, &inv),
        "an address never seen is blocked"
    );
}

/// What the Cilium agent checks beyond the CRD schema (pkg/policy/api/rule_validation.go): one
/// kind of peer per rule, at most 40 ports per port rule, DNS rules only on port 53 of egress.
fn assert_cilium_accepts(policy: &CiliumNetworkPolicy) {
    for rule in &policy.spec.egress {
        let peers = [
            !rule.to_endpoints.is_empty(),
            !rule.to_entities.is_empty(),
            !rule.to_cidr.is_empty(),
            !rule.to_fqdns.is_empty(),
        ];
        assert!(peers.iter().filter(|p| **p).count() <= 1, "{rule:?}");
        check_port_rules(&rule.to_ports, true);
    }
    for rule in &policy.spec.ingress {
        assert!(rule.from_endpoints.is_empty() || rule.from_entities.is_empty());
        check_port_rules(&rule.to_ports, false);
    }
}

fn check_port_rules(rules: &[PortRule], egress: bool) {
    for rule in rules {
        assert!(!rule.ports.is_empty() && rule.ports.len() <= 40, "{rule:?}");
        if rule.rules.is_some() {
            assert!(
                egress && rule.ports.iter().all(|p| p.port == "53"),
                "{rule:?}"
            );
        }
    }
}

/// Whether `selector` (matchLabels only, as rendered) selects the pod end of `end`.
fn selects(selector: &LabelSelector, end: &Endpoint, policy_namespace: &str) -> bool {
    let Some(pod) = end.pod.as_ref().filter(|p| !p.host_network) else {
        return false;
    };
    let labels = selector.match_labels.clone().unwrap_or_default();
    let namespace = labels
        .get(POD_NAMESPACE_LABEL)
        .map_or(policy_namespace, String::as_str);
    namespace == pod.namespace
        && labels
            .iter()
            .filter(|(k, _)| *k != POD_NAMESPACE_LABEL)
            .all(|(k, v)| pod.labels.get(k) == Some(v))
}

fn namespace_of(policy: &CiliumNetworkPolicy) -> &str {
    policy.metadata.namespace.as_deref().unwrap_or_default()
}

fn egress_isolated(policies: &[&CiliumNetworkPolicy], c: &Connection) -> bool {
    policies.iter().any(|p| {
        !p.spec.egress.is_empty() && selects(&p.spec.endpoint_selector, &c.from, namespace_of(p))
    })
}

fn ingress_isolated(policies: &[&CiliumNetworkPolicy], c: &Connection) -> bool {
    policies.iter().any(|p| {
        !p.spec.ingress.is_empty() && selects(&p.spec.endpoint_selector, &c.to, namespace_of(p))
    })
}

/// Whether `rules` let `c` through to the pod end `to` (every port when there are none).
fn ports_allow(rules: &[PortRule], c: &Connection, to: &Endpoint) -> bool {
    rules.is_empty()
        || rules.iter().flat_map(|r| &r.ports).any(|p| {
            p.protocol == c.protocol.as_str()
                && match p.port.parse::<u16>() {
                    Ok(n) => n == c.port,
                    Err(_) => to
                        .pod
                        .as_ref()
                        .and_then(|pod| pod.named_ports.get(&p.port))
                        .is_some_and(|(n, proto)| *n == c.port && *proto == c.protocol),
                }
        })
}

/// Cilium's identity of a destination outside the pods: node entities for node addresses and
/// host-network pods, kube-apiserver for the API server's, else the address.
fn entities(end: &Endpoint, inv: &Inventory) -> Vec<Entity> {
    let on_node = end.pod.as_ref().is_some_and(|p| p.host_network)
        || end.ip.is_some_and(|ip| inv.node_ips.contains(&ip));
    let mut out = Vec::new();
    if on_node {
        out.extend([Entity::Host, Entity::RemoteNode]);
    }
    if end
        .ip
        .is_some_and(|ip| inv.api_server.iter().any(|(a, _)| *a == ip))
    {
        out.push(Entity::KubeApiserver);
    }
    out
}

fn egress_allows(policies: &[&CiliumNetworkPolicy], c: &Connection, inv: &Inventory) -> bool {
    let rules: Vec<(&EgressRule, &str)> = policies
        .iter()
        .filter(|p| selects(&p.spec.endpoint_selector, &c.from, namespace_of(p)))
        .flat_map(|p| p.spec.egress.iter().map(move |r| (r, namespace_of(p))))
        .collect();
    let is_entity = !entities(&c.to, inv).is_empty();
    rules.iter().any(|(r, ns)| {
        let peer = r.to_endpoints.iter().any(|s| selects(s, &c.to, ns))
            || r.to_entities
                .iter()
                .any(|e| entities(&c.to, inv).contains(e))
            || (!is_entity
                && c.to.pod.is_none()
                && c.to
                    .ip
                    .is_some_and(|ip: IpAddr| r.to_cidr.contains(&super::host_cidr(ip))));
        peer && ports_allow(&r.to_ports, c, &c.to)
    })
}

fn ingress_allows(policies: &[&CiliumNetworkPolicy], c: &Connection) -> bool {
    let rules: Vec<(&IngressRule, &str)> = policies
        .iter()
        .filter(|p| selects(&p.spec.endpoint_selector, &c.to, namespace_of(p)))
        .flat_map(|p| p.spec.ingress.iter().map(move |r| (r, namespace_of(p))))
        .collect();
    let from_node = c.from.pod.as_ref().is_some_and(|p| p.host_network);
    rules.iter().any(|(r, ns)| {
        let peer = r.from_endpoints.iter().any(|s| selects(s, &c.from, ns))
            || (from_node && r.from_entities.contains(&Entity::Host));
        peer && ports_allow(&r.to_ports, c, &c.to)
    })
}

#[test]
fn the_checker_itself_sees_a_missing_rule() {
    let inv = cluster();
    let map = map();
    let mut rendered = render(&map, &inv);
    let checkout = rendered
        .policies
        .get_mut(&WorkloadKey::new("shop", "checkout"))
        .expect("egress");
    checkout[0]
        .policy
        .spec
        .egress
        .retain(|r| r.to_cidr.is_empty());
    let policies: Vec<&CiliumNetworkPolicy> = rendered
        .policies
        .values()
        .flatten()
        .map(|d| &d.policy)
        .collect();
    let (calls, _) = observed_calls(&map, &inv);
    let blocked = calls
        .iter()
        .filter(|call| !egress_allows(&policies, &call.connection, &inv))
        .count();
    assert_eq!(blocked, 4, "the four addresses seen, by name or not");
}
