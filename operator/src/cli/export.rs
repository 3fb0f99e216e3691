//! `export`: draft ClientIntents for the observed calls, rendered by the one renderer the
//! operator also uses ([`try_render_client_intents`]), serialized deterministically: sorted, with no
//! status, owner references, managed fields or marks of ours, so an unchanged map exports the same
//! bytes. A YAML document starts with a comment saying since when its client has been observed.

use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use trafficmap_api::render::try_render_client_intents;
use trafficmap_api::{ClientIntents, ObservedTraffic};

use crate::cli::error::CliError;
use crate::cli::filter::has_calls;

/// How objects are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// Multi-document YAML.
    Yaml,
    /// JSON (a `v1` `List` when several objects go in one text).
    Json,
}

/// A ClientIntents to export, and since when its client has been observed.
#[derive(Clone, Debug, PartialEq)]
pub struct Exported {
    /// The object.
    pub intents: ClientIntents,
    /// The client's first observation, when known.
    pub since: Option<Timestamp>,
}

/// The ClientIntents of every client in `observed` that made calls, in the order of `observed`
/// (sorted by client namespace and name). Clients that cannot be rendered into an object the
/// API server accepts (an ObservedTraffic edited by hand) are left out; [`unrenderable`] says
/// which and why.
pub fn render_all(observed: &[ObservedTraffic]) -> Vec<Exported> {
    observed
        .iter()
        .filter(|o| has_calls(o))
        .filter_map(|o| {
            let intents = try_render_client_intents(o).ok()?;
            Some(Exported {
                intents,
                since: observed_since(o),
            })
        })
        .collect()
}

/// Since when the client of `observed` has been observed: its earliest `firstSeen`, else the
/// object's creation.
pub fn observed_since(observed: &ObservedTraffic) -> Option<Timestamp> {
    let status = observed.status.as_ref();
    let first_seen = status.into_iter().flat_map(|s| {
        s.targets
            .iter()
            .map(|t| t.first_seen.0)
            .chain(s.internet_targets.iter().map(|t| t.first_seen.0))
    });
    first_seen
        .min()
        .or_else(|| observed.metadata.creation_timestamp.as_ref().map(|t| t.0))
}

/// The clients with calls in `observed` that have been observed for less than `min` at `now`,
/// one readable line each (`workload in namespace ns: observed since T, for D`).
pub fn observed_too_briefly(
    observed: &[ObservedTraffic],
    min: Duration,
    now: Timestamp,
) -> Vec<String> {
    observed
        .iter()
        .filter(|o| has_calls(o))
        .filter_map(|o| {
            let client = &o.spec.client;
            let since = observed_since(o);
            let observed_for = since
                .map(|s| Duration::try_from(now.duration_since(s)).unwrap_or(Duration::ZERO))
                .unwrap_or(Duration::ZERO);
            (observed_for < min).then(|| {
                let since = since.map_or_else(|| "an unknown time".to_string(), |s| s.to_string());
                format!(
                    "{} in namespace {}: observed since {since}, for {}",
                    client.name,
                    client.namespace,
                    humantime::format_duration(Duration::from_secs(observed_for.as_secs()))
                )
            })
        })
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
pub fn serialize_all(exported: &[Exported], encoding: Encoding) -> Result<String, CliError> {
    match encoding {
        Encoding::Yaml => {
            let docs = exported
                .iter()
                .map(to_yaml)
                .collect::<Result<Vec<_>, _>>()?;
            Ok(docs.join("---\n"))
        }
        Encoding::Json => {
            let intents: Vec<&ClientIntents> = exported.iter().map(|e| &e.intents).collect();
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
    exported: &[Exported],
    encoding: Encoding,
) -> Result<Vec<(String, String)>, CliError> {
    exported
        .iter()
        .map(|e| {
            let ci = &e.intents;
            let content = match encoding {
                Encoding::Yaml => to_yaml(e)?,
                Encoding::Json => {
                    let mut text =
                        serde_json::to_string_pretty(ci).map_err(|e| CliError::Serialize {
                            what: "ClientIntents as JSON".into(),
                            message: e.to_string(),
                        })?;
                    text.push('\n');
                    text
                }
            };
            Ok((file_name(ci, encoding), content))
        })
        .collect()
}

/// `<workload>.<namespace>.yaml` (or `.json`).
pub fn file_name(intents: &ClientIntents, encoding: Encoding) -> String {
    let extension = match encoding {
        Encoding::Yaml => "yaml",
        Encoding::Json => "json",
    };
    let namespace = intents.metadata.namespace.as_deref().unwrap_or("default");
    // Workload names never hold `/`, but a file name must not escape the directory.
    let workload = intents.spec.workload.name.replace(['/', '\\'], "_");
    format!("{workload}.{namespace}.{extension}")
}

/// One YAML document, after a comment that says since when its client has been observed.
fn to_yaml(exported: &Exported) -> Result<String, CliError> {
    let yaml = serde_yaml_ng::to_string(&exported.intents).map_err(|e| CliError::Serialize {
        what: "ClientIntents as YAML".into(),
        message: e.to_string(),
    })?;
    let since = exported
        .since
        .map_or_else(|| "an unknown time".to_string(), |t| t.to_string());
    Ok(format!(
        "# Drafted by trafficmap from the calls observed since {since}.\n\
         # Once enforced, calls not listed here are blocked: review before applying.\n{yaml}"
    ))
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
    fn yaml_is_multi_document_without_status_owner_or_marks_of_ours() {
        let yaml = serialize_all(&render_all(&map()), Encoding::Yaml).expect("yaml");
        assert_eq!(
            yaml,
            "\
# Drafted by trafficmap from the calls observed since 1970-01-01T00:00:01Z.
# Once enforced, calls not listed here are blocked: review before applying.
apiVersion: k8s.otterize.com/v2beta1
kind: ClientIntents
metadata:
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
# Drafted by trafficmap from the calls observed since 1970-01-01T00:00:01Z.
# Once enforced, calls not listed here are blocked: review before applying.
apiVersion: k8s.otterize.com/v2beta1
kind: ClientIntents
metadata:
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
        let json = serialize_all(&intents, Encoding::Json).expect("json");
        let list: serde_json::Value = serde_json::from_str(&json).expect("parses");
        assert_eq!(list["kind"], "List");
        let back: Vec<ClientIntents> =
            serde_json::from_value(list["items"].clone()).expect("items");
        let rendered: Vec<ClientIntents> = intents.into_iter().map(|e| e.intents).collect();
        assert_eq!(back, rendered);
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
            serialize_all(&render_all(&all.apply(shuffled)), Encoding::Yaml).expect("yaml"),
            serialize_all(&render_all(&all.apply(map())), Encoding::Yaml).expect("yaml")
        );
    }

    #[test]
    fn a_directory_export_has_one_file_per_client_workload() {
        let files = serialize_per_client(&render_all(&map()), Encoding::Json).expect("json");
        let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["checkout.shop.json", "web.shop.json"]);
        let one: ClientIntents = serde_json::from_str(&files[1].1).expect("one object");
        assert_eq!(one.metadata.name.as_deref(), Some("web"));
    }

    #[test]
    fn workloads_observed_too_briefly_are_named_with_since_when() {
        let mut recent = client(
            "nightly",
            "batch",
            vec![target("db", "batch", 5432)],
            vec![],
        );
        if let Some(status) = recent.status.as_mut() {
            status.targets[0].first_seen = k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                Timestamp::from_second(7_200).expect("t"),
            );
        }
        let mut observed = map();
        observed.push(recent);
        let now = Timestamp::from_second(10_800).expect("t");
        assert_eq!(
            observed_too_briefly(&observed, Duration::from_secs(7_200), now),
            ["nightly in namespace batch: observed since 1970-01-01T02:00:00Z, for 1h"]
        );
        assert!(observed_too_briefly(&observed, Duration::from_secs(60), now).is_empty());
        assert_eq!(
            observed_too_briefly(&observed, Duration::from_secs(3 * 3_600), now).len(),
            3,
            "the idle client made no call and is not exported anyway"
        );
    }

    #[test]
    fn nothing_to_export_is_an_empty_yaml_and_an_empty_json_list() {
        assert_eq!(serialize_all(&[], Encoding::Yaml).expect("yaml"), "");
        let json = serialize_all(&[], Encoding::Json).expect("json");
        assert!(json.contains("\"items\": []"), "{json}");
    }
}
