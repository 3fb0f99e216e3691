//! DNS names: what a name inside the cluster domain says (Service, StatefulSet pod, pod IP), and
//! which names each client recently resolved to each IP.

use std::collections::{BTreeSet, HashMap, VecDeque};
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

/// Most (client, address, name) answers remembered; past this the oldest recorded are
/// forgotten first (and counted), so a flood of unique names cannot grow the operator.
pub const DEFAULT_MAX_DNS_ANSWERS: usize = 200_000;
/// Most names remembered for one client and address; past this the oldest is forgotten, so
/// a flood of names for one address cannot make one edge's `dnsNames` unbounded.
pub const MAX_NAMES_PER_ADDRESS: usize = 32;
/// Longest TTL honoured, in seconds: a sniffer-reported TTL cannot pin an answer for longer.
pub const MAX_TTL_SECONDS: u32 = 24 * 60 * 60;

type AnswerKey = (IpAddr, IpAddr);

/// Names clients resolved to IPs, remembered for the answer's TTL plus a slack (clients cache),
/// at most [`DnsAnswers::capacity`] of them.
#[derive(Clone, Debug)]
pub struct DnsAnswers {
    by_client_and_ip: HashMap<AnswerKey, Vec<SeenName>>,
    /// Keys in the order names were added to them (one entry per name added), oldest first.
    added: VecDeque<AnswerKey>,
    len: usize,
    capacity: usize,
    evicted: u64,
    slack_ms: u64,
    guard_ms: u64,
}

impl DnsAnswers {
    /// An empty cache; answers count until TTL + `slack_ms`, and from `guard_ms` before seen.
    pub fn new(slack_ms: u64, guard_ms: u64) -> Self {
        Self::with_capacity(slack_ms, guard_ms, DEFAULT_MAX_DNS_ANSWERS)
    }

    /// Like [`DnsAnswers::new`], remembering at most `capacity` answers.
    pub fn with_capacity(slack_ms: u64, guard_ms: u64, capacity: usize) -> Self {
        DnsAnswers {
            by_client_and_ip: HashMap::new(),
            added: VecDeque::new(),
            len: 0,
            capacity: capacity.max(1),
            evicted: 0,
            slack_ms,
            guard_ms,
        }
    }

    /// Answers remembered now.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Most answers remembered.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Answers forgotten early, because the cache or an address's name list was full.
    pub fn evicted(&self) -> u64 {
        self.evicted
    }

    /// Remembers the answers of `dns`.
    pub fn record(&mut self, dns: &DnsObservation) {
        let ttl_ms = u64::from(dns.ttl_seconds.min(MAX_TTL_SECONDS)) * 1_000;
        let valid_until = dns.last_seen_ms.saturating_add(ttl_ms);
        for ip in &dns.ips {
            let key = (dns.client.ip, *ip);
            let names = self.by_client_and_ip.entry(key).or_default();
            match names
                .iter_mut()
                .find(|n| n.name == dns.name && n.pod_uid == dns.client.pod_uid)
            {
                Some(seen) => {
                    seen.first_seen_ms = seen.first_seen_ms.min(dns.first_seen_ms);
                    seen.valid_until_ms = seen.valid_until_ms.max(valid_until);
                }
                None => {
                    if names.len() >= MAX_NAMES_PER_ADDRESS {
                        names.remove(0);
                        self.len -= 1;
                        self.evicted += 1;
                    }
                    names.push(SeenName {
                        name: dns.name.clone(),
                        pod_uid: dns.client.pod_uid.clone(),
                        first_seen_ms: dns.first_seen_ms,
                        valid_until_ms: valid_until,
                    });
                    self.len += 1;
                    self.added.push_back(key);
                    self.evict_past_capacity();
                }
            }
        }
    }

    /// Forgets the oldest-added names until at most `capacity` remain.
    fn evict_past_capacity(&mut self) {
        while self.len > self.capacity {
            let Some(key) = self.added.pop_front() else {
                break;
            };
            if let Some(names) = self.by_client_and_ip.get_mut(&key) {
                if !names.is_empty() {
                    names.remove(0);
                    self.len -= 1;
                    self.evicted += 1;
                }
                if names.is_empty() {
                    self.by_client_and_ip.remove(&key);
                }
            }
        }
        // Entries of `added` whose names went by gc or per-address eviction are stale; keep
        // the queue proportional to what is held.
        if self.added.len() > self.len.saturating_mul(2).max(1024) {
            self.added = self
                .by_client_and_ip
                .iter()
                .flat_map(|(key, names)| std::iter::repeat_n(*key, names.len()))
                .collect();
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
        self.len = self.by_client_and_ip.values().map(Vec::len).sum();
        self.evict_past_capacity();
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

    fn flood_answer(
        client: &str,
        name: &str,
        ip_: &str,
        ttl_seconds: u32,
        at: u64,
    ) -> DnsObservation {
        DnsObservation {
            client: ClientId {
                ip: ip(client),
                pod_uid: None,
            },
            name: name.into(),
            ips: vec![ip(ip_)],
            ttl_seconds,
            first_seen_ms: at,
            last_seen_ms: at,
        }
    }

    #[test]
    fn a_flood_of_unique_names_stays_within_the_capacity_and_evictions_are_counted() {
        let mut answers = DnsAnswers::with_capacity(0, 0, 1_000);
        for i in 0..20_000u32 {
            let addr = format!("203.0.{}.{}", (i / 250) % 250, i % 250);
            answers.record(&flood_answer(
                "10.0.0.1",
                &format!("n{i}.example.com"),
                &addr,
                30,
                1_000,
            ));
        }
        assert_eq!(answers.len(), 1_000);
        assert_eq!(answers.evicted(), 19_000);
        assert!(answers.added.len() <= 2 * 1_024);
        let client = ClientId {
            ip: ip("10.0.0.1"),
            pod_uid: None,
        };
        // The newest are kept, the oldest forgotten.
        let newest = answers.names_for(&client, ip("203.0.79.249"), SeenRange::at(1_000));
        assert_eq!(newest, vec!["n19999.example.com".to_string()]);
        assert!(
            answers
                .names_for(&client, ip("203.0.0.0"), SeenRange::at(1_000))
                .is_empty()
        );
    }

    #[test]
    fn one_address_keeps_a_bounded_number_of_names() {
        let mut answers = DnsAnswers::new(0, 0);
        for i in 0..1_000 {
            answers.record(&flood_answer(
                "10.0.0.1",
                &format!("n{i}.example.com"),
                "203.0.113.1",
                30,
                1_000,
            ));
        }
        let client = ClientId {
            ip: ip("10.0.0.1"),
            pod_uid: None,
        };
        let names = answers.names_for(&client, ip("203.0.113.1"), SeenRange::at(1_000));
        assert_eq!(names.len(), MAX_NAMES_PER_ADDRESS);
        assert!(names.contains(&"n999.example.com".to_string()));
        assert_eq!(answers.len(), MAX_NAMES_PER_ADDRESS);
        assert_eq!(answers.evicted(), 1_000 - MAX_NAMES_PER_ADDRESS as u64);
    }

    #[test]
    fn a_huge_ttl_cannot_pin_an_answer_past_a_day() {
        let mut answers = DnsAnswers::new(0, 0);
        answers.record(&flood_answer(
            "10.0.0.1",
            "pinned.example.com",
            "203.0.113.1",
            u32::MAX,
            0,
        ));
        answers.gc(u64::from(MAX_TTL_SECONDS) * 1_000 + 1);
        assert!(answers.is_empty());
    }
}
