//! No secret or token appears in any log line: the operator is sent real, forged and garbage
//! tokens, restarted (so it reads its TLS Secret again), and then its log, and the operator and
//! sniffer logs of every other chaos case, are searched for the tokens themselves, anything shaped like a
//! JWT, bearer headers and private-key material.

use std::path::PathBuf;

use base64::Engine as _;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;

use super::harness::{NAMESPACE_PREFIX, Setup, report};
use super::{Outcome, ensure, step};
use crate::cluster::repo_root;
use crate::kube_context;
use crate::operator::{OperatorProcess, service_account_token};

/// What no log line may hold whatever the token: the start of every JWT's header
/// (`{"alg":` in base64url), an Authorization header, PEM private keys.
const FORBIDDEN_SHAPES: [&str; 4] = ["eyJhbGciOi", "Bearer ", "PRIVATE KEY", "authorization:"];

/// Operator and sniffer logs of every chaos case (this run's and earlier ones still on disk).
fn chaos_logs() -> Vec<PathBuf> {
    let dir = repo_root().join("target/e2e-logs");
    std::fs::read_dir(&dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.is_file()
                        && p.file_name()
                            .and_then(|n| n.to_str())
                            .is_some_and(|n| n.starts_with(NAMESPACE_PREFIX) && n.ends_with(".log"))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The first line of `text` holding one of `needles`, as `(needle, line number)`.
fn find_any<'a>(text: &str, needles: &'a [String]) -> Option<(&'a str, usize)> {
    text.lines().enumerate().find_map(|(n, line)| {
        needles
            .iter()
            .find(|needle| line.contains(needle.as_str()))
            .map(|needle| (needle.as_str(), n + 1))
    })
}

/// See the module docs.
pub async fn no_secrets_in_logs() -> Outcome {
    let mut setup = step("start", Setup::new("logs", &[]).await)?;
    let outcome = no_secrets_in_logs_in(&mut setup).await;
    setup.cleanup().await;
    outcome
}

async fn no_secrets_in_logs_in(setup: &mut Setup) -> Outcome {
    let ns = setup.ns.name.clone();
    let other = step(
        "token",
        service_account_token(&setup.client, &ns, "intruder", "trafficmap").await,
    )?;
    let wrong_audience = step(
        "token",
        service_account_token(&setup.client, &ns, "sniffer", "elsewhere").await,
    )?;
    let garbage = format!("tm-garbage-secret-{}", super::harness::now_ms());
    let tokens = [setup.token.clone(), other, wrong_audience, garbage];
    for token in &tokens {
        let body = step("body", report(vec![]))?;
        step("post", setup.post(Some(token), body).await)?;
    }
    step("post", setup.post(None, b"{\"version\":1".to_vec()).await)?;
    setup.operator.kill();
    setup.operator = step("restart", OperatorProcess::start(&setup.options).await)?;
    let body = step("body", report(vec![]))?;
    step("post", setup.post(Some(&setup.token), body).await)?;

    let tls = step(
        "TLS Secret",
        Api::<Secret>::namespaced(setup.client.clone(), &ns)
            .get("trafficmap-operator-tls")
            .await
            .map_err(kube_context("get TLS Secret")),
    )?;
    let mut needles: Vec<String> = tokens.to_vec();
    // Every line of every private key, as PEM text and as the Secret's base64.
    for (key, value) in tls.data.unwrap_or_default() {
        if !key.ends_with(".key") {
            continue;
        }
        let pem = String::from_utf8_lossy(&value.0).into_owned();
        needles.extend(
            pem.lines()
                .filter(|l| l.len() >= 40 && !l.starts_with("-----"))
                .map(str::to_string),
        );
        needles.push(base64::engine::general_purpose::STANDARD.encode(&value.0)[..40].to_string());
    }
    needles.extend(FORBIDDEN_SHAPES.iter().map(|s| s.to_string()));

    let mut logs = chaos_logs();
    if !logs.contains(&setup.operator.log) {
        logs.push(setup.operator.log.clone());
    }
    ensure(!logs.is_empty(), || "no operator logs to search".into())?;
    let mut lines = 0usize;
    for log in &logs {
        let text = std::fs::read_to_string(log).map_err(|e| format!("{}: {e}", log.display()))?;
        lines += text.lines().count();
        if let Some((needle, line)) = find_any(&text, &needles) {
            let shown: String = needle.chars().take(12).collect();
            return Err(format!(
                "{}:{line} holds a secret ({shown}...)",
                log.display()
            ));
        }
    }
    ensure(lines > 0, || "the operator logs are empty".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_line_holding_a_needle_is_found() {
        let needles = vec!["eyJhbGciOi".to_string(), "secret".to_string()];
        assert_eq!(find_any("a\nb secret\nc", &needles), Some(("secret", 2)));
        assert_eq!(find_any("nothing here", &needles), None);
    }
}
