//! The operator as a real process against the real control plane: reports posted with real
//! ServiceAccount tokens become ObservedTraffic and draft ClientIntents; forged tokens record
//! nothing; a reused IP produces no false edge; a restart loses no edge; someone else's
//! ClientIntents stay untouched; a missing ClientIntents CRD is reported.
//!
//! Tests run one at a time (they share the cluster-scoped ClientIntents CRD and pod IP space).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{DeleteParams, PostParams};
use kube::{Api, Client};
use trafficmap_api::intents::{ClientIntentsSpec, KubernetesTarget, Target, Workload};
use trafficmap_api::observed::Protocol;
use trafficmap_api::report::{ClientId, ConnectionObservation, REPORT_VERSION};
use trafficmap_api::{ClientIntents, Observation, ObservedTraffic, Report};
use trafficmap_e2e::chaos::harness::dns;
use trafficmap_e2e::cluster::{TestNamespace, admin_client, wait_for};
use trafficmap_e2e::crds::install_all;
use trafficmap_e2e::fixtures::{
    delete_pod_now, deployment, ensure_node, reap_stale_namespaces, service, start_pod,
    wait_for_endpoint,
};
use trafficmap_e2e::operator::{
    OperatorOptions, OperatorProcess, published_ca, service_account_token,
};
use trafficmap_e2e::prom::sample;
use trafficmap_e2e::{http, kube_context};

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const WAIT: Duration = Duration::from_secs(45);

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("ip")
}

fn connection(client: &str, server: IpAddr, port: u16, at: u64) -> Observation {
    Observation::Connection(ConnectionObservation {
        client: ClientId {
            ip: ip(client),
            pod_uid: None,
        },
        server_ip: server,
        server_port: port,
        protocol: Protocol::Tcp,
        first_seen_ms: at,
        last_seen_ms: at,
    })
}

/// A token whose claims were edited (`from` -> `to` in the payload) with the signature kept:
/// what a pod trying to pass as another account would send.
fn forge(token: &str, from: &str, to: &str) -> String {
    use base64::Engine as _;
    let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let parts: Vec<&str> = token.split('.').collect();
    let claims = engine.decode(parts[1]).expect("JWT payload");
    let edited = String::from_utf8(claims)
        .expect("JSON claims")
        .replace(from, to);
    assert!(edited.contains(to), "the claims name {from}");
    format!("{}.{}.{}", parts[0], engine.encode(edited), parts[2])
}

fn report(observations: Vec<Observation>) -> Vec<u8> {
    serde_json::to_vec(&Report {
        version: REPORT_VERSION,
        node: "tm-test-node".into(),
        observations,
    })
    .expect("serializes")
}

/// A namespace with a sniffer account, the node, and an operator for it.
struct Setup {
    client: Client,
    ns: TestNamespace,
    token: String,
    ca: String,
    operator: OperatorProcess,
    options: OperatorOptions,
}

impl Setup {
    async fn new(prefix: &str, extra_args: &[&str]) -> Setup {
        let client = admin_client().await.expect("control plane reachable");
        install_all(&client).await.expect("CRDs");
        Setup::with_client(client, prefix, extra_args).await
    }

    async fn with_client(client: Client, prefix: &str, extra_args: &[&str]) -> Setup {
        reap_stale_namespaces(&client, "tm-op-")
            .await
            .expect("stale runs reaped");
        ensure_node(&client).await.expect("node");
        let ns = TestNamespace::create(&client, prefix)
            .await
            .expect("namespace");
        let token = service_account_token(&client, &ns.name, "sniffer", "trafficmap")
            .await
            .expect("sniffer token");
        let options = OperatorOptions {
            namespace: ns.name.clone(),
            sniffer_account: format!("{}/sniffer", ns.name),
            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
            label: ns.name.clone(),
        };
        let operator = OperatorProcess::start(&options)
            .await
            .expect("operator ready");
        let ca = published_ca(&client, &ns.name).await.expect("CA published");
        Setup {
            client,
            ns,
            token,
            ca,
            operator,
            options,
        }
    }

    async fn post(&self, token: Option<&str>, body: Vec<u8>) -> u16 {
        http::request(
            "POST",
            &self.operator.ingest_url,
            Some(&self.ca),
            token,
            body,
        )
        .await
        .expect("request completes")
        .0
    }

    async fn observed(&self, workload: &str) -> Option<ObservedTraffic> {
        let name = format!("{workload}.deployment.{}", self.ns.name);
        Api::<ObservedTraffic>::all(self.client.clone())
            .get_opt(&name)
            .await
            .expect("read ObservedTraffic")
    }

    /// Waits until the client's ObservedTraffic lists exactly `targets` (names).
    async fn wait_for_targets(&self, workload: &str, targets: &[&str]) -> ObservedTraffic {
        let want: Vec<String> = targets.iter().map(|s| s.to_string()).collect();
        let result = wait_for(&format!("{workload} -> {want:?}"), WAIT, || async {
            let Some(ot) = self.observed(workload).await else {
                return Ok(None);
            };
            let mut names: Vec<String> = ot
                .status
                .iter()
                .flat_map(|s| s.targets.iter().map(|t| t.name.clone()))
                .collect();
            names.sort();
            names.dedup();
            Ok((names == want).then_some(ot))
        })
        .await;
        match result {
            Ok(ot) => ot,
            Err(err) => panic!(
                "{err}; now: {:?}\n--- operator log ---\n{}",
                self.observed(workload).await.and_then(|o| o.status),
                self.operator.log_tail()
            ),
        }
    }

    async fn cleanup(self) {
        for ot in Api::<ObservedTraffic>::all(self.client.clone())
            .list(&Default::default())
            .await
            .map(|l| l.items)
            .unwrap_or_default()
        {
            if ot.spec.client.namespace == self.ns.name {
                let name = ot.metadata.name.clone().unwrap_or_default();
                let _ = Api::<ObservedTraffic>::all(self.client.clone())
                    .delete(&name, &DeleteParams::default())
                    .await;
            }
        }
        let pods = Api::<Pod>::namespaced(self.client.clone(), &self.ns.name);
        for pod in pods
            .list(&Default::default())
            .await
            .map(|l| l.items)
            .unwrap_or_default()
        {
            let _ = delete_pod_now(&self.client, &pod).await;
        }
        drop(self.operator);
        let _ = self.ns.delete().await;
    }
}

/// A client and a server Deployment with a Service, pods started at `client_ip`/`server_ip`.
async fn client_and_server(setup: &Setup, client_ip: &str, server_ip: &str) -> IpAddr {
    let (c, ns) = (&setup.client, setup.ns.name.as_str());
    let clients = deployment(c, ns, "client", 1, BTreeMap::new())
        .await
        .expect("client");
    let servers = deployment(c, ns, "server", 1, BTreeMap::new())
        .await
        .expect("server");
    start_pod(c, &clients[0], ip(client_ip))
        .await
        .expect("client started");
    start_pod(c, &servers[0], ip(server_ip))
        .await
        .expect("server started");
    let cluster_ip = service(c, ns, "server", "server", 80, 8080)
        .await
        .expect("service");
    wait_for_endpoint(c, ns, "server", ip(server_ip))
        .await
        .expect("endpoint");
    cluster_ip
}

#[tokio::test]
async fn reports_become_observed_traffic_and_draft_client_intents() {
    let _serial = SERIAL.lock().await;
    let setup = Setup::new("tm-op-map", &[]).await;
    let cluster_ip = client_and_server(&setup, "10.244.11.2", "10.244.11.3").await;
    let name = format!("server.{}.svc.cluster.local", setup.ns.name);
    let at = now_ms();
    let status = setup
        .post(
            Some(&setup.token),
            report(vec![
                dns(ip("10.244.11.2"), &name, cluster_ip),
                connection("10.244.11.2", cluster_ip, 80, at),
            ]),
        )
        .await;
    assert_eq!(status, 202);

    let ot = setup.wait_for_targets("client", &["server"]).await;
    let status = ot.status.expect("status");
    let target = &status.targets[0];
    assert_eq!(target.kind, "Deployment");
    assert_eq!(target.namespace, setup.ns.name);
    assert_eq!(target.service.as_deref(), Some("server"));
    assert_eq!(
        target.ports.iter().map(|p| p.port).collect::<Vec<_>>(),
        [80]
    );
    assert!(target.dns_names.contains(&name), "{target:?}");
    assert_eq!(status.target_count, 1);

    let intents = Api::<ClientIntents>::namespaced(setup.client.clone(), &setup.ns.name);
    let draft = wait_for("the draft ClientIntents", WAIT, || async {
        intents
            .get_opt("client")
            .await
            .map_err(kube_context("get intents"))
    })
    .await
    .expect("draft written");
    assert_eq!(draft.spec.workload.name, "client");
    assert_eq!(draft.spec.workload.kind.as_deref(), Some("Deployment"));
    let target = draft.spec.targets[0]
        .kubernetes
        .as_ref()
        .expect("kubernetes target");
    assert_eq!(
        (target.name.as_str(), target.kind.as_deref()),
        ("server", Some("Deployment"))
    );
    let labels = draft.metadata.labels.clone().unwrap_or_default();
    assert_eq!(
        labels
            .get("app.kubernetes.io/managed-by")
            .map(String::as_str),
        Some("trafficmap")
    );
    let owner = &draft.metadata.owner_references.clone().unwrap_or_default()[0];
    assert_eq!(owner.kind, "ObservedTraffic");
    let metrics = setup.operator.metrics().await.expect("metrics");
    assert_eq!(
        sample(&metrics, "trafficmap_operator_reports_accepted_total"),
        1.0,
        "{metrics}"
    );
    setup.cleanup().await;
}

#[tokio::test]
async fn forged_and_wrong_account_tokens_are_rejected_and_record_nothing() {
    let _serial = SERIAL.lock().await;
    let setup = Setup::new("tm-op-auth", &[]).await;
    let cluster_ip = client_and_server(&setup, "10.244.12.2", "10.244.12.3").await;
    let body = || report(vec![connection("10.244.12.2", cluster_ip, 80, now_ms())]);
    let other = service_account_token(&setup.client, &setup.ns.name, "intruder", "trafficmap")
        .await
        .expect("other token");
    let wrong_audience =
        service_account_token(&setup.client, &setup.ns.name, "sniffer", "elsewhere")
            .await
            .expect("wrong-audience token");
    let forged = forge(&setup.token, "sniffer", "intruder");
    assert_eq!(setup.post(None, body()).await, 401);
    assert_eq!(setup.post(Some("not-a-token"), body()).await, 401);
    assert_eq!(setup.post(Some(&forged), body()).await, 401);
    assert_eq!(setup.post(Some(&wrong_audience), body()).await, 401);
    assert_eq!(setup.post(Some(&other), body()).await, 403);
    assert_eq!(
        setup.post(Some(&setup.token), b"{not json".to_vec()).await,
        400
    );
    let huge = vec![b' '; 9 * 1024 * 1024];
    assert_eq!(setup.post(Some(&setup.token), huge).await, 413);

    tokio::time::sleep(Duration::from_secs(6)).await;
    assert!(
        setup.observed("client").await.is_none(),
        "a rejected report was recorded"
    );
    let metrics = setup.operator.metrics().await.expect("metrics");
    let rejected = |reason: &str| {
        sample(
            &metrics,
            &format!("trafficmap_operator_reports_rejected_total{{reason=\"{reason}\"}}"),
        )
    };
    assert_eq!(
        rejected("not_authenticated"),
        3.0,
        "garbage, forged and wrong-audience tokens: {metrics}"
    );
    for reason in ["missing_token", "wrong_identity", "malformed", "too_large"] {
        assert!(rejected(reason) >= 1.0, "no {reason} in {metrics}");
    }
    setup.cleanup().await;
}

#[tokio::test]
async fn a_reused_ip_is_attributed_to_the_workload_that_held_it_then() {
    let _serial = SERIAL.lock().await;
    let setup = Setup::new("tm-op-reuse", &[]).await;
    let (c, ns) = (&setup.client, setup.ns.name.clone());
    let clients = deployment(c, &ns, "client", 1, BTreeMap::new())
        .await
        .expect("client");
    start_pod(c, &clients[0], ip("10.244.13.2"))
        .await
        .expect("client started");
    let first = deployment(c, &ns, "first", 1, BTreeMap::new())
        .await
        .expect("first");
    start_pod(c, &first[0], ip("10.244.13.9"))
        .await
        .expect("first started");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let while_first_held_it = now_ms();
    tokio::time::sleep(Duration::from_secs(3)).await;
    Api::<k8s_openapi::api::apps::v1::Deployment>::namespaced(c.clone(), &ns)
        .delete("first", &DeleteParams::default())
        .await
        .expect("delete first");
    delete_pod_now(c, &first[0]).await.expect("pod gone");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let second = deployment(c, &ns, "second", 1, BTreeMap::new())
        .await
        .expect("second");
    start_pod(c, &second[0], ip("10.244.13.9"))
        .await
        .expect("second took the IP");
    tokio::time::sleep(Duration::from_secs(3)).await;

    let status = setup
        .post(
            Some(&setup.token),
            report(vec![connection(
                "10.244.13.2",
                ip("10.244.13.9"),
                8080,
                while_first_held_it,
            )]),
        )
        .await;
    assert_eq!(status, 202);
    setup.wait_for_targets("client", &["first"]).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let names: Vec<String> = setup
        .observed("client")
        .await
        .and_then(|o| o.status)
        .map(|s| s.targets.into_iter().map(|t| t.name).collect())
        .unwrap_or_default();
    assert_eq!(names, ["first"], "the IP's later holder must not appear");
    setup.cleanup().await;
}

#[tokio::test]
async fn a_restarted_operator_loses_no_edge() {
    let _serial = SERIAL.lock().await;
    let mut setup = Setup::new("tm-op-restart", &[]).await;
    let cluster_ip = client_and_server(&setup, "10.244.14.2", "10.244.14.3").await;
    let (c, ns) = (&setup.client, setup.ns.name.clone());
    let others = deployment(c, &ns, "other", 1, BTreeMap::new())
        .await
        .expect("other");
    start_pod(c, &others[0], ip("10.244.14.4"))
        .await
        .expect("other started");
    assert_eq!(
        setup
            .post(
                Some(&setup.token),
                report(vec![connection("10.244.14.2", cluster_ip, 80, now_ms())])
            )
            .await,
        202
    );
    setup.wait_for_targets("client", &["server"]).await;

    setup.operator.kill();
    setup.operator = OperatorProcess::start(&setup.options)
        .await
        .expect("operator restarted");
    assert_eq!(
        setup
            .post(
                Some(&setup.token),
                report(vec![connection(
                    "10.244.14.2",
                    ip("10.244.14.4"),
                    9000,
                    now_ms()
                )])
            )
            .await,
        202
    );
    setup.wait_for_targets("client", &["other", "server"]).await;
    setup.cleanup().await;
}

#[tokio::test]
async fn hand_written_client_intents_are_left_untouched_and_uncovered_calls_reported() {
    let _serial = SERIAL.lock().await;
    let setup = Setup::new("tm-op-foreign", &[]).await;
    let cluster_ip = client_and_server(&setup, "10.244.15.2", "10.244.15.3").await;
    let intents = Api::<ClientIntents>::namespaced(setup.client.clone(), &setup.ns.name);
    let mut mine = ClientIntents::new(
        "client",
        ClientIntentsSpec {
            workload: Workload {
                name: "client".into(),
                kind: Some("Deployment".into()),
            },
            targets: vec![Target {
                kubernetes: Some(KubernetesTarget {
                    name: "database".into(),
                    kind: None,
                    http: None,
                }),
                ..Target::default()
            }],
        },
    );
    mine.metadata.namespace = Some(setup.ns.name.clone());
    let created = intents
        .create(&PostParams::default(), &mine)
        .await
        .expect("hand-written intents");

    assert_eq!(
        setup
            .post(
                Some(&setup.token),
                report(vec![connection("10.244.15.2", cluster_ip, 80, now_ms())])
            )
            .await,
        202
    );
    let ot = wait_for("uncovered targets in status", WAIT, || async {
        let ot = setup.observed("client").await;
        Ok(ot.filter(|o| {
            o.status
                .as_ref()
                .is_some_and(|s| !s.uncovered_targets.is_empty())
        }))
    })
    .await
    .expect("uncovered calls reported");
    let status = ot.status.expect("status");
    assert_eq!(
        status.uncovered_targets,
        [format!("server.{}", setup.ns.name)]
    );
    let condition = &status.conditions[0];
    assert_eq!(
        (condition.status.as_str(), condition.reason.as_str()),
        ("False", "ExternallyManaged")
    );
    let after = intents.get("client").await.expect("still there");
    assert_eq!(
        after.metadata.resource_version,
        created.metadata.resource_version
    );
    assert_eq!(after.spec, mine.spec);
    setup.cleanup().await;
}

#[tokio::test]
async fn without_the_client_intents_crd_the_condition_says_so() {
    let _serial = SERIAL.lock().await;
    let client = admin_client().await.expect("control plane reachable");
    install_all(&client).await.expect("CRDs");
    let crds = Api::<CustomResourceDefinition>::all(client.clone());
    crds.delete("clientintents.k8s.otterize.com", &DeleteParams::default())
        .await
        .expect("CRD deleted");
    wait_for("the ClientIntents CRD to be gone", WAIT, || async {
        Ok(crds
            .get_opt("clientintents.k8s.otterize.com")
            .await
            .map_err(kube_context("get CRD"))?
            .is_none()
            .then_some(()))
    })
    .await
    .expect("CRD gone");

    let setup = Setup::with_client(client.clone(), "tm-op-nocrd", &[]).await;
    let cluster_ip = client_and_server(&setup, "10.244.16.2", "10.244.16.3").await;
    assert_eq!(
        setup
            .post(
                Some(&setup.token),
                report(vec![connection("10.244.16.2", cluster_ip, 80, now_ms())])
            )
            .await,
        202
    );
    let ot = setup.wait_for_targets("client", &["server"]).await;
    let condition = ot.status.expect("status").conditions[0].clone();
    assert_eq!(
        (condition.status.as_str(), condition.reason.as_str()),
        ("False", "CRDNotInstalled")
    );
    setup.cleanup().await;
    install_all(&client).await.expect("CRDs reinstalled");
}

#[tokio::test]
async fn with_two_replicas_only_the_leader_ingests_and_a_dead_leader_is_replaced() {
    let _serial = SERIAL.lock().await;
    let mut setup = Setup::new("tm-op-lease", &["--leader-elect"]).await;
    let cluster_ip = client_and_server(&setup, "10.244.17.2", "10.244.17.3").await;
    let follower_options = OperatorOptions {
        label: format!("{}-b", setup.options.label),
        ..setup.options.clone()
    };
    let mut follower = OperatorProcess::spawn(&follower_options).expect("second replica");
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(setup.operator.is_ready().await, "the first replica leads");
    assert!(!follower.is_ready().await, "a follower reports not ready");
    let refused = http::request(
        "POST",
        &follower.ingest_url,
        Some(&setup.ca),
        Some(&setup.token),
        report(vec![]),
    )
    .await;
    assert!(refused.is_err(), "a follower does not ingest: {refused:?}");

    // A crashed leader's lease runs out (15 s) and the follower takes over.
    let crashed = tokio::time::Instant::now();
    setup.operator.kill();
    follower
        .wait_ready(Duration::from_secs(25))
        .await
        .expect("the follower takes over after the lease expires");
    let took = crashed.elapsed();
    assert!(took <= Duration::from_secs(20), "handover took {took:?}");
    let body = report(vec![connection("10.244.17.2", cluster_ip, 80, now_ms())]);
    let status = http::request(
        "POST",
        &follower.ingest_url,
        Some(&setup.ca),
        Some(&setup.token),
        body,
    )
    .await
    .expect("post to the new leader")
    .0;
    assert_eq!(status, 202);
    setup.wait_for_targets("client", &["server"]).await;

    // A leader that shuts down releases its lease: the next replica takes over at once.
    let third_options = OperatorOptions {
        label: format!("{}-c", setup.options.label),
        ..setup.options.clone()
    };
    let mut third = OperatorProcess::spawn(&third_options).expect("third replica");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(!third.is_ready().await, "the third replica follows");
    let stopping = tokio::time::Instant::now();
    let exit = follower.terminate().expect("the leader stops on SIGTERM");
    assert!(exit.success(), "graceful exit: {exit:?}");
    third
        .wait_ready(Duration::from_secs(10))
        .await
        .expect("the lease was released and taken");
    let took = stopping.elapsed();
    assert!(
        took <= Duration::from_secs(8),
        "handover after release took {took:?}"
    );
    drop(third);
    setup.cleanup().await;
}
