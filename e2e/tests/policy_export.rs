//! `kubectl trafficmap export --format networkpolicy` and `--format cilium` against the real
//! control plane: the policies select the workloads' pods by their controllers' selectors, reach
//! a Service's backends on its target port, let clients query cluster DNS, and the API server
//! accepts them (CiliumNetworkPolicy validated against Cilium's published CRD, kept in
//! `third_party/cilium/`); `diff --networkpolicy` finds no observed call they block, and finds
//! the one a deny-all does.
//!
//! Needs the control plane (`make e2e-test` starts it) and the built binaries.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{
    ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams, ValidationDirective,
};
use kube::{Api, Client};
use serde::Deserialize;
use serde_json::{Value, json};
use trafficmap_e2e::chaos::harness::{Setup, connection, dns, ip, reap_case, report};
use trafficmap_e2e::cluster::{kubeconfig_path, repo_root, wait_for};
use trafficmap_e2e::crds::install;
use trafficmap_e2e::operator::bin_path;

fn run(program: &Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(program)
        .args(args)
        .env("KUBECONFIG", kubeconfig_path())
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", program.display()));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn exported_network_policies_select_the_workloads_and_the_api_server_accepts_them() {
    reap_case("netpol").await.expect("reap");
    let setup = Setup::new("netpol", &[]).await.expect("setup");
    let ns = setup.ns.name.clone();
    setup
        .mapped_client_and_server("10.244.63")
        .await
        .expect("client -> server mapped");

    let cli = bin_path("kubectl-trafficmap").expect("built CLI");
    let dir = repo_root().join("target/e2e-tmp").join(&ns);
    let dir_arg = dir.to_str().expect("utf-8 path");
    let (ok, _, stderr) = run(
        &cli,
        &[
            "export",
            "-n",
            &ns,
            "--format",
            "networkpolicy",
            "--output-type",
            "dir",
            "-o",
            dir_arg,
        ],
    );
    assert!(ok, "{stderr}");
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .expect("written")
        .filter_map(|e| Some(e.ok()?.file_name().to_str()?.to_string()))
        .collect();
    files.sort();
    assert_eq!(
        files,
        [
            format!("client.{ns}.networkpolicy.yaml"),
            format!("server.{ns}.networkpolicy.yaml")
        ]
    );

    let (ok, out, stderr) = run(Path::new("kubectl"), &["apply", "-f", dir_arg]);
    assert!(ok, "the API server refused the policies:\n{out}\n{stderr}");
    let api = Api::<NetworkPolicy>::namespaced(setup.client.clone(), &ns);
    let egress = serde_json::to_value(api.get("trafficmap-client-egress").await.expect("egress"))
        .expect("json");
    assert_eq!(
        egress["spec"]["podSelector"],
        json!({"matchLabels": {"app": "client"}})
    );
    let rules = egress["spec"]["egress"].as_array().expect("rules");
    assert_eq!(
        rules[0]["ports"],
        json!([{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]),
        "cluster DNS first"
    );
    let to_server = &rules[1];
    assert_eq!(
        to_server["to"],
        json!([{
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ns}},
            "podSelector": {"matchLabels": {"app": "server"}},
        }])
    );
    let ports: Vec<Value> = to_server["ports"].as_array().expect("ports").clone();
    assert_eq!(
        ports,
        [
            json!({"port": 80, "protocol": "TCP"}),
            json!({"port": 8080, "protocol": "TCP"})
        ],
        "the Service port and the pod port it leads to"
    );
    let ingress =
        serde_json::to_value(api.get("trafficmap-server-ingress").await.expect("ingress"))
            .expect("json");
    assert_eq!(
        ingress["spec"]["podSelector"],
        json!({"matchLabels": {"app": "server"}})
    );
    assert_eq!(
        ingress["spec"]["ingress"][0]["from"][0]["podSelector"],
        json!({"matchLabels": {"app": "client"}})
    );

    // diff --networkpolicy: what was exported lets every observed call through, from the
    // cluster and from the files; without the server's ingress rule, a deny-all blocks it.
    let (ok, out, stderr) = run(&cli, &["diff", "--networkpolicy", "-n", &ns]);
    assert!(ok, "{out}\n{stderr}");
    assert!(
        out.contains("NetworkPolicy lets every one of 1 observed call(s) through."),
        "{out}"
    );
    let (ok, out, _) = run(&cli, &["diff", "--networkpolicy", "-n", &ns, "-f", dir_arg]);
    assert!(ok, "{out}");
    api.delete("trafficmap-server-ingress", &Default::default())
        .await
        .expect("delete the ingress policy");
    let deny: NetworkPolicy = serde_json::from_value(json!({
        "metadata": {"name": "deny-all", "namespace": ns},
        "spec": {"podSelector": {}, "policyTypes": ["Ingress"]},
    }))
    .expect("policy");
    api.create(&Default::default(), &deny)
        .await
        .expect("deny-all");
    let (ok, out, _) = run(&cli, &["diff", "--networkpolicy", "-n", &ns]);
    assert!(!ok, "a blocked call exits non-zero:\n{out}");
    assert!(
        out.contains(&format!(
            "  - server.{ns} on 8080/TCP (ingress: {ns}/deny-all)\n"
        )),
        "{out}"
    );
    assert!(
        out.ends_with("1 of 1 observed call(s) would be blocked by NetworkPolicy.\n"),
        "{out}"
    );
    setup.cleanup().await;
}

/// Cilium's CiliumNetworkPolicy CRD, kept verbatim (origin and licence beside it).
fn cilium_crd() -> PathBuf {
    repo_root().join("third_party/cilium/ciliumnetworkpolicies.yaml")
}

/// The documents of every file in `dir`, sorted by file name.
fn documents(dir: &Path) -> Vec<Value> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("written")
        .filter_map(|e| Some(e.ok()?.path()))
        .collect();
    paths.sort();
    let mut docs = Vec::new();
    for path in paths {
        let text = std::fs::read_to_string(&path).expect("readable");
        for doc in serde_yaml_ng::Deserializer::from_str(&text) {
            docs.push(Value::deserialize(doc).expect("YAML"));
        }
    }
    docs
}

/// Server-side applies `object` with dryRun=All and fieldValidation=Strict: the API server
/// checks it against the CRD's openAPIV3Schema and refuses unknown fields; nothing is stored.
async fn dry_run_apply(client: &Client, object: &Value) -> Result<Value, kube::Error> {
    let gvk = GroupVersionKind::gvk("cilium.io", "v2", "CiliumNetworkPolicy");
    let resource = ApiResource::from_gvk_with_plural(&gvk, "ciliumnetworkpolicies");
    let namespace = object["metadata"]["namespace"].as_str().expect("namespace");
    let name = object["metadata"]["name"].as_str().expect("name");
    let api = Api::<DynamicObject>::namespaced_with(client.clone(), namespace, &resource);
    let params = PatchParams {
        dry_run: true,
        force: false,
        field_manager: Some("trafficmap-e2e".into()),
        field_validation: Some(ValidationDirective::Strict),
    };
    let applied = api.patch(name, &params, &Patch::Apply(object)).await?;
    Ok(serde_json::to_value(applied).expect("json"))
}

#[tokio::test]
async fn exported_cilium_policies_cover_each_call_and_pass_ciliums_published_schema() {
    reap_case("cilium").await.expect("reap");
    let setup = Setup::new("cilium", &[]).await.expect("setup");
    install(&setup.client, &[cilium_crd()])
        .await
        .expect("Cilium's CRD");
    let ns = setup.ns.name.clone();
    let pair = setup
        .client_and_server("10.244.64", true)
        .await
        .expect("pair");
    let api_server = Api::<Service>::namespaced(setup.client.clone(), "default")
        .get("kubernetes")
        .await
        .expect("the API server's Service")
        .spec
        .and_then(|s| s.cluster_ip)
        .expect("a ClusterIP");
    let api_server = ip(&api_server).expect("ip");
    let stripe = ip("192.0.2.64").expect("ip");
    let body = report(vec![
        connection(pair.client, pair.cluster_ip, 80),
        connection(pair.client, api_server, 443),
        dns(pair.client, "api.stripe.com", stripe),
        connection(pair.client, stripe, 443),
    ])
    .expect("report");
    assert_eq!(
        setup.post(Some(&setup.token), body).await.expect("post"),
        202
    );
    setup
        .wait_for_targets("client", &["kubernetes", "server"])
        .await
        .expect("mapped");
    wait_for("the internet target", Duration::from_secs(45), || async {
        let observed = setup.observed("client").await?;
        let named = observed
            .and_then(|o| o.status)
            .is_some_and(|s| s.internet_targets.iter().any(|t| t.dns_name.is_some()));
        Ok(named.then_some(()))
    })
    .await
    .expect("api.stripe.com mapped");

    let cli = bin_path("kubectl-trafficmap").expect("built CLI");
    let dir = repo_root().join("target/e2e-tmp").join(&ns);
    let dir_arg = dir.to_str().expect("utf-8 path");
    let (ok, _, stderr) = run(
        &cli,
        &[
            "export",
            "-n",
            &ns,
            "--format",
            "cilium",
            "--output-type",
            "dir",
            "-o",
            dir_arg,
        ],
    );
    assert!(ok, "{stderr}");
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .expect("written")
        .filter_map(|e| Some(e.ok()?.file_name().to_str()?.to_string()))
        .collect();
    files.sort();
    assert_eq!(
        files,
        [
            format!("client.{ns}.cilium.yaml"),
            format!("server.{ns}.cilium.yaml")
        ]
    );
    let text = std::fs::read_to_string(dir.join(&files[0])).expect("readable");
    assert!(
        text.starts_with("# Drafted by trafficmap from the calls observed since "),
        "{text}"
    );

    let docs = documents(&dir);
    let names: Vec<&str> = docs
        .iter()
        .map(|d| d["metadata"]["name"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(
        names,
        ["trafficmap-client-egress", "trafficmap-server-ingress"]
    );
    for doc in &docs {
        assert_eq!(
            doc["metadata"].as_object().map(|m| m.len()),
            Some(2),
            "name and namespace only: {doc}"
        );
        let applied = dry_run_apply(&setup.client, doc)
            .await
            .unwrap_or_else(|e| panic!("the API server refused {}: {e}", doc["metadata"]["name"]));
        assert_eq!(applied["spec"], doc["spec"], "nothing pruned");
    }

    let in_ns =
        |app: &str| json!({"matchLabels": {"app": app, "k8s:io.kubernetes.pod.namespace": ns}});
    let tcp = |ports: &[&str]| json!([{"ports": ports.iter().map(|p| json!({"port": p, "protocol": "TCP"})).collect::<Vec<_>>()}]);
    let egress = &docs[0]["spec"]["egress"];
    assert_eq!(egress.as_array().map(Vec::len), Some(5), "{egress}");
    assert_eq!(
        egress[0]["toPorts"][0]["rules"],
        json!({"dns": [{"matchPattern": "*"}]})
    );
    // The cluster DNS Service exists only once a node (simulated or real) ran on this control
    // plane; without it the policy allows 53 to any peer.
    let dns_selector = Api::<Service>::namespaced(setup.client.clone(), "kube-system")
        .get_opt("kube-dns")
        .await
        .expect("read the cluster DNS Service")
        .and_then(|s| s.spec)
        .and_then(|s| s.selector)
        .filter(|s| !s.is_empty());
    let dns_pods = dns_selector.map(|mut labels| {
        labels.insert(
            "k8s:io.kubernetes.pod.namespace".into(),
            "kube-system".into(),
        );
        json!([{ "matchLabels": labels }])
    });
    assert_eq!(
        egress[0]["toEndpoints"],
        dns_pods.unwrap_or(Value::Null),
        "the cluster DNS pods by the Service's selector, or any peer on 53 when it has none"
    );
    assert_eq!(
        egress[1],
        json!({"toEndpoints": [in_ns("server")], "toPorts": tcp(&["80", "8080"])}),
        "the Service port and the pod port it leads to"
    );
    assert_eq!(egress[2]["toEntities"], json!(["kube-apiserver"]));
    assert_eq!(
        egress[3],
        json!({"toFQDNs": [{"matchName": "api.stripe.com"}], "toPorts": tcp(&["443"])})
    );
    assert_eq!(
        egress[4],
        json!({"toCIDR": ["192.0.2.64/32"], "toPorts": tcp(&["443"])})
    );
    assert_eq!(
        docs[1]["spec"]["ingress"],
        json!([{"fromEndpoints": [in_ns("client")], "toPorts": tcp(&["80", "8080"])}])
    );

    // The check can fail: a field Cilium does not have, and a value its schema does not allow.
    let mut unknown = docs[0].clone();
    let rule = unknown["spec"]["egress"][3]
        .as_object_mut()
        .expect("the toFQDNs rule");
    let names = rule.remove("toFQDNs").expect("toFQDNs");
    rule.insert("toFQDN".into(), names);
    let refused = dry_run_apply(&setup.client, &unknown).await;
    assert!(
        matches!(&refused, Err(kube::Error::Api(s)) if s.message.contains(".spec.egress[3].toFQDN: field not declared in schema")),
        "an unknown field is refused: {refused:?}"
    );
    let mut invalid = docs[0].clone();
    invalid["spec"]["egress"][2]["toEntities"] = json!(["apiserver"]);
    let refused = dry_run_apply(&setup.client, &invalid).await;
    assert!(
        matches!(&refused, Err(kube::Error::Api(s)) if s.code == 422 && s.message.contains("Unsupported value: \"apiserver\"")),
        "an entity Cilium does not know is refused: {refused:?}"
    );
    setup.cleanup().await;
}
