//! End to end: every scenario file, run on the simulated node (pods as network namespaces,
//! CoreDNS, kube-proxy) with the real sniffer and operator against the real control plane, must
//! be mapped exactly (recall and precision 1.000, in ObservedTraffic and in the drafts).
//!
//! Needs root, the control plane (`make e2e-test` starts it) and the built binaries. One node
//! runs at a time, so the tests take turns.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use trafficmap_e2e::cluster::repo_root;
use trafficmap_e2e::operator::bin_path;
use trafficmap_e2e::scenario::runner::{NodeKind, RunOptions, run_file_exact};
use trafficmap_e2e::sim::cleanup::cleanup;

/// One simulated node per machine: scenarios take turns.
static NODE: Mutex<()> = Mutex::new(());

fn own(name: &str) -> PathBuf {
    repo_root()
        .join("e2e/scenarios")
        .join(format!("{name}.yaml"))
}

/// Runs `path`; the map must be exact.
fn run(path: &Path, sniffer_late: bool) {
    let _turn = NODE.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let options = RunOptions {
        keep: false,
        sniffer_late,
        node: NodeKind::Sim,
        chart_values: Vec::new(),
        faults: Vec::new(),
    };
    run_file_exact(path, &options);
    assert_nothing_left(&path.display().to_string());
}

/// A run must remove its namespaces, links, netfilter tables, cgroups and processes: the
/// cleanup of `make down` finds nothing to do.
fn assert_nothing_left(after: &str) {
    let left = cleanup();
    assert!(left.is_empty(), "{after} left behind: {left:#?}");
}

#[test]
fn ctrl_c_on_a_kept_run_tears_everything_down() {
    let _turn = NODE.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let node = bin_path("trafficmap-node").expect("built trafficmap-node");
    let mut child = Command::new(node)
        .args(["scenario", "--keep"])
        .arg(own("tutorial"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start trafficmap-node");
    let stderr = child.stderr.take().expect("piped stderr");
    let mut lines = BufReader::new(stderr).lines();
    let kept = lines
        .by_ref()
        .map_while(Result::ok)
        .any(|line| line.starts_with("scenario: still running"));
    assert!(kept, "the run ended before keeping the scenario running");
    // Keep draining, so the teardown's output never blocks on a full pipe.
    std::thread::spawn(move || lines.for_each(drop));
    let pid = i32::try_from(child.id()).expect("pid");
    // SAFETY: signalling our own child.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGINT) }, 0, "SIGINT");
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        assert!(Instant::now() < deadline, "no exit 120 s after SIGINT");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(!status.success(), "an interrupted run reports failure");
    assert_nothing_left("an interrupted run");
}

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    files
}

/// Scenarios of our own, one per resolution rule; the list must name every file.
const OWN: &[&str] = &[
    "annotation",
    "bare-pod-podip",
    "cross-namespace",
    "daemonset-clusterip",
    "ecom-demo",
    "external",
    "headless",
    "host-network",
    "ip-reuse",
    "jobs",
    "persistent-before-sniffer",
    "statefulset",
    "tutorial",
    "udp",
];

#[test]
fn every_scenario_file_is_run_by_a_test() {
    let names: Vec<String> = yaml_files(&repo_root().join("e2e/scenarios"))
        .iter()
        .filter_map(|p| Some(p.file_stem()?.to_str()?.to_owned()))
        .collect();
    assert_eq!(names, OWN, "e2e/scenarios and the tests below differ");
}

macro_rules! scenario_tests {
    ($($test:ident => $file:literal),* $(,)?) => {
        $(
            #[test]
            fn $test() {
                run(&own($file), $file == "persistent-before-sniffer");
            }
        )*
    };
}

scenario_tests! {
    ecom_demo => "ecom-demo",
    tutorial => "tutorial",
    ip_reuse_after_restart_and_scale => "ip-reuse",
    job_and_cronjob_clients => "jobs",
    statefulset_client => "statefulset",
    daemonset_calling_a_cluster_ip_without_dns => "daemonset-clusterip",
    bare_pod_calling_a_pod_ip_without_dns => "bare-pod-podip",
    workload_name_annotation => "annotation",
    headless_service => "headless",
    cross_namespace_calls => "cross-namespace",
    host_network_client => "host-network",
    udp_calls => "udp",
    external_hosts => "external",
    connections_opened_before_the_sniffer_started => "persistent-before-sniffer",
}
