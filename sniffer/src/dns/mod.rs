//! DNS responses from captured frames: pure functions from bytes to answers.
//!
//! [`frame`] finds the UDP or TCP payload from port 53 in an Ethernet frame or a raw IP packet,
//! [`message`] turns one DNS message into an answer (queried name, addresses, TTL),
//! [`memo`] remembers what recent messages said so a repeat is not parsed again, and
//! [`copies`] drops the second copy of a response seen on several interfaces. [`DnsDecoder`]
//! chains them and counts every outcome.

pub mod copies;
pub mod frame;
pub mod memo;
pub mod message;

#[cfg(test)]
pub(crate) mod fixtures;

use std::net::IpAddr;

use thiserror::Error;

use crate::counters::Counters;
pub use copies::{CopyFilter, Sighting};
pub use frame::{DnsSegment, Link, Transport, dns_messages, dns_segment};
pub use memo::AnswerMemo;
pub use message::{DnsAnswer, ResponseOutcome, parse_response};

/// Why a frame or a DNS message could not be read. Each variant is counted under
/// [`DnsParseError::kind`].
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum DnsParseError {
    /// The bytes end before the named header does.
    #[error("truncated {0}")]
    Truncated(&'static str),
    /// The frame carries neither IPv4 nor IPv6.
    #[error("not an IP packet (ethertype or version {0:#06x})")]
    NotIp(u16),
    /// The IP packet carries neither UDP nor TCP (or IPv6 extension headers come first).
    #[error("IP protocol {0} is not UDP or TCP")]
    NotUdpOrTcp(u8),
    /// A non-first IPv4 fragment: no transport header to read.
    #[error("IPv4 fragment")]
    Fragment,
    /// The source port is not 53 (the kernel filter should not have let it through).
    #[error("source port {0} is not 53")]
    NotFromPort53(u16),
    /// A TCP segment that does not hold whole length-prefixed DNS messages.
    #[error("TCP segment holds {available} bytes after a DNS length prefix of {declared}")]
    TcpSplit {
        /// Length the prefix announces.
        declared: usize,
        /// Bytes left in the segment.
        available: usize,
    },
    /// Header counts that cannot fit in the message: refused before any allocation.
    #[error("DNS header counts need at least {needed} bytes, message has {available}")]
    BogusCounts {
        /// Smallest message size the counts imply.
        needed: usize,
        /// Actual message size.
        available: usize,
    },
    /// simple-dns refused the message (bad name, pointer loop, short record, ...).
    #[error("malformed DNS message: {0}")]
    Malformed(String),
    /// A response without a question: nothing to attribute answers to.
    #[error("DNS response has no question")]
    NoQuestion,
    /// The queried name is not a name we report (see `validate_dns_name`).
    #[error("queried name is not a valid DNS name: {0}")]
    InvalidName(String),
}

/// The counter label of a [`DnsParseError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ParseErrorKind {
    /// [`DnsParseError::Truncated`].
    Truncated,
    /// [`DnsParseError::NotIp`], [`DnsParseError::NotUdpOrTcp`] or
    /// [`DnsParseError::NotFromPort53`]: frames the kernel filter should have dropped.
    NotDns,
    /// [`DnsParseError::Fragment`].
    Fragment,
    /// [`DnsParseError::TcpSplit`].
    TcpSplit,
    /// [`DnsParseError::BogusCounts`].
    BogusCounts,
    /// [`DnsParseError::Malformed`].
    Malformed,
    /// [`DnsParseError::NoQuestion`].
    NoQuestion,
    /// [`DnsParseError::InvalidName`].
    InvalidName,
}

impl ParseErrorKind {
    /// Every kind, in counter order.
    pub const ALL: [ParseErrorKind; 8] = [
        ParseErrorKind::Truncated,
        ParseErrorKind::NotDns,
        ParseErrorKind::Fragment,
        ParseErrorKind::TcpSplit,
        ParseErrorKind::BogusCounts,
        ParseErrorKind::Malformed,
        ParseErrorKind::NoQuestion,
        ParseErrorKind::InvalidName,
    ];

    /// Metric label value.
    pub fn label(self) -> &'static str {
        match self {
            ParseErrorKind::Truncated => "truncated",
            ParseErrorKind::NotDns => "not_dns",
            ParseErrorKind::Fragment => "fragment",
            ParseErrorKind::TcpSplit => "tcp_split",
            ParseErrorKind::BogusCounts => "bogus_counts",
            ParseErrorKind::Malformed => "malformed",
            ParseErrorKind::NoQuestion => "no_question",
            ParseErrorKind::InvalidName => "invalid_name",
        }
    }

    /// Position in [`ParseErrorKind::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

impl DnsParseError {
    /// The counter this error is counted under.
    pub fn kind(&self) -> ParseErrorKind {
        match self {
            DnsParseError::Truncated(_) => ParseErrorKind::Truncated,
            DnsParseError::NotIp(_)
            | DnsParseError::NotUdpOrTcp(_)
            | DnsParseError::NotFromPort53(_) => ParseErrorKind::NotDns,
            DnsParseError::Fragment => ParseErrorKind::Fragment,
            DnsParseError::TcpSplit { .. } => ParseErrorKind::TcpSplit,
            DnsParseError::BogusCounts { .. } => ParseErrorKind::BogusCounts,
            DnsParseError::Malformed(_) => ParseErrorKind::Malformed,
            DnsParseError::NoQuestion => ParseErrorKind::NoQuestion,
            DnsParseError::InvalidName(_) => ParseErrorKind::InvalidName,
        }
    }
}

/// A DNS answer delivered to a client address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientAnswer {
    /// Destination address of the response.
    pub client_ip: IpAddr,
    /// What the response said.
    pub answer: DnsAnswer,
    /// The response's identifier in the copy filter: later copies name it.
    pub response_id: u64,
}

/// What one frame held: new answers, and the identifiers of responses it was a copy of.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Decoded {
    /// Answers of responses seen for the first time.
    pub answers: Vec<ClientAnswer>,
    /// [`ClientAnswer::response_id`]s of responses this frame repeated.
    pub copies: Vec<u64>,
}

/// Frame -> answers, dropping copies of a response already seen on another interface. The
/// default remembers [`memo::DEFAULT_ENTRIES`] messages.
#[derive(Debug, Default)]
pub struct DnsDecoder {
    copies: CopyFilter,
    memo: AnswerMemo,
}

impl DnsDecoder {
    /// A decoder remembering the outcome of up to `memo_entries` recent messages (see
    /// [`memo`]); 0 parses every message.
    pub fn with_memo(memo_entries: usize) -> Self {
        DnsDecoder {
            copies: CopyFilter::default(),
            memo: AnswerMemo::new(memo_entries),
        }
    }

    /// Decodes every DNS message in one captured frame and counts each outcome in `counters`.
    pub fn decode(
        &mut self,
        link: Link<'_>,
        now_ms: u64,
        counters: &Counters,
    ) -> Vec<ClientAnswer> {
        self.decode_frame(link, now_ms, counters).answers
    }

    /// Like [`DnsDecoder::decode`], also telling which earlier responses the frame repeated.
    pub fn decode_frame(&mut self, link: Link<'_>, now_ms: u64, counters: &Counters) -> Decoded {
        let mut decoded = Decoded::default();
        self.decode_into(link, now_ms, counters, &mut decoded);
        decoded
    }

    /// Like [`DnsDecoder::decode_frame`], into `decoded` (emptied first), so that the capture
    /// loop allocates no lists per frame.
    pub fn decode_into(
        &mut self,
        link: Link<'_>,
        now_ms: u64,
        counters: &Counters,
        decoded: &mut Decoded,
    ) {
        decoded.answers.clear();
        decoded.copies.clear();
        let segment = match dns_segment(link) {
            Ok(segment) => segment,
            Err(err) => {
                counters.parse_error(err.kind());
                tracing::debug!(%err, "frame skipped");
                return;
            }
        };
        let answers = &mut decoded.answers;
        for message in dns_messages(&segment) {
            let message = match message {
                Ok(message) => message,
                Err(err) => {
                    counters.parse_error(err.kind());
                    tracing::debug!(%err, client = %segment.client, "TCP segment skipped");
                    break;
                }
            };
            let response_id = match self.copies.sighting(&segment, message, now_ms) {
                Sighting::First(id) => id,
                Sighting::Copy(id) => {
                    Counters::inc(&counters.dns_copies);
                    decoded.copies.push(id);
                    continue;
                }
            };
            Counters::inc(&counters.dns_responses);
            let (outcome, remembered) = self.memo.parse(message);
            if remembered {
                Counters::inc(&counters.dns_memo_hits);
            }
            match outcome {
                Ok(ResponseOutcome::Answer(answer)) => {
                    Counters::inc(&counters.dns_answers);
                    answers.push(ClientAnswer {
                        client_ip: segment.client.ip(),
                        answer,
                        response_id,
                    });
                }
                Ok(ResponseOutcome::NotAResponse) => Counters::inc(&counters.dns_not_responses),
                Ok(ResponseOutcome::ErrorRcode(_)) => Counters::inc(&counters.dns_error_rcode),
                Ok(ResponseOutcome::NoAddresses) => Counters::inc(&counters.dns_without_addresses),
                Err(err) => {
                    counters.parse_error(err.kind());
                    tracing::debug!(%err, client = %segment.client, "DNS message skipped");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use super::fixtures::*;
    use super::*;

    #[test]
    fn a_copy_seen_on_a_second_interface_is_decoded_once() {
        let counters = Counters::default();
        let mut decoder = DnsDecoder::default();
        let frame = hex(UDP4_A_SVC);
        let first = decoder.decode(Link::Ethernet(&frame), 1_000, &counters);
        let second = decoder.decode(Link::Ethernet(&frame), 1_001, &counters);
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].client_ip.to_string(), "10.123.0.3");
        assert!(second.is_empty());
        let third = decoder.decode_frame(Link::Ethernet(&frame), 1_002, &counters);
        assert!(third.answers.is_empty());
        assert_eq!(third.copies, vec![first[0].response_id]);
        assert_eq!(counters.dns_copies.load(Ordering::Relaxed), 2);
        assert_eq!(counters.dns_responses.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn raw_ip_packets_decode_like_ethernet_frames() {
        let counters = Counters::default();
        let mut decoder = DnsDecoder::default();
        let frame = hex(UDP6_AAAA_SVC);
        let answers = decoder.decode(Link::Ip(&frame[14..]), 0, &counters);
        assert_eq!(answers.len(), 1);
        assert_eq!(answers[0].client_ip.to_string(), "fd00:123::3");
    }

    #[test]
    fn errors_and_skips_are_counted_by_kind() {
        let counters = Counters::default();
        let mut decoder = DnsDecoder::default();
        let nx = hex(UDP4_NXDOMAIN);
        assert!(decoder.decode(Link::Ethernet(&nx), 0, &counters).is_empty());
        assert_eq!(counters.dns_error_rcode.load(Ordering::Relaxed), 1);
        let mut cut = hex(UDP4_A_SVC);
        cut.truncate(30);
        assert!(
            decoder
                .decode(Link::Ethernet(&cut), 0, &counters)
                .is_empty()
        );
        assert_eq!(
            counters.parse_errors()[ParseErrorKind::Truncated.index()],
            1
        );
    }
}
