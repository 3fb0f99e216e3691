//! What recent DNS messages said, by their bytes after the ID.
//!
//! [`parse_response`] reads nothing but the message, and leaves out its ID, so two messages
//! that differ only in their ID give the same outcome. A node's resolver sends the same bytes
//! for a name again and again (cluster-local names have a fixed TTL), so a repeat is looked up
//! here instead of parsed again: one hash and one comparison of the bytes, rather than
//! simple-dns building a packet and the CNAME chain being followed.
//!
//! A message is only remembered when it comes a second time: until then only its hash is kept.
//! Traffic in which every message is new (a resolver's cache expiring names one TTL second at
//! a time, a flood) then pays for a hash, not for copying each message and its answer. Messages
//! whose header decides the outcome (queries, and the NXDOMAIN answers a pod's search path
//! draws for every name it looks up) are read from the header and never take a place.

use std::hash::BuildHasher;

use hashbrown::HashTable;

use super::DnsParseError;
use super::message::{ResponseOutcome, header_decides, parse_response};

/// Messages remembered by default: a few hundred KiB for typical answers of 50-150 bytes, at
/// most 2 MiB of messages (`MAX_MESSAGE_BYTES` each) plus their answers.
pub const DEFAULT_ENTRIES: usize = 4096;
/// Longest message remembered; longer ones (large answer sets, DNSSEC) are parsed each time,
/// which bounds the memory to `entries` times this.
pub const MAX_MESSAGE_BYTES: usize = 512;
/// The ID, which differs between otherwise identical responses.
const ID_BYTES: usize = 2;

/// What [`parse_response`] said of a message.
type Outcome = Result<ResponseOutcome, DnsParseError>;

/// A message seen twice and what it said.
#[derive(Debug)]
struct Remembered {
    hash: u64,
    /// The message without its ID, compared in full on a hit: a hash collision costs time,
    /// never a wrong answer.
    message: Box<[u8]>,
    outcome: Outcome,
}

/// Outcomes of recent messages, at most `entries` of them, and the hashes of as many messages
/// seen once. Each table is emptied when full, as the aggregator's are, so a flood of distinct
/// messages costs a rebuild, never memory.
#[derive(Debug)]
pub struct AnswerMemo {
    /// foldhash with a per-process seed, like the copy filter.
    hasher: foldhash::fast::RandomState,
    remembered: HashTable<Remembered>,
    seen_once: HashTable<u64>,
    entries: usize,
}

impl Default for AnswerMemo {
    fn default() -> Self {
        AnswerMemo::new(DEFAULT_ENTRIES)
    }
}

impl AnswerMemo {
    /// A memo of at most `entries` messages; 0 parses every message.
    pub fn new(entries: usize) -> Self {
        AnswerMemo {
            hasher: foldhash::fast::RandomState::default(),
            remembered: HashTable::new(),
            seen_once: HashTable::new(),
            entries,
        }
    }

    /// What [`parse_response`] says of `message`, and whether it was remembered.
    pub fn parse(&mut self, message: &[u8]) -> (Outcome, bool) {
        let key = match message.get(ID_BYTES..) {
            Some(key)
                if self.entries > 0
                    && message.len() <= MAX_MESSAGE_BYTES
                    && !header_decides(message) =>
            {
                key
            }
            _ => return (parse_response(message), false),
        };
        let hash = self.hasher.hash_one(key);
        if let Some(hit) = self.remembered.find(hash, |r| *r.message == *key) {
            return (hit.outcome.clone(), true);
        }
        let outcome = parse_response(message);
        if self.seen_once.find(hash, |seen| *seen == hash).is_some() {
            if self.remembered.len() >= self.entries {
                self.remembered.clear();
            }
            let remembered = Remembered {
                hash,
                message: key.into(),
                outcome: outcome.clone(),
            };
            self.remembered.insert_unique(hash, remembered, |r| r.hash);
        } else {
            if self.seen_once.len() >= self.entries {
                self.seen_once.clear();
            }
            self.seen_once.insert_unique(hash, hash, |seen| *seen);
        }
        (outcome, false)
    }

    /// Messages remembered now.
    pub fn len(&self) -> usize {
        self.remembered.len()
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.remembered.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;
    use super::*;

    #[test]
    fn a_message_is_remembered_from_its_second_sighting_whatever_its_id() {
        let mut memo = AnswerMemo::default();
        let first = first_message(UDP4_A_SVC);
        let mut repeat = first.clone();
        repeat[0] ^= 0xff;
        repeat[1] ^= 0x0f;
        let (parsed, remembered) = memo.parse(&first);
        assert!(!remembered);
        assert!(matches!(parsed, Ok(ResponseOutcome::Answer(_))));
        assert_eq!(memo.parse(&repeat), (parsed.clone(), false));
        assert_eq!(memo.parse(&first), (parsed.clone(), true));
        assert_eq!(memo.parse(&repeat), (parsed, true));
    }

    #[test]
    fn messages_seen_once_are_not_copied() {
        let mut memo = AnswerMemo::default();
        let base = first_message(UDP4_A_SVC);
        for ttl_low_byte in 0..100u8 {
            let mut m = base.clone();
            m[A_TTL_LAST_BYTE] = ttl_low_byte;
            let _ = memo.parse(&m);
        }
        assert!(memo.is_empty());
    }

    #[test]
    fn any_other_byte_is_another_message() {
        let mut memo = AnswerMemo::default();
        let base = first_message(UDP4_CNAME_CHAIN);
        for _ in 0..2 {
            let _ = memo.parse(&base);
        }
        assert_eq!(memo.len(), 1);
        for at in ID_BYTES..base.len() {
            let mut changed = base.clone();
            changed[at] ^= 0x01;
            let (outcome, remembered) = memo.parse(&changed);
            assert!(!remembered, "byte {at}");
            assert_eq!(outcome, parse_response(&changed), "byte {at}");
        }
    }

    #[test]
    fn outcomes_the_header_decides_take_no_place() {
        let mut memo = AnswerMemo::default();
        let nxdomain = first_message(UDP4_NXDOMAIN);
        let mut query = first_message(UDP4_A_SVC);
        query[2] &= 0x7f;
        for m in [&nxdomain, &query] {
            assert!(header_decides(m));
            for _ in 0..3 {
                let (outcome, remembered) = memo.parse(m);
                assert!(!remembered);
                assert_eq!(outcome, parse_response(m));
            }
        }
        assert!(memo.is_empty());
        assert!(!header_decides(&first_message(UDP4_A_SVC)));
    }

    #[test]
    fn errors_are_remembered_like_answers() {
        let mut memo = AnswerMemo::default();
        let m = first_message(UDP4_A_SVC);
        let cut = &m[..m.len() - 3];
        let (first, _) = memo.parse(cut);
        assert!(first.is_err());
        assert_eq!(memo.parse(cut), (first.clone(), false));
        assert_eq!(memo.parse(cut), (first, true));
    }

    /// Offset in the `UDP4_A_SVC` message of the last byte of its A record's TTL (0x0000012c).
    const A_TTL_LAST_BYTE: usize = 41;

    #[test]
    fn a_full_memo_starts_again() {
        let mut memo = AnswerMemo::new(3);
        let base = first_message(UDP4_A_SVC);
        for ttl_low_byte in 0..4u8 {
            let mut m = base.clone();
            m[A_TTL_LAST_BYTE] = ttl_low_byte;
            let _ = memo.parse(&m);
            let _ = memo.parse(&m);
        }
        assert_eq!(memo.len(), 1);
    }

    #[test]
    fn nothing_is_remembered_when_off_or_too_long() {
        let mut off = AnswerMemo::new(0);
        let m = first_message(UDP4_A_SVC);
        for _ in 0..3 {
            assert!(!off.parse(&m).1);
        }
        assert!(off.is_empty());

        let mut memo = AnswerMemo::default();
        let mut long = m.clone();
        long.resize(MAX_MESSAGE_BYTES + 1, 0);
        for _ in 0..3 {
            assert!(!memo.parse(&long).1);
        }
        assert!(memo.is_empty());
    }
}
