//! The API server is killed and started again under a running operator (same port, same
//! etcd data): the operator's watches resume, it learns of objects created after the restart,
//! and the map catches up.

use std::process::Command;
use std::time::Duration;

use super::harness::{Setup, connection, ip, report};
use super::{Outcome, ensure, step};
use crate::cluster::repo_root;

/// Runs `controlplane.sh restart-apiserver` (kills the kube-apiserver, starts it again, waits
/// until it is ready).
fn restart_apiserver() -> std::result::Result<(), String> {
    let script = repo_root().join("e2e/controlplane/controlplane.sh");
    let out = Command::new(&script)
        .arg("restart-apiserver")
        .output()
        .map_err(|e| format!("{}: {e}", script.display()))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "restart-apiserver failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// See the module docs.
pub async fn apiserver_restart() -> Outcome {
    let setup = step("start", Setup::new("apiserver", &[]).await)?;
    let outcome = apiserver_restart_in(&setup).await;
    setup.cleanup().await;
    outcome
}

async fn apiserver_restart_in(setup: &Setup) -> Outcome {
    let pair = step(
        "workloads",
        setup.client_and_server("10.244.43", true).await,
    )?;
    let (client_ip, cluster_ip) = (pair.client, pair.cluster_ip);
    let body = step("body", report(vec![connection(client_ip, cluster_ip, 80)]))?;
    step("post", setup.post(Some(&setup.token), body).await)?;
    step(
        "targets",
        setup.wait_for_targets("client", &["server"]).await,
    )?;

    tokio::task::spawn_blocking(restart_apiserver)
        .await
        .map_err(|e| format!("restart task: {e}"))??;
    // Let the operator's watches notice the broken connections.
    tokio::time::sleep(Duration::from_secs(2)).await;

    // Only a resumed pod watch can tell the operator who 10.244.43.4 is.
    let other_ip = step("ip", ip("10.244.43.4"))?;
    step(
        "workload after restart",
        setup.workload("other", other_ip).await,
    )?;
    let body = step("body", report(vec![connection(client_ip, other_ip, 9000)]))?;
    let status = step("post", setup.post(Some(&setup.token), body).await)?;
    ensure(status == 202, || {
        format!("report after the restart got {status}")
    })?;
    step(
        "map catches up",
        setup.wait_for_targets("client", &["other", "server"]).await,
    )?;
    ensure(setup.operator.is_ready().await, || {
        "operator not ready after the restart".into()
    })
}
