//! `export --format networkpolicy`: the rendered NetworkPolicies ([`crate::policy`]) as YAML,
//! in one text or one file per workload.

use std::collections::BTreeMap;

use k8s_openapi::api::networking::v1::NetworkPolicy;

use crate::cli::error::CliError;
use crate::policy::calls::ObservedCall;
use crate::policy::evaluate::Verdict;
use crate::policy::networkpolicy::Rendered;

/// What every document starts with.
const HEADER: &str = "# Drafted by trafficmap from the observed calls. Once applied, calls not listed here are\n# blocked: review before applying.\n";

/// Every policy, as multi-document YAML, sorted by workload.
pub fn serialize_all(rendered: &Rendered) -> Result<String, CliError> {
    let docs = rendered
        .policies
        .values()
        .flatten()
        .map(to_yaml)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(docs.join("---\n"))
}

/// One file per workload, `<workload>.<namespace>.networkpolicy.yaml`, holding its policies.
pub fn serialize_per_workload(rendered: &Rendered) -> Result<Vec<(String, String)>, CliError> {
    rendered
        .policies
        .iter()
        .map(|(workload, policies)| {
            let docs = policies
                .iter()
                .map(to_yaml)
                .collect::<Result<Vec<_>, _>>()?;
            let name = workload.name.replace(['/', '\\'], "_");
            Ok((
                format!("{name}.{}.networkpolicy.yaml", workload.namespace),
                docs.join("---\n"),
            ))
        })
        .collect()
}

/// What `diff --networkpolicy` prints: per client, each observed call the policies would
/// block and which side blocks it, then a count.
pub fn format_verdicts(judged: &[(ObservedCall, Verdict)]) -> String {
    let mut blocked: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for (call, verdict) in judged {
        let Verdict::Blocked { egress, ingress } = verdict else {
            continue;
        };
        let protocol = call.connection.protocol.as_str();
        let mut by = Vec::new();
        if !egress.is_empty() {
            by.push(format!("egress: {}", egress.join(", ")));
        }
        if !ingress.is_empty() {
            by.push(format!("ingress: {}", ingress.join(", ")));
        }
        let line = format!(
            "  - {} on {}/{protocol} ({})",
            call.target,
            call.connection.port,
            by.join("; ")
        );
        let key = (call.client.namespace.clone(), call.client.name.clone());
        let lines = blocked.entry(key).or_default();
        if !lines.contains(&line) {
            lines.push(line);
        }
    }
    let mut out = String::new();
    let mut count = 0;
    for ((namespace, name), lines) in &blocked {
        out.push_str(&format!(
            "{name} in namespace {namespace}: observed calls NetworkPolicy would block:\n"
        ));
        for line in lines {
            out.push_str(line);
            out.push('\n');
            count += 1;
        }
    }
    if count == 0 {
        out.push_str(&format!(
            "NetworkPolicy lets every one of {} observed call(s) through.\n",
            judged.len()
        ));
    } else {
        out.push_str(&format!(
            "{count} of {} observed call(s) would be blocked by NetworkPolicy.\n",
            judged.len()
        ));
    }
    out
}

fn to_yaml(policy: &NetworkPolicy) -> Result<String, CliError> {
    let yaml = serde_yaml_ng::to_string(policy).map_err(|e| CliError::Serialize {
        what: "NetworkPolicy as YAML".into(),
        message: e.to_string(),
    })?;
    Ok(format!("{HEADER}{yaml}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::inventory::WorkloadKey;

    fn policy(name: &str, namespace: &str) -> NetworkPolicy {
        let mut p = NetworkPolicy::default();
        p.metadata.name = Some(name.into());
        p.metadata.namespace = Some(namespace.into());
        p
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
        let files = serialize_per_workload(&rendered).expect("yaml");
        let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "ledger.pay.networkpolicy.yaml",
                "cart.shop.networkpolicy.yaml"
            ]
        );
        assert_eq!(files[1].1.matches("kind: NetworkPolicy").count(), 2);
        let all = serialize_all(&rendered).expect("yaml");
        assert_eq!(all.matches("---\n").count(), 2);
        assert!(all.starts_with(HEADER));
    }
}
