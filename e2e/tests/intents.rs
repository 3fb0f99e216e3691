//! Whose a ClientIntents is, against the real control plane, operator, kubectl and CLI: an
//! export applied back over the draft (server-side and client-side apply, as GitOps tools do)
//! makes it the user's at once: our owner reference and label go, its spec is never written
//! again, the calls it leaves out are recorded, and `reset` deletes drafts only. Every
//! ClientIntents naming internet domains gets `status.resolvedIPs` from the answers observed.
//!
//! Needs the control plane (`make e2e-test` starts it) and the built binaries. One at a time.

use std::net::IpAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use serde_json::json;
use trafficmap_api::ClientIntents;
use trafficmap_api::intents::{ClientIntentsSpec, InternetTarget, Target, Workload};
use trafficmap_e2e::chaos::harness::{Setup, connection, dns, ip, report};
use trafficmap_e2e::cluster::{kubeconfig_path, repo_root, wait_for};
use trafficmap_e2e::kube_context;
use trafficmap_e2e::operator::bin_path;

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// How long the operator may take to notice a ClientIntents changed hands.
const RELEASE_WAIT: Duration = Duration::from_secs(15);
const WAIT: Duration = Duration::from_secs(45);

/// How a reviewed file is applied over the draft.
#[derive(Clone, Copy, Debug)]
enum Apply {
    /// `kubectl apply --server-side --field-manager=gitops --force-conflicts` (Flux, Argo CD
    /// with server-side apply).
    ServerSide,
    /// `kubectl apply` (Argo CD's default).
    ClientSide,
}

fn run(program: &Path, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .env("KUBECONFIG", kubeconfig_path())
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", program.display()));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{} {args:?} failed:\n{stdout}\n{}",
        program.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn cli(args: &[&str]) -> String {
    run(&bin_path("kubectl-trafficmap").expect("built CLI"), args)
}

fn kubectl(args: &[&str]) -> String {
    run(Path::new("kubectl"), args)
}

/// A call from `client` to `server` (which a DNS answer of `name` gave, when there is one).
async fn call(setup: &Setup, client: IpAddr, server: IpAddr, port: u16, name: Option<&str>) {
    let mut observations = vec![connection(client, server, port)];
    if let Some(name) = name {
        observations.push(dns(client, name, server));
    }
    let body = report(observations).expect("report");
    assert_eq!(
        setup.post(Some(&setup.token), body).await.expect("post"),
        202
    );
}

async fn wait_for_intents(
    api: &Api<ClientIntents>,
    name: &str,
    what: &str,
    timeout: Duration,
    pred: impl Fn(&ClientIntents) -> bool,
) -> ClientIntents {
    wait_for(what, timeout, || async {
        let ci = api
            .get_opt(name)
            .await
            .map_err(kube_context(format!("get clientintents {name}")))?;
        Ok(ci.filter(|ci| pred(ci)))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"))
}

fn has_our_marks(ci: &ClientIntents) -> bool {
    ci.labels().contains_key("app.kubernetes.io/managed-by")
        || ci
            .owner_references()
            .iter()
            .any(|r| r.kind == "ObservedTraffic")
}

fn target_names(ci: &ClientIntents) -> Vec<String> {
    ci.spec
        .targets
        .iter()
        .filter_map(|t| t.kubernetes.as_ref().map(|k| k.name.clone()))
        .collect()
}

async fn reviewed_copy_becomes_the_users(apply: Apply) {
    let _serial = SERIAL.lock().await;
    let case = match apply {
        Apply::ServerSide => "ssa",
        Apply::ClientSide => "csa",
    };
    let setup = Setup::new(&format!("own-{case}"), &[])
        .await
        .expect("setup");
    let ns = setup.ns.name.clone();
    let pair = setup
        .client_and_server("10.244.61", true)
        .await
        .expect("pair");
    let other_ip = ip("10.244.61.4").expect("ip");
    setup.workload("other", other_ip).await.expect("other");
    let other = setup.service("other", other_ip).await.expect("service");
    let web = ip("10.244.61.5").expect("ip");
    setup.workload("web", web).await.expect("web");
    call(&setup, pair.client, pair.cluster_ip, 80, None).await;
    call(&setup, pair.client, other, 80, None).await;
    call(&setup, web, pair.cluster_ip, 80, None).await;

    let intents = Api::<ClientIntents>::namespaced(setup.client.clone(), &ns);
    let draft = wait_for_intents(&intents, "client", "the draft with two calls", WAIT, |ci| {
        ci.spec.targets.len() == 2
    })
    .await;
    assert!(
        has_our_marks(&draft),
        "a draft carries our marks: {draft:?}"
    );
    wait_for_intents(&intents, "web", "web's draft", WAIT, |_| true).await;

    // Export, review (drop the call to `other`), apply back over the draft.
    let dir = repo_root().join("target/e2e-tmp").join(&ns);
    std::fs::create_dir_all(&dir).expect("scratch directory");
    let file = dir.join("client.yaml");
    let exported = cli(&["export", "-n", &ns]);
    assert!(!exported.contains("managed-by"), "{exported}");
    assert!(!exported.contains("ownerReferences"), "{exported}");
    assert!(exported.contains("# Drafted by trafficmap from the calls observed since "));
    let mut doc: serde_json::Value = serde_yaml_ng::Deserializer::from_str(&exported)
        .map(|d| serde::Deserialize::deserialize(d).expect("a YAML document"))
        .find(|d: &serde_json::Value| d["metadata"]["name"] == "client")
        .expect("client's document");
    let reviewed_targets: Vec<serde_json::Value> = doc["spec"]["targets"]
        .as_array()
        .expect("targets")
        .iter()
        .filter(|t| t["kubernetes"]["name"] != "other")
        .cloned()
        .collect();
    assert_eq!(reviewed_targets.len(), 1);
    doc["spec"]["targets"] = json!(reviewed_targets);
    std::fs::write(&file, serde_yaml_ng::to_string(&doc).expect("yaml")).expect("write");
    let file = file.to_str().expect("utf-8 path");
    match apply {
        Apply::ServerSide => kubectl(&[
            "apply",
            "--server-side",
            "--field-manager=gitops",
            "--force-conflicts",
            "-f",
            file,
        ]),
        Apply::ClientSide => kubectl(&["apply", "-f", file]),
    };

    let released = wait_for_intents(
        &intents,
        "client",
        "the reviewed copy to lose our marks",
        RELEASE_WAIT,
        |ci| !has_our_marks(ci),
    )
    .await;
    assert_eq!(released.uid(), draft.uid(), "the same object");
    assert_eq!(target_names(&released), ["server"]);

    // The calls it leaves out are recorded; new calls never reach its spec.
    let status = wait_for("the uncovered call in ObservedTraffic", WAIT, || async {
        let ot = setup.observed("client").await?;
        Ok(ot
            .and_then(|o| o.status)
            .filter(|s| !s.uncovered_targets.is_empty()))
    })
    .await
    .expect("uncovered calls recorded");
    assert_eq!(status.uncovered_targets, [format!("other.{ns}")]);
    assert_eq!(status.conditions[0].reason, "ExternallyManaged");
    let third_ip = ip("10.244.61.6").expect("ip");
    setup.workload("third", third_ip).await.expect("third");
    let third = setup.service("third", third_ip).await.expect("service");
    call(&setup, pair.client, third, 80, None).await;
    wait_for("the new call in ObservedTraffic", WAIT, || async {
        let ot = setup.observed("client").await?;
        Ok(ot
            .and_then(|o| o.status)
            .filter(|s| s.uncovered_targets.len() == 2))
    })
    .await
    .expect("the new call is uncovered");
    let after = intents.get("client").await.expect("still there");
    assert_eq!(
        after.spec, released.spec,
        "the user's spec is never written"
    );
    assert!(!has_our_marks(&after));

    // reset deletes the draft and keeps the user's.
    let out = cli(&["reset", "--yes", "-n", &ns]);
    assert!(
        out.contains(&format!("clientintents/web in {ns} deleted (draft)")),
        "{out}"
    );
    assert!(
        out.contains(&format!("clientintents/client in {ns} is kept")),
        "{out}"
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    let kept = intents.get_opt("client").await.expect("get");
    assert_eq!(kept.map(|c| c.spec), Some(released.spec));
    assert!(intents.get_opt("web").await.expect("get").is_none());
    setup.cleanup().await;
}

#[tokio::test]
async fn a_reviewed_copy_applied_server_side_over_the_draft_is_the_users() {
    reviewed_copy_becomes_the_users(Apply::ServerSide).await;
}

#[tokio::test]
async fn a_reviewed_copy_applied_client_side_over_the_draft_is_the_users() {
    reviewed_copy_becomes_the_users(Apply::ClientSide).await;
}

#[tokio::test]
async fn resolved_ips_are_published_for_drafts_and_user_intents_and_only_grow() {
    let _serial = SERIAL.lock().await;
    let setup = Setup::new("resolved", &[]).await.expect("setup");
    let ns = setup.ns.name.clone();
    let client = ip("10.244.62.2").expect("ip");
    let web = ip("10.244.62.3").expect("ip");
    setup.workload("client", client).await.expect("client");
    setup.workload("web", web).await.expect("web");
    let intents = Api::<ClientIntents>::namespaced(setup.client.clone(), &ns);

    // A user's ClientIntents for web, with a wildcard domain and an entry another writer made.
    let mut mine = ClientIntents::new(
        "web",
        ClientIntentsSpec {
            workload: Workload {
                name: "web".into(),
                kind: Some("Deployment".into()),
            },
            targets: vec![Target {
                internet: Some(InternetTarget {
                    domains: vec!["*.cdn.example.com".into()],
                    ports: vec![443],
                    ..InternetTarget::default()
                }),
                ..Target::default()
            }],
        },
    );
    mine.metadata.namespace = Some(ns.clone());
    intents
        .create(&PostParams::default(), &mine)
        .await
        .expect("user's intents");
    let theirs = json!({
        "apiVersion": "k8s.otterize.com/v2beta1", "kind": "ClientIntents",
        "metadata": {"name": "web", "namespace": ns},
        "status": {"resolvedIPs": [{"dns": "*.cdn.example.com", "ips": ["198.51.100.77"]}]},
    });
    intents
        .patch_status(
            "web",
            &PatchParams::apply("network-mapper"),
            &Patch::Apply(&theirs),
        )
        .await
        .expect("another writer's entry");

    let stripe = ip("192.0.2.10").expect("ip");
    let edge = ip("192.0.2.20").expect("ip");
    call(&setup, client, stripe, 443, Some("api.stripe.example")).await;
    call(&setup, web, edge, 443, Some("eu.cdn.example.com")).await;

    let resolved = |ci: &ClientIntents| {
        ci.status
            .as_ref()
            .and_then(|s| s.resolved_ips.clone())
            .unwrap_or_default()
            .into_iter()
            .map(|r| (r.dns, r.ips))
            .collect::<Vec<_>>()
    };
    let draft = wait_for_intents(&intents, "client", "resolvedIPs on the draft", WAIT, |ci| {
        !resolved(ci).is_empty()
    })
    .await;
    assert_eq!(
        resolved(&draft),
        [(
            "api.stripe.example".to_string(),
            vec!["192.0.2.10".to_string()]
        )]
    );
    let users = wait_for_intents(&intents, "web", "resolvedIPs on the user's", WAIT, |ci| {
        resolved(ci).first().is_some_and(|(_, ips)| ips.len() == 2)
    })
    .await;
    assert_eq!(
        resolved(&users),
        [(
            "*.cdn.example.com".to_string(),
            vec!["198.51.100.77".to_string(), "192.0.2.20".to_string()]
        )]
    );
    assert_eq!(users.spec, mine.spec, "only the status is written");
    let managers: Vec<String> = users
        .managed_fields()
        .iter()
        .filter_map(|m| m.manager.clone())
        .collect();
    assert!(
        managers.contains(&"trafficmap-resolved-ips".to_string()),
        "{managers:?}"
    );

    // A new answer adds; the old one stays though no longer observed.
    let edge2 = ip("192.0.2.21").expect("ip");
    call(&setup, web, edge2, 443, Some("us.cdn.example.com")).await;
    let grown = wait_for_intents(&intents, "web", "the new answer", WAIT, |ci| {
        resolved(ci).first().is_some_and(|(_, ips)| ips.len() == 3)
    })
    .await;
    assert_eq!(
        resolved(&grown)[0].1,
        ["198.51.100.77", "192.0.2.20", "192.0.2.21"]
    );
    setup.cleanup().await;
}
