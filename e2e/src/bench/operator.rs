//! The operator's figures: the release `trafficmap-operator` against the control plane loaded
//! by [`super::cluster_load`], fed over its HTTPS ingest with a real ServiceAccount token.
//!
//! - `operator_ingest`: observations resolved and aggregated per second while several
//!   connections keep it busy (its metrics, start to end of the window).
//! - `report_to_crd_latency_p99`: a report with a new edge posted -> that edge in the
//!   ObservedTraffic seen by a watch, under a steady background load.
//! - `api_writes_per_min`: its writes during that steady phase; bound workloads / flush interval.
//! - `operator_rss`: its VmHWM over the run.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use trafficmap_api::observed::Protocol;
use trafficmap_api::report::{ClientId, ConnectionObservation, DnsObservation, REPORT_VERSION};
use trafficmap_api::{Observation, Report};

use super::cluster_load::{self, LoadedCluster, SERVICE_PORT};
use super::ingest_client::IngestClient;
use super::{BenchError, Figure, Result, io_context, memory_kib, mib};
use crate::cluster::{admin_client, kubeconfig_path};
use crate::crds::install_all;
use crate::operator::{free_port, published_ca, service_account_token};
use crate::prom::{family_sum, sample};

/// The operator's namespace for the bench.
const OPERATOR_NS: &str = "tmb-operator";
/// The operator's flush interval (its default).
pub const FLUSH_INTERVAL: Duration = Duration::from_secs(5);
/// Observations per report (a busy node's second).
const OBSERVATIONS_PER_REPORT: usize = 5_000;
/// Report bodies prepared before the ingest window.
const PREPARED_REPORTS: usize = 24;
/// Requests in flight at once during the ingest window (as from that many nodes: the operator
/// answers a report once its edges are written, so one poster alone waits a flush per report).
const POSTERS: usize = 16;
/// The operator's counter of refused reports.
const REFUSED: &str = "trafficmap_operator_reports_rejected_total";
/// Length of the ingest window.
const INGEST_WINDOW: Duration = Duration::from_secs(20);
/// Age of the warm-up's and the ingest window's observations: past the operator's settle time
/// (3 s), so they resolve on arrival instead of waiting in its bounded settle queues.
const SETTLED_AGE_MS: u64 = 5_000;
/// Time after the operator is ready within which it has listed the cluster and passed the
/// 5 s of slack it gives EndpointSlices.
const LISTED_WITHIN: Duration = Duration::from_secs(20);
/// Targets each client workload calls (Services, through their ClusterIP).
const TARGETS_PER_CLIENT: usize = 5;
/// Length of the steady phase (latency probes and write counting).
const STEADY_WINDOW: Duration = Duration::from_secs(60);
/// Background observations per second in the steady phase.
const STEADY_RATE: u64 = 5_000;
/// Longest wait for the warm-up's statuses to be written.
const WARM_UP_WRITES: Duration = Duration::from_secs(600);
/// One latency probe every ...
const PROBE_EVERY: Duration = Duration::from_millis(600);

/// A running operator, killed when dropped.
struct OperatorProcess {
    child: Child,
    ingest_url: String,
    admin_url: String,
}

impl OperatorProcess {
    fn start() -> Result<Self> {
        let binary = super::release_binary("trafficmap-operator")?;
        let (ingest, admin) = (free_port()?, free_port()?);
        let log = super::dns::log_path("operator.log")?;
        let out = std::fs::File::create(&log).map_err(io_context("operator log"))?;
        let err = out.try_clone().map_err(io_context("operator log"))?;
        let child = Command::new(binary)
            .env("KUBECONFIG", kubeconfig_path())
            .env(
                "RUST_LOG",
                std::env::var("TRAFFICMAP_BENCH_OPERATOR_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .args([
                "--ingest-addr",
                &format!("127.0.0.1:{ingest}"),
                "--admin-addr",
                &format!("127.0.0.1:{admin}"),
                "--namespace",
                OPERATOR_NS,
                "--sniffer-service-account",
                &format!("{OPERATOR_NS}/sniffer"),
                "--tls-san",
                "127.0.0.1",
                "--pod-cidr",
                "10.244.0.0/16",
                "--service-cidr",
                "10.96.0.0/16",
                "--flush-interval",
                &format!("{}s", FLUSH_INTERVAL.as_secs()),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .spawn()
            .map_err(io_context("start the operator"))?;
        Ok(OperatorProcess {
            child,
            ingest_url: format!("https://127.0.0.1:{ingest}/v1/reports"),
            admin_url: format!("http://127.0.0.1:{admin}"),
        })
    }

    async fn wait_ready(&mut self) -> Result<()> {
        for _ in 0..600 {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(BenchError::Failed(format!(
                    "operator exited with {status}; see target/bench-logs/operator.log"
                )));
            }
            if matches!(
                crate::http::get(&format!("{}/readyz", self.admin_url)).await,
                Ok((200, _))
            ) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Err(BenchError::Failed("operator not ready after 120 s".into()))
    }

    async fn metrics(&self) -> Result<String> {
        Ok(crate::http::get(&format!("{}/metrics", self.admin_url))
            .await?
            .1)
    }
}

impl Drop for OperatorProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Observations the operator has dealt with: resolved, skipped as adding nothing, or dropped
/// unresolved.
pub fn processed(metrics: &str) -> f64 {
    sample(metrics, "trafficmap_operator_observations_resolved_total")
        + family_sum(metrics, "trafficmap_operator_observations_skipped_total")
        + family_sum(metrics, "trafficmap_operator_observations_unresolved_total")
}

/// Number of distinct observations in the load (every edge, from both pods of each client):
/// the warm-up sends each once.
fn load_size(cluster: &LoadedCluster) -> usize {
    cluster.workloads.len() * 2 * TARGETS_PER_CLIENT * 4
}

/// Number of distinct (client, Service) edges in the load.
fn load_edges(cluster: &LoadedCluster) -> usize {
    let workloads = cluster.workloads.len();
    (0..load_size(cluster))
        .filter_map(|i| {
            let client = i % workloads;
            let target = load_target(client, i);
            cluster.workloads[target]
                .cluster_ip
                .map(|_| (client, target))
        })
        .collect::<std::collections::HashSet<_>>()
        .len()
}

/// The Service (by workload index) that observation `i` of `client` calls.
fn load_target(client: usize, i: usize) -> usize {
    (client * 7 + (i / 7) % TARGETS_PER_CLIENT) % cluster_load::SERVICES
}

/// The `i`-th observation of the load: a pod of workload `i % WORKLOADS` calling one of its
/// [`TARGETS_PER_CLIENT`] Services (by ClusterIP), every fourth one a DNS answer for it.
pub fn load_observation(cluster: &LoadedCluster, i: usize, at_ms: u64) -> Option<Observation> {
    let workloads = &cluster.workloads;
    let client_w = i % workloads.len();
    let (ip, uid) = workloads[client_w].pods[(i / workloads.len()) % 2].clone();
    let target = load_target(client_w, i);
    let server = &workloads[target];
    let cluster_ip = server.cluster_ip?;
    let client = ClientId {
        ip,
        pod_uid: Some(uid),
    };
    Some(if i % 4 == 3 {
        Observation::Dns(DnsObservation {
            client,
            name: format!("s-{target:04}.{}.svc.cluster.local", server.namespace),
            ips: vec![cluster_ip],
            ttl_seconds: 30,
            first_seen_ms: at_ms,
            last_seen_ms: at_ms,
        })
    } else {
        Observation::Connection(ConnectionObservation {
            client,
            server_ip: cluster_ip,
            server_port: SERVICE_PORT,
            protocol: Protocol::Tcp,
            first_seen_ms: at_ms,
            last_seen_ms: at_ms,
        })
    })
}

pub fn report_body(observations: Vec<Observation>) -> Result<Vec<u8>> {
    serde_json::to_vec(&Report {
        version: REPORT_VERSION,
        node: crate::fixtures::TEST_NODE.into(),
        observations,
    })
    .map_err(|e| BenchError::Failed(format!("serialize report: {e}")))
}

/// Posts prepared bodies, one of [`POSTERS`] concurrent posters, until `stop`; counts observations the
/// operator accepted (503s, when it is behind, are retried after a pause).
async fn post_until(
    client: Arc<IngestClient>,
    bodies: Arc<Vec<Vec<u8>>>,
    stop: Arc<AtomicBool>,
    accepted: Arc<AtomicU64>,
    poster: usize,
) -> Result<()> {
    let mut next = poster;
    while !stop.load(Ordering::Relaxed) {
        let body = bodies[next % bodies.len()].clone();
        next += POSTERS;
        match client.post(body).await? {
            200..=299 => {
                accepted.fetch_add(OBSERVATIONS_PER_REPORT as u64, Ordering::Relaxed);
            }
            503 => tokio::time::sleep(Duration::from_millis(20)).await,
            other => return Err(BenchError::Failed(format!("ingest answered {other}"))),
        }
    }
    Ok(())
}

/// Runs everything and returns the figures.
pub async fn figures() -> Result<Vec<Figure>> {
    let kube = admin_client().await?;
    install_all(&kube).await?;
    // Without a kubelet's heartbeat the controller-manager would mark the pods' node, and with
    // it every pod and EndpointSlice endpoint, not ready mid-run (and churn the API server).
    crate::fixtures::ensure_node(&kube).await?;
    let heartbeat = tokio::spawn(crate::sim::kubelet::heartbeat(
        kube.clone(),
        crate::fixtures::TEST_NODE.into(),
    ));
    let figures = measure(&kube).await;
    heartbeat.abort();
    figures
}

/// [`figures`] once the control plane holds the CRDs and a node that stays ready.
async fn measure(kube: &kube::Client) -> Result<Vec<Figure>> {
    let kube = kube.clone();
    eprintln!(
        "operator: loading the control plane ({} workloads, {} pods, {} Services)",
        cluster_load::WORKLOADS,
        cluster_load::PODS,
        cluster_load::SERVICES
    );
    let cluster = cluster_load::populate(&kube).await?;
    eprintln!("  cluster ready in {:.0} s", cluster.took.as_secs_f64());
    let ns: k8s_openapi::api::core::v1::Namespace =
        serde_json::from_value(serde_json::json!({"metadata": {"name": OPERATOR_NS}}))
            .map_err(|e| BenchError::Failed(e.to_string()))?;
    match kube::Api::<k8s_openapi::api::core::v1::Namespace>::all(kube.clone())
        .create(&Default::default(), &ns)
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 409 => {}
        Err(e) => return Err(crate::kube_context("create the operator namespace")(e).into()),
    }
    let token = service_account_token(&kube, OPERATOR_NS, "sniffer", "trafficmap").await?;
    let mut operator = OperatorProcess::start()?;
    operator.wait_ready().await?;
    // The operator resolves an observation against the cluster as it knew it when the
    // observation was seen, and knows who backs a Service only from its first EndpointSlice
    // (plus 5 s of slack); the load's observations are [`SETTLED_AGE_MS`] old.
    tokio::time::sleep(Duration::from_millis(SETTLED_AGE_MS) + LISTED_WITHIN).await;
    let ca = published_ca(&kube, OPERATOR_NS).await?;
    let client = Arc::new(IngestClient::new(&operator.ingest_url, &ca, &token)?);
    warm_up(&operator, &client, &cluster).await?;
    let service_only = service_only_targets(&kube).await?;
    if service_only > 0 {
        return Err(BenchError::Failed(format!(
            "after the warm-up {service_only} edges end at a Service, not its workload: the operator did not know the backends when they were seen"
        )));
    }

    let ingest = ingest_window(&operator, &client, &cluster).await?;
    eprintln!("  ingest: {ingest:.0} observations/s");
    // Writes the window left behind (the minute's `lastSeen` refreshes of every client fall
    // about here) would delay the probes; they are timed under steady load, not behind them.
    let drained = wait_idle(&operator, "what the ingest window left").await?;
    eprintln!(
        "  operator idle again {:.0} s after the ingest window closed",
        drained.as_secs_f64()
    );
    let steady = super::latency::steady_phase(
        &kube,
        &client,
        &cluster,
        &operator.admin_url,
        super::latency::SteadyLoad {
            window: STEADY_WINDOW,
            rate: STEADY_RATE,
            probe_every: PROBE_EVERY,
        },
    )
    .await?;
    let (_, hwm) = memory_kib(operator.child.id())?;
    let bound_per_min = cluster_load::WORKLOADS as f64 * 60.0 / FLUSH_INTERVAL.as_secs_f64();
    let flush_s = FLUSH_INTERVAL.as_secs_f64();
    Ok(vec![
        Figure::new("operator_ingest", ingest.round(), "observations/s").with_note(format!(
            "{POSTERS} concurrent posters, {OBSERVATIONS_PER_REPORT} observations per report, {} s window; {} workloads, {} pods, {} Services in the control plane",
            INGEST_WINDOW.as_secs(), cluster_load::WORKLOADS, cluster_load::PODS, cluster_load::SERVICES
        )),
        Figure::new("operator_rss", mib(hwm), "MiB").with_note("VmHWM over the whole run"),
        Figure::new("report_to_crd_latency_p99", steady.latency_p99.as_secs_f64(), "s").with_note(format!(
            "{} probes (new edges) under {STEADY_RATE} observations/s; p50 {:.2} s; flush interval {flush_s:.0} s, target <= {:.0} s",
            steady.probes, steady.latency_p50.as_secs_f64(), 2.0 * flush_s
        )),
        Figure::new("api_writes_per_min", steady.writes_per_min.round(), "writes/min").with_note(format!(
            "bound {bound_per_min:.0}/min ({} workloads / {flush_s:.0} s flush interval); measured over {} s of steady load",
            cluster_load::WORKLOADS, STEADY_WINDOW.as_secs()
        )),
    ])
}

/// Sends the load's whole edge set once (seen [`SETTLED_AGE_MS`] ago, so none of it waits in
/// the bounded settle queues) and waits until the operator dealt with it and wrote every
/// client's status, so the watches are synced, the map holds every edge and the writer is
/// idle before timing starts.
async fn warm_up(
    operator: &OperatorProcess,
    client: &Arc<IngestClient>,
    cluster: &LoadedCluster,
) -> Result<()> {
    let total = load_size(cluster);
    let before = processed(&operator.metrics().await?);
    let at = now_ms().saturating_sub(SETTLED_AGE_MS);
    let first_post = Instant::now();
    let mut sent = 0usize;
    let mut posts = tokio::task::JoinSet::new();
    for chunk_start in (0..total).step_by(OBSERVATIONS_PER_REPORT) {
        let observations: Vec<Observation> = (chunk_start
            ..(chunk_start + OBSERVATIONS_PER_REPORT).min(total))
            .filter_map(|i| load_observation(cluster, i, at))
            .collect();
        sent += observations.len();
        let body = report_body(observations)?;
        let client = Arc::clone(client);
        posts.spawn(async move { super::latency::post(&client, body).await });
    }
    while let Some(posted) = posts.join_next().await {
        posted.map_err(|e| BenchError::Failed(format!("warm-up poster: {e}")))??;
    }
    let mut resolved = false;
    for _ in 0..600 {
        let now = processed(&operator.metrics().await?);
        if now - before >= sent as f64 {
            resolved = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    if !resolved {
        return Err(BenchError::Failed(
            "the operator did not resolve the warm-up in 120 s".into(),
        ));
    }
    // Every client's first status (and draft) written, so the timed phases start from a
    // steady state, not behind the creation of thousands of objects.
    wait_idle(operator, "the warm-up's statuses").await?;
    let expected = load_edges(cluster);
    let held = sample(&operator.metrics().await?, "trafficmap_operator_edges") as usize;
    if held != expected {
        return Err(BenchError::Failed(format!(
            "after the warm-up the operator's map holds {held} edges, the load has {expected}"
        )));
    }
    eprintln!(
        "  warm-up: {} clients written, operator idle {:.0} s after the first post",
        cluster.workloads.len(),
        first_post.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Targets in ObservedTraffic that name a Service rather than the workload behind it.
async fn service_only_targets(kube: &kube::Client) -> Result<usize> {
    let all = kube::Api::<trafficmap_api::ObservedTraffic>::all(kube.clone())
        .list(&Default::default())
        .await
        .map_err(crate::kube_context("list ObservedTraffic"))?;
    Ok(all
        .items
        .iter()
        .filter_map(|ot| ot.status.as_ref())
        .flat_map(|status| &status.targets)
        .filter(|target| target.kind == trafficmap_api::render::SERVICE_KIND)
        .count())
}

/// Waits until the operator has nothing settling, nothing to write and nothing written for a
/// flush interval (so no news held back by the interval either); returns how long it took.
async fn wait_idle(operator: &OperatorProcess, what: &str) -> Result<Duration> {
    let started = Instant::now();
    let mut idle_since: Option<Instant> = None;
    while started.elapsed() < WARM_UP_WRITES {
        let text = operator.metrics().await?;
        let busy = sample(&text, "trafficmap_operator_writes_waiting")
            + sample(&text, "trafficmap_operator_observations_pending");
        if busy > 0.0 {
            idle_since = None;
        } else if idle_since.is_some_and(|at| at.elapsed() > FLUSH_INTERVAL) {
            return Ok(started.elapsed());
        } else if idle_since.is_none() {
            idle_since = Some(Instant::now());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Err(BenchError::Failed(format!(
        "the operator did not write {what} in {} s",
        WARM_UP_WRITES.as_secs()
    )))
}

/// The ingest window: prepared reports posted as fast as the operator takes them.
async fn ingest_window(
    operator: &OperatorProcess,
    client: &Arc<IngestClient>,
    cluster: &LoadedCluster,
) -> Result<f64> {
    let at = now_ms().saturating_sub(SETTLED_AGE_MS);
    let total = load_size(cluster);
    let mut bodies = Vec::with_capacity(PREPARED_REPORTS);
    for r in 0..PREPARED_REPORTS {
        let observations: Vec<Observation> = (0..OBSERVATIONS_PER_REPORT)
            .filter_map(|k| {
                load_observation(cluster, (r * OBSERVATIONS_PER_REPORT + k * 13) % total, at)
            })
            .collect();
        bodies.push(report_body(observations)?);
    }
    let bodies = Arc::new(bodies);
    let stop = Arc::new(AtomicBool::new(false));
    let accepted = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for poster in 0..POSTERS {
        tasks.push(tokio::spawn(post_until(
            Arc::clone(client),
            Arc::clone(&bodies),
            Arc::clone(&stop),
            Arc::clone(&accepted),
            poster,
        )));
    }
    // Let the queue fill before the window opens.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let text = operator.metrics().await?;
    let (before, refused_before) = (processed(&text), family_sum(&text, REFUSED));
    let started = Instant::now();
    tokio::time::sleep(INGEST_WINDOW).await;
    let text = operator.metrics().await?;
    let after = processed(&text);
    let elapsed = started.elapsed().as_secs_f64();
    let refused = family_sum(&text, REFUSED) - refused_before;
    eprintln!("  reports refused during the window (and sent again): {refused:.0}");
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await
            .map_err(|e| BenchError::Failed(format!("poster: {e}")))??;
    }
    Ok((after - before) / elapsed)
}
