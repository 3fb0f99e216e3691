//! `status.resolvedIPs` of a ClientIntents: the IPs its internet domains were seen to resolve to.
//! The intents-operator builds a client's internet egress policy from `internet.ips` plus these
//! (an entry matches a domain when its `dns` is the domain as written, wildcards included), so
//! a ClientIntents with domains and no entry allows nothing once egress is enforced.
//!
//! Pure: which IPs a client's DNS answers give each domain, merged into what is there. Entries
//! only grow (an address a client used may be used again; another writer's entries stay), and
//! stay bounded by [`MAX_IPS_PER_NAME`].

use std::collections::{BTreeMap, BTreeSet};

use crate::coverage::domain_matches;
use crate::intents::{ClientIntents, ResolvedIps};
use crate::observed::ObservedTraffic;

/// Most IPs kept for one domain; past it, new answers are not added (a CDN name can rotate
/// through thousands of addresses).
pub const MAX_IPS_PER_NAME: usize = 64;

/// DNS name -> the IPs it was seen to resolve to, for one client.
pub type Answers = BTreeMap<String, BTreeSet<String>>;

/// The DNS answers recorded in a client's ObservedTraffic (its named internet targets).
pub fn answers(observed: &ObservedTraffic) -> Answers {
    let mut answers = Answers::new();
    for target in observed.status.iter().flat_map(|s| &s.internet_targets) {
        if let Some(name) = &target.dns_name {
            answers
                .entry(name.trim_end_matches('.').to_ascii_lowercase())
                .or_default()
                .extend(target.ips.iter().cloned());
        }
    }
    answers
}

/// Every internet domain `intents` names, as written, sorted and deduplicated.
pub fn domains(intents: &ClientIntents) -> Vec<String> {
    let set: BTreeSet<String> = intents
        .spec
        .targets
        .iter()
        .filter_map(|t| t.internet.as_ref())
        .flat_map(|i| i.domains.iter().cloned())
        .collect();
    set.into_iter().collect()
}

/// `existing` with the IPs `answers` give each domain of `intents` added (a wildcard domain
/// gathers every name it matches), or `None` when nothing is new. Existing entries keep their
/// order and content; new IPs are appended sorted; new domains come after, sorted.
pub fn merge(
    existing: &[ResolvedIps],
    intents: &ClientIntents,
    answers: &Answers,
) -> Option<Vec<ResolvedIps>> {
    let mut merged = existing.to_vec();
    let mut changed = false;
    for domain in domains(intents) {
        let found: BTreeSet<&String> = answers
            .iter()
            .filter(|(name, _)| domain_matches(&domain, name))
            .flat_map(|(_, ips)| ips)
            .collect();
        if found.is_empty() {
            continue;
        }
        let at = match merged.iter().position(|r| r.dns == domain) {
            Some(at) => at,
            None => {
                merged.push(ResolvedIps {
                    dns: domain.clone(),
                    ips: Vec::new(),
                });
                merged.len() - 1
            }
        };
        let entry = &mut merged[at];
        for ip in found {
            if entry.ips.len() >= MAX_IPS_PER_NAME {
                break;
            }
            if !entry.ips.contains(ip) {
                entry.ips.push(ip.clone());
                changed = true;
            }
        }
    }
    changed.then_some(merged)
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use k8s_openapi::jiff::Timestamp;

    use super::*;
    use crate::WorkloadRef;
    use crate::intents::{ClientIntentsSpec, InternetTarget, Target};
    use crate::observed::{InternetTarget as Seen, ObservedTrafficStatus};

    fn intents(domains: &[&str]) -> ClientIntents {
        ClientIntents::new(
            "checkout",
            ClientIntentsSpec {
                targets: vec![Target {
                    internet: Some(InternetTarget {
                        domains: domains.iter().map(|d| (*d).to_string()).collect(),
                        ..InternetTarget::default()
                    }),
                    ..Target::default()
                }],
                ..ClientIntentsSpec::default()
            },
        )
    }

    fn seen(pairs: &[(&str, &[&str])]) -> Answers {
        let t = Time(Timestamp::from_second(1).expect("valid"));
        let mut ot = ObservedTraffic::for_client(WorkloadRef {
            name: "checkout".into(),
            namespace: "shop".into(),
            kind: "Deployment".into(),
        });
        ot.status = Some(ObservedTrafficStatus {
            internet_targets: pairs
                .iter()
                .map(|(name, ips)| Seen {
                    dns_name: Some((*name).to_string()),
                    ips: ips.iter().map(|i| (*i).to_string()).collect(),
                    ports: vec![],
                    seen_by: vec![],
                    first_seen: t.clone(),
                    last_seen: t.clone(),
                })
                .collect(),
            ..ObservedTrafficStatus::default()
        });
        answers(&ot)
    }

    fn entry(dns: &str, ips: &[&str]) -> ResolvedIps {
        ResolvedIps {
            dns: dns.into(),
            ips: ips.iter().map(|i| (*i).to_string()).collect(),
        }
    }

    #[test]
    fn each_domain_gets_the_ips_its_answers_gave() {
        let answers = seen(&[
            ("bank.example.com", &["192.0.2.10", "192.0.2.11"]),
            ("api.stripe.com", &["2001:db8::5"]),
            ("unrelated.example.org", &["198.51.100.1"]),
        ]);
        let merged = merge(
            &[],
            &intents(&["bank.example.com", "api.stripe.com"]),
            &answers,
        );
        assert_eq!(
            merged,
            Some(vec![
                entry("api.stripe.com", &["2001:db8::5"]),
                entry("bank.example.com", &["192.0.2.10", "192.0.2.11"]),
            ])
        );
    }

    #[test]
    fn a_wildcard_domain_gathers_every_name_it_matches_under_its_own_spelling() {
        let answers = seen(&[
            ("a.cdn.example.com", &["192.0.2.1"]),
            ("b.cdn.example.com", &["192.0.2.2"]),
            ("cdn.example.com", &["192.0.2.3"]),
        ]);
        let merged = merge(&[], &intents(&["*.cdn.example.com"]), &answers);
        assert_eq!(
            merged,
            Some(vec![entry(
                "*.cdn.example.com",
                &["192.0.2.1", "192.0.2.2"]
            )])
        );
    }

    #[test]
    fn entries_only_grow_and_nothing_new_means_no_write() {
        let existing = vec![
            entry("bank.example.com", &["192.0.2.99"]),
            entry("kept.example.net", &["203.0.113.7"]),
        ];
        let answers = seen(&[("bank.example.com", &["192.0.2.10"])]);
        let ci = intents(&["bank.example.com"]);
        let merged = merge(&existing, &ci, &answers).expect("an IP was added");
        assert_eq!(
            merged,
            vec![
                entry("bank.example.com", &["192.0.2.99", "192.0.2.10"]),
                entry("kept.example.net", &["203.0.113.7"]),
            ]
        );
        assert_eq!(merge(&merged, &ci, &answers), None);
        assert_eq!(merge(&[], &intents(&["quiet.example.com"]), &answers), None);
    }

    #[test]
    fn a_domain_keeps_at_most_the_bound() {
        let many: Vec<String> = (0..200)
            .map(|i| format!("10.1.{}.{}", i / 250, i % 250))
            .collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        let answers = seen(&[("cdn.example.com", &many)]);
        let merged = merge(&[], &intents(&["cdn.example.com"]), &answers).expect("added");
        assert_eq!(merged[0].ips.len(), MAX_IPS_PER_NAME);
        assert_eq!(
            merge(&merged, &intents(&["cdn.example.com"]), &answers),
            None
        );
    }
}
