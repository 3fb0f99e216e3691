//! Runs a scenario end to end on this machine: the simulated node (in-process kubelet), CoreDNS,
//! kube-proxy, the external hosts, and the real operator and sniffer with the credentials the
//! chart gives them (ServiceAccounts and RBAC from `config/rbac/`, TokenRequest tokens); then
//! deploys the workloads, applies the actions, and scores the map.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use kube::api::{
    ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams,
};
use kube::config::Kubeconfig;
use kube::{Api, Client};
use tokio::sync::watch;
use trafficmap_api::observed::ObservedTraffic;

use super::compare::{Score, read_maps, score};
use super::deploy;
use super::model::Scenario;
use super::progress;
use crate::cluster::{admin_client, kubeconfig_path, repo_root, wait_for};
use crate::operator::{bin_path, free_port, published_ca, request_token};
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
    pub sniffer_late: bool,
}

/// How long pods call before a late sniffer starts.
const LATE_SNIFFER_DELAY: Duration = Duration::from_secs(5);

/// What runs during a scenario; torn down by [`Environment::teardown`].
#[derive(Default)]
struct Environment {
    client: Option<Client>,
    kubelet: Option<(watch::Sender<bool>, tokio::task::JoinHandle<Result<()>>)>,
    addons: Vec<ManagedProcess>,
    internet: Option<Internet>,
    trafficmap: Vec<ManagedProcess>,
    deployed: bool,
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
    preflight(&scenario)?;
    let _node = sim::NodeLock::acquire()?;
    let run_dir = repo_root()
        .join("target/e2e-logs")
        .join(format!("scenario-{}", scenario.name));
    let _ = std::fs::remove_dir_all(&run_dir);
    std::fs::create_dir_all(&run_dir).map_err(|e| Error::Http {
        what: format!("create {}", run_dir.display()),
        source: Box::new(e),
    })?;
    eprintln!("scenario {}: logs in {}", scenario.name, run_dir.display());
    for line in sim::cleanup::cleanup() {
        eprintln!("scenario: left by an earlier run: {line}");
    }
    let mut env = Environment::default();
    let result = {
        let body = run_in(&scenario, &run_dir, &mut env, options);
        tokio::select! {
            r = body => r,
            _ = tokio::signal::ctrl_c() => Err(Error::Exited("interrupted".into())),
        }
    };
    env.teardown(&scenario).await;
    result
}

fn preflight(scenario: &Scenario) -> Result<()> {
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
    bin_path("trafficmap-operator")?;
    bin_path("trafficmap-sniffer")?;
    addons::go_binary("controlplane")?;
    addons::go_binary("coredns")?;
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
    crate::crds::install_all(&client).await?;
    apply_dir(&client, &repo_root().join("config/rbac")).await?;
    let namespaces = scenario.namespaces();
    deploy::delete_namespaces(&client, scenario, NAMESPACE_DELETE_TIMEOUT, true).await?;
    forget_observed_traffic(&client, &namespaces).await?;

    // The node: kubelet (bridge, node registration, pods), then its add-ons.
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
    addons::ensure_kube_dns_service(&client).await?;
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
    env.addons
        .push(addons::start_coredns(run_dir, upstream.as_deref()).await?);
    env.addons
        .push(addons::start_kube_proxy(run_dir, NODE_NAME).await?);
    eprintln!("scenario: node {NODE_NAME} with CoreDNS and kube-proxy ready");

    // trafficmap, with the chart's credentials.
    let (operator, ingest_url) = start_operator(&client, run_dir).await?;
    env.trafficmap.push(operator);
    if !options.sniffer_late {
        env.trafficmap
            .push(start_sniffer(&client, run_dir, &ingest_url).await?);
        eprintln!("scenario: operator and sniffer running");
    }

    env.deployed = true;
    deploy::deploy(&client, scenario).await?;
    deploy::wait_running(&client, scenario, PODS_RUNNING_TIMEOUT).await?;
    if options.sniffer_late {
        tokio::time::sleep(LATE_SNIFFER_DELAY).await;
        env.trafficmap
            .push(start_sniffer(&client, run_dir, &ingest_url).await?);
        eprintln!("scenario: operator running; sniffer started after the pods");
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
        tokio::task::block_in_place(sim::cleanup::cleanup);
    }
}

/// Deletes ObservedTraffic of clients in `namespaces` (left by an earlier run).
async fn forget_observed_traffic(client: &Client, namespaces: &BTreeSet<String>) -> Result<()> {
    let api = Api::<ObservedTraffic>::all(client.clone());
    let list = api
        .list(&ListParams::default())
        .await
        .map_err(kube_context("list ObservedTraffic"))?;
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

/// A token of `account` in the trafficmap namespace (`audience` None: the API server's).
async fn account_token(client: &Client, account: &str, audience: Option<&str>) -> Result<String> {
    request_token(client, TRAFFICMAP_NAMESPACE, account, audience).await
}

/// A kubeconfig for the API server of the admin kubeconfig, authenticating with `token`.
fn token_kubeconfig(token: &str) -> Result<String> {
    let admin = kubeconfig_path();
    let config = Kubeconfig::read_from(&admin).map_err(|e| Error::Kubeconfig {
        path: admin.display().to_string(),
        source: Box::new(e),
    })?;
    let cluster = config
        .clusters
        .first()
        .and_then(|c| c.cluster.clone())
        .ok_or_else(|| Error::Exited(format!("{} names no cluster", admin.display())))?;
    let mut cluster_json = serde_json::json!({"server": cluster.server});
    if let Some(data) = cluster.certificate_authority_data {
        cluster_json["certificate-authority-data"] = data.into();
    }
    if let Some(file) = cluster.certificate_authority {
        cluster_json["certificate-authority"] = file.into();
    }
    let kubeconfig = serde_json::json!({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "local", "cluster": cluster_json}],
        "users": [{"name": OPERATOR_ACCOUNT, "user": {"token": token}}],
        "contexts": [{"name": OPERATOR_ACCOUNT, "context": {"cluster": "local", "user": OPERATOR_ACCOUNT, "namespace": TRAFFICMAP_NAMESPACE}}],
        "current-context": OPERATOR_ACCOUNT
    });
    serde_yaml_ng::to_string(&kubeconfig).map_err(|e| Error::Manifest {
        path: "operator kubeconfig".into(),
        source: Box::new(e),
    })
}

fn write_secret_file(path: &Path, content: &str) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let _ = std::fs::remove_file(path);
    std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| f.write_all(content.as_bytes()))
        .map_err(|e| Error::Http {
            what: format!("write {}", path.display()),
            source: Box::new(e),
        })
}

/// Starts the operator as its ServiceAccount and waits until it is ready; returns it and its
/// ingest base URL.
async fn start_operator(client: &Client, run_dir: &Path) -> Result<(ManagedProcess, String)> {
    let token = account_token(client, OPERATOR_ACCOUNT, None).await?;
    let kubeconfig = run_dir.join("operator.kubeconfig");
    write_secret_file(&kubeconfig, &token_kubeconfig(&token)?)?;
    let (ingest, admin) = (free_port()?, free_port()?);
    let mut command = Command::new(bin_path("trafficmap-operator")?);
    command
        .env("KUBECONFIG", &kubeconfig)
        .env(
            "RUST_LOG",
            std::env::var("TRAFFICMAP_OPERATOR_LOG")
                .unwrap_or_else(|_| "info,trafficmap_operator=debug".into()),
        )
        .args([
            "--ingest-addr",
            &format!("127.0.0.1:{ingest}"),
            "--admin-addr",
            &format!("127.0.0.1:{admin}"),
            "--namespace",
            TRAFFICMAP_NAMESPACE,
            "--pod-name",
            "trafficmap-operator-scenario",
            "--sniffer-service-account",
            &format!("{TRAFFICMAP_NAMESPACE}/{SNIFFER_ACCOUNT}"),
            "--tls-san",
            "127.0.0.1",
            "--pod-cidr",
            sim::CLUSTER_POD_CIDR,
            "--service-cidr",
            sim::SERVICE_CIDR,
            "--cluster-dns-service",
            "kube-system/kube-dns",
            "--cluster-domain",
            sim::CLUSTER_DOMAIN,
            "--flush-interval",
            "1s",
            // The runner compares the drafts too; users opt in (chart value emitClientIntents).
            "--emit-client-intents=true",
        ]);
    let mut process = ManagedProcess::spawn(
        "trafficmap-operator",
        command,
        &run_dir.join("operator.log"),
    )?;
    let ready = format!("http://127.0.0.1:{admin}/readyz");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        process.check_alive()?;
        if matches!(crate::http::get(&ready).await, Ok((200, _))) {
            break;
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(Error::Exited(format!(
                "operator not ready\n{}",
                process.log_tail(30)
            )));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Ok((process, format!("https://127.0.0.1:{ingest}")))
}

/// Starts the sniffer for the node with a `trafficmap`-audience token and the published CA.
async fn start_sniffer(
    client: &Client,
    run_dir: &Path,
    operator_url: &str,
) -> Result<ManagedProcess> {
    let ca = wait_for(
        "the operator's CA ConfigMap",
        Duration::from_secs(30),
        || async { Ok(published_ca(client, TRAFFICMAP_NAMESPACE).await.ok()) },
    )
    .await?;
    let token = account_token(client, SNIFFER_ACCOUNT, Some(REPORT_AUDIENCE)).await?;
    let (ca_file, token_file) = (
        run_dir.join("sniffer-ca.crt"),
        run_dir.join("sniffer-token"),
    );
    write_secret_file(&ca_file, &ca)?;
    write_secret_file(&token_file, &token)?;
    let metrics = free_port()?;
    let mut command = Command::new(bin_path("trafficmap-sniffer")?);
    command
        .env(
            "RUST_LOG",
            std::env::var("TRAFFICMAP_SNIFFER_LOG").unwrap_or_else(|_| "info".into()),
        )
        .arg("--operator-url")
        .arg(operator_url)
        .arg("--ca-file")
        .arg(&ca_file)
        .arg("--token-file")
        .arg(&token_file)
        .args([
            "--node-name",
            NODE_NAME,
            "--metrics-addr",
            &format!("127.0.0.1:{metrics}"),
        ]);
    let mut process =
        ManagedProcess::spawn("trafficmap-sniffer", command, &run_dir.join("sniffer.log"))?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    process.check_alive()?;
    Ok(process)
}
