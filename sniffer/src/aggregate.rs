//! Deduplication of what capture and scan see into [`Observation`]s.
//!
//! A connection is new once per client, server, port and protocol; a DNS answer once per
//! client address, name and address family, and again when its addresses (or the client's
//! pod) change. A and AAAA answers are kept apart so the usual A + AAAA query pair does not
//! look like a changing answer. Entries not seen for [`ENTRY_RETENTION_MS`] are forgotten.
//!
//! With a refresh interval ([`Aggregator::with_refresh`]) an entry still being seen is
//! reported again once that long has passed since it was last reported, with its first and
//! latest times, so a receiver's "last seen" keeps moving for long-lived connections.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use trafficmap_api::observed::Protocol;
use trafficmap_api::report::{ClientId, ConnectionObservation, DnsObservation, Observation};

use crate::events::DnsEvent;
use crate::scan::ConnectionSeen;

/// How long an entry is kept after it was last seen, in milliseconds.
pub const ENTRY_RETENTION_MS: u64 = 60 * 60 * 1000;
/// Most entries of each kind; past this the table is cleared (and observations repeat).
pub const MAX_ENTRIES: usize = 200_000;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct DnsKey {
    client_ip: IpAddr,
    name: String,
    ipv6: bool,
}

#[derive(Debug, Clone)]
struct DnsEntry {
    pod_uid: Option<String>,
    ips: Vec<IpAddr>,
    first_seen_ms: u64,
    last_seen_ms: u64,
    reported_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct ConnectionKey {
    client: ClientId,
    server: SocketAddr,
    protocol: Protocol,
}

#[derive(Debug, Clone, Copy)]
struct Seen {
    first_ms: u64,
    last_ms: u64,
    reported_ms: u64,
}

/// What has been observed so far.
#[derive(Debug, Default)]
pub struct Aggregator {
    dns: HashMap<DnsKey, DnsEntry>,
    connections: HashMap<ConnectionKey, Seen>,
    pod_ips: HashMap<IpAddr, String>,
    refresh_ms: Option<u64>,
}

impl Aggregator {
    /// An aggregator that reports entries still seen again every `refresh`.
    pub fn with_refresh(refresh: Duration) -> Self {
        Aggregator {
            refresh_ms: Some(u64::try_from(refresh.as_millis()).unwrap_or(u64::MAX)),
            ..Aggregator::default()
        }
    }

    /// Replaces the address -> pod UID map used to name DNS clients.
    pub fn set_pod_ips(&mut self, pod_ips: HashMap<IpAddr, String>) {
        self.pod_ips = pod_ips;
    }

    /// The observations a DNS answer adds: one per address family that is new or changed.
    pub fn dns(&mut self, event: &DnsEvent) -> Vec<Observation> {
        let pod_uid = self.pod_ips.get(&event.client_ip).cloned();
        let mut out = Vec::new();
        for ipv6 in [false, true] {
            let ips: Vec<IpAddr> = event
                .answer
                .ips
                .iter()
                .filter(|ip| ip.is_ipv6() == ipv6)
                .copied()
                .collect();
            if ips.is_empty() {
                continue;
            }
            let key = DnsKey {
                client_ip: event.client_ip,
                name: event.answer.name.clone(),
                ipv6,
            };
            let now = event.seen_ms;
            let changed = match self.dns.get_mut(&key) {
                Some(entry) => {
                    entry.last_seen_ms = entry.last_seen_ms.max(now);
                    let changed = entry.ips != ips || entry.pod_uid != pod_uid;
                    if changed {
                        entry.ips = ips;
                        entry.pod_uid = pod_uid.clone();
                    }
                    let due = refresh_due(self.refresh_ms, entry.reported_ms, now);
                    if changed || due {
                        entry.reported_ms = now;
                    }
                    (changed || due).then(|| entry.clone())
                }
                None => {
                    if self.dns.len() >= MAX_ENTRIES {
                        tracing::warn!(entries = self.dns.len(), "DNS table full: cleared");
                        self.dns.clear();
                    }
                    let entry = DnsEntry {
                        pod_uid: pod_uid.clone(),
                        ips,
                        first_seen_ms: now,
                        last_seen_ms: now,
                        reported_ms: now,
                    };
                    self.dns.insert(key.clone(), entry.clone());
                    Some(entry)
                }
            };
            if let Some(entry) = changed {
                out.push(Observation::Dns(DnsObservation {
                    client: ClientId {
                        ip: key.client_ip,
                        pod_uid: entry.pod_uid,
                    },
                    name: key.name,
                    ips: entry.ips,
                    ttl_seconds: event.answer.ttl_seconds,
                    first_seen_ms: entry.first_seen_ms,
                    last_seen_ms: entry.last_seen_ms,
                }));
            }
        }
        out
    }

    /// The observation a connection adds when it was not seen before (or is due a refresh).
    pub fn connection(&mut self, seen: &ConnectionSeen, now_ms: u64) -> Option<Observation> {
        let key = ConnectionKey {
            client: seen.client.clone(),
            server: seen.server,
            protocol: seen.protocol,
        };
        if let Some(held) = self.connections.get(&key).copied() {
            let last_ms = held.last_ms.max(now_ms);
            let due = refresh_due(self.refresh_ms, held.reported_ms, now_ms);
            let reported_ms = if due { now_ms } else { held.reported_ms };
            self.connections.insert(
                key,
                Seen {
                    last_ms,
                    reported_ms,
                    ..held
                },
            );
            return due.then(|| connection_observation(seen, held.first_ms, last_ms));
        }
        if self.connections.len() >= MAX_ENTRIES {
            tracing::warn!(
                entries = self.connections.len(),
                "connection table full: cleared"
            );
            self.connections.clear();
        }
        self.connections.insert(
            key,
            Seen {
                first_ms: now_ms,
                last_ms: now_ms,
                reported_ms: now_ms,
            },
        );
        Some(connection_observation(seen, now_ms, now_ms))
    }

    /// Forgets entries last seen before `cutoff_ms`.
    pub fn forget_older_than(&mut self, cutoff_ms: u64) {
        self.dns.retain(|_, e| e.last_seen_ms >= cutoff_ms);
        self.connections.retain(|_, e| e.last_ms >= cutoff_ms);
    }

    /// Entries held (DNS, connections).
    pub fn len(&self) -> (usize, usize) {
        (self.dns.len(), self.connections.len())
    }
}

/// True when an entry last reported at `reported_ms` is due to be reported again.
fn refresh_due(refresh_ms: Option<u64>, reported_ms: u64, now_ms: u64) -> bool {
    refresh_ms.is_some_and(|refresh| now_ms.saturating_sub(reported_ms) >= refresh)
}

fn connection_observation(seen: &ConnectionSeen, first_ms: u64, last_ms: u64) -> Observation {
    Observation::Connection(ConnectionObservation {
        client: seen.client.clone(),
        server_ip: seen.server.ip(),
        server_port: seen.server.port(),
        protocol: seen.protocol,
        first_seen_ms: first_ms,
        last_seen_ms: last_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::DnsAnswer;

    const UID: &str = "0b4cbd6e-3f2a-4c8e-9a55-0e5f7f0c1d2a";

    fn event(client: &str, name: &str, ips: &[&str], seen_ms: u64) -> DnsEvent {
        DnsEvent {
            client_ip: client.parse().expect("ip"),
            answer: DnsAnswer {
                name: name.into(),
                ips: ips.iter().map(|s| s.parse().expect("ip")).collect(),
                ttl_seconds: 30,
            },
            seen_ms,
            ifindex: 1,
        }
    }

    fn conn(client: &str, server: &str) -> ConnectionSeen {
        ConnectionSeen {
            client: ClientId {
                ip: client.parse().expect("ip"),
                pod_uid: None,
            },
            server: server.parse().expect("server"),
            protocol: Protocol::Tcp,
        }
    }

    #[test]
    fn a_repeated_answer_is_reported_once() {
        let mut agg = Aggregator::default();
        assert_eq!(
            agg.dns(&event("10.0.0.5", "a.b", &["10.1.0.1"], 1)).len(),
            1
        );
        assert!(
            agg.dns(&event("10.0.0.5", "a.b", &["10.1.0.1"], 2))
                .is_empty()
        );
        assert_eq!(
            agg.dns(&event("10.0.0.6", "a.b", &["10.1.0.1"], 3)).len(),
            1
        );
    }

    #[test]
    fn a_changed_answer_is_reported_again_with_its_first_seen_time() {
        let mut agg = Aggregator::default();
        agg.dns(&event("10.0.0.5", "a.b", &["10.1.0.1"], 1));
        let again = agg.dns(&event("10.0.0.5", "a.b", &["10.1.0.2"], 9));
        match again.as_slice() {
            [Observation::Dns(d)] => {
                assert_eq!((d.first_seen_ms, d.last_seen_ms), (1, 9));
                assert_eq!(d.ips, vec!["10.1.0.2".parse::<IpAddr>().expect("ip")]);
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn a_and_aaaa_answers_do_not_replace_each_other() {
        let mut agg = Aggregator::default();
        assert_eq!(
            agg.dns(&event("10.0.0.5", "a.b", &["10.1.0.1"], 1)).len(),
            1
        );
        assert_eq!(agg.dns(&event("10.0.0.5", "a.b", &["fd00::1"], 2)).len(), 1);
        assert!(
            agg.dns(&event("10.0.0.5", "a.b", &["10.1.0.1"], 3))
                .is_empty()
        );
        assert!(
            agg.dns(&event("10.0.0.5", "a.b", &["fd00::1"], 4))
                .is_empty()
        );
    }

    #[test]
    fn dns_clients_get_the_pod_of_their_address() {
        let mut agg = Aggregator::default();
        agg.set_pod_ips(HashMap::from([(
            "10.0.0.5".parse().expect("ip"),
            UID.to_owned(),
        )]));
        match agg
            .dns(&event("10.0.0.5", "a.b", &["10.1.0.1"], 1))
            .as_slice()
        {
            [Observation::Dns(d)] => assert_eq!(d.client.pod_uid.as_deref(), Some(UID)),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn a_connection_is_reported_when_first_seen_only() {
        let mut agg = Aggregator::default();
        assert!(
            agg.connection(&conn("10.0.0.5", "10.1.0.1:80"), 1)
                .is_some()
        );
        assert!(
            agg.connection(&conn("10.0.0.5", "10.1.0.1:80"), 2)
                .is_none()
        );
        assert!(
            agg.connection(&conn("10.0.0.5", "10.1.0.1:81"), 3)
                .is_some()
        );
    }

    #[test]
    fn without_a_refresh_interval_a_long_lived_connection_is_reported_once() {
        let mut agg = Aggregator::default();
        assert!(
            agg.connection(&conn("10.0.0.5", "10.1.0.1:80"), 1)
                .is_some()
        );
        assert!(
            agg.connection(&conn("10.0.0.5", "10.1.0.1:80"), 1_000_000)
                .is_none()
        );
    }

    #[test]
    fn a_connection_still_seen_is_refreshed_with_its_first_and_latest_times() {
        let mut agg = Aggregator::with_refresh(Duration::from_millis(100));
        let c = conn("10.0.0.5", "10.1.0.1:80");
        assert!(agg.connection(&c, 1_000).is_some());
        assert!(agg.connection(&c, 1_050).is_none());
        match agg.connection(&c, 1_100) {
            Some(Observation::Connection(o)) => {
                assert_eq!((o.first_seen_ms, o.last_seen_ms), (1_000, 1_100));
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(agg.connection(&c, 1_150).is_none());
        assert!(agg.connection(&c, 1_200).is_some());
    }

    #[test]
    fn a_repeated_dns_answer_is_refreshed_after_the_interval() {
        let mut agg = Aggregator::with_refresh(Duration::from_millis(100));
        assert_eq!(
            agg.dns(&event("10.0.0.5", "a.b", &["10.1.0.1"], 1_000))
                .len(),
            1
        );
        assert!(
            agg.dns(&event("10.0.0.5", "a.b", &["10.1.0.1"], 1_099))
                .is_empty()
        );
        match agg
            .dns(&event("10.0.0.5", "a.b", &["10.1.0.1"], 1_100))
            .as_slice()
        {
            [Observation::Dns(d)] => assert_eq!((d.first_seen_ms, d.last_seen_ms), (1_000, 1_100)),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn forgotten_entries_are_reported_again() {
        let mut agg = Aggregator::default();
        agg.connection(&conn("10.0.0.5", "10.1.0.1:80"), 1);
        agg.dns(&event("10.0.0.5", "a.b", &["10.1.0.1"], 1));
        agg.forget_older_than(2);
        assert_eq!(agg.len(), (0, 0));
        assert!(
            agg.connection(&conn("10.0.0.5", "10.1.0.1:80"), 3)
                .is_some()
        );
    }
}
