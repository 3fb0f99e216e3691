//! The foundation against the real local control plane (`make control-plane-up`): our CRDs and
//! the upstream ClientIntents CRD install, ObservedTraffic status round-trips through server-side
//! apply and shows its printer columns in kubectl, the API server's schema accepts our drafts and
//! rejects invalid ones, the controller-manager runs, and ServiceAccount tokens can be reviewed.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::authentication::v1::{
    TokenRequest, TokenRequestSpec, TokenReview, TokenReviewSpec,
};
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{
    ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams,
};
use kube::core::GroupVersionKind;
use kube::{Api, Client, Resource};
use serde_json::json;
use trafficmap_api::observed::{
    InternetTarget, ObservedTarget, ObservedTrafficStatus, PortProtocol, Protocol, SeenBy,
};
use trafficmap_api::{
    ClientIntents, FIELD_MANAGER, ObservedTraffic, WorkloadRef, render_client_intents,
};
use trafficmap_e2e::cluster::{
    TestNamespace, admin_client, kubeconfig_path, unique_name, wait_for,
};
use trafficmap_e2e::crds::install_all;

async fn setup() -> Client {
    let client = admin_client().await.expect("control plane reachable");
    install_all(&client).await.expect("CRDs installed");
    client
}

fn at(secs: i64) -> Time {
    Time(Timestamp::from_second(secs).expect("valid timestamp"))
}

fn sample_status() -> ObservedTrafficStatus {
    ObservedTrafficStatus {
        targets: vec![ObservedTarget {
            name: "cartservice".into(),
            namespace: "shop".into(),
            kind: "Deployment".into(),
            service: Some("cartservice".into()),
            ports: vec![PortProtocol {
                port: 7070,
                protocol: Protocol::Tcp,
            }],
            dns_names: vec!["cartservice.shop.svc.cluster.local".into()],
            seen_by: vec![SeenBy::Dns, SeenBy::Tcp],
            first_seen: at(1_700_000_000),
            last_seen: at(1_700_000_100),
        }],
        internet_targets: vec![InternetTarget {
            dns_name: Some("api.example.com".into()),
            ips: vec!["192.0.2.10".into()],
            ports: vec![PortProtocol {
                port: 443,
                protocol: Protocol::Tcp,
            }],
            seen_by: vec![SeenBy::Dns, SeenBy::Tcp],
            first_seen: at(1_700_000_000),
            last_seen: at(1_700_000_050),
        }],
        target_count: 2,
        last_seen: Some(at(1_700_000_100)),
        ..ObservedTrafficStatus::default()
    }
}

fn kubectl(args: &[&str]) -> String {
    let out = Command::new("kubectl")
        .args(args)
        .env("KUBECONFIG", kubeconfig_path())
        .output()
        .expect("kubectl runs");
    assert!(
        out.status.success(),
        "kubectl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn our_crds_and_the_upstream_client_intents_crd_become_established() {
    let client = admin_client().await.expect("control plane reachable");
    let names = install_all(&client).await.expect("CRDs installed");
    assert!(names.contains(&"observedtraffics.trafficmap.io".to_string()));
    assert!(names.contains(&"clientintents.k8s.otterize.com".to_string()));
}

#[tokio::test]
async fn observed_traffic_status_round_trips_through_server_side_apply() {
    let client = setup().await;
    let api = Api::<ObservedTraffic>::all(client.clone());
    let workload = unique_name("checkout");
    let mut object = ObservedTraffic::for_client(WorkloadRef {
        name: workload.clone(),
        namespace: "shop".into(),
        kind: "Deployment".into(),
    });
    let name = object.metadata.name.clone().expect("named");
    let params = PatchParams::apply(FIELD_MANAGER);
    api.patch(&name, &params, &Patch::Apply(&object))
        .await
        .expect("spec applied");
    object.status = Some(sample_status());
    api.patch_status(&name, &params, &Patch::Apply(&object))
        .await
        .expect("status applied");

    let read = api.get(&name).await.expect("read back");
    assert_eq!(read.spec, object.spec);
    assert_eq!(read.status, Some(sample_status()));

    let table = kubectl(&["get", "observedtraffic", &name]);
    let mut lines = table.lines();
    let header: Vec<&str> = lines.next().expect("header").split_whitespace().collect();
    assert_eq!(
        header,
        [
            "NAME",
            "CLIENT",
            "NAMESPACE",
            "KIND",
            "TARGETS",
            "LAST",
            "SEEN"
        ]
    );
    let row: Vec<&str> = lines.next().expect("row").split_whitespace().collect();
    assert_eq!(
        &row[..5],
        [name.as_str(), &workload, "shop", "Deployment", "2"]
    );
    let short = kubectl(&["get", "ot", &name, "-o", "jsonpath={.status.targetCount}"]);
    assert_eq!(short, "2");

    api.delete(&name, &DeleteParams::default())
        .await
        .expect("deleted");
}

#[tokio::test]
async fn the_api_server_accepts_our_client_intents_and_rejects_invalid_ones() {
    let client = setup().await;
    let ns = TestNamespace::create(&client, "tm-it-intents")
        .await
        .expect("namespace");
    let mut observed = ObservedTraffic::for_client(WorkloadRef {
        name: "checkoutservice".into(),
        namespace: ns.name.clone(),
        kind: "Deployment".into(),
    });
    let mut status = sample_status();
    status.targets.push(ObservedTarget {
        name: "kubernetes".into(),
        namespace: "default".into(),
        kind: "Service".into(),
        ..status.targets[0].clone()
    });
    observed.status = Some(status);
    let draft = render_client_intents(&observed);
    let api = Api::<ClientIntents>::namespaced(client.clone(), &ns.name);
    let created = api
        .create(&PostParams::default(), &draft)
        .await
        .expect("draft accepted by the upstream schema");
    assert_eq!(created.spec, draft.spec);

    let gvk = GroupVersionKind::gvk(
        &ClientIntents::group(&()),
        &ClientIntents::version(&()),
        &ClientIntents::kind(&()),
    );
    let resource = ApiResource::from_gvk_with_plural(&gvk, &ClientIntents::plural(&()));
    let dynamic = Api::<DynamicObject>::namespaced_with(client.clone(), &ns.name, &resource);
    let invalid = DynamicObject::new("invalid", &resource).data(json!({
        "spec": {"workload": {"name": "x"}, "targets": [{"kubernetes": {"kind": "Deployment"}}]}
    }));
    let err = dynamic
        .create(&PostParams::default(), &invalid)
        .await
        .expect_err("a kubernetes target without a name is invalid");
    match err {
        kube::Error::Api(status) => assert_eq!(status.code, 422, "{status:?}"),
        other => panic!("expected a 422 from schema validation, got {other:?}"),
    }

    ns.delete().await.expect("namespace deleted");
}

#[tokio::test]
async fn a_deployment_gets_a_replicaset_from_the_controller_manager() {
    let client = admin_client().await.expect("control plane reachable");
    let ns = TestNamespace::create(&client, "tm-it-deploy")
        .await
        .expect("namespace");
    let labels = BTreeMap::from([("app".to_string(), "web".to_string())]);
    let deployment: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"schedulerName": trafficmap_e2e::fixtures::SELF_SCHEDULED,
                         "containers": [{"name": "web", "image": "example.invalid/web:1"}]}
            }
        }
    }))
    .expect("deployment");
    let created = Api::<Deployment>::namespaced(client.clone(), &ns.name)
        .create(&PostParams::default(), &deployment)
        .await
        .expect("deployment created");
    let uid = created.metadata.uid.expect("uid");

    let replicasets = Api::<ReplicaSet>::namespaced(client.clone(), &ns.name);
    let owned =
        wait_for(
            "a ReplicaSet owned by the Deployment",
            Duration::from_secs(30),
            || async {
                let list = replicasets
                    .list(&ListParams::default())
                    .await
                    .map_err(trafficmap_e2e::kube_context("list replicasets"))?;
                Ok(list.items.into_iter().find(|rs| {
                    rs.metadata.owner_references.iter().flatten().any(|o| {
                        o.kind == "Deployment" && o.uid == uid && o.controller == Some(true)
                    })
                }))
            },
        )
        .await
        .expect("controller-manager created the ReplicaSet");
    assert_eq!(owned.spec.and_then(|s| s.replicas), Some(2));

    ns.delete().await.expect("namespace deleted");
}

#[tokio::test]
async fn service_account_tokens_are_issued_and_reviewed_for_an_audience() {
    let client = admin_client().await.expect("control plane reachable");
    let ns = TestNamespace::create(&client, "tm-it-token")
        .await
        .expect("namespace");
    let accounts = Api::<ServiceAccount>::namespaced(client.clone(), &ns.name);
    let account: ServiceAccount =
        serde_json::from_value(json!({"metadata": {"name": "sniffer"}})).expect("account");
    accounts
        .create(&PostParams::default(), &account)
        .await
        .expect("service account created");
    let request = TokenRequest {
        spec: Some(TokenRequestSpec {
            audiences: Some(vec!["trafficmap".into()]),
            expiration_seconds: Some(600),
            ..TokenRequestSpec::default()
        }),
        ..TokenRequest::default()
    };
    let issued: TokenRequest = accounts
        .create_subresource("token", "sniffer", &PostParams::default(), &request)
        .await
        .expect("token issued");
    let token = issued
        .status
        .and_then(|s| s.token)
        .expect("token in status");

    let reviews = Api::<TokenReview>::all(client.clone());
    let review = |audience: &str| TokenReview {
        spec: TokenReviewSpec {
            token: token.clone(),
            audiences: Some(vec![audience.to_string()]),
        },
        ..TokenReview::default()
    };
    let accepted = reviews
        .create(&PostParams::default(), &review("trafficmap"))
        .await
        .expect("review")
        .status
        .expect("status");
    assert_eq!(accepted.authenticated, Some(true), "{accepted:?}");
    assert_eq!(
        accepted.user.and_then(|u| u.username),
        Some(format!("system:serviceaccount:{}:sniffer", ns.name))
    );
    let refused = reviews
        .create(&PostParams::default(), &review("another-audience"))
        .await
        .expect("review")
        .status
        .expect("status");
    assert_ne!(refused.authenticated, Some(true), "{refused:?}");

    ns.delete().await.expect("namespace deleted");
}
