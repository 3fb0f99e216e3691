use trafficmap_api::observed::Protocol;

use super::*;
use crate::resolve::inputs::{EndpointInfo, ServicePortInfo};

const SLACK: u64 = 5_000;
const RETENTION: u64 = 600_000;

fn ip(s: &str) -> IpAddr {
    s.parse().expect("valid IP")
}

fn index(started_at_ms: TimeMs) -> ServiceIndex {
    ServiceIndex::new(ServiceTiming {
        retention_ms: RETENTION,
        guard_ms: 2_000,
        slack_ms: SLACK,
        started_at_ms,
    })
}

fn service(
    name: &str,
    cluster_ip: Option<&str>,
    ports: &[(&str, u16)],
    created: TimeMs,
) -> ServiceInfo {
    ServiceInfo {
        namespace: "shop".into(),
        name: name.into(),
        cluster_ips: cluster_ip.map(ip).into_iter().collect(),
        ports: ports
            .iter()
            .map(|(n, p)| ServicePortInfo {
                name: Some((*n).to_string()),
                port: *p,
                protocol: Protocol::Tcp,
            })
            .collect(),
        created_ms: Some(created),
        created_while_watched: false,
    }
}

fn slice(name: &str, service: &str, pods: &[&str], ports: &[(&str, u16)]) -> EndpointSliceInfo {
    EndpointSliceInfo {
        namespace: "shop".into(),
        name: name.into(),
        service_name: Some(service.into()),
        endpoints: pods
            .iter()
            .map(|uid| EndpointInfo {
                addresses: vec![ip("10.244.0.9")],
                serving: true,
                pod_uid: Some((*uid).to_string()),
                pod_name: None,
            })
            .collect(),
        ports: ports
            .iter()
            .map(|(n, p)| EndpointPortInfo {
                name: Some((*n).to_string()),
                port: Some(*p),
                protocol: Protocol::Tcp,
            })
            .collect(),
    }
}

fn tcp(port: u16) -> Option<PortProtocol> {
    Some(PortProtocol {
        port,
        protocol: Protocol::Tcp,
    })
}

fn pods(uids: &[&str]) -> Vec<BackendTarget> {
    uids.iter()
        .map(|u| BackendTarget::Pod((*u).to_string()))
        .collect()
}

/// Fully known backends `targets`.
fn known(targets: &[BackendTarget]) -> Backends<'_> {
    Backends::Known {
        targets: targets.iter().collect(),
        complete: true,
    }
}

fn key(name: &str) -> ServiceKey {
    ServiceKey::new("shop", name)
}

#[test]
fn backends_are_those_of_the_observation_time_and_both_around_a_change() {
    let mut idx = index(0);
    idx.apply_service(
        service("web", Some("10.96.0.20"), &[("http", 80)], 1_000),
        1_000,
    );
    idx.apply_slice(slice("web-1", "web", &["a"], &[("http", 8080)]), 2_000);
    idx.apply_slice(slice("web-1", "web", &["b"], &[("http", 8080)]), 100_000);
    let at = |t| idx.backends(&key("web"), tcp(80), SeenRange::at(t));
    assert_eq!(at(50_000), known(&pods(&["a"])));
    assert_eq!(at(200_000), known(&pods(&["b"])));
    assert_eq!(at(99_000), known(&pods(&["a", "b"])));
}

#[test]
fn a_port_the_service_does_not_expose_reaches_no_backend() {
    let mut idx = index(0);
    idx.apply_service(
        service("web", Some("10.96.0.20"), &[("http", 80)], 1_000),
        1_000,
    );
    idx.apply_slice(slice("web-1", "web", &["a"], &[("http", 8080)]), 2_000);
    assert_eq!(
        idx.backends(&key("web"), tcp(443), SeenRange::at(50_000)),
        Backends::NoSuchPort
    );
}

#[test]
fn only_endpoints_serving_the_called_port_are_backends() {
    let mut idx = index(0);
    let ports = [("http", 80), ("metrics", 9090)];
    idx.apply_service(service("web", Some("10.96.0.20"), &ports, 1_000), 1_000);
    idx.apply_slice(slice("web-http", "web", &["a"], &[("http", 8080)]), 2_000);
    idx.apply_slice(
        slice("web-metrics", "web", &["m"], &[("metrics", 9090)]),
        2_000,
    );
    let got = idx.backends(&key("web"), tcp(9090), SeenRange::at(50_000));
    assert_eq!(got, known(&pods(&["m"])));
    let any = idx.backends(&key("web"), None, SeenRange::at(50_000));
    assert!(matches!(any, Backends::Known { ref targets, .. } if targets.len() == 2));
}

#[test]
fn membership_before_the_first_slice_of_an_old_service_is_incomplete() {
    let mut idx = index(100_000);
    idx.apply_service(
        service("web", Some("10.96.0.20"), &[("http", 80)], 1_000),
        100_000,
    );
    assert_eq!(
        idx.backends(&key("web"), tcp(80), SeenRange::at(100_500)),
        Backends::NotYetSeen
    );
    idx.apply_slice(slice("web-1", "web", &["a"], &[("http", 8080)]), 101_000);
    let early = idx.backends(&key("web"), tcp(80), SeenRange::at(90_000));
    assert!(matches!(
        early,
        Backends::Known {
            complete: false,
            ..
        }
    ));
    let later = idx.backends(&key("web"), tcp(80), SeenRange::at(120_000));
    assert!(matches!(later, Backends::Known { complete: true, .. }));
}

#[test]
fn a_service_created_while_watched_has_known_membership_from_its_creation() {
    let mut idx = index(0);
    idx.apply_service(
        service("web", Some("10.96.0.20"), &[("http", 80)], 50_000),
        50_000,
    );
    idx.apply_slice(slice("web-1", "web", &["a"], &[("http", 8080)]), 53_000);
    for at in [53_500, 56_000] {
        let got = idx.backends(&key("web"), tcp(80), SeenRange::at(at));
        assert_eq!(
            got,
            known(&pods(&["a"])),
            "a call at {at} ms, {} ms after the Service was created",
            at - 50_000
        );
    }
}

#[test]
fn a_service_the_watch_saw_created_is_complete_even_within_the_second_the_watch_started() {
    let mut idx = index(50_700);
    let mut web = service("web", Some("10.96.0.20"), &[("http", 80)], 50_000);
    web.created_while_watched = true;
    idx.apply_service(web, 51_000);
    idx.apply_slice(slice("web-1", "web", &["a"], &[("http", 8080)]), 52_000);
    let got = idx.backends(&key("web"), tcp(80), SeenRange::at(52_500));
    assert_eq!(got, known(&pods(&["a"])));
}

#[test]
fn reused_cluster_ip_is_attributed_to_the_service_that_held_it_then() {
    let mut idx = index(0);
    idx.apply_service(
        service("old", Some("10.96.0.20"), &[("http", 80)], 1_000),
        1_000,
    );
    idx.delete_service(&key("old"), 50_000);
    idx.apply_service(
        service("new", Some("10.96.0.20"), &[("http", 80)], 60_000),
        60_000,
    );
    let x = ip("10.96.0.20");
    assert_eq!(
        idx.service_at(x, SeenRange::at(30_000)),
        Lookup::Held(key("old"))
    );
    assert_eq!(
        idx.service_at(x, SeenRange::at(70_000)),
        Lookup::Held(key("new"))
    );
}

#[test]
fn address_endpoints_without_pods_are_recognised_with_their_port() {
    let mut idx = index(0);
    let api = ServiceKey::new("default", "kubernetes");
    idx.apply_slice(
        EndpointSliceInfo {
            namespace: "default".into(),
            name: "kubernetes".into(),
            service_name: Some("kubernetes".into()),
            endpoints: vec![EndpointInfo {
                addresses: vec![ip("192.168.1.2")],
                serving: true,
                pod_uid: None,
                pod_name: None,
            }],
            ports: vec![EndpointPortInfo {
                name: Some("https".into()),
                port: Some(6443),
                protocol: Protocol::Tcp,
            }],
        },
        1_000,
    );
    let range = SeenRange::at(10_000);
    assert!(idx.is_backend_address(&api, ip("192.168.1.2"), tcp(6443), range));
    assert!(!idx.is_backend_address(&api, ip("192.168.1.2"), tcp(10250), range));
    assert!(!idx.is_backend_address(&api, ip("192.168.1.3"), tcp(6443), range));
}

#[test]
fn deleted_slices_end_membership_and_history_is_forgotten_after_the_retention() {
    let mut idx = index(0);
    idx.apply_service(
        service("web", Some("10.96.0.20"), &[("http", 80)], 1_000),
        1_000,
    );
    idx.apply_slice(slice("web-1", "web", &["a"], &[("http", 8080)]), 2_000);
    idx.delete_slice("shop", "web-1", 10_000);
    let target = BackendTarget::Pod("a".into());
    assert!(idx.is_possible_backend(&key("web"), &target, SeenRange::at(8_000)));
    assert!(!idx.is_possible_backend(&key("web"), &target, SeenRange::at(30_000)));
    idx.gc(10_000 + RETENTION);
    assert!(!idx.is_possible_backend(&key("web"), &target, SeenRange::at(8_000)));
}

#[test]
fn a_slice_counts_for_the_service_it_names_now_and_alongside_its_siblings() {
    let mut idx = index(0);
    for name in ["web", "api"] {
        idx.apply_service(service(name, None, &[("http", 80)], 1_000), 1_000);
    }
    idx.apply_slice(slice("web-1", "web", &["a"], &[("http", 8080)]), 2_000);
    idx.apply_slice(slice("web-2", "web", &["b"], &[("http", 8080)]), 2_000);
    // The slice web-2 is relabelled to `api`: it leaves `web` and joins `api`.
    idx.apply_slice(slice("web-2", "api", &["b"], &[("http", 8080)]), 100_000);
    // web-1 goes: `web` is left with no backend, `api` keeps web-2's.
    idx.delete_slice("shop", "web-1", 200_000);

    let at = |name, t| idx.backends(&key(name), tcp(80), SeenRange::at(t));
    assert_eq!(at("web", 50_000), known(&pods(&["a", "b"])));
    assert_eq!(at("web", 150_000), known(&pods(&["a"])));
    assert_eq!(at("web", 300_000), known(&pods(&[])));
    assert_eq!(at("api", 150_000), known(&pods(&["b"])));
    assert_eq!(at("api", 300_000), known(&pods(&["b"])));
    // Nothing is kept for slices that are gone.
    assert!(!idx.slices_of.contains_key(&key("web")));
    assert_eq!(idx.slices_of.get(&key("api")).map(BTreeSet::len), Some(1));
}
