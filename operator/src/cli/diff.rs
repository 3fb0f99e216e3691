//! `diff`: observed calls against ClientIntents. Per client, the calls its intents do not cover
//! (they would be blocked once the intents are enforced) and the declared calls never observed.
//! Coverage is decided by [`trafficmap_api::coverage`], the same code the operator uses.

use serde::Deserialize;
use trafficmap_api::coverage::{names_client, uncovered_targets, unobserved_intents};
use trafficmap_api::{ClientIntents, ObservedTraffic, WorkloadRef};

use crate::cli::filter::MapFilter;

/// API versions of ClientIntents whose spec has the shape trafficmap reads.
const SUPPORTED_VERSIONS: [&str; 2] = ["k8s.otterize.com/v2beta1", "k8s.otterize.com/v2alpha1"];

/// What differs for one client workload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientDiff {
    /// The client (kind empty when only known from intents).
    pub client: WorkloadRef,
    /// Whether any ClientIntents names this client.
    pub has_intents: bool,
    /// Observed calls the intents do not allow, as target ids.
    pub uncovered: Vec<String>,
    /// Declared targets no observed call used.
    pub unobserved: Vec<String>,
}

/// The whole comparison.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DiffReport {
    /// Clients with something to report, sorted by namespace and name.
    pub clients: Vec<ClientDiff>,
    /// Clients compared in all.
    pub compared: usize,
}

impl DiffReport {
    /// Whether any observed call is not covered (the exit code is 1 then).
    pub fn has_uncovered(&self) -> bool {
        self.clients.iter().any(|c| !c.uncovered.is_empty())
    }
}

/// Compares `observed` (already filtered) with `intents`. Intents whose namespace is unset (as
/// in files meant for `kubectl apply -n`) match a client of that workload name in any namespace.
pub fn diff(
    observed: &[ObservedTraffic],
    intents: &[ClientIntents],
    filter: &MapFilter,
) -> DiffReport {
    let mut used = vec![false; intents.len()];
    let mut clients = Vec::new();
    for o in observed {
        let client = &o.spec.client;
        let mut merged: Option<ClientIntents> = None;
        for (i, ci) in intents.iter().enumerate() {
            if names_client(ci, client) {
                used[i] = true;
                let m = merged.get_or_insert_with(|| {
                    let mut base = ClientIntents::default();
                    base.metadata.namespace = Some(client.namespace.clone());
                    base.spec.workload = ci.spec.workload.clone();
                    base
                });
                m.spec.targets.extend(ci.spec.targets.iter().cloned());
            }
        }
        let has_intents = merged.is_some();
        let merged = merged.unwrap_or_else(|| {
            let mut empty = ClientIntents::default();
            empty.metadata.namespace = Some(client.namespace.clone());
            empty
        });
        let uncovered = uncovered_targets(o, &merged);
        let unobserved: Vec<String> = unobserved_intents(Some(o), &merged)
            .into_iter()
            .filter(|id| filter.keeps_target_id(id))
            .collect();
        clients.push(ClientDiff {
            client: client.clone(),
            has_intents,
            uncovered,
            unobserved,
        });
    }
    for (ci, _) in intents.iter().zip(&used).filter(|(_, used)| !**used) {
        let namespace = ci.metadata.namespace.clone().unwrap_or_default();
        if !namespace.is_empty() && !filter.keeps_namespace(&namespace) {
            continue;
        }
        let unobserved: Vec<String> = unobserved_intents(None, ci)
            .into_iter()
            .filter(|id| filter.keeps_target_id(id))
            .collect();
        clients.push(ClientDiff {
            client: WorkloadRef {
                name: ci.spec.workload.name.clone(),
                namespace,
                kind: ci.spec.workload.kind.clone().unwrap_or_default(),
            },
            has_intents: true,
            uncovered: Vec::new(),
            unobserved,
        });
    }
    let compared = clients.len();
    clients.retain(|c| !c.uncovered.is_empty() || !c.unobserved.is_empty());
    clients.sort_by(|a, b| {
        (&a.client.namespace, &a.client.name).cmp(&(&b.client.namespace, &b.client.name))
    });
    DiffReport { clients, compared }
}

/// The text `diff` prints.
pub fn format_diff(report: &DiffReport) -> String {
    let mut out = String::new();
    for c in &report.clients {
        let namespace = if c.client.namespace.is_empty() {
            "(unset)"
        } else {
            c.client.namespace.as_str()
        };
        out.push_str(&format!("{} in namespace {namespace}", c.client.name));
        out.push_str(if c.has_intents {
            ":\n"
        } else {
            " (no ClientIntents):\n"
        });
        if !c.uncovered.is_empty() {
            out.push_str("  calls the intents do not cover (would be blocked once enforced):\n");
            for id in &c.uncovered {
                out.push_str(&format!("    - {id}\n"));
            }
        }
        if !c.unobserved.is_empty() {
            out.push_str("  declared calls never observed:\n");
            for id in &c.unobserved {
                out.push_str(&format!("    - {id}\n"));
            }
        }
        out.push('\n');
    }
    let uncovered: usize = report.clients.iter().map(|c| c.uncovered.len()).sum();
    let unobserved: usize = report.clients.iter().map(|c| c.unobserved.len()).sum();
    let blocked_clients = report
        .clients
        .iter()
        .filter(|c| !c.uncovered.is_empty())
        .count();
    if uncovered == 0 {
        out.push_str(&format!(
            "Every observed call of {} client(s) is covered by ClientIntents",
            report.compared
        ));
    } else {
        out.push_str(&format!(
            "{uncovered} observed call(s) of {blocked_clients} client(s) are not covered by ClientIntents"
        ));
    }
    out.push_str(&format!(
        "; {unobserved} declared call(s) never observed.\n"
    ));
    out
}

/// Reads the ClientIntents in one file's text: YAML (multi-document) or JSON, single objects,
/// arrays, or `kind: List`. Objects of other kinds are skipped; ClientIntents of a version whose
/// spec has another shape are an error.
pub fn parse_intents(text: &str) -> Result<Vec<ClientIntents>, String> {
    let mut found = Vec::new();
    for doc in serde_yaml_ng::Deserializer::from_str(text) {
        let value = serde_json::Value::deserialize(doc).map_err(|e| e.to_string())?;
        collect_intents(value, &mut found)?;
    }
    Ok(found)
}

fn collect_intents(value: serde_json::Value, found: &mut Vec<ClientIntents>) -> Result<(), String> {
    use serde_json::Value;
    match value {
        Value::Null => Ok(()),
        Value::Array(items) => items
            .into_iter()
            .try_for_each(|v| collect_intents(v, found)),
        Value::Object(ref map) => {
            let kind = map.get("kind").and_then(Value::as_str).unwrap_or_default();
            let api_version = map
                .get("apiVersion")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            if kind == "List" {
                let items = map.get("items").cloned().unwrap_or(Value::Null);
                return collect_intents(items, found);
            }
            if kind != "ClientIntents" {
                return Ok(());
            }
            if !SUPPORTED_VERSIONS.contains(&api_version.as_str()) {
                return Err(format!(
                    "ClientIntents {api_version} is not supported: convert it to k8s.otterize.com/v2beta1"
                ));
            }
            let intents: ClientIntents =
                serde_json::from_value(value).map_err(|e| format!("ClientIntents: {e}"))?;
            found.push(intents);
            Ok(())
        }
        _ => Err("expected a Kubernetes object".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::filter::ServerRef;
    use crate::cli::fixtures::{client, internet, target};

    const INTENTS: &str = "\
apiVersion: k8s.otterize.com/v2beta1
kind: ClientIntents
metadata:
  name: checkout
  namespace: shop
spec:
  workload:
    name: checkout
  targets:
  - kubernetes:
      name: cart
  - service:
      name: payments
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: unrelated
";

    fn map() -> Vec<ObservedTraffic> {
        vec![
            client(
                "checkout",
                "shop",
                vec![target("cart", "shop", 80), target("ledger", "pay", 9090)],
                vec![internet(Some("api.stripe.com"), &[], 443)],
            ),
            client(
                "web",
                "shop",
                vec![target("checkout", "shop", 5050)],
                vec![],
            ),
        ]
    }

    #[test]
    fn reports_uncovered_calls_and_declared_calls_never_seen() {
        let intents = parse_intents(INTENTS).expect("parses");
        assert_eq!(intents.len(), 1);
        let report = diff(&map(), &intents, &MapFilter::default());
        assert!(report.has_uncovered());
        assert_eq!(report.compared, 2);
        assert_eq!(
            report.clients,
            vec![
                ClientDiff {
                    client: map()[0].spec.client.clone(),
                    has_intents: true,
                    uncovered: vec!["internet:api.stripe.com".into(), "ledger.pay".into()],
                    unobserved: vec!["payments.shop".into()],
                },
                ClientDiff {
                    client: map()[1].spec.client.clone(),
                    has_intents: false,
                    uncovered: vec!["checkout.shop".into()],
                    unobserved: vec![],
                },
            ]
        );
        let text = format_diff(&report);
        assert!(text.contains("web in namespace shop (no ClientIntents):\n  calls the intents do not cover (would be blocked once enforced):\n    - checkout.shop\n"), "{text}");
        assert!(text.ends_with("3 observed call(s) of 2 client(s) are not covered by ClientIntents; 1 declared call(s) never observed.\n"), "{text}");
    }

    #[test]
    fn covered_calls_give_a_clean_report() {
        let exported: Vec<_> = crate::cli::export::render_all(&map())
            .into_iter()
            .map(|e| e.intents)
            .collect();
        let report = diff(&map(), &exported, &MapFilter::default());
        assert!(!report.has_uncovered());
        assert!(report.clients.is_empty());
        assert!(format_diff(&report).starts_with("Every observed call of 2 client(s) is covered"));
    }

    #[test]
    fn intents_of_clients_never_observed_are_all_unobserved_unless_filtered_out() {
        let intents = parse_intents(INTENTS).expect("parses");
        let report = diff(&[], &intents, &MapFilter::default());
        assert_eq!(report.clients[0].unobserved, ["cart.shop", "payments.shop"]);
        assert!(!report.has_uncovered());

        let other_ns = MapFilter {
            namespaces: ["pay".to_string()].into(),
            ..MapFilter::default()
        };
        assert!(diff(&[], &intents, &other_ns).clients.is_empty());
        let server = MapFilter {
            server: ServerRef::parse("cart.shop").ok(),
            ..MapFilter::default()
        };
        assert_eq!(
            diff(&[], &intents, &server).clients[0].unobserved,
            ["cart.shop"]
        );
    }

    #[test]
    fn intents_without_a_namespace_match_the_workload_in_any_namespace() {
        let intents = parse_intents(&INTENTS.replace("  namespace: shop\n", "")).expect("parses");
        let report = diff(&map()[..1], &intents, &MapFilter::default());
        assert!(report.clients[0].has_intents);
        assert_eq!(
            report.clients[0].uncovered,
            ["internet:api.stripe.com", "ledger.pay"]
        );
    }

    #[test]
    fn json_arrays_lists_and_old_versions() {
        let rendered: Vec<_> = crate::cli::export::render_all(&map())
            .into_iter()
            .map(|e| e.intents)
            .collect();
        let json = serde_json::to_string(&rendered).expect("json");
        assert_eq!(parse_intents(&json).expect("array").len(), 2);
        let list = format!("{{\"apiVersion\":\"v1\",\"kind\":\"List\",\"items\":{json}}}");
        assert_eq!(parse_intents(&list).expect("list").len(), 2);
        let old = "apiVersion: k8s.otterize.com/v1alpha3\nkind: ClientIntents\nspec: {}\n";
        assert!(
            parse_intents(old)
                .expect_err("old version")
                .contains("v2beta1")
        );
        assert!(parse_intents("just text").is_err());
    }
}
