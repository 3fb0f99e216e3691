use trafficmap_api::observed::Protocol;
use trafficmap_api::render::{NODE_KIND, SERVICE_KIND};

use super::*;

fn workload(name: &str, kind: &str, service: Option<&str>) -> EdgeTarget {
    EdgeTarget::InCluster(TargetKey::new("shop", name, kind, service))
}

fn tcp(port: u16) -> Option<PortProtocol> {
    Some(PortProtocol {
        port,
        protocol: Protocol::Tcp,
    })
}

fn edge(
    target: EdgeTarget,
    port: Option<PortProtocol>,
    seen_by: SeenBy,
    first: TimeMs,
    last: TimeMs,
) -> ObservedEdge {
    ObservedEdge {
        target,
        port,
        dns_names: vec![],
        seen_by,
        first_seen_ms: first,
        last_seen_ms: last,
    }
}

fn internet(name: Option<&str>, ip: &str) -> EdgeTarget {
    EdgeTarget::Internet {
        dns_name: name.map(str::to_string),
        ip: ip.parse().expect("valid IP"),
    }
}

/// A new, unshared workload on every call: the map must find clients by name, not pointer.
fn client() -> Workload {
    Workload::new(WorkloadRef {
        name: "checkout".into(),
        namespace: "shop".into(),
        kind: "Deployment".into(),
    })
}

fn sample() -> ClientEdges {
    let mut edges = ClientEdges::default();
    let mut with_name = edge(
        workload("cart", "Deployment", Some("cart")),
        tcp(8080),
        SeenBy::Tcp,
        5_000,
        9_000,
    );
    with_name.dns_names = vec!["cart.shop.svc.cluster.local".into()];
    edges.record(with_name);
    edges.record(edge(
        workload("cart", "Deployment", Some("cart")),
        tcp(80),
        SeenBy::Tcp,
        1_000,
        2_000,
    ));
    edges.record(edge(
        workload("kubernetes", SERVICE_KIND, None),
        tcp(443),
        SeenBy::Tcp,
        3_000,
        3_000,
    ));
    edges.record(edge(
        workload("node-1", NODE_KIND, None),
        tcp(10250),
        SeenBy::Tcp,
        3_000,
        3_500,
    ));
    edges.record(edge(
        internet(Some("api.example.com"), "192.0.2.2"),
        None,
        SeenBy::Dns,
        4_000,
        4_000,
    ));
    edges.record(edge(
        internet(Some("api.example.com"), "192.0.2.1"),
        tcp(443),
        SeenBy::Tcp,
        4_100,
        8_000,
    ));
    edges.record(edge(
        internet(None, "198.51.100.7"),
        tcp(8443),
        SeenBy::Tcp,
        6_000,
        6_123,
    ));
    edges
}

#[test]
fn edges_to_one_target_merge_ports_names_and_ways_seen_with_min_first_and_max_last() {
    let status = sample().to_status();
    let cart = &status.targets[0];
    assert_eq!(cart.name, "cart");
    assert_eq!(
        cart.ports.iter().map(|p| p.port).collect::<Vec<_>>(),
        vec![80, 8080]
    );
    assert_eq!(cart.dns_names, vec!["cart.shop.svc.cluster.local"]);
    assert_eq!(cart.seen_by, vec![SeenBy::Tcp]);
    assert_eq!(from_time(&cart.first_seen), 1_000);
    assert_eq!(from_time(&cart.last_seen), 9_000);
    assert_eq!(status.target_count, 5);
    assert_eq!(status.last_seen.as_ref().map(from_time), Some(9_000));
}

#[test]
fn internet_targets_are_one_per_name_with_ips_merged_then_one_per_bare_ip() {
    let status = sample().to_status();
    let named = &status.internet_targets[0];
    assert_eq!(named.dns_name.as_deref(), Some("api.example.com"));
    assert_eq!(named.ips, vec!["192.0.2.1", "192.0.2.2"]);
    assert_eq!(named.seen_by, vec![SeenBy::Dns, SeenBy::Tcp]);
    assert_eq!(named.ports.len(), 1);
    let bare = &status.internet_targets[1];
    assert_eq!(bare.dns_name, None);
    assert_eq!(bare.ips, vec!["198.51.100.7"]);
}

#[test]
fn status_targets_are_sorted_by_namespace_name_kind() {
    let status = sample().to_status();
    let names: Vec<&str> = status.targets.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, vec!["cart", "kubernetes", "node-1"]);
}

#[test]
fn a_status_lists_many_targets_in_order_whatever_order_they_came_in() {
    let mut edges = ClientEdges::default();
    for i in (0..40).rev() {
        let (namespace, name) = (format!("ns-{}", i % 3), format!("w-{:02}", i % 7));
        let service = (i % 2 == 0).then(|| format!("s-{i:02}"));
        let target = EdgeTarget::InCluster(TargetKey::new(
            &namespace,
            &name,
            "Deployment",
            service.as_deref(),
        ));
        edges.record(edge(target, tcp(80), SeenBy::Tcp, 1_000, 2_000));
        let ip = format!("192.0.2.{}", i + 1);
        let domain = format!("d{:02}.example.com", i % 9);
        for dns_name in [None, Some(domain.as_str())] {
            edges.record(edge(
                internet(dns_name, &ip),
                None,
                SeenBy::Dns,
                1_000,
                1_000,
            ));
        }
    }
    let status = edges.to_status();
    let keys: Vec<_> = status
        .targets
        .iter()
        .map(|t| (t.namespace.clone(), t.name.clone(), t.service.clone()))
        .collect();
    let mut sorted = keys.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(keys, sorted);
    assert_eq!(keys.len(), 40);
    let internet: Vec<_> = status
        .internet_targets
        .iter()
        .map(|t| (t.dns_name.is_none(), t.dns_name.clone(), t.ips[0].clone()))
        .collect();
    assert_eq!(internet.len(), 9 + 40);
    assert!(internet[..9].iter().all(|(bare, ..)| !bare));
    let domains: Vec<_> = internet[..9].iter().map(|t| t.1.clone()).collect();
    assert!(domains.is_sorted(), "{domains:?}");
    let bare: Vec<std::net::IpAddr> = internet[9..]
        .iter()
        .map(|t| t.2.parse().expect("an IP"))
        .collect();
    assert!(bare.is_sorted(), "{bare:?}");
}

#[test]
fn only_a_later_last_seen_is_not_a_material_change() {
    let mut edges = sample();
    let again = edge(
        workload("cart", "Deployment", Some("cart")),
        tcp(80),
        SeenBy::Tcp,
        1_500,
        1_800,
    );
    assert_eq!(edges.record(again), Change::Unchanged);
    let later = edge(
        workload("cart", "Deployment", Some("cart")),
        tcp(80),
        SeenBy::Tcp,
        1_500,
        20_000,
    );
    assert_eq!(edges.record(later), Change::LastSeenOnly);
    let new_port = edge(
        workload("cart", "Deployment", Some("cart")),
        tcp(81),
        SeenBy::Tcp,
        30_000,
        30_000,
    );
    assert_eq!(edges.record(new_port), Change::Material);
    let earlier = edge(
        workload("cart", "Deployment", Some("cart")),
        tcp(81),
        SeenBy::Tcp,
        10,
        10,
    );
    assert_eq!(edges.record(earlier), Change::Material);
    let dns = edge(
        workload("cart", "Deployment", Some("cart")),
        None,
        SeenBy::Dns,
        40_000,
        40_000,
    );
    assert_eq!(edges.record(dns), Change::Material);
}

#[test]
fn change_since_tells_last_seen_moves_from_material_changes() {
    let written = sample();
    let mut now = written.clone();
    assert_eq!(now.change_since(&written), Change::Unchanged);
    now.record(edge(
        internet(None, "198.51.100.7"),
        tcp(8443),
        SeenBy::Tcp,
        6_000,
        60_000,
    ));
    assert_eq!(now.change_since(&written), Change::LastSeenOnly);
    now.record(edge(
        workload("ledger", "StatefulSet", None),
        tcp(5432),
        SeenBy::Tcp,
        7_000,
        7_000,
    ));
    assert_eq!(now.change_since(&written), Change::Material);
}

#[test]
fn status_round_trips_to_the_same_map() {
    let edges = sample();
    let back = ClientEdges::from_status(&edges.to_status()).expect("reads back");
    assert_eq!(back, edges);
    assert_eq!(back.to_status(), edges.to_status());
}

#[test]
fn map_is_rebuilt_from_stored_observed_traffic_after_a_restart() {
    let mut map = TrafficMap::new();
    for e in [
        edge(
            workload("cart", "Deployment", Some("cart")),
            tcp(80),
            SeenBy::Tcp,
            1_000,
            2_000,
        ),
        edge(
            internet(Some("api.example.com"), "192.0.2.1"),
            tcp(443),
            SeenBy::Tcp,
            3_000,
            4_000,
        ),
    ] {
        map.record(&client(), e);
    }
    let mut ot = ObservedTraffic::for_client(client().get().clone());
    ot.status = Some(map.get(&client()).expect("client").to_status());
    map.mark_handed(&client());
    // Through JSON, as the API server stores it (times in whole seconds).
    let stored: ObservedTraffic =
        serde_json::from_value(serde_json::to_value(&ot).expect("serializes")).expect("parses");
    let mut rebuilt = TrafficMap::new();
    rebuilt.restore([&stored], Workload::new).expect("restores");
    let got = rebuilt.get(&client()).expect("client restored");
    assert_eq!(got.target_count(), 2);
    assert_eq!(
        got.change_since(map.get(&client()).expect("client")),
        Change::Unchanged
    );
    assert_eq!(rebuilt, map);
    let (_, _, change) = rebuilt.clients().next().expect("one client");
    assert_eq!(
        change,
        Change::Unchanged,
        "what is stored counts as handed over"
    );
}

#[test]
fn the_map_tells_what_changed_since_a_clients_status_was_handed_over() {
    let change = |map: &TrafficMap| map.clients().next().map(|(_, _, change)| change);
    let cart = || workload("cart", "Deployment", Some("cart"));
    let mut map = TrafficMap::new();
    map.record(&client(), edge(cart(), tcp(80), SeenBy::Tcp, 1_000, 2_000));
    assert_eq!(change(&map), Some(Change::Material), "a new client");
    map.mark_handed(&client());
    assert_eq!(change(&map), Some(Change::Unchanged));
    map.record(&client(), edge(cart(), tcp(80), SeenBy::Tcp, 1_000, 5_000));
    assert_eq!(change(&map), Some(Change::LastSeenOnly));
    map.record(
        &client(),
        edge(cart(), tcp(8080), SeenBy::Tcp, 1_000, 5_000),
    );
    map.record(&client(), edge(cart(), tcp(80), SeenBy::Tcp, 1_000, 6_000));
    assert_eq!(
        change(&map),
        Some(Change::Material),
        "a later lastSeen hides no new port"
    );
    map.mark_handed(&client());
    map.record(&client(), edge(cart(), tcp(80), SeenBy::Tcp, 1_000, 6_000));
    assert_eq!(change(&map), Some(Change::Unchanged), "a repeat");
}

#[test]
fn a_status_with_a_non_ip_internet_address_is_refused() {
    let mut status = sample().to_status();
    status.internet_targets[1].ips = vec!["not-an-ip".into()];
    assert_eq!(
        ClientEdges::from_status(&status),
        Err(AggregateError::BadIp("not-an-ip".into()))
    );
}

#[test]
fn a_client_keeps_a_bounded_number_of_internet_targets_and_what_it_had() {
    let mut map = TrafficMap::new();
    for i in 0..MAX_INTERNET_TARGETS_PER_CLIENT + 100 {
        let name = format!("n{i}.example.com");
        let kept = map.record(
            &client(),
            edge(
                internet(Some(&name), "192.0.2.1"),
                tcp(443),
                SeenBy::Dns,
                1_000,
                1_000,
            ),
        );
        assert_eq!(
            kept.is_some(),
            i < MAX_INTERNET_TARGETS_PER_CLIENT,
            "{name}"
        );
    }
    let edges = map.get(&client()).expect("client");
    assert_eq!(edges.target_count(), MAX_INTERNET_TARGETS_PER_CLIENT);
    // A target it already has still updates, and in-cluster targets are not limited.
    let again = edge(
        internet(Some("n0.example.com"), "192.0.2.1"),
        tcp(8443),
        SeenBy::Tcp,
        2_000,
        2_000,
    );
    assert_eq!(map.record(&client(), again), Some(Change::Material));
    let cart = edge(
        workload("cart", "Deployment", Some("cart")),
        tcp(80),
        SeenBy::Tcp,
        2_000,
        2_000,
    );
    assert_eq!(map.record(&client(), cart), Some(Change::Material));
}

#[test]
fn is_news_tells_in_advance_whether_recording_is_a_material_change() {
    let cart = || workload("cart", "Deployment", Some("cart"));
    let mut named = edge(cart(), tcp(8080), SeenBy::Tcp, 9_000, 9_000);
    named.dns_names = vec!["cart.shop.svc.cluster.local".into()];
    let mut other_name = named.clone();
    other_name.dns_names = vec!["cart.shop".into()];
    let candidates = [
        edge(cart(), tcp(80), SeenBy::Tcp, 1_500, 1_800),
        edge(cart(), tcp(80), SeenBy::Tcp, 1_500, 20_000),
        edge(cart(), tcp(80), SeenBy::Tcp, 10, 20_000),
        edge(cart(), tcp(81), SeenBy::Tcp, 30_000, 30_000),
        edge(cart(), None, SeenBy::Dns, 40_000, 40_000),
        edge(
            workload("ledger", "StatefulSet", None),
            tcp(5432),
            SeenBy::Tcp,
            50,
            60,
        ),
        named,
        other_name,
        edge(
            internet(None, "198.51.100.7"),
            tcp(443),
            SeenBy::Tcp,
            9_000,
            9_000,
        ),
        edge(
            internet(None, "198.51.100.8"),
            tcp(443),
            SeenBy::Tcp,
            9_000,
            9_000,
        ),
        edge(
            internet(Some("api.example.com"), "198.51.100.9"),
            tcp(443),
            SeenBy::Tcp,
            9_000,
            9_000,
        ),
    ];
    let mut edges = sample();
    let mut seen_news = 0;
    for candidate in candidates.iter().chain(candidates.iter()) {
        let material = edges.clone().record(candidate.clone()) == Change::Material;
        assert_eq!(edges.is_news(candidate), material, "{candidate:?}");
        seen_news += usize::from(material);
        edges.record(candidate.clone());
    }
    assert!(seen_news >= 3, "the candidates include news");
    let mut map = TrafficMap::new();
    let first = candidates[0].clone();
    assert!(map.is_news(&client(), &first), "an unknown client");
    map.record(&client(), first.clone());
    assert!(!map.is_news(&client(), &first));
}
