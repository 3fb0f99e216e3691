//! Runs a scenario end to end on this machine, on one of two nodes:
//! - simulated: the in-process kubelet, CoreDNS, kube-proxy, and the real operator and sniffer as
//!   host processes with the credentials the chart gives them (ServiceAccounts and RBAC from
//!   `config/rbac/`, TokenRequest tokens);
//! - real (`e2e/node/node.sh up` first): pods are containers of the scenario image, and trafficmap
//!   is installed with helm from `chart/`.
//!
//! Then it deploys the workloads (and the external hosts), applies the actions, and scores the map.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use kube::api::{
    ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams,
};
use kube::{Api, Client};
use tokio::sync::watch;
use trafficmap_api::observed::ObservedTraffic;

use super::compare::{Score, read_maps, score};
use super::deploy;
use super::host::{start_operator, start_sniffer};
use super::model::Scenario;
use super::progress;
use crate::cluster::{admin_client, kubeconfig_path, repo_root, wait_for};
use crate::operator::bin_path;
use crate::real;
use crate::sim::addons::{self, ManagedProcess};
use crate::sim::internet::{self, Internet};
use crate::sim::kubelet::{self, KubeletConfig};
use crate::sim::spec::CallTarget;
use crate::sim::traffic::ListenArg;
use crate::sim::{self, NODE_NAME, sys};
use crate::{Error, Result, kube_context};

/// The operator's namespace and accounts, as the chart names them.
pub const TRAFFICMAP_NAMESPACE: &str = "trafficmap";
/// The sniffer's ServiceAccount.
pub const SNIFFER_ACCOUNT: &str = "trafficmap-sniffer";
/// The operator's ServiceAccount.
pub const OPERATOR_ACCOUNT: &str = "trafficmap-operator";
/// Audience of the sniffer's report tokens.
pub const REPORT_AUDIENCE: &str = "trafficmap";
/// Field manager of what the runner applies.
const RUNNER_MANAGER: &str = "trafficmap-scenario";
/// How long pods may take to run.
const PODS_RUNNING_TIMEOUT: Duration = Duration::from_secs(120);
/// How long the map may take to settle after `duration` (reports every 1 s, flush every 1 s).
const SETTLE_TIMEOUT: Duration = Duration::from_secs(15);
/// How long namespace deletion may take.
const NAMESPACE_DELETE_TIMEOUT: Duration = Duration::from_secs(90);

/// How to run.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// After scoring, keep everything running until Ctrl-C (to look at it with kubectl).
    pub keep: bool,
    /// Start the sniffer only once every pod runs (and has made its first calls), so
    /// connections opened before it (persistent ones) are seen only by the socket scan.
    /// On the real node, trafficmap is installed only then.
    pub sniffer_late: bool,
    /// The node the pods run on.
    pub node: NodeKind,
    /// Chart values (`key=value`) set on the real node's install, beside [`REAL_NODE_VALUES`].
    pub chart_values: Vec<String>,
    /// Faults injected into the real node at offsets from the start of the traffic.
    pub faults: Vec<(Duration, real::Fault)>,
}

/// Which node runs the scenario's pods.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum NodeKind {
    /// The node simulator (pods are network namespaces and processes).
    #[default]
    Sim,
    /// The real node of `e2e/node/node.sh` (kubelet, containerd, runc).
    Real,
}

/// Values the chart is installed with on the real node for a scenario: drafts on (the score reads
/// them too), as the simulated node's operator runs.
const REAL_NODE_VALUES: &[&str] = &["emitClientIntents=true", "crds.clientIntents=true"];

/// How long pods call before a late sniffer starts.
const LATE_SNIFFER_DELAY: Duration = Duration::from_secs(5);

/// What runs during a scenario; torn down by [`Environment::teardown`].
#[derive(Default)]
struct Environment {
    client: Option<Client>,
    node: NodeKind,
    /// trafficmap installed with helm (the real node).
    installed: bool,
    kubelet: Option<(watch::Sender<bool>, tokio::task::JoinHandle<Result<()>>)>,
    addons: Vec<ManagedProcess>,
    internet: Option<Internet>,
    trafficmap: Vec<ManagedProcess>,
    deployed: bool,
}

/// [`run_file`] on a runtime of its own, for callers that are not async (tests); panics when the
/// run fails or the map is not exact.
pub fn run_file_exact(path: &Path, options: &RunOptions) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let score = runtime
        .block_on(run_file(path, options))
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(
        score.perfect(),
        "{} is not mapped exactly on the {:?} node:\n{}",
        path.display(),
        options.node,
        score.render()
    );
}

/// Runs the scenario in `path`, prints the score and returns it.
pub async fn run_file(path: &Path, options: &RunOptions) -> Result<Score> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::Manifest {
        path: path.display().to_string(),
        source: Box::new(e),
    })?;
    let scenario = Scenario::parse(&text).map_err(|e| Error::Manifest {
        path: path.display().to_string(),
        source: e.into(),
    })?;
    preflight(&scenario, options.node)?;
    let started = std::time::Instant::now();
    let _node = sim::NodeLock::acquire()?;
    let real = options.node == NodeKind::Real;
    if !real && !options.faults.is_empty() {
        return Err(Error::Exited(
            "faults are injected on the real node only".into(),
        ));
    }
    let run_dir = repo_root()
        .join("target/e2e-logs")
        .join(format!("scenario-{}", scenario.name));
    let _ = std::fs::remove_dir_all(&run_dir);
    std::fs::create_dir_all(&run_dir).map_err(|e| Error::Http {
        what: format!("create {}", run_dir.display()),
        source: Box::new(e),
    })?;
    eprintln!("scenario {}: logs in {}", scenario.name, run_dir.display());
    if !real {
        for line in sim::cleanup::cleanup() {
            eprintln!("scenario: left by an earlier run: {line}");
        }
    }
    let mut env = Environment {
        node: options.node,
        ..Environment::default()
    };
    let result = {
        let body = run_in(&scenario, &run_dir, &mut env, options);
        tokio::select! {
            r = body => r,
            _ = tokio::signal::ctrl_c() => Err(Error::Exited("interrupted".into())),
        }
    };
    env.teardown(&scenario).await;
    eprintln!(
        "scenario {}: {:.0} s on the {} node, set-up and teardown included",
        scenario.name,
        started.elapsed().as_secs_f64(),
        match options.node {
            NodeKind::Sim => "simulated",
            NodeKind::Real => "real",
        }
    );
    result
}

fn preflight(scenario: &Scenario, node: NodeKind) -> Result<()> {
    if !sys::is_root() {
        return Err(Error::Exited(
            "the scenario runner needs root (network namespaces, veth, nftables, cgroups, AF_PACKET)".into(),
        ));
    }
    for (program, package) in [("ip", "iproute2"), ("nft", "nftables")] {
        if !sys::have_program(program) {
            return Err(Error::Exited(format!(
                "`{program}` is missing: apt-get install {package}"
            )));
        }
    }
    if !scenario.external_hosts().is_empty() && !sys::have_program("dnsmasq") {
        return Err(Error::Exited(
            "`dnsmasq` is missing: apt-get install dnsmasq-base".into(),
        ));
    }
    match node {
        NodeKind::Sim => {
            // Both nodes' kube-proxies would program the same nftables tables.
            if sim::network::link_exists(real::NODE_LINK) {
                return Err(Error::Exited(format!(
                    "the real node is up (link {}): stop it first (make cluster-down)",
                    real::NODE_LINK
                )));
            }
            bin_path("trafficmap-operator")?;
            bin_path("trafficmap-sniffer")?;
            addons::go_binary("controlplane")?;
            addons::go_binary("coredns")?;
        }
        NodeKind::Real => {
            real::image_ref(real::PLAY_IMAGE)?;
            crate::chart::helm_path()?;
        }
    }
    Ok(())
}

async fn run_in(
    scenario: &Scenario,
    run_dir: &Path,
    env: &mut Environment,
    options: &RunOptions,
) -> Result<Score> {
    let client = admin_client().await?;
    env.client = Some(client.clone());
    if options.node == NodeKind::Sim {
        // The chart brings its CRDs and accounts on the real node.
        crate::crds::install_all(&client).await?;
        apply_dir(&client, &repo_root().join("config/rbac")).await?;
    }
    let namespaces = scenario.namespaces();
    deploy::delete_namespaces(&client, scenario, NAMESPACE_DELETE_TIMEOUT, true).await?;
    forget_observed_traffic(&client, &namespaces).await?;

    let runtime = match options.node {
        NodeKind::Sim => deploy::Runtime::Simulated,
        NodeKind::Real => {
            real::wait_node_ready(&client).await?;
            deploy::Runtime::Containers {
                image: real::image_ref(real::PLAY_IMAGE)?,
            }
        }
    };
    if options.node == NodeKind::Sim {
        start_simulated_node(&client, &namespaces, run_dir, env).await?;
    }
    let externals = scenario.external_hosts();
    let upstream = if externals.is_empty() {
        None
    } else {
        let ports = external_ports(scenario);
        let self_exe = sim::node_binary()?;
        let internet = tokio::task::block_in_place(|| {
            Internet::start(&externals, &ports, run_dir, &self_exe)
        })?;
        for (name, ip) in &internet.hosts {
            eprintln!("scenario: external host {name} at {ip}");
        }
        env.internet = Some(internet);
        Some(internet::UPSTREAM_DNS.to_string())
    };
    // trafficmap: host processes with the chart's credentials, or the chart itself.
    let mut ingest_url = String::new();
    match options.node {
        NodeKind::Sim => {
            env.addons
                .push(addons::start_coredns(run_dir, upstream.as_deref()).await?);
            env.addons
                .push(addons::start_kube_proxy(run_dir, NODE_NAME).await?);
            eprintln!("scenario: node {NODE_NAME} with CoreDNS and kube-proxy ready");
            let (operator, url) = start_operator(&client, run_dir).await?;
            env.trafficmap.push(operator);
            ingest_url = url;
            if !options.sniffer_late {
                env.trafficmap
                    .push(start_sniffer(&client, run_dir, &ingest_url).await?);
                eprintln!("scenario: operator and sniffer running");
            }
        }
        NodeKind::Real if !options.sniffer_late => {
            env.installed = true;
            real::install_trafficmap(&client, &chart_values(options)).await?;
            eprintln!(
                "scenario: trafficmap installed with helm on {}",
                real::NODE_NAME
            );
        }
        NodeKind::Real => {}
    }

    env.deployed = true;
    deploy::deploy(&client, scenario, &runtime).await?;
    deploy::wait_running(&client, scenario, PODS_RUNNING_TIMEOUT).await?;
    if options.sniffer_late {
        tokio::time::sleep(LATE_SNIFFER_DELAY).await;
        if options.node == NodeKind::Real {
            env.installed = true;
            real::install_trafficmap(&client, &chart_values(options)).await?;
            eprintln!("scenario: trafficmap installed with helm after the pods");
        } else {
            env.trafficmap
                .push(start_sniffer(&client, run_dir, &ingest_url).await?);
            eprintln!("scenario: operator running; sniffer started after the pods");
        }
    }
    eprintln!(
        "scenario: all pods running; traffic for {:?}",
        scenario.duration
    );
    let start = tokio::time::Instant::now();
    let progress = tokio::spawn(progress::report(
        client.clone(),
        namespaces.clone(),
        scenario.expect.clone(),
        scenario.duration,
    ));
    let stop_progress = AbortOnDrop(progress);
    let mut actions = scenario.actions.clone();
    actions.sort_by_key(|a| a.at);
    for action in &actions {
        tokio::time::sleep_until(start + action.at).await;
        env.check_processes()?;
        if let Some(id) = &action.restart
            && let Some(w) = scenario.workload(id)
        {
            eprintln!("scenario: {:?}: restart {id}", action.at);
            deploy::restart(&client, w).await?;
        }
        if let (Some(id), Some(replicas)) = (&action.scale, action.replicas)
            && let Some(w) = scenario.workload(id)
        {
            eprintln!("scenario: {:?}: scale {id} to {replicas}", action.at);
            deploy::scale(&client, w, replicas).await?;
        }
    }
    let mut faults = options.faults.clone();
    faults.sort_by_key(|(at, _)| *at);
    for (at, fault) in faults {
        tokio::time::sleep_until(start + at).await;
        eprintln!("scenario: {at:?}: fault {fault:?}");
        real::inject(&client, fault).await?;
    }
    tokio::time::sleep_until(start + scenario.duration).await;
    drop(stop_progress);
    env.check_processes()?;

    let deadline = tokio::time::Instant::now() + SETTLE_TIMEOUT;
    let result = loop {
        let (observed, intents) = read_maps(&client, &namespaces).await?;
        let result = score(&scenario.expect, &observed, &intents);
        if result.perfect() || tokio::time::Instant::now() >= deadline {
            break result;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    print!("{}", result.render());
    if options.keep {
        eprintln!(
            "scenario: still running (KUBECONFIG={}); try `kubectl get observedtraffic`; Ctrl-C to stop",
            kubeconfig_path().display()
        );
        std::future::pending::<()>().await;
    }
    Ok(result)
}

/// Aborts a task when dropped (also when the run fails early).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Ports the external hosts listen on.
fn external_ports(scenario: &Scenario) -> Vec<ListenArg> {
    let mut ports: Vec<ListenArg> = scenario
        .workloads
        .iter()
        .flat_map(|w| &w.calls)
        .filter(|c| matches!(c.target(), Ok(CallTarget::External { .. })))
        .map(|c| ListenArg {
            port: c.port,
            protocol: c.protocol,
        })
        .collect();
    ports.sort_by_key(|p| (p.port, p.protocol.to_string()));
    ports.dedup();
    ports
}

impl Environment {
    fn check_processes(&mut self) -> Result<()> {
        for p in self.addons.iter_mut().chain(self.trafficmap.iter_mut()) {
            p.check_alive()?;
        }
        Ok(())
    }

    async fn teardown(&mut self, scenario: &Scenario) {
        if let (Some(client), true) = (&self.client, self.deployed)
            && let Err(e) =
                deploy::delete_namespaces(client, scenario, NAMESPACE_DELETE_TIMEOUT, false).await
        {
            eprintln!("scenario: teardown: {e}");
        }
        self.trafficmap.clear();
        if let Some((stop, task)) = self.kubelet.take() {
            let _ = stop.send(true);
            match task.await {
                Ok(Err(e)) => eprintln!("scenario: node: {e}"),
                Err(e) => eprintln!("scenario: node: {e}"),
                Ok(Ok(())) => {}
            }
        }
        self.addons.clear();
        self.internet = None;
        if self.installed
            && let Some(client) = &self.client
            && let Err(e) = real::uninstall_trafficmap(client).await
        {
            eprintln!("scenario: teardown: {e}");
        }
        if self.node == NodeKind::Sim {
            tokio::task::block_in_place(sim::cleanup::cleanup);
        }
    }
}

/// The values of the real node's install.
fn chart_values(options: &RunOptions) -> Vec<&str> {
    let extra = options.chart_values.iter().map(String::as_str);
    REAL_NODE_VALUES.iter().copied().chain(extra).collect()
}

/// The simulated node: kubelet (bridge, node registration, pods) and the kube-dns Service.
async fn start_simulated_node(
    client: &Client,
    namespaces: &BTreeSet<String>,
    run_dir: &Path,
    env: &mut Environment,
) -> Result<()> {
    let (stop, stopped) = watch::channel(false);
    let mut config = KubeletConfig::local(Some(namespaces.clone()))?;
    config.log_dir = run_dir.join("pods");
    let kubelet_client = client.clone();
    let task = tokio::spawn(async move { kubelet::run(kubelet_client, config, stopped).await });
    env.kubelet = Some((stop, task));
    wait_for("node registered", Duration::from_secs(30), || async {
        let node = Api::<Node>::all(client.clone())
            .get_opt(NODE_NAME)
            .await
            .map_err(kube_context("get node"))?;
        Ok((node.is_some() && sim::network::link_exists(sim::BRIDGE)).then_some(()))
    })
    .await?;
    addons::ensure_kube_dns_service(client).await
}

/// Deletes ObservedTraffic of clients in `namespaces` (left by an earlier run).
async fn forget_observed_traffic(client: &Client, namespaces: &BTreeSet<String>) -> Result<()> {
    let api = Api::<ObservedTraffic>::all(client.clone());
    let list = match api.list(&ListParams::default()).await {
        Ok(list) => list,
        // Not installed yet (the real node's chart brings the CRD): nothing to forget.
        Err(kube::Error::Api(status)) if status.code == 404 => return Ok(()),
        Err(e) => return Err(kube_context("list ObservedTraffic")(e)),
    };
    for ot in list.items {
        if namespaces.contains(&ot.spec.client.namespace)
            && let Some(name) = &ot.metadata.name
        {
            let _ = api.delete(name, &DeleteParams::default()).await;
        }
    }
    Ok(())
}

/// Server-side applies every manifest in `dir/*.yaml` except kustomization.yaml.
pub async fn apply_dir(client: &Client, dir: &Path) -> Result<()> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| Error::Manifest {
            path: dir.display().to_string(),
            source: Box::new(e),
        })?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .filter(|p| p.file_name().is_some_and(|n| n != "kustomization.yaml"))
        .collect();
    // Namespaces first.
    paths.sort_by_key(|p| (!p.ends_with("namespace.yaml"), p.clone()));
    for path in paths {
        let shown = path.display().to_string();
        for object in crate::crds::read_documents::<DynamicObject>(&path)? {
            apply_object(client, &object, &shown).await?;
        }
    }
    Ok(())
}

async fn apply_object(client: &Client, object: &DynamicObject, path: &str) -> Result<()> {
    let types = object.types.clone().ok_or_else(|| Error::Manifest {
        path: path.into(),
        source: "object without apiVersion/kind".into(),
    })?;
    let (group, version) = match types.api_version.split_once('/') {
        Some((g, v)) => (g.to_string(), v.to_string()),
        None => (String::new(), types.api_version.clone()),
    };
    let (plural, namespaced) = match types.kind.as_str() {
        "Namespace" => ("namespaces", false),
        "ServiceAccount" => ("serviceaccounts", true),
        "ClusterRole" => ("clusterroles", false),
        "ClusterRoleBinding" => ("clusterrolebindings", false),
        "Role" => ("roles", true),
        "RoleBinding" => ("rolebindings", true),
        other => {
            return Err(Error::Manifest {
                path: path.into(),
                source: format!("kind {other} is not applied by the runner").into(),
            });
        }
    };
    let gvk = GroupVersionKind::gvk(&group, &version, &types.kind);
    let resource = ApiResource::from_gvk_with_plural(&gvk, plural);
    let name = object.metadata.name.clone().unwrap_or_default();
    let api: Api<DynamicObject> = if namespaced {
        let ns = object
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        Api::namespaced_with(client.clone(), &ns, &resource)
    } else {
        Api::all_with(client.clone(), &resource)
    };
    api.patch(
        &name,
        &PatchParams::apply(RUNNER_MANAGER).force(),
        &Patch::Apply(object),
    )
    .await
    .map_err(kube_context(format!(
        "apply {} {name} from {path}",
        types.kind
    )))?;
    Ok(())
}
