//! DNS names: what a name inside the cluster domain says (Service, StatefulSet pod, pod IP), and
//! which names each client recently resolved to each IP.

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;

use trafficmap_api::report::{ClientId, DnsObservation};

use super::{SeenRange, ServiceKey, TimeMs};

/// A name inside the cluster domain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClusterName {
    /// `<svc>.<ns>.svc.<domain>` (also `_port._proto.<svc>.<ns>.svc.<domain>`).
    Service(ServiceKey),
    /// `<hostname>.<svc>.<ns>.svc.<domain>`: one pod of a headless Service (StatefulSet pods).
    ServicePod {
        /// The pod's hostname.
        hostname: String,
        /// The headless Service.
        service: ServiceKey,
    },
    /// `<a-b-c-d>.<ns>.pod.<domain>`: a pod by IP.
    Pod {
        /// Namespace.
        namespace: String,
        /// The IP spelled in the name, when it parses.
        ip: Option<IpAddr>,
    },
    /// Inside the cluster domain but of no known shape.
    Other,
}

/// Where a DNS name points.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DnsName {
    /// Inside the cluster domain.
    Cluster(ClusterName),
    /// Outside the cluster domain: an internet name.
    External,
}

impl ClusterName {
    /// The Service the name names, if any.
    pub fn service(&self) -> Option<&ServiceKey> {
        match self {
            ClusterName::Service(s) | ClusterName::ServicePod { service: s, .. } => Some(s),
            ClusterName::Pod { .. } | ClusterName::Other => None,
        }
    }
}

/// Classifies `name` (case-insensitive, trailing dot allowed) against `cluster_domain`.
pub fn classify(name: &str, cluster_domain: &str) -> DnsName {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    let domain = cluster_domain.trim_matches('.').to_ascii_lowercase();
    let prefix = if name == domain {
        ""
    } else {
        match name.strip_suffix(&domain).and_then(|p| p.strip_suffix('.')) {
            Some(p) => p,
            None => return DnsName::External,
        }
    };
    let labels: Vec<&str> = prefix.split('.').filter(|l| !l.is_empty()).collect();
    let cluster = match labels.as_slice() {
        [svc, ns, "svc"] => ClusterName::Service(ServiceKey::new(ns, svc)),
        [port, proto, svc, ns, "svc"] if port.starts_with('_') && proto.starts_with('_') => {
            ClusterName::Service(ServiceKey::new(ns, svc))
        }
        [host, svc, ns, "svc"] => ClusterName::ServicePod {
            hostname: (*host).to_string(),
            service: ServiceKey::new(ns, svc),
        },
        [dashed, ns, "pod"] => ClusterName::Pod {
            namespace: (*ns).to_string(),
            ip: dashed_ip(dashed),
        },
        _ => ClusterName::Other,
    };
    DnsName::Cluster(cluster)
}

/// `10-244-0-5` -> 10.244.0.5, `fd00--5` -> fd00::5.
fn dashed_ip(dashed: &str) -> Option<IpAddr> {
    dashed
        .replace('-', ".")
        .parse()
        .ok()
        .or_else(|| dashed.replace('-', ":").parse().ok())
}

#[derive(Clone, Debug)]
struct SeenName {
    name: String,
    pod_uid: Option<String>,
    first_seen_ms: TimeMs,
    valid_until_ms: TimeMs,
}

/// Names clients resolved to IPs, remembered for the answer's TTL plus a slack (clients cache).
#[derive(Clone, Debug)]
pub struct DnsAnswers {
    by_client_and_ip: HashMap<(IpAddr, IpAddr), Vec<SeenName>>,
    slack_ms: u64,
    guard_ms: u64,
}

impl DnsAnswers {
    /// An empty cache; answers count until TTL + `slack_ms`, and from `guard_ms` before seen.
    pub fn new(slack_ms: u64, guard_ms: u64) -> Self {
        DnsAnswers {
            by_client_and_ip: HashMap::new(),
            slack_ms,
            guard_ms,
        }
    }

    /// Remembers the answers of `dns`.
    pub fn record(&mut self, dns: &DnsObservation) {
        let valid_until = dns
            .last_seen_ms
            .saturating_add(u64::from(dns.ttl_seconds) * 1_000);
        for ip in &dns.ips {
            let names = self
                .by_client_and_ip
                .entry((dns.client.ip, *ip))
                .or_default();
            match names
                .iter_mut()
                .find(|n| n.name == dns.name && n.pod_uid == dns.client.pod_uid)
            {
                Some(seen) => {
                    seen.first_seen_ms = seen.first_seen_ms.min(dns.first_seen_ms);
                    seen.valid_until_ms = seen.valid_until_ms.max(valid_until);
                }
                None => names.push(SeenName {
                    name: dns.name.clone(),
                    pod_uid: dns.client.pod_uid.clone(),
                    first_seen_ms: dns.first_seen_ms,
                    valid_until_ms: valid_until,
                }),
            }
        }
    }

    /// Names `client` resolved to `ip` that were valid when a call over `seen` began, sorted.
    /// Answers recorded for another pod UID on the same IP (hostNetwork pods) do not count.
    pub fn names_for(&self, client: &ClientId, ip: IpAddr, seen: SeenRange) -> Vec<String> {
        let Some(names) = self.by_client_and_ip.get(&(client.ip, ip)) else {
            return Vec::new();
        };
        let names: BTreeSet<&str> = names
            .iter()
            .filter(|n| match (&n.pod_uid, &client.pod_uid) {
                (Some(a), Some(b)) => a == b,
                _ => true,
            })
            .filter(|n| {
                n.first_seen_ms.saturating_sub(self.guard_ms) <= seen.first_ms
                    && seen.first_ms <= n.valid_until_ms.saturating_add(self.slack_ms)
            })
            .map(|n| n.name.as_str())
            .collect();
        names.into_iter().map(str::to_string).collect()
    }

    /// Forgets answers that expired (TTL + slack) before `now_ms`.
    pub fn gc(&mut self, now_ms: TimeMs) {
        let slack = self.slack_ms;
        self.by_client_and_ip.retain(|_, names| {
            names.retain(|n| n.valid_until_ms.saturating_add(slack) >= now_ms);
            !names.is_empty()
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOMAIN: &str = "cluster.local";

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("valid IP")
    }

    #[test]
    fn service_names_name_the_service() {
        assert_eq!(
            classify("cartservice.shop.svc.cluster.local", DOMAIN),
            DnsName::Cluster(ClusterName::Service(ServiceKey::new("shop", "cartservice")))
        );
        assert_eq!(
            classify("_grpc._tcp.cart.shop.svc.cluster.local.", DOMAIN),
            DnsName::Cluster(ClusterName::Service(ServiceKey::new("shop", "cart")))
        );
    }

    #[test]
    fn statefulset_pod_names_name_the_headless_service() {
        let got = classify("db-0.db.shop.svc.cluster.local", DOMAIN);
        let DnsName::Cluster(name) = got else {
            panic!("in cluster")
        };
        assert_eq!(name.service(), Some(&ServiceKey::new("shop", "db")));
        assert!(matches!(name, ClusterName::ServicePod { ref hostname, .. } if hostname == "db-0"));
    }

    #[test]
    fn pod_names_carry_their_ip() {
        assert_eq!(
            classify("10-244-0-5.shop.pod.cluster.local", DOMAIN),
            DnsName::Cluster(ClusterName::Pod {
                namespace: "shop".into(),
                ip: Some(ip("10.244.0.5"))
            })
        );
        assert_eq!(
            classify("fd00--5.shop.pod.cluster.local", DOMAIN),
            DnsName::Cluster(ClusterName::Pod {
                namespace: "shop".into(),
                ip: Some(ip("fd00::5"))
            })
        );
    }

    #[test]
    fn names_outside_the_cluster_domain_are_internet_names() {
        assert_eq!(classify("api.example.com", DOMAIN), DnsName::External);
        assert_eq!(classify("evilcluster.local", DOMAIN), DnsName::External);
        assert_eq!(
            classify("x.y.svc.corp.internal", "corp.internal"),
            DnsName::Cluster(ClusterName::Service(ServiceKey::new("y", "x")))
        );
        assert_eq!(
            classify("cluster.local", DOMAIN),
            DnsName::Cluster(ClusterName::Other)
        );
    }

    fn answer(
        client: &str,
        uid: Option<&str>,
        name: &str,
        ips: &[&str],
        at: TimeMs,
    ) -> DnsObservation {
        DnsObservation {
            client: ClientId {
                ip: ip(client),
                pod_uid: uid.map(str::to_string),
            },
            name: name.into(),
            ips: ips.iter().map(|s| ip(s)).collect(),
            ttl_seconds: 30,
            first_seen_ms: at,
            last_seen_ms: at,
        }
    }

    #[test]
    fn a_connection_carries_the_names_its_client_resolved_to_that_ip() {
        let mut dns = DnsAnswers::new(60_000, 2_000);
        dns.record(&answer(
            "10.244.0.5",
            None,
            "api.example.com",
            &["192.0.2.1"],
            10_000,
        ));
        dns.record(&answer(
            "10.244.0.5",
            None,
            "cdn.example.com",
            &["192.0.2.1"],
            11_000,
        ));
        dns.record(&answer(
            "10.244.0.6",
            None,
            "other.example.com",
            &["192.0.2.1"],
            11_000,
        ));
        let client = ClientId {
            ip: ip("10.244.0.5"),
            pod_uid: None,
        };
        let names = dns.names_for(&client, ip("192.0.2.1"), SeenRange::at(20_000));
        assert_eq!(names, vec!["api.example.com", "cdn.example.com"]);
        let late = dns.names_for(
            &client,
            ip("192.0.2.1"),
            SeenRange::at(11_000 + 30_000 + 60_001),
        );
        assert!(late.is_empty());
        let before = dns.names_for(&client, ip("192.0.2.1"), SeenRange::at(5_000));
        assert!(before.is_empty());
    }

    #[test]
    fn answers_to_another_pod_on_a_shared_node_ip_do_not_count() {
        let mut dns = DnsAnswers::new(60_000, 2_000);
        dns.record(&answer(
            "192.168.1.10",
            Some("pod-a"),
            "a.example.com",
            &["192.0.2.1"],
            10_000,
        ));
        let b = ClientId {
            ip: ip("192.168.1.10"),
            pod_uid: Some("pod-b".into()),
        };
        assert!(
            dns.names_for(&b, ip("192.0.2.1"), SeenRange::at(12_000))
                .is_empty()
        );
        dns.gc(10_000 + 30_000 + 60_001);
        let a = ClientId {
            pod_uid: Some("pod-a".into()),
            ..b
        };
        assert!(
            dns.names_for(&a, ip("192.0.2.1"), SeenRange::at(12_000))
                .is_empty()
        );
    }
}
