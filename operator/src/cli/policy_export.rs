//! `export --format networkpolicy|cilium`: the rendered policies ([`crate::policy`]) as YAML, in
//! one text or one file per workload. Each document starts with a comment saying since when the
//! calls it allows have been observed, and carries no mark of ours.

use serde::Serialize;

use crate::cli::error::CliError;
use crate::policy::{Drafted, Rendered};

/// Every policy, as multi-document YAML, sorted by workload. `what` names the objects in errors.
pub fn serialize_all<P: Serialize>(rendered: &Rendered<P>, what: &str) -> Result<String, CliError> {
    let docs = rendered
        .policies
        .values()
        .flatten()
        .map(|d| to_yaml(d, what))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(docs.join("---\n"))
}

/// One file per workload, `<workload>.<namespace>.<format>.yaml`, holding its policies.
pub fn serialize_per_workload<P: Serialize>(
    rendered: &Rendered<P>,
    format: &str,
    what: &str,
) -> Result<Vec<(String, String)>, CliError> {
    rendered
        .policies
        .iter()
        .map(|(workload, policies)| {
            let docs = policies
                .iter()
                .map(|d| to_yaml(d, what))
                .collect::<Result<Vec<_>, _>>()?;
            // Workload names never hold `/`, but a file name must not escape the directory.
            let name = workload.name.replace(['/', '\\'], "_");
            Ok((
                format!("{name}.{}.{format}.yaml", workload.namespace),
                docs.join("---\n"),
            ))
        })
        .collect()
}

/// One YAML document, after a comment that says since when its calls have been observed.
fn to_yaml<P: Serialize>(drafted: &Drafted<P>, what: &str) -> Result<String, CliError> {
    let yaml = serde_yaml_ng::to_string(&drafted.policy).map_err(|e| CliError::Serialize {
        what: format!("{what} as YAML"),
        message: e.to_string(),
    })?;
    let since = drafted
        .since
        .map_or_else(|| "an unknown time".to_string(), |t| t.to_string());
    Ok(format!(
        "# Drafted by trafficmap from the calls observed since {since}.\n\
         # Once applied, calls not listed here are blocked: review before applying.\n{yaml}"
    ))
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::networking::v1::NetworkPolicy;
    use k8s_openapi::jiff::Timestamp;

    use super::*;
    use crate::policy::inventory::WorkloadKey;

    fn policy(name: &str, namespace: &str) -> Drafted<NetworkPolicy> {
        let mut p = NetworkPolicy::default();
        p.metadata.name = Some(name.into());
        p.metadata.namespace = Some(namespace.into());
        Drafted {
            policy: p,
            since: Some(Timestamp::from_second(1).expect("t")),
        }
    }

    #[test]
    fn a_workload_file_holds_its_policies_and_one_text_holds_all() {
        let mut rendered = Rendered::default();
        rendered.policies.insert(
            WorkloadKey::new("shop", "cart"),
            vec![
                policy("trafficmap-cart-egress", "shop"),
                policy("trafficmap-cart-ingress", "shop"),
            ],
        );
        rendered.policies.insert(
            WorkloadKey::new("pay", "ledger"),
            vec![policy("trafficmap-ledger-ingress", "pay")],
        );
        let files =
            serialize_per_workload(&rendered, "networkpolicy", "NetworkPolicy").expect("yaml");
        let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "ledger.pay.networkpolicy.yaml",
                "cart.shop.networkpolicy.yaml"
            ]
        );
        assert_eq!(files[1].1.matches("kind: NetworkPolicy").count(), 2);
        let all = serialize_all(&rendered, "NetworkPolicy").expect("yaml");
        assert_eq!(all.matches("---\n").count(), 2);
        assert_eq!(
            all.matches(
                "# Drafted by trafficmap from the calls observed since 1970-01-01T00:00:01Z.\n\
                 # Once applied, calls not listed here are blocked: review before applying.\n\
                 apiVersion: networking.k8s.io/v1\n"
            )
            .count(),
            3,
            "{all}"
        );
        assert!(!all.contains("labels"), "no mark of ours: {all}");
    }
}
