//! The cluster add-ons of the simulated node, as real processes: CoreDNS (built from its Go
//! module in `e2e/coredns`) behind the `kube-system/kube-dns` Service, and kube-proxy (the
//! `kube-proxy` subcommand of `e2e/controlplane`, nftables mode) programming ClusterIPs.
//!
//! CoreDNS listens on the node IP; `kube-dns` is a Service without selector whose
//! EndpointSlice names that address, so kube-proxy routes the ClusterIP to it as to any
//! endpoint.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use serde_json::json;

use super::{CLUSTER_DNS_IP, CLUSTER_DOMAIN, CLUSTER_POD_CIDR, NODE_IP};
use crate::cluster::{kubeconfig_path, repo_root};
use crate::{Error, Result, kube_context};

/// Field manager of the add-ons' objects.
const ADDONS_MANAGER: &str = "trafficmap-node";

/// A child process that is killed (and waited for) when dropped; its pid is recorded under
/// [`super::state_dir`]`/procs` so `trafficmap-node cleanup` can stop it after a crash.
pub struct ManagedProcess {
    /// What it is.
    pub name: String,
    child: Child,
    pid_file: PathBuf,
    /// Its log.
    pub log: PathBuf,
}

impl ManagedProcess {
    /// Starts `command` with output to `log`.
    pub fn spawn(name: &str, mut command: Command, log: &Path) -> Result<Self> {
        if let Some(dir) = log.parent() {
            std::fs::create_dir_all(dir).map_err(io(&format!("create {}", dir.display())))?;
        }
        let (out, err) = crate::log_files(log)?;
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .spawn()
            .map_err(io(&format!("start {name}")))?;
        let procs = super::state_dir().join("procs");
        std::fs::create_dir_all(&procs).map_err(io("state dir"))?;
        let pid_file = procs.join(format!("{name}.pid"));
        std::fs::write(&pid_file, child.id().to_string()).map_err(io("pid file"))?;
        Ok(ManagedProcess {
            name: name.to_string(),
            child,
            pid_file,
            log: log.to_path_buf(),
        })
    }

    /// Fails with the log's tail if it exited.
    pub fn check_alive(&mut self) -> Result<()> {
        if let Ok(Some(status)) = self.child.try_wait() {
            return Err(Error::Exited(format!(
                "{} exited with {status}\n--- {} ---\n{}",
                self.name,
                self.log.display(),
                self.log_tail(30)
            )));
        }
        Ok(())
    }

    /// The last `lines` of its log.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Its pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM, then SIGKILL after `grace`.
    pub fn stop(&mut self, grace: Duration) {
        super::sys::signal(self.child.id(), libc::SIGTERM);
        let deadline = std::time::Instant::now() + grace;
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.pid_file);
    }
}

impl Drop for ManagedProcess {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(2));
    }
}

fn io(what: &str) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |e| Error::Http {
        what: what.to_string(),
        source: Box::new(e),
    }
}

/// `target/go/<name>`, built by `e2e/controlplane/controlplane.sh build` (controlplane) or
/// `cd e2e/coredns && go build -o ../../target/go/coredns .` (coredns).
pub fn go_binary(name: &str) -> Result<PathBuf> {
    let path = repo_root().join("target/go").join(name);
    if path.exists() {
        Ok(path)
    } else {
        Err(Error::MissingBinary(path.display().to_string()))
    }
}

/// Creates `kube-system/kube-dns` (ClusterIP [`CLUSTER_DNS_IP`], ports 53 UDP/TCP, no
/// selector) and its EndpointSlice pointing at CoreDNS on the node IP.
pub async fn ensure_kube_dns_service(client: &Client) -> Result<()> {
    let namespaces = Api::<Namespace>::all(client.clone());
    let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "kube-system"}});
    namespaces
        .patch(
            "kube-system",
            &PatchParams::apply(ADDONS_MANAGER),
            &Patch::Apply(&ns),
        )
        .await
        .map_err(kube_context("namespace kube-system"))?;
    let services = Api::<Service>::namespaced(client.clone(), "kube-system");
    let service = json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "kube-dns", "labels": {"k8s-app": "kube-dns", "kubernetes.io/name": "CoreDNS"}},
        "spec": {
            "clusterIP": CLUSTER_DNS_IP.to_string(),
            "ports": [
                {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53},
                {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 53}
            ]
        }
    });
    services
        .patch(
            "kube-dns",
            &PatchParams::apply(ADDONS_MANAGER).force(),
            &Patch::Apply(&service),
        )
        .await
        .map_err(kube_context("service kube-system/kube-dns"))?;
    let slices = Api::<EndpointSlice>::namespaced(client.clone(), "kube-system");
    let slice = json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "kube-dns-node", "labels": {
            "kubernetes.io/service-name": "kube-dns",
            "endpointslice.kubernetes.io/managed-by": "trafficmap-node"
        }},
        "addressType": "IPv4",
        "endpoints": [{"addresses": [NODE_IP.to_string()], "conditions": {"ready": true},
                       "nodeName": super::NODE_NAME}],
        "ports": [
            {"name": "dns", "port": 53, "protocol": "UDP"},
            {"name": "dns-tcp", "port": 53, "protocol": "TCP"}
        ]
    });
    slices
        .patch(
            "kube-dns-node",
            &PatchParams::apply(ADDONS_MANAGER).force(),
            &Patch::Apply(&slice),
        )
        .await
        .map_err(kube_context("endpointslice kube-system/kube-dns-node"))?;
    Ok(())
}

/// The Corefile: the kubernetes plugin for the cluster domain (pods insecure, as kubeadm
/// configures it), everything else forwarded to `upstream` (never to the host's resolvers).
pub fn corefile(kubeconfig: &Path, upstream: Option<&str>, health_port: u16) -> String {
    let forward = match upstream {
        Some(upstream) => format!("    forward . {upstream}\n"),
        None => String::new(),
    };
    format!(
        ".:53 {{\n\
         \x20   bind {NODE_IP}\n\
         \x20   errors\n\
         \x20   log\n\
         \x20   health 127.0.0.1:{health_port}\n\
         \x20   kubernetes {CLUSTER_DOMAIN} in-addr.arpa ip6.arpa {{\n\
         \x20       kubeconfig {}\n\
         \x20       pods insecure\n\
         \x20       fallthrough in-addr.arpa ip6.arpa\n\
         \x20       ttl 5\n\
         \x20   }}\n\
         {forward}\
         \x20   cache 5\n\
         \x20   loadbalance\n\
         }}\n",
        kubeconfig.display()
    )
}

/// Starts CoreDNS on the node IP with the admin kubeconfig and waits until it is healthy.
pub async fn start_coredns(run_dir: &Path, upstream: Option<&str>) -> Result<ManagedProcess> {
    let binary = go_binary("coredns")?;
    let health_port = crate::operator::free_port()?;
    let corefile_path = run_dir.join("Corefile");
    std::fs::create_dir_all(run_dir).map_err(io("run dir"))?;
    std::fs::write(
        &corefile_path,
        corefile(&kubeconfig_path(), upstream, health_port),
    )
    .map_err(io("write Corefile"))?;
    let mut command = Command::new(binary);
    command.arg("-conf").arg(&corefile_path);
    let mut process = ManagedProcess::spawn("coredns", command, &run_dir.join("coredns.log"))?;
    wait_http_ok(
        &mut process,
        &format!("http://127.0.0.1:{health_port}/health"),
    )
    .await?;
    Ok(process)
}

/// Starts kube-proxy (nftables mode) for the node and waits until it is healthy.
pub async fn start_kube_proxy(run_dir: &Path, node_name: &str) -> Result<ManagedProcess> {
    let binary = go_binary("controlplane")?;
    if !super::sys::have_program("nft") {
        return Err(Error::Exited(
            "kube-proxy's nftables mode needs the nft binary: apt-get install nftables".into(),
        ));
    }
    let (healthz, metrics) = (crate::operator::free_port()?, crate::operator::free_port()?);
    let mut command = Command::new(binary);
    command.arg("kube-proxy").args([
        "--kubeconfig",
        &kubeconfig_path().display().to_string(),
        "--hostname-override",
        node_name,
        "--proxy-mode",
        "nftables",
        "--cluster-cidr",
        CLUSTER_POD_CIDR,
        "--nodeport-addresses",
        &format!("{NODE_IP}/32"),
        "--healthz-bind-address",
        &format!("127.0.0.1:{healthz}"),
        "--metrics-bind-address",
        &format!("127.0.0.1:{metrics}"),
        "--conntrack-max-per-core",
        "0",
        "--conntrack-tcp-timeout-established",
        "0",
        "--conntrack-tcp-timeout-close-wait",
        "0",
        "--v",
        "1",
    ]);
    let mut process =
        ManagedProcess::spawn("kube-proxy", command, &run_dir.join("kube-proxy.log"))?;
    wait_http_ok(&mut process, &format!("http://127.0.0.1:{healthz}/healthz")).await?;
    Ok(process)
}

/// How long an add-on may take to become healthy.
const ADDON_READY_TIMEOUT: Duration = Duration::from_secs(60);

async fn wait_http_ok(process: &mut ManagedProcess, url: &str) -> Result<()> {
    let deadline = tokio::time::Instant::now() + ADDON_READY_TIMEOUT;
    loop {
        process.check_alive()?;
        if matches!(crate::http::get(url).await, Ok((200, _))) {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(Error::Exited(format!(
                "{} not healthy at {url} after {ADDON_READY_TIMEOUT:?}\n{}",
                process.name,
                process.log_tail(30)
            )));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
