use std::collections::BTreeMap;

use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::{Value, json};
use trafficmap_api::ObservedTraffic;
use trafficmap_api::observed::Protocol;

use super::Drafted;
use super::inventory::{Inventory, ServiceInfo, ServicePort, WorkloadKey, WorkloadPods};
use super::networkpolicy::render;
use crate::cli::fixtures::{client, internet, target};

pub(super) fn app(name: &str) -> LabelSelector {
    LabelSelector {
        match_labels: Some(BTreeMap::from([("app".to_string(), name.to_string())])),
        match_expressions: None,
    }
}

pub(super) fn pods(name: &str, host_network: bool) -> WorkloadPods {
    WorkloadPods {
        selector: app(name),
        host_network,
        labels: BTreeMap::from([("app".to_string(), name.to_string())]),
        ..WorkloadPods::default()
    }
}

/// checkout and cart in shop, ledger in pay; Services in front of cart (80 -> http) and ledger
/// (9090 -> 9091); CoreDNS in kube-system; one node; the API server at 10.0.0.1:6443.
pub(super) fn inventory() -> Inventory {
    let mut inv = Inventory {
        cluster_dns: Some(("kube-system".into(), app("kube-dns"))),
        node_ips: vec!["10.0.0.5".parse().expect("ip")],
        api_server: vec![("10.0.0.1".parse().expect("ip"), 6443)],
        ..Inventory::default()
    };
    for (ns, name) in [("shop", "checkout"), ("shop", "cart"), ("pay", "ledger")] {
        inv.workloads
            .insert(WorkloadKey::new(ns, name), pods(name, false));
    }
    inv.services.insert(
        WorkloadKey::new("shop", "cart"),
        ServiceInfo {
            headless: false,
            selector: BTreeMap::from([("app".to_string(), "cart".to_string())]),
            ports: vec![ServicePort {
                port: 80,
                protocol: Protocol::Tcp,
                target: IntOrString::String("http".into()),
            }],
        },
    );
    inv.services.insert(
        WorkloadKey::new("pay", "ledger"),
        ServiceInfo {
            headless: false,
            selector: BTreeMap::from([("app".to_string(), "ledger".to_string())]),
            ports: vec![ServicePort {
                port: 9090,
                protocol: Protocol::Tcp,
                target: IntOrString::Int(9091),
            }],
        },
    );
    inv
}

fn to_json(policies: &[Drafted<NetworkPolicy>]) -> Vec<Value> {
    policies
        .iter()
        .map(|d| serde_json::to_value(&d.policy).expect("json"))
        .collect()
}

fn tcp(ports: &[Value]) -> Value {
    Value::Array(
        ports
            .iter()
            .map(|p| json!({"port": p, "protocol": "TCP"}))
            .collect(),
    )
}

fn pods_peer(ns: &str, name: &str) -> Value {
    json!({
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ns}},
        "podSelector": {"matchLabels": {"app": name}},
    })
}

#[test]
fn a_client_gets_egress_to_dns_its_targets_and_the_internet_and_servers_ingress_from_it() {
    let map = [client(
        "checkout",
        "shop",
        vec![target("cart", "shop", 80), target("ledger", "pay", 9090)],
        vec![internet(
            Some("api.stripe.com"),
            &["192.0.2.1", "192.0.2.2"],
            443,
        )],
    )];
    let rendered = render(&map, &inventory());
    assert!(rendered.notes.is_empty(), "{:?}", rendered.notes);
    let checkout = to_json(&rendered.policies[&WorkloadKey::new("shop", "checkout")]);
    assert_eq!(
        checkout,
        [json!({
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": "trafficmap-checkout-egress", "namespace": "shop"},
            "spec": {
                "podSelector": {"matchLabels": {"app": "checkout"}},
                "policyTypes": ["Egress"],
                "egress": [
                    {
                        "to": [pods_peer("kube-system", "kube-dns")],
                        "ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}],
                    },
                    {"to": [pods_peer("pay", "ledger")], "ports": tcp(&[json!(9090), json!(9091)])},
                    {"to": [pods_peer("shop", "cart")], "ports": tcp(&[json!(80), json!("http")])},
                    {
                        "to": [{"ipBlock": {"cidr": "192.0.2.1/32"}}, {"ipBlock": {"cidr": "192.0.2.2/32"}}],
                        "ports": tcp(&[json!(443)]),
                    },
                ],
            },
        })]
    );
    let cart = to_json(&rendered.policies[&WorkloadKey::new("shop", "cart")]);
    assert_eq!(
        cart,
        [json!({
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": "trafficmap-cart-ingress", "namespace": "shop"},
            "spec": {
                "podSelector": {"matchLabels": {"app": "cart"}},
                "policyTypes": ["Ingress"],
                "ingress": [{"from": [pods_peer("shop", "checkout")], "ports": tcp(&[json!(80), json!("http")])}],
            },
        })]
    );
}

#[test]
fn a_call_that_cannot_be_expressed_leaves_that_policy_out_rather_than_block_it() {
    let map = [client(
        "checkout",
        "shop",
        vec![target("cart", "shop", 80), target("vanished", "shop", 80)],
        vec![],
    )];
    let rendered = render(&map, &inventory());
    let checkout = rendered.policies.get(&WorkloadKey::new("shop", "checkout"));
    assert!(
        checkout.is_none(),
        "checkout must stay unisolated: {checkout:?}"
    );
    assert_eq!(
        rendered.notes,
        [
            "no egress policy for checkout.shop: the pods of its target vanished.shop cannot be selected"
        ]
    );
    assert!(
        rendered
            .policies
            .contains_key(&WorkloadKey::new("shop", "cart")),
        "cart's ingress from checkout is still expressible"
    );
}

#[test]
fn host_network_clients_reach_servers_from_the_node_addresses() {
    let mut inv = inventory();
    inv.workloads
        .insert(WorkloadKey::new("shop", "agent"), pods("agent", true));
    let map = [client(
        "agent",
        "shop",
        vec![target("cart", "shop", 80)],
        vec![],
    )];
    let rendered = render(&map, &inv);
    assert!(
        !rendered
            .policies
            .contains_key(&WorkloadKey::new("shop", "agent"))
    );
    let cart = to_json(&rendered.policies[&WorkloadKey::new("shop", "cart")]);
    assert_eq!(
        cart[0]["spec"]["ingress"][0]["from"],
        json!([{"ipBlock": {"cidr": "10.0.0.5/32"}}])
    );
    assert!(
        rendered.notes[0].contains("host network"),
        "{:?}",
        rendered.notes
    );
}

#[test]
fn the_api_server_is_reached_at_its_endpoints() {
    let mut api = target("kubernetes", "default", 443);
    api.kind = "Service".into();
    api.service = Some("kubernetes".into());
    let map = [client("checkout", "shop", vec![api], vec![])];
    let rendered = render(&map, &inventory());
    let egress = to_json(&rendered.policies[&WorkloadKey::new("shop", "checkout")]);
    assert_eq!(
        egress[0]["spec"]["egress"][1],
        json!({"to": [{"ipBlock": {"cidr": "10.0.0.1/32"}}], "ports": tcp(&[json!(443), json!(6443)])})
    );
}

/// `web` calls Service `carts` (port 80 -> 8080), which selects `tier=cart`: the pods of cart
/// and of cart-canary.
fn calls_through_a_service_of_two_workloads(
    selector: &[(&str, &str)],
) -> (Vec<ObservedTraffic>, Inventory) {
    let mut inv = inventory();
    for name in ["cart", "cart-canary"] {
        let pods = inv
            .workloads
            .entry(WorkloadKey::new("shop", name))
            .or_insert_with(|| pods(name, false));
        pods.labels.insert("tier".into(), "cart".into());
    }
    inv.workloads
        .insert(WorkloadKey::new("shop", "web"), pods("web", false));
    inv.services.insert(
        WorkloadKey::new("shop", "carts"),
        ServiceInfo {
            headless: false,
            selector: selector
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ports: vec![ServicePort {
                port: 80,
                protocol: Protocol::Tcp,
                target: IntOrString::Int(8080),
            }],
        },
    );
    let mut carts = target("carts", "shop", 80);
    carts.kind = "Service".into();
    carts.service = None;
    let map = vec![
        client("checkout", "shop", vec![target("cart", "shop", 80)], vec![]),
        client("web", "shop", vec![carts], vec![]),
    ];
    (map, inv)
}

#[test]
fn every_workload_behind_a_service_of_several_admits_its_clients() {
    let (map, inv) = calls_through_a_service_of_two_workloads(&[("tier", "cart")]);
    let rendered = render(&map, &inv);
    assert_eq!(
        rendered.notes,
        [
            "no egress policy for web.shop: calls to Service carts.shop reach pods of several workloads"
        ]
    );
    let from = |workload: &str| {
        let policies = to_json(&rendered.policies[&WorkloadKey::new("shop", workload)]);
        let ingress = policies.last().expect("a policy")["spec"]["ingress"].clone();
        ingress
            .as_array()
            .expect("rules")
            .iter()
            .map(|r| (r["from"][0]["podSelector"].clone(), r["ports"].clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        from("cart"),
        [
            (
                json!({"matchLabels": {"app": "checkout"}}),
                tcp(&[json!(80), json!("http")])
            ),
            (
                json!({"matchLabels": {"app": "web"}}),
                tcp(&[json!(80), json!(8080)])
            ),
        ]
    );
    assert_eq!(
        from("cart-canary"),
        [(
            json!({"matchLabels": {"app": "web"}}),
            tcp(&[json!(80), json!(8080)])
        )]
    );
}

#[test]
fn a_service_whose_pods_cannot_be_told_leaves_its_namespace_without_ingress_policies() {
    let (map, inv) = calls_through_a_service_of_two_workloads(&[]);
    let rendered = render(&map, &inv);
    assert!(
        !rendered
            .policies
            .contains_key(&WorkloadKey::new("shop", "cart")),
        "cart may be behind carts: {:?}",
        rendered.policies
    );
    assert!(
        rendered.notes.contains(
            &"no ingress policy for cart.shop: its client web.shop calls Service carts.shop, whose pods cannot be told (not found, or it has no selector)".to_string()
        ),
        "{:?}",
        rendered.notes
    );
    assert!(
        rendered
            .policies
            .contains_key(&WorkloadKey::new("shop", "checkout")),
        "checkout's egress does not depend on it"
    );
}

#[test]
fn output_does_not_depend_on_the_order_of_observations() {
    let map = vec![
        client(
            "checkout",
            "shop",
            vec![target("cart", "shop", 80), target("ledger", "pay", 9090)],
            vec![],
        ),
        client("cart", "shop", vec![target("ledger", "pay", 9090)], vec![]),
    ];
    let mut reversed = map.clone();
    reversed.reverse();
    if let Some(status) = reversed[1].status.as_mut() {
        status.targets.reverse();
    }
    assert_eq!(render(&map, &inventory()), render(&reversed, &inventory()));
}

#[test]
fn pods_are_selected_by_the_controller_selector_the_cronjob_template_or_the_pod_labels() {
    use super::inventory::pods_of_object;
    let deployment = json!({"spec": {
        "selector": {"matchLabels": {"app": "web"}},
        "template": {"metadata": {"labels": {"app": "web"}}, "spec": {
            "hostNetwork": true,
            "containers": [{"ports": [{"name": "http", "containerPort": 8080}, {"containerPort": 9}]}],
        }},
    }});
    let mut web = pods("web", true);
    web.named_ports.insert("http".into(), (8080, Protocol::Tcp));
    assert_eq!(pods_of_object("Deployment", &deployment), Some(web));
    let cronjob = json!({"spec": {"jobTemplate": {"spec": {"template": {
        "metadata": {"labels": {"app": "nightly"}}, "spec": {},
    }}}}});
    assert_eq!(
        pods_of_object("CronJob", &cronjob),
        Some(pods("nightly", false))
    );
    let pod = json!({"metadata": {"labels": {"app": "solo"}}, "spec": {}});
    assert_eq!(pods_of_object("Pod", &pod), Some(pods("solo", false)));
    let unlabelled = json!({"metadata": {}, "spec": {}});
    assert_eq!(pods_of_object("Pod", &unlabelled), None);
    assert_eq!(pods_of_object("Widget", &deployment), None);
}

mod evaluation {
    use std::collections::BTreeMap;

    use trafficmap_api::observed::Protocol;

    use super::super::evaluate::{Connection, Endpoint, PodEnd, Verdict, evaluate};
    use super::super::networkpolicy::render;
    use super::*;

    fn pod(namespace: &str, app: &str, ip: &str) -> Endpoint {
        Endpoint {
            ip: Some(ip.parse().expect("ip")),
            pod: Some(PodEnd {
                namespace: namespace.into(),
                namespace_labels: BTreeMap::from([(
                    "kubernetes.io/metadata.name".to_string(),
                    namespace.to_string(),
                )]),
                labels: BTreeMap::from([("app".to_string(), app.to_string())]),
                host_network: false,
                named_ports: BTreeMap::from([("http".to_string(), (8080, Protocol::Tcp))]),
            }),
        }
    }

    fn outside(ip: &str) -> Endpoint {
        Endpoint {
            ip: Some(ip.parse().expect("ip")),
            pod: None,
        }
    }

    fn call(from: &Endpoint, to: &Endpoint, port: u16, protocol: Protocol) -> Connection {
        Connection {
            from: from.clone(),
            to: to.clone(),
            port,
            protocol,
        }
    }

    /// The policies rendered for: checkout -> cart (Service 80 -> http), checkout -> ledger
    /// (Service 9090 -> 9091), checkout -> 192.0.2.1:443.
    fn rendered() -> Vec<NetworkPolicy> {
        let map = [client(
            "checkout",
            "shop",
            vec![target("cart", "shop", 80), target("ledger", "pay", 9090)],
            vec![internet(Some("api.stripe.com"), &["192.0.2.1"], 443)],
        )];
        render(&map, &inventory())
            .policies
            .into_values()
            .flatten()
            .map(|d| d.policy)
            .collect()
    }

    #[test]
    fn every_observed_call_goes_through_what_was_rendered_for_it() {
        let policies = rendered();
        let checkout = pod("shop", "checkout", "10.244.0.2");
        let tcp = Protocol::Tcp;
        for (to, port, protocol) in [
            (pod("shop", "cart", "10.244.0.3"), 8080, tcp),
            (pod("pay", "ledger", "10.244.0.4"), 9091, tcp),
            (outside("192.0.2.1"), 443, tcp),
            (
                pod("kube-system", "kube-dns", "10.244.0.9"),
                53,
                Protocol::Udp,
            ),
            (pod("kube-system", "kube-dns", "10.244.0.9"), 53, tcp),
        ] {
            assert_eq!(
                evaluate(&policies, &call(&checkout, &to, port, protocol)),
                Verdict::Allowed,
                "checkout -> {to:?}:{port}"
            );
        }
    }

    #[test]
    fn calls_never_observed_are_blocked_by_the_side_that_is_isolated() {
        let policies = rendered();
        let checkout = pod("shop", "checkout", "10.244.0.2");
        let cart = pod("shop", "cart", "10.244.0.3");
        let ledger = pod("pay", "ledger", "10.244.0.4");
        let egress = vec!["shop/trafficmap-checkout-egress".to_string()];
        assert_eq!(
            evaluate(&policies, &call(&checkout, &cart, 9999, Protocol::Tcp)),
            Verdict::Blocked {
                egress: egress.clone(),
                ingress: vec!["shop/trafficmap-cart-ingress".into()],
            }
        );
        assert_eq!(
            evaluate(
                &policies,
                &call(&checkout, &outside("192.0.2.3"), 443, Protocol::Tcp)
            ),
            Verdict::Blocked {
                egress,
                ingress: vec![]
            }
        );
        let stranger = pod("shop", "web", "10.244.0.7");
        assert_eq!(
            evaluate(&policies, &call(&stranger, &ledger, 9091, Protocol::Tcp)),
            Verdict::Blocked {
                egress: vec![],
                ingress: vec!["pay/trafficmap-ledger-ingress".into()],
            }
        );
        assert_eq!(
            evaluate(&policies, &call(&stranger, &checkout, 5050, Protocol::Tcp)),
            Verdict::Allowed,
            "checkout serves nobody observed: not isolated for ingress"
        );
    }

    #[test]
    fn host_network_pods_are_never_isolated_and_match_no_pod_selector() {
        let policies = rendered();
        let mut agent = pod("shop", "checkout", "10.0.0.5");
        if let Some(p) = agent.pod.as_mut() {
            p.host_network = true;
        }
        let cart = pod("shop", "cart", "10.244.0.3");
        assert!(matches!(
            evaluate(&policies, &call(&agent, &cart, 8080, Protocol::Tcp)),
            Verdict::Blocked { egress, .. } if egress.is_empty()
        ));
    }
}

mod observed_calls {
    use trafficmap_api::observed::Protocol;

    use super::super::calls::observed_calls;
    use super::*;

    #[test]
    fn calls_through_a_service_arrive_on_its_target_port_and_unknown_ends_are_noted() {
        let mut inv = inventory();
        if let Some(cart) = inv.workloads.get_mut(&WorkloadKey::new("shop", "cart")) {
            cart.named_ports
                .insert("http".into(), (8080, Protocol::Tcp));
        }
        let map = [client(
            "checkout",
            "shop",
            vec![
                target("cart", "shop", 80),
                target("ledger", "pay", 9090),
                target("vanished", "shop", 80),
            ],
            vec![internet(None, &["192.0.2.1"], 443)],
        )];
        let (calls, notes) = observed_calls(&map, &inv);
        let seen: Vec<(String, u16)> = calls
            .iter()
            .map(|c| (c.target.clone(), c.connection.port))
            .collect();
        assert_eq!(
            seen,
            [
                ("cart.shop".to_string(), 8080),
                ("ledger.pay".to_string(), 9091),
                ("internet:192.0.2.1".to_string(), 443),
            ]
        );
        assert_eq!(
            notes,
            ["call of checkout.shop to vanished.shop not evaluated: its pods are not known"]
        );
        let to_cart = calls[0].connection.to.pod.as_ref().expect("a pod");
        assert_eq!(to_cart.labels.get("app").map(String::as_str), Some("cart"));
    }

    #[test]
    fn a_named_target_port_missing_from_the_pods_is_noted_not_guessed() {
        let map = [client(
            "checkout",
            "shop",
            vec![target("cart", "shop", 80)],
            vec![],
        )];
        let (calls, notes) = observed_calls(&map, &inventory());
        assert!(calls.is_empty());
        assert_eq!(
            notes,
            [
                "call of checkout.shop to cart.shop not evaluated: the named port http is not among its containers'"
            ]
        );
    }
}
