use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use super::*;
use crate::intents::{
    ClientIntentsSpec, InternetTarget as Allow, KubernetesTarget, ServiceTarget, Workload,
};
use crate::observed::{ObservedTrafficStatus, PortProtocol, Protocol, SeenBy, WorkloadRef};

fn t0() -> Time {
    Time(Timestamp::from_second(1_700_000_000).expect("valid"))
}

fn in_cluster(name: &str, ns: &str, kind: &str, service: Option<&str>) -> ObservedTarget {
    ObservedTarget {
        name: name.into(),
        namespace: ns.into(),
        kind: kind.into(),
        service: service.map(str::to_string),
        ports: vec![PortProtocol {
            port: 80,
            protocol: Protocol::Tcp,
        }],
        dns_names: vec![],
        seen_by: vec![SeenBy::Tcp],
        first_seen: t0(),
        last_seen: t0(),
    }
}

fn internet(name: Option<&str>, ip: &str, port: u16) -> InternetTarget {
    InternetTarget {
        dns_name: name.map(str::to_string),
        ips: vec![ip.into()],
        ports: vec![PortProtocol {
            port,
            protocol: Protocol::Tcp,
        }],
        seen_by: vec![SeenBy::Tcp],
        first_seen: t0(),
        last_seen: t0(),
    }
}

fn observed(targets: Vec<ObservedTarget>, internet: Vec<InternetTarget>) -> ObservedTraffic {
    let mut ot = ObservedTraffic::for_client(WorkloadRef {
        name: "checkout".into(),
        namespace: "shop".into(),
        kind: "Deployment".into(),
    });
    ot.status = Some(ObservedTrafficStatus {
        targets,
        internet_targets: internet,
        ..ObservedTrafficStatus::default()
    });
    ot
}

fn intents(targets: Vec<Target>) -> ClientIntents {
    let mut ci = ClientIntents::new(
        "checkout",
        ClientIntentsSpec {
            workload: Workload {
                name: "checkout".into(),
                kind: Some("Deployment".into()),
            },
            targets,
        },
    );
    ci.metadata.namespace = Some("shop".into());
    ci
}

fn kubernetes(name: &str, kind: Option<&str>) -> Target {
    Target {
        kubernetes: Some(KubernetesTarget {
            name: name.into(),
            kind: kind.map(str::to_string),
            http: None,
        }),
        ..Target::default()
    }
}

fn service(name: &str) -> Target {
    Target {
        service: Some(ServiceTarget {
            name: name.into(),
            http: None,
        }),
        ..Target::default()
    }
}

fn allow(domains: &[&str], ips: &[&str], ports: &[u16]) -> Target {
    Target {
        internet: Some(Allow {
            domains: domains.iter().map(|s| s.to_string()).collect(),
            ips: ips.iter().map(|s| s.to_string()).collect(),
            ports: ports.to_vec(),
        }),
        ..Target::default()
    }
}

#[test]
fn workload_targets_are_covered_by_name_in_the_clients_namespace_or_qualified() {
    let ot = observed(
        vec![
            in_cluster("cart", "shop", "Deployment", Some("cart")),
            in_cluster("ledger", "finance", "StatefulSet", None),
            in_cluster("email", "shop", "Deployment", None),
        ],
        vec![],
    );
    let ci = intents(vec![
        kubernetes("cart", None),
        kubernetes("ledger.finance", Some("StatefulSet")),
    ]);
    assert_eq!(uncovered_targets(&ot, &ci), ["email.shop"]);
}

#[test]
fn a_kind_mismatch_or_other_namespace_does_not_cover() {
    let ot = observed(
        vec![
            in_cluster("cart", "shop", "Deployment", None),
            in_cluster("ledger", "finance", "StatefulSet", None),
        ],
        vec![],
    );
    let ci = intents(vec![
        kubernetes("cart", Some("StatefulSet")),
        kubernetes("ledger", None),
    ]);
    assert_eq!(uncovered_targets(&ot, &ci), ["cart.shop", "ledger.finance"]);
}

#[test]
fn service_targets_cover_calls_through_that_service_and_the_api_server() {
    let ot = observed(
        vec![
            in_cluster("cart", "shop", "Deployment", Some("cart-svc")),
            in_cluster("kubernetes", "default", SERVICE_KIND, None),
        ],
        vec![],
    );
    let ci = intents(vec![
        service("cart-svc"),
        kubernetes("kubernetes.default", Some("Service")),
    ]);
    assert!(uncovered_targets(&ot, &ci).is_empty());
    let none = intents(vec![]);
    assert_eq!(
        uncovered_targets(&ot, &none),
        ["cart.shop", "kubernetes.default"]
    );
}

#[test]
fn internet_targets_are_covered_by_domain_wildcard_or_cidr_and_port() {
    let ot = observed(
        vec![],
        vec![
            internet(Some("api.example.com"), "192.0.2.1", 443),
            internet(Some("files.cdn.example.net"), "192.0.2.2", 443),
            internet(None, "198.51.100.7", 8443),
            internet(Some("pay.example.org"), "192.0.2.9", 8080),
        ],
    );
    let ci = intents(vec![
        allow(&["api.example.com", "*.example.net"], &[], &[443]),
        allow(&[], &["198.51.100.0/24"], &[]),
        allow(&["pay.example.org"], &[], &[443]),
    ]);
    assert_eq!(uncovered_targets(&ot, &ci), ["internet:pay.example.org"]);
}

#[test]
fn a_wildcard_does_not_cover_the_bare_domain() {
    assert!(domain_matches("*.example.com", "a.example.com"));
    assert!(!domain_matches("*.example.com", "example.com"));
    assert!(!domain_matches("*.example.com", "badexample.com"));
}

#[test]
fn node_targets_are_never_reported_as_uncovered() {
    let ot = observed(vec![in_cluster("node-1", "", NODE_KIND, None)], vec![]);
    assert!(uncovered_targets(&ot, &intents(vec![])).is_empty());
}

#[test]
fn declared_targets_never_observed_are_listed() {
    let ot = observed(
        vec![in_cluster("cart", "shop", "Deployment", None)],
        vec![internet(Some("api.example.com"), "192.0.2.1", 443)],
    );
    let ci = intents(vec![
        kubernetes("cart", None),
        kubernetes("ledger.finance", None),
        allow(&["api.example.com"], &[], &[]),
        allow(&["old.example.com"], &[], &[]),
    ]);
    assert_eq!(
        unobserved_intents(Some(&ot), &ci),
        ["internet:old.example.com", "ledger.finance"]
    );
    assert_eq!(unobserved_intents(None, &ci).len(), 4);
}

/// ClientIntents of another client of `shop`, naming `targets`.
fn others_intents(client: &str, targets: Vec<Target>) -> ClientIntents {
    let mut ci = intents(targets);
    ci.spec.workload.name = client.into();
    ci.metadata.name = Some(client.into());
    ci
}

#[test]
fn only_calls_to_servers_some_intents_protect_are_blocked() {
    let ot = observed(
        vec![
            in_cluster("cart", "shop", "Deployment", Some("cart")),
            in_cluster("pay", "shop", "Deployment", None),
            in_cluster("ledger", "bank", "StatefulSet", None),
        ],
        vec![],
    );
    let none = intents(vec![]);
    // Nobody names a server: nothing is protected, nothing blocked.
    assert!(blocked_by_intents(&ot, &none, &[]).is_empty());
    // Another client's intents protect pay and, qualified, bank's ledger.
    let other = others_intents(
        "web",
        vec![kubernetes("pay", None), kubernetes("ledger.bank", None)],
    );
    assert_eq!(
        blocked_by_intents(&ot, &none, std::slice::from_ref(&other)),
        ["ledger.bank", "pay.shop"]
    );
    // Our own intents naming pay let that call through; ledger stays blocked.
    let own = intents(vec![kubernetes("pay", None)]);
    assert_eq!(
        blocked_by_intents(&ot, &own, &[other, own.clone()]),
        ["ledger.bank"]
    );
}

#[test]
fn a_service_intent_protects_the_calls_through_that_service() {
    let ot = observed(
        vec![in_cluster("cart", "shop", "Deployment", Some("cart"))],
        vec![],
    );
    let other = others_intents("web", vec![service("cart")]);
    assert_eq!(
        blocked_by_intents(&ot, &intents(vec![]), std::slice::from_ref(&other)),
        ["cart.shop"]
    );
    let own = intents(vec![kubernetes("cart", Some("Service"))]);
    assert!(blocked_by_intents(&ot, &own, &[other]).is_empty());
}

#[test]
fn internet_calls_are_blocked_only_once_the_client_has_internet_intents() {
    let ot = observed(
        vec![],
        vec![
            internet(Some("api.stripe.com"), "203.0.113.7", 443),
            internet(Some("hooks.slack.com"), "203.0.113.9", 443),
        ],
    );
    assert!(blocked_by_intents(&ot, &intents(vec![]), &[]).is_empty());
    let own = intents(vec![allow(&["api.stripe.com"], &[], &[443])]);
    assert_eq!(
        blocked_by_intents(&ot, &own, std::slice::from_ref(&own)),
        ["internet:hooks.slack.com"]
    );
}
