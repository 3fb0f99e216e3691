//! Which observed calls a `ClientIntents` allows: the operator reports the rest in
//! `ObservedTraffic` status when the intents are not trafficmap's, and `kubectl-trafficmap diff`
//! prints them (they would be blocked once the intents are enforced).
//!
//! Matching follows the intents' meaning: a `kubernetes` target names a workload (or, with kind
//! `Service`, a Service) as `name` in the client's namespace or `name.namespace`; a `service`
//! target names a Service; an `internet` target allows its domains (`*.` wildcards included) or
//! IPs/CIDRs, on its ports (none listed: any port).

use std::net::IpAddr;

use crate::intents::{ClientIntents, InternetTarget as IntentInternet, Target};
use crate::observed::{InternetTarget, ObservedTarget, ObservedTraffic, WorkloadRef};
use crate::render::{NODE_KIND, SERVICE_KIND};

/// An observed call in the form `kubectl-trafficmap` prints and scenarios expect:
/// `name.namespace`, or `internet:<dns name or ip>`.
pub fn target_id(target: &ObservedTarget) -> String {
    format!("{}.{}", target.name, target.namespace)
}

/// [`target_id`] for an internet target.
pub fn internet_target_id(target: &InternetTarget) -> String {
    match &target.dns_name {
        Some(name) => format!("internet:{name}"),
        None => format!("internet:{}", target.ips.join(",")),
    }
}

/// The observed calls of `observed` that `intents` do not allow, as target ids, sorted. Node
/// targets are left out: ClientIntents cannot express them.
pub fn uncovered_targets(observed: &ObservedTraffic, intents: &ClientIntents) -> Vec<String> {
    let client_ns = observed.spec.client.namespace.as_str();
    calls_where(
        observed,
        |t| {
            !intents
                .spec
                .targets
                .iter()
                .any(|i| covers_in_cluster(i, t, client_ns))
        },
        |t| {
            !intents
                .spec
                .targets
                .iter()
                .filter_map(|i| i.internet.as_ref())
                .any(|i| covers_internet(i, t))
        },
    )
}

/// The ids of `observed`'s calls that `in_cluster` or `internet` picks, sorted; node targets
/// left out (ClientIntents cannot express them).
fn calls_where(
    observed: &ObservedTraffic,
    in_cluster: impl Fn(&ObservedTarget) -> bool,
    internet: impl Fn(&InternetTarget) -> bool,
) -> Vec<String> {
    let Some(status) = &observed.status else {
        return Vec::new();
    };
    let mut ids: Vec<String> = status
        .targets
        .iter()
        .filter(|t| t.kind != NODE_KIND && in_cluster(t))
        .map(target_id)
        .chain(
            status
                .internet_targets
                .iter()
                .filter(|t| internet(t))
                .map(internet_target_id),
        )
        .collect();
    ids.sort();
    ids.dedup();
    ids
}

/// Whether `intents` are `client`'s: same workload name, the client's namespace (or none set,
/// as in a file meant for `kubectl apply -n`), and the client's kind when the intents name one.
pub fn names_client(intents: &ClientIntents, client: &WorkloadRef) -> bool {
    let namespace_ok = intents
        .metadata
        .namespace
        .as_deref()
        .is_none_or(|ns| ns == client.namespace);
    let kind_ok = match intents.spec.workload.kind.as_deref() {
        None => true,
        Some(kind) => client.kind.is_empty() || kind.eq_ignore_ascii_case(&client.kind),
    };
    namespace_ok && kind_ok && intents.spec.workload.name == client.name
}

/// The observed calls of `observed` that the cluster's ClientIntents would block once the
/// Otterize intents-operator enforces them, as target ids, sorted. `own` are the client's
/// intents (merged), `all` every ClientIntents in the cluster.
///
/// The intents-operator protects a server as soon as any ClientIntents names it: from then on
/// only clients whose intents name it may call it. So an in-cluster call is blocked when its
/// target is named by some ClientIntents and not by `own`. An internet call is blocked when
/// `own` names internet targets and none of them allows it (egress enforcement, which the
/// intents-operator applies to clients with internet intents). Node targets are left out.
pub fn blocked_by_intents(
    observed: &ObservedTraffic,
    own: &ClientIntents,
    all: &[ClientIntents],
) -> Vec<String> {
    let client_ns = observed.spec.client.namespace.as_str();
    let protected = |t: &ObservedTarget| {
        all.iter().any(|ci| {
            let ns = ci.metadata.namespace.as_deref().unwrap_or(client_ns);
            ci.spec.targets.iter().any(|i| covers_in_cluster(i, t, ns))
        })
    };
    let internet_intents: Vec<&IntentInternet> = own
        .spec
        .targets
        .iter()
        .filter_map(|i| i.internet.as_ref())
        .collect();
    calls_where(
        observed,
        |t| {
            protected(t)
                && !own
                    .spec
                    .targets
                    .iter()
                    .any(|i| covers_in_cluster(i, t, client_ns))
        },
        |t| !internet_intents.is_empty() && !internet_intents.iter().any(|i| covers_internet(i, t)),
    )
}

/// Intent target ids that no observed call used, sorted: declared but never seen.
pub fn unobserved_intents(
    observed: Option<&ObservedTraffic>,
    intents: &ClientIntents,
) -> Vec<String> {
    let client_ns = intents.metadata.namespace.clone().unwrap_or_default();
    let status = observed.and_then(|o| o.status.as_ref());
    let mut unused = Vec::new();
    for intent in &intents.spec.targets {
        let used = status.is_some_and(|s| {
            s.targets
                .iter()
                .any(|t| covers_in_cluster(intent, t, &client_ns))
                || intent
                    .internet
                    .as_ref()
                    .is_some_and(|i| s.internet_targets.iter().any(|t| covers_internet(i, t)))
        });
        if !used && let Some(id) = intent_id(intent, &client_ns) {
            unused.push(id);
        }
    }
    unused.sort();
    unused.dedup();
    unused
}

fn intent_id(intent: &Target, client_ns: &str) -> Option<String> {
    if let Some(k) = &intent.kubernetes {
        let (name, ns) = split_name(&k.name, client_ns);
        return Some(format!("{name}.{ns}"));
    }
    if let Some(s) = &intent.service {
        let (name, ns) = split_name(&s.name, client_ns);
        return Some(format!("{name}.{ns}"));
    }
    intent.internet.as_ref().map(|i| {
        let what: Vec<&str> = i.domains.iter().chain(&i.ips).map(String::as_str).collect();
        format!("internet:{}", what.join(","))
    })
}

/// `name` or `name.namespace` -> (name, namespace).
fn split_name<'a>(qualified: &'a str, default_ns: &'a str) -> (&'a str, &'a str) {
    qualified.split_once('.').unwrap_or((qualified, default_ns))
}

fn covers_in_cluster(intent: &Target, target: &ObservedTarget, client_ns: &str) -> bool {
    if let Some(k) = &intent.kubernetes {
        let (name, ns) = split_name(&k.name, client_ns);
        if ns != target.namespace {
            return false;
        }
        return match k.kind.as_deref() {
            Some(SERVICE_KIND) => names_service(target, name),
            Some(kind) => target.kind == kind && target.name == name,
            None => target.kind != SERVICE_KIND && target.name == name,
        };
    }
    if let Some(s) = &intent.service {
        let (name, ns) = split_name(&s.name, client_ns);
        return ns == target.namespace && names_service(target, name);
    }
    false
}

/// Whether the target is the Service `name` or was called through it.
fn names_service(target: &ObservedTarget, name: &str) -> bool {
    (target.kind == SERVICE_KIND && target.name == name) || target.service.as_deref() == Some(name)
}

fn covers_internet(intent: &IntentInternet, target: &InternetTarget) -> bool {
    let ports_ok =
        intent.ports.is_empty() || target.ports.iter().all(|p| intent.ports.contains(&p.port));
    if !ports_ok {
        return false;
    }
    let by_name = target
        .dns_name
        .as_deref()
        .is_some_and(|name| intent.domains.iter().any(|d| domain_matches(d, name)));
    let by_ip = !target.ips.is_empty()
        && target.ips.iter().all(|ip| {
            ip.parse::<IpAddr>()
                .is_ok_and(|ip| intent.ips.iter().any(|allowed| ip_matches(allowed, ip)))
        });
    by_name || by_ip
}

/// Whether the DNS name `name` (lower case, no trailing dot) is `pattern`, or matches it as
/// `*.suffix` (one label or more before the suffix).
pub fn domain_matches(pattern: &str, name: &str) -> bool {
    let pattern = pattern.trim_end_matches('.').to_ascii_lowercase();
    match pattern.strip_prefix("*.") {
        Some(suffix) => name
            .strip_suffix(suffix)
            .is_some_and(|head| head.ends_with('.') && head.len() > 1),
        None => pattern == name,
    }
}

/// Whether `ip` is `allowed` (an address) or inside it (a CIDR).
pub fn ip_matches(allowed: &str, ip: IpAddr) -> bool {
    let (addr, prefix) = match allowed.split_once('/') {
        Some((a, p)) => (a, p.parse::<u32>().ok()),
        None => (allowed, None),
    };
    let Ok(net) = addr.parse::<IpAddr>() else {
        return false;
    };
    match (net, ip) {
        (IpAddr::V4(n), IpAddr::V4(i)) => {
            let bits = prefix.unwrap_or(32).min(32);
            let mask = u32::MAX.checked_shl(32 - bits).unwrap_or(0);
            u32::from(n) & mask == u32::from(i) & mask
        }
        (IpAddr::V6(n), IpAddr::V6(i)) => {
            let bits = prefix.unwrap_or(128).min(128);
            let mask = u128::MAX.checked_shl(128 - bits).unwrap_or(0);
            u128::from(n) & mask == u128::from(i) & mask
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests;
