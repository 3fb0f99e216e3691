//! `list`: each client workload and what it calls, in the format the README shows.

use std::collections::BTreeSet;

use trafficmap_api::ObservedTraffic;
use trafficmap_api::observed::{InternetTarget, ObservedTarget};
use trafficmap_api::render::NODE_KIND;

use crate::cli::filter::has_calls;

/// Printed when no client (after filtering) made a call.
pub const NOTHING_OBSERVED: &str = "No traffic observed yet.";

/// The `list` text for `observed` (already filtered and sorted): one block per client that made
/// calls, blocks separated by a blank line; [`NOTHING_OBSERVED`] when there are none.
pub fn format_list(observed: &[ObservedTraffic], filtered: bool) -> String {
    let blocks: Vec<String> = observed
        .iter()
        .filter(|o| has_calls(o))
        .map(client_block)
        .collect();
    if blocks.is_empty() {
        return if filtered {
            format!("{NOTHING_OBSERVED} (nothing matches the namespace/server filters)\n")
        } else {
            format!("{NOTHING_OBSERVED} Is the trafficmap operator running, and its sniffers?\n")
        };
    }
    blocks.join("\n")
}

fn client_block(observed: &ObservedTraffic) -> String {
    let client = &observed.spec.client;
    let mut out = format!("{} in namespace {} calls:\n", client.name, client.namespace);
    for line in call_lines(observed) {
        out.push_str("  - ");
        out.push_str(&line);
        out.push('\n');
    }
    out
}

/// The calls of one client as `list` shows them: in-cluster targets sorted (with `.namespace`
/// only when not the client's), then internet targets sorted.
pub fn call_lines(observed: &ObservedTraffic) -> Vec<String> {
    let Some(status) = &observed.status else {
        return Vec::new();
    };
    let client_ns = observed.spec.client.namespace.as_str();
    let in_cluster: BTreeSet<String> = status
        .targets
        .iter()
        .map(|t| in_cluster_label(t, client_ns))
        .collect();
    let internet: BTreeSet<String> = status.internet_targets.iter().map(internet_label).collect();
    in_cluster.into_iter().chain(internet).collect()
}

fn in_cluster_label(target: &ObservedTarget, client_ns: &str) -> String {
    if target.kind == NODE_KIND {
        format!("node: {}", target.name)
    } else if target.namespace == client_ns {
        target.name.clone()
    } else {
        format!("{}.{}", target.name, target.namespace)
    }
}

fn internet_label(target: &InternetTarget) -> String {
    match &target.dns_name {
        Some(name) => format!("internet: {name}"),
        None => format!("internet: {}", target.ips.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::fixtures::{client, internet, target};

    #[test]
    fn prints_the_readme_format_with_a_blank_line_between_clients() {
        let map = vec![
            client(
                "checkoutservice",
                "otterize-ecom-demo",
                vec![
                    target("currencyservice", "otterize-ecom-demo", 7000),
                    target("cartservice", "otterize-ecom-demo", 7070),
                ],
                vec![],
            ),
            client(
                "frontend",
                "otterize-ecom-demo",
                vec![target("checkoutservice", "otterize-ecom-demo", 5050)],
                vec![],
            ),
        ];
        assert_eq!(
            format_list(&map, false),
            "\
checkoutservice in namespace otterize-ecom-demo calls:
  - cartservice
  - currencyservice

frontend in namespace otterize-ecom-demo calls:
  - checkoutservice
"
        );
    }

    #[test]
    fn other_namespaces_are_qualified_and_internet_targets_come_last() {
        let map = vec![client(
            "checkout",
            "shop",
            vec![
                target("ledger", "pay", 9090),
                target("cart", "shop", 80),
                target("kubernetes", "default", 443),
            ],
            vec![
                internet(None, &["203.0.113.9"], 8443),
                internet(Some("api.stripe.com"), &["192.0.2.1"], 443),
            ],
        )];
        assert_eq!(
            format_list(&map, false),
            "\
checkout in namespace shop calls:
  - cart
  - kubernetes.default
  - ledger.pay
  - internet: 203.0.113.9
  - internet: api.stripe.com
"
        );
    }

    #[test]
    fn the_same_target_seen_twice_is_listed_once() {
        let mut as_service = target("cart", "shop", 80);
        as_service.kind = "Service".into();
        let web = client(
            "web",
            "shop",
            vec![target("cart", "shop", 80), as_service],
            vec![],
        );
        assert_eq!(call_lines(&web), ["cart"]);
    }

    #[test]
    fn an_empty_map_says_nothing_was_observed() {
        let silent = client("idle", "shop", vec![], vec![]);
        assert!(format_list(&[silent], false).starts_with(NOTHING_OBSERVED));
        assert!(format_list(&[], true).contains("filters"));
    }
}
