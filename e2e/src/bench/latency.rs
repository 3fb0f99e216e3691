//! The operator's steady phase: a background load that keeps every client's `lastSeen`
//! moving, latency probes (a report with an edge never seen before, timed until a watch on
//! ObservedTraffic shows it), and the operator's API writes over the phase.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use kube::runtime::watcher;
use kube::{Api, Client};
use trafficmap_api::ObservedTraffic;
use trafficmap_api::observed::Protocol;
use trafficmap_api::report::{ClientId, ConnectionObservation};

use super::cluster_load::{LoadedCluster, POD_PORT, SERVICES};
use super::ingest_client::IngestClient;
use super::operator::{FLUSH_INTERVAL, load_observation, now_ms, report_body};
use super::{BenchError, Result};
use crate::prom::family_sum;
use trafficmap_api::Observation;

/// How the steady phase loads the operator.
#[derive(Debug, Clone, Copy)]
pub struct SteadyLoad {
    /// Its length.
    pub window: Duration,
    /// Background observations per second.
    pub rate: u64,
    /// Time between two probes.
    pub probe_every: Duration,
}

/// What the steady phase measured.
#[derive(Debug, Clone, Copy)]
pub struct Steady {
    /// Probes sent.
    pub probes: usize,
    /// Median report -> ObservedTraffic latency.
    pub latency_p50: Duration,
    /// 99th percentile (a probe never seen counts as the longest wait).
    pub latency_p99: Duration,
    /// The operator's API writes per minute over the window.
    pub writes_per_min: f64,
}

/// Background reports sent per second.
const BACKGROUND_REPORTS_PER_SECOND: u64 = 4;
/// How long after the window a probe may still arrive.
const LATE_PROBE_WAIT: Duration = Duration::from_secs(45);

/// Probe `p`: (client workload, target workload). Targets are workloads without a Service,
/// which the background load never calls, so each probe's edge is new.
fn probe_pair(cluster: &LoadedCluster, p: usize) -> (usize, usize) {
    let spare = cluster.workloads.len() - SERVICES;
    let target = SERVICES + (p * 37) % spare;
    let client = (p * 101 + 13) % cluster.workloads.len();
    (client, target)
}

type Outstanding = Arc<Mutex<HashMap<(String, String), Vec<(String, Instant)>>>>;

/// One probe seen in ObservedTraffic.
#[derive(Debug, Clone)]
struct Sample {
    latency: Duration,
    posted: Instant,
    client: String,
    target: String,
}

/// How many of the slowest probes the phase describes.
const SLOWEST_SHOWN: usize = 5;

/// Runs the phase.
pub async fn steady_phase(
    kube: &Client,
    ingest: &Arc<IngestClient>,
    cluster: &LoadedCluster,
    admin_url: &str,
    load: SteadyLoad,
) -> Result<Steady> {
    // (client namespace, client name) -> [(target name, posted at)]
    let outstanding: Outstanding = Arc::new(Mutex::new(HashMap::new()));
    let latencies: Arc<Mutex<Vec<Sample>>> = Arc::new(Mutex::new(Vec::new()));
    let watch = tokio::spawn(watch_probes(
        kube.clone(),
        Arc::clone(&outstanding),
        Arc::clone(&latencies),
    ));
    let writes = |m: &str| family_sum(m, "trafficmap_operator_api_writes_total");
    let metrics_url = format!("{admin_url}/metrics");
    let before = writes(&crate::http::get(&metrics_url).await?.1);
    let started = Instant::now();
    let per_report = (load.rate / BACKGROUND_REPORTS_PER_SECOND) as usize;
    let mut background =
        tokio::time::interval(Duration::from_millis(1000 / BACKGROUND_REPORTS_PER_SECOND));
    let mut probes = tokio::time::interval(load.probe_every);
    let mut next_observation = 0usize;
    let mut sent_probes = 0usize;
    // Each report waits on its own for its answer (written, or 503 and sent again), as
    // reports from many nodes would; the load keeps its pace.
    let mut posts = tokio::task::JoinSet::new();
    while started.elapsed() < load.window {
        super::netns::interrupted()?;
        tokio::select! {
            _ = background.tick() => {
                let at = now_ms();
                let observations: Vec<Observation> = (next_observation..next_observation + per_report)
                    .filter_map(|i| load_observation(cluster, i, at))
                    .collect();
                next_observation += per_report;
                let (ingest, body) = (Arc::clone(ingest), report_body(observations)?);
                posts.spawn(async move { post(&ingest, body).await });
            }
            _ = probes.tick() => {
                let (client_w, target_w) = probe_pair(cluster, sent_probes);
                let client = &cluster.workloads[client_w];
                let target = &cluster.workloads[target_w];
                let (ip, uid) = client.pods[0].clone();
                let at = now_ms();
                let observation = Observation::Connection(ConnectionObservation {
                    client: ClientId { ip, pod_uid: Some(uid) },
                    server_ip: target.pods[0].0,
                    server_port: POD_PORT,
                    protocol: Protocol::Tcp,
                    first_seen_ms: at,
                    last_seen_ms: at,
                });
                let body = report_body(vec![observation])?;
                let posted = Instant::now();
                outstanding
                    .lock()
                    .map_err(|_| BenchError::Failed("probe table poisoned".into()))?
                    .entry((client.namespace.clone(), client.name.clone()))
                    .or_default()
                    .push((target.name.clone(), posted));
                let ingest = Arc::clone(ingest);
                posts.spawn(async move { post(&ingest, body).await });
                sent_probes += 1;
            }
        }
    }
    let elapsed = started.elapsed();
    let after = writes(&crate::http::get(&metrics_url).await?.1);
    while let Some(posted) = posts.join_next().await {
        posted.map_err(|e| BenchError::Failed(format!("steady poster: {e}")))??;
    }
    let deadline = Instant::now() + LATE_PROBE_WAIT.max(2 * FLUSH_INTERVAL);
    while Instant::now() < deadline {
        let seen = latencies.lock().map(|l| l.len()).unwrap_or(0);
        if seen >= sent_probes {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    watch.abort();
    let mut seen = latencies
        .lock()
        .map_err(|_| BenchError::Failed("latency table poisoned".into()))?
        .clone();
    seen.sort_by_key(|s| std::cmp::Reverse(s.latency));
    for slow in seen.iter().take(SLOWEST_SHOWN) {
        eprintln!(
            "  slow probe: {:.2} s, posted {:.1} s into the phase, {} -> {}",
            slow.latency.as_secs_f64(),
            slow.posted.saturating_duration_since(started).as_secs_f64(),
            slow.client,
            slow.target
        );
    }
    let mut samples: Vec<Duration> = seen.iter().map(|s| s.latency).collect();
    let missing = sent_probes.saturating_sub(samples.len());
    if missing > 0 {
        eprintln!("  {missing} probes never showed up in ObservedTraffic");
        samples.extend(std::iter::repeat_n(LATE_PROBE_WAIT + elapsed, missing));
    }
    samples.sort();
    let percentile = |q: f64| {
        let rank = ((q * samples.len() as f64).ceil() as usize).clamp(1, samples.len().max(1));
        samples.get(rank - 1).copied().unwrap_or_default()
    };
    Ok(Steady {
        probes: sent_probes,
        latency_p50: percentile(0.50),
        latency_p99: percentile(0.99),
        writes_per_min: (after - before) * 60.0 / elapsed.as_secs_f64(),
    })
}

/// Posts `body` until the operator acknowledges it (503: written late or busy, so again).
pub async fn post(ingest: &IngestClient, body: Vec<u8>) -> Result<()> {
    loop {
        match ingest.post(body.clone()).await? {
            200..=299 => return Ok(()),
            503 => tokio::time::sleep(Duration::from_millis(50)).await,
            other => return Err(BenchError::Failed(format!("ingest answered {other}"))),
        }
    }
}

/// Watches every ObservedTraffic; when one lists an outstanding probe's target, records the
/// time since that probe was posted.
async fn watch_probes(kube: Client, outstanding: Outstanding, latencies: Arc<Mutex<Vec<Sample>>>) {
    let api = Api::<ObservedTraffic>::all(kube);
    let mut events = watcher(api, watcher::Config::default()).boxed();
    while let Some(event) = events.next().await {
        let ot = match event {
            Ok(watcher::Event::Apply(ot) | watcher::Event::InitApply(ot)) => ot,
            _ => continue,
        };
        let key = (
            ot.spec.client.namespace.clone(),
            ot.spec.client.name.clone(),
        );
        let Ok(mut table) = outstanding.lock() else {
            return;
        };
        let Some(waiting) = table.get_mut(&key) else {
            continue;
        };
        let targets: Vec<&str> = ot
            .status
            .iter()
            .flat_map(|s| s.targets.iter().map(|t| t.name.as_str()))
            .collect();
        let now = Instant::now();
        waiting.retain(|(target, posted)| {
            if targets.contains(&target.as_str()) {
                if let Ok(mut l) = latencies.lock() {
                    l.push(Sample {
                        latency: now - *posted,
                        posted: *posted,
                        client: format!("{}/{}", key.0, key.1),
                        target: target.clone(),
                    });
                }
                false
            } else {
                true
            }
        });
    }
}
