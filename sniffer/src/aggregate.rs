//! Deduplication of what capture and scan see into [`Observation`]s.
//!
//! A connection is new once per client, server, port and protocol; a DNS answer once per
//! client address, name and address family, and again when its addresses (or the client's
//! pod) change. A and AAAA answers are kept apart so the usual A + AAAA query pair does not
//! look like a changing answer. Entries not seen for [`ENTRY_RETENTION_MS`] are forgotten.
//!
//! With a refresh interval ([`Aggregator::with_refresh`]) an entry still being seen is
//! reported again once that long has passed since it was last reported, covering the time
//! since that report (from the last report to the latest sighting), so a receiver's "last
//! seen" keeps moving for long-lived connections. Their first sighting was reported already;
//! sending it again would make every refresh of a connection older than the operator's IP
//! history look expired, and be dropped.
//!
//! A DNS client's pod is found by [`dns_client_pod`]: when the host sent the response on a
//! host-side veth whose peer is a pod's namespace, that pod (the interface cannot be fooled by
//! a reused, duplicated or spoofed address); otherwise the pod whose namespace holds the
//! client address. When both tell and disagree, the interface wins and the disagreement is
//! counted (`dns_client_mismatch`).

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use trafficmap_api::observed::Protocol;
use trafficmap_api::report::{ClientId, ConnectionObservation, DnsObservation, Observation};

use crate::counters::Counters;
use crate::events::DnsEvent;
use crate::scan::{ConnectionSeen, PodLink};

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

/// A [`DnsKey`] borrowing its name, to look an answer up without copying the name. Its fields
/// hash in the same order and as the same types (`&str` as `String`), as lookups require.
#[derive(Debug, Clone, Copy, Hash)]
struct DnsKeyRef<'a> {
    client_ip: IpAddr,
    name: &'a str,
    ipv6: bool,
}

impl hashbrown::Equivalent<DnsKey> for DnsKeyRef<'_> {
    fn equivalent(&self, key: &DnsKey) -> bool {
        self.client_ip == key.client_ip && self.ipv6 == key.ipv6 && self.name == key.name
    }
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
    last_ms: u64,
    reported_ms: u64,
}

/// What has been observed so far.
#[derive(Debug, Default)]
pub struct Aggregator {
    /// hashbrown rather than std's map so that an answer is looked up by [`DnsKeyRef`].
    dns: hashbrown::HashMap<DnsKey, DnsEntry, foldhash::fast::RandomState>,
    connections: foldhash::HashMap<ConnectionKey, Seen>,
    /// Pod addresses and links come from the node's own namespaces, looked up per DNS response:
    /// hashed with foldhash like the tables above.
    pod_ips: foldhash::HashMap<IpAddr, String>,
    pod_links: PodLinks,
    refresh_ms: Option<u64>,
    evicted: u64,
}

/// The host-side veths of scanned namespaces, by interface index, and the pod UIDs behind
/// them.
#[derive(Debug, Default, Clone)]
pub struct PodLinks {
    by_index: foldhash::HashMap<i32, PodLink>,
    /// Every DNS response asks whether its client's pod has a veth; searching the links for it
    /// cost one comparison per pod on the node.
    uids: foldhash::HashSet<String>,
}

impl PodLinks {
    fn get(&self, index: &i32) -> Option<&PodLink> {
        self.by_index.get(index)
    }

    fn has_pod(&self, uid: &str) -> bool {
        self.uids.contains(uid)
    }
}

impl From<HashMap<i32, PodLink>> for PodLinks {
    fn from(by_index: HashMap<i32, PodLink>) -> Self {
        let uids = by_index
            .values()
            .filter_map(|link| link.pod_uid.clone())
            .collect();
        PodLinks {
            by_index: by_index.into_iter().collect(),
            uids,
        }
    }
}

/// How the pod of a DNS client was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientSource {
    /// From the host-side veth the response was sent on.
    Interface,
    /// From the client address.
    Address,
    /// Neither tells.
    Unknown,
}

/// The pod of a DNS client, how it was found, and whether the two ways disagreed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientPod<'a> {
    /// The pod UID, when known.
    pub pod_uid: Option<&'a str>,
    /// Where it came from.
    pub source: ClientSource,
    /// The interface named a namespace and the address map a different pod.
    pub mismatch: bool,
}

/// Decides a DNS client's pod: the namespace behind the first interface in `sent_on` that is a
/// host-side veth of a scanned namespace wins; otherwise the pod holding `client_ip`, unless
/// that pod has a known veth (the response would have left on it).
///
/// The address map is as old as the last scan: a pod that has just been replaced leaves its
/// address to a newcomer whose veth the scan has not seen yet. Naming the old pod then would
/// turn the newcomer's calls into the old pod's (a false edge); without a pod UID the operator
/// resolves the address with its time-aware history instead.
pub fn dns_client_pod<'a>(
    sent_on: &[i32],
    client_ip: &IpAddr,
    pod_links: &'a PodLinks,
    pod_ips: &'a HashMap<IpAddr, String, impl BuildHasher>,
) -> ClientPod<'a> {
    let by_address = pod_ips.get(client_ip).filter(|uid| !pod_links.has_pod(uid));
    match sent_on.iter().find_map(|index| pod_links.get(index)) {
        Some(link) => ClientPod {
            pod_uid: link.pod_uid.as_deref(),
            source: ClientSource::Interface,
            mismatch: by_address.is_some() && by_address != link.pod_uid.as_ref(),
        },
        None => ClientPod {
            pod_uid: by_address.map(String::as_str),
            source: if by_address.is_some() {
                ClientSource::Address
            } else {
                ClientSource::Unknown
            },
            mismatch: false,
        },
    }
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
        self.pod_ips = pod_ips.into_iter().collect();
    }

    /// Replaces the host veth -> peer namespace map used to name DNS clients.
    pub fn set_pod_links(&mut self, pod_links: HashMap<i32, PodLink>) {
        self.pod_links = PodLinks::from(pod_links);
    }

    /// Entries forgotten because a table was full (not by age): their next sighting is
    /// reported again, so the operator sees a repeat, never a loss.
    pub fn evicted(&self) -> u64 {
        self.evicted
    }

    /// The observations a DNS answer adds: one per address family that is new or changed.
    /// Counts how its client was attributed in `counters`.
    pub fn dns(&mut self, event: &DnsEvent, counters: &Counters) -> Vec<Observation> {
        let client = dns_client_pod(
            &event.sent_on,
            &event.client_ip,
            &self.pod_links,
            &self.pod_ips,
        );
        match client.source {
            ClientSource::Interface => Counters::inc(&counters.dns_client_by_interface),
            ClientSource::Address => Counters::inc(&counters.dns_client_by_address),
            ClientSource::Unknown => {}
        }
        if client.mismatch {
            Counters::inc(&counters.dns_client_mismatch);
            tracing::debug!(
                client = %event.client_ip,
                name = %event.answer.name,
                sent_on = ?event.sent_on,
                by_interface = ?client.pod_uid,
                by_address = ?self.pod_ips.get(&event.client_ip),
                "DNS client: interface and address name different pods; trusting the interface"
            );
        }
        let pod_uid = client.pod_uid;
        let mut out = Vec::new();
        for ipv6 in [false, true] {
            let family = |ip: &&IpAddr| ip.is_ipv6() == ipv6;
            let mut ips = event.answer.ips.iter().filter(family).peekable();
            if ips.peek().is_none() {
                continue;
            }
            let key = DnsKeyRef {
                client_ip: event.client_ip,
                name: &event.answer.name,
                ipv6,
            };
            let now = event.seen_ms;
            let changed = match self.dns.get_mut(&key) {
                Some(entry) => {
                    entry.last_seen_ms = entry.last_seen_ms.max(now);
                    let changed = !entry.ips.iter().eq(ips) || entry.pod_uid.as_deref() != pod_uid;
                    if changed {
                        entry.ips = event.answer.ips.iter().filter(family).copied().collect();
                        entry.pod_uid = pod_uid.map(str::to_owned);
                    }
                    let due = refresh_due(self.refresh_ms, entry.reported_ms, now);
                    // A changed answer is new as of now; a refresh covers the time since the
                    // last report.
                    let since = if changed { now } else { entry.reported_ms };
                    if changed || due {
                        entry.reported_ms = now;
                    }
                    (changed || due).then(|| DnsEntry {
                        first_seen_ms: since,
                        ..entry.clone()
                    })
                }
                None => {
                    if self.dns.len() >= MAX_ENTRIES {
                        tracing::warn!(entries = self.dns.len(), "DNS table full: cleared");
                        self.evicted += self.dns.len() as u64;
                        self.dns.clear();
                    }
                    let entry = DnsEntry {
                        pod_uid: pod_uid.map(str::to_owned),
                        ips: ips.copied().collect(),
                        first_seen_ms: now,
                        last_seen_ms: now,
                        reported_ms: now,
                    };
                    let owned = DnsKey {
                        client_ip: key.client_ip,
                        name: key.name.to_owned(),
                        ipv6,
                    };
                    self.dns.insert(owned, entry.clone());
                    Some(entry)
                }
            };
            if let Some(entry) = changed {
                out.push(Observation::Dns(DnsObservation {
                    client: ClientId {
                        ip: event.client_ip,
                        pod_uid: entry.pod_uid,
                    },
                    name: event.answer.name.clone(),
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
                },
            );
            return due.then(|| connection_observation(seen, held.reported_ms, last_ms));
        }
        if self.connections.len() >= MAX_ENTRIES {
            tracing::warn!(
                entries = self.connections.len(),
                "connection table full: cleared"
            );
            self.evicted += self.connections.len() as u64;
            self.connections.clear();
        }
        self.connections.insert(
            key,
            Seen {
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
            sent_on: Vec::new(),
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
            agg.dns(
                &event("10.0.0.5", "a.b", &["10.1.0.1"], 1),
                &Counters::default()
            )
            .len(),
            1
        );
        assert!(
            agg.dns(
                &event("10.0.0.5", "a.b", &["10.1.0.1"], 2),
                &Counters::default()
            )
            .is_empty()
        );
        assert_eq!(
            agg.dns(
                &event("10.0.0.6", "a.b", &["10.1.0.1"], 3),
                &Counters::default()
            )
            .len(),
            1
        );
    }

    #[test]
    fn a_changed_answer_is_reported_again_as_new() {
        let mut agg = Aggregator::default();
        agg.dns(
            &event("10.0.0.5", "a.b", &["10.1.0.1"], 1),
            &Counters::default(),
        );
        let again = agg.dns(
            &event("10.0.0.5", "a.b", &["10.1.0.2"], 9),
            &Counters::default(),
        );
        match again.as_slice() {
            [Observation::Dns(d)] => {
                assert_eq!(
                    (d.first_seen_ms, d.last_seen_ms),
                    (9, 9),
                    "the new addresses were first seen now; the name's first sighting was reported"
                );
                assert_eq!(d.ips, vec!["10.1.0.2".parse::<IpAddr>().expect("ip")]);
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn a_and_aaaa_answers_do_not_replace_each_other() {
        let mut agg = Aggregator::default();
        assert_eq!(
            agg.dns(
                &event("10.0.0.5", "a.b", &["10.1.0.1"], 1),
                &Counters::default()
            )
            .len(),
            1
        );
        assert_eq!(
            agg.dns(
                &event("10.0.0.5", "a.b", &["fd00::1"], 2),
                &Counters::default()
            )
            .len(),
            1
        );
        assert!(
            agg.dns(
                &event("10.0.0.5", "a.b", &["10.1.0.1"], 3),
                &Counters::default()
            )
            .is_empty()
        );
        assert!(
            agg.dns(
                &event("10.0.0.5", "a.b", &["fd00::1"], 4),
                &Counters::default()
            )
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
            .dns(
                &event("10.0.0.5", "a.b", &["10.1.0.1"], 1),
                &Counters::default(),
            )
            .as_slice()
        {
            [Observation::Dns(d)] => assert_eq!(d.client.pod_uid.as_deref(), Some(UID)),
            other => panic!("unexpected {other:?}"),
        }
    }

    const OTHER: &str = "7f1d2c3b-4a59-4e6f-8a7b-9c0d1e2f3a4b";

    fn link(uid: Option<&str>) -> PodLink {
        PodLink {
            netns_inode: 4026532000,
            pod_uid: uid.map(str::to_owned),
        }
    }

    #[test]
    fn the_interface_wins_over_the_address() {
        let ip: IpAddr = "10.0.0.5".parse().expect("ip");
        let links = PodLinks::from(HashMap::from([(9, link(Some(UID))), (12, link(None))]));
        let agree = HashMap::from([(ip, UID.to_owned())]);
        let disagree = HashMap::from([(ip, OTHER.to_owned())]);
        let none = HashMap::new();
        let decide = |sent_on: &[i32], ips| dns_client_pod(sent_on, &ip, &links, ips);

        let both = decide(&[3, 9], &agree);
        assert_eq!(
            (both.pod_uid, both.source, both.mismatch),
            (Some(UID), ClientSource::Interface, false)
        );
        let spoofed = decide(&[9], &disagree);
        assert_eq!(
            (spoofed.pod_uid, spoofed.source, spoofed.mismatch),
            (Some(UID), ClientSource::Interface, true)
        );
        let interface_only = decide(&[9], &none);
        assert_eq!(
            (interface_only.pod_uid, interface_only.mismatch),
            (Some(UID), false)
        );
        // A namespace without a pod: the address of some other pod does not name it.
        let podless = decide(&[12], &disagree);
        assert_eq!(
            (podless.pod_uid, podless.source, podless.mismatch),
            (None, ClientSource::Interface, true)
        );
        // The bridge, loopback or an unknown interface: the address decides.
        let bridge = decide(&[3], &disagree);
        assert_eq!(
            (bridge.pod_uid, bridge.source, bridge.mismatch),
            (Some(OTHER), ClientSource::Address, false)
        );
        // Not seen leaving on UID's known veth: the address may have passed to a new pod.
        let received_only = decide(&[], &agree);
        assert_eq!(
            (received_only.pod_uid, received_only.source),
            (None, ClientSource::Unknown)
        );
        let unknown = decide(&[3], &none);
        assert_eq!(
            (unknown.pod_uid, unknown.source),
            (None, ClientSource::Unknown)
        );
    }

    #[test]
    fn an_address_whose_pod_left_on_another_veth_names_nobody() {
        let ip: IpAddr = "10.0.0.5".parse().expect("ip");
        // The last scan saw OTHER at 10.0.0.5 behind veth 9; the response now leaves on 14, a
        // veth created since (the address was handed to a new pod).
        let links = PodLinks::from(HashMap::from([(9, link(Some(OTHER)))]));
        let ips = HashMap::from([(ip, OTHER.to_owned())]);
        let reused = dns_client_pod(&[3, 14], &ip, &links, &ips);
        assert_eq!(
            (reused.pod_uid, reused.source),
            (None, ClientSource::Unknown)
        );
        // A pod without a veth the scan knows (another CNI): the address still names it.
        let no_links = PodLinks::default();
        let veth_less = dns_client_pod(&[3, 14], &ip, &no_links, &ips);
        assert_eq!(
            (veth_less.pod_uid, veth_less.source),
            (Some(OTHER), ClientSource::Address)
        );
    }

    #[test]
    fn a_dns_client_is_named_by_the_veth_it_was_sent_on_and_mismatches_are_counted() {
        let counters = Counters::default();
        let mut agg = Aggregator::default();
        agg.set_pod_ips(HashMap::from([(
            "10.0.0.5".parse().expect("ip"),
            OTHER.to_owned(),
        )]));
        agg.set_pod_links(HashMap::from([(9, link(Some(UID)))]));
        let mut sent = event("10.0.0.5", "a.b", &["10.1.0.1"], 1);
        sent.sent_on = vec![9];
        match agg.dns(&sent, &counters).as_slice() {
            [Observation::Dns(d)] => assert_eq!(d.client.pod_uid.as_deref(), Some(UID)),
            other => panic!("unexpected {other:?}"),
        }
        match agg
            .dns(&event("10.0.0.5", "c.d", &["10.1.0.1"], 2), &counters)
            .as_slice()
        {
            [Observation::Dns(d)] => assert_eq!(d.client.pod_uid.as_deref(), Some(OTHER)),
            other => panic!("unexpected {other:?}"),
        }
        let snapshot = counters.snapshot();
        assert_eq!(
            (
                snapshot.dns_client_by_interface,
                snapshot.dns_client_by_address,
                snapshot.dns_client_mismatch
            ),
            (1, 1, 1)
        );
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
    fn a_connection_still_seen_is_refreshed_with_the_time_since_its_last_report() {
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
        match agg.connection(&c, 1_200) {
            Some(Observation::Connection(o)) => {
                assert_eq!((o.first_seen_ms, o.last_seen_ms), (1_100, 1_200));
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    /// The operator keeps 10 minutes of IP history and drops an observation that starts
    /// before it: an hour-old connection's refresh must still start within the interval.
    #[test]
    fn an_hour_old_connection_is_refreshed_with_a_recent_start() {
        const MINUTE_MS: u64 = 60_000;
        let mut agg = Aggregator::with_refresh(Duration::from_secs(60));
        let c = conn("10.0.0.5", "10.1.0.1:80");
        let mut last = None;
        for minute in 0..=60 {
            if let Some(Observation::Connection(o)) = agg.connection(&c, minute * MINUTE_MS) {
                last = Some(o);
            }
        }
        let o = last.expect("refreshed");
        assert_eq!(o.last_seen_ms, 60 * MINUTE_MS);
        assert!(
            o.first_seen_ms >= 59 * MINUTE_MS,
            "starts {} min before its last sighting",
            (o.last_seen_ms - o.first_seen_ms) / MINUTE_MS
        );
    }

    #[test]
    fn a_repeated_dns_answer_is_refreshed_after_the_interval() {
        let mut agg = Aggregator::with_refresh(Duration::from_millis(100));
        assert_eq!(
            agg.dns(
                &event("10.0.0.5", "a.b", &["10.1.0.1"], 1_000),
                &Counters::default()
            )
            .len(),
            1
        );
        assert!(
            agg.dns(
                &event("10.0.0.5", "a.b", &["10.1.0.1"], 1_099),
                &Counters::default()
            )
            .is_empty()
        );
        match agg
            .dns(
                &event("10.0.0.5", "a.b", &["10.1.0.1"], 1_100),
                &Counters::default(),
            )
            .as_slice()
        {
            [Observation::Dns(d)] => assert_eq!((d.first_seen_ms, d.last_seen_ms), (1_000, 1_100)),
            other => panic!("unexpected {other:?}"),
        }
        match agg
            .dns(
                &event("10.0.0.5", "a.b", &["10.1.0.1"], 1_250),
                &Counters::default(),
            )
            .as_slice()
        {
            [Observation::Dns(d)] => assert_eq!(
                (d.first_seen_ms, d.last_seen_ms),
                (1_100, 1_250),
                "a refresh covers the time since the last report"
            ),
            other => panic!("unexpected {other:?}"),
        }
        match agg
            .dns(
                &event("10.0.0.5", "a.b", &["10.1.0.2"], 1_260),
                &Counters::default(),
            )
            .as_slice()
        {
            [Observation::Dns(d)] => assert_eq!(
                (d.first_seen_ms, d.last_seen_ms),
                (1_260, 1_260),
                "a changed answer is new"
            ),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn forgotten_entries_are_reported_again() {
        let mut agg = Aggregator::default();
        agg.connection(&conn("10.0.0.5", "10.1.0.1:80"), 1);
        agg.dns(
            &event("10.0.0.5", "a.b", &["10.1.0.1"], 1),
            &Counters::default(),
        );
        agg.forget_older_than(2);
        assert_eq!(agg.len(), (0, 0));
        assert!(
            agg.connection(&conn("10.0.0.5", "10.1.0.1:80"), 3)
                .is_some()
        );
    }

    #[test]
    fn a_full_dns_table_is_cleared_and_the_evictions_counted() {
        let counters = Counters::default();
        let mut agg = Aggregator::default();
        for i in 0..=MAX_ENTRIES {
            let name = format!("n{i}.example.com");
            assert_eq!(
                agg.dns(&event("10.0.0.5", &name, &["10.1.0.1"], 1), &counters)
                    .len(),
                1
            );
        }
        assert_eq!(agg.evicted(), MAX_ENTRIES as u64);
        assert_eq!(agg.len().0, 1);
    }
}
