//! Which clients and calls a command looks at: `-n`, `--exclude-namespace` and `--server`.

use std::collections::BTreeSet;

use trafficmap_api::ObservedTraffic;
use trafficmap_api::coverage::{internet_target_id, target_id};
use trafficmap_api::observed::{InternetTarget, ObservedTarget};

/// The filters common to every command.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MapFilter {
    /// Client namespaces to keep; empty keeps all.
    pub namespaces: BTreeSet<String>,
    /// Client namespaces to leave out.
    pub excluded_namespaces: BTreeSet<String>,
    /// Only calls to this server, when set.
    pub server: Option<ServerRef>,
}

/// A server named on the command line: `name.namespace` or `internet:<name or ip>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerRef {
    /// A workload or Service in the cluster.
    InCluster {
        /// Workload or Service name.
        name: String,
        /// Its namespace.
        namespace: String,
    },
    /// A DNS name or IP outside the cluster.
    Internet(String),
}

impl ServerRef {
    /// Parses `name.namespace` or `internet:<name or ip>`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if let Some(rest) = text.strip_prefix("internet:") {
            let rest = rest.trim();
            if rest.is_empty() {
                return Err("--server internet:<name or ip> needs a name or IP".into());
            }
            return Ok(ServerRef::Internet(rest.to_ascii_lowercase()));
        }
        match text.split_once('.') {
            Some((name, namespace)) if !name.is_empty() && !namespace.is_empty() => {
                Ok(ServerRef::InCluster {
                    name: name.to_string(),
                    namespace: namespace.to_string(),
                })
            }
            _ => Err(format!(
                "--server {text:?}: expected name.namespace (e.g. cartservice.shop) or internet:<name or ip>"
            )),
        }
    }

    /// The id [`target_id`] gives the server, as `diff` prints it.
    pub fn id(&self) -> String {
        match self {
            ServerRef::InCluster { name, namespace } => format!("{name}.{namespace}"),
            ServerRef::Internet(what) => format!("internet:{what}"),
        }
    }

    /// Whether an in-cluster target is this server (the workload, or called through the
    /// Service of that name).
    pub fn matches_target(&self, target: &ObservedTarget) -> bool {
        match self {
            ServerRef::InCluster { name, namespace } => {
                target.namespace == *namespace
                    && (target.name == *name || target.service.as_deref() == Some(name.as_str()))
            }
            ServerRef::Internet(_) => false,
        }
    }

    /// Whether an internet target is this server (by DNS name or one of its IPs).
    pub fn matches_internet(&self, target: &InternetTarget) -> bool {
        match self {
            ServerRef::Internet(what) => {
                target
                    .dns_name
                    .as_deref()
                    .is_some_and(|n| n.eq_ignore_ascii_case(what))
                    || target.ips.iter().any(|ip| ip == what)
                    || internet_target_id(target) == self.id()
            }
            ServerRef::InCluster { .. } => false,
        }
    }
}

impl MapFilter {
    /// Whether clients in `namespace` are looked at.
    pub fn keeps_namespace(&self, namespace: &str) -> bool {
        (self.namespaces.is_empty() || self.namespaces.contains(namespace))
            && !self.excluded_namespaces.contains(namespace)
    }

    /// Whether a target id (as [`target_id`] or [`internet_target_id`] give it) passes
    /// `--server`.
    pub fn keeps_target_id(&self, id: &str) -> bool {
        self.server.as_ref().is_none_or(|s| s.id() == id)
    }

    /// The clients and calls that pass the filters, sorted by client namespace, name and kind.
    /// With `--server`, only calls to that server remain, and clients without such calls go.
    pub fn apply(&self, observed: Vec<ObservedTraffic>) -> Vec<ObservedTraffic> {
        let mut kept: Vec<ObservedTraffic> = observed
            .into_iter()
            .filter(|o| self.keeps_namespace(&o.spec.client.namespace))
            .filter_map(|mut o| {
                let Some(server) = &self.server else {
                    return Some(o);
                };
                let status = o.status.as_mut()?;
                status.targets.retain(|t| server.matches_target(t));
                status
                    .internet_targets
                    .retain(|t| server.matches_internet(t));
                has_calls(&o).then_some(o)
            })
            .collect();
        kept.sort_by(|a, b| client_order(a).cmp(&client_order(b)));
        kept
    }
}

/// Clients sort by namespace, then name, then kind.
fn client_order(observed: &ObservedTraffic) -> (&str, &str, &str) {
    let c = &observed.spec.client;
    (&c.namespace, &c.name, &c.kind)
}

/// Whether a client was seen calling anything.
pub fn has_calls(observed: &ObservedTraffic) -> bool {
    observed
        .status
        .as_ref()
        .is_some_and(|s| !s.targets.is_empty() || !s.internet_targets.is_empty())
}

/// Ids of every call of `observed`, for tests and messages.
pub fn call_ids(observed: &ObservedTraffic) -> Vec<String> {
    let Some(status) = &observed.status else {
        return Vec::new();
    };
    status
        .targets
        .iter()
        .map(target_id)
        .chain(status.internet_targets.iter().map(internet_target_id))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::fixtures::{client, internet, target};

    fn filter(ns: &[&str], excluded: &[&str], server: Option<&str>) -> MapFilter {
        MapFilter {
            namespaces: ns.iter().map(|s| s.to_string()).collect(),
            excluded_namespaces: excluded.iter().map(|s| s.to_string()).collect(),
            server: server.map(|s| ServerRef::parse(s).expect("valid server")),
        }
    }

    fn names(list: &[ObservedTraffic]) -> Vec<String> {
        list.iter()
            .map(|o| format!("{}.{}", o.spec.client.name, o.spec.client.namespace))
            .collect()
    }

    fn map() -> Vec<ObservedTraffic> {
        vec![
            client("web", "shop", vec![target("cart", "shop", 80)], vec![]),
            client(
                "checkout",
                "shop",
                vec![target("cart", "shop", 80), target("ledger", "pay", 9090)],
                vec![internet(Some("api.stripe.com"), &["192.0.2.1"], 443)],
            ),
            client("ledger", "pay", vec![], vec![]),
            client(
                "agent",
                "kube-system",
                vec![target("kubernetes", "default", 443)],
                vec![],
            ),
        ]
    }

    #[test]
    fn no_filter_keeps_everything_sorted_by_namespace_then_name() {
        let kept = MapFilter::default().apply(map());
        assert_eq!(
            names(&kept),
            [
                "agent.kube-system",
                "ledger.pay",
                "checkout.shop",
                "web.shop"
            ]
        );
    }

    #[test]
    fn namespaces_keep_and_exclusions_drop_clients() {
        assert_eq!(
            names(&filter(&["shop"], &[], None).apply(map())),
            ["checkout.shop", "web.shop"]
        );
        assert_eq!(
            names(&filter(&[], &["kube-system", "pay"], None).apply(map())),
            ["checkout.shop", "web.shop"]
        );
        assert_eq!(
            names(&filter(&["shop"], &["shop"], None).apply(map())),
            Vec::<String>::new()
        );
    }

    #[test]
    fn server_keeps_only_calls_to_it_and_clients_that_make_them() {
        let kept = filter(&[], &[], Some("ledger.pay")).apply(map());
        assert_eq!(names(&kept), ["checkout.shop"]);
        assert_eq!(call_ids(&kept[0]), ["ledger.pay"]);

        let kept = filter(&[], &[], Some("internet:API.stripe.com")).apply(map());
        assert_eq!(call_ids(&kept[0]), ["internet:api.stripe.com"]);
        let kept = filter(&[], &[], Some("internet:192.0.2.1")).apply(map());
        assert_eq!(names(&kept), ["checkout.shop"]);
    }

    #[test]
    fn server_matches_the_service_a_target_was_called_through() {
        let mut t = target("cart-v2", "shop", 80);
        t.service = Some("cart".into());
        let kept =
            filter(&[], &[], Some("cart.shop")).apply(vec![client("web", "shop", vec![t], vec![])]);
        assert_eq!(call_ids(&kept[0]), ["cart-v2.shop"]);
    }

    #[test]
    fn server_must_be_name_dot_namespace_or_internet() {
        assert!(ServerRef::parse("cart").is_err());
        assert!(ServerRef::parse("internet:").is_err());
        assert_eq!(
            ServerRef::parse("cart.shop").map(|s| s.id()),
            Ok("cart.shop".to_string())
        );
    }
}
