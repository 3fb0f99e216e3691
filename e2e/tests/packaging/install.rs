//! `helm install` on the real control plane, then `kubectl auth can-i --as` for the operator's and
//! the sniffer's ServiceAccounts.

use super::*;

const OPERATOR: &str = "trafficmap-pack-operator";
const SNIFFER: &str = "trafficmap-pack-sniffer";
/// An account bound to nothing: what every authenticated account may do anyway.
const NOBODY: &str = "trafficmap-pack-nobody";

/// Lines of a log that report a request the API server refused for want of permission: its
/// `Forbidden` status (message "... is forbidden: ...", reason `Forbidden`, code 403). A `403`
/// elsewhere (a timestamp, an id, a port) is not one.
fn api_refusals(log: &str) -> Vec<&str> {
    log.lines()
        .filter(|line| {
            line.to_ascii_lowercase().contains("forbidden") || line.contains("code: 403")
        })
        .collect()
}

#[test]
fn a_refusal_is_found_by_its_status_not_by_a_403_anywhere() {
    let quiet =
        "2026-12-03T17:32:23.403644Z INFO watching pods resource_version=\"1403\" port=8403";
    assert!(api_refusals(quiet).is_empty());
    for refused in [
        "WARN list failed: ApiError: pods is forbidden: User \"system:serviceaccount:trafficmap:op\" \
         cannot list resource \"pods\": Forbidden (ErrorResponse { status: \"Failure\", reason: \"Forbidden\", code: 403 })",
        r#"{"level":"WARN","fields":{"error":"{\"kind\":\"Status\",\"reason\":\"Forbidden\",\"code\":403}"}}"#,
        "ERROR watch: status code: 403",
    ] {
        assert_eq!(api_refusals(&format!("{quiet}\n{refused}")), vec![refused]);
    }
}

fn account(name: &str) -> String {
    format!("system:serviceaccount:{NAMESPACE}:{name}")
}

/// `kubectl auth can-i <question> --as <account>`: true for "yes".
fn can(who: &str, question: &[&str]) -> bool {
    let as_user = account(who);
    let mut args = vec!["auth", "can-i"];
    args.extend_from_slice(question);
    args.extend(["--as", &as_user]);
    let out = kubectl(&args, None).expect("kubectl runs");
    match out.stdout.trim() {
        "yes" => true,
        "no" => false,
        other => panic!("can-i {question:?}: {other} {}", out.stderr),
    }
}

/// Removes the release and what it created outside the namespace; runs even after a failure.
struct Release;

impl Drop for Release {
    fn drop(&mut self) {
        let _ = helm(&["uninstall", RELEASE, "--namespace", NAMESPACE]);
        for object in [
            format!("clusterrole/{OPERATOR}"),
            format!("clusterrolebinding/{OPERATOR}"),
        ] {
            let _ = kubectl(&["delete", &object, "--ignore-not-found"], None);
        }
        let _ = kubectl(
            &["delete", "namespace", NAMESPACE, "--ignore-not-found"],
            None,
        );
    }
}

/// What the operator's code calls, each as a `can-i` question (see operator/src: store/watch.rs,
/// store/restore.rs, reconcile/writer.rs, reconcile/intents_sync.rs, ingest/server.rs,
/// ingest/tls.rs, leader.rs).
fn needed() -> Vec<Vec<String>> {
    let ns = NAMESPACE;
    let mut questions: Vec<String> = Vec::new();
    for resource in [
        "pods",
        "services",
        "nodes",
        "endpointslices.discovery.k8s.io",
        "replicasets.apps",
        "deployments.apps",
        "statefulsets.apps",
        "daemonsets.apps",
        "jobs.batch",
        "cronjobs.batch",
    ] {
        questions.push(format!("list {resource} -A"));
        questions.push(format!("watch {resource} -A"));
    }
    questions.extend(
        [
            "create tokenreviews.authentication.k8s.io",
            "list observedtraffics.trafficmap.io",
            "watch observedtraffics.trafficmap.io",
            "create observedtraffics.trafficmap.io",
            "patch observedtraffics.trafficmap.io",
            "patch observedtraffics.trafficmap.io --subresource=status",
            "get clientintents.k8s.otterize.com -n shop",
            "create clientintents.k8s.otterize.com -n shop",
            "patch clientintents.k8s.otterize.com -n shop",
            "list clientintents.k8s.otterize.com -A",
            "watch clientintents.k8s.otterize.com -A",
            "patch clientintents.k8s.otterize.com --subresource=status -n shop",
        ]
        .map(String::from),
    );
    questions.extend([
        format!("create secrets -n {ns}"),
        format!("get secrets/{OPERATOR}-tls -n {ns}"),
        format!("update secrets/{OPERATOR}-tls -n {ns}"),
        format!("create configmaps/trafficmap-pack-ca -n {ns}"),
        format!("patch configmaps/trafficmap-pack-ca -n {ns}"),
        format!("create leases.coordination.k8s.io -n {ns}"),
        format!("get leases.coordination.k8s.io/{OPERATOR} -n {ns}"),
        format!("update leases.coordination.k8s.io/{OPERATOR} -n {ns}"),
    ]);
    questions.into_iter().map(split).collect()
}

/// What the operator must not be able to do.
fn denied() -> Vec<Vec<String>> {
    let ns = NAMESPACE;
    let mut questions: Vec<String> = [
        "* *",
        "get secrets -n default",
        "list secrets -A",
        "watch secrets -A",
        "create secrets -n default",
        "create configmaps -n default",
        "create pods --subresource=exec -n default",
        "get pods --subresource=exec -n default",
        "create pods --subresource=portforward -n default",
        "create pods -n default",
        "delete pods -n default",
        "delete deployments.apps -A",
        "delete statefulsets.apps -A",
        "delete daemonsets.apps -A",
        "delete replicasets.apps -A",
        "delete jobs.batch -A",
        "delete cronjobs.batch -A",
        "patch deployments.apps -A",
        "update deployments.apps --subresource=scale -A",
        "delete observedtraffics.trafficmap.io",
        "delete clientintents.k8s.otterize.com -A",
        "delete namespaces",
        "impersonate serviceaccounts -A",
        "create serviceaccounts --subresource=token -A",
        "escalate clusterroles.rbac.authorization.k8s.io",
        "bind clusterroles.rbac.authorization.k8s.io",
        "create clusterrolebindings.rbac.authorization.k8s.io",
        "update leases.coordination.k8s.io/kube-controller-manager -n kube-system",
        "create leases.coordination.k8s.io -n kube-system",
    ]
    .map(String::from)
    .into();
    questions.extend([
        format!("list secrets -n {ns}"),
        format!("get secrets/someone-elses -n {ns}"),
        format!("delete secrets/{OPERATOR}-tls -n {ns}"),
        format!("create configmaps -n {ns}"),
        format!("get configmaps/someone-elses -n {ns}"),
        format!("patch configmaps/someone-elses -n {ns}"),
        format!("update leases.coordination.k8s.io/someone-elses -n {ns}"),
        format!("list leases.coordination.k8s.io -n {ns}"),
    ]);
    questions.into_iter().map(split).collect()
}

fn split(question: String) -> Vec<String> {
    question.split(' ').map(str::to_string).collect()
}

fn ask(who: &str, question: &[String]) -> bool {
    let question: Vec<&str> = question.iter().map(String::as_str).collect();
    can(who, &question)
}

/// Every rule `kubectl auth can-i --list` shows for `who` in each of a few namespaces (its
/// own, `default`, `kube-system`), resource and non-resource alike.
fn rules(who: &str) -> BTreeSet<String> {
    let as_user = account(who);
    let mut rules = BTreeSet::new();
    for namespace in [NAMESPACE, "default", "kube-system"] {
        let out = kubectl(
            &["auth", "can-i", "--list", "-n", namespace, "--as", &as_user],
            None,
        )
        .expect("kubectl runs")
        .ok("can-i --list")
        .expect("can-i --list answers");
        rules.extend(out.lines().skip(1).map(|line| {
            let row = line.split_whitespace().collect::<Vec<_>>().join(" ");
            format!("{namespace}: {row}")
        }));
    }
    rules
}

/// Runs the real operator with the Deployment's own arguments, as its ServiceAccount (a token of
/// the installed account), until it is ready: it has then taken the Lease, generated and stored
/// its certificate, published the CA and started every watch, all with the chart's RBAC.
async fn the_operator_starts_with_its_own_account(sets: &[&str]) {
    let objects = render(RELEASE, NAMESPACE, sets);
    let label = "pack-install";
    let mut args: Vec<String> = container_args(object(&objects, "Deployment", OPERATOR))
        .into_iter()
        .filter(|a| !a.starts_with("--ingest-addr=") && !a.starts_with("--admin-addr="))
        .collect();
    // What the Deployment gives it through the downward API.
    args.extend([
        format!("--namespace={NAMESPACE}"),
        format!("--pod-name={label}"),
    ]);
    let token = kubectl(
        &[
            "create",
            "token",
            OPERATOR,
            "-n",
            NAMESPACE,
            "--duration=10m",
        ],
        None,
    )
    .expect("kubectl runs")
    .ok("create token")
    .expect("a token for the operator's account");
    let view = kubectl(&["config", "view", "--raw", "--minify", "-o", "json"], None)
        .expect("kubectl runs")
        .ok("config view")
        .expect("admin kubeconfig");
    let mut kubeconfig: Value = serde_json::from_str(&view).expect("kubeconfig JSON");
    kubeconfig["users"][0]["user"] = serde_json::json!({"token": token.trim()});
    let dir = repo_root().join("target/e2e-pack");
    std::fs::create_dir_all(&dir).expect("scratch dir");
    let path = dir.join("operator.kubeconfig");
    std::fs::write(&path, kubeconfig.to_string()).expect("kubeconfig written");

    let log = repo_root().join(format!("target/e2e-logs/{label}-operator.log"));
    let _ = std::fs::remove_file(&log);
    let mut operator = OperatorProcess::spawn_with(label, &path, &args).expect("operator starts");
    operator
        .wait_ready(Duration::from_secs(60))
        .await
        .expect("the operator becomes ready with the chart's RBAC");
    let holder = kubectl(
        &[
            "get",
            &format!("lease/{OPERATOR}"),
            "-n",
            NAMESPACE,
            "-o",
            "jsonpath={.spec.holderIdentity}",
        ],
        None,
    )
    .expect("kubectl runs")
    .ok("get lease")
    .expect("the operator took its Lease");
    assert_eq!(holder, label);
    for object in [
        format!("secret/{OPERATOR}-tls"),
        "configmap/trafficmap-pack-ca".to_string(),
    ] {
        let out =
            kubectl(&["get", &object, "-n", NAMESPACE, "-o", "name"], None).expect("kubectl runs");
        assert!(out.success, "the operator did not write {object}");
    }
    // Let the watches run a moment: a missing permission shows up as a refused list or watch.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let text = std::fs::read_to_string(&log).expect("operator log");
    let refused = api_refusals(&text);
    assert!(
        refused.is_empty(),
        "the operator was refused something:\n{}\n\nlog tail:\n{}",
        refused.join("\n"),
        operator.log_tail()
    );
    operator.terminate();
}

#[tokio::test(flavor = "multi_thread")]
async fn helm_install_creates_the_objects_and_grants_the_operator_only_what_it_needs() {
    let client = admin_client().await.expect("control plane reachable");
    // The CRDs exist already (other tests use them); helm takes them over and keeps them.
    install_all(&client).await.expect("CRDs installed");
    let _cleanup = Release;
    let _ = helm(&["uninstall", RELEASE, "--namespace", NAMESPACE]);
    delete_namespace(NAMESPACE).await;

    let mut args = vec![
        "install",
        RELEASE,
        "chart",
        "--namespace",
        NAMESPACE,
        "--create-namespace",
        "--take-ownership",
    ];
    let sets = [
        "operator.replicas=2",
        "operator.leaderElection=true",
        "crds.clientIntents=true",
    ];
    for set in sets {
        args.extend(["--set", set]);
    }
    let out = helm(&args).expect("helm runs");
    assert!(
        out.success,
        "helm install failed: {}{}",
        out.stdout, out.stderr
    );
    assert!(
        out.stdout.contains("kubectl get observedtraffic"),
        "NOTES say what to run next: {}",
        out.stdout
    );

    for object in [
        format!("deployment/{OPERATOR}"),
        format!("daemonset/{SNIFFER}"),
        format!("service/{OPERATOR}"),
        format!("service/{SNIFFER}"),
        format!("serviceaccount/{OPERATOR}"),
        format!("serviceaccount/{SNIFFER}"),
        format!("role/{OPERATOR}"),
        format!("rolebinding/{OPERATOR}"),
        format!("clusterrole/{OPERATOR}"),
        format!("clusterrolebinding/{OPERATOR}"),
        "crd/observedtraffics.trafficmap.io".into(),
        "crd/clientintents.k8s.otterize.com".into(),
    ] {
        let out =
            kubectl(&["get", &object, "-n", NAMESPACE, "-o", "name"], None).expect("kubectl runs");
        assert!(out.success, "{object} not installed: {}", out.stderr);
    }
    let replicas = kubectl(
        &[
            "get",
            &format!("deployment/{OPERATOR}"),
            "-n",
            NAMESPACE,
            "-o",
            "jsonpath={.spec.replicas}",
        ],
        None,
    )
    .expect("kubectl runs")
    .ok("get deployment")
    .expect("deployment");
    assert_eq!(replicas, "2");

    let missing: Vec<String> = needed()
        .iter()
        .filter(|q| !ask(OPERATOR, q))
        .map(|q| q.join(" "))
        .collect();
    assert!(missing.is_empty(), "the operator may not: {missing:#?}");
    let excess: Vec<String> = denied()
        .iter()
        .filter(|q| ask(OPERATOR, q))
        .map(|q| q.join(" "))
        .collect();
    assert!(excess.is_empty(), "the operator may: {excess:#?}");
    the_operator_starts_with_its_own_account(&sets).await;

    // The ConfigMap's create is limited by name (see templates/rbac/operator-role.yaml): shown on
    // the real write path, a server-side apply as the operator, not only by can-i.
    let configmap = |name: &str| {
        format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n  namespace: {NAMESPACE}\ndata:\n  ca.crt: test\n"
        )
    };
    let as_operator = account(OPERATOR);
    let apply = |name: &str| {
        kubectl(
            &[
                "apply",
                "--server-side",
                "--field-manager=trafficmap",
                "--dry-run=server",
                "--as",
                &as_operator,
                "-f",
                "-",
            ],
            Some(&configmap(name)),
        )
        .expect("kubectl runs")
    };
    let own = apply("trafficmap-pack-ca");
    assert!(own.success, "{}", own.stderr);
    let other = apply("someone-elses");
    assert!(
        !other.success && other.stderr.contains("forbidden"),
        "{other:?}"
    );

    // The sniffer: nothing beyond what any authenticated account may do.
    kubectl(&["create", "serviceaccount", NOBODY, "-n", NAMESPACE], None)
        .expect("kubectl runs")
        .ok("create serviceaccount")
        .expect("baseline account");
    let baseline = rules(NOBODY);
    assert!(
        baseline
            .iter()
            .any(|r| r.contains("selfsubjectaccessreviews")),
        "can-i --list shows what every account may do: {baseline:#?}"
    );
    assert_eq!(rules(SNIFFER), baseline);
    assert_ne!(rules(OPERATOR), baseline, "the comparison can fail");
    for question in needed().iter().chain(&denied()) {
        assert!(!ask(SNIFFER, question), "the sniffer may {question:?}");
    }

    let out = helm(&["uninstall", RELEASE, "--namespace", NAMESPACE]).expect("helm runs");
    assert!(out.success, "helm uninstall failed: {}", out.stderr);
    gone(&format!("clusterrole/{OPERATOR}")).await;
    gone(&format!("clusterrolebinding/{OPERATOR}")).await;
    // crds.keep: uninstalling does not delete the CRDs (and every ObservedTraffic with them).
    let kept = kubectl(
        &["get", "crd/observedtraffics.trafficmap.io", "-o", "name"],
        None,
    )
    .expect("kubectl runs");
    assert!(kept.success, "the ObservedTraffic CRD was deleted");
    install_all(&client)
        .await
        .expect("CRDs as the harness left them");
    delete_namespace(NAMESPACE).await;
}
