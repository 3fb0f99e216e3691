//! `engine_ingest`: the engine alone (resolution and aggregation, no HTTPS, JSON or API
//! server), on an index shaped like the operator bench's cluster: 5000 Deployments of two pods
//! each (through a ReplicaSet) in 20 namespaces, 2000 ClusterIP Services backed by the first
//! 2000 of them, each client calling five Services, every fourth observation a DNS answer.
//! It shows what the engine task costs per observation, apart from the rest of the operator.
//!
//! Run with `cargo bench -p trafficmap-operator --bench engine_ingest`; prints
//! `engine_ingest: N observations/s`.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Instant;

use trafficmap_api::Report;
use trafficmap_api::observed::Protocol;
use trafficmap_api::report::{ClientId, ConnectionObservation, DnsObservation, Observation};
use trafficmap_operator::durable::Hold;
use trafficmap_operator::engine::{Engine, EngineConfig};
use trafficmap_operator::ingest::server::ReceivedReport;
use trafficmap_operator::metrics::Metrics;
use trafficmap_operator::resolve::inputs::{
    EndpointInfo, EndpointPortInfo, EndpointSliceInfo, OwnerMeta, OwnerRef, PodInfo, ServiceInfo,
    ServicePortInfo,
};
use trafficmap_operator::resolve::{Index, ResolveConfig};

/// The operator binary's allocator, so the figure is the shipped engine's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const WORKLOADS: usize = 5_000;
const SERVICES: usize = 2_000;
const NAMESPACES: usize = 20;
const TARGETS_PER_CLIENT: usize = 5;
const OBSERVATIONS_PER_REPORT: usize = 5_000;
const REPORTS: usize = 200;
/// When the cluster's objects appeared.
const CREATED_MS: u64 = 1_000;
/// The observations' age when ingested: past the settle time, as in the operator bench.
const SETTLED_AGE_MS: u64 = 5_000;

fn namespace(w: usize) -> String {
    format!("tmb-load-{:02}", w % NAMESPACES)
}

fn pod_ip(p: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 244, (p / 250) as u8, (p % 250 + 1) as u8))
}

fn cluster_ip(s: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 96, (s / 250) as u8, (s % 250 + 1) as u8))
}

fn pod_uid(p: usize) -> String {
    format!("00000000-0000-4000-8000-{p:012}")
}

fn index() -> Index {
    let config = ResolveConfig {
        pod_cidrs: vec!["10.244.0.0/16".parse().expect("cidr")],
        service_cidrs: vec!["10.96.0.0/16".parse().expect("cidr")],
        ..ResolveConfig::default()
    };
    let mut index = Index::new(config, 0);
    for w in 0..WORKLOADS {
        let (ns, name) = (namespace(w), format!("w-{w:04}"));
        let rs = format!("{name}-5d4f8b7c9");
        index.apply_owner(OwnerMeta {
            uid: format!("deploy-{w}"),
            kind: "Deployment".into(),
            name: name.clone(),
            namespace: ns.clone(),
            owner: None,
        });
        index.apply_owner(OwnerMeta {
            uid: format!("rs-{w}"),
            kind: "ReplicaSet".into(),
            name: rs.clone(),
            namespace: ns.clone(),
            owner: Some(OwnerRef {
                api_version: "apps/v1".into(),
                kind: "Deployment".into(),
                name: name.clone(),
                uid: format!("deploy-{w}"),
            }),
        });
        for p in [2 * w, 2 * w + 1] {
            index.apply_pod(
                PodInfo {
                    uid: pod_uid(p),
                    namespace: ns.clone(),
                    name: format!("{rs}-{p:05}"),
                    ips: vec![pod_ip(p)],
                    host_network: false,
                    node_name: Some("bench-node".into()),
                    owner: Some(OwnerRef {
                        api_version: "apps/v1".into(),
                        kind: "ReplicaSet".into(),
                        name: rs.clone(),
                        uid: format!("rs-{w}"),
                    }),
                    workload_name_annotation: None,
                    ips_since_ms: Some(CREATED_MS),
                    terminated: false,
                },
                CREATED_MS,
            );
        }
    }
    for s in 0..SERVICES {
        let (ns, name) = (namespace(s), format!("s-{s:04}"));
        index.apply_service(
            ServiceInfo {
                namespace: ns.clone(),
                name: name.clone(),
                cluster_ips: vec![cluster_ip(s)],
                ports: vec![ServicePortInfo {
                    name: Some("http".into()),
                    port: 80,
                    protocol: Protocol::Tcp,
                }],
                created_ms: Some(CREATED_MS),
                created_while_watched: false,
            },
            CREATED_MS,
        );
        index.apply_endpoint_slice(
            EndpointSliceInfo {
                namespace: ns,
                name: format!("{name}-abcde"),
                service_name: Some(name),
                endpoints: [2 * s, 2 * s + 1]
                    .iter()
                    .map(|&p| EndpointInfo {
                        addresses: vec![pod_ip(p)],
                        serving: true,
                        pod_uid: Some(pod_uid(p)),
                        pod_name: None,
                    })
                    .collect(),
                ports: vec![EndpointPortInfo {
                    name: Some("http".into()),
                    port: Some(8080),
                    protocol: Protocol::Tcp,
                }],
            },
            CREATED_MS,
        );
    }
    index
}

/// The `i`-th observation, as the operator bench's load makes it.
fn observation(i: usize, at_ms: u64) -> Observation {
    let w = i % WORKLOADS;
    let p = 2 * w + (i / WORKLOADS) % 2;
    let target = (w * 7 + (i / 7) % TARGETS_PER_CLIENT) % SERVICES;
    let client = ClientId {
        ip: pod_ip(p),
        pod_uid: Some(pod_uid(p)),
    };
    if i % 4 == 3 {
        Observation::Dns(DnsObservation {
            client,
            name: format!("s-{target:04}.{}.svc.cluster.local", namespace(target)),
            ips: vec![cluster_ip(target)],
            ttl_seconds: 30,
            first_seen_ms: at_ms,
            last_seen_ms: at_ms,
        })
    } else {
        Observation::Connection(ConnectionObservation {
            client,
            server_ip: cluster_ip(target),
            server_port: 80,
            protocol: Protocol::Tcp,
            first_seen_ms: at_ms,
            last_seen_ms: at_ms,
        })
    }
}

fn report(r: usize, at_ms: u64) -> Report {
    Report {
        version: trafficmap_api::report::REPORT_VERSION,
        node: "bench-node".into(),
        observations: (0..OBSERVATIONS_PER_REPORT)
            .map(|k| observation(r * OBSERVATIONS_PER_REPORT + k * 13, at_ms))
            .collect(),
    }
}

fn main() {
    let metrics = Arc::new(Metrics::new());
    let mut engine = Engine::new(index(), EngineConfig::default(), Arc::clone(&metrics));
    let now = trafficmap_operator::now_ms();
    let at = now - SETTLED_AGE_MS;
    // Warm-up: every edge of the load enters the map once, as in the operator bench.
    for r in 0..(WORKLOADS * TARGETS_PER_CLIENT * 4).div_ceil(OBSERVATIONS_PER_REPORT) {
        engine.ingest(
            ReceivedReport {
                report: report(r, at),
                received_ms: now,
                hold: None,
            },
            now,
        );
    }
    // Written, as the writer would report it: the window then only moves `lastSeen`, the
    // steady state of a mapped cluster.
    let ledger = engine.ledger();
    for write in engine.final_writes(now) {
        ledger.written(&write.client, write.generation);
    }
    let bodies: Vec<Vec<u8>> = (0..REPORTS)
        .map(|r| serde_json::to_vec(&report(r, at)).expect("serializable report"))
        .collect();
    // Decoded one at a time and dropped, as each request does (holding them all would time
    // the page faults of a fresh half gigabyte instead).
    let started = Instant::now();
    for body in &bodies {
        let report = Report::from_json(body).expect("valid report");
        std::hint::black_box(&report);
    }
    let decode = started.elapsed().as_secs_f64();
    let reports: Vec<Report> = bodies
        .iter()
        .map(|body| Report::from_json(body).expect("valid report"))
        .collect();
    let resolved_before = metrics.observations_resolved.get();
    let started = Instant::now();
    for report in reports {
        // Each with the hold its ingest request waits on, as in the operator.
        let (hold, _receipt) = Hold::new();
        engine.ingest(
            ReceivedReport {
                report,
                received_ms: now,
                hold: Some(hold),
            },
            now,
        );
    }
    let elapsed = started.elapsed().as_secs_f64();
    let resolved = metrics.observations_resolved.get() - resolved_before;
    let sent = (REPORTS * OBSERVATIONS_PER_REPORT) as u64;
    assert_eq!(
        resolved, sent,
        "every observation of the load resolves on arrival"
    );
    println!("engine_ingest: {:.0} observations/s", sent as f64 / elapsed);
    println!("report_decode: {:.0} observations/s", sent as f64 / decode);
    println!(
        "# engine_ingest: the engine task alone, one thread, {sent} observations in {elapsed:.2} s on an index of {WORKLOADS} workloads, {} pods, {SERVICES} Services; report_decode: JSON decoding and validation of the same reports, as each ingest request does before handing over",
        2 * WORKLOADS
    );
}
