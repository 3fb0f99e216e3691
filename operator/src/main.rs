//! `trafficmap-operator`: wires the pieces together (see the library docs for what each does).

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use kube::Client;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;
use trafficmap_operator::admin::{self, Liveness, Readiness};
use trafficmap_operator::config::Args;
use trafficmap_operator::engine::{self, Engine, EngineConfig};
use trafficmap_operator::handover;
use trafficmap_operator::ingest::auth::service_account_username;
use trafficmap_operator::ingest::tls::{self, ManagedTls};
use trafficmap_operator::ingest::{self, IngestConfig};
use trafficmap_operator::leader::{self, LeaseConfig};
use trafficmap_operator::metrics::Metrics;
use trafficmap_operator::now_ms;
use trafficmap_operator::reconcile::{Audit, IntentsSync, Writer, WriterConfig};
use trafficmap_operator::resolve::ResolveConfig;
use trafficmap_operator::resolve::handover::Handover;
use trafficmap_operator::resolve::{Index, ServiceKey};
use trafficmap_operator::store::{restore, watch};

/// Queue of cluster events between the watches and the engine.
const CLUSTER_EVENT_QUEUE: usize = 16 * 1024;
/// Reports waiting for the engine; beyond this, sniffers get 503 and retry.
const REPORT_QUEUE: usize = 256;
/// How long shutdown may take before the process exits anyway.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(20);
/// How long a graceful stop may take to leave its history for the next operator.
const HANDOVER_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a graceful stop lets the writer write the last statuses after the engine drained.
const WRITER_GRACE: Duration = Duration::from_secs(8);

/// mimalloc instead of glibc's malloc: reports are decoded on the ingest tasks' threads and
/// freed on the engine's, a pattern that leaves glibc's per-thread arenas holding freed memory.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    init_tracing(&args.log_format);
    if rustls::crypto::ring::default_provider()
        .install_default()
        .is_err()
    {
        tracing::debug!("a rustls crypto provider was already installed");
    }
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            tracing::error!("{message}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing(format: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

async fn run(args: Args) -> Result<(), String> {
    let client = Client::try_default().await.map_err(|e| {
        format!("cannot reach the API server (in-cluster config or KUBECONFIG): {e}")
    })?;
    let metrics = Arc::new(Metrics::new());
    let readiness = Arc::new(Readiness::default());
    let liveness = Arc::new(Liveness::default());
    let shutdown = CancellationToken::new();
    tokio::spawn(signals(shutdown.clone()));

    let admin = tokio::spawn(admin::serve(
        args.admin_addr,
        readiness.clone(),
        liveness.clone(),
        metrics.clone(),
        shutdown.clone(),
    ));

    let lost = CancellationToken::new();
    let lease = LeaseConfig {
        namespace: args.namespace.clone(),
        name: args.lease_name.clone(),
        identity: args.pod_name.clone(),
        duration: Duration::from_secs(15),
        retry: Duration::from_secs(2),
    };
    let holder = if args.leader_elect {
        if !leader::acquire(&client, &lease, &shutdown).await {
            return Ok(());
        }
        Some(tokio::spawn(leader::hold(
            client.clone(),
            lease,
            shutdown.clone(),
            lost.clone(),
        )))
    } else {
        None
    };
    metrics.leader.set(1);

    let pair = match (&args.tls_cert_file, &args.tls_key_file) {
        (Some(cert), Some(key)) => tls::from_files(cert, key),
        _ => {
            let managed = ManagedTls {
                namespace: args.namespace.clone(),
                secret: args.tls_secret.clone(),
                ca_configmap: args.ca_configmap.clone(),
                dns_names: args.certificate_names(),
            };
            tls::ensure_managed(&client, &managed).await
        }
    }
    .map_err(|e| format!("ingest TLS: {e}"))?;
    let tls_config = tls::server_config(&pair).map_err(|e| format!("ingest TLS: {e}"))?;

    let resolve = resolve_config(&args)?;
    // Read before the start is taken: the watches, which start after it, see every change
    // since; the history left by the operator this one replaces covers what came before.
    let predecessor = predecessor_history(&client, &args).await;
    let started = now_ms();
    let mut index = Index::new(resolve, started);
    match predecessor {
        Some(handover) if index.inherit(&handover) => tracing::info!(
            checkpoint_ms = handover.checkpoint_ms,
            "took over the previous operator's history of addresses"
        ),
        Some(_) => tracing::warn!("the previous operator's history has another layout; not used"),
        None => {}
    }
    let mut engine = Engine::new(
        index,
        EngineConfig {
            flush_interval_ms: args.flush_interval.as_millis() as u64,
            ..EngineConfig::default()
        },
        metrics.clone(),
    );
    let stored = restore::list_observed(&client)
        .await
        .map_err(|e| format!("reading the stored map (ObservedTraffic): {e}"))?;
    tracing::info!(
        clients = stored.len(),
        "restored the map from ObservedTraffic"
    );
    engine.restore(&stored, started);
    let ledger = engine.ledger();

    let (cluster_tx, cluster_rx) = mpsc::channel(CLUSTER_EVENT_QUEUE);
    let audit_tx = cluster_tx.clone();
    let (report_tx, report_rx) = mpsc::channel(REPORT_QUEUE);
    let (write_tx, write_rx) = mpsc::unbounded_channel();
    let work = CancellationToken::new();
    let stop = engine::Stop::default();

    let watches = tokio::spawn(liveness.watch(
        "watches",
        watch::run_all(client.clone(), cluster_tx, work.clone()),
    ));
    let engine_task = tokio::spawn(liveness.watch(
        "engine",
        engine::run(engine, cluster_rx, report_rx, write_tx, stop.clone()),
    ));
    let writer = Writer::new(
        client.clone(),
        WriterConfig {
            emit_client_intents: args.emit_client_intents,
            concurrency: usize::from(args.write_concurrency),
        },
        metrics.clone(),
        ledger,
    );
    let (redecide_tx, redecide_rx) = mpsc::unbounded_channel();
    let writer_task = tokio::spawn(liveness.watch(
        "writer",
        writer.run(write_rx, redecide_rx, stop.now.clone()),
    ));
    let audit = Audit::new(
        client.clone(),
        metrics.clone(),
        args.audit_interval,
        args.cluster_dns_service.clone(),
        audit_tx,
    );
    let audit_task = tokio::spawn(liveness.watch("audit", audit.run(work.clone())));
    let intents_sync = IntentsSync::new(client.clone(), metrics.clone(), redecide_tx);
    let intents_task = tokio::spawn(liveness.watch("intents-sync", intents_sync.run(work.clone())));

    let listener = tokio::net::TcpListener::bind(args.ingest_addr)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", args.ingest_addr))?;
    let (sniffer_ns, sniffer_name) = args.sniffer_account();
    let ingest_task = tokio::spawn(liveness.watch(
        "ingest",
        ingest::serve(
            listener,
            tls_config,
            IngestConfig {
                addr: args.ingest_addr,
                max_body_bytes: args.max_body_bytes,
                body_read_timeout: args.body_timeout,
                ack_timeout: args.ack_timeout,
                sniffer_username: service_account_username(&sniffer_ns, &sniffer_name),
                audience: args.token_audience.clone(),
            },
            client.clone(),
            report_tx,
            metrics.clone(),
            stop.drain.clone(),
        ),
    ));
    readiness.set(true);
    tracing::info!(addr = %args.ingest_addr, "ingesting reports");

    let lost_leadership = tokio::select! {
        () = shutdown.cancelled() => false,
        () = lost.cancelled() => true,
    };
    readiness.set(false);
    metrics.leader.set(0);
    liveness.stopping();
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
        // Stopping gracefully, ingest takes no new reports and the engine resolves what waits
        // while the watches still run; the writer writes its last statuses, which acknowledges
        // the reports still open. With leadership lost, another replica may be writing already:
        // everything stops at once.
        stop.drain.cancel();
        if lost_leadership {
            stop.now.cancel();
        }
        let handover = engine_task.await;
        let mut writer_task = writer_task;
        if tokio::time::timeout(WRITER_GRACE, &mut writer_task)
            .await
            .is_err()
        {
            tracing::warn!("the last statuses were not written within {WRITER_GRACE:?}; stopping");
            stop.now.cancel();
            let _ = writer_task.await;
        }
        let _ = ingest_task.await;
        if let Ok(handover) = handover
            && !lost_leadership
        {
            hand_over(&client, &args, &handover).await;
        }
        work.cancel();
        let _ = watches.await;
        let _ = intents_task.await;
        let _ = audit_task.await;
    })
    .await;
    if drained.is_err() {
        tracing::warn!("shutdown took longer than {SHUTDOWN_GRACE:?}; exiting anyway");
    }
    shutdown.cancel();
    if let Some(holder) = holder {
        let _ = holder.await;
    }
    let _ = admin.await;
    if lost_leadership {
        return Err("lost leadership; exiting so this replica restarts as a follower".into());
    }
    tracing::info!("stopped");
    Ok(())
}

/// The history the operator this one replaces left (see `trafficmap_operator::handover`),
/// once it has stopped.
async fn predecessor_history(client: &Client, args: &Args) -> Option<Handover> {
    if args.handover_configmap.is_empty() {
        return None;
    }
    match handover::wait_for_predecessors(client, &args.namespace, &args.pod_name, SHUTDOWN_GRACE)
        .await
    {
        Ok(waited) if !waited.is_zero() => {
            tracing::info!(?waited, "waited for the operator this one replaces to stop")
        }
        Ok(_) => {}
        Err(err) => {
            tracing::warn!(%err, "cannot tell whether the operator this one replaces has stopped")
        }
    }
    match handover::read(client, &args.namespace, &args.handover_configmap).await {
        Ok(found) => {
            if found.is_none() {
                tracing::info!("no history left by a previous operator");
            }
            found
        }
        Err(err) => {
            tracing::warn!(%err, "cannot read the previous operator's history; calls seen just before this start may go unattributed");
            None
        }
    }
}

/// Leaves this operator's history for the next one.
async fn hand_over(client: &Client, args: &Args, handover: &Handover) {
    if args.handover_configmap.is_empty() {
        return;
    }
    let written = tokio::time::timeout(
        HANDOVER_TIMEOUT,
        handover::write(client, &args.namespace, &args.handover_configmap, handover),
    )
    .await;
    match written {
        Ok(Ok(())) => tracing::info!("left the history of addresses for the next operator"),
        Ok(Err(err)) => tracing::warn!(%err, "cannot leave the history for the next operator"),
        Err(_) => tracing::warn!("leaving the history for the next operator timed out"),
    }
}

fn resolve_config(args: &Args) -> Result<ResolveConfig, String> {
    let (dns_ns, dns_name) = args.cluster_dns_service.split_once('/').ok_or_else(|| {
        format!(
            "--cluster-dns-service {} is not namespace/name",
            args.cluster_dns_service
        )
    })?;
    Ok(ResolveConfig {
        cluster_domain: args.cluster_domain.clone(),
        pod_cidrs: args.pod_cidrs.clone(),
        service_cidrs: args.service_cidrs.clone(),
        cluster_dns: ServiceKey::new(dns_ns, dns_name),
        excluded_namespaces: args.exclude_namespaces.iter().cloned().collect(),
        max_dns_answers: args.max_dns_answers,
        ..ResolveConfig::default()
    })
}

async fn signals(shutdown: CancellationToken) {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(err) => {
            tracing::error!(%err, "cannot listen for SIGTERM");
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    tracing::info!("shutting down");
    shutdown.cancel();
}
