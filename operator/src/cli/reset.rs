//! `reset`: which ObservedTraffic objects to delete, which ClientIntents go with them, and what
//! to say about it. Only drafts go: a ClientIntents that anyone else has written is the user's
//! ([`trafficmap_api::ownership`]) and stays, whatever marks of ours it carries.

use trafficmap_api::naming::client_intents_name;
use trafficmap_api::ownership::{Ownership, ownership};
use trafficmap_api::{ClientIntents, ObservedTraffic};

/// An ObservedTraffic to delete: its object name, a readable client, and its ClientIntents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResetItem {
    /// Object name.
    pub object: String,
    /// `workload in namespace ns`.
    pub client: String,
    /// The client's ClientIntents, when there is one.
    pub intents: Option<IntentsFate>,
}

/// What `reset` does with a client's ClientIntents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IntentsFate {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Deleted (a draft), or kept with who wrote it.
    pub delete: bool,
    /// The field managers that made it the user's (empty: it never was ours).
    pub writers: Vec<String>,
}

/// The objects `reset` deletes: every one of `observed` (already filtered by client namespace),
/// each with the ClientIntents of the same client among `intents`.
pub fn plan(observed: &[ObservedTraffic], intents: &[ClientIntents]) -> Vec<ResetItem> {
    observed
        .iter()
        .filter_map(|o| {
            let object = o.metadata.name.clone()?;
            let client = &o.spec.client;
            let name = client_intents_name(&client.name);
            let fate = intents
                .iter()
                .find(|ci| {
                    ci.metadata.namespace.as_deref() == Some(client.namespace.as_str())
                        && ci.metadata.name.as_deref() == Some(name.as_str())
                })
                .map(|ci| {
                    let (delete, writers) = match ownership(ci) {
                        Ownership::Draft => (true, Vec::new()),
                        Ownership::User { writers } => (false, writers),
                    };
                    IntentsFate {
                        namespace: client.namespace.clone(),
                        name: name.clone(),
                        delete,
                        writers,
                    }
                });
            Some(ResetItem {
                object,
                client: format!("{} in namespace {}", client.name, client.namespace),
                intents: fate,
            })
        })
        .collect()
}

/// What happens to a ClientIntents, in words: `draft clientintents/x in ns`, or why it stays.
pub fn describe(fate: &IntentsFate) -> String {
    let object = format!("clientintents/{} in {}", fate.name, fate.namespace);
    if fate.delete {
        format!("draft {object}")
    } else if fate.writers.is_empty() {
        format!("{object} is kept: trafficmap did not create it")
    } else {
        format!(
            "{object} is kept: written by {}, it is theirs",
            fate.writers.join(", ")
        )
    }
}

/// What `reset` without `--yes` prints.
pub fn format_plan(items: &[ResetItem]) -> String {
    if items.is_empty() {
        return "Nothing to reset: no ObservedTraffic matches.\n".to_string();
    }
    let mut out = format!(
        "Would delete {} ObservedTraffic object(s), and the draft ClientIntents among theirs; the operator then forgets these clients:\n",
        items.len()
    );
    for item in items {
        out.push_str(&format!("  - {} ({})\n", item.object, item.client));
        if let Some(fate) = &item.intents {
            out.push_str(&format!("    {}\n", describe(fate)));
        }
    }
    out.push_str("Nothing was deleted. Re-run with --yes to delete them.\n");
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{FieldsV1, ManagedFieldsEntry};
    use trafficmap_api::{MANAGED_BY_LABEL, MANAGED_BY_VALUE};

    use super::*;
    use crate::cli::fixtures::client;

    fn intents(name: &str, namespace: &str, writers: &[&str]) -> ClientIntents {
        let mut ci = ClientIntents::new(name, Default::default());
        ci.metadata.namespace = Some(namespace.into());
        ci.metadata.labels = Some(BTreeMap::from([(
            MANAGED_BY_LABEL.into(),
            MANAGED_BY_VALUE.into(),
        )]));
        ci.metadata.managed_fields = Some(
            writers
                .iter()
                .map(|m| ManagedFieldsEntry {
                    manager: Some((*m).into()),
                    fields_v1: Some(FieldsV1(serde_json::json!({"f:spec": {}}))),
                    ..ManagedFieldsEntry::default()
                })
                .collect(),
        );
        ci
    }

    #[test]
    fn the_plan_names_objects_and_clients_and_says_how_to_proceed() {
        let items = plan(&[client("web", "shop", vec![], vec![])], &[]);
        assert_eq!(
            items,
            [ResetItem {
                object: "web.deployment.shop".into(),
                client: "web in namespace shop".into(),
                intents: None,
            }]
        );
        let text = format_plan(&items);
        assert!(text.contains("  - web.deployment.shop (web in namespace shop)\n"));
        assert!(text.ends_with("Re-run with --yes to delete them.\n"));
        assert!(format_plan(&[]).starts_with("Nothing to reset"));
    }

    #[test]
    fn drafts_go_and_intents_someone_else_wrote_stay() {
        let observed = [
            client("web", "shop", vec![], vec![]),
            client("cart", "shop", vec![], vec![]),
        ];
        let all = [
            intents("web", "shop", &["trafficmap"]),
            intents("cart", "shop", &["trafficmap", "gitops"]),
            intents("web", "elsewhere", &["trafficmap"]),
        ];
        let items = plan(&observed, &all);
        let fates: Vec<_> = items.iter().map(|i| i.intents.clone()).collect();
        assert_eq!(
            fates,
            [
                Some(IntentsFate {
                    namespace: "shop".into(),
                    name: "web".into(),
                    delete: true,
                    writers: vec![]
                }),
                Some(IntentsFate {
                    namespace: "shop".into(),
                    name: "cart".into(),
                    delete: false,
                    writers: vec!["gitops".into()]
                }),
            ]
        );
        let text = format_plan(&items);
        assert!(
            text.contains("    draft clientintents/web in shop\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "    clientintents/cart in shop is kept: written by gitops, it is theirs\n"
            ),
            "{text}"
        );
    }
}
