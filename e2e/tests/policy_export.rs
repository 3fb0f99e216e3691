//! `kubectl trafficmap export --format networkpolicy` against the real control plane: the
//! policies select the workloads' pods by their controllers' selectors, reach a Service's
//! backends on its target port, let clients query cluster DNS, and the API server accepts them;
//! `diff --networkpolicy` finds no observed call they block, and finds the one a deny-all does.
//!
//! Needs the control plane (`make e2e-test` starts it) and the built binaries.

use std::path::Path;
use std::process::Command;

use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::Api;
use serde_json::{Value, json};
use trafficmap_e2e::chaos::harness::{Setup, connection, report};
use trafficmap_e2e::cluster::{kubeconfig_path, repo_root};
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
    let setup = Setup::new("netpol", &[]).await.expect("setup");
    let ns = setup.ns.name.clone();
    let pair = setup
        .client_and_server("10.244.63", true)
        .await
        .expect("pair");
    let body = report(vec![connection(pair.client, pair.cluster_ip, 80)]).expect("report");
    assert_eq!(
        setup.post(Some(&setup.token), body).await.expect("post"),
        202
    );
    setup
        .wait_for_targets("client", &["server"])
        .await
        .expect("mapped");

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
