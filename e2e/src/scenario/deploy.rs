//! Creating a scenario's objects as a user would (namespaces, Services, Deployments, ...), and
//! its actions (restart, scale). Pods are labelled `app=<workload>` and carry their
//! [`crate::sim::spec::TrafficSpec`] in the [`crate::sim::TRAFFIC_ANNOTATION`] annotation,
//! which the simulated kubelet reads; on the real node the same calls are the arguments of a
//! container of the scenario image.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, Resource};
use serde_json::{Value, json};

use super::model::{Kind, Scenario, Workload};
use crate::cluster::wait_for;
use crate::sim::spec::Protocol;
use crate::sim::{CLUSTER_DOMAIN, TRAFFIC_ANNOTATION, calls};
use crate::{Error, Result, kube_context};

/// Label on namespaces a scenario created.
pub const SCENARIO_LABEL: &str = "trafficmap.io/scenario";
/// Image name on pod templates (nothing pulls it: the simulated kubelet runs
/// `trafficmap-node traffic`).
const IMAGE: &str = "trafficmap.io/traffic:local";
/// Schedule of scenario CronJobs: never during a run (the runner creates their Job at once).
const CRON_SCHEDULE: &str = "0 0 1 1 *";

fn manifest_error(what: &str) -> impl FnOnce(serde_json::Error) -> Error + '_ {
    move |e| Error::Manifest {
        path: what.to_string(),
        source: Box::new(e),
    }
}

/// Where a scenario's pods run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Runtime {
    /// The node simulator, which runs `trafficmap-node traffic` from the pod's annotation.
    Simulated,
    /// A real kubelet: one container of `image` (the scenario image, already on the node) with
    /// the calls as its arguments.
    Containers {
        /// Image reference.
        image: String,
    },
}

/// The pod template of a workload.
pub async fn pod_template(
    client: &Client,
    runtime: &Runtime,
    w: &Workload,
    restart_policy: &str,
) -> Result<Value> {
    let mut annotations = w.annotations.clone();
    let traffic = serde_json::to_string(&w.traffic()).map_err(manifest_error(&w.name))?;
    annotations.insert(TRAFFIC_ANNOTATION.into(), traffic);
    let ports: Vec<Value> = w
        .listen
        .iter()
        .map(|l| json!({"containerPort": l.port, "protocol": l.protocol.to_string()}))
        .collect();
    // The simulated kubelet binds its pods itself; kube-scheduler places the real node's.
    let scheduler = match runtime {
        Runtime::Simulated => crate::fixtures::SELF_SCHEDULED,
        Runtime::Containers { .. } => "default-scheduler",
    };
    let container = match runtime {
        Runtime::Simulated => json!({"name": "main", "image": IMAGE, "ports": ports}),
        Runtime::Containers { image } => {
            let mut args = calls::traffic_args(client, &w.traffic(), CLUSTER_DOMAIN).await?;
            if restart_policy != "Always" {
                args.push("--exit-when-done".into());
            }
            json!({"name": "main", "image": image, "imagePullPolicy": "Never", "args": args,
                   "ports": ports})
        }
    };
    Ok(json!({
        "metadata": {"labels": {"app": w.name}, "annotations": annotations},
        "spec": {
            "hostNetwork": w.host_network,
            "dnsPolicy": if w.host_network { "ClusterFirstWithHostNet" } else { "ClusterFirst" },
            "restartPolicy": restart_policy,
            "schedulerName": scheduler,
            "terminationGracePeriodSeconds": 1,
            "containers": [container]
        }
    }))
}

/// Namespaces (labelled [`SCENARIO_LABEL`]), Services, then workloads. With containers, a
/// workload that calls pod IPs is created once the pods it calls run (their IPs are its
/// arguments), as the simulated kubelet resolves them when the pod starts.
pub async fn deploy(client: &Client, scenario: &Scenario, runtime: &Runtime) -> Result<()> {
    let namespaces = Api::<Namespace>::all(client.clone());
    for ns in scenario.namespaces() {
        let object = json!({"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": ns, "labels": {SCENARIO_LABEL: scenario.name}}});
        namespaces
            .patch(
                &ns,
                &PatchParams::apply("trafficmap-scenario"),
                &Patch::Apply(&object),
            )
            .await
            .map_err(kube_context(format!("namespace {ns}")))?;
    }
    for w in scenario.workloads.iter().filter(|w| w.service) {
        create_service(client, w).await?;
    }
    for w in &scenario.workloads {
        if *runtime != Runtime::Simulated {
            for target in podip_targets(scenario, w) {
                wait_workload_running(client, target, POD_IP_WAIT).await?;
            }
        }
        create_workload(client, runtime, w).await?;
    }
    Ok(())
}

/// How long a workload waits for the pods whose IPs it calls.
const POD_IP_WAIT: Duration = Duration::from_secs(120);

/// The workloads whose pod IPs `w` calls.
fn podip_targets<'a>(scenario: &'a Scenario, w: &Workload) -> Vec<&'a Workload> {
    w.traffic()
        .calls
        .iter()
        .filter(|c| c.via == crate::sim::spec::Via::Podip)
        .filter_map(|c| scenario.workload(&c.to))
        .collect()
}

async fn create_service(client: &Client, w: &Workload) -> Result<()> {
    let ports: Vec<Value> = w
        .listen
        .iter()
        .map(|l| {
            let proto = match l.protocol {
                Protocol::TCP => "tcp",
                Protocol::UDP => "udp",
            };
            json!({"name": format!("{proto}-{}", l.port), "port": l.service_port.unwrap_or(l.port),
                   "targetPort": l.port, "protocol": l.protocol.to_string()})
        })
        .collect();
    let mut spec = json!({"selector": {"app": w.name}, "ports": ports});
    if w.headless {
        spec["clusterIP"] = json!("None");
    }
    let service: Service =
        serde_json::from_value(json!({"metadata": {"name": w.name}, "spec": spec}))
            .map_err(manifest_error(&w.name))?;
    Api::<Service>::namespaced(client.clone(), &w.namespace)
        .create(&PostParams::default(), &service)
        .await
        .map_err(kube_context(format!("service {}", w.id())))?;
    Ok(())
}

async fn create_workload(client: &Client, runtime: &Runtime, w: &Workload) -> Result<()> {
    let pp = PostParams::default();
    let ns = &w.namespace;
    let selector = json!({"matchLabels": {"app": w.name}});
    let what = format!("{:?} {}", w.kind, w.id());
    match w.kind {
        Kind::Deployment => {
            let object: Deployment = serde_json::from_value(json!({
                "metadata": {"name": w.name},
                "spec": {"replicas": w.replicas, "selector": selector,
                         "template": pod_template(client, runtime, w, "Always").await?}
            }))
            .map_err(manifest_error(&w.name))?;
            Api::<Deployment>::namespaced(client.clone(), ns)
                .create(&pp, &object)
                .await
                .map_err(kube_context(what))?;
        }
        Kind::StatefulSet => {
            let object: StatefulSet = serde_json::from_value(json!({
                "metadata": {"name": w.name},
                "spec": {"replicas": w.replicas, "selector": selector, "serviceName": w.name,
                         "podManagementPolicy": "Parallel",
                         "template": pod_template(client, runtime, w, "Always").await?}
            }))
            .map_err(manifest_error(&w.name))?;
            Api::<StatefulSet>::namespaced(client.clone(), ns)
                .create(&pp, &object)
                .await
                .map_err(kube_context(what))?;
        }
        Kind::DaemonSet => {
            let object: DaemonSet = serde_json::from_value(json!({
                "metadata": {"name": w.name},
                "spec": {"selector": selector, "template": pod_template(client, runtime, w, "Always").await?}
            }))
            .map_err(manifest_error(&w.name))?;
            Api::<DaemonSet>::namespaced(client.clone(), ns)
                .create(&pp, &object)
                .await
                .map_err(kube_context(what))?;
        }
        Kind::Job => {
            let object: Job = serde_json::from_value(json!({
                "metadata": {"name": w.name},
                "spec": job_spec(client, runtime, w).await?
            }))
            .map_err(manifest_error(&w.name))?;
            Api::<Job>::namespaced(client.clone(), ns)
                .create(&pp, &object)
                .await
                .map_err(kube_context(what))?;
        }
        Kind::CronJob => {
            let object: CronJob = serde_json::from_value(json!({
                "metadata": {"name": w.name},
                "spec": {"schedule": CRON_SCHEDULE, "concurrencyPolicy": "Allow",
                         "jobTemplate": {"metadata": {"labels": {"app": w.name}}, "spec": job_spec(client, runtime, w).await?}}
            }))
            .map_err(manifest_error(&w.name))?;
            let cron = Api::<CronJob>::namespaced(client.clone(), ns)
                .create(&pp, &object)
                .await
                .map_err(kube_context(what.clone()))?;
            // What the CronJob controller does when the schedule fires (or `kubectl create job
            // --from=cronjob/...`): a Job controlled by the CronJob.
            let owner = cron
                .controller_owner_ref(&())
                .ok_or_else(|| Error::Exited(format!("{what}: no uid")))?;
            let minutes = k8s_openapi::jiff::Timestamp::now().as_second() / 60;
            let job: Job = serde_json::from_value(json!({
                "metadata": {"name": format!("{}-{minutes}", w.name), "labels": {"app": w.name},
                             "ownerReferences": [owner],
                             "annotations": {"cronjob.kubernetes.io/instantiate": "manual"}},
                "spec": job_spec(client, runtime, w).await?
            }))
            .map_err(manifest_error(&w.name))?;
            Api::<Job>::namespaced(client.clone(), ns)
                .create(&pp, &job)
                .await
                .map_err(kube_context(format!("job of {what}")))?;
        }
        Kind::Pod => {
            let mut pod = pod_template(client, runtime, w, "Always").await?;
            pod["metadata"]["name"] = json!(w.name);
            let pod: Pod = serde_json::from_value(pod).map_err(manifest_error(&w.name))?;
            Api::<Pod>::namespaced(client.clone(), ns)
                .create(&pp, &pod)
                .await
                .map_err(kube_context(what))?;
        }
    }
    Ok(())
}

async fn job_spec(client: &Client, runtime: &Runtime, w: &Workload) -> Result<Value> {
    Ok(
        json!({"parallelism": w.replicas, "completions": w.replicas, "backoffLimit": 6,
              "template": pod_template(client, runtime, w, "OnFailure").await?}),
    )
}

/// Pods each workload should have running (or, for Jobs, have run).
pub fn expected_pods(w: &Workload) -> usize {
    match w.kind {
        Kind::DaemonSet => 1,
        Kind::Pod => 1,
        _ => usize::try_from(w.replicas).unwrap_or(0),
    }
}

/// Waits until every workload has its pods running (Jobs: running or succeeded).
pub async fn wait_running(client: &Client, scenario: &Scenario, timeout: Duration) -> Result<()> {
    wait_for("scenario pods running", timeout, || async {
        for w in &scenario.workloads {
            if !workload_running(client, w).await? {
                return Ok(None);
            }
        }
        Ok(Some(()))
    })
    .await
}

/// Waits until `w` has its pods running.
async fn wait_workload_running(client: &Client, w: &Workload, timeout: Duration) -> Result<()> {
    wait_for(&format!("pods of {} running", w.id()), timeout, || async {
        Ok(workload_running(client, w).await?.then_some(()))
    })
    .await
}

/// Whether `w` has as many pods running (Jobs: or succeeded) as it should.
async fn workload_running(client: &Client, w: &Workload) -> Result<bool> {
    let pods = Api::<Pod>::namespaced(client.clone(), &w.namespace)
        .list(&ListParams::default().labels(&format!("app={}", w.name)))
        .await
        .map_err(kube_context("list pods"))?;
    let running = pods
        .items
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| {
            matches!(
                p.status.as_ref().and_then(|s| s.phase.as_deref()),
                Some("Running" | "Succeeded")
            )
        })
        .count();
    Ok(running >= expected_pods(w))
}

/// Deletes the workload's pods (its controller replaces them).
pub async fn restart(client: &Client, w: &Workload) -> Result<()> {
    Api::<Pod>::namespaced(client.clone(), &w.namespace)
        .delete_collection(
            &DeleteParams::default(),
            &ListParams::default().labels(&format!("app={}", w.name)),
        )
        .await
        .map_err(kube_context(format!("restart {}", w.id())))?;
    Ok(())
}

/// Sets the workload's replicas.
pub async fn scale(client: &Client, w: &Workload, replicas: i32) -> Result<()> {
    let patch = Patch::Merge(json!({"spec": {"replicas": replicas}}));
    let pp = PatchParams::default();
    let ns = &w.namespace;
    let result = match w.kind {
        Kind::Deployment => Api::<Deployment>::namespaced(client.clone(), ns)
            .patch(&w.name, &pp, &patch)
            .await
            .map(|_| ()),
        Kind::StatefulSet => Api::<StatefulSet>::namespaced(client.clone(), ns)
            .patch(&w.name, &pp, &patch)
            .await
            .map(|_| ()),
        Kind::Job => Api::<Job>::namespaced(client.clone(), ns)
            .patch(
                &w.name,
                &pp,
                &Patch::Merge(json!({"spec": {"parallelism": replicas}})),
            )
            .await
            .map(|_| ()),
        other => {
            return Err(Error::Exited(format!(
                "cannot scale a {other:?} ({})",
                w.id()
            )));
        }
    };
    result.map_err(kube_context(format!("scale {}", w.id())))
}

/// Deletes the scenario's namespaces and waits until they are gone. With `force_pods`, their
/// pods are deleted at once too (left by a killed run: no kubelet will finalize them).
pub async fn delete_namespaces(
    client: &Client,
    scenario: &Scenario,
    timeout: Duration,
    force_pods: bool,
) -> Result<()> {
    let namespaces = Api::<Namespace>::all(client.clone());
    for ns in scenario.namespaces() {
        if force_pods {
            let pods = Api::<Pod>::namespaced(client.clone(), &ns);
            let now = DeleteParams {
                grace_period_seconds: Some(0),
                ..DeleteParams::default()
            };
            let _ = pods.delete_collection(&now, &ListParams::default()).await;
        }
        match namespaces.delete(&ns, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(kube_context(format!("delete namespace {ns}"))(e)),
        }
    }
    let names: BTreeMap<String, ()> = scenario.namespaces().into_iter().map(|n| (n, ())).collect();
    wait_for("scenario namespaces deleted", timeout, || async {
        for ns in names.keys() {
            match namespaces.get_opt(ns).await {
                Ok(Some(_)) => return Ok(None),
                Ok(None) => {}
                Err(e) => return Err(kube_context("get namespace")(e)),
            }
        }
        Ok(Some(()))
    })
    .await
}
