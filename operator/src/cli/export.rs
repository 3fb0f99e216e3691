//! `export`: draft ClientIntents for the observed calls, rendered by the one renderer the
//! operator also uses ([`try_render_client_intents`]), serialized deterministically: sorted, with no
//! timestamps, status, owner references or managed fields, so an unchanged map exports the same
//! bytes.

use trafficmap_api::render::try_render_client_intents;
use trafficmap_api::{ClientIntents, ObservedTraffic};

use crate::cli::args::ExportFormat;
use crate::cli::error::CliError;
use crate::cli::filter::has_calls;

/// The ClientIntents of every client in `observed` that made calls, in the order of `observed`
/// (sorted by client namespace and name). Clients that cannot be rendered into an object the
/// API server accepts (an ObservedTraffic edited by hand) are left out; [`unrenderable`] says
/// which and why.
pub fn render_all(observed: &[ObservedTraffic]) -> Vec<ClientIntents> {
    observed
        .iter()
        .filter(|o| has_calls(o))
        .filter_map(|o| try_render_client_intents(o).ok())
        .collect()
}

/// One line per client with calls that [`render_all`] leaves out, saying why.
pub fn unrenderable(observed: &[ObservedTraffic]) -> Vec<String> {
    observed
        .iter()
        .filter(|o| has_calls(o))
        .filter_map(|o| {
            try_render_client_intents(o).err().map(|err| {
                let name = o.metadata.name.as_deref().unwrap_or("<unnamed>");
                format!("ObservedTraffic {name} is not exported: {err}")
            })
        })
        .collect()
}

/// One text holding every object: multi-document YAML (`---` between documents), or JSON: a
/// `v1` `List` whose `items` array holds the objects (kubectl rejects a bare JSON array, and
/// export must stay `kubectl apply -f`-able).
pub fn serialize_all(intents: &[ClientIntents], format: ExportFormat) -> Result<String, CliError> {
    match format {
        ExportFormat::Yaml => {
            let docs = intents.iter().map(to_yaml).collect::<Result<Vec<_>, _>>()?;
            Ok(docs.join("---\n"))
        }
        ExportFormat::Json => {
            let list = serde_json::json!({
                "apiVersion": "v1",
                "kind": "List",
                "items": intents,
            });
            let mut text =
                serde_json::to_string_pretty(&list).map_err(|e| CliError::Serialize {
                    what: "ClientIntents as JSON".into(),
                    message: e.to_string(),
                })?;
            text.push('\n');
            Ok(text)
        }
    }
}

/// One file per client workload: `(file name, content)`, the content a single object.
pub fn serialize_per_client(
    intents: &[ClientIntents],
    format: ExportFormat,
) -> Result<Vec<(String, String)>, CliError> {
    intents
        .iter()
        .map(|ci| {
            let content = match format {
                ExportFormat::Yaml => to_yaml(ci)?,
                ExportFormat::Json => {
                    let mut text =
                        serde_json::to_string_pretty(ci).map_err(|e| CliError::Serialize {
                            what: "ClientIntents as JSON".into(),
                            message: e.to_string(),
                        })?;
                    text.push('\n');
                    text
                }
            };
            Ok((file_name(ci, format), content))
        })
        .collect()
}

/// `<workload>.<namespace>.yaml` (or `.json`).
pub fn file_name(intents: &ClientIntents, format: ExportFormat) -> String {
    let extension = match format {
        ExportFormat::Yaml => "yaml",
        ExportFormat::Json => "json",
    };
    let namespace = intents.metadata.namespace.as_deref().unwrap_or("default");
    // Workload names never hold `/`, but a file name must not escape the directory.
    let workload = intents.spec.workload.name.replace(['/', '\\'], "_");
    format!("{workload}.{namespace}.{extension}")
}

fn to_yaml(intents: &ClientIntents) -> Result<String, CliError> {
    serde_yaml_ng::to_string(intents).map_err(|e| CliError::Serialize {
        what: "ClientIntents as YAML".into(),
        message: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::fixtures::{client, internet, target};

    fn map() -> Vec<ObservedTraffic> {
        vec![
            client(
                "checkout",
                "shop",
                vec![target("cart", "shop", 80), target("ledger", "pay", 9090)],
                vec![internet(Some("api.stripe.com"), &["192.0.2.1"], 443)],
            ),
            client("idle", "shop", vec![], vec![]),
            client(
                "web",
                "shop",
                vec![target("checkout", "shop", 5050)],
                vec![],
            ),
        ]
    }

    #[test]
    fn yaml_is_multi_document_without_status_owner_or_timestamps() {
        let yaml = serialize_all(&render_all(&map()), ExportFormat::Yaml).expect("yaml");
        assert_eq!(
            yaml,
            "\
apiVersion: k8s.otterize.com/v2beta1
kind: ClientIntents
metadata:
  labels:
    app.kubernetes.io/managed-by: trafficmap
  name: checkout
  namespace: shop
spec:
  workload:
    name: checkout
    kind: Deployment
  targets:
  - kubernetes:
      name: cart
      kind: Deployment
  - kubernetes:
      name: ledger.pay
      kind: Deployment
  - internet:
      domains:
      - api.stripe.com
      ports:
      - 443
---
apiVersion: k8s.otterize.com/v2beta1
kind: ClientIntents
metadata:
  labels:
    app.kubernetes.io/managed-by: trafficmap
  name: web
  namespace: shop
spec:
  workload:
    name: web
    kind: Deployment
  targets:
  - kubernetes:
      name: checkout
      kind: Deployment
"
        );
    }

    #[test]
    fn json_is_a_list_whose_items_array_holds_the_same_objects() {
        let intents = render_all(&map());
        let json = serialize_all(&intents, ExportFormat::Json).expect("json");
        let list: serde_json::Value = serde_json::from_str(&json).expect("parses");
        assert_eq!(list["kind"], "List");
        let back: Vec<ClientIntents> =
            serde_json::from_value(list["items"].clone()).expect("items");
        assert_eq!(back, intents);
        assert!(json.ends_with("}\n"));
        assert!(!json.contains("status"));
    }

    #[test]
    fn output_is_identical_whatever_the_order_and_times_of_observations() {
        let mut shuffled = map();
        shuffled.reverse();
        if let Some(status) = shuffled[2].status.as_mut() {
            status.targets.reverse();
        }
        let all = crate::cli::filter::MapFilter::default();
        assert_eq!(
            serialize_all(&render_all(&all.apply(shuffled)), ExportFormat::Yaml).expect("yaml"),
            serialize_all(&render_all(&all.apply(map())), ExportFormat::Yaml).expect("yaml")
        );
    }

    #[test]
    fn a_directory_export_has_one_file_per_client_workload() {
        let files = serialize_per_client(&render_all(&map()), ExportFormat::Json).expect("json");
        let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["checkout.shop.json", "web.shop.json"]);
        let one: ClientIntents = serde_json::from_str(&files[1].1).expect("one object");
        assert_eq!(one.metadata.name.as_deref(), Some("web"));
    }

    #[test]
    fn nothing_to_export_is_an_empty_yaml_and_an_empty_json_list() {
        assert_eq!(serialize_all(&[], ExportFormat::Yaml).expect("yaml"), "");
        let json = serialize_all(&[], ExportFormat::Json).expect("json");
        assert!(json.contains("\"items\": []"), "{json}");
    }
}
