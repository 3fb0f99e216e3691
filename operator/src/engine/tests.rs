//! The engine's acknowledgement rules: a report is written only once the statuses carrying
//! its edges are, including an edge it merely saw again while the first write is under way.

use std::net::IpAddr;

use trafficmap_api::Report;
use trafficmap_api::observed::Protocol;
use trafficmap_api::report::{ClientId, ConnectionObservation, REPORT_VERSION};

use super::*;
use crate::durable::{Hold, Outcome, Receipt};
use crate::resolve::{OwnerMeta, OwnerRef, PodInfo, ResolveConfig};

const NS: &str = "shop";
const T0: u64 = 1_700_000_000_000;
/// Past the settle time, so an observation from `at` resolves at `at + SETTLED`.
const SETTLED: u64 = 4_000;

fn ip(s: &str) -> IpAddr {
    s.parse().expect("test address")
}

fn deployment_pod(index: &mut Index, name: &str, pod_ip: &str) {
    let owner = |kind: &str, name: &str| OwnerRef {
        api_version: "apps/v1".into(),
        kind: kind.into(),
        name: name.into(),
        uid: format!("uid-{name}"),
    };
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
        owner: Some(owner("Deployment", name)),
    });
    index.apply_pod(
        PodInfo {
            uid: format!("pod-{name}"),
            namespace: NS.into(),
            name: format!("{name}-pod"),
            ips: vec![ip(pod_ip)],
            host_network: false,
            node_name: Some("n1".into()),
            owner: Some(owner("ReplicaSet", &rs)),
            workload_name_annotation: None,
            ips_since_ms: Some(1_000),
            terminated: false,
        },
        1_000,
    );
}

fn engine() -> Engine {
    let config = ResolveConfig {
        pod_cidrs: vec!["10.244.0.0/16".parse().expect("CIDR")],
        service_cidrs: vec!["10.96.0.0/16".parse().expect("CIDR")],
        ..ResolveConfig::default()
    };
    let mut index = Index::new(config, 0);
    deployment_pod(&mut index, "web", "10.244.0.10");
    deployment_pod(&mut index, "cart", "10.244.0.11");
    Engine::new(index, EngineConfig::default(), Arc::new(Metrics::new()))
}

/// A report of web -> cart on `port`, seen at `at`, and the receipt its handler would wait on.
fn report(port: u16, at: u64) -> (ReceivedReport, Receipt) {
    report_to("10.244.0.11", port, at)
}

fn report_to(server: &str, port: u16, at: u64) -> (ReceivedReport, Receipt) {
    let (hold, receipt) = Hold::new();
    let observation = Observation::Connection(ConnectionObservation {
        client: ClientId {
            ip: ip("10.244.0.10"),
            pod_uid: None,
        },
        server_ip: ip(server),
        server_port: port,
        protocol: Protocol::Tcp,
        first_seen_ms: at,
        last_seen_ms: at,
    });
    let received = ReceivedReport {
        report: Report {
            version: REPORT_VERSION,
            node: "n1".into(),
            observations: vec![observation],
        },
        received_ms: at,
        hold: Some(hold),
    };
    (received, receipt)
}

async fn settled(receipt: Receipt) -> Option<Outcome> {
    tokio::time::timeout(std::time::Duration::from_millis(50), receipt.outcome())
        .await
        .ok()
}

/// Enters every due write in the ledger as written.
fn write_all(engine: &mut Engine, now: u64) -> usize {
    let due = engine.due_writes(now);
    for write in &due {
        engine.ledger().written(&write.client, write.generation);
    }
    due.len()
}

#[tokio::test]
async fn a_new_edge_is_acknowledged_when_its_status_is_written() {
    let mut engine = engine();
    let (received, receipt) = report(8080, T0);
    engine.ingest(received, T0 + SETTLED);
    let due = engine.due_writes(T0);
    assert_eq!(due.len(), 1);
    assert_eq!(
        engine.ledger().waiting(),
        1,
        "the report waits for web's status"
    );
    engine.ledger().written(&due[0].client, due[0].generation);
    assert_eq!(settled(receipt).await, Some(Outcome::Written));
}

#[tokio::test]
async fn a_resent_edge_waits_for_the_write_already_under_way() {
    let mut engine = engine();
    let (first, first_receipt) = report(8080, T0);
    engine.ingest(first, T0 + SETTLED);
    let due = engine.due_writes(T0);
    // The sniffer sends the same edge again (say, after a timeout) before the write lands.
    let (again, again_receipt) = report(8080, T0 + 100);
    engine.ingest(again, T0 + 100 + SETTLED);
    assert_eq!(engine.ledger().waiting(), 2);
    engine.ledger().written(&due[0].client, due[0].generation);
    assert_eq!(settled(first_receipt).await, Some(Outcome::Written));
    assert_eq!(settled(again_receipt).await, Some(Outcome::Written));
}

#[tokio::test]
async fn a_report_that_adds_nothing_new_to_a_written_map_is_acknowledged_at_once() {
    let mut engine = engine();
    let (first, _) = report(8080, T0);
    engine.ingest(first, T0 + SETTLED);
    assert_eq!(write_all(&mut engine, T0), 1);
    let (again, receipt) = report(8080, T0 + 1_000);
    engine.ingest(again, T0 + 1_000 + SETTLED);
    assert_eq!(settled(receipt).await, Some(Outcome::Written));
    assert_eq!(
        write_all(&mut engine, T0 + 1_000),
        0,
        "lastSeen alone waits for the refresh"
    );
}

#[tokio::test]
async fn a_new_port_waits_for_the_next_status_not_the_one_in_flight() {
    let mut engine = engine();
    let (first, _) = report(8080, T0);
    engine.ingest(first, T0 + SETTLED);
    let in_flight = engine.due_writes(T0);
    let (new_port, receipt) = report(9090, T0 + 100);
    engine.ingest(new_port, T0 + 100 + SETTLED);
    engine
        .ledger()
        .written(&in_flight[0].client, in_flight[0].generation);
    assert_eq!(
        settled(receipt).await,
        None,
        "acknowledged by a status without port 9090"
    );
    assert_eq!(write_all(&mut engine, T0 + 5_000), 1);
    assert_eq!(
        engine.ledger().waiting(),
        0,
        "the next status carries port 9090 and releases it"
    );
}

#[tokio::test]
async fn an_engine_that_stops_before_writing_fails_its_reports() {
    let mut engine = engine();
    let (received, receipt) = report(8080, T0);
    engine.ingest(received, T0 + SETTLED);
    drop(engine);
    assert_eq!(settled(receipt).await, Some(Outcome::NotWritten));
}

#[tokio::test]
async fn a_fresh_observation_holds_its_report_through_settling() {
    let mut engine = engine();
    let (received, receipt) = report(8080, T0);
    engine.ingest(received, T0);
    assert_eq!(
        engine.due_writes(T0).len(),
        0,
        "nothing resolves while settling"
    );
    engine.retry_pending(T0 + SETTLED);
    let due = engine.due_writes(T0 + SETTLED);
    assert_eq!(due.len(), 1);
    engine.ledger().written(&due[0].client, due[0].generation);
    assert_eq!(settled(receipt).await, Some(Outcome::Written));
}

#[tokio::test]
async fn an_observation_that_waits_past_the_hold_no_longer_holds_its_report() {
    let mut engine = engine();
    // No pod holds this address: it waits for the watches until its deadline.
    let (received, receipt) = report_to("10.244.9.9", 8080, T0);
    engine.ingest(received, T0);
    engine.retry_pending(T0 + SETTLED);
    let mut receipt = std::pin::pin!(receipt.outcome());
    assert!(
        tokio::time::timeout(std::time::Duration::from_millis(50), &mut receipt)
            .await
            .is_err(),
        "released before the hold time"
    );
    engine.retry_pending(T0 + DEFAULT_PENDING_HOLD_MS);
    assert_eq!(receipt.await, Outcome::Written);
    assert_eq!(engine.pending.len(), 1, "it still waits to be resolved");
}

#[tokio::test]
async fn a_report_larger_than_the_pending_queue_is_still_acknowledged() {
    let mut engine = engine();
    engine.pending = PendingQueue::new(1, DEFAULT_PENDING_HOLD_MS);
    let (mut received, receipt) = report(8080, T0);
    let (other, _) = report(9090, T0);
    received
        .report
        .observations
        .extend(other.report.observations);
    engine.ingest(received, T0);
    engine.retry_pending(T0 + SETTLED);
    for write in engine.due_writes(T0 + SETTLED) {
        engine.ledger().written(&write.client, write.generation);
    }
    assert_eq!(settled(receipt).await, Some(Outcome::Written));
}

#[tokio::test]
async fn a_repeat_does_not_wait_for_a_last_seen_refresh_still_queued() {
    let mut engine = engine();
    let (first, _) = report(8080, T0);
    engine.ingest(first, T0 + SETTLED);
    assert_eq!(write_all(&mut engine, T0), 1);
    let refresh = EngineConfig::default().last_seen_refresh_ms;
    let later = T0 + refresh;
    let (moved, _) = report(8080, later);
    engine.ingest(moved, later + SETTLED);
    let queued = engine.due_writes(later + SETTLED);
    assert_eq!(queued.len(), 1, "the lastSeen refresh is handed over");
    assert!(!queued[0].urgent);
    let (again, receipt) = report(8080, later + 100);
    engine.ingest(again, later + 100 + SETTLED);
    assert_eq!(
        settled(receipt).await,
        Some(Outcome::Written),
        "its edge is written; only lastSeen waits in the refresh"
    );
}

#[tokio::test]
async fn only_news_is_urgent_for_the_writer() {
    let mut engine = engine();
    let (first, _) = report(8080, T0);
    engine.ingest(first, T0 + SETTLED);
    let due = engine.due_writes(T0);
    assert!(due[0].urgent, "a client's first status");
    let (new_port, _) = report(9090, T0 + 100);
    engine.ingest(new_port, T0 + 100 + SETTLED);
    let due = engine.due_writes(T0 + 5_000);
    assert!(due[0].urgent, "a new port");
    let refresh = EngineConfig::default().last_seen_refresh_ms;
    let later = T0 + 5_000 + refresh;
    let (seen_again, _) = report(9090, later);
    engine.ingest(seen_again, later + SETTLED);
    let due = engine.due_writes(later);
    assert_eq!(due.len(), 1, "lastSeen moved and the refresh is due");
    assert!(!due[0].urgent, "only lastSeen moved");
}

#[tokio::test]
async fn a_flood_of_repeats_evicts_repeats_not_a_new_edge() {
    let mut engine = engine();
    engine.config.pending_capacity = 4;
    engine.pending = PendingQueue::new(4, engine.config.pending_wait_ms);
    engine.refreshing = PendingQueue::new(4, engine.config.pending_wait_ms);
    let (first, _) = report(8080, T0);
    engine.ingest(first, T0 + SETTLED);
    assert_eq!(write_all(&mut engine, T0 + SETTLED), 1);

    let now = T0 + 10_000;
    let repeat = |engine: &mut Engine| engine.ingest(report(8080, now).0, now);
    for _ in 0..3 {
        repeat(&mut engine);
    }
    let (news, receipt) = report(9090, now);
    engine.ingest(news, now);
    for _ in 0..10 {
        repeat(&mut engine);
    }
    assert!(engine.pending.len() <= 4 && engine.refreshing.len() <= 4);
    engine.retry_pending(now + SETTLED);
    let due = engine.due_writes(now + SETTLED);
    assert_eq!(due.len(), 1);
    assert!(
        due[0].urgent,
        "port 9090 survived the flood and was recorded"
    );
    engine.ledger().written(&due[0].client, due[0].generation);
    assert_eq!(settled(receipt).await, Some(Outcome::Written));
}

#[tokio::test]
async fn news_goes_out_once_its_clients_last_status_is_a_flush_interval_old() {
    let mut engine = engine();
    let interval = EngineConfig::default().flush_interval_ms;
    let (first, _) = report(8080, T0);
    let t1 = T0 + SETTLED;
    engine.ingest(first, t1);
    assert_eq!(write_all(&mut engine, t1), 1);
    let (news, receipt) = report(9090, t1 + 100);
    engine.ingest(news, t1 + 100 + SETTLED);
    assert!(
        engine.due_news(t1 + 1_000).is_empty(),
        "its last status is 1 s old"
    );
    assert!(
        engine.due_writes(t1 + 2_000).is_empty(),
        "a flush does not write it twice within the interval either"
    );
    let due = engine.due_news(t1 + interval);
    assert_eq!(due.len(), 1);
    assert!(due[0].urgent);
    engine.ledger().written(&due[0].client, due[0].generation);
    assert_eq!(settled(receipt).await, Some(Outcome::Written));

    let (more, _) = report(9091, t1 + interval + 10);
    engine.ingest(more, t1 + interval + 10 + SETTLED);
    let last = engine.final_writes(t1 + interval + 20 + SETTLED);
    assert_eq!(last.len(), 1, "the final flush ignores the interval");
}

/// Runs an engine whose settle time is 200 ms on one fresh report, stopped by `stop` as soon
/// as the report is in; returns the statuses it handed over and the report's outcome.
async fn run_stopped(drain: bool) -> (Vec<StatusWrite>, Option<Outcome>) {
    run_stopped_with(drain, 200, 5_000).await
}

/// [`run_stopped`] with a settle time of `settle_ms` and a drain of at most `drain_ms`.
async fn run_stopped_with(
    drain: bool,
    settle_ms: u64,
    drain_ms: u64,
) -> (Vec<StatusWrite>, Option<Outcome>) {
    let config = ResolveConfig {
        pod_cidrs: vec!["10.244.0.0/16".parse().expect("CIDR")],
        service_cidrs: vec!["10.96.0.0/16".parse().expect("CIDR")],
        settle_ms,
        ..ResolveConfig::default()
    };
    let mut index = Index::new(config, 0);
    deployment_pod(&mut index, "web", "10.244.0.10");
    deployment_pod(&mut index, "cart", "10.244.0.11");
    let engine_config = EngineConfig {
        drain_ms,
        ..EngineConfig::default()
    };
    let engine = Engine::new(index, engine_config, Arc::new(Metrics::new()));
    let ledger = engine.ledger();
    let (_cluster_tx, cluster_rx) = mpsc::channel(1);
    let (report_tx, report_rx) = mpsc::channel(1);
    let (write_tx, mut write_rx) = mpsc::unbounded_channel();
    let stop = Stop::default();
    let (received, receipt) = report(8080, now_ms());
    report_tx
        .send(received)
        .await
        .expect("engine takes the report");
    let task = tokio::spawn(run(engine, cluster_rx, report_rx, write_tx, stop.clone()));
    tokio::task::yield_now().await;
    if drain {
        stop.drain.cancel();
    } else {
        stop.now.cancel();
    }
    task.await.expect("engine ends");
    let mut handed = Vec::new();
    while let Ok(batch) = write_rx.try_recv() {
        handed.extend(batch);
    }
    for write in &handed {
        ledger.written(&write.client, write.generation);
    }
    drop(ledger);
    (handed, settled(receipt).await)
}

#[tokio::test]
async fn a_graceful_stop_resolves_what_is_settling_and_acknowledges_its_report() {
    let (handed, outcome) = run_stopped(true).await;
    assert_eq!(handed.len(), 1, "web's status with web -> cart");
    assert_eq!(handed[0].status.targets.len(), 1);
    assert_eq!(outcome, Some(Outcome::Written));
}

#[tokio::test]
async fn what_still_waits_when_the_drain_ends_gets_its_last_attempt() {
    // Settling outlasts the drain: only the last attempt at its end can resolve the call.
    let (handed, outcome) = run_stopped_with(true, 60_000, 1_500).await;
    assert_eq!(handed.len(), 1, "web's status with web -> cart");
    assert_eq!(outcome, Some(Outcome::Written));
}

#[tokio::test]
async fn a_stop_at_once_hands_over_nothing_unresolved_and_fails_the_report() {
    let (handed, outcome) = run_stopped(false).await;
    assert!(handed.is_empty(), "nothing was resolved: {handed:?}");
    assert_eq!(outcome, Some(Outcome::NotWritten));
}

#[tokio::test]
async fn an_audited_condition_goes_out_at_once_and_stays_in_every_later_status() {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use k8s_openapi::jiff::Timestamp;

    let mut engine = engine();
    let (received, _receipt) = report(8080, T0);
    engine.ingest(received, T0 + SETTLED);
    assert_eq!(write_all(&mut engine, T0 + SETTLED), 1);
    let web = engine.map.clients().next().expect("web").0.get().clone();
    let condition = crate::reconcile::audit::audit_condition(
        &["cart.shop (ClientIntents)".to_string()],
        None,
        Time(Timestamp::UNIX_EPOCH),
    );
    engine.apply(Stamped {
        event: ClusterEvent::Audited {
            client: web,
            condition: condition.clone(),
        },
        at_ms: T0 + SETTLED,
    });
    let due = engine.due_news(T0 + SETTLED + 5_000);
    assert_eq!(due.len(), 1, "the condition alone is news");
    assert_eq!(due[0].status.conditions, std::slice::from_ref(&condition));
    // A later status of web, for a new port, still carries it.
    let (received, _receipt) = report(9090, T0 + 10_000);
    engine.ingest(received, T0 + 10_000 + SETTLED);
    let due = engine.due_news(T0 + 20_000 + SETTLED);
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].status.conditions, [condition]);
}
