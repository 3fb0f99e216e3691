//! Scoring a scenario: the edges ObservedTraffic and the draft ClientIntents report against the
//! expected map. An edge is `client -> target` with ids `name.namespace` or
//! `internet:<dns name>`. An edge counts as found when BOTH sources report it; anything either
//! source reports that is not expected is unexpected.

use std::collections::{BTreeMap, BTreeSet};

use kube::api::ListParams;
use kube::{Api, Client};
use trafficmap_api::coverage::{internet_target_id, target_id};
use trafficmap_api::intents::ClientIntents;
use trafficmap_api::observed::ObservedTraffic;

use crate::{Result, kube_context};

/// client id -> target ids.
pub type EdgeMap = BTreeMap<String, BTreeSet<String>>;

/// The score of one run.
#[derive(Debug, Clone, PartialEq)]
pub struct Score {
    /// Found expected edges / expected edges (1 when nothing is expected).
    pub recall: f64,
    /// Expected reported edges / reported edges (1 when nothing is reported).
    pub precision: f64,
    /// Expected edges.
    pub expected: usize,
    /// Edges reported by either source.
    pub observed: usize,
    /// Expected edges not reported by both sources: `client -> target (source)`.
    pub missing: Vec<String>,
    /// Reported edges that were not expected: `client -> target (source)`.
    pub unexpected: Vec<String>,
}

impl Score {
    /// Both 1.000.
    pub fn perfect(&self) -> bool {
        self.missing.is_empty() && self.unexpected.is_empty()
    }

    /// The report: the score line, then missing and unexpected edges.
    pub fn render(&self) -> String {
        let mut out = format!(
            "recall={:.3} precision={:.3} expected={} observed={}\n",
            self.recall, self.precision, self.expected, self.observed
        );
        for m in &self.missing {
            out.push_str(&format!("missing: {m}\n"));
        }
        for u in &self.unexpected {
            out.push_str(&format!("unexpected: {u}\n"));
        }
        out
    }
}

fn edges(map: &EdgeMap) -> BTreeSet<(String, String)> {
    map.iter()
        .flat_map(|(c, ts)| ts.iter().map(move |t| (c.clone(), t.clone())))
        .collect()
}

/// Scores `observed` (from ObservedTraffic) and `intents` (from ClientIntents) against `expected`.
pub fn score(expected: &EdgeMap, observed: &EdgeMap, intents: &EdgeMap) -> Score {
    let expected_edges = edges(expected);
    let observed_edges = edges(observed);
    let intent_edges = edges(intents);
    let reported: BTreeSet<_> = observed_edges.union(&intent_edges).cloned().collect();
    let mut missing = Vec::new();
    let mut found = 0usize;
    for edge in &expected_edges {
        let (in_ot, in_ci) = (observed_edges.contains(edge), intent_edges.contains(edge));
        if in_ot && in_ci {
            found += 1;
        } else {
            let source = match (in_ot, in_ci) {
                (false, false) => "ObservedTraffic and ClientIntents",
                (false, true) => "ObservedTraffic",
                _ => "ClientIntents",
            };
            missing.push(format!("{} -> {} (not in {source})", edge.0, edge.1));
        }
    }
    let mut unexpected = Vec::new();
    let mut correct = 0usize;
    for edge in &reported {
        if expected_edges.contains(edge) {
            correct += 1;
        } else {
            let source = match (observed_edges.contains(edge), intent_edges.contains(edge)) {
                (true, true) => "ObservedTraffic and ClientIntents",
                (true, false) => "ObservedTraffic",
                _ => "ClientIntents",
            };
            unexpected.push(format!("{} -> {} (in {source})", edge.0, edge.1));
        }
    }
    let ratio = |a: usize, b: usize| if b == 0 { 1.0 } else { a as f64 / b as f64 };
    Score {
        recall: ratio(found, expected_edges.len()),
        precision: ratio(correct, reported.len()),
        expected: expected_edges.len(),
        observed: reported.len(),
        missing,
        unexpected,
    }
}

/// The edges ObservedTraffic reports for clients in `namespaces`.
pub fn observed_edges(objects: &[ObservedTraffic], namespaces: &BTreeSet<String>) -> EdgeMap {
    let mut map = EdgeMap::new();
    for ot in objects {
        let client = &ot.spec.client;
        if !namespaces.contains(&client.namespace) {
            continue;
        }
        let targets = map
            .entry(format!("{}.{}", client.name, client.namespace))
            .or_default();
        if let Some(status) = &ot.status {
            targets.extend(status.targets.iter().map(target_id));
            targets.extend(status.internet_targets.iter().map(internet_target_id));
        }
    }
    map.retain(|_, t| !t.is_empty());
    map
}

/// The edges trafficmap's draft ClientIntents allow.
pub fn intent_edges(objects: &[ClientIntents]) -> EdgeMap {
    let mut map = EdgeMap::new();
    for ci in objects {
        let namespace = ci.metadata.namespace.clone().unwrap_or_default();
        let qualify = |name: &str| {
            if name.contains('.') {
                name.to_string()
            } else {
                format!("{name}.{namespace}")
            }
        };
        let targets = map
            .entry(format!("{}.{namespace}", ci.spec.workload.name))
            .or_default();
        for t in &ci.spec.targets {
            if let Some(k) = &t.kubernetes {
                targets.insert(qualify(&k.name));
            }
            if let Some(s) = &t.service {
                targets.insert(qualify(&s.name));
            }
            if let Some(i) = &t.internet {
                targets.extend(i.domains.iter().map(|d| format!("internet:{d}")));
                if i.domains.is_empty() && !i.ips.is_empty() {
                    targets.insert(format!("internet:{}", i.ips.join(",")));
                }
            }
        }
    }
    map.retain(|_, t| !t.is_empty());
    map
}

/// Reads ObservedTraffic (all) and trafficmap's ClientIntents in `namespaces`.
pub async fn read_maps(
    client: &Client,
    namespaces: &BTreeSet<String>,
) -> Result<(EdgeMap, EdgeMap)> {
    let ots = Api::<ObservedTraffic>::all(client.clone())
        .list(&ListParams::default())
        .await
        .map_err(kube_context("list ObservedTraffic"))?;
    let mut cis = Vec::new();
    for ns in namespaces {
        let list = Api::<ClientIntents>::namespaced(client.clone(), ns)
            .list(&ListParams::default().labels("app.kubernetes.io/managed-by=trafficmap"))
            .await
            .map_err(kube_context(format!("list ClientIntents in {ns}")))?;
        cis.extend(list.items);
    }
    Ok((observed_edges(&ots.items, namespaces), intent_edges(&cis)))
}

/// An edge map from `(client, [targets])` pairs, for tests.
#[cfg(test)]
pub(crate) fn map(entries: &[(&str, &[&str])]) -> EdgeMap {
    entries
        .iter()
        .map(|(c, ts)| (c.to_string(), ts.iter().map(|t| t.to_string()).collect()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_perfect_map_scores_one() {
        let expected = map(&[("client.ns", &["server.ns"])]);
        let s = score(&expected, &expected, &expected);
        assert!(s.perfect());
        assert_eq!(
            s.render(),
            "recall=1.000 precision=1.000 expected=1 observed=1\n"
        );
    }

    #[test]
    fn missing_and_unexpected_edges_are_named_with_their_source() {
        let expected = map(&[("a.ns", &["b.ns", "c.ns"])]);
        let observed = map(&[("a.ns", &["b.ns", "d.ns"])]);
        let intents = map(&[("a.ns", &["b.ns", "c.ns"])]);
        let s = score(&expected, &observed, &intents);
        assert_eq!(s.recall, 0.5);
        assert!((s.precision - 2.0 / 3.0).abs() < 1e-9);
        assert_eq!(s.missing, vec!["a.ns -> c.ns (not in ObservedTraffic)"]);
        assert_eq!(s.unexpected, vec!["a.ns -> d.ns (in ObservedTraffic)"]);
        assert!(!s.perfect());
    }
}
