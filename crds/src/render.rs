//! Observed traffic -> draft `ClientIntents`: the one renderer that the operator's drafts and
//! `kubectl-trafficmap export` share, so a draft and an export never disagree.
//!
//! Output is deterministic: targets are deduplicated and sorted, and nothing time-dependent is
//! rendered, so the YAML in Git changes only when the observed map does.

use std::collections::{BTreeMap, BTreeSet};

use kube::api::ObjectMeta;
use thiserror::Error;

use crate::intents::{
    ClientIntents, ClientIntentsSpec, InternetTarget, KubernetesTarget, ServiceTarget, Target,
    Workload,
};
use crate::naming::client_intents_name;
use crate::observed::ObservedTraffic;

/// Target kind that the operator records for the API server (rendered as a `service` target).
pub const SERVICE_KIND: &str = "Service";
/// Target kind for node IPs: ClientIntents cannot express a node, so no target is rendered.
pub const NODE_KIND: &str = "Node";

/// Why an ObservedTraffic cannot be rendered into a ClientIntents the API server would accept.
/// The operator only writes clients it resolved from real pods, but an ObservedTraffic can be
/// created or edited by hand, and `kubectl trafficmap export` reads whatever is stored.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum RenderError {
    /// The client's namespace cannot hold an object (not a DNS-1123 label).
    #[error("client namespace {0:?} is not a valid namespace name (DNS-1123 label)")]
    InvalidNamespace(String),
    /// The client has no workload name, so the draft would select nothing.
    #[error("client workload name is empty")]
    EmptyWorkloadName,
}

/// Like [`render_client_intents`], refusing with a clear error a client whose draft the API
/// server would reject or that would name no workload.
pub fn try_render_client_intents(observed: &ObservedTraffic) -> Result<ClientIntents, RenderError> {
    let client = &observed.spec.client;
    if !is_dns1123_label(&client.namespace) {
        return Err(RenderError::InvalidNamespace(client.namespace.clone()));
    }
    if client.name.is_empty() {
        return Err(RenderError::EmptyWorkloadName);
    }
    Ok(render_client_intents(observed))
}

/// A namespace name: 1..=63 of `[a-z0-9-]`, starting and ending alphanumeric.
fn is_dns1123_label(s: &str) -> bool {
    let bytes = s.as_bytes();
    match (bytes.first(), bytes.last()) {
        (Some(first), Some(last)) => {
            bytes.len() <= 63
                && first.is_ascii_alphanumeric()
                && last.is_ascii_alphanumeric()
                && bytes
                    .iter()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        }
        _ => false,
    }
}

/// Renders the ClientIntents for the client of `observed`, in the client's namespace, with no
/// mark of trafficmap's (no label, no owner reference): what `export` writes is the reviewer's
/// to apply, and the operator adds its marks to its own drafts (`ownership`).
pub fn render_client_intents(observed: &ObservedTraffic) -> ClientIntents {
    let client = &observed.spec.client;
    let qualify = |name: &str, namespace: &str| {
        if namespace == client.namespace {
            name.to_string()
        } else {
            format!("{name}.{namespace}")
        }
    };

    let mut kubernetes = BTreeSet::new();
    let mut services = BTreeSet::new();
    let mut internet: BTreeMap<InternetKey, BTreeSet<u16>> = BTreeMap::new();
    if let Some(status) = &observed.status {
        for target in &status.targets {
            let name = qualify(&target.name, &target.namespace);
            match target.kind.as_str() {
                SERVICE_KIND => {
                    services.insert(name);
                }
                NODE_KIND => {}
                kind => {
                    kubernetes.insert((name, non_empty(kind)));
                }
            }
        }
        for target in &status.internet_targets {
            let key = match &target.dns_name {
                Some(name) => InternetKey::Domain(name.clone()),
                None => InternetKey::Ips(sorted_unique(&target.ips)),
            };
            internet
                .entry(key)
                .or_default()
                .extend(target.ports.iter().map(|p| p.port));
        }
    }

    let targets = kubernetes
        .into_iter()
        .map(|(name, kind)| Target {
            kubernetes: Some(KubernetesTarget {
                name,
                kind,
                http: None,
            }),
            ..Target::default()
        })
        .chain(services.into_iter().map(|name| Target {
            service: Some(ServiceTarget { name, http: None }),
            ..Target::default()
        }))
        .chain(internet.into_iter().map(|(key, ports)| {
            let (domains, ips) = match key {
                InternetKey::Domain(name) => (vec![name], Vec::new()),
                InternetKey::Ips(ips) => (Vec::new(), ips),
            };
            Target {
                internet: Some(InternetTarget {
                    domains,
                    ips,
                    ports: ports.into_iter().collect(),
                }),
                ..Target::default()
            }
        }))
        .collect();

    ClientIntents {
        metadata: ObjectMeta {
            name: Some(client_intents_name(&client.name)),
            namespace: Some(client.namespace.clone()),
            ..ObjectMeta::default()
        },
        spec: ClientIntentsSpec {
            workload: Workload {
                name: client.name.clone(),
                kind: non_empty(&client.kind),
            },
            targets,
        },
        status: None,
    }
}

/// A kind for the ClientIntents: none for workloads named by annotation, whose pods the
/// intents-operator selects without an owner kind.
fn non_empty(kind: &str) -> Option<String> {
    (!kind.is_empty()).then(|| kind.to_string())
}

/// How internet targets are grouped and ordered: named ones first, then bare IPs.
#[derive(PartialEq, Eq, PartialOrd, Ord)]
enum InternetKey {
    Domain(String),
    Ips(Vec<String>),
}

fn sorted_unique(items: &[String]) -> Vec<String> {
    items
        .iter()
        .cloned()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect()
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use k8s_openapi::jiff::Timestamp;

    use super::*;
    use crate::observed::{
        InternetTarget as ObservedInternet, ObservedTarget, ObservedTrafficStatus, PortProtocol,
        Protocol, SeenBy, WorkloadRef,
    };

    fn at(secs: i64) -> Time {
        Time(Timestamp::from_second(secs).expect("valid timestamp"))
    }

    fn target(name: &str, namespace: &str, kind: &str, seen: i64) -> ObservedTarget {
        ObservedTarget {
            name: name.into(),
            namespace: namespace.into(),
            kind: kind.into(),
            service: Some(name.into()),
            ports: vec![PortProtocol {
                port: 80,
                protocol: Protocol::Tcp,
            }],
            dns_names: vec![],
            seen_by: vec![SeenBy::Tcp],
            first_seen: at(seen),
            last_seen: at(seen),
        }
    }

    fn observed(targets: Vec<ObservedTarget>, internet: Vec<ObservedInternet>) -> ObservedTraffic {
        let mut ot = ObservedTraffic::for_client(WorkloadRef {
            name: "checkoutservice".into(),
            namespace: "shop".into(),
            kind: "Deployment".into(),
        });
        ot.status = Some(ObservedTrafficStatus {
            targets,
            internet_targets: internet,
            ..ObservedTrafficStatus::default()
        });
        ot
    }

    fn internet(name: Option<&str>, ip: &str, port: u16) -> ObservedInternet {
        ObservedInternet {
            dns_name: name.map(str::to_string),
            ips: vec![ip.into()],
            ports: vec![PortProtocol {
                port,
                protocol: Protocol::Tcp,
            }],
            seen_by: vec![SeenBy::Dns, SeenBy::Tcp],
            first_seen: at(1),
            last_seen: at(2),
        }
    }

    #[test]
    fn renders_kubernetes_service_and_internet_targets_qualified_by_namespace() {
        let ot = observed(
            vec![
                target("cartservice", "shop", "Deployment", 1),
                target("ledger", "finance", "StatefulSet", 1),
                target("kubernetes", "default", SERVICE_KIND, 1),
                target("node-1", "", NODE_KIND, 1),
            ],
            vec![
                internet(Some("api.example.com"), "192.0.2.1", 443),
                internet(None, "198.51.100.7", 8443),
            ],
        );
        let ci = render_client_intents(&ot);
        assert_eq!(ci.metadata.name.as_deref(), Some("checkoutservice"));
        assert_eq!(ci.metadata.namespace.as_deref(), Some("shop"));
        let yaml = serde_yaml_ng::to_string(&ci.spec).expect("serializes");
        let expected = "\
workload:
  name: checkoutservice
  kind: Deployment
targets:
- kubernetes:
    name: cartservice
    kind: Deployment
- kubernetes:
    name: ledger.finance
    kind: StatefulSet
- service:
    name: kubernetes.default
- internet:
    domains:
    - api.example.com
    ports:
    - 443
- internet:
    ips:
    - 198.51.100.7
    ports:
    - 8443
";
        assert_eq!(yaml, expected);
    }

    #[test]
    fn output_depends_on_the_map_not_on_order_or_times() {
        let a = observed(
            vec![
                target("b", "shop", "Deployment", 1),
                target("a", "shop", "Deployment", 1),
            ],
            vec![],
        );
        let b = observed(
            vec![
                target("a", "shop", "Deployment", 50),
                target("b", "shop", "Deployment", 99),
                target("a", "shop", "Deployment", 7),
            ],
            vec![],
        );
        assert_eq!(render_client_intents(&a), render_client_intents(&b));
    }

    #[test]
    fn workloads_named_by_annotation_are_rendered_without_a_kind() {
        let mut ot = observed(vec![target("billing", "shop", "", 1)], vec![]);
        ot.spec.client.kind = String::new();
        let ci = render_client_intents(&ot);
        assert_eq!(ci.spec.workload.kind, None);
        let target = ci.spec.targets[0].kubernetes.as_ref().expect("kubernetes");
        assert_eq!(
            (target.name.as_str(), target.kind.as_deref()),
            ("billing", None)
        );
    }

    #[test]
    fn what_is_rendered_carries_no_mark_of_ours() {
        let ci = render_client_intents(&observed(vec![], vec![]));
        assert!(ci.metadata.labels.is_none());
        assert!(ci.metadata.annotations.is_none());
        assert!(ci.metadata.owner_references.is_none());
        assert!(ci.spec.targets.is_empty());
    }

    #[test]
    fn a_client_the_api_server_could_not_hold_is_a_clear_error_not_a_draft() {
        let mut bad = observed(vec![], vec![]);
        bad.spec.client.namespace = "Shop Floor".into();
        assert_eq!(
            try_render_client_intents(&bad),
            Err(RenderError::InvalidNamespace("Shop Floor".into()))
        );
        bad.spec.client.namespace = String::new();
        assert!(try_render_client_intents(&bad).is_err());
        let mut nameless = observed(vec![], vec![]);
        nameless.spec.client.name = String::new();
        assert_eq!(
            try_render_client_intents(&nameless),
            Err(RenderError::EmptyWorkloadName)
        );
        let good = observed(vec![target("cart", "shop", "Deployment", 1)], vec![]);
        assert_eq!(
            try_render_client_intents(&good),
            Ok(render_client_intents(&good))
        );
    }
}
