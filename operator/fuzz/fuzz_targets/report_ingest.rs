//! Report body -> what the operator would write, as ingest and the engine do it.
//!
//! The body goes through `Report::from_json` (the HTTP handler's parser and validator); an
//! accepted report is resolved by the engine against a small fixed cluster (two Deployments
//! and a Service). Properties:
//! - nothing panics, whatever the body;
//! - a report can only produce clients that exist in the cluster (`web`, `cart` in `shop`):
//!   unknown IPs and pod UIDs never become workloads;
//! - every status due for writing reads back (`ClientEdges::from_status`, as a restarted
//!   operator does) after a round trip through JSON, with the same targets: no edge is lost
//!   or invented by a restart;
//! - the draft rendered from it has a valid object name and namespace.

#![no_main]

use std::net::IpAddr;
use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use trafficmap_api::observed::{ObservedTrafficStatus, Protocol};
use trafficmap_api::{ObservedTraffic, Report, render_client_intents};
use trafficmap_operator::engine::{Engine, EngineConfig};
use trafficmap_operator::ingest::ReceivedReport;
use trafficmap_operator::metrics::Metrics;
use trafficmap_operator::resolve::inputs::{EndpointInfo, EndpointPortInfo, ServicePortInfo};
use trafficmap_operator::resolve::{
    ClientEdges, EndpointSliceInfo, Index, OwnerMeta, OwnerRef, PodInfo, ResolveConfig, ServiceInfo,
};

const NS: &str = "shop";
const CREATED_MS: u64 = 1_000;
const NOW_MS: u64 = 1_700_000_000_000;
/// After the pending deadline: every observation gets its final answer.
const LATER_MS: u64 = NOW_MS + 10 * 60 * 1_000;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap_or(IpAddr::from([0, 0, 0, 0]))
}

fn owner_ref(kind: &str, name: &str) -> OwnerRef {
    OwnerRef {
        api_version: "apps/v1".into(),
        kind: kind.into(),
        name: name.into(),
        uid: format!("uid-{name}"),
    }
}

fn deployment_pod(index: &mut Index, name: &str, pod_uid: &str, pod_ip: &str) {
    let rs = format!("{name}-rs");
    index.apply_owner(OwnerMeta {
        uid: format!("uid-{name}"),
        kind: "Deployment".into(),
        name: name.into(),
        namespace: NS.into(),
        owner: None,
    });
    index.apply_owner(OwnerMeta {
        uid: format!("uid-{rs}"),
        kind: "ReplicaSet".into(),
        name: rs.clone(),
        namespace: NS.into(),
        owner: Some(owner_ref("Deployment", name)),
    });
    index.apply_pod(
        PodInfo {
            uid: pod_uid.into(),
            namespace: NS.into(),
            name: format!("{name}-pod"),
            ips: vec![ip(pod_ip)],
            host_network: false,
            node_name: Some("n1".into()),
            owner: Some(owner_ref("ReplicaSet", &rs)),
            workload_name_annotation: None,
            ips_since_ms: Some(CREATED_MS),
            terminated: false,
        },
        CREATED_MS,
    );
}

fn cluster() -> Index {
    let config = ResolveConfig {
        pod_cidrs: vec!["10.244.0.0/16".parse().expect("CIDR")],
        service_cidrs: vec!["10.96.0.0/16".parse().expect("CIDR")],
        ..ResolveConfig::default()
    };
    let mut index = Index::new(config, 0);
    deployment_pod(
        &mut index,
        "web",
        "00000000-0000-0000-0000-00000000000a",
        "10.244.0.10",
    );
    deployment_pod(
        &mut index,
        "cart",
        "00000000-0000-0000-0000-00000000000b",
        "10.244.0.11",
    );
    index.apply_service(
        ServiceInfo {
            namespace: NS.into(),
            name: "cart".into(),
            cluster_ips: vec![ip("10.96.0.20")],
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
            namespace: NS.into(),
            name: "cart-1".into(),
            service_name: Some("cart".into()),
            endpoints: vec![EndpointInfo {
                addresses: vec![ip("10.244.0.11")],
                serving: true,
                pod_uid: Some("00000000-0000-0000-0000-00000000000b".into()),
                pod_name: Some("cart-pod".into()),
            }],
            ports: vec![EndpointPortInfo {
                name: Some("http".into()),
                port: Some(8080),
                protocol: Protocol::Tcp,
            }],
        },
        CREATED_MS,
    );
    index
}

fn json_round_trip(status: &ObservedTrafficStatus) -> ObservedTrafficStatus {
    let json = serde_json::to_vec(status).expect("a status serialises");
    serde_json::from_slice(&json).expect("a serialised status reads back")
}

/// Every target without its times: what must survive a restart.
fn target_facts(status: &ObservedTrafficStatus) -> Vec<String> {
    let mut facts: Vec<String> = status
        .targets
        .iter()
        .map(|t| {
            format!(
                "{}/{}/{}/{:?}/{:?}/{:?}/{:?}",
                t.kind, t.namespace, t.name, t.service, t.ports, t.dns_names, t.seen_by
            )
        })
        .chain(status.internet_targets.iter().map(|t| {
            format!(
                "internet/{:?}/{:?}/{:?}/{:?}",
                t.dns_name, t.ips, t.ports, t.seen_by
            )
        }))
        .collect();
    facts.sort();
    facts
}

fuzz_target!(|body: &[u8]| {
    let Ok(report) = Report::from_json(body) else {
        return;
    };
    for observation in &report.observations {
        assert!(
            observation.validate().is_ok(),
            "from_json let an invalid observation through"
        );
    }
    let mut engine = Engine::new(cluster(), EngineConfig::default(), Arc::new(Metrics::new()));
    engine.ingest(
        ReceivedReport {
            report,
            received_ms: NOW_MS,
            hold: None,
        },
        NOW_MS,
    );
    engine.retry_pending(LATER_MS);
    for write in engine.due_writes(LATER_MS) {
        assert_eq!(
            write.client.namespace, NS,
            "a client outside the cluster: {:?}",
            write.client
        );
        assert!(
            write.client.name == "web" || write.client.name == "cart",
            "a report invented a client: {:?}",
            write.client
        );
        let stored = json_round_trip(&write.status);
        let restored = match ClientEdges::from_status(&stored) {
            Ok(edges) => edges,
            Err(err) => panic!("a written status does not read back: {err}: {stored:?}"),
        };
        assert_eq!(
            target_facts(&restored.to_status()),
            target_facts(&write.status),
            "a restart would change the targets"
        );
        let mut observed = ObservedTraffic::for_client(write.client.get().clone());
        observed.status = Some(write.status);
        let draft = render_client_intents(&observed);
        assert_eq!(draft.metadata.namespace.as_deref(), Some(NS));
        assert!(
            draft
                .metadata
                .name
                .is_some_and(|n| !n.is_empty() && n.len() <= 253)
        );
    }
});
