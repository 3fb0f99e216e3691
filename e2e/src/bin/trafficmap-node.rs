//! `trafficmap-node`: a single-node cluster on this machine for trafficmap's end-to-end runs.
//!
//! - `run`: the simulated node (kubelet with pods as network namespaces), CoreDNS and
//!   kube-proxy, against the local control plane, until Ctrl-C.
//! - `scenario FILE`: run a scenario end to end and score the map (exit 0 only if perfect).
//! - `traffic`: a pod's process (listens and calls); the simulated kubelet starts it.
//! - `cleanup`: remove whatever a killed run left (namespaces, links, cgroups, nftables, processes).

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use trafficmap_e2e::cluster::{admin_client, repo_root};
use trafficmap_e2e::scenario::runner::{NodeKind, RunOptions, run_file};
use trafficmap_e2e::sim::traffic::TrafficArgs;
use trafficmap_e2e::sim::{addons, cleanup, kubelet, sys};

#[derive(Parser)]
#[command(
    version,
    about = "A single-node Kubernetes cluster on this machine: pods as network namespaces",
    after_help = "\
Examples:
  trafficmap-node scenario e2e/scenarios/tutorial.yaml
  trafficmap-node run --namespace demo
  trafficmap-node traffic --listen 8080/TCP --call server.demo.svc.cluster.local:80/TCP/every=1s
  trafficmap-node cleanup"
)]
struct Cli {
    #[command(subcommand)]
    command: Commands,
}

#[derive(Subcommand)]
enum Commands {
    /// Run the node (kubelet, CoreDNS, kube-proxy) until Ctrl-C.
    Run {
        /// Bind unscheduled pods of these namespaces only (repeatable; default: all).
        #[arg(long = "namespace")]
        namespaces: Vec<String>,
    },
    /// Run a scenario file and print `recall=... precision=...`.
    Scenario {
        /// The scenario YAML.
        file: PathBuf,
        /// Keep everything running after scoring, until Ctrl-C.
        #[arg(long)]
        keep: bool,
        /// Start the sniffer only after every pod runs (connections opened earlier are seen
        /// by the socket scan alone).
        #[arg(long)]
        sniffer_late: bool,
        /// Where the pods run: `sim` (this simulator) or `real` (the kubelet and containerd of
        /// `e2e/node/node.sh up`, with trafficmap installed by helm).
        #[arg(long, value_enum, default_value = "sim")]
        node: NodeKind,
    },
    /// A pod's process: listen and make calls.
    Traffic(TrafficArgs),
    /// Remove what a killed run left.
    Cleanup,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Commands::Traffic(traffic) => {
            traffic.run();
            ExitCode::SUCCESS
        }
        Commands::Cleanup => {
            if !sys::is_root() {
                eprintln!("trafficmap-node cleanup needs root");
                return ExitCode::FAILURE;
            }
            let _node = match trafficmap_e2e::sim::NodeLock::acquire() {
                Ok(lock) => lock,
                Err(e) => {
                    eprintln!("trafficmap-node: {e}");
                    return ExitCode::FAILURE;
                }
            };
            for line in cleanup::cleanup() {
                println!("{line}");
            }
            ExitCode::SUCCESS
        }
        Commands::Run { namespaces } => async_main(run_node(namespaces)),
        Commands::Scenario {
            file,
            keep,
            sniffer_late,
            node,
        } => async_main(async move {
            let options = RunOptions {
                keep,
                sniffer_late,
                node,
                chart_values: Vec::new(),
                faults: Vec::new(),
            };
            let score = run_file(&file, &options).await?;
            Ok(score.perfect())
        }),
    }
}

fn async_main(work: impl std::future::Future<Output = trafficmap_e2e::Result<bool>>) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("trafficmap-node: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(work) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("trafficmap-node: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run_node(namespaces: Vec<String>) -> trafficmap_e2e::Result<bool> {
    if !sys::is_root() {
        return Err(trafficmap_e2e::Error::Exited(
            "trafficmap-node run needs root".into(),
        ));
    }
    let _node = trafficmap_e2e::sim::NodeLock::acquire()?;
    let client = admin_client().await?;
    let namespaces: Option<BTreeSet<String>> =
        (!namespaces.is_empty()).then(|| namespaces.into_iter().collect());
    let run_dir = repo_root().join("target/e2e-logs/node");
    std::fs::create_dir_all(&run_dir).map_err(|e| trafficmap_e2e::Error::Http {
        what: "log dir".into(),
        source: Box::new(e),
    })?;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut config = kubelet::KubeletConfig::local(namespaces)?;
    config.log_dir = run_dir.join("pods");
    let node_client = client.clone();
    let node = tokio::spawn(async move { kubelet::run(node_client, config, stopped).await });
    let result = async {
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        addons::ensure_kube_dns_service(&client).await?;
        let coredns = addons::start_coredns(&run_dir, None).await?;
        let proxy = addons::start_kube_proxy(&run_dir, trafficmap_e2e::sim::NODE_NAME).await?;
        eprintln!(
            "trafficmap-node: running; logs in {}; Ctrl-C to stop",
            run_dir.display()
        );
        let _ = tokio::signal::ctrl_c().await;
        drop((coredns, proxy));
        Ok::<_, trafficmap_e2e::Error>(())
    }
    .await;
    let _ = stop.send(true);
    let _ = node.await;
    tokio::task::block_in_place(cleanup::cleanup);
    result.map(|_| true)
}
