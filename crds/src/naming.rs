//! Object names derived from workload identities.

use crate::observed::WorkloadRef;

/// Longest name Kubernetes allows for a DNS-subdomain object name.
pub const MAX_OBJECT_NAME_CHARS: usize = 253;
/// Hex digits of the hash suffix appended to names that had to be shortened.
const HASH_SUFFIX_CHARS: usize = 10;

/// Kind segment used in object names for workloads named by annotation, which have no kind.
pub const ANNOTATED_KIND_SEGMENT: &str = "annotated";

/// Name of the `ObservedTraffic` for a client: `<workload>.<kind>.<namespace>` in lowercase (kind
/// `annotated` for workloads named by annotation, which have none), made a valid DNS subdomain;
/// when too long or changed by that, truncated and suffixed with a hash of the full name so
/// distinct workloads keep distinct names.
pub fn observed_traffic_name(client: &WorkloadRef) -> String {
    let kind = if client.kind.is_empty() {
        ANNOTATED_KIND_SEGMENT
    } else {
        &client.kind
    };
    let full = format!("{}.{}.{}", client.name, kind, client.namespace);
    let cleaned = dns_subdomain(&full);
    if cleaned.len() <= MAX_OBJECT_NAME_CHARS && cleaned == full.to_ascii_lowercase() {
        return cleaned;
    }
    shorten_with_hash(&cleaned, &full, MAX_OBJECT_NAME_CHARS)
}

/// Name of the draft `ClientIntents` for a workload: the workload name made a valid DNS subdomain
/// (workload names may hold `_`, which object names may not).
pub fn client_intents_name(workload_name: &str) -> String {
    let cleaned = dns_subdomain(workload_name);
    if cleaned.len() <= MAX_OBJECT_NAME_CHARS && cleaned == workload_name {
        return cleaned;
    }
    shorten_with_hash(&cleaned, workload_name, MAX_OBJECT_NAME_CHARS)
}

/// Lowercases, maps every character outside `[a-z0-9.-]` to `-`, and makes every dot-separated
/// part start and end alphanumeric (dropping parts left empty), as Kubernetes' DNS-1123
/// subdomain requires: `a.-.b` would be refused by the API server.
fn dns_subdomain(s: &str) -> String {
    let mapped: String = s
        .chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let parts: Vec<&str> = mapped
        .split('.')
        .map(|part| part.trim_matches('-'))
        .filter(|part| !part.is_empty())
        .collect();
    if parts.is_empty() {
        "x".to_string()
    } else {
        parts.join(".")
    }
}

fn shorten_with_hash(cleaned: &str, original: &str, max: usize) -> String {
    let suffix = format!("{:016x}", fnv1a64(original.as_bytes()));
    let suffix = &suffix[..HASH_SUFFIX_CHARS];
    let keep = max - HASH_SUFFIX_CHARS - 1;
    let head: String = cleaned.chars().take(keep).collect();
    let head = head.trim_end_matches(|c: char| !c.is_ascii_alphanumeric());
    format!("{head}-{suffix}")
}

/// FNV-1a, 64 bit: a stable hash (the same on every build and platform) for name suffixes.
fn fnv1a64(bytes: &[u8]) -> u64 {
    const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    bytes
        .iter()
        .fold(OFFSET_BASIS, |h, b| (h ^ u64::from(*b)).wrapping_mul(PRIME))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(name: &str, kind: &str, ns: &str) -> WorkloadRef {
        WorkloadRef {
            name: name.into(),
            kind: kind.into(),
            namespace: ns.into(),
        }
    }

    #[test]
    fn observed_traffic_name_is_workload_kind_namespace_lowercased() {
        assert_eq!(
            observed_traffic_name(&w("checkoutservice", "Deployment", "otterize-ecom-demo")),
            "checkoutservice.deployment.otterize-ecom-demo"
        );
    }

    #[test]
    fn underscores_from_dotted_workload_names_become_valid_and_stay_distinct() {
        let a = observed_traffic_name(&w("api_v1", "Deployment", "ns"));
        let b = observed_traffic_name(&w("api-v1", "Deployment", "ns"));
        assert!(a.starts_with("api-v1.deployment.ns-"), "{a}");
        assert_eq!(b, "api-v1.deployment.ns");
        assert_ne!(a, b);
    }

    #[test]
    fn workloads_named_by_annotation_have_no_kind_and_still_get_a_valid_name() {
        assert_eq!(
            observed_traffic_name(&w("billing", "", "shop")),
            "billing.annotated.shop"
        );
    }

    #[test]
    fn long_names_are_shortened_with_a_stable_hash() {
        let long = "a".repeat(250);
        let one = observed_traffic_name(&w(&long, "Deployment", "ns1"));
        let two = observed_traffic_name(&w(&long, "Deployment", "ns2"));
        assert!(one.len() <= MAX_OBJECT_NAME_CHARS);
        assert_ne!(one, two);
        assert_eq!(one, observed_traffic_name(&w(&long, "Deployment", "ns1")));
    }

    #[test]
    fn client_intents_name_maps_underscores() {
        assert_eq!(client_intents_name("cartservice"), "cartservice");
        let mapped = client_intents_name("my_app");
        assert!(mapped.starts_with("my-app-"), "{mapped}");
    }

    /// Kubernetes' IsDNS1123Subdomain.
    fn is_dns1123_subdomain(s: &str) -> bool {
        !s.is_empty()
            && s.len() <= MAX_OBJECT_NAME_CHARS
            && s.split('.').all(|part| {
                let b = part.as_bytes();
                !b.is_empty()
                    && b.iter()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
                    && b[0].is_ascii_alphanumeric()
                    && b[b.len() - 1].is_ascii_alphanumeric()
            })
    }

    #[test]
    fn every_dot_separated_part_starts_and_ends_alphanumeric() {
        // The fuzz crash of render_client_intents: "nightly-r1.-.1.1epo-t" gave a name with an
        // empty-after-trim part that the API server refuses.
        for name in [
            "nightly-r1.-.1.1epo-t",
            "a..b",
            ".-.",
            "a.-b-.c",
            "-x-.y.",
            "A_B.-C_",
            &"a.-".repeat(200),
        ] {
            let intents = client_intents_name(name);
            assert!(is_dns1123_subdomain(&intents), "{name:?} -> {intents:?}");
            let observed = observed_traffic_name(&w(name, "Deployment", "ns"));
            assert!(is_dns1123_subdomain(&observed), "{name:?} -> {observed:?}");
        }
        assert_eq!(client_intents_name("checkout.v2"), "checkout.v2");
        assert_ne!(client_intents_name("a.-.b"), client_intents_name("a.b"));
    }
}
