//! Cluster objects for tests, created through the real API server: a Node, Deployments whose
//! ReplicaSets and pods the controller-manager creates, pods "started" the way a kubelet would
//! (bound to the node, IP and Ready condition written through the status subresource), and
//! Services whose EndpointSlices the controller-manager maintains.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Binding, Node, ObjectReference, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::json;

use crate::cluster::wait_for;
use crate::{Result, kube_context};

/// Name of the node tests bind pods to.
/// Scheduler named by the pods that tests and the node simulator place themselves (by a Binding).
/// No such scheduler runs, so kube-scheduler leaves those pods to them, as with any second
/// scheduler.
pub const SELF_SCHEDULED: &str = "trafficmap-e2e";
pub const TEST_NODE: &str = "tm-test-node";

/// Removes what earlier, interrupted runs left in namespaces named `<prefix>*` other than
/// `keep`: their pods (force-deleted, as no kubelet confirms deletion, so their IPs are free
/// again) and the namespaces themselves.
pub async fn reap_stale_namespaces(client: &Client, prefix: &str) -> Result<()> {
    use k8s_openapi::api::core::v1::Namespace;
    let namespaces = Api::<Namespace>::all(client.clone())
        .list(&ListParams::default())
        .await
        .map_err(kube_context("list namespaces"))?;
    for ns in namespaces.items {
        let Some(name) = ns.metadata.name.clone() else {
            continue;
        };
        if !name.starts_with(prefix) {
            continue;
        }
        let pods = Api::<Pod>::namespaced(client.clone(), &name)
            .list(&ListParams::default())
            .await
            .map_err(kube_context("list pods"))?;
        for pod in &pods.items {
            delete_pod_now(client, pod).await.ok();
        }
        if ns.metadata.deletion_timestamp.is_none() {
            Api::<Namespace>::all(client.clone())
                .delete(&name, &DeleteParams::default())
                .await
                .ok();
        }
    }
    Ok(())
}

/// Creates (or keeps) the test Node.
pub async fn ensure_node(client: &Client) -> Result<()> {
    let node: Node = serde_json::from_value(json!({
        "metadata": {"name": TEST_NODE, "labels": {"kubernetes.io/hostname": TEST_NODE}},
        "spec": {},
    }))
    .map_err(|e| crate::Error::Manifest {
        path: "node".into(),
        source: Box::new(e),
    })?;
    Api::<Node>::all(client.clone())
        .patch(
            TEST_NODE,
            &PatchParams::apply("trafficmap-e2e").force(),
            &Patch::Apply(&node),
        )
        .await
        .map_err(kube_context("apply test node"))?;
    Ok(())
}

/// Creates a Deployment of `replicas` pods labelled `app=<name>` with `annotations` on the pod
/// template, and returns its pods once the controller-manager created them.
pub async fn deployment(
    client: &Client,
    namespace: &str,
    name: &str,
    replicas: i32,
    annotations: BTreeMap<String, String>,
) -> Result<Vec<Pod>> {
    let labels = BTreeMap::from([("app".to_string(), name.to_string())]);
    let deployment: Deployment = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels, "annotations": annotations},
                "spec": {"schedulerName": SELF_SCHEDULED,
                         "containers": [{"name": "main", "image": "example.invalid/app:1"}]}
            }
        }
    }))
    .map_err(|e| crate::Error::Manifest {
        path: name.into(),
        source: Box::new(e),
    })?;
    Api::<Deployment>::namespaced(client.clone(), namespace)
        .create(&PostParams::default(), &deployment)
        .await
        .map_err(kube_context(format!("create deployment {name}")))?;
    pods_of(client, namespace, name, replicas as usize).await
}

/// Waits for `count` pods labelled `app=<app>`.
pub async fn pods_of(
    client: &Client,
    namespace: &str,
    app: &str,
    count: usize,
) -> Result<Vec<Pod>> {
    let pods = Api::<Pod>::namespaced(client.clone(), namespace);
    let selector = format!("app={app}");
    wait_for(
        &format!("{count} pods of {app}"),
        Duration::from_secs(30),
        || async {
            let list = pods
                .list(&ListParams::default().labels(&selector))
                .await
                .map_err(kube_context("list pods"))?;
            let live: Vec<Pod> = list
                .items
                .into_iter()
                .filter(|p| p.metadata.deletion_timestamp.is_none())
                .collect();
            Ok((live.len() >= count).then_some(live))
        },
    )
    .await
}

/// Does what a kubelet does when it starts a pod: binds it to the test node and writes its IP,
/// `Running` phase and Ready condition.
pub async fn start_pod(client: &Client, pod: &Pod, ip: IpAddr) -> Result<()> {
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    let name = pod.metadata.name.clone().unwrap_or_default();
    let pods = Api::<Pod>::namespaced(client.clone(), &namespace);
    let bound = pod
        .spec
        .as_ref()
        .and_then(|s| s.node_name.as_ref())
        .is_some();
    if !bound {
        let binding = Binding {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                ..ObjectMeta::default()
            },
            target: ObjectReference {
                kind: Some("Node".into()),
                name: Some(TEST_NODE.into()),
                ..ObjectReference::default()
            },
        };
        pods.create_subresource::<Binding, serde_json::Value>(
            "binding",
            &name,
            &PostParams::default(),
            &binding,
        )
        .await
        .map_err(kube_context(format!("bind pod {name}")))?;
    }
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    let status = json!({
        "status": {
            "phase": "Running",
            "podIP": ip.to_string(),
            "podIPs": [{"ip": ip.to_string()}],
            "hostIP": "10.255.0.1",
            "startTime": now,
            "conditions": [
                {"type": "PodReadyToStartContainers", "status": "True", "lastTransitionTime": now},
                {"type": "Initialized", "status": "True", "lastTransitionTime": now},
                {"type": "Ready", "status": "True", "lastTransitionTime": now},
                {"type": "ContainersReady", "status": "True", "lastTransitionTime": now},
                {"type": "PodScheduled", "status": "True", "lastTransitionTime": now}
            ]
        }
    });
    pods.patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .map_err(kube_context(format!("write status of pod {name}")))?;
    Ok(())
}

/// Deletes a pod at once (no kubelet will confirm a graceful deletion).
pub async fn delete_pod_now(client: &Client, pod: &Pod) -> Result<()> {
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    let name = pod.metadata.name.clone().unwrap_or_default();
    Api::<Pod>::namespaced(client.clone(), &namespace)
        .delete(
            &name,
            &DeleteParams {
                grace_period_seconds: Some(0),
                ..DeleteParams::default()
            },
        )
        .await
        .map_err(kube_context(format!("delete pod {name}")))?;
    Ok(())
}

/// Creates a ClusterIP Service `name` selecting `app=<app>`, `port` -> `target_port`; returns
/// its ClusterIP.
pub async fn service(
    client: &Client,
    namespace: &str,
    name: &str,
    app: &str,
    port: u16,
    target_port: u16,
) -> Result<IpAddr> {
    let service: Service = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "selector": {"app": app},
            "ports": [{"name": "main", "port": port, "targetPort": target_port, "protocol": "TCP"}]
        }
    }))
    .map_err(|e| crate::Error::Manifest {
        path: name.into(),
        source: Box::new(e),
    })?;
    let created = Api::<Service>::namespaced(client.clone(), namespace)
        .create(&PostParams::default(), &service)
        .await
        .map_err(kube_context(format!("create service {name}")))?;
    created
        .spec
        .and_then(|s| s.cluster_ip)
        .and_then(|ip| ip.parse().ok())
        .ok_or_else(|| crate::Error::Timeout {
            what: format!("a ClusterIP for {name}"),
            seconds: 0,
        })
}

/// Waits until an EndpointSlice of Service `name` lists `ip` as ready.
pub async fn wait_for_endpoint(
    client: &Client,
    namespace: &str,
    name: &str,
    ip: IpAddr,
) -> Result<()> {
    let slices = Api::<EndpointSlice>::namespaced(client.clone(), namespace);
    let selector = format!("kubernetes.io/service-name={name}");
    let ip = ip.to_string();
    wait_for(
        &format!("endpoint {ip} of service {name}"),
        Duration::from_secs(30),
        || async {
            let list = slices
                .list(&ListParams::default().labels(&selector))
                .await
                .map_err(kube_context("list endpointslices"))?;
            let found = list
                .items
                .iter()
                .flat_map(|s| s.endpoints.iter().flatten())
                .any(|e| {
                    e.addresses.contains(&ip)
                        && e.conditions.as_ref().and_then(|c| c.ready) == Some(true)
                });
            Ok(found.then_some(()))
        },
    )
    .await
}
