//! Index-level behaviour: target, client and observation resolution fed by hand-built events.

use trafficmap_api::report::{ConnectionObservation, DnsObservation, Observation};

use super::fixtures::*;
use super::*;
use crate::resolve::aggregate::{EdgeTarget, TargetKey};
use crate::resolve::inputs::{EndpointInfo, EndpointPortInfo};
use trafficmap_api::observed::{Protocol, SeenBy};

fn target_at(index: &Index, server: &str, port: u16, t: TimeMs) -> TargetResolution {
    index.resolve_target(ip(server), tcp(port), at(t), &[], attempt_after(t))
}

fn wl(name: &str, kind: &str, via: Option<&str>) -> TargetResolution {
    TargetResolution::Workload {
        workload: workload(name, kind).into(),
        via_service: via.map(str::to_string),
    }
}

#[test]
fn pod_ip_resolves_to_the_pods_root_owner_workload() {
    let mut idx = index();
    deployment_pod(&mut idx, "cart", "c1", "10.244.0.5");
    assert_eq!(
        target_at(&idx, "10.244.0.5", 8080, T),
        wl("cart", "Deployment", None)
    );
}

#[test]
fn reused_ip_is_attributed_to_the_pod_that_held_it_then() {
    let mut idx = index();
    deployment_pod(&mut idx, "cart", "c1", "10.244.0.5");
    idx.delete_pod("c1", 50_000);
    let owner = deployment(&mut idx, "ledger");
    let mut next = pod("l1", "10.244.0.5", Some(owner));
    next.ips_since_ms = Some(60_000);
    idx.apply_pod(next, 60_500);
    assert_eq!(
        target_at(&idx, "10.244.0.5", 80, 40_000),
        wl("cart", "Deployment", None)
    );
    assert_eq!(
        target_at(&idx, "10.244.0.5", 80, T),
        wl("ledger", "Deployment", None)
    );
    let straddling = SeenRange::new(45_000, 65_000).expect("ordered");
    let got = idx.resolve_target(ip("10.244.0.5"), tcp(80), straddling, &[], attempt_after(T));
    assert_eq!(
        got,
        TargetResolution::Dropped(DropReason::AmbiguousIp(ip("10.244.0.5")))
    );
}

#[test]
fn cluster_ip_with_one_backing_workload_resolves_to_it_via_the_service() {
    let mut idx = index();
    deployment_pod(&mut idx, "cart", "c1", "10.244.0.5");
    deployment_pod(&mut idx, "cart", "c2", "10.244.0.6");
    backed_service(&mut idx, "cart", "10.96.0.20", &["c1", "c2"]);
    assert_eq!(
        target_at(&idx, "10.96.0.20", 80, T),
        wl("cart", "Deployment", Some("cart"))
    );
}

#[test]
fn cluster_ip_whose_backends_span_several_workloads_stays_the_service() {
    let mut idx = index();
    deployment_pod(&mut idx, "cart", "c1", "10.244.0.5");
    deployment_pod(&mut idx, "cart-canary", "k1", "10.244.0.6");
    backed_service(&mut idx, "cart", "10.96.0.20", &["c1", "k1"]);
    let want = TargetResolution::Service {
        namespace: NS.into(),
        name: "cart".into(),
    };
    assert_eq!(target_at(&idx, "10.96.0.20", 80, T), want);
}

#[test]
fn service_switched_between_workloads_resolves_to_the_one_behind_it_at_call_time() {
    let mut idx = index();
    deployment_pod(&mut idx, "blue", "b1", "10.244.0.5");
    deployment_pod(&mut idx, "green", "g1", "10.244.0.6");
    backed_service(&mut idx, "web", "10.96.0.20", &["b1"]);
    idx.apply_endpoint_slice(slice(NS, "web", &["g1"], 8080), 200_000);
    assert_eq!(
        target_at(&idx, "10.96.0.20", 80, T),
        wl("blue", "Deployment", Some("web"))
    );
    assert_eq!(
        target_at(&idx, "10.96.0.20", 80, 300_000),
        wl("green", "Deployment", Some("web"))
    );
    let around_switch = target_at(&idx, "10.96.0.20", 80, 199_000);
    assert!(matches!(around_switch, TargetResolution::Service { .. }));
}

#[test]
fn a_port_the_service_does_not_expose_is_dropped() {
    let mut idx = index();
    deployment_pod(&mut idx, "cart", "c1", "10.244.0.5");
    backed_service(&mut idx, "cart", "10.96.0.20", &["c1"]);
    let got = target_at(&idx, "10.96.0.20", 443, T);
    assert_eq!(
        got,
        TargetResolution::Dropped(DropReason::NoSuchServicePort(
            ServiceKey::new(NS, "cart"),
            443
        ))
    );
}

#[test]
fn api_server_is_the_kubernetes_service_by_cluster_ip_and_by_endpoint_address() {
    let mut idx = index();
    idx.apply_service(
        service("default", "kubernetes", Some("10.96.0.1"), 443),
        CREATED,
    );
    let mut endpoints = slice("default", "kubernetes", &[], 6443);
    endpoints.endpoints.push(EndpointInfo {
        addresses: vec![ip("192.168.1.2")],
        serving: true,
        pod_uid: None,
        pod_name: None,
    });
    idx.apply_endpoint_slice(endpoints, CREATED);
    idx.apply_node(node("cp", "192.168.1.2"), CREATED);
    let api = TargetResolution::Service {
        namespace: "default".into(),
        name: "kubernetes".into(),
    };
    assert_eq!(target_at(&idx, "10.96.0.1", 443, T), api);
    assert_eq!(target_at(&idx, "192.168.1.2", 6443, T), api);
    assert_eq!(
        target_at(&idx, "192.168.1.2", 10250, T),
        TargetResolution::Node { name: "cp".into() }
    );
}

#[test]
fn calls_to_the_cluster_dns_service_are_not_targets() {
    let mut idx = index();
    let owner = deployment(&mut idx, "coredns");
    let mut dns_pod = pod("d1", "10.244.0.2", Some(owner));
    dns_pod.namespace = "kube-system".into();
    idx.apply_pod(dns_pod, CREATED);
    idx.apply_service(
        service("kube-system", "kube-dns", Some("10.96.0.10"), 53),
        CREATED,
    );
    idx.apply_endpoint_slice(slice("kube-system", "kube-dns", &["d1"], 53), CREATED);
    assert_eq!(
        target_at(&idx, "10.96.0.10", 53, T),
        TargetResolution::ClusterDns
    );
    assert_eq!(
        target_at(&idx, "10.244.0.2", 53, T),
        TargetResolution::ClusterDns
    );
}

#[test]
fn node_ip_is_a_node_even_when_host_network_pods_listen_on_it() {
    let mut idx = index();
    idx.apply_node(node("n1", "192.168.1.10"), CREATED);
    let mut agent = pod("h1", "192.168.1.10", None);
    agent.host_network = true;
    idx.apply_pod(agent, CREATED);
    assert_eq!(
        target_at(&idx, "192.168.1.10", 9100, T),
        TargetResolution::Node { name: "n1".into() }
    );
}

#[test]
fn unknown_ip_in_a_cluster_range_is_pending_then_dropped_on_the_last_attempt() {
    let mut idx = index();
    let x = ip("10.244.3.3");
    let got = idx.resolve_target(x, tcp(80), at(T), &[], attempt_after(T));
    assert_eq!(got, TargetResolution::Pending(PendingReason::UnknownIp(x)));
    let last = idx.resolve_target(x, tcp(80), at(T), &[], Attempt::last(T + 60_000));
    assert_eq!(
        last,
        TargetResolution::Dropped(DropReason::Unresolved(PendingReason::UnknownIp(x)))
    );
    // Pod ranges announced by nodes count too.
    let y = ip("10.250.0.7");
    let mut n = node("n2", "192.168.1.11");
    n.pod_cidrs = vec!["10.250.0.0/24".parse().expect("cidr")];
    idx.apply_node(n, CREATED);
    let got = idx.resolve_target(y, tcp(80), at(T), &[], attempt_after(T));
    assert_eq!(got, TargetResolution::Pending(PendingReason::UnknownIp(y)));
}

#[test]
fn ip_outside_the_cluster_is_internet_with_the_internet_names_resolved_to_it() {
    let idx = index();
    let names = vec![
        "api.example.com".to_string(),
        "x.shop.svc.cluster.local".to_string(),
    ];
    let got = idx.resolve_target(ip("192.0.2.1"), tcp(443), at(T), &names, attempt_after(T));
    assert_eq!(
        got,
        TargetResolution::Internet {
            ip: ip("192.0.2.1"),
            dns_names: vec!["api.example.com".into()]
        }
    );
}

#[test]
fn headless_service_name_gives_the_pod_target_its_service() {
    let mut idx = index();
    let owner = owner_ref("StatefulSet", "db");
    idx.apply_owner(OwnerMeta {
        uid: owner.uid.clone(),
        kind: "StatefulSet".into(),
        name: "db".into(),
        namespace: NS.into(),
        owner: None,
    });
    idx.apply_pod(pod("d0", "10.244.0.8", Some(owner)), CREATED);
    idx.apply_service(service(NS, "db", None, 5432), CREATED);
    idx.apply_endpoint_slice(slice(NS, "db", &["d0"], 5432), CREATED);
    let names = vec!["db-0.db.shop.svc.cluster.local".to_string()];
    let got = idx.resolve_target(ip("10.244.0.8"), tcp(5432), at(T), &names, attempt_after(T));
    assert_eq!(got, wl("db", "StatefulSet", Some("db")));
}

#[test]
fn unknown_owner_makes_the_target_pending_not_wrongly_named() {
    let mut idx = index();
    idx.apply_pod(
        pod("c1", "10.244.0.5", Some(owner_ref("ReplicaSet", "cart-rs"))),
        CREATED,
    );
    let got = target_at(&idx, "10.244.0.5", 80, T);
    assert!(matches!(
        got,
        TargetResolution::Pending(PendingReason::UnknownOwner(_))
    ));
    let last = idx.resolve_target(ip("10.244.0.5"), tcp(80), at(T), &[], Attempt::last(T));
    assert_eq!(last, wl("cart-rs", "ReplicaSet", None));
}

#[test]
fn fresh_observations_wait_for_the_watches_to_settle() {
    let mut idx = index();
    deployment_pod(&mut idx, "cart", "c1", "10.244.0.5");
    let got = idx.resolve_target(
        ip("10.244.0.5"),
        tcp(80),
        at(T),
        &[],
        Attempt::retryable(T + 1),
    );
    assert_eq!(got, TargetResolution::Pending(PendingReason::Settling));
}

#[test]
fn sniffer_pod_uid_identifies_a_host_network_client() {
    let mut idx = index();
    let owner = owner_ref("DaemonSet", "agent");
    idx.apply_owner(OwnerMeta {
        uid: owner.uid.clone(),
        kind: "DaemonSet".into(),
        name: "agent".into(),
        namespace: NS.into(),
        owner: None,
    });
    let mut agent = pod("h1", "192.168.1.10", Some(owner));
    agent.host_network = true;
    idx.apply_pod(agent, CREATED);
    idx.apply_node(node("n1", "192.168.1.10"), CREATED);
    let with_uid = idx.resolve_client(&client("192.168.1.10", Some("h1")), at(T), attempt_after(T));
    assert_eq!(
        with_uid,
        ClientResolution::Workload(workload("agent", "DaemonSet").into())
    );
    let without = idx.resolve_client(&client("192.168.1.10", None), at(T), attempt_after(T));
    assert_eq!(without, ClientResolution::Node { name: "n1".into() });
}

#[test]
fn client_is_the_pod_that_held_the_ip_at_the_time() {
    let mut idx = index();
    deployment_pod(&mut idx, "checkout", "c1", "10.244.0.5");
    let got = idx.resolve_client(&client("10.244.0.5", None), at(T), attempt_after(T));
    assert_eq!(
        got,
        ClientResolution::Workload(workload("checkout", "Deployment").into())
    );
    let unknown_uid =
        idx.resolve_client(&client("10.244.0.5", Some("zz")), at(T), attempt_after(T));
    assert_eq!(
        unknown_uid,
        ClientResolution::Pending(PendingReason::UnknownPod("zz".into()))
    );
    let outside = idx.resolve_client(&client("192.0.2.1", None), at(T), attempt_after(T));
    assert_eq!(
        outside,
        ClientResolution::Dropped(DropReason::NotInCluster(ip("192.0.2.1")))
    );
}

fn dns(client_ip: &str, name: &str, ips: &[&str], t: TimeMs) -> DnsObservation {
    DnsObservation {
        client: client(client_ip, None),
        name: name.into(),
        ips: ips.iter().map(|s| ip(s)).collect(),
        ttl_seconds: 30,
        first_seen_ms: t,
        last_seen_ms: t,
    }
}

fn connection(client_ip: &str, server: &str, port: u16, t: TimeMs) -> Observation {
    Observation::Connection(ConnectionObservation {
        client: client(client_ip, None),
        server_ip: ip(server),
        server_port: port,
        protocol: Protocol::Tcp,
        first_seen_ms: t,
        last_seen_ms: t,
    })
}

#[test]
fn dns_answer_for_a_service_name_adds_a_dns_edge_to_its_workload() {
    let mut idx = index();
    deployment_pod(&mut idx, "checkout", "o1", "10.244.0.4");
    deployment_pod(&mut idx, "cart", "c1", "10.244.0.5");
    backed_service(&mut idx, "cart", "10.96.0.20", &["c1"]);
    let answer = dns(
        "10.244.0.4",
        "cart.shop.svc.cluster.local",
        &["10.96.0.20"],
        T,
    );
    let got = idx.resolve_observation(&Observation::Dns(answer), attempt_after(T));
    let ObservationOutcome::Edges { client, edges } = got else {
        panic!("resolved: {got:?}")
    };
    assert_eq!(client, workload("checkout", "Deployment"));
    assert_eq!(edges.len(), 1);
    assert_eq!(edges[0].seen_by, SeenBy::Dns);
    assert_eq!(edges[0].port, None);
    assert_eq!(edges[0].dns_names, vec!["cart.shop.svc.cluster.local"]);
    assert_eq!(
        edges[0].target,
        EdgeTarget::InCluster(TargetKey::new(NS, "cart", "Deployment", Some("cart")))
    );
}

#[test]
fn connection_after_a_dns_answer_is_an_internet_target_named_by_the_domain() {
    let mut idx = index();
    deployment_pod(&mut idx, "checkout", "o1", "10.244.0.4");
    let answer = dns(
        "10.244.0.4",
        "api.example.com",
        &["192.0.2.1", "192.0.2.2"],
        T,
    );
    idx.record_dns_answers(&answer);
    let got = idx.resolve_observation(&Observation::Dns(answer), attempt_after(T));
    let ObservationOutcome::Edges { edges, .. } = got else {
        panic!("resolved: {got:?}")
    };
    assert_eq!(edges.len(), 2);
    let conn = connection("10.244.0.4", "192.0.2.2", 443, T + 1_000);
    let got = idx.resolve_observation(&conn, attempt_after(T + 1_000));
    let ObservationOutcome::Edges { edges, .. } = got else {
        panic!("resolved: {got:?}")
    };
    assert_eq!(
        edges[0].target,
        EdgeTarget::Internet {
            dns_name: Some("api.example.com".into()),
            ip: ip("192.0.2.2")
        }
    );
    assert_eq!(edges[0].seen_by, SeenBy::Tcp);
}

#[test]
fn observation_waits_in_the_queue_until_the_pod_watch_catches_up() {
    let mut idx = index();
    deployment_pod(&mut idx, "checkout", "o1", "10.244.0.4");
    let conn = connection("10.244.0.4", "10.244.0.9", 8080, T);
    let mut queue = PendingQueue::new(100, 30_000);
    let first = idx.resolve_observation(&conn, attempt_after(T));
    assert!(matches!(
        first,
        ObservationOutcome::Pending(PendingReason::UnknownIp(_))
    ));
    queue.push(conn, T + 60_000);
    deployment_pod(&mut idx, "cart", "c9", "10.244.0.9");
    let drained = queue.drain(T + 61_000, |obs| {
        match idx.resolve_observation(obs, attempt_after(T)) {
            ObservationOutcome::Pending(_) => None,
            outcome => Some(outcome),
        }
    });
    assert!(drained.expired.is_empty());
    assert!(
        matches!(drained.resolved[0], ObservationOutcome::Edges { ref edges, .. } if edges.len() == 1)
    );
}

#[test]
fn endpoints_known_only_by_pod_name_resolve_through_the_pod_store() {
    let mut idx = index();
    deployment_pod(&mut idx, "cart", "c1", "10.244.0.5");
    idx.apply_service(service(NS, "cart", Some("10.96.0.20"), 80), CREATED);
    let mut by_name = slice(NS, "cart", &[], 8080);
    by_name.endpoints.push(EndpointInfo {
        addresses: vec![ip("10.244.0.5")],
        serving: true,
        pod_uid: None,
        pod_name: Some("pod-c1".into()),
    });
    by_name.ports = vec![EndpointPortInfo {
        name: Some("p".into()),
        port: Some(8080),
        protocol: Protocol::Tcp,
    }];
    idx.apply_endpoint_slice(by_name, CREATED);
    assert_eq!(
        target_at(&idx, "10.96.0.20", 80, T),
        wl("cart", "Deployment", Some("cart"))
    );
}

#[test]
fn dns_answers_received_by_the_cluster_dns_pods_are_their_upstream_lookups_not_calls() {
    let mut idx = index();
    let owner = deployment(&mut idx, "coredns");
    let mut dns_pod = pod("d1", "10.244.0.2", Some(owner));
    dns_pod.namespace = "kube-system".into();
    idx.apply_pod(dns_pod, CREATED);
    idx.apply_service(
        service("kube-system", "kube-dns", Some("10.96.0.10"), 53),
        CREATED,
    );
    idx.apply_endpoint_slice(slice("kube-system", "kube-dns", &["d1"], 53), CREATED);
    let upstream = dns("10.244.0.2", "api.example.com", &["192.0.2.1"], T);
    let got = idx.resolve_observation(&Observation::Dns(upstream), attempt_after(T));
    assert_eq!(
        got,
        ObservationOutcome::Skipped(SkipReason::ClusterDnsUpstream)
    );
}

#[test]
fn clients_in_an_excluded_namespace_are_skipped_but_stay_targets() {
    let mut idx = Index::new(
        ResolveConfig {
            excluded_namespaces: [NS.to_string()].into(),
            ..config()
        },
        0,
    );
    deployment_pod(&mut idx, "checkout", "o1", "10.244.0.4");
    deployment_pod(&mut idx, "cart", "c1", "10.244.0.5");
    let got = idx.resolve_observation(
        &connection("10.244.0.4", "10.244.0.5", 7070, T),
        attempt_after(T),
    );
    assert_eq!(
        got,
        ObservationOutcome::Skipped(SkipReason::ClientNamespaceExcluded(NS.into()))
    );
    assert_eq!(
        target_at(&idx, "10.244.0.5", 7070, T),
        wl("cart", "Deployment", None)
    );
    let mut included = index();
    deployment_pod(&mut included, "checkout", "o1", "10.244.0.4");
    deployment_pod(&mut included, "cart", "c1", "10.244.0.5");
    let got = included.resolve_observation(
        &connection("10.244.0.4", "10.244.0.5", 7070, T),
        attempt_after(T),
    );
    assert!(matches!(got, ObservationOutcome::Edges { .. }), "{got:?}");
}

fn client_at(index: &Index, pod_uid: &str, t: TimeMs) -> ClientResolution {
    index.resolve_client(
        &client("10.244.0.5", Some(pod_uid)),
        at(t),
        attempt_after(t),
    )
}

#[test]
fn a_replica_set_adopted_by_a_deployment_renames_its_pods_workload() {
    let mut idx = index();
    let rs = OwnerMeta {
        uid: "uid-cart-rs".into(),
        kind: "ReplicaSet".into(),
        name: "cart-rs".into(),
        namespace: NS.into(),
        owner: None,
    };
    idx.apply_owner(rs.clone());
    idx.apply_pod(
        pod("c1", "10.244.0.5", Some(owner_ref("ReplicaSet", "cart-rs"))),
        CREATED,
    );
    let alone = workload("cart-rs", "ReplicaSet");
    assert_eq!(
        client_at(&idx, "c1", T),
        ClientResolution::Workload(alone.into())
    );
    assert_eq!(
        target_at(&idx, "10.244.0.5", 80, T),
        wl("cart-rs", "ReplicaSet", None)
    );

    deployment(&mut idx, "cart");
    let adopted = workload("cart", "Deployment");
    assert_eq!(
        client_at(&idx, "c1", T),
        ClientResolution::Workload(adopted.into())
    );
    assert_eq!(
        target_at(&idx, "10.244.0.5", 80, T),
        wl("cart", "Deployment", None)
    );
    // The same description again changes nothing.
    idx.apply_owner(OwnerMeta {
        owner: Some(owner_ref("Deployment", "cart")),
        ..rs
    });
    assert_eq!(
        target_at(&idx, "10.244.0.5", 80, T),
        wl("cart", "Deployment", None)
    );
}

#[test]
fn a_pods_new_workload_annotation_names_it_at_once() {
    let mut idx = index();
    deployment_pod(&mut idx, "cart", "c1", "10.244.0.5");
    assert_eq!(
        target_at(&idx, "10.244.0.5", 80, T),
        wl("cart", "Deployment", None)
    );
    let mut annotated = pod("c1", "10.244.0.5", Some(owner_ref("ReplicaSet", "cart-rs")));
    annotated.workload_name_annotation = Some("checkout".into());
    idx.apply_pod(annotated, CREATED + 1);
    let named = workload("checkout", naming::ANNOTATED_WORKLOAD_KIND);
    assert_eq!(
        client_at(&idx, "c1", T),
        ClientResolution::Workload(named.into())
    );
}

#[test]
fn a_root_taken_for_a_missing_owner_on_a_last_attempt_is_not_kept() {
    let mut idx = index();
    idx.apply_pod(
        pod("c1", "10.244.0.5", Some(owner_ref("ReplicaSet", "cart-rs"))),
        CREATED,
    );
    let last = idx.resolve_target(ip("10.244.0.5"), tcp(80), at(T), &[], Attempt::last(T));
    assert_eq!(last, wl("cart-rs", "ReplicaSet", None));
    deployment(&mut idx, "cart");
    assert_eq!(
        target_at(&idx, "10.244.0.5", 80, T),
        wl("cart", "Deployment", None)
    );
}
