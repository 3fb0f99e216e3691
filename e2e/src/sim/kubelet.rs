//! The simulated kubelet: registers the Node (and keeps its Lease and Ready condition fresh),
//! binds unscheduled pods to it, runs each pod as a network namespace with its traffic process
//! in a pod cgroup, writes pod status through the status subresource, restarts or completes
//! pods by their restartPolicy, and tears pods down and finalizes their deletion.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::net::Ipv4Addr;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Binding, Node, ObjectReference, Pod};
use kube::api::{DeleteParams, ObjectMeta, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Api, Client};
use serde_json::json;
use tokio::sync::{Notify, watch};

use super::calls;
use super::cgroup;
use super::ipam::PodIpPool;
use super::network::{self, PodDns};
use super::spec::TrafficSpec;
use super::{CLUSTER_DOMAIN, NODE_IP, TRAFFIC_ANNOTATION};
use crate::{Error, Result, kube_context};

/// Field manager of everything the simulated kubelet writes.
const KUBELET_MANAGER: &str = "trafficmap-node";
/// How often the node's Lease and Ready condition are renewed.
const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(10);
/// Longest pause between two syncs of all pods.
const SYNC_INTERVAL: Duration = Duration::from_millis(500);
/// Longest wait before restarting a crashing pod process.
const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// Image name written on pods' container statuses.
const IMAGE: &str = "trafficmap.io/traffic:local";

/// How the simulated kubelet runs.
#[derive(Clone, Debug)]
pub struct KubeletConfig {
    /// Node name.
    pub node_name: String,
    /// Namespaces whose unscheduled pods it binds (None: all). Pods already bound to the node
    /// are run whatever their namespace.
    pub namespaces: Option<BTreeSet<String>>,
    /// Pods' DNS settings.
    pub dns: PodDns,
    /// The `trafficmap-node` binary (runs pods' `traffic` processes).
    pub self_exe: PathBuf,
    /// Where pods' logs go (`<namespace>_<pod>_<uid8>.log`).
    pub log_dir: PathBuf,
}

impl KubeletConfig {
    /// Defaults for this machine: node [`super::NODE_NAME`], cluster DNS at
    /// [`super::CLUSTER_DNS_IP`], logs under [`super::state_dir`].
    pub fn local(namespaces: Option<BTreeSet<String>>) -> Result<Self> {
        let self_exe = super::node_binary()?;
        Ok(KubeletConfig {
            node_name: super::NODE_NAME.into(),
            namespaces,
            dns: PodDns {
                nameserver: super::CLUSTER_DNS_IP,
                cluster_domain: CLUSTER_DOMAIN.into(),
            },
            self_exe,
            log_dir: super::state_dir().join("pods"),
        })
    }
}

/// A pod this node runs.
struct LocalPod {
    namespace: String,
    name: String,
    ip: Ipv4Addr,
    host_network: bool,
    args: Vec<String>,
    child: Option<Child>,
    restarts: i32,
    restart_policy: String,
    log: PathBuf,
    started_at: String,
    /// When the process was last started (for the restart back-off).
    last_start: std::time::Instant,
}

/// The kubelet's state.
struct Kubelet {
    client: Client,
    config: KubeletConfig,
    pool: PodIpPool,
    pods: BTreeMap<String, LocalPod>,
    /// Pods that completed (Succeeded / Failed): not started again.
    finished: HashSet<String>,
}

/// Registers the node and runs pods until `shutdown` turns true; then stops every pod and
/// removes its network, cgroup and process.
pub async fn run(
    client: Client,
    config: KubeletConfig,
    mut shutdown: watch::Receiver<bool>,
) -> Result<()> {
    std::fs::create_dir_all(&config.log_dir).map_err(|e| Error::Http {
        what: format!("create {}", config.log_dir.display()),
        source: Box::new(e),
    })?;
    tokio::task::block_in_place(network::ensure_bridge)?;
    register_node(&client, &config.node_name).await?;
    let heartbeat = tokio::spawn(heartbeat(client.clone(), config.node_name.clone()));

    let (store, writer) = reflector::store::<Pod>();
    let changed = Arc::new(Notify::new());
    let notify = changed.clone();
    let pods_api: Api<Pod> = Api::all(client.clone());
    let watch_task = tokio::spawn(async move {
        let stream = watcher(pods_api, watcher::Config::default())
            .default_backoff()
            .reflect(writer);
        futures::pin_mut!(stream);
        while let Some(event) = stream.next().await {
            if let Err(e) = event {
                eprintln!("trafficmap-node: pod watch: {e}");
            }
            notify.notify_one();
        }
    });

    let mut kubelet = Kubelet {
        client,
        pool: PodIpPool::new(Ipv4Addr::new(10, 244, 0, 0), 2, 254),
        config,
        pods: BTreeMap::new(),
        finished: HashSet::new(),
    };
    let ready = tokio::select! {
        r = store.wait_until_ready() => r.is_ok(),
        _ = shutdown.changed() => false,
    };
    if ready {
        eprintln!(
            "trafficmap-node: node {} ready (pod CIDR {}, node IP {NODE_IP})",
            kubelet.config.node_name,
            super::POD_CIDR
        );
        loop {
            let snapshot = store.state();
            kubelet.sync(&snapshot).await;
            tokio::select! {
                _ = changed.notified() => {}
                _ = tokio::time::sleep(SYNC_INTERVAL) => {}
                _ = shutdown.changed() => break,
            }
            if *shutdown.borrow() {
                break;
            }
        }
    }
    watch_task.abort();
    heartbeat.abort();
    let uids: Vec<String> = kubelet.pods.keys().cloned().collect();
    for uid in uids {
        kubelet.stop(&uid);
    }
    Ok(())
}

impl Kubelet {
    fn manages_unbound(&self, pod: &Pod) -> bool {
        let namespace = pod.metadata.namespace.as_deref().unwrap_or_default();
        self.config
            .namespaces
            .as_ref()
            .is_none_or(|set| set.contains(namespace))
    }

    /// One pass over every pod: bind, start, restart, complete, stop, finalize.
    async fn sync(&mut self, snapshot: &[Arc<Pod>]) {
        let mut seen = HashSet::new();
        for pod in snapshot {
            let Some(uid) = pod.metadata.uid.clone() else {
                continue;
            };
            let node = pod.spec.as_ref().and_then(|s| s.node_name.as_deref());
            let ours = node == Some(self.config.node_name.as_str());
            let unbound_here = node.is_none() && self.manages_unbound(pod);
            if !ours && !unbound_here {
                continue;
            }
            seen.insert(uid.clone());
            if pod.metadata.deletion_timestamp.is_some() {
                if self.pods.contains_key(&uid) {
                    self.stop(&uid);
                }
                self.finalize_deletion(pod, &uid).await;
                continue;
            }
            if node.is_none() {
                if let Err(e) = self.bind(pod).await {
                    eprintln!("trafficmap-node: {e}");
                }
                continue;
            }
            if self.finished.contains(&uid) {
                continue;
            }
            let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
            if matches!(phase, Some("Succeeded" | "Failed")) && !self.pods.contains_key(&uid) {
                continue;
            }
            if self.pods.contains_key(&uid) {
                self.check_process(&uid).await;
            } else if let Err(e) = self.start(pod, &uid).await {
                eprintln!(
                    "trafficmap-node: start {}/{}: {e}",
                    pod.metadata.namespace.as_deref().unwrap_or_default(),
                    pod.metadata.name.as_deref().unwrap_or_default()
                );
                self.stop(&uid);
            }
        }
        let gone: Vec<String> = self
            .pods
            .keys()
            .filter(|uid| !seen.contains(*uid))
            .cloned()
            .collect();
        for uid in gone {
            self.stop(&uid);
        }
        self.finished.retain(|uid| seen.contains(uid));
    }

    async fn bind(&self, pod: &Pod) -> Result<()> {
        let namespace = pod.metadata.namespace.clone().unwrap_or_default();
        let name = pod.metadata.name.clone().unwrap_or_default();
        let binding = Binding {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                uid: None,
                ..ObjectMeta::default()
            },
            target: ObjectReference {
                kind: Some("Node".into()),
                name: Some(self.config.node_name.clone()),
                ..ObjectReference::default()
            },
        };
        let result = Api::<Pod>::namespaced(self.client.clone(), &namespace)
            .create_subresource::<Binding, serde_json::Value>(
                "binding",
                &name,
                &PostParams::default(),
                &binding,
            )
            .await;
        match result {
            Ok(_) => Ok(()),
            // Already bound (the watch lags): fine.
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
            Err(e) => Err(kube_context(format!("bind pod {namespace}/{name}"))(e)),
        }
    }

    async fn finalize_deletion(&self, pod: &Pod, uid: &str) {
        let namespace = pod.metadata.namespace.clone().unwrap_or_default();
        let name = pod.metadata.name.clone().unwrap_or_default();
        let params = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: Some(uid.to_string()),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match Api::<Pod>::namespaced(self.client.clone(), &namespace)
            .delete(&name, &params)
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
            Err(e) => eprintln!("trafficmap-node: delete pod {namespace}/{name}: {e}"),
        }
    }

    /// The `traffic` arguments of a pod, resolving `clusterip` and `podip` targets now.
    async fn traffic_args(&self, pod: &Pod) -> Result<Vec<String>> {
        let namespace = pod.metadata.namespace.clone().unwrap_or_default();
        let spec: TrafficSpec = match pod
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(TRAFFIC_ANNOTATION))
        {
            Some(text) => serde_json::from_str(text).map_err(|e| {
                Error::Exited(format!(
                    "annotation {TRAFFIC_ANNOTATION} of a pod in {namespace}: {e}"
                ))
            })?,
            None => TrafficSpec::default(),
        };
        calls::traffic_args(&self.client, &spec, &self.config.dns.cluster_domain).await
    }

    async fn start(&mut self, pod: &Pod, uid: &str) -> Result<()> {
        let namespace = pod.metadata.namespace.clone().unwrap_or_default();
        let name = pod.metadata.name.clone().unwrap_or_default();
        let spec = pod.spec.clone().unwrap_or_default();
        let mut args = self.traffic_args(pod).await?;
        if spec
            .restart_policy
            .as_deref()
            .is_some_and(|p| p != "Always")
        {
            args.push("--exit-when-done".into());
        }
        let host_network = spec.host_network.unwrap_or(false);
        let dns_policy = spec.dns_policy.as_deref().unwrap_or("ClusterFirst");
        let ip = if host_network {
            NODE_IP
        } else {
            self.pool
                .allocate(uid)
                .ok_or_else(|| Error::Exited("pod IP range exhausted".into()))?
        };
        let netns = tokio::task::block_in_place(|| {
            if host_network {
                network::attach_host_network(uid)
            } else {
                network::create_pod_network(uid, ip)
            }
        })?;
        let cluster_dns = dns_policy == "ClusterFirstWithHostNet"
            || (dns_policy == "ClusterFirst" && !host_network);
        let resolv = if cluster_dns {
            self.config.dns.resolv_conf(&namespace)
        } else {
            std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default()
        };
        network::write_resolv_conf(&netns, &resolv)?;
        cgroup::create_pod_cgroup(uid)?;
        let log = self
            .config
            .log_dir
            .join(format!("{namespace}_{name}_{}.log", super::short_uid(uid)));
        let mut local = LocalPod {
            namespace: namespace.clone(),
            name: name.clone(),
            ip,
            host_network,
            args,
            child: None,
            restarts: 0,
            restart_policy: spec
                .restart_policy
                .clone()
                .unwrap_or_else(|| "Always".into()),
            log,
            started_at: k8s_openapi::jiff::Timestamp::now().to_string(),
            last_start: std::time::Instant::now(),
        };
        local.child = Some(self.spawn(uid, &netns, &local)?);
        eprintln!(
            "trafficmap-node: started {namespace}/{name} ip {ip}{} netns {netns}",
            if host_network { " (hostNetwork)" } else { "" }
        );
        self.pods.insert(uid.to_string(), local);
        self.write_running_status(uid).await
    }

    fn spawn(&self, uid: &str, netns: &str, pod: &LocalPod) -> Result<Child> {
        let procs = cgroup::pod_dir(uid).join("cgroup.procs");
        let procs = std::ffi::CString::new(procs.as_os_str().as_encoded_bytes()).map_err(|e| {
            Error::Http {
                what: "cgroup path".into(),
                source: Box::new(e),
            }
        })?;
        let (out, err) = crate::log_files(&pod.log)?;
        // As a container runtime does: a pod has a UTS namespace of its own with its name as
        // hostname (cut to 63 bytes, as the kubelet does), and HOSTNAME says so; a hostNetwork
        // pod shares the node's.
        let hostname = match pod.host_network {
            true => None,
            false => Some(pod_hostname(&pod.name)),
        };
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", netns])
            .arg(&self.config.self_exe)
            .arg("traffic")
            .args(&pod.args)
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err));
        if let Some(hostname) = &hostname {
            command.env("HOSTNAME", hostname);
        }
        // SAFETY: only async-signal-safe calls (open, write, close, unshare, sethostname, setsid)
        // between fork and exec; `hostname` is owned by the closure and outlives every call.
        unsafe {
            command.pre_exec(move || {
                let fd = libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                if fd < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                let written = libc::write(fd, b"0".as_ptr().cast(), 1);
                libc::close(fd);
                if written != 1 {
                    return Err(std::io::Error::last_os_error());
                }
                if let Some(hostname) = &hostname
                    && (libc::unshare(libc::CLONE_NEWUTS) != 0
                        || libc::sethostname(hostname.as_ptr().cast(), hostname.len()) != 0)
                {
                    return Err(std::io::Error::last_os_error());
                }
                libc::setsid();
                Ok(())
            });
        }
        command.spawn().map_err(|e| Error::Http {
            what: format!("start the process of pod {}/{}", pod.namespace, pod.name),
            source: Box::new(e),
        })
    }

    /// Restarts or completes a pod whose process exited.
    async fn check_process(&mut self, uid: &str) {
        let Some(pod) = self.pods.get_mut(uid) else {
            return;
        };
        let Some(child) = pod.child.as_mut() else {
            return;
        };
        let Ok(Some(status)) = child.try_wait() else {
            return;
        };
        let code = status.code().unwrap_or(-1);
        let restart = match pod.restart_policy.as_str() {
            "Never" => false,
            "OnFailure" => code != 0,
            _ => true,
        };
        // CrashLoopBackOff: restart 2^restarts s (at most 5 min) after the last start.
        let backoff = Duration::from_secs(1u64 << pod.restarts.clamp(0, 8)).min(MAX_BACKOFF);
        if restart && pod.last_start.elapsed() < backoff {
            return;
        }
        if restart {
            eprintln!(
                "trafficmap-node: {}/{} exited with {code}; restarting",
                pod.namespace, pod.name
            );
            pod.restarts += 1;
            let netns = super::pod_netns(uid);
            let (namespace, name) = (pod.namespace.clone(), pod.name.clone());
            let spawned = {
                let pod = &self.pods[uid];
                self.spawn(uid, &netns, pod)
            };
            match spawned {
                Ok(child) => {
                    if let Some(pod) = self.pods.get_mut(uid) {
                        pod.child = Some(child);
                        pod.last_start = std::time::Instant::now();
                    }
                    if let Err(e) = self.write_running_status(uid).await {
                        eprintln!("trafficmap-node: {e}");
                    }
                }
                Err(e) => eprintln!("trafficmap-node: restart {namespace}/{name}: {e}"),
            }
            return;
        }
        let (namespace, name) = (pod.namespace.clone(), pod.name.clone());
        let phase = if code == 0 { "Succeeded" } else { "Failed" };
        eprintln!("trafficmap-node: {namespace}/{name} completed: {phase} (exit {code})");
        let started_at = pod.started_at.clone();
        self.stop(uid);
        self.finished.insert(uid.to_string());
        let now = k8s_openapi::jiff::Timestamp::now().to_string();
        let status = json!({"status": {
            "phase": phase,
            "conditions": [
                {"type": "Ready", "status": "False", "reason": "PodCompleted", "lastTransitionTime": now},
                {"type": "ContainersReady", "status": "False", "reason": "PodCompleted", "lastTransitionTime": now},
            ],
            "containerStatuses": [{
                "name": "main", "image": IMAGE, "imageID": "", "ready": false, "restartCount": 0,
                "started": false,
                "state": {"terminated": {"exitCode": code, "reason": if code == 0 {"Completed"} else {"Error"},
                    "startedAt": started_at, "finishedAt": now}}
            }]
        }});
        if let Err(e) = Api::<Pod>::namespaced(self.client.clone(), &namespace)
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
            .await
        {
            eprintln!("trafficmap-node: status of {namespace}/{name}: {e}");
        }
    }

    async fn write_running_status(&self, uid: &str) -> Result<()> {
        let pod = &self.pods[uid];
        let now = k8s_openapi::jiff::Timestamp::now().to_string();
        let ip = pod.ip.to_string();
        let status = json!({"status": {
            "phase": "Running",
            "podIP": ip,
            "podIPs": [{"ip": ip}],
            "hostIP": NODE_IP.to_string(),
            "hostIPs": [{"ip": NODE_IP.to_string()}],
            "startTime": pod.started_at,
            "conditions": [
                // As the kubelet: the sandbox (network) was ready before the process started.
                {"type": "PodReadyToStartContainers", "status": "True", "lastTransitionTime": pod.started_at},
                {"type": "Initialized", "status": "True", "lastTransitionTime": now},
                {"type": "Ready", "status": "True", "lastTransitionTime": now},
                {"type": "ContainersReady", "status": "True", "lastTransitionTime": now},
                {"type": "PodScheduled", "status": "True", "lastTransitionTime": now}
            ],
            "containerStatuses": [{
                "name": "main", "image": IMAGE, "imageID": "", "ready": true, "started": true,
                "restartCount": pod.restarts,
                "state": {"running": {"startedAt": now}}
            }]
        }});
        Api::<Pod>::namespaced(self.client.clone(), &pod.namespace)
            .patch_status(&pod.name, &PatchParams::default(), &Patch::Merge(&status))
            .await
            .map_err(kube_context(format!(
                "write status of pod {}/{}",
                pod.namespace, pod.name
            )))?;
        Ok(())
    }

    /// Kills the pod's processes and removes its cgroup and network; frees its IP.
    fn stop(&mut self, uid: &str) {
        let Some(mut pod) = self.pods.remove(uid) else {
            return;
        };
        if let Some(mut child) = pod.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        tokio::task::block_in_place(|| {
            cgroup::remove_pod_cgroup(uid);
            network::remove_pod_network(uid);
        });
        if !pod.host_network {
            self.pool.release(uid);
        }
        eprintln!(
            "trafficmap-node: stopped {}/{} (ip {} freed)",
            pod.namespace, pod.name, pod.ip
        );
    }
}

/// Creates or updates the Node with its pod CIDR, address, capacity and Ready condition.
pub async fn register_node(client: &Client, node_name: &str) -> Result<()> {
    let nodes = Api::<Node>::all(client.clone());
    let node: Node = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": node_name, "labels": {
            "kubernetes.io/hostname": node_name,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": std::env::consts::ARCH,
        }},
        "spec": {"podCIDR": super::POD_CIDR, "podCIDRs": [super::POD_CIDR]},
    }))
    .map_err(|e| Error::Manifest {
        path: "node".into(),
        source: Box::new(e),
    })?;
    nodes
        .patch(
            node_name,
            &PatchParams::apply(KUBELET_MANAGER).force(),
            &Patch::Apply(&node),
        )
        .await
        .map_err(kube_context(format!("register node {node_name}")))?;
    write_node_status(client, node_name).await?;
    clear_not_ready_taints(client, node_name).await
}

/// Removes the `node.kubernetes.io/not-ready` and `unreachable` taints (the API server adds the
/// first to new nodes): the node lifecycle controller would, once the node is Ready, but the
/// local control plane does not run it.
async fn clear_not_ready_taints(client: &Client, node_name: &str) -> Result<()> {
    let nodes = Api::<Node>::all(client.clone());
    let node = nodes
        .get(node_name)
        .await
        .map_err(kube_context(format!("get node {node_name}")))?;
    let taints = node.spec.and_then(|s| s.taints).unwrap_or_default();
    let kept: Vec<_> = taints
        .iter()
        .filter(|t| {
            t.key != "node.kubernetes.io/not-ready" && t.key != "node.kubernetes.io/unreachable"
        })
        .cloned()
        .collect();
    if kept.len() != taints.len() {
        nodes
            .patch(
                node_name,
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"taints": kept}})),
            )
            .await
            .map_err(kube_context(format!("untaint node {node_name}")))?;
    }
    Ok(())
}

async fn write_node_status(client: &Client, node_name: &str) -> Result<()> {
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    let status = json!({"status": {
        "addresses": [
            {"type": "InternalIP", "address": NODE_IP.to_string()},
            {"type": "Hostname", "address": node_name}
        ],
        "capacity": {"cpu": "8", "memory": "16Gi", "pods": "250"},
        "allocatable": {"cpu": "8", "memory": "16Gi", "pods": "250"},
        "conditions": [{
            "type": "Ready", "status": "True", "reason": "KubeletReady",
            "message": "trafficmap-node is posting ready status",
            "lastHeartbeatTime": now, "lastTransitionTime": now
        }],
        "nodeInfo": {
            "machineID": "", "systemUUID": "", "bootID": "", "kernelVersion": "",
            "osImage": "trafficmap node simulator", "containerRuntimeVersion": "netns://0",
            "kubeletVersion": "v1.36.3", "kubeProxyVersion": "", "operatingSystem": "linux",
            "architecture": std::env::consts::ARCH
        }
    }});
    Api::<Node>::all(client.clone())
        .patch_status(node_name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .map_err(kube_context(format!("status of node {node_name}")))?;
    Ok(())
}

/// Renews the node's Lease and Ready condition, as a kubelet does, until aborted.
pub async fn heartbeat(client: Client, node_name: String) {
    let leases = Api::<Lease>::namespaced(client.clone(), "kube-node-lease");
    loop {
        let now = micro_time();
        let lease = json!({
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": node_name},
            "spec": {"holderIdentity": node_name, "leaseDurationSeconds": 40, "renewTime": now}
        });
        if let Err(e) = leases
            .patch(
                &node_name,
                &PatchParams::apply(KUBELET_MANAGER).force(),
                &Patch::Apply(&lease),
            )
            .await
        {
            eprintln!("trafficmap-node: renew lease: {e}");
        }
        if let Err(e) = write_node_status(&client, &node_name).await {
            eprintln!("trafficmap-node: {e}");
        }
        tokio::time::sleep(HEARTBEAT_INTERVAL).await;
    }
}

/// Now as a `MicroTime` (`2006-01-02T15:04:05.000000Z`), the format Lease times need.
fn micro_time() -> String {
    let micros = k8s_openapi::jiff::Timestamp::now().as_microsecond();
    let (seconds, fraction) = (micros.div_euclid(1_000_000), micros.rem_euclid(1_000_000));
    let whole = k8s_openapi::jiff::Timestamp::from_second(seconds).unwrap_or_default();
    format!("{}.{fraction:06}Z", whole.strftime("%Y-%m-%dT%H:%M:%S"))
}

/// A pod's hostname: its name cut to 63 bytes without a trailing `-` or `.` (the kubelet's rule).
fn pod_hostname(name: &str) -> String {
    let cut = &name[..name.len().min(63)];
    cut.trim_end_matches(['-', '.']).to_string()
}

#[cfg(test)]
mod tests {
    #[test]
    fn lease_times_have_microseconds() {
        let t = super::micro_time();
        assert_eq!(t.len(), "2006-01-02T15:04:05.000000Z".len(), "{t}");
        assert!(t.ends_with('Z') && t.as_bytes()[19] == b'.');
    }

    #[test]
    fn hostnames_are_cut_like_the_kubelet_cuts_them() {
        assert_eq!(super::pod_hostname("web-7d9f-abcde"), "web-7d9f-abcde");
        let long = format!("{}-x", "a".repeat(62));
        assert_eq!(super::pod_hostname(&long), "a".repeat(62));
    }
}
