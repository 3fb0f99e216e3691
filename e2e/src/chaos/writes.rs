//! Failures around writing the map: hand edits, an operator killed while writing, and two
//! replicas losing their leader.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::json;
use trafficmap_api::{ClientIntents, ObservedTraffic};

use super::harness::{Setup, WAIT, connection, ip, report};
use super::{Outcome, ensure, step};
use crate::cluster::wait_for;
use crate::kube_context;
use crate::operator::{OperatorOptions, OperatorProcess};
use crate::prom::{family_sum, sample};

/// Resource versions of every ObservedTraffic and ClientIntents of the case.
async fn versions(setup: &Setup) -> crate::Result<Vec<String>> {
    let mut out: Vec<String> = setup
        .all_observed()
        .await?
        .into_iter()
        .filter_map(|o| o.metadata.resource_version)
        .collect();
    let intents = Api::<ClientIntents>::namespaced(setup.client.clone(), &setup.ns.name)
        .list(&Default::default())
        .await
        .map_err(kube_context("list ClientIntents"))?;
    out.extend(
        intents
            .items
            .into_iter()
            .filter_map(|i| i.metadata.resource_version),
    );
    Ok(out)
}

/// Someone edits an ObservedTraffic (labels) and the draft ClientIntents (targets) by hand:
/// the operator's next server-side apply keeps the hand-added label (another field manager's);
/// the edited ClientIntents is that person's from then on: kept as edited, stripped of our owner
/// reference and label, with the calls it does not cover recorded in the status; and then the
/// operator writes nothing more: no write loop.
pub async fn hand_edits_settle() -> Outcome {
    let setup = step("start", Setup::new("edit", &[]).await)?;
    let outcome = hand_edits_settle_in(&setup).await;
    setup.cleanup().await;
    outcome
}

async fn hand_edits_settle_in(setup: &Setup) -> Outcome {
    let pair = step(
        "workloads",
        setup.client_and_server("10.244.42", true).await,
    )?;
    let (client_ip, cluster_ip) = (pair.client, pair.cluster_ip);
    let other_ip = step("ip", ip("10.244.42.4"))?;
    step("other", setup.workload("other", other_ip).await)?;
    let body = step("body", report(vec![connection(client_ip, cluster_ip, 80)]))?;
    step("post", setup.post(Some(&setup.token), body).await)?;
    step(
        "targets",
        setup.wait_for_targets("client", &["server"]).await,
    )?;
    let intents = Api::<ClientIntents>::namespaced(setup.client.clone(), &setup.ns.name);
    step(
        "draft",
        wait_for("the draft", WAIT, || async {
            intents
                .get_opt("client")
                .await
                .map_err(kube_context("get draft"))
        })
        .await,
    )?;

    let by_hand = PatchParams::default();
    let ot_name = format!("client.deployment.{}", setup.ns.name);
    let ots = Api::<ObservedTraffic>::all(setup.client.clone());
    step(
        "edit ObservedTraffic",
        ots.patch(
            &ot_name,
            &by_hand,
            &Patch::Merge(json!({"metadata": {"labels": {"edited-by": "hand"}}})),
        )
        .await
        .map_err(kube_context("label ObservedTraffic")),
    )?;
    step(
        "edit draft",
        intents
            .patch(
                "client",
                &by_hand,
                &Patch::Merge(json!({"spec": {"targets": [{"kubernetes": {"name": "forged"}}]}})),
            )
            .await
            .map_err(kube_context("edit draft")),
    )?;

    // A new call: the operator applies status and draft again.
    let body = step("body", report(vec![connection(client_ip, other_ip, 9000)]))?;
    step("post", setup.post(Some(&setup.token), body).await)?;
    step(
        "targets",
        setup.wait_for_targets("client", &["other", "server"]).await,
    )?;
    let edited = step(
        "edited intents released",
        wait_for("the edited intents to lose our marks", WAIT, || async {
            let ci = intents
                .get("client")
                .await
                .map_err(kube_context("get intents"))?;
            let marked = ci
                .metadata
                .labels
                .iter()
                .flatten()
                .any(|(k, _)| k == "app.kubernetes.io/managed-by")
                || ci
                    .metadata
                    .owner_references
                    .iter()
                    .flatten()
                    .any(|r| r.kind == "ObservedTraffic");
            Ok((!marked).then_some(ci))
        })
        .await,
    )?;
    let names: Vec<String> = edited
        .spec
        .targets
        .iter()
        .filter_map(|t| t.kubernetes.as_ref().map(|k| k.name.clone()))
        .collect();
    ensure(names == ["forged"], || {
        format!("the hand-edited intents were overwritten: {names:?}")
    })?;
    let ns = &setup.ns.name;
    step(
        "uncovered calls recorded",
        wait_for("the calls the edit leaves out", WAIT, || async {
            let ot = ots.get(&ot_name).await.map_err(kube_context("get ot"))?;
            let uncovered = ot.status.map(|s| s.uncovered_targets).unwrap_or_default();
            Ok((uncovered == [format!("other.{ns}"), format!("server.{ns}")]).then_some(()))
        })
        .await,
    )?;
    let ot = step(
        "read",
        ots.get(&ot_name).await.map_err(kube_context("get ot")),
    )?;
    let label = ot
        .metadata
        .labels
        .unwrap_or_default()
        .get("edited-by")
        .cloned();
    ensure(label.as_deref() == Some("hand"), || {
        format!("the hand-added label (another manager's field) was removed: {label:?}")
    })?;

    // Settled: nothing written for a while (flush interval 1 s here).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let before = step("versions", versions(setup).await)?;
    let writes_before = family_sum(
        &step("metrics", setup.operator.metrics().await)?,
        "trafficmap_operator_api_writes_total",
    );
    tokio::time::sleep(Duration::from_secs(10)).await;
    let after = step("versions", versions(setup).await)?;
    let writes_after = family_sum(
        &step("metrics", setup.operator.metrics().await)?,
        "trafficmap_operator_api_writes_total",
    );
    ensure(before == after, || {
        format!("objects still changing with no new traffic: {before:?} -> {after:?}")
    })?;
    ensure(writes_before == writes_after, || {
        format!(
            "{} API writes in 10 s with no new traffic",
            writes_after - writes_before
        )
    })
}

/// The operator is SIGKILLed while reports stream in and statuses are being written, then
/// started again: every observation it acknowledged (202) is in the map afterwards, with one
/// ObservedTraffic per client, no duplicate target or port, and a readable object.
pub async fn operator_killed_mid_write() -> Outcome {
    let mut setup = step("start", Setup::new("kill", &[]).await)?;
    let outcome = killed_mid_write_in(&mut setup).await;
    setup.cleanup().await;
    outcome
}

async fn killed_mid_write_in(setup: &mut Setup) -> Outcome {
    let pair = step(
        "workloads",
        setup.client_and_server("10.244.44", false).await,
    )?;
    let (client_ip, server_ip) = (pair.client, pair.server);
    let body = step("body", report(vec![connection(client_ip, server_ip, 1000)]))?;
    step("post", setup.post(Some(&setup.token), body).await)?;
    step(
        "targets",
        setup.wait_for_targets("client", &["server"]).await,
    )?;

    let accepted: Arc<Mutex<BTreeSet<u16>>> = Arc::new(Mutex::new(BTreeSet::from([1000])));
    let stream = tokio::spawn(stream_reports(
        setup.operator.ingest_url.clone(),
        setup.ca.clone(),
        setup.token.clone(),
        client_ip,
        server_ip,
        accepted.clone(),
    ));
    // Long enough for early reports to be written and acknowledged (settling, a flush and the
    // write) while later ones are still waiting for theirs.
    tokio::time::sleep(Duration::from_millis(8_000)).await;
    setup.operator.kill();
    tokio::time::sleep(Duration::from_millis(500)).await;
    stream.abort();
    let acked: BTreeSet<u16> = accepted.lock().map(|a| a.clone()).unwrap_or_default();
    ensure(acked.len() > 10, || {
        format!("only {} ports acknowledged before the kill", acked.len())
    })?;
    setup.operator = step("restart", OperatorProcess::start(&setup.options).await)?;

    // Give the restarted operator time to write anything it would.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let objects = step("read", setup.all_observed().await)?;
    ensure(objects.len() == 1, || {
        format!("{} ObservedTraffic objects for one client", objects.len())
    })?;
    let status = objects[0].status.clone().unwrap_or_default();
    let mut seen = BTreeSet::new();
    for target in &status.targets {
        let key = (
            target.kind.clone(),
            target.namespace.clone(),
            target.name.clone(),
        );
        ensure(seen.insert(key.clone()), || {
            format!("duplicate target {key:?}")
        })?;
        let ports: BTreeSet<_> = target.ports.iter().collect();
        ensure(ports.len() == target.ports.len(), || {
            format!("duplicate ports in {key:?}")
        })?;
    }
    let stored: BTreeSet<u16> = status
        .targets
        .iter()
        .filter(|t| t.name == "server")
        .flat_map(|t| t.ports.iter().map(|p| p.port))
        .collect();
    let lost: Vec<u16> = acked.difference(&stored).copied().collect();
    ensure(lost.is_empty(), || {
        format!(
            "{} of {} acknowledged edges (ports) lost across the kill, e.g. {:?}",
            lost.len(),
            acked.len(),
            &lost[..lost.len().min(5)]
        )
    })
}

/// Starts a report of 5 new ports every 100 ms until aborted (each waits for its answer on
/// its own, as many sniffers would), recording the ports of acknowledged reports.
async fn stream_reports(
    url: String,
    ca: String,
    token: String,
    client: IpAddr,
    server: IpAddr,
    accepted: Arc<Mutex<BTreeSet<u16>>>,
) {
    let mut posts = tokio::task::JoinSet::new();
    for batch in 0u16..500 {
        let ports: Vec<u16> = (0..5).map(|i| 2000 + batch * 5 + i).collect();
        let observations = ports
            .iter()
            .map(|p| connection(client, server, *p))
            .collect();
        let Ok(body) = report(observations) else {
            return;
        };
        let (url, ca, token, accepted) = (url.clone(), ca.clone(), token.clone(), accepted.clone());
        posts.spawn(async move {
            if let Ok((202, _)) =
                crate::http::request("POST", &url, Some(&ca), Some(&token), body).await
                && let Ok(mut set) = accepted.lock()
            {
                set.extend(ports);
            }
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Dropping the set (when this task is aborted) aborts the posts still waiting.
    while posts.join_next().await.is_some() {}
}

/// Two replicas with leader election: exactly one is ready and writes; SIGKILL the leader and
/// the other takes over within the lease time (15 s) and writes what it is sent.
pub async fn two_replicas() -> Outcome {
    let mut setup = step("start", Setup::new("lease", &["--leader-elect"]).await)?;
    let outcome = two_replicas_in(&mut setup).await;
    setup.cleanup().await;
    outcome
}

async fn two_replicas_in(setup: &mut Setup) -> Outcome {
    let pair = step(
        "workloads",
        setup.client_and_server("10.244.45", false).await,
    )?;
    let (client_ip, server_ip) = (pair.client, pair.server);
    let other_ip = step("ip", ip("10.244.45.4"))?;
    step("other", setup.workload("other", other_ip).await)?;
    let options = OperatorOptions {
        label: format!("{}-b", setup.options.label),
        ..setup.options.clone()
    };
    let mut follower = step("second replica", OperatorProcess::spawn(&options))?;
    tokio::time::sleep(Duration::from_secs(5)).await;
    ensure(setup.operator.is_ready().await, || {
        "the first replica does not lead".into()
    })?;
    ensure(!follower.is_ready().await, || {
        "two replicas are ready (lead) at once".into()
    })?;
    let body = step("body", report(vec![connection(client_ip, server_ip, 8080)]))?;
    step("post", setup.post(Some(&setup.token), body).await)?;
    step(
        "targets",
        setup.wait_for_targets("client", &["server"]).await,
    )?;
    let follower_writes = family_sum(
        &step("follower metrics", follower.metrics().await)?,
        "trafficmap_operator_api_writes_total",
    );
    ensure(follower_writes == 0.0, || {
        format!("the follower wrote {follower_writes} times")
    })?;
    let leader_gauge = sample(
        &step("metrics", setup.operator.metrics().await)?,
        "trafficmap_operator_leader",
    );
    ensure(leader_gauge == 1.0, || {
        format!("leader gauge of the leader is {leader_gauge}")
    })?;

    let crashed = tokio::time::Instant::now();
    setup.operator.kill();
    step(
        "takeover",
        follower.wait_ready(Duration::from_secs(25)).await,
    )?;
    let took = crashed.elapsed();
    ensure(took <= Duration::from_secs(20), || {
        format!("handover took {took:?}, lease is 15 s")
    })?;
    let body = step("body", report(vec![connection(client_ip, other_ip, 9000)]))?;
    let status = step(
        "post to the new leader",
        crate::http::request(
            "POST",
            &follower.ingest_url,
            Some(&setup.ca),
            Some(&setup.token),
            body,
        )
        .await,
    )?
    .0;
    ensure(status == 202, || {
        format!("the new leader answered {status}")
    })?;
    step(
        "targets",
        setup.wait_for_targets("client", &["other", "server"]).await,
    )?;
    let ot = step("read", setup.observed("client").await)?;
    let managers: BTreeSet<String> = ot
        .and_then(|o| o.metadata.managed_fields)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|m| m.manager)
        .collect();
    ensure(managers.len() == 1, || {
        format!("several field managers wrote: {managers:?}")
    })?;
    drop(follower);
    Ok(())
}
