//! End to end on the real node (`e2e/node/node.sh`: a kubelet with containerd, runc, CNI,
//! kube-proxy and CoreDNS, running the images of `make images`): trafficmap installed with helm
//! from `chart/`, every scenario played by containers of the scenario image, mapped exactly.
//!
//! These tests need the real node up, which cannot run beside the simulated node (both
//! kube-proxies would program the same tables), so they are ignored in the main run and run by
//! `make real-node-test` (part of `make test`): node up, `cargo test --test real_node --
//! --ignored`, node down.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use kube::Api;
use trafficmap_api::ObservedTraffic;
use trafficmap_e2e::cluster::{admin_client, repo_root};
use trafficmap_e2e::real::Fault;
use trafficmap_e2e::scenario::runner::{NodeKind, RunOptions, run_file_exact};

/// One scenario at a time on the node.
static NODE: Mutex<()> = Mutex::new(());

fn scenario(name: &str) -> PathBuf {
    repo_root()
        .join("e2e/scenarios")
        .join(format!("{name}.yaml"))
}

/// Runs scenario `name` on the real node with extra chart `values`; the map must be exact.
fn run(name: &str, sniffer_late: bool, values: &[&str]) {
    run_with_faults(name, sniffer_late, values, &[]);
}

/// As [`run`], injecting `faults` while the traffic runs.
fn run_with_faults(name: &str, sniffer_late: bool, values: &[&str], faults: &[(u64, Fault)]) {
    let _turn = NODE.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let options = RunOptions {
        keep: false,
        sniffer_late,
        node: NodeKind::Real,
        chart_values: values.iter().map(|v| v.to_string()).collect(),
        faults: faults
            .iter()
            .map(|(at, fault)| (Duration::from_secs(*at), *fault))
            .collect(),
    };
    run_file_exact(&scenario(name), &options);
}

/// The BPF socket iterator loads inside the sniffer's container as the chart ships it
/// (`bpf` fails instead of falling back). The operator's own calls to the API server, whose
/// `default/kubernetes` endpoints the API server keeps, map to that Service.
#[test]
#[ignore = "needs the real node: make real-node-test"]
fn ecom_demo_with_the_bpf_socket_iterator() {
    run("ecom-demo", false, &["sniffer.socketSource=bpf"]);
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    let operator = runtime.block_on(async {
        let client = admin_client().await.expect("client");
        Api::<ObservedTraffic>::all(client)
            .get("trafficmap-operator.deployment.trafficmap")
            .await
            .expect("the operator's ObservedTraffic")
    });
    let targets = operator.status.map(|s| s.targets).unwrap_or_default();
    assert!(
        targets
            .iter()
            .any(|t| t.name == "kubernetes" && t.namespace == "default" && t.kind == "Service"),
        "the operator's calls to the API server are not default/kubernetes: {targets:?}"
    );
}

/// sock_diag, entering each pod's namespace from the container.
#[test]
#[ignore = "needs the real node: make real-node-test"]
fn tutorial_with_sock_diag() {
    run("tutorial", false, &["sniffer.socketSource=sock-diag"]);
}

/// Internet names come only from DNS answers the sniffer captured on the node.
#[test]
#[ignore = "needs the real node: make real-node-test"]
fn external_hosts_named_by_captured_dns() {
    run("external", false, &[]);
}

#[test]
#[ignore = "needs the real node: make real-node-test"]
fn ip_reuse() {
    run("ip-reuse", false, &[]);
}

#[test]
#[ignore = "needs the real node: make real-node-test"]
fn jobs_and_cronjobs() {
    run("jobs", false, &[]);
}

#[test]
#[ignore = "needs the real node: make real-node-test"]
fn statefulset() {
    run("statefulset", false, &[]);
}

#[test]
#[ignore = "needs the real node: make real-node-test"]
fn daemonset_clusterip() {
    run("daemonset-clusterip", false, &[]);
}

#[test]
#[ignore = "needs the real node: make real-node-test"]
fn bare_pod_podip() {
    run("bare-pod-podip", false, &[]);
}

#[test]
#[ignore = "needs the real node: make real-node-test"]
fn annotation() {
    run("annotation", false, &[]);
}

#[test]
#[ignore = "needs the real node: make real-node-test"]
fn headless() {
    run("headless", false, &[]);
}

#[test]
#[ignore = "needs the real node: make real-node-test"]
fn cross_namespace() {
    run("cross-namespace", false, &[]);
}

#[test]
#[ignore = "needs the real node: make real-node-test"]
fn host_network() {
    run("host-network", false, &[]);
}

#[test]
#[ignore = "needs the real node: make real-node-test"]
fn udp() {
    run("udp", false, &[]);
}

/// Connections opened before the sniffer's pod started (trafficmap is installed after the pods).
#[test]
#[ignore = "needs the real node: make real-node-test"]
fn persistent_before_sniffer() {
    run("persistent-before-sniffer", true, &[]);
}

/// The sniffer's pod is deleted 2 s into the traffic, before any report reached a CRD; its
/// DaemonSet replaces it and the map is still exact.
#[test]
#[ignore = "needs the real node: make real-node-test"]
fn fault_sniffer_pod_deleted() {
    run_with_faults("tutorial", false, &[], &[(2, Fault::DeleteSnifferPod)]);
}

/// The operator's pod is deleted 2 s into the traffic; the sniffer holds its reports until the
/// new one takes them. The old one drains and hands its address history over; the new one waits
/// for it, inherits the history and rebuilds the map from ObservedTraffic.
#[test]
#[ignore = "needs the real node: make real-node-test"]
fn fault_operator_pod_deleted() {
    run_with_faults("tutorial", false, &[], &[(2, Fault::DeleteOperatorPod)]);
}

/// The kubelet and then containerd are killed and started again mid-traffic. `make
/// real-node-test` runs this one last, so that a slow recovery of the node cannot be blamed on
/// the scenario after it.
#[test]
#[ignore = "needs the real node: make real-node-test"]
fn fault_kubelet_and_containerd_restart() {
    run_with_faults(
        "tutorial",
        false,
        &[],
        &[(2, Fault::RestartKubelet), (8, Fault::RestartContainerd)],
    );
}

/// Every scenario file has its test here.
#[test]
fn every_scenario_runs_on_the_real_node() {
    let source = include_str!("real_node.rs");
    let dir = repo_root().join("e2e/scenarios");
    let mut missing = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("read e2e/scenarios") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "yaml") {
            let stem = path
                .file_stem()
                .expect("stem")
                .to_string_lossy()
                .into_owned();
            if !source.contains(&format!("run(\"{stem}\"")) {
                missing.push(stem);
            }
        }
    }
    assert!(
        missing.is_empty(),
        "scenarios without a real-node test: {missing:?}"
    );
}
