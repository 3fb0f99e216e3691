//! Observations waiting to be reported: deduplicated, bounded in bytes, oldest dropped first.
//!
//! The buffer is a map from what an observation says (client, server and port, or client,
//! name and answer) to the observation, so a repeat of something already waiting merges into
//! it (earliest `firstSeenMs`, latest `lastSeenMs`) instead of queueing again. While the
//! operator is away the buffer therefore grows with the number of distinct facts, not with
//! time, and a batch that failed is put back the same way, merging with what came meanwhile.
//!
//! Size is the serialized JSON size of the observations (plus one separator byte each), what
//! they add to a report body. Past the bound the least recently seen observations go first.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use trafficmap_api::observed::Protocol;
use trafficmap_api::report::{ClientId, Observation, REPORT_VERSION, Report};

/// What an observation says, without when: observations with the same key merge.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum ObservationKey {
    Dns {
        client: ClientId,
        name: String,
        ips: Vec<IpAddr>,
    },
    Connection {
        client: ClientId,
        server_ip: IpAddr,
        server_port: u16,
        protocol: Protocol,
    },
}

impl ObservationKey {
    fn of(observation: &Observation) -> Self {
        match observation {
            Observation::Dns(d) => ObservationKey::Dns {
                client: d.client.clone(),
                name: d.name.clone(),
                ips: d.ips.clone(),
            },
            Observation::Connection(c) => ObservationKey::Connection {
                client: c.client.clone(),
                server_ip: c.server_ip,
                server_port: c.server_port,
                protocol: c.protocol,
            },
        }
    }
}

/// Position in drop order: least recently seen first, then first buffered.
type Age = (u64, u64);

#[derive(Debug)]
struct Buffered {
    observation: Observation,
    bytes: usize,
    age: Age,
}

/// Bytes an observation adds to a report body: its JSON and a separator.
pub fn observation_bytes(observation: &Observation) -> usize {
    serde_json::to_vec(observation).map_or(0, |json| json.len()) + 1
}

/// Bytes of a report with no observations from `node`: the fixed part of every body.
pub fn envelope_bytes(node: &str) -> usize {
    let empty = Report {
        version: REPORT_VERSION,
        node: node.to_owned(),
        observations: Vec::new(),
    };
    serde_json::to_vec(&empty).map_or(0, |json| json.len())
}

/// Latest time an observation was seen.
fn last_seen_ms(observation: &Observation) -> u64 {
    match observation {
        Observation::Dns(d) => d.last_seen_ms,
        Observation::Connection(c) => c.last_seen_ms,
    }
}

/// Folds `newer` into `held` (same key): widest seen span, latest TTL.
fn merge(held: &mut Observation, newer: Observation) {
    match (held, newer) {
        (Observation::Dns(h), Observation::Dns(n)) => {
            if n.last_seen_ms >= h.last_seen_ms {
                h.ttl_seconds = n.ttl_seconds;
            }
            h.first_seen_ms = h.first_seen_ms.min(n.first_seen_ms);
            h.last_seen_ms = h.last_seen_ms.max(n.last_seen_ms);
        }
        (Observation::Connection(h), Observation::Connection(n)) => {
            h.first_seen_ms = h.first_seen_ms.min(n.first_seen_ms);
            h.last_seen_ms = h.last_seen_ms.max(n.last_seen_ms);
        }
        // Keys of different kinds never compare equal.
        _ => {}
    }
}

/// Deduplicated observations waiting for the operator, at most `max_bytes` of them.
#[derive(Debug)]
pub struct ReportBuffer {
    max_bytes: usize,
    bytes: usize,
    entries: HashMap<ObservationKey, Buffered>,
    by_age: BTreeMap<Age, ObservationKey>,
    next_seq: u64,
}

impl ReportBuffer {
    /// An empty buffer holding at most `max_bytes` of observations.
    pub fn new(max_bytes: usize) -> Self {
        ReportBuffer {
            max_bytes,
            bytes: 0,
            entries: HashMap::new(),
            by_age: BTreeMap::new(),
            next_seq: 0,
        }
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Observations held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when nothing waits.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Adds (or merges) observations, then drops the oldest past the bound. Returns how many
    /// observations were dropped.
    pub fn push_all(&mut self, observations: impl IntoIterator<Item = Observation>) -> usize {
        for observation in observations {
            self.insert(observation);
        }
        self.drop_oldest_over_bound()
    }

    fn insert(&mut self, observation: Observation) {
        let key = ObservationKey::of(&observation);
        let seq = self.next_seq;
        self.next_seq += 1;
        let (merged, old_age) = match self.entries.remove(&key) {
            Some(held) => {
                self.bytes -= held.bytes;
                let mut merged = held.observation;
                merge(&mut merged, observation);
                (merged, Some(held.age))
            }
            None => (observation, None),
        };
        if let Some(age) = old_age {
            self.by_age.remove(&age);
        }
        let bytes = observation_bytes(&merged);
        let age = (last_seen_ms(&merged), seq);
        self.bytes += bytes;
        self.by_age.insert(age, key.clone());
        self.entries.insert(
            key,
            Buffered {
                observation: merged,
                bytes,
                age,
            },
        );
    }

    fn drop_oldest_over_bound(&mut self) -> usize {
        let mut dropped = 0;
        while self.bytes > self.max_bytes {
            let Some((_, key)) = self.by_age.pop_first() else {
                break;
            };
            if let Some(held) = self.entries.remove(&key) {
                self.bytes -= held.bytes;
                dropped += 1;
            }
        }
        dropped
    }

    /// Removes and returns the oldest observations whose bytes fit in `max_bytes`; at least
    /// one when the buffer is not empty, so an oversized observation still gets its answer.
    pub fn take_batch(&mut self, max_bytes: usize) -> Vec<Observation> {
        let mut batch = Vec::new();
        let mut taken_bytes = 0;
        while let Some(entry) = self.by_age.first_entry() {
            let Some(size) = self.entries.get(entry.get()).map(|held| held.bytes) else {
                entry.remove();
                continue;
            };
            if !batch.is_empty() && taken_bytes + size > max_bytes {
                break;
            }
            let key = entry.remove();
            if let Some(held) = self.entries.remove(&key) {
                self.bytes -= held.bytes;
                taken_bytes += held.bytes;
                batch.push(held.observation);
            }
        }
        batch
    }
}

#[cfg(test)]
mod tests {
    use trafficmap_api::report::DnsObservation;

    use super::*;
    use crate::report::fixtures::conn_seen as conn;

    fn dns(ip: &str, ttl: u32, first: u64, last: u64) -> Observation {
        Observation::Dns(DnsObservation {
            client: ClientId {
                ip: "10.0.0.5".parse().expect("ip"),
                pod_uid: None,
            },
            name: "cart.shop.svc.cluster.local".into(),
            ips: vec![ip.parse().expect("ip")],
            ttl_seconds: ttl,
            first_seen_ms: first,
            last_seen_ms: last,
        })
    }

    fn ports(batch: &[Observation]) -> Vec<u16> {
        batch
            .iter()
            .filter_map(|o| match o {
                Observation::Connection(c) => Some(c.server_port),
                Observation::Dns(_) => None,
            })
            .collect()
    }

    #[test]
    fn repeats_merge_into_one_observation_with_the_widest_span() {
        let mut buffer = ReportBuffer::new(1 << 20);
        buffer.push_all([conn(80, 5, 6), conn(80, 2, 3), conn(80, 7, 9)]);
        assert_eq!(buffer.len(), 1);
        assert_eq!(buffer.take_batch(usize::MAX), vec![conn(80, 2, 9)]);
        assert!(buffer.is_empty());
        assert_eq!(buffer.bytes(), 0);
    }

    #[test]
    fn a_changed_dns_answer_is_kept_apart_and_the_latest_ttl_wins() {
        let mut buffer = ReportBuffer::new(1 << 20);
        buffer.push_all([dns("10.1.0.1", 30, 1, 1), dns("10.1.0.2", 30, 2, 2)]);
        buffer.push_all([dns("10.1.0.1", 5, 3, 3), dns("10.1.0.1", 60, 0, 0)]);
        assert_eq!(buffer.len(), 2);
        let batch = buffer.take_batch(usize::MAX);
        assert_eq!(
            batch,
            vec![dns("10.1.0.2", 30, 2, 2), dns("10.1.0.1", 5, 0, 3)]
        );
    }

    #[test]
    fn bytes_are_the_serialized_size_of_what_is_held() {
        let mut buffer = ReportBuffer::new(1 << 20);
        buffer.push_all([conn(80, 1, 1), conn(81, 1, 1)]);
        let expected = observation_bytes(&conn(80, 1, 1)) + observation_bytes(&conn(81, 1, 1));
        assert_eq!(buffer.bytes(), expected);
        buffer.push_all([conn(80, 1, 1_000_000)]);
        let expected =
            observation_bytes(&conn(80, 1, 1_000_000)) + observation_bytes(&conn(81, 1, 1));
        assert_eq!(buffer.bytes(), expected);
    }

    #[test]
    fn oldest_observations_are_dropped_when_the_buffer_is_full() {
        let one = observation_bytes(&conn(1000, 10, 10));
        let mut buffer = ReportBuffer::new(3 * one);
        assert_eq!(buffer.push_all([conn(1001, 11, 11), conn(1002, 12, 12)]), 0);
        assert_eq!(buffer.push_all([conn(1000, 10, 10), conn(1003, 13, 13)]), 1);
        assert_eq!(buffer.len(), 3);
        assert_eq!(buffer.bytes(), 3 * one);
        // The one last seen at 10 went, although it was pushed later.
        assert_eq!(ports(&buffer.take_batch(usize::MAX)), [1001, 1002, 1003]);
    }

    #[test]
    fn a_refreshed_observation_is_no_longer_the_oldest() {
        let one = observation_bytes(&conn(1000, 10, 10));
        let mut buffer = ReportBuffer::new(2 * one);
        buffer.push_all([conn(1001, 1, 1), conn(1002, 2, 2)]);
        buffer.push_all([conn(1001, 1, 9)]);
        assert_eq!(buffer.push_all([conn(1003, 3, 3)]), 1);
        assert_eq!(ports(&buffer.take_batch(usize::MAX)), [1003, 1001]);
    }

    #[test]
    fn batches_are_taken_oldest_first_within_the_byte_cap() {
        let one = observation_bytes(&conn(1000, 1, 1));
        let mut buffer = ReportBuffer::new(1 << 20);
        buffer.push_all((0..5).map(|i| conn(1000 + i, u64::from(i), u64::from(i))));
        assert_eq!(ports(&buffer.take_batch(2 * one)), [1000, 1001]);
        assert_eq!(ports(&buffer.take_batch(2 * one + 1)), [1002, 1003]);
        assert_eq!(buffer.len(), 1);
    }

    #[test]
    fn an_observation_larger_than_the_cap_is_still_taken_alone() {
        let mut buffer = ReportBuffer::new(1 << 20);
        buffer.push_all([conn(80, 1, 1), conn(81, 2, 2)]);
        assert_eq!(ports(&buffer.take_batch(1)), [80]);
        assert_eq!(ports(&buffer.take_batch(1)), [81]);
        assert!(buffer.take_batch(1).is_empty());
    }

    #[test]
    fn a_failed_batch_put_back_merges_with_what_came_meanwhile() {
        let mut buffer = ReportBuffer::new(1 << 20);
        buffer.push_all([conn(80, 1, 2), conn(81, 1, 2)]);
        let failed = buffer.take_batch(usize::MAX);
        buffer.push_all([conn(80, 3, 4)]);
        buffer.push_all(failed);
        assert_eq!(buffer.len(), 2);
        let mut batch = buffer.take_batch(usize::MAX);
        batch.sort_by_key(|o| match o {
            Observation::Connection(c) => c.server_port,
            Observation::Dns(_) => 0,
        });
        assert_eq!(batch, vec![conn(80, 1, 4), conn(81, 1, 2)]);
    }

    #[test]
    fn the_envelope_is_the_size_of_an_empty_report() {
        let expected = r#"{"version":1,"node":"n1","observations":[]}"#.len();
        assert_eq!(envelope_bytes("n1"), expected);
    }
}
