//! Hostile input at the ingest endpoint: bodies at and past the size limit, a slow-drip body,
//! invalid UTF-8 and over-long names, and reports signed by anyone but the sniffer.

use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::{DeleteParams, ObjectMeta, PostParams};
use trafficmap_api::report::{ClientId, DnsObservation};
use trafficmap_api::{Observation, report::validate_dns_name};

use super::harness::{Setup, connection, ip, report};
use super::{Outcome, ensure, step};
use crate::operator::service_account_token;
use crate::{Error, http};

/// Body limit the ingest case runs the operator with.
const LIMIT_BYTES: usize = 4096;

/// `body` padded with trailing spaces (still valid JSON) to exactly `len` bytes.
fn padded(mut body: Vec<u8>, len: usize) -> Vec<u8> {
    body.resize(len.max(body.len()), b' ');
    body
}

/// A report body with a DNS observation whose name is replaced, byte for byte, by `name`
/// (which may be invalid UTF-8).
fn dns_body_with_name(client: std::net::IpAddr, name: &[u8]) -> crate::Result<Vec<u8>> {
    const PLACEHOLDER: &str = "placeholder.example.com";
    let body = report(vec![Observation::Dns(DnsObservation {
        client: ClientId {
            ip: client,
            pod_uid: None,
        },
        name: PLACEHOLDER.into(),
        ips: vec![ip("93.184.216.34")?],
        ttl_seconds: 30,
        first_seen_ms: super::harness::now_ms(),
        last_seen_ms: super::harness::now_ms(),
    })])?;
    let at = body
        .windows(PLACEHOLDER.len())
        .position(|w| w == PLACEHOLDER.as_bytes())
        .ok_or_else(|| Error::Exited("placeholder not in the body".into()))?;
    let mut out = body[..at].to_vec();
    out.extend_from_slice(name);
    out.extend_from_slice(&body[at + PLACEHOLDER.len()..]);
    Ok(out)
}

/// Report body at the size limit + 1 byte: 413; at the limit: accepted; a slow-drip body:
/// timed out (408, counted); invalid UTF-8 and over-long or malformed names: 400, and nothing
/// but the valid report is stored.
pub async fn ingest_limits() -> Outcome {
    let limit = LIMIT_BYTES.to_string();
    let setup = step(
        "start",
        Setup::new(
            "ingest",
            &["--max-body-bytes", &limit, "--body-timeout", "2s"],
        )
        .await,
    )?;
    let outcome = ingest_limits_in(&setup).await;
    setup.cleanup().await;
    outcome
}

async fn ingest_limits_in(setup: &Setup) -> Outcome {
    let pair = step(
        "workloads",
        setup.client_and_server("10.244.40", true).await,
    )?;
    let (client_ip, cluster_ip) = (pair.client, pair.cluster_ip);
    let token = Some(setup.token.as_str());

    let valid = step("body", report(vec![connection(client_ip, cluster_ip, 80)]))?;
    let over = step(
        "post",
        setup
            .post(token, padded(valid.clone(), LIMIT_BYTES + 1))
            .await,
    )?;
    ensure(over == 413, || {
        format!("limit + 1 byte got {over}, not 413")
    })?;
    let at = step(
        "post",
        setup.post(token, padded(valid.clone(), LIMIT_BYTES)).await,
    )?;
    ensure(at == 202, || {
        format!("a body of exactly the limit got {at}, not 202")
    })?;

    let long_label = "a".repeat(64) + ".example.com";
    let long_name = ["abcdefghij"; 26].join(".");
    let hostile: Vec<(&str, Vec<u8>)> = vec![
        ("invalid UTF-8", b"bad\xff\xfename.example.com".to_vec()),
        ("a 64-byte label", long_label.into_bytes()),
        ("a 285-byte name", long_name.into_bytes()),
        ("a name with a newline", b"evil\\nname.example.com".to_vec()),
        ("an upper-case name", b"Evil.Example.com".to_vec()),
        ("a NUL", b"evil\\u0000.example.com".to_vec()),
    ];
    for (what, name) in &hostile {
        let body = step("body", dns_body_with_name(client_ip, name))?;
        let status = step("post", setup.post(token, body).await)?;
        ensure(status == 400, || format!("{what} got {status}, not 400"))?;
    }

    let chunks: Vec<Vec<u8>> = valid.chunks(8).map(<[u8]>::to_vec).collect();
    let dripped = http::slow_post(
        &setup.operator.ingest_url,
        Some(&setup.ca),
        token,
        chunks,
        Duration::from_millis(500),
    )
    .await;
    if let Ok((status, _)) = &dripped {
        ensure(*status == 408, || {
            format!("a slow-drip body got {status}, not 408")
        })?;
    }
    let timeouts = step(
        "metrics",
        setup
            .metric("trafficmap_operator_reports_rejected_total{reason=\"body_timeout\"}")
            .await,
    )?;
    ensure(timeouts == 1.0, || {
        format!("slow-drip body: {timeouts} body timeouts counted (client saw {dripped:?})")
    })?;

    step(
        "targets",
        setup.wait_for_targets("client", &["server"]).await,
    )?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let stored = step("read", setup.all_observed().await)?;
    ensure(stored.len() == 1, || {
        format!("{} ObservedTraffic objects, not 1", stored.len())
    })?;
    let status = stored[0].status.clone().unwrap_or_default();
    ensure(status.internet_targets.is_empty(), || {
        format!(
            "a rejected DNS name was stored: {:?}",
            status.internet_targets
        )
    })?;
    for name in status.targets.iter().flat_map(|t| t.dns_names.iter()) {
        ensure(validate_dns_name(name).is_ok(), || {
            format!("garbage stored: {name:?}")
        })?;
    }
    let too_large = step(
        "metrics",
        setup
            .metric("trafficmap_operator_reports_rejected_total{reason=\"too_large\"}")
            .await,
    )?;
    ensure(too_large == 1.0, || {
        format!("{too_large} too-large rejections counted, not 1")
    })?;
    let malformed = step(
        "metrics",
        setup
            .metric("trafficmap_operator_reports_rejected_total{reason=\"malformed\"}")
            .await,
    )?;
    ensure(malformed == hostile.len() as f64, || {
        format!(
            "{malformed} malformed rejections counted, not {}",
            hostile.len()
        )
    })
}

/// Reports without a token, with garbage, a forged token (claims edited, signature kept), a
/// wrong audience, another ServiceAccount's token, a token whose bound Secret was deleted
/// (revoked) and an expired one: rejected, counted, nothing recorded. The real sniffer token
/// still works, and so does a token minted like the expired one but still valid.
pub async fn forged_reports() -> Outcome {
    let setup = step("start", Setup::new("forged", &[]).await)?;
    let outcome = forged_reports_in(&setup).await;
    setup.cleanup().await;
    outcome
}

async fn forged_reports_in(setup: &Setup) -> Outcome {
    let pair = step(
        "workloads",
        setup.client_and_server("10.244.41", true).await,
    )?;
    let (client_ip, cluster_ip) = (pair.client, pair.cluster_ip);
    let ns = setup.ns.name.as_str();
    let other = step(
        "token",
        service_account_token(&setup.client, ns, "intruder", "trafficmap").await,
    )?;
    let wrong_audience = step(
        "token",
        service_account_token(&setup.client, ns, "sniffer", "kubernetes").await,
    )?;
    let revoked = step("token", secret_bound_token(setup).await)?;
    let forged = forge(&setup.token, "sniffer", "intruder")?;
    let now = super::tokens::now_seconds();
    // Expired an hour ago: past the API server's leeway.
    let expired =
        super::tokens::mint(&setup.client, ns, "sniffer", "trafficmap", now - 3600).await?;
    let minted = super::tokens::mint(&setup.client, ns, "sniffer", "trafficmap", now + 600).await?;

    let cases: [(&str, Option<&str>, u16); 7] = [
        ("no token", None, 401),
        ("garbage", Some("not-a-token"), 401),
        ("forged claims", Some(&forged), 401),
        ("wrong audience", Some(&wrong_audience), 401),
        ("revoked (bound Secret deleted)", Some(&revoked), 401),
        ("expired an hour ago", Some(&expired), 401),
        ("another ServiceAccount", Some(&other), 403),
    ];
    for (what, token, want) in cases {
        let body = step("body", report(vec![connection(client_ip, cluster_ip, 80)]))?;
        let got = step("post", setup.post(token, body).await)?;
        ensure(got == want, || format!("{what}: got {got}, not {want}"))?;
    }
    tokio::time::sleep(Duration::from_secs(4)).await;
    let stored = step("read", setup.all_observed().await)?;
    ensure(stored.is_empty(), || {
        format!(
            "a rejected report was recorded: {:?}",
            stored.iter().map(|o| &o.metadata.name).collect::<Vec<_>>()
        )
    })?;
    for (reason, want) in [
        ("missing_token", 1.0),
        ("not_authenticated", 5.0),
        ("wrong_identity", 1.0),
    ] {
        let series = format!("trafficmap_operator_reports_rejected_total{{reason=\"{reason}\"}}");
        let got = step("metrics", setup.metric(&series).await)?;
        ensure(got == want, || {
            format!("{reason}: {got} counted, not {want}")
        })?;
    }
    let body = step("body", report(vec![connection(client_ip, cluster_ip, 80)]))?;
    let ok = step("post", setup.post(Some(&setup.token), body).await)?;
    ensure(ok == 202, || format!("the sniffer's own token got {ok}"))?;
    // The same minting with a future expiry is accepted: the expired one failed on its expiry.
    let body = step("body", report(vec![connection(client_ip, cluster_ip, 80)]))?;
    let ok = step("post", setup.post(Some(&minted), body).await)?;
    ensure(ok == 202, || {
        format!("a minted token that has not expired got {ok}")
    })?;
    step(
        "targets",
        setup.wait_for_targets("client", &["server"]).await,
    )
}

/// A sniffer token bound to a Secret that is then deleted: the API server must refuse it.
async fn secret_bound_token(setup: &Setup) -> crate::Result<String> {
    use k8s_openapi::api::authentication::v1::{
        BoundObjectReference, TokenRequest, TokenRequestSpec,
    };
    use k8s_openapi::api::core::v1::ServiceAccount;
    let ns = setup.ns.name.as_str();
    let secrets = Api::<Secret>::namespaced(setup.client.clone(), ns);
    let secret = secrets
        .create(
            &PostParams::default(),
            &Secret {
                metadata: ObjectMeta {
                    name: Some("binding".into()),
                    ..ObjectMeta::default()
                },
                ..Secret::default()
            },
        )
        .await
        .map_err(crate::kube_context("create Secret binding"))?;
    let request = TokenRequest {
        spec: Some(TokenRequestSpec {
            audiences: Some(vec!["trafficmap".into()]),
            expiration_seconds: Some(3600),
            bound_object_ref: Some(BoundObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Secret".into()),
                name: Some("binding".into()),
                uid: secret.metadata.uid.clone(),
            }),
        }),
        ..TokenRequest::default()
    };
    let issued: TokenRequest = Api::<ServiceAccount>::namespaced(setup.client.clone(), ns)
        .create_subresource("token", "sniffer", &PostParams::default(), &request)
        .await
        .map_err(crate::kube_context("bound token"))?;
    let token = issued
        .status
        .and_then(|s| s.token)
        .ok_or_else(|| Error::Exited("TokenRequest returned no token".into()))?;
    secrets
        .delete("binding", &DeleteParams::default())
        .await
        .map_err(crate::kube_context("delete Secret binding"))?;
    // Deletion is visible to TokenReview once the Secret is gone from the API.
    crate::cluster::wait_for("the bound Secret gone", Duration::from_secs(10), || async {
        Ok(secrets
            .get_opt("binding")
            .await
            .map_err(crate::kube_context("get Secret"))?
            .is_none()
            .then_some(()))
    })
    .await?;
    Ok(token)
}

/// `token` with `from` replaced by `to` in its claims and the signature kept.
fn forge(token: &str, from: &str, to: &str) -> std::result::Result<String, String> {
    use base64::Engine as _;
    let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let parts: Vec<&str> = token.split('.').collect();
    let [header, claims, signature] = parts.as_slice() else {
        return Err("the sniffer token is not a JWT".into());
    };
    let claims = engine
        .decode(claims)
        .map_err(|e| format!("JWT payload: {e}"))?;
    let edited = String::from_utf8_lossy(&claims).replace(from, to);
    Ok(format!("{header}.{}.{signature}", engine.encode(edited)))
}
