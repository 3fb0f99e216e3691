//! `kubectl-trafficmap` as a real process against the real control plane: ObservedTraffic
//! fixtures (in namespaces that only this test uses, `tm-cli-*`) are listed, exported, diffed,
//! drawn and reset, and the output is compared byte for byte with the golden files in
//! `tests/golden/` (rewrite them with `UPDATE_GOLDEN=1`).
//!
//! Tests run one at a time: they share the fixture namespaces.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::json;
use trafficmap_api::observed::{
    InternetTarget, ObservedTarget, ObservedTrafficStatus, PortProtocol, Protocol, SeenBy,
};
use trafficmap_api::{ClientIntents, ObservedTraffic, WorkloadRef};
use trafficmap_e2e::cluster::{admin_client, kubeconfig_path, repo_root, unique_name, wait_for};
use trafficmap_e2e::crds::install_all;
use trafficmap_e2e::operator::{bin_path, service_account_token};

static SERIAL: tokio::sync::Mutex<bool> = tokio::sync::Mutex::const_new(false);

/// Client namespaces of the fixtures: fixed, so golden files hold them, and used by no other test.
const SHOP: &str = "tm-cli-shop";
const PAYMENTS: &str = "tm-cli-payments";
const FIELD_MANAGER: &str = "trafficmap-cli-test";
/// The audience the control plane's API server accepts (its `--api-audiences`).
const API_AUDIENCE: &str = "https://kubernetes.default.svc.cluster.local";
const NAMESPACE_GONE_TIMEOUT: Duration = Duration::from_secs(90);

// ---------------------------------------------------------------------------------------------
// Fixtures

fn at(secs: i64) -> Time {
    Time(Timestamp::from_second(secs).expect("valid timestamp"))
}

fn tcp(port: u16) -> Vec<PortProtocol> {
    vec![PortProtocol {
        port,
        protocol: Protocol::Tcp,
    }]
}

fn target(name: &str, namespace: &str, kind: &str, port: u16) -> ObservedTarget {
    ObservedTarget {
        name: name.into(),
        namespace: namespace.into(),
        kind: kind.into(),
        service: Some(name.into()),
        ports: tcp(port),
        dns_names: vec![format!("{name}.{namespace}.svc.cluster.local")],
        seen_by: vec![SeenBy::Dns, SeenBy::Tcp],
        first_seen: at(1_700_000_000),
        last_seen: at(1_700_000_600),
    }
}

fn internet(name: Option<&str>, ip: &str, port: u16) -> InternetTarget {
    InternetTarget {
        dns_name: name.map(str::to_string),
        ips: vec![ip.into()],
        ports: tcp(port),
        seen_by: vec![SeenBy::Tcp],
        first_seen: at(1_700_000_000),
        last_seen: at(1_700_000_600),
    }
}

fn client(name: &str, namespace: &str, kind: &str) -> WorkloadRef {
    WorkloadRef {
        name: name.into(),
        namespace: namespace.into(),
        kind: kind.into(),
    }
}

/// The fixture map: (client, targets, internet targets); `idle` made no call.
fn fixture_map() -> Vec<(WorkloadRef, Vec<ObservedTarget>, Vec<InternetTarget>)> {
    vec![
        (
            client("checkoutservice", SHOP, "Deployment"),
            vec![
                target("currencyservice", SHOP, "Deployment", 7000),
                target("cartservice", SHOP, "Deployment", 7070),
                target("ledger", PAYMENTS, "StatefulSet", 9090),
                target("kubernetes", "default", "Service", 443),
            ],
            vec![
                internet(Some("api.stripe.com"), "192.0.2.10", 443),
                internet(None, "203.0.113.9", 8443),
            ],
        ),
        (
            client("frontend", SHOP, "Deployment"),
            vec![
                target("productcatalogservice", SHOP, "Deployment", 3550),
                target("checkoutservice", SHOP, "Deployment", 5050),
            ],
            vec![],
        ),
        (
            client("ledger", PAYMENTS, "StatefulSet"),
            vec![],
            vec![internet(Some("bank.example.com"), "198.51.100.20", 443)],
        ),
        (client("idle", SHOP, "Deployment"), vec![], vec![]),
    ]
}

/// Prepares the cluster under the serial lock: CRDs, and (once per run) fresh fixture
/// namespaces; then (re)applies every fixture ObservedTraffic.
async fn setup() -> (tokio::sync::MutexGuard<'static, bool>, Client) {
    let mut prepared = SERIAL.lock().await;
    let client = admin_client().await.expect("control plane reachable");
    if !*prepared {
        install_all(&client).await.expect("CRDs installed");
        remove_fixtures(&client).await;
        for ns in [SHOP, PAYMENTS] {
            recreate_namespace(&client, ns).await;
        }
        *prepared = true;
    }
    apply_fixtures(&client).await;
    (prepared, client)
}

async fn recreate_namespace(client: &Client, name: &str) {
    let api = Api::<Namespace>::all(client.clone());
    api.delete(name, &DeleteParams::default()).await.ok();
    wait_for(
        &format!("namespace {name} to go"),
        NAMESPACE_GONE_TIMEOUT,
        || async {
            match api.get_opt(name).await {
                Ok(found) => Ok(found.is_none().then_some(())),
                Err(e) => Err(trafficmap_e2e::kube_context("get namespace")(e)),
            }
        },
    )
    .await
    .expect("old fixture namespace deleted");
    let ns = Namespace {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    };
    api.create(&PostParams::default(), &ns)
        .await
        .expect("fixture namespace created");
}

async fn apply_fixtures(client: &Client) {
    let api = Api::<ObservedTraffic>::all(client.clone());
    let params = PatchParams::apply(FIELD_MANAGER).force();
    for (workload, targets, internet_targets) in fixture_map() {
        let object = ObservedTraffic::for_client(workload);
        let name = object.metadata.name.clone().expect("named");
        api.patch(&name, &params, &Patch::Apply(&object))
            .await
            .expect("apply ObservedTraffic");
        if targets.is_empty() && internet_targets.is_empty() {
            continue;
        }
        let status = ObservedTrafficStatus {
            target_count: (targets.len() + internet_targets.len()) as u32,
            last_seen: Some(at(1_700_000_600)),
            targets,
            internet_targets,
            ..ObservedTrafficStatus::default()
        };
        let patch = json!({
            "apiVersion": "trafficmap.io/v1alpha1",
            "kind": "ObservedTraffic",
            "status": status,
        });
        api.patch_status(&name, &params, &Patch::Apply(&patch))
            .await
            .expect("apply ObservedTraffic status");
    }
}

/// Deletes the fixture ObservedTraffic (they are cluster-scoped: namespaces do not take them).
async fn remove_fixtures(client: &Client) {
    let api = Api::<ObservedTraffic>::all(client.clone());
    for (workload, _, _) in fixture_map() {
        let name = ObservedTraffic::for_client(workload)
            .metadata
            .name
            .unwrap_or_default();
        api.delete(&name, &DeleteParams::default()).await.ok();
    }
}

// ---------------------------------------------------------------------------------------------
// Running the CLI

struct Outcome {
    code: i32,
    stdout: String,
    stderr: String,
}

fn run_cli(args: &[&str]) -> Outcome {
    let kubeconfig = kubeconfig_path();
    let mut all: Vec<&str> = vec!["--kubeconfig", kubeconfig.to_str().expect("utf-8 path")];
    all.extend_from_slice(args);
    let binary = bin_path("kubectl-trafficmap").expect("kubectl-trafficmap built");
    outcome(Command::new(binary).args(&all))
}

fn outcome(command: &mut Command) -> Outcome {
    let output = command.output().expect("command runs");
    Outcome {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

fn succeed(args: &[&str]) -> String {
    let out = run_cli(args);
    assert_eq!(out.code, 0, "{args:?} failed: {}{}", out.stdout, out.stderr);
    out.stdout
}

fn kubectl(args: &[&str]) -> Outcome {
    let kubeconfig = kubeconfig_path();
    outcome(
        Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .args(args),
    )
}

/// A fresh scratch directory under target/.
fn scratch() -> PathBuf {
    let dir = repo_root().join("target/e2e-cli").join(unique_name("run"));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

fn updating_golden() -> bool {
    std::env::var("UPDATE_GOLDEN").is_ok_and(|v| v == "1")
}

/// Compares `actual` with golden file `name` byte for byte (or rewrites it with UPDATE_GOLDEN=1).
fn assert_golden(name: &str, actual: &[u8]) {
    let path = golden_dir().join(name);
    if updating_golden() {
        std::fs::create_dir_all(path.parent().expect("parent")).expect("golden dir");
        std::fs::write(&path, actual).expect("write golden file");
        return;
    }
    let expected = std::fs::read(&path)
        .unwrap_or_else(|e| panic!("{}: {e}; create it with UPDATE_GOLDEN=1", path.display()));
    assert!(
        expected == actual,
        "{} differs (rewrite with UPDATE_GOLDEN=1 if the change is intended)\n--- expected\n{}\n--- actual\n{}",
        path.display(),
        String::from_utf8_lossy(&expected),
        String::from_utf8_lossy(actual)
    );
}

fn files_in(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .expect("read dir")
        .map(|e| {
            let path = e.expect("entry").path();
            let name = path
                .file_name()
                .expect("name")
                .to_string_lossy()
                .into_owned();
            (name, std::fs::read(&path).expect("read file"))
        })
        .collect();
    files.sort();
    files
}

const FIXTURE_NAMESPACES: [&str; 4] = ["-n", SHOP, "-n", PAYMENTS];

// ---------------------------------------------------------------------------------------------
// Tests

#[tokio::test]
async fn list_prints_the_golden_map_and_says_when_nothing_was_observed() {
    let (_lock, client) = setup().await;
    let mut args = vec!["list"];
    args.extend(FIXTURE_NAMESPACES);
    assert_golden("list.txt", succeed(&args).as_bytes());

    let only_payments = succeed(&["list", "-n", PAYMENTS]);
    assert_eq!(
        only_payments,
        "ledger in namespace tm-cli-payments calls:\n  - internet: bank.example.com\n"
    );
    let to_ledger = succeed(&["list", "-n", SHOP, "--server", "ledger.tm-cli-payments"]);
    assert_eq!(
        to_ledger,
        "checkoutservice in namespace tm-cli-shop calls:\n  - ledger.tm-cli-payments\n"
    );
    let none = succeed(&["list", "-n", "tm-cli-nothing-here"]);
    assert!(none.starts_with("No traffic observed yet."), "{none}");
    remove_fixtures(&client).await;
}

#[tokio::test]
async fn export_matches_the_golden_files_is_stable_and_the_api_server_accepts_it() {
    let (_lock, client) = setup().await;
    let dir = scratch();
    for (format, file) in [("yaml", "export.yaml"), ("json", "export.json")] {
        let first = dir.join(format!("first.{format}"));
        let second = dir.join(format!("second.{format}"));
        for path in [&first, &second] {
            let mut args = vec![
                "export",
                "--format",
                format,
                "-o",
                path.to_str().expect("utf-8"),
            ];
            args.extend(FIXTURE_NAMESPACES);
            succeed(&args);
        }
        let bytes = std::fs::read(&first).expect("export written");
        assert_eq!(
            bytes,
            std::fs::read(&second).expect("export written"),
            "{format} changed between runs"
        );
        assert_golden(file, &bytes);
        let applied = kubectl(&[
            "apply",
            "--dry-run=server",
            "-f",
            first.to_str().expect("utf-8"),
        ]);
        assert_eq!(
            applied.code, 0,
            "server rejected the {format} export: {}",
            applied.stderr
        );
        assert_eq!(applied.stdout.lines().count(), 3, "{}", applied.stdout);
    }

    let mut args = vec!["export", "--format", "yaml"];
    args.extend(FIXTURE_NAMESPACES);
    assert_eq!(
        succeed(&args).as_bytes(),
        std::fs::read(golden_dir().join("export.yaml"))
            .expect("golden")
            .as_slice(),
        "stdout and -o agree"
    );

    let out_dir = dir.join("per-client");
    let mut args = vec![
        "export",
        "--output-type",
        "dir",
        "-o",
        out_dir.to_str().expect("utf-8"),
    ];
    args.extend(FIXTURE_NAMESPACES);
    succeed(&args);
    let files = files_in(&out_dir);
    let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "checkoutservice.tm-cli-shop.yaml",
            "frontend.tm-cli-shop.yaml",
            "ledger.tm-cli-payments.yaml"
        ]
    );
    if updating_golden() {
        std::fs::remove_dir_all(golden_dir().join("export-dir")).ok();
    }
    for (name, content) in &files {
        assert_golden(&format!("export-dir/{name}"), content);
    }
    if !updating_golden() {
        assert_eq!(
            files_in(&golden_dir().join("export-dir")).len(),
            files.len()
        );
    }
    let applied = kubectl(&[
        "apply",
        "--dry-run=server",
        "-f",
        out_dir.to_str().expect("utf-8"),
    ]);
    assert_eq!(
        applied.code, 0,
        "server rejected the dir export: {}",
        applied.stderr
    );
    remove_fixtures(&client).await;
}

fn hand_written_intents(targets: serde_json::Value) -> ClientIntents {
    serde_json::from_value(json!({
        "apiVersion": "k8s.otterize.com/v2beta1",
        "kind": "ClientIntents",
        "metadata": {"name": "ledger", "namespace": PAYMENTS},
        "spec": {"workload": {"name": "ledger", "kind": "StatefulSet"}, "targets": targets},
    }))
    .expect("valid ClientIntents")
}

#[tokio::test]
async fn diff_exits_1_for_an_uncovered_call_and_0_once_intents_cover_it() {
    let (_lock, client) = setup().await;
    let intents = Api::<ClientIntents>::namespaced(client.clone(), PAYMENTS);
    let params = PatchParams::apply(FIELD_MANAGER).force();

    // In the cluster: ledger's hand-written intents forget bank.example.com and declare a call
    // never seen.
    let missing = hand_written_intents(json!([{"kubernetes": {"name": "auditlog"}}]));
    intents
        .patch("ledger", &params, &Patch::Apply(&missing))
        .await
        .expect("apply hand-written intents");
    let out = run_cli(&["diff", "-n", PAYMENTS]);
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains("ledger in namespace tm-cli-payments:\n  calls the intents do not cover (would be blocked once enforced):\n    - internet:bank.example.com\n  declared calls never observed:\n    - auditlog.tm-cli-payments\n"),
        "{}",
        out.stdout
    );

    let covering = hand_written_intents(
        json!([{"internet": {"domains": ["bank.example.com"], "ports": [443]}}]),
    );
    intents
        .patch("ledger", &params, &Patch::Apply(&covering))
        .await
        .expect("apply covering intents");
    let out = run_cli(&["diff", "-n", PAYMENTS]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout
            .starts_with("Every observed call of 1 client(s) is covered"),
        "{}",
        out.stdout
    );

    // A client with no ClientIntents at all: every call is uncovered.
    let out = run_cli(&["diff", "-n", SHOP, "--server", "cartservice.tm-cli-shop"]);
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("checkoutservice in namespace tm-cli-shop (no ClientIntents):\n  calls the intents do not cover (would be blocked once enforced):\n    - cartservice.tm-cli-shop\n"), "{}", out.stdout);

    // From files: the golden export covers everything; without one target it does not.
    let golden = golden_dir().join("export.yaml");
    let mut args = vec!["diff", "-f", golden.to_str().expect("utf-8")];
    args.extend(FIXTURE_NAMESPACES);
    let out = run_cli(&args);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    let trimmed = std::fs::read_to_string(&golden)
        .expect("golden export")
        .replace(
            "  - kubernetes:\n      name: cartservice\n      kind: Deployment\n",
            "",
        );
    let dir = scratch();
    std::fs::write(dir.join("intents.yaml"), trimmed).expect("write intents");
    let mut args = vec!["diff", "-f", dir.to_str().expect("utf-8")];
    args.extend(FIXTURE_NAMESPACES);
    let out = run_cli(&args);
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains("    - cartservice.tm-cli-shop\n"),
        "{}",
        out.stdout
    );
    assert!(!out.stdout.contains("currencyservice"), "{}", out.stdout);

    intents
        .delete("ledger", &DeleteParams::default())
        .await
        .ok();
    remove_fixtures(&client).await;
}

#[tokio::test]
async fn visualize_writes_dot_svg_and_png() {
    let (_lock, client) = setup().await;
    let dir = scratch();
    let dot = dir.join("map.dot");
    let svg = dir.join("map.svg");
    let png = dir.join("map.png");
    for (format, path) in [("dot", &dot), ("svg", &svg), ("png", &png)] {
        let mut args = vec![
            "visualize",
            "--format",
            format,
            "-o",
            path.to_str().expect("utf-8"),
        ];
        args.extend(FIXTURE_NAMESPACES);
        succeed(&args);
    }
    let dot = std::fs::read_to_string(&dot).expect("dot written");
    assert!(dot.starts_with("digraph trafficmap {"), "{dot}");
    assert!(dot.contains("subgraph \"cluster_tm-cli-shop\""), "{dot}");
    assert!(
        dot.contains("subgraph \"cluster__internet\" {\n    label=\"internet\";"),
        "{dot}"
    );
    assert!(
        dot.contains(
            "\"tm-cli-shop/checkoutservice\" -> \"tm-cli-payments/ledger\" [label=\"9090/TCP\"];"
        ),
        "{dot}"
    );
    let svg = std::fs::read_to_string(&svg).expect("svg written");
    assert!(
        svg.contains("<svg") && svg.trim_end().ends_with("</svg>"),
        "{svg}"
    );
    assert!(svg.contains("checkoutservice") && svg.contains("bank.example.com"));
    let png = std::fs::read(&png).expect("png written");
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    remove_fixtures(&client).await;
}

#[tokio::test]
async fn reset_deletes_nothing_without_yes_and_the_selected_clients_with_it() {
    let (_lock, client) = setup().await;
    let api = Api::<ObservedTraffic>::all(client.clone());
    let count = |list: Vec<ObservedTraffic>, ns: &str| {
        list.iter()
            .filter(|o| o.spec.client.namespace == ns)
            .count()
    };
    let listed = || async { api.list(&Default::default()).await.expect("list").items };

    let out = run_cli(&["reset", "-n", PAYMENTS]);
    assert_eq!(out.code, 2, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout
            .contains("ledger.statefulset.tm-cli-payments (ledger in namespace tm-cli-payments)"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("--yes"));
    assert_eq!(
        count(listed().await, PAYMENTS),
        1,
        "nothing deleted without --yes"
    );

    let out = run_cli(&["reset", "-n", PAYMENTS, "--yes"]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout
            .contains("observedtraffic/ledger.statefulset.tm-cli-payments deleted")
    );
    let all = listed().await;
    assert_eq!(count(all.clone(), PAYMENTS), 0);
    assert_eq!(count(all, SHOP), 3, "other namespaces untouched");

    let out = run_cli(&[
        "reset",
        "-n",
        SHOP,
        "--server",
        "cartservice.tm-cli-shop",
        "--yes",
    ]);
    assert_eq!(
        out.code, 2,
        "--server does not apply to reset: {}",
        out.stderr
    );
    remove_fixtures(&client).await;
}

#[tokio::test]
async fn works_as_a_kubectl_plugin() {
    let (_lock, client) = setup().await;
    let binary = bin_path("kubectl-trafficmap").expect("built");
    let bin_dir = binary.parent().expect("bin dir");
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let kubeconfig = kubeconfig_path();
    let mut args = vec!["trafficmap", "list"];
    args.extend(FIXTURE_NAMESPACES);
    let out = outcome(
        Command::new("kubectl")
            .env("PATH", path)
            .env("KUBECONFIG", &kubeconfig)
            .args(&args),
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_golden("list.txt", out.stdout.as_bytes());
    remove_fixtures(&client).await;
}

#[tokio::test]
async fn errors_say_what_to_do() {
    let (_lock, client) = setup().await;
    let binary = bin_path("kubectl-trafficmap").expect("built");
    let out =
        outcome(Command::new(&binary).args(["--kubeconfig", "/nonexistent/kubeconfig", "list"]));
    assert_eq!(out.code, 3);
    assert!(out.stderr.contains("Is KUBECONFIG set?"), "{}", out.stderr);

    // A ServiceAccount with no RBAC: the error names the verb and resource to grant.
    let token = service_account_token(&client, SHOP, "tm-cli-nobody", API_AUDIENCE)
        .await
        .expect("token");
    let admin = std::fs::read_to_string(kubeconfig_path()).expect("kubeconfig");
    let mut config: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(&admin).expect("kubeconfig yaml");
    if let Some(users) = config.get_mut("users").and_then(|u| u.as_sequence_mut()) {
        for user in users {
            user["user"] = serde_yaml_ng::to_value(json!({"token": token})).expect("user");
        }
    }
    let dir = scratch();
    let limited = dir.join("kubeconfig");
    std::fs::write(&limited, serde_yaml_ng::to_string(&config).expect("yaml")).expect("write");
    let out = outcome(
        Command::new(binary)
            .arg("--kubeconfig")
            .arg(&limited)
            .arg("list"),
    );
    assert_eq!(out.code, 3, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stderr
            .contains("permission denied: you need `list` on observedtraffics.trafficmap.io"),
        "{}",
        out.stderr
    );
    remove_fixtures(&client).await;
}
