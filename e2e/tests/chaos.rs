//! The fast chaos cases of issue 9 as tests, so `make test` runs them; `make chaos` runs these
//! and the slow ones (`trafficmap-chaos`). One at a time: they share the cluster-scoped CRDs.

use trafficmap_e2e::chaos::{Outcome, cases};

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn run(name: &str) {
    let _serial = SERIAL.lock().await;
    let case = cases()
        .into_iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no chaos case {name}"));
    assert!(!case.slow, "{name} is a slow case: make chaos runs it");
    let outcome: Outcome = (case.run)().await;
    if let Err(why) = outcome {
        panic!("chaos: {name}: fail {why}");
    }
}

#[tokio::test]
async fn chaos_ingest_limits() {
    run("ingest-limits").await;
}

#[tokio::test]
async fn chaos_forged_reports() {
    run("forged-reports").await;
}

#[tokio::test]
async fn chaos_hand_edits_settle() {
    run("hand-edits-settle").await;
}

#[tokio::test]
async fn chaos_sniffer_restarted() {
    run("sniffer-restarted").await;
}

#[tokio::test]
async fn chaos_no_secrets_in_logs() {
    run("no-secrets-in-logs").await;
}
