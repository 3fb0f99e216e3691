//! trafficmap on the simulated node: the real operator and sniffer as host processes, with the
//! credentials the chart gives them (their ServiceAccounts' TokenRequest tokens, the CA the
//! operator publishes).

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use kube::Client;
use kube::config::Kubeconfig;

use super::runner::{OPERATOR_ACCOUNT, REPORT_AUDIENCE, SNIFFER_ACCOUNT, TRAFFICMAP_NAMESPACE};
use crate::cluster::{kubeconfig_path, wait_for};
use crate::operator::{bin_path, free_port, published_ca, request_token};
use crate::sim::addons::ManagedProcess;
use crate::sim::{self, NODE_NAME};
use crate::{Error, Result};

/// A token of `account` in the trafficmap namespace (`audience` None: the API server's).
async fn account_token(client: &Client, account: &str, audience: Option<&str>) -> Result<String> {
    request_token(client, TRAFFICMAP_NAMESPACE, account, audience).await
}

/// A kubeconfig for the API server of the admin kubeconfig, authenticating with `token`.
fn token_kubeconfig(token: &str) -> Result<String> {
    let admin = kubeconfig_path();
    let config = Kubeconfig::read_from(&admin).map_err(|e| Error::Kubeconfig {
        path: admin.display().to_string(),
        source: Box::new(e),
    })?;
    let cluster = config
        .clusters
        .first()
        .and_then(|c| c.cluster.clone())
        .ok_or_else(|| Error::Exited(format!("{} names no cluster", admin.display())))?;
    let mut cluster_json = serde_json::json!({"server": cluster.server});
    if let Some(data) = cluster.certificate_authority_data {
        cluster_json["certificate-authority-data"] = data.into();
    }
    if let Some(file) = cluster.certificate_authority {
        cluster_json["certificate-authority"] = file.into();
    }
    let kubeconfig = serde_json::json!({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "local", "cluster": cluster_json}],
        "users": [{"name": OPERATOR_ACCOUNT, "user": {"token": token}}],
        "contexts": [{"name": OPERATOR_ACCOUNT, "context": {"cluster": "local", "user": OPERATOR_ACCOUNT, "namespace": TRAFFICMAP_NAMESPACE}}],
        "current-context": OPERATOR_ACCOUNT
    });
    serde_yaml_ng::to_string(&kubeconfig).map_err(|e| Error::Manifest {
        path: "operator kubeconfig".into(),
        source: Box::new(e),
    })
}

fn write_secret_file(path: &Path, content: &str) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let _ = std::fs::remove_file(path);
    std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| f.write_all(content.as_bytes()))
        .map_err(|e| Error::Http {
            what: format!("write {}", path.display()),
            source: Box::new(e),
        })
}

/// Starts the operator as its ServiceAccount and waits until it is ready; returns it and its
/// ingest base URL.
pub async fn start_operator(client: &Client, run_dir: &Path) -> Result<(ManagedProcess, String)> {
    let token = account_token(client, OPERATOR_ACCOUNT, None).await?;
    let kubeconfig = run_dir.join("operator.kubeconfig");
    write_secret_file(&kubeconfig, &token_kubeconfig(&token)?)?;
    let (ingest, admin) = (free_port()?, free_port()?);
    let mut command = Command::new(bin_path("trafficmap-operator")?);
    command
        .env("KUBECONFIG", &kubeconfig)
        .env(
            "RUST_LOG",
            std::env::var("TRAFFICMAP_OPERATOR_LOG")
                .unwrap_or_else(|_| "info,trafficmap_operator=debug".into()),
        )
        .args([
            "--ingest-addr",
            &format!("127.0.0.1:{ingest}"),
            "--admin-addr",
            &format!("127.0.0.1:{admin}"),
            "--namespace",
            TRAFFICMAP_NAMESPACE,
            "--pod-name",
            "trafficmap-operator-scenario",
            "--sniffer-service-account",
            &format!("{TRAFFICMAP_NAMESPACE}/{SNIFFER_ACCOUNT}"),
            "--tls-san",
            "127.0.0.1",
            "--pod-cidr",
            sim::CLUSTER_POD_CIDR,
            "--service-cidr",
            sim::SERVICE_CIDR,
            "--cluster-dns-service",
            "kube-system/kube-dns",
            "--cluster-domain",
            sim::CLUSTER_DOMAIN,
            "--flush-interval",
            "1s",
            // The runner compares the drafts too; users opt in (chart value emitClientIntents).
            "--emit-client-intents=true",
        ]);
    let mut process = ManagedProcess::spawn(
        "trafficmap-operator",
        command,
        &run_dir.join("operator.log"),
    )?;
    let ready = format!("http://127.0.0.1:{admin}/readyz");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        process.check_alive()?;
        if matches!(crate::http::get(&ready).await, Ok((200, _))) {
            break;
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(Error::Exited(format!(
                "operator not ready\n{}",
                process.log_tail(30)
            )));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Ok((process, format!("https://127.0.0.1:{ingest}")))
}

/// Starts the sniffer for the node with a `trafficmap`-audience token and the published CA.
pub async fn start_sniffer(
    client: &Client,
    run_dir: &Path,
    operator_url: &str,
) -> Result<ManagedProcess> {
    let ca = wait_for(
        "the operator's CA ConfigMap",
        Duration::from_secs(30),
        || async { Ok(published_ca(client, TRAFFICMAP_NAMESPACE).await.ok()) },
    )
    .await?;
    let token = account_token(client, SNIFFER_ACCOUNT, Some(REPORT_AUDIENCE)).await?;
    let (ca_file, token_file) = (
        run_dir.join("sniffer-ca.crt"),
        run_dir.join("sniffer-token"),
    );
    write_secret_file(&ca_file, &ca)?;
    write_secret_file(&token_file, &token)?;
    let metrics = free_port()?;
    let mut command = Command::new(bin_path("trafficmap-sniffer")?);
    command
        .env(
            "RUST_LOG",
            std::env::var("TRAFFICMAP_SNIFFER_LOG").unwrap_or_else(|_| "info".into()),
        )
        .arg("--operator-url")
        .arg(operator_url)
        .arg("--ca-file")
        .arg(&ca_file)
        .arg("--token-file")
        .arg(&token_file)
        .args([
            "--node-name",
            NODE_NAME,
            "--metrics-addr",
            &format!("127.0.0.1:{metrics}"),
        ]);
    let mut process =
        ManagedProcess::spawn("trafficmap-sniffer", command, &run_dir.join("sniffer.log"))?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    process.check_alive()?;
    Ok(process)
}
