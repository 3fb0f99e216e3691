//! Would-be-blocked, against the real control plane and operator: a ClientIntents that
//! protects a server, then a NetworkPolicy that isolates it, make the operator report the
//! observed call they would block, as the `WouldBeBlocked` condition of the client's
//! ObservedTraffic and the metric `calls_would_be_blocked`; without them the condition clears.
//!
//! Needs the control plane (`make e2e-test` starts it) and the built operator.

use std::time::Duration;

use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::Api;
use kube::api::{DeleteParams, PostParams};
use serde_json::json;
use trafficmap_api::ClientIntents;
use trafficmap_e2e::chaos::harness::{Setup, reap_case};
use trafficmap_e2e::cluster::wait_for;

const WAIT: Duration = Duration::from_secs(45);

/// The `WouldBeBlocked` condition of client's ObservedTraffic: (status, message).
async fn would_be_blocked(setup: &Setup) -> Option<(String, String)> {
    let observed = setup.observed("client").await.ok().flatten()?;
    observed
        .status?
        .conditions
        .into_iter()
        .find(|c| c.type_ == "WouldBeBlocked")
        .map(|c| (c.status, c.message))
}

async fn wait_for_condition(setup: &Setup, what: &str, want: impl Fn(&str, &str) -> bool) {
    let found = wait_for(what, WAIT, || async {
        Ok(would_be_blocked(setup)
            .await
            .filter(|(status, message)| want(status, message))
            .map(|_| ()))
    })
    .await;
    if let Err(err) = found {
        let last = would_be_blocked(setup).await;
        panic!("{err}; the condition is {last:?}");
    }
}

#[tokio::test]
async fn calls_the_clusters_policies_would_block_are_reported_before_anyone_enforces() {
    reap_case("audit").await.expect("reap");
    // Without drafts: the client's draft would name server and let its call through.
    let setup = Setup::new(
        "audit",
        &["--audit-interval=1s", "--emit-client-intents=false"],
    )
    .await
    .expect("setup");
    let ns = setup.ns.name.clone();
    setup
        .mapped_client_and_server("10.244.65")
        .await
        .expect("client -> server mapped");
    wait_for_condition(&setup, "WouldBeBlocked False", |status, _| {
        status == "False"
    })
    .await;

    // Another workload's ClientIntents names server: the intents-operator would protect it.
    let intents = Api::<ClientIntents>::namespaced(setup.client.clone(), &ns);
    let gate: ClientIntents = serde_json::from_value(json!({
        "apiVersion": "k8s.otterize.com/v2beta1", "kind": "ClientIntents",
        "metadata": {"name": "gate", "namespace": ns},
        "spec": {"workload": {"name": "gate"}, "targets": [{"kubernetes": {"name": "server"}}]}
    }))
    .expect("ClientIntents");
    intents
        .create(&PostParams::default(), &gate)
        .await
        .expect("create gate's intents");
    let by_intents = format!("server.{ns} (ClientIntents)");
    wait_for_condition(
        &setup,
        "WouldBeBlocked by ClientIntents",
        |status, message| status == "True" && message.contains(&by_intents),
    )
    .await;
    let series = |by: &str| format!("trafficmap_operator_calls_would_be_blocked{{by=\"{by}\"}}");
    // The operator audits the whole cluster: other cases may add to the count, never take away.
    assert!(
        setup
            .metric(&series("clientintents"))
            .await
            .expect("metric")
            >= 1.0
    );
    intents
        .delete("gate", &DeleteParams::default())
        .await
        .expect("delete gate's intents");

    // A NetworkPolicy that admits only gate to server's pods blocks client on the pod port.
    let policies = Api::<NetworkPolicy>::namespaced(setup.client.clone(), &ns);
    let only_gate: NetworkPolicy = serde_json::from_value(json!({
        "metadata": {"name": "server-only-from-gate", "namespace": ns},
        "spec": {
            "podSelector": {"matchLabels": {"app": "server"}},
            "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "gate"}}}]}]
        }
    }))
    .expect("NetworkPolicy");
    policies
        .create(&PostParams::default(), &only_gate)
        .await
        .expect("create the policy");
    let by_policy =
        format!("server.{ns} on 8080/TCP (NetworkPolicy ingress: {ns}/server-only-from-gate)");
    wait_for_condition(
        &setup,
        "WouldBeBlocked by NetworkPolicy",
        |status, message| {
            status == "True" && message.contains(&by_policy) && !message.contains("ClientIntents")
        },
    )
    .await;
    assert!(
        setup
            .metric(&series("networkpolicy"))
            .await
            .expect("metric")
            >= 1.0
    );

    policies
        .delete("server-only-from-gate", &DeleteParams::default())
        .await
        .expect("delete the policy");
    wait_for_condition(&setup, "WouldBeBlocked False again", |status, _| {
        status == "False"
    })
    .await;
    setup.cleanup().await;
}
