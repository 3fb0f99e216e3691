//! The install and the proof that it asks for no more power than it needs: the chart lints and
//! renders with default and other values, every flag it passes is one the binaries accept,
//! `config/` is its default render, the API server accepts what it renders, and once installed
//! with helm the operator's account can do exactly what the operator does (checked with
//! `kubectl auth can-i --as`), while the sniffer's can do nothing an unbound account cannot.
//!
//! Needs helm (`bash e2e/tools/install-helm.sh`; CI installs it) and, for the cluster tests, the
//! local control plane. Each cluster test has a namespace of its own (`trafficmap-pack-*`) and
//! cluster-scoped names no other test uses, removes them when done, and waits until they are gone.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::Value;
use trafficmap_e2e::chart::{
    CONFIG_RELEASE, by_identity, documents, find, helm, kubectl, run, template,
};
use trafficmap_e2e::cluster::{admin_client, repo_root, wait_for};
use trafficmap_e2e::crds::{install_all, upstream_client_intents_crd};
use trafficmap_e2e::operator::{OperatorProcess, bin_path};

/// The helm install test's release and namespace. The release name contains the chart's name,
/// so objects are `trafficmap-pack-operator`, `trafficmap-pack-sniffer`, ...
const RELEASE: &str = "trafficmap-pack";
const NAMESPACE: &str = "trafficmap-pack-test";
/// The dry-run test's release and namespace.
const DRY_RELEASE: &str = "trafficmap-pack-dry";
const DRY_NAMESPACE: &str = "trafficmap-pack-dryrun";
const GONE_TIMEOUT: Duration = Duration::from_secs(90);

/// Every non-default value that changes a flag or adds an object (not the ServiceMonitor, which
/// needs the Prometheus operator's CRD: see [`NON_DEFAULT_WITH_MONITOR`]).
const NON_DEFAULT: &[&str] = &[
    "operator.replicas=2",
    "operator.leaderElection=true",
    "clusterDomain=corp.example",
    "emitClientIntents=true",
    "excludedNamespaces={kube-system,monitoring}",
    "operator.flushInterval=10s",
    "operator.podCIDRs={10.244.0.0/16}",
    "operator.serviceCIDRs={10.96.0.0/16,fd00:96::/108}",
    "operator.logFormat=text",
    "operator.image.tag=v9",
    "sniffer.scanInterval=2s",
    "sniffer.socketSource=sock-diag",
    "sniffer.reportInterval=3s",
    "sniffer.refreshInterval=2m",
    "sniffer.bufferBytes=32Mi",
    "sniffer.metricsPort=9191",
    "crds.clientIntents=true",
    "networkPolicy.enabled=true",
];
const NON_DEFAULT_WITH_MONITOR: &str = "serviceMonitor.enabled=true";

fn render(release: &str, namespace: &str, sets: &[&str]) -> Vec<Value> {
    let text = template(release, namespace, sets).expect("helm template succeeds");
    documents(&text, "helm template").expect("helm renders YAML")
}

fn object<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    find(objects, kind, name).unwrap_or_else(|| panic!("{kind} {name} rendered"))
}

fn strings(value: &Value, pointer: &str) -> Vec<String> {
    value
        .pointer(pointer)
        .and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn container_args(workload: &Value) -> Vec<String> {
    strings(workload, "/spec/template/spec/containers/0/args")
}

/// The rules of a Role or ClusterRole as `(verb, group/resource, resourceNames)` triples.
fn grants(role: &Value) -> BTreeSet<(String, String, Vec<String>)> {
    let mut out = BTreeSet::new();
    for rule in role["rules"].as_array().into_iter().flatten() {
        for group in strings(rule, "/apiGroups") {
            for resource in strings(rule, "/resources") {
                for verb in strings(rule, "/verbs") {
                    out.insert((
                        verb,
                        format!("{group}/{resource}"),
                        strings(rule, "/resourceNames"),
                    ));
                }
            }
        }
    }
    out
}

#[test]
fn helm_lint_passes_with_default_and_non_default_values() {
    let out = helm(&["lint", "--strict", "chart"]).expect("helm runs");
    assert!(out.success, "{}{}", out.stdout, out.stderr);
    let mut args = vec!["lint", "--strict", "chart"];
    for set in NON_DEFAULT.iter().chain([&NON_DEFAULT_WITH_MONITOR]) {
        args.extend(["--set", set]);
    }
    let out = helm(&args).expect("helm runs");
    assert!(out.success, "{}{}", out.stdout, out.stderr);
}

#[test]
fn the_default_render_is_one_operator_and_a_sniffer_with_four_capabilities_and_no_api_access() {
    let objects = render(CONFIG_RELEASE, CONFIG_RELEASE, &[]);
    let operator = object(&objects, "Deployment", "trafficmap-operator");
    assert_eq!(operator["spec"]["replicas"], 1);
    let args = container_args(operator);
    assert!(
        args.contains(&"--leader-elect=false".to_string()),
        "{args:?}"
    );
    let pod = &operator["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    let security = &pod["containers"][0]["securityContext"];
    assert_eq!(security["readOnlyRootFilesystem"], true);
    assert_eq!(security["allowPrivilegeEscalation"], false);

    let sniffer = object(&objects, "DaemonSet", "trafficmap-sniffer");
    let pod = &sniffer["spec"]["template"]["spec"];
    assert_eq!(pod["hostNetwork"], true);
    assert_eq!(pod["hostPID"], true);
    assert_eq!(pod["automountServiceAccountToken"], false);
    assert_eq!(pod["serviceAccountName"], "trafficmap-sniffer");
    assert_eq!(
        pod["tolerations"],
        serde_json::json!([{"operator": "Exists"}])
    );
    let security = &pod["containers"][0]["securityContext"];
    assert_eq!(security["privileged"], false);
    assert_eq!(security["readOnlyRootFilesystem"], true);
    assert_eq!(strings(security, "/capabilities/drop"), ["ALL"]);
    let added: BTreeSet<String> = strings(security, "/capabilities/add").into_iter().collect();
    let expected: BTreeSet<String> = ["NET_ADMIN", "NET_RAW", "SYS_ADMIN", "SYS_PTRACE"]
        .map(String::from)
        .into();
    assert_eq!(added, expected);
    let token = pod["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .find_map(|v| v.pointer("/projected/sources/0/serviceAccountToken"))
        .expect("a projected token volume");
    assert_eq!(token["audience"], "trafficmap");
    assert!(
        container_args(sniffer)
            .contains(&"--operator-url=https://trafficmap-operator.trafficmap.svc:8443".into())
    );
    for workload in [operator, sniffer] {
        let resources = &workload["spec"]["template"]["spec"]["containers"][0]["resources"];
        for pointer in [
            "/requests/cpu",
            "/requests/memory",
            "/limits/cpu",
            "/limits/memory",
        ] {
            assert!(resources.pointer(pointer).is_some(), "{pointer} missing");
        }
    }

    // Least privilege as rendered; the install test below proves it on the API server.
    let cluster = grants(object(&objects, "ClusterRole", "trafficmap-operator"));
    for (verb, resource, names) in &cluster {
        assert!(names.is_empty(), "{verb} {resource} {names:?}");
        assert_ne!(verb, "delete", "{resource}");
        assert!(!resource.contains('*') && verb != "*", "{verb} {resource}");
        assert!(!resource.ends_with("/secrets"), "{verb} {resource}");
        assert!(!resource.contains("/exec"), "{verb} {resource}");
    }
    let role = grants(object(&objects, "Role", "trafficmap-operator"));
    let own_names = |resource: &str| -> BTreeSet<(String, Vec<String>)> {
        role.iter()
            .filter(|(_, r, _)| r == resource)
            .map(|(v, _, n)| (v.clone(), n.clone()))
            .collect()
    };
    let named = |verb: &str, name: &str| (verb.to_string(), vec![name.to_string()]);
    let configmaps = |verb: &str| {
        let names = ["trafficmap-ca", "trafficmap-handover"];
        (verb.to_string(), names.map(String::from).to_vec())
    };
    assert_eq!(
        own_names("/secrets"),
        [
            ("create".to_string(), vec![]),
            named("get", "trafficmap-operator-tls"),
            named("update", "trafficmap-operator-tls"),
        ]
        .into()
    );
    assert_eq!(
        own_names("/configmaps"),
        [configmaps("create"), configmaps("get"), configmaps("patch")].into()
    );
    assert!(own_names("coordination.k8s.io/leases").is_empty());
    let bound: Vec<&Value> = objects
        .iter()
        .filter(|o| o["kind"] == "RoleBinding" || o["kind"] == "ClusterRoleBinding")
        .collect();
    assert_eq!(bound.len(), 2);
    for binding in bound {
        assert_eq!(binding["subjects"][0]["name"], "trafficmap-operator");
    }

    let kinds: BTreeSet<&str> = objects.iter().filter_map(|o| o["kind"].as_str()).collect();
    assert!(!kinds.contains("ServiceMonitor") && !kinds.contains("NetworkPolicy"));
    let crds: Vec<&str> = objects
        .iter()
        .filter(|o| o["kind"] == "CustomResourceDefinition")
        .filter_map(|o| o["metadata"]["name"].as_str())
        .collect();
    assert_eq!(crds, ["observedtraffics.trafficmap.io"]);
    let crd = object(&objects, "CustomResourceDefinition", crds[0]);
    assert_eq!(
        crd["metadata"]["annotations"]["helm.sh/resource-policy"],
        "keep"
    );
}

#[test]
fn non_default_values_become_flags_and_objects() {
    let mut sets = NON_DEFAULT.to_vec();
    sets.push(NON_DEFAULT_WITH_MONITOR);
    let objects = render(RELEASE, NAMESPACE, &sets);
    let operator = object(&objects, "Deployment", "trafficmap-pack-operator");
    assert_eq!(operator["spec"]["replicas"], 2);
    assert!(
        operator["spec"]["template"]["spec"]["containers"][0]["image"]
            .as_str()
            .is_some_and(|i| i.ends_with(":v9"))
    );
    let args = container_args(operator);
    for flag in [
        "--leader-elect=true",
        "--lease-name=trafficmap-pack-operator",
        "--cluster-domain=corp.example",
        "--emit-client-intents=true",
        "--exclude-namespace=kube-system",
        "--exclude-namespace=monitoring",
        "--flush-interval=10s",
        "--pod-cidr=10.244.0.0/16",
        "--service-cidr=fd00:96::/108",
        "--log-format=text",
        "--sniffer-service-account=trafficmap-pack-test/trafficmap-pack-sniffer",
        "--tls-secret=trafficmap-pack-operator-tls",
        "--ca-configmap=trafficmap-pack-ca",
        "--service-name=trafficmap-pack-operator",
    ] {
        assert!(args.contains(&flag.to_string()), "{flag} not in {args:?}");
    }
    let sniffer = object(&objects, "DaemonSet", "trafficmap-pack-sniffer");
    let args = container_args(sniffer);
    for flag in [
        "--scan-interval=2s",
        "--socket-source=sock-diag",
        "--report-interval=3s",
        "--refresh-interval=2m",
        "--buffer-bytes=32Mi",
        "--metrics-addr=0.0.0.0:9191",
        "--operator-url=https://trafficmap-pack-operator.trafficmap-pack-test.svc:8443",
    ] {
        assert!(args.contains(&flag.to_string()), "{flag} not in {args:?}");
    }
    let role = grants(object(&objects, "Role", "trafficmap-pack-operator"));
    let lease = "coordination.k8s.io/leases".to_string();
    assert!(role.contains(&("create".into(), lease.clone(), vec![])));
    assert!(role.contains(&(
        "update".into(),
        lease,
        vec!["trafficmap-pack-operator".into()]
    )));
    object(&objects, "NetworkPolicy", "trafficmap-pack-operator");
    object(&objects, "ServiceMonitor", "trafficmap-pack");
    object(
        &objects,
        "CustomResourceDefinition",
        "clientintents.k8s.otterize.com",
    );
}

#[test]
fn every_flag_the_chart_passes_is_one_the_binaries_accept() {
    for sets in [vec![], NON_DEFAULT.to_vec()] {
        let objects = render(RELEASE, NAMESPACE, &sets);
        for (kind, name, binary) in [
            (
                "Deployment",
                "trafficmap-pack-operator",
                "trafficmap-operator",
            ),
            ("DaemonSet", "trafficmap-pack-sniffer", "trafficmap-sniffer"),
        ] {
            // clap parses (and validates) every argument before it acts on a trailing --help.
            let mut args = container_args(object(&objects, kind, name));
            args.push("--help".into());
            let path = bin_path(binary).expect("binaries built (cargo build --workspace --bins)");
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let out = run(&path, &args, None).expect("binary runs");
            assert!(
                out.success,
                "{binary} refuses the chart's flags {args:?}: {}",
                out.stderr
            );
        }
    }
    // And the check can fail: a flag the operator does not have is refused.
    let path = bin_path("trafficmap-operator").expect("built");
    let out = run(&path, &["--no-such-flag=1", "--help"], None).expect("binary runs");
    assert!(!out.success);
}

#[test]
fn values_outside_the_schema_are_refused() {
    for (bad, blamed) in [
        ("operator.replicas=0", "/operator/replicas"),
        ("operator.replicas=2", "operator.leaderElection"),
        ("sniffer.scanInterval=soon", "/sniffer/scanInterval"),
        ("sniffer.socketSource=proc", "/sniffer/socketSource"),
        ("operator.logFormat=xml", "/operator/logFormat"),
        (
            "excludedNamespaces={Not_A_Namespace}",
            "/excludedNamespaces/0",
        ),
        ("noSuchValue=1", "noSuchValue"),
    ] {
        let out = helm(&["template", "x", "chart", "--set", bad]).expect("helm runs");
        assert!(!out.success, "{bad} was accepted");
        assert!(out.stderr.contains(blamed), "{bad}: {}", out.stderr);
    }
}

#[test]
fn config_is_the_default_render_of_the_chart() {
    let rendered = template(CONFIG_RELEASE, CONFIG_RELEASE, &[]).expect("helm template");
    let chart = by_identity(documents(&rendered, "helm template").expect("yaml")).expect("ids");
    let built = kubectl(&["kustomize", "config"], None)
        .expect("kubectl runs")
        .ok("kubectl kustomize config")
        .expect("config/ is a kustomize base");
    let mut config = by_identity(documents(&built, "config/").expect("yaml")).expect("ids");
    // The one object the chart leaves to `helm install --create-namespace`.
    let namespace = config
        .remove("Namespace//trafficmap")
        .expect("config/ creates the namespace");
    assert_eq!(namespace["metadata"]["name"], "trafficmap");
    let stale = "config/ differs from the chart's default render: run `make config`";
    assert_eq!(
        chart.keys().collect::<Vec<_>>(),
        config.keys().collect::<Vec<_>>(),
        "{stale}"
    );
    for (id, object) in &chart {
        assert_eq!(Some(object), config.get(id), "{id}: {stale}");
    }

    // The chart's copies of the CRDs are the generated one and the upstream one, verbatim.
    let root = repo_root();
    for (copy, source) in [
        (
            "chart/files/crds/observedtraffics.trafficmap.io.yaml",
            root.join("crds/yaml/observedtraffics.trafficmap.io.yaml"),
        ),
        (
            "chart/files/crds/clientintents.k8s.otterize.com.yaml",
            upstream_client_intents_crd(),
        ),
    ] {
        let copy_text = std::fs::read_to_string(root.join(copy)).expect("copy readable");
        let source_text = std::fs::read_to_string(&source).expect("source readable");
        assert!(
            copy_text == source_text,
            "{copy} differs from {}: run `make config`",
            source.display()
        );
    }
}

/// A namespace for one test, deleted (and waited for) when dropped, even after a failure.
struct Namespace(&'static str);

impl Namespace {
    async fn fresh(name: &'static str) -> Namespace {
        delete_namespace(name).await;
        kubectl(&["create", "namespace", name], None)
            .expect("kubectl runs")
            .ok("create namespace")
            .expect("namespace created");
        Namespace(name)
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = kubectl(&["delete", "namespace", self.0, "--ignore-not-found"], None);
    }
}

async fn delete_namespace(name: &str) {
    let _ = kubectl(&["delete", "namespace", name, "--ignore-not-found"], None);
    gone(&format!("namespace/{name}")).await;
}

/// Waits until `kubectl get <what>` finds nothing.
async fn gone(what: &str) {
    wait_for(what, GONE_TIMEOUT, || async {
        let out = kubectl(&["get", what, "--ignore-not-found", "-o", "name"], None)?;
        Ok((out.success && out.stdout.trim().is_empty()).then_some(()))
    })
    .await
    .unwrap_or_else(|e| panic!("{what} still there: {e}"));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_api_server_accepts_the_default_and_non_default_renders() {
    let client = admin_client().await.expect("control plane reachable");
    install_all(&client).await.expect("CRDs installed");
    let _ns = Namespace::fresh(DRY_NAMESPACE).await;
    for sets in [vec![], NON_DEFAULT.to_vec()] {
        let text = template(DRY_RELEASE, DRY_NAMESPACE, &sets).expect("helm template");
        let out =
            kubectl(&["apply", "--dry-run=server", "-f", "-"], Some(&text)).expect("kubectl runs");
        assert!(
            out.success,
            "the API server refused the render with {sets:?}: {}",
            out.stderr
        );
        let applied = out.stdout.lines().count();
        let objects = documents(&text, "render").expect("yaml").len();
        assert_eq!(applied, objects, "{}", out.stdout);
    }
}

#[path = "packaging/install.rs"]
mod install;
