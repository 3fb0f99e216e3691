//! The real node (`e2e/node/node.sh`: a kubelet with containerd, runc, CNI, kube-proxy and
//! CoreDNS): bringing it up, the images it runs (`make images`), and trafficmap installed with
//! helm from `chart/`, as users install it.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::Node;
use kube::{Api, Client};

use crate::chart::{CHART_DIR, helm};
use crate::cluster::{repo_root, wait_for};
use crate::{Error, Result, kube_context};

/// The real node's name (node.sh `NODE_NAME`).
pub const NODE_NAME: &str = "tm-real";
/// The link carrying the real node's address; it exists while the node is up (node.sh `NODE_LINK`).
pub const NODE_LINK: &str = "tm-node0";
/// Release name and namespace of the chart on the real node.
pub const RELEASE: &str = "trafficmap";
/// Where `make images` writes the image archives.
pub const IMAGES_DIR: &str = "target/images";
/// The scenario image: `trafficmap-play`, which plays a pod's calls as client and server.
pub const PLAY_IMAGE: &str = "trafficmap-play";
/// How long `helm install --wait` may take.
const INSTALL_TIMEOUT: &str = "180s";
/// How long trafficmap's pods may take to become ready after an install.
const READY_TIMEOUT: Duration = Duration::from_secs(180);

fn node_script() -> PathBuf {
    repo_root().join("e2e/node/node.sh")
}

/// `node.sh ARGS`, its output passed through; fails with the command when it fails.
pub fn node_sh(args: &[&str]) -> Result<()> {
    let status = Command::new("bash")
        .arg(node_script())
        .args(args)
        .status()
        .map_err(|e| Error::Http {
            what: format!("bash e2e/node/node.sh {}", args.join(" ")),
            source: Box::new(e),
        })?;
    if status.success() {
        Ok(())
    } else {
        Err(Error::Exited(format!(
            "e2e/node/node.sh {} failed ({status})",
            args.join(" ")
        )))
    }
}

/// The reference the archive `target/images/<name>.tar` carries (and containerd imported it as):
/// a docker-archive's `RepoTags`, or an OCI index's `io.containerd.image.name` annotation.
pub fn image_ref(name: &str) -> Result<String> {
    let path = repo_root().join(IMAGES_DIR).join(format!("{name}.tar"));
    let read = |member: &str| -> Option<serde_json::Value> {
        let out = Command::new("tar")
            .arg("-xOf")
            .arg(&path)
            .arg(member)
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| serde_json::from_slice(&out.stdout).ok())
            .flatten()
    };
    let from_manifest = read("manifest.json").and_then(|m| {
        m.get(0)?
            .get("RepoTags")?
            .get(0)?
            .as_str()
            .map(str::to_string)
    });
    let from_index = || {
        read("index.json").and_then(|i| {
            i.get("manifests")?
                .get(0)?
                .get("annotations")?
                .get("io.containerd.image.name")?
                .as_str()
                .map(str::to_string)
        })
    };
    from_manifest.or_else(from_index).ok_or_else(|| {
        Error::Exited(format!(
            "{} names no image (missing? run `make images`)",
            path.display()
        ))
    })
}

/// Waits until the real node is Ready.
pub async fn wait_node_ready(client: &Client) -> Result<()> {
    wait_for("real node Ready", Duration::from_secs(60), || async {
        let node = Api::<Node>::all(client.clone())
            .get_opt(NODE_NAME)
            .await
            .map_err(kube_context("get node"))?;
        let ready = node
            .and_then(|n| n.status?.conditions)
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
        Ok(ready.then_some(()))
    })
    .await
}

/// `helm upgrade --install` of `chart/` into namespace [`RELEASE`], with default values but
/// `sets`, then waits until the operator and the sniffer are ready.
pub async fn install_trafficmap(client: &Client, sets: &[&str]) -> Result<()> {
    let mut args = vec![
        "upgrade",
        "--install",
        RELEASE,
        CHART_DIR,
        "--namespace",
        RELEASE,
        "--create-namespace",
        "--wait",
        "--timeout",
        INSTALL_TIMEOUT,
    ];
    for set in sets {
        args.extend(["--set", set]);
    }
    helm(&args)?.ok("helm install trafficmap")?;
    wait_for("trafficmap ready", READY_TIMEOUT, || async {
        let deployments = Api::<Deployment>::namespaced(client.clone(), RELEASE)
            .list(&Default::default())
            .await
            .map_err(kube_context("list deployments"))?;
        let daemonsets = Api::<DaemonSet>::namespaced(client.clone(), RELEASE)
            .list(&Default::default())
            .await
            .map_err(kube_context("list daemonsets"))?;
        let operator_ready = !deployments.items.is_empty()
            && deployments.items.iter().all(|d| {
                let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
                d.status
                    .as_ref()
                    .and_then(|s| s.ready_replicas)
                    .unwrap_or(0)
                    >= want
            });
        let sniffer_ready = !daemonsets.items.is_empty()
            && daemonsets.items.iter().all(|d| {
                d.status.as_ref().is_some_and(|s| {
                    s.desired_number_scheduled > 0 && s.number_ready >= s.desired_number_scheduled
                })
            });
        Ok((operator_ready && sniffer_ready).then_some(()))
    })
    .await
}

/// `helm uninstall` (ignoring a release that is not there), then waits until trafficmap's pods
/// are gone: helm waits for the objects, not for their pods, and a sniffer pod still running
/// would hold the node's port (hostNetwork) that the next install's sniffer needs.
pub async fn uninstall_trafficmap(client: &Client) -> Result<()> {
    let out = tokio::task::block_in_place(|| {
        helm(&[
            "uninstall",
            RELEASE,
            "--namespace",
            RELEASE,
            "--ignore-not-found",
            "--wait",
        ])
    })?;
    out.ok("helm uninstall trafficmap")?;
    let pods = Api::<k8s_openapi::api::core::v1::Pod>::namespaced(client.clone(), RELEASE);
    wait_for("trafficmap's pods gone", READY_TIMEOUT, || async {
        let left = pods
            .list(&Default::default())
            .await
            .map_err(kube_context("list trafficmap pods"))?;
        Ok(left.items.is_empty().then_some(()))
    })
    .await
}

/// A fault injected into the real node while a scenario's traffic runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Delete the sniffer's pod (its DaemonSet replaces it).
    DeleteSnifferPod,
    /// Delete the operator's pod (its Deployment replaces it).
    DeleteOperatorPod,
    /// SIGKILL the kubelet and start it again.
    RestartKubelet,
    /// SIGKILL containerd and start it again (containers keep running under their shims).
    RestartContainerd,
}

/// Injects `fault`.
pub async fn inject(client: &Client, fault: Fault) -> Result<()> {
    let delete_pods = |component: &'static str| async move {
        let pods = Api::<k8s_openapi::api::core::v1::Pod>::namespaced(client.clone(), RELEASE);
        pods.delete_collection(
            &Default::default(),
            &kube::api::ListParams::default()
                .labels(&format!("app.kubernetes.io/component={component}")),
        )
        .await
        .map_err(kube_context(format!("delete the {component} pod")))
        .map(|_| ())
    };
    match fault {
        Fault::DeleteSnifferPod => delete_pods("sniffer").await,
        Fault::DeleteOperatorPod => delete_pods("operator").await,
        Fault::RestartKubelet => tokio::task::block_in_place(|| node_sh(&["restart", "kubelet"])),
        Fault::RestartContainerd => {
            tokio::task::block_in_place(|| node_sh(&["restart", "containerd"]))
        }
    }
}
