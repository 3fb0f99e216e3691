//! A pod's `traffic` arguments from its [`TrafficSpec`]: `clusterip` and `podip` targets are
//! resolved against the API server when the pod starts (the simulated kubelet) or when its
//! workload is created (the real node, where they become the container's arguments).

use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::ListParams;
use kube::{Api, Client};

use super::spec::{CallTarget, TrafficSpec, Via};
use super::traffic::{CallArg, ListenArg};
use crate::{Error, Result, kube_context};

/// `--listen` and `--call` arguments for `spec`, names under `cluster_domain`.
pub async fn traffic_args(
    client: &Client,
    spec: &TrafficSpec,
    cluster_domain: &str,
) -> Result<Vec<String>> {
    let mut args = Vec::new();
    for listen in &spec.listen {
        args.push("--listen".to_string());
        args.push(
            ListenArg {
                port: listen.port,
                protocol: listen.protocol,
            }
            .to_string(),
        );
    }
    for call in &spec.calls {
        let target = call.target().map_err(Error::Exited)?;
        let host = match (&target, call.via) {
            (CallTarget::External { dns_name }, Via::Dns) => dns_name.clone(),
            (CallTarget::External { dns_name }, _) => {
                return Err(Error::Exited(format!(
                    "call to external:{dns_name}: only via dns is possible"
                )));
            }
            (CallTarget::InCluster { name, namespace }, Via::Dns) => {
                format!("{name}.{namespace}.svc.{cluster_domain}")
            }
            (CallTarget::InCluster { name, namespace }, Via::Clusterip) => {
                cluster_ip(client, namespace, name).await?
            }
            (CallTarget::InCluster { name, namespace }, Via::Podip) => {
                pod_ip_of(client, namespace, name).await?
            }
        };
        args.push("--call".to_string());
        args.push(
            CallArg {
                host,
                port: call.port,
                protocol: call.protocol,
                pattern: call.pattern,
            }
            .to_string(),
        );
    }
    Ok(args)
}

async fn cluster_ip(client: &Client, namespace: &str, name: &str) -> Result<String> {
    let service = Api::<Service>::namespaced(client.clone(), namespace)
        .get(name)
        .await
        .map_err(kube_context(format!("service {name}.{namespace}")))?;
    match service.spec.and_then(|s| s.cluster_ip) {
        Some(ip) if ip != "None" && !ip.is_empty() => Ok(ip),
        _ => Err(Error::Exited(format!(
            "service {name}.{namespace} has no ClusterIP (headless?)"
        ))),
    }
}

/// An IP of a running pod labelled `app=<name>` (the scenario's workload label).
async fn pod_ip_of(client: &Client, namespace: &str, name: &str) -> Result<String> {
    let pods = Api::<Pod>::namespaced(client.clone(), namespace)
        .list(&ListParams::default().labels(&format!("app={name}")))
        .await
        .map_err(kube_context(format!("pods of {name}.{namespace}")))?;
    let mut ips: Vec<String> = pods
        .items
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter_map(|p| p.status.as_ref())
        .filter(|s| s.phase.as_deref() == Some("Running"))
        .filter_map(|s| s.pod_ip.clone())
        .collect();
    ips.sort();
    ips.into_iter().next().ok_or_else(|| {
        Error::Exited(format!(
            "no running pod of {name}.{namespace} yet (podip call)"
        ))
    })
}
