//! Drops the extra copies of one DNS response seen on several interfaces.
//!
//! One response from a pod resolver to a pod crosses the server's veth (received by the host),
//! maybe the host's NAT, and the client's veth (sent by the host): AF_PACKET sees it once per
//! interface, with the server address rewritten in between. A response from a resolver in the
//! host namespace is only ever seen as sent (`PACKET_OUTGOING`), so dropping outgoing packets
//! would lose it. Instead a copy is recognised by what NAT leaves alone: the client address and
//! port, the transport, and the DNS message bytes, within [`COPY_WINDOW_MS`].

use std::hash::BuildHasher;
use std::net::SocketAddr;

use foldhash::HashMap;
use foldhash::fast::RandomState;

use super::{DnsSegment, Transport};

/// How long after the first copy another one is a copy, in milliseconds.
pub const COPY_WINDOW_MS: u64 = 2_000;
/// Most responses remembered; past this, expired ones are dropped, then all.
pub const MAX_REMEMBERED_RESPONSES: usize = 16_384;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct ResponseKey {
    client: SocketAddr,
    transport: Transport,
    message_digest: u64,
}

/// Recently seen responses, by client endpoint and message digest: when first seen, and the
/// identifier given to that first copy.
#[derive(Debug, Default)]
pub struct CopyFilter {
    seen_ms: HashMap<ResponseKey, (u64, u64)>,
    /// Digests the messages with a random seed of this process (foldhash: fast, not
    /// cryptographic), so messages that collide cannot be prepared in advance to pass one
    /// response off as a copy of another.
    digest: RandomState,
    next_id: u64,
}

/// What [`CopyFilter::sighting`] made of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sighting {
    /// First seen: remembered under this identifier.
    First(u64),
    /// A copy of the response first seen under this identifier.
    Copy(u64),
}

impl CopyFilter {
    /// True when the same message to the same client endpoint was seen in the last
    /// [`COPY_WINDOW_MS`]; otherwise remembers it and returns false.
    pub fn is_copy(&mut self, segment: &DnsSegment<'_>, message: &[u8], now_ms: u64) -> bool {
        matches!(self.sighting(segment, message, now_ms), Sighting::Copy(_))
    }

    /// Like [`CopyFilter::is_copy`], naming the response so that its copies can be matched
    /// with it.
    pub fn sighting(&mut self, segment: &DnsSegment<'_>, message: &[u8], now_ms: u64) -> Sighting {
        let key = ResponseKey {
            client: segment.client,
            transport: segment.transport,
            message_digest: self.digest.hash_one(message),
        };
        if let Some((first_ms, id)) = self.seen_ms.get(&key)
            && now_ms.saturating_sub(*first_ms) < COPY_WINDOW_MS
        {
            return Sighting::Copy(*id);
        }
        if self.seen_ms.len() >= MAX_REMEMBERED_RESPONSES {
            self.seen_ms
                .retain(|_, (first_ms, _)| now_ms.saturating_sub(*first_ms) < COPY_WINDOW_MS);
            if self.seen_ms.len() >= MAX_REMEMBERED_RESPONSES {
                self.seen_ms.clear();
            }
        }
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        self.seen_ms.insert(key, (now_ms, id));
        Sighting::First(id)
    }

    /// Responses currently remembered.
    pub fn len(&self) -> usize {
        self.seen_ms.len()
    }

    /// True when nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.seen_ms.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segment(client: &str, server: &str) -> DnsSegment<'static> {
        DnsSegment {
            client: client.parse().expect("client"),
            server: server.parse().expect("server"),
            transport: Transport::Udp,
            payload: &[],
        }
    }

    #[test]
    fn a_nat_rewritten_copy_is_a_copy() {
        let mut filter = CopyFilter::default();
        let pod_side = segment("10.0.0.5:40000", "10.0.1.9:53");
        let service_side = segment("10.0.0.5:40000", "10.96.0.10:53");
        assert!(!filter.is_copy(&pod_side, b"msg", 100));
        assert!(filter.is_copy(&service_side, b"msg", 101));
    }

    #[test]
    fn a_copy_names_the_first_sighting() {
        let mut filter = CopyFilter::default();
        let a = segment("10.0.0.5:40000", "10.0.1.9:53");
        let b = segment("10.0.0.6:40000", "10.0.1.9:53");
        let first = filter.sighting(&a, b"msg", 0);
        let other = filter.sighting(&b, b"msg", 0);
        assert!(matches!(first, Sighting::First(_)));
        assert!(matches!(other, Sighting::First(_)));
        assert_ne!(first, other);
        let Sighting::First(id) = first else {
            unreachable!()
        };
        assert_eq!(filter.sighting(&a, b"msg", 1), Sighting::Copy(id));
    }

    #[test]
    fn other_clients_messages_and_late_repeats_are_not_copies() {
        let mut filter = CopyFilter::default();
        let a = segment("10.0.0.5:40000", "10.0.1.9:53");
        let other_port = segment("10.0.0.5:40001", "10.0.1.9:53");
        assert!(!filter.is_copy(&a, b"msg", 0));
        assert!(!filter.is_copy(&other_port, b"msg", 1));
        assert!(!filter.is_copy(&a, b"other", 2));
        assert!(!filter.is_copy(&a, b"msg", COPY_WINDOW_MS));
    }

    #[test]
    fn memory_stays_bounded() {
        let mut filter = CopyFilter::default();
        let a = segment("10.0.0.5:40000", "10.0.1.9:53");
        for i in 0..(MAX_REMEMBERED_RESPONSES as u32 + 10) {
            filter.is_copy(&a, &i.to_be_bytes(), 0);
        }
        assert!(filter.len() <= MAX_REMEMBERED_RESPONSES);
    }
}
