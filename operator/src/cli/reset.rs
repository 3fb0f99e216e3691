//! `reset`: which ObservedTraffic objects to delete, and what to say about it.

use trafficmap_api::ObservedTraffic;

/// An ObservedTraffic to delete: its object name and a readable client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResetItem {
    /// Object name.
    pub object: String,
    /// `workload in namespace ns`.
    pub client: String,
}

/// The objects `reset` deletes: every one of `observed` (already filtered by client namespace).
pub fn plan(observed: &[ObservedTraffic]) -> Vec<ResetItem> {
    observed
        .iter()
        .filter_map(|o| {
            let object = o.metadata.name.clone()?;
            let client = &o.spec.client;
            Some(ResetItem {
                object,
                client: format!("{} in namespace {}", client.name, client.namespace),
            })
        })
        .collect()
}

/// What `reset` without `--yes` prints.
pub fn format_plan(items: &[ResetItem]) -> String {
    if items.is_empty() {
        return "Nothing to reset: no ObservedTraffic matches.\n".to_string();
    }
    let mut out = format!(
        "Would delete {} ObservedTraffic object(s); the operator then forgets these clients and their draft ClientIntents:\n",
        items.len()
    );
    for item in items {
        out.push_str(&format!("  - {} ({})\n", item.object, item.client));
    }
    out.push_str("Nothing was deleted. Re-run with --yes to delete them.\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::fixtures::client;

    #[test]
    fn the_plan_names_objects_and_clients_and_says_how_to_proceed() {
        let items = plan(&[client("web", "shop", vec![], vec![])]);
        assert_eq!(
            items,
            [ResetItem {
                object: "web.deployment.shop".into(),
                client: "web in namespace shop".into()
            }]
        );
        let text = format_plan(&items);
        assert!(text.contains("  - web.deployment.shop (web in namespace shop)\n"));
        assert!(text.ends_with("Re-run with --yes to delete them.\n"));
        assert!(format_plan(&[]).starts_with("Nothing to reset"));
    }
}
