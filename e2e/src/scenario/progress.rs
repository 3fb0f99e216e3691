//! Progress while a scenario's traffic flows: every few seconds, how many pods run and how much
//! of the expected map ObservedTraffic and the drafts already show, so a newcomer watching
//! `make demo` sees the map being built rather than a silent wait.

use std::collections::BTreeSet;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;
use kube::{Api, Client};

use super::compare::{EdgeMap, read_maps};

/// Time between two progress lines.
pub const PROGRESS_INTERVAL: Duration = Duration::from_secs(3);

/// Expected edges that `found` holds, and all edges it holds.
pub fn coverage(expected: &EdgeMap, found: &EdgeMap) -> (usize, usize) {
    let total = found.values().map(BTreeSet::len).sum();
    let hits = expected
        .iter()
        .map(|(client, targets)| {
            found
                .get(client)
                .map_or(0, |f| targets.intersection(f).count())
        })
        .sum();
    (hits, total)
}

/// One progress line: `elapsed` of `duration`, running pods, and map coverage.
pub fn line(
    elapsed: Duration,
    duration: Duration,
    running: usize,
    expected: &EdgeMap,
    observed: &EdgeMap,
    intents: &EdgeMap,
) -> String {
    let want: usize = expected.values().map(BTreeSet::len).sum();
    let (seen, seen_total) = coverage(expected, observed);
    let (drafted, _) = coverage(expected, intents);
    format!(
        "scenario: {:>3}s of {}s: {running} pods running; ObservedTraffic has {seen}/{want} expected \
         edges ({seen_total} in all), drafts {drafted}/{want}",
        elapsed.as_secs(),
        duration.as_secs()
    )
}

/// Prints a progress line every [`PROGRESS_INTERVAL`] until dropped (run it in a task and
/// abort it). Read errors are shown, not fatal: the scenario itself decides the outcome.
pub async fn report(
    client: Client,
    namespaces: BTreeSet<String>,
    expected: EdgeMap,
    duration: Duration,
) {
    let start = tokio::time::Instant::now();
    loop {
        tokio::time::sleep(PROGRESS_INTERVAL).await;
        let running = running_pods(&client, &namespaces).await;
        match read_maps(&client, &namespaces).await {
            Ok((observed, intents)) => eprintln!(
                "{}",
                line(
                    start.elapsed(),
                    duration,
                    running,
                    &expected,
                    &observed,
                    &intents
                )
            ),
            Err(e) => eprintln!("scenario: progress: {e}"),
        }
    }
}

async fn running_pods(client: &Client, namespaces: &BTreeSet<String>) -> usize {
    let mut running = 0;
    for ns in namespaces {
        if let Ok(pods) = Api::<Pod>::namespaced(client.clone(), ns)
            .list(&ListParams::default().fields("status.phase=Running"))
            .await
        {
            running += pods.items.len();
        }
    }
    running
}

#[cfg(test)]
mod tests {
    use super::super::compare::map;
    use super::*;

    #[test]
    fn progress_counts_expected_edges_found_and_all_edges() {
        let expected = map(&[("a.ns", &["b.ns", "c.ns"]), ("d.ns", &["b.ns"])]);
        let observed = map(&[("a.ns", &["b.ns", "x.ns"])]);
        let intents = map(&[]);
        assert_eq!(coverage(&expected, &observed), (1, 2));
        assert_eq!(
            line(
                Duration::from_secs(10),
                Duration::from_secs(60),
                4,
                &expected,
                &observed,
                &intents
            ),
            "scenario:  10s of 60s: 4 pods running; ObservedTraffic has 1/3 expected edges \
             (2 in all), drafts 0/3"
        );
    }
}
