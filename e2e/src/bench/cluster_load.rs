//! The cluster the operator figures run against: 5k workloads (paused Deployments with no
//! replicas, so the controller-manager neither creates nor deletes pods for them), 10k pods
//! owned by them with IPs written through the status subresource as a kubelet would, and 2k
//! Services whose EndpointSlices the controller-manager maintains. Created concurrently through
//! the API; existing objects (an earlier run against the same control plane) are reused.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt, stream};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use serde_json::json;

use super::{BenchError, Result};
use crate::fixtures::{TEST_NODE, ensure_node};
use crate::kube_context;

/// Client workloads (Deployments).
pub const WORKLOADS: usize = 5_000;
/// Pods, [`PODS_PER_WORKLOAD`] per workload.
pub const PODS: usize = WORKLOADS * PODS_PER_WORKLOAD;
/// Pods of each workload.
pub const PODS_PER_WORKLOAD: usize = 2;
/// Services; Service `i` selects workload `i`.
pub const SERVICES: usize = 2_000;
/// Kubernetes namespaces the objects are spread over.
pub const NAMESPACES: usize = 20;
/// Requests in flight while creating.
const CONCURRENCY: usize = 48;
/// Port the Services expose, and the pods' port behind it.
pub const SERVICE_PORT: u16 = 80;
/// Port of the pods.
pub const POD_PORT: u16 = 8080;
/// How long to wait for the EndpointSlices of every Service.
const SLICES_TIMEOUT: Duration = Duration::from_secs(240);

/// One workload: its namespace, name, pods (IP, UID) and Service ClusterIP, if it has one.
#[derive(Debug, Clone)]
pub struct Workload {
    /// Kubernetes namespace.
    pub namespace: String,
    /// Deployment name.
    pub name: String,
    /// Pod IPs and UIDs.
    pub pods: Vec<(IpAddr, String)>,
    /// ClusterIP of the Service selecting it.
    pub cluster_ip: Option<IpAddr>,
}

/// The loaded cluster.
#[derive(Debug, Clone)]
pub struct LoadedCluster {
    /// Every workload, by index.
    pub workloads: Vec<Workload>,
    /// How long creating it took.
    pub took: Duration,
}

fn namespace_of(workload: usize) -> String {
    format!("tmb-load-{:02}", workload % NAMESPACES)
}

fn workload_name(workload: usize) -> String {
    format!("w-{workload:04}")
}

/// Pod IP of pod `index` (0..PODS): 10.244.0.1 onwards, 250 per /24.
pub fn pod_ip(index: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(
        10,
        244,
        (index / 250) as u8,
        (index % 250 + 1) as u8,
    ))
}

fn manifest<T: DeserializeOwned>(what: &str, value: serde_json::Value) -> Result<T> {
    serde_json::from_value(value).map_err(|e| {
        BenchError::Harness(crate::Error::Manifest {
            path: what.into(),
            source: Box::new(e),
        })
    })
}

/// Creates `object`, or reads the existing one of the same name.
async fn create_or_get<K>(api: &Api<K>, name: &str, object: &K) -> Result<K>
where
    K: Resource + Clone + DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    match api.create(&PostParams::default(), object).await {
        Ok(created) => Ok(created),
        Err(kube::Error::Api(status)) if status.code == 409 => api
            .get(name)
            .await
            .map_err(|e| kube_context(format!("read {name}"))(e).into()),
        Err(e) => Err(kube_context(format!("create {name}"))(e).into()),
    }
}

/// Creates (or reuses) the whole cluster.
pub async fn populate(client: &Client) -> Result<LoadedCluster> {
    let started = Instant::now();
    ensure_node(client).await?;
    for n in 0..NAMESPACES {
        let ns: Namespace = manifest("namespace", json!({"metadata": {"name": namespace_of(n)}}))?;
        create_or_get(&Api::all(client.clone()), &namespace_of(n), &ns).await?;
    }
    eprintln!("  creating {WORKLOADS} Deployments");
    let uids: Vec<String> = stream::iter(0..WORKLOADS)
        .map(|w| create_deployment(client, w))
        .buffered(CONCURRENCY)
        .try_collect()
        .await?;
    eprintln!("  creating {PODS} pods and writing their status");
    let pods: Vec<(IpAddr, String)> = stream::iter(0..PODS)
        .map(|p| create_pod(client, p, &uids[p / PODS_PER_WORKLOAD]))
        .buffered(CONCURRENCY)
        .try_collect()
        .await?;
    eprintln!("  creating {SERVICES} Services");
    let cluster_ips: Vec<IpAddr> = stream::iter(0..SERVICES)
        .map(|s| create_service(client, s))
        .buffered(CONCURRENCY)
        .try_collect()
        .await?;
    let workloads = (0..WORKLOADS)
        .map(|w| Workload {
            namespace: namespace_of(w),
            name: workload_name(w),
            pods: pods[w * PODS_PER_WORKLOAD..(w + 1) * PODS_PER_WORKLOAD].to_vec(),
            cluster_ip: cluster_ips.get(w).copied(),
        })
        .collect();
    wait_for_slices(client).await?;
    Ok(LoadedCluster {
        workloads,
        took: started.elapsed(),
    })
}

async fn create_deployment(client: &Client, w: usize) -> Result<String> {
    let name = workload_name(w);
    let deployment: Deployment = manifest(
        &name,
        json!({
            "metadata": {"name": name},
            "spec": {
                "replicas": 0,
                "paused": true,
                "selector": {"matchLabels": {"app": name}},
                "template": {
                    "metadata": {"labels": {"app": name}},
                    "spec": {"containers": [{"name": "main", "image": "example.invalid/app:1"}]}
                }
            }
        }),
    )?;
    let api = Api::<Deployment>::namespaced(client.clone(), &namespace_of(w));
    let created = create_or_get(&api, &name, &deployment).await?;
    created
        .metadata
        .uid
        .ok_or_else(|| BenchError::Failed(format!("Deployment {name} has no uid")))
}

async fn create_pod(client: &Client, p: usize, owner_uid: &str) -> Result<(IpAddr, String)> {
    let w = p / PODS_PER_WORKLOAD;
    let owner = workload_name(w);
    let name = format!("{owner}-{}", p % PODS_PER_WORKLOAD);
    let pod: Pod = manifest(
        &name,
        json!({
            "metadata": {
                "name": name,
                "labels": {"app": owner},
                "ownerReferences": [{
                    "apiVersion": "apps/v1", "kind": "Deployment", "name": owner,
                    "uid": owner_uid, "controller": true, "blockOwnerDeletion": true
                }]
            },
            "spec": {
                "nodeName": TEST_NODE,
                "containers": [{"name": "main", "image": "example.invalid/app:1",
                                "ports": [{"containerPort": POD_PORT}]}]
            }
        }),
    )?;
    let api = Api::<Pod>::namespaced(client.clone(), &namespace_of(w));
    let created = create_or_get(&api, &name, &pod).await?;
    let ip = pod_ip(p);
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    let status = json!({
        "status": {
            "phase": "Running",
            "podIP": ip.to_string(),
            "podIPs": [{"ip": ip.to_string()}],
            "hostIP": "10.255.0.1",
            "startTime": now,
            "conditions": [
                {"type": "Ready", "status": "True", "lastTransitionTime": now},
                {"type": "ContainersReady", "status": "True", "lastTransitionTime": now},
                {"type": "PodScheduled", "status": "True", "lastTransitionTime": now}
            ]
        }
    });
    api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .map_err(kube_context(format!("write status of pod {name}")))?;
    let uid = created
        .metadata
        .uid
        .ok_or_else(|| BenchError::Failed(format!("pod {name} has no uid")))?;
    Ok((ip, uid))
}

async fn create_service(client: &Client, s: usize) -> Result<IpAddr> {
    let name = format!("s-{s:04}");
    let service: Service = manifest(
        &name,
        json!({
            "metadata": {"name": name},
            "spec": {
                "selector": {"app": workload_name(s)},
                "ports": [{"name": "main", "port": SERVICE_PORT, "targetPort": POD_PORT, "protocol": "TCP"}]
            }
        }),
    )?;
    let api = Api::<Service>::namespaced(client.clone(), &namespace_of(s));
    let created = create_or_get(&api, &name, &service).await?;
    created
        .spec
        .and_then(|s| s.cluster_ip)
        .and_then(|ip| ip.parse().ok())
        .ok_or_else(|| BenchError::Failed(format!("Service {name} has no ClusterIP")))
}

/// Waits until the controller-manager wrote a ready endpoint for every Service.
async fn wait_for_slices(client: &Client) -> Result<()> {
    let deadline = Instant::now() + SLICES_TIMEOUT;
    loop {
        let mut ready = 0;
        for n in 0..NAMESPACES {
            let slices = Api::<EndpointSlice>::namespaced(client.clone(), &namespace_of(n))
                .list(&ListParams::default())
                .await
                .map_err(kube_context("list EndpointSlices"))?;
            ready += slices
                .items
                .iter()
                .filter(|s| s.endpoints.as_ref().is_some_and(|e| !e.is_empty()))
                .count();
        }
        if ready >= SERVICES {
            return Ok(());
        }
        if Instant::now() >= deadline {
            eprintln!("  only {ready}/{SERVICES} Services have endpoints; going on");
            return Ok(());
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}
