//! One DNS message -> the addresses its question resolved to, following CNAME chains.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use arrayvec::ArrayVec;
use simple_dns::rdata::RData;
use simple_dns::{Name, OPCODE, Packet, RCODE};
use trafficmap_api::report::validate_dns_name;

use super::DnsParseError;

const HEADER_BYTES: usize = 12;
/// Smallest wire size of a question: root name (1) + type (2) + class (2).
const MIN_QUESTION_BYTES: usize = 5;
/// Smallest wire size of a resource record: root name (1) + type, class, TTL, rdlength (10).
const MIN_RECORD_BYTES: usize = 11;
/// Longest CNAME chain followed; resolvers give up well before this.
const MAX_CNAME_HOPS: usize = 16;
const QR_FLAG: u16 = 0x8000;
const RCODE_MASK: u16 = 0x000f;

/// What a response said about its question.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsAnswer {
    /// The queried name, lowercase, without the final dot.
    pub name: String,
    /// A and AAAA addresses reached from the name (through CNAMEs), sorted, without repeats.
    pub ips: Vec<IpAddr>,
    /// Smallest TTL along the chains that led to the addresses, in seconds.
    pub ttl_seconds: u32,
}

/// A message read without error, and whether it gives an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResponseOutcome {
    /// A NOERROR response with A or AAAA addresses for its question.
    Answer(DnsAnswer),
    /// A query, or a response to an opcode other than QUERY.
    NotAResponse,
    /// A response with an error code (NXDOMAIN, SERVFAIL, REFUSED, ...).
    ErrorRcode(u16),
    /// A NOERROR response without addresses for its question (NODATA, MX, TXT, ...).
    NoAddresses,
}

/// Reads one DNS message. Hostile input gets an error, never a panic, and the header counts
/// are checked against the message size before simple-dns sizes its vectors from them.
pub fn parse_response(message: &[u8]) -> Result<ResponseOutcome, DnsParseError> {
    let header = message
        .get(..HEADER_BYTES)
        .ok_or(DnsParseError::Truncated("DNS header"))?;
    let word = |i: usize| u16::from_be_bytes([header[i], header[i + 1]]);
    let flags = word(2);
    if flags & QR_FLAG == 0 {
        return Ok(ResponseOutcome::NotAResponse);
    }
    if flags & RCODE_MASK != 0 {
        return Ok(ResponseOutcome::ErrorRcode(flags & RCODE_MASK));
    }
    check_counts(word(4), word(6), word(8), word(10), message.len())?;

    let packet = Packet::parse(message).map_err(|e| DnsParseError::Malformed(format!("{e:?}")))?;
    if packet.opcode() != OPCODE::StandardQuery {
        return Ok(ResponseOutcome::NotAResponse);
    }
    if packet.rcode() != RCODE::NoError {
        // Extended RCODEs (from the OPT record) such as BADVERS.
        return Ok(ResponseOutcome::ErrorRcode(packet.rcode() as u16));
    }
    let question = packet.questions.first().ok_or(DnsParseError::NoQuestion)?;
    let name = name_text(&question.qname)
        .and_then(|n| validate_dns_name(&n).map(|()| n))
        .map_err(DnsParseError::InvalidName)?;

    let chain = cname_chain(&question.qname, &packet);

    let mut ips = Vec::with_capacity(packet.answers.len());
    let mut ttl_seconds = u32::MAX;
    for rr in &packet.answers {
        let ip = match &rr.rdata {
            RData::A(a) => IpAddr::V4(Ipv4Addr::from(a.address)),
            RData::AAAA(aaaa) => IpAddr::V6(Ipv6Addr::from(aaaa.address)),
            _ => continue,
        };
        let Some(link) = chain.iter().find(|link| same_labels(link.name, &rr.name)) else {
            continue; // an address for a name the question does not lead to
        };
        ips.push(ip);
        ttl_seconds = ttl_seconds.min(link.ttl_seconds).min(rr.ttl);
    }
    if ips.is_empty() {
        return Ok(ResponseOutcome::NoAddresses);
    }
    ips.sort();
    ips.dedup();
    Ok(ResponseOutcome::Answer(DnsAnswer {
        name,
        ips,
        ttl_seconds,
    }))
}

/// Whether the header alone gives [`parse_response`]'s outcome: a query, an error code, or a
/// message too short for a header. Reading those costs a few comparisons.
pub fn header_decides(message: &[u8]) -> bool {
    match message.get(2..4) {
        Some(&[high, low]) => {
            let flags = u16::from_be_bytes([high, low]);
            flags & QR_FLAG == 0 || flags & RCODE_MASK != 0 || message.len() < HEADER_BYTES
        }
        _ => true,
    }
}

/// Refuses counts that could not fit in `len` bytes. simple-dns reserves `count` entries per
/// section before parsing (144 bytes per record): a 12-byte message with counts of 65535 would
/// cost ~28 MiB. With this check the reservation stays proportional to the message size.
fn check_counts(
    questions: u16,
    answers: u16,
    authorities: u16,
    additionals: u16,
    len: usize,
) -> Result<(), DnsParseError> {
    let records = usize::from(answers) + usize::from(authorities) + usize::from(additionals);
    let needed =
        HEADER_BYTES + usize::from(questions) * MIN_QUESTION_BYTES + records * MIN_RECORD_BYTES;
    if needed > len {
        return Err(DnsParseError::BogusCounts {
            needed,
            available: len,
        });
    }
    Ok(())
}

/// A name on the way from the question to the addresses, with the smallest CNAME TTL so far.
#[derive(Debug)]
struct ChainLink<'a> {
    name: &'a Name<'a>,
    ttl_seconds: u32,
}

/// The question and at most [`MAX_CNAME_HOPS`] targets: a fixed array, as this runs for every
/// response and nearly every chain is the question alone.
type Chain<'a> = ArrayVec<ChainLink<'a>, { MAX_CNAME_HOPS + 1 }>;

/// The question name (already read by [`name_text`]) and every CNAME target reached from it,
/// in order, without loops. Every name in the chain is one we read (see [`readable_name`]),
/// so comparing labels ([`same_labels`]) is enough to match a record's owner against it.
/// Names are compared on the wire labels, without building text.
fn cname_chain<'a>(question: &'a Name<'a>, packet: &'a Packet<'a>) -> Chain<'a> {
    let mut chain = Chain::new();
    chain.push(ChainLink {
        name: question,
        ttl_seconds: u32::MAX,
    });
    while !chain.is_full() {
        let Some(last) = chain.last() else { break };
        let next = packet.answers.iter().find_map(|rr| match &rr.rdata {
            RData::CNAME(target)
                if same_labels(last.name, &rr.name) && readable_name(&target.0) =>
            {
                Some((&target.0, rr.ttl))
            }
            _ => None,
        });
        let Some((target, ttl)) = next else { break };
        if chain.iter().any(|link| same_labels(link.name, target)) {
            break; // CNAME loop
        }
        let ttl_seconds = last.ttl_seconds.min(ttl);
        chain.push(ChainLink {
            name: target,
            ttl_seconds,
        });
    }
    chain
}

/// Whether two wire names have the same labels, ASCII case ignored. When one of them is
/// [`readable_name`], so is the other: the bytes a label may hold do not depend on case.
fn same_labels(a: &Name<'_>, b: &Name<'_>) -> bool {
    let (a, b) = (a.get_labels(), b.get_labels());
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| {
            let (x, y): (&[u8], &[u8]) = (x.as_ref(), y.as_ref());
            x.eq_ignore_ascii_case(y)
        })
}

/// Whether [`name_text`] would read a wire name: not the root, and every label holds only
/// `[A-Za-z0-9_-]`.
fn readable_name(name: &Name<'_>) -> bool {
    let labels = name.get_labels();
    !labels.is_empty()
        && labels.iter().all(|label| {
            let bytes: &[u8] = label.as_ref();
            bytes.iter().copied().all(label_byte)
        })
}

/// A byte a label may hold in a name we report.
fn label_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
}

/// A wire name as lowercase text without the final dot. Labels holding dots or bytes outside
/// `[A-Za-z0-9_-]` are refused, so two different wire names never give the same text.
fn name_text(name: &Name<'_>) -> Result<String, String> {
    let labels = name.get_labels();
    let dots = labels.len().saturating_sub(1);
    let mut text = String::with_capacity(labels.iter().map(|l| l.len()).sum::<usize>() + dots);
    for label in labels {
        let bytes: &[u8] = label.as_ref();
        if !bytes.iter().copied().all(label_byte) {
            return Err("DNS label holds characters outside [A-Za-z0-9_-]".into());
        }
        if !text.is_empty() {
            text.push('.');
        }
        text.extend(bytes.iter().map(|b| char::from(b.to_ascii_lowercase())));
    }
    if text.is_empty() {
        return Err("the root name".into());
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;
    use super::*;

    fn answer(bytes: &[u8]) -> DnsAnswer {
        match parse_response(bytes) {
            Ok(ResponseOutcome::Answer(answer)) => answer,
            other => panic!("expected an answer, got {other:?}"),
        }
    }

    fn ips(list: &[&str]) -> Vec<IpAddr> {
        list.iter().map(|s| s.parse().expect("IP")).collect()
    }

    #[test]
    fn an_a_record_answers_its_question() {
        let a = answer(&first_message(UDP4_A_SVC));
        assert_eq!(a.name, "svc.test.local");
        assert_eq!(a.ips, ips(&["10.123.0.50"]));
        assert_eq!(a.ttl_seconds, 300);
    }

    #[test]
    fn aaaa_names_are_lowercased() {
        let a = answer(&first_message(UDP4_AAAA_MIXED_CASE));
        assert_eq!(a.name, "svc.test.local");
        assert_eq!(a.ips, ips(&["fd00:123::50"]));
        assert_eq!(
            answer(&first_message(UDP6_AAAA_SVC)).ips,
            ips(&["fd00:123::50"])
        );
    }

    #[test]
    fn cname_chains_are_attributed_to_the_queried_name() {
        for fixture in [UDP4_CNAME_CHAIN, TCP4_CNAME_CHAIN] {
            let a = answer(&first_message(fixture));
            assert_eq!(a.name, "app.test.local");
            assert_eq!(a.ips, ips(&["10.123.0.60"]));
        }
        let a = answer(&first_message(TCP4_AAAA_CNAME));
        assert_eq!(a.name, "www.test.local");
        assert_eq!(a.ips, ips(&["fd00:123::60"]));
    }

    /// Offsets of the TTL fields of the three answers in the `UDP4_CNAME_CHAIN` message.
    const CHAIN_TTL_OFFSETS: [usize; 3] = [38, 66, 94];

    #[test]
    fn the_ttl_is_the_smallest_along_the_chain() {
        let base = first_message(UDP4_CNAME_CHAIN);
        for (i, offset) in CHAIN_TTL_OFFSETS.into_iter().enumerate() {
            assert_eq!(&base[offset..offset + 4], &300u32.to_be_bytes());
            let mut m = base.clone();
            m[offset..offset + 4].copy_from_slice(&(20 + i as u32).to_be_bytes());
            assert_eq!(answer(&m).ttl_seconds, 20 + i as u32);
        }
    }

    #[test]
    fn nxdomain_gives_no_answer() {
        assert_eq!(
            parse_response(&first_message(UDP4_NXDOMAIN)),
            Ok(ResponseOutcome::ErrorRcode(3))
        );
    }

    #[test]
    fn queries_give_no_answer() {
        let mut m = first_message(UDP4_A_SVC);
        m[2] &= 0x7f;
        assert_eq!(parse_response(&m), Ok(ResponseOutcome::NotAResponse));
    }

    #[test]
    fn addresses_of_unrelated_names_are_ignored() {
        // Rename the A record's owner (a pointer to the question) to point at "test.local".
        let mut m = first_message(UDP4_A_SVC);
        assert_eq!(&m[32..34], &[0xc0, 0x0c]);
        m[33] = 0x10;
        assert_eq!(parse_response(&m), Ok(ResponseOutcome::NoAddresses));
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let m = first_message(UDP4_CNAME_CHAIN);
        for cut in 0..m.len() {
            let outcome = parse_response(&m[..cut]);
            assert!(outcome.is_err(), "cut at {cut} gave {outcome:?}");
        }
    }

    #[test]
    fn bogus_counts_are_refused_before_parsing() {
        let mut m = first_message(UDP4_A_SVC);
        m[6..8].copy_from_slice(&[0xff, 0xff]);
        assert!(matches!(
            parse_response(&m),
            Err(DnsParseError::BogusCounts { .. })
        ));
        let header_only = [
            0, 1, 0x81, 0x80, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        ];
        assert!(matches!(
            parse_response(&header_only),
            Err(DnsParseError::BogusCounts { .. })
        ));
    }

    #[test]
    fn compression_loops_are_malformed() {
        // Question name is a pointer to itself (offset 12).
        let mut m = vec![0, 1, 0x81, 0x80, 0, 1, 0, 0, 0, 0, 0, 0];
        m.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1]);
        assert!(matches!(
            parse_response(&m),
            Err(DnsParseError::Malformed(_))
        ));
        // Two pointers pointing at each other.
        let mut m = vec![0, 1, 0x81, 0x80, 0, 1, 0, 0, 0, 0, 0, 0];
        m.extend_from_slice(&[0xc0, 0x0e, 0xc0, 0x0c, 0, 1, 0, 1]);
        assert!(matches!(
            parse_response(&m),
            Err(DnsParseError::Malformed(_))
        ));
    }

    #[test]
    fn names_longer_than_255_bytes_are_malformed() {
        let mut m = vec![0, 1, 0x81, 0x80, 0, 1, 0, 0, 0, 0, 0, 0];
        for _ in 0..5 {
            m.push(63);
            m.extend_from_slice(&[b'a'; 63]);
        }
        m.extend_from_slice(&[0, 0, 1, 0, 1]);
        assert!(matches!(
            parse_response(&m),
            Err(DnsParseError::Malformed(_))
        ));
    }

    #[test]
    fn cname_loops_end_without_addresses() {
        // a.x CNAME b.x, b.x CNAME a.x, no address.
        let mut m = vec![0, 1, 0x81, 0x80, 0, 1, 0, 2, 0, 0, 0, 0];
        m.extend_from_slice(&[1, b'a', 1, b'x', 0, 0, 1, 0, 1]); // question at 12
        m.extend_from_slice(&[0xc0, 12, 0, 5, 0, 1, 0, 0, 0, 9, 0, 4, 1, b'b', 0xc0, 14]);
        m.extend_from_slice(&[0xc0, 33, 0, 5, 0, 1, 0, 0, 0, 9, 0, 2, 0xc0, 12]);
        assert_eq!(parse_response(&m), Ok(ResponseOutcome::NoAddresses));
    }

    /// A response to `a.x A` (question at offset 12) with `answers` records after it.
    fn response_to_a_x(answers: u8, records: &[&[u8]]) -> Vec<u8> {
        let mut m = vec![0, 1, 0x81, 0x80, 0, 1, 0, answers, 0, 0, 0, 0];
        m.extend_from_slice(&[1, b'a', 1, b'x', 0, 0, 1, 0, 1]);
        for record in records {
            m.extend_from_slice(record);
        }
        m
    }

    #[test]
    fn owners_match_the_chain_whatever_their_case() {
        // The A record's owner is spelled out as "A.X" rather than pointing at the question.
        let m = response_to_a_x(
            1,
            &[&[
                1, b'A', 1, b'X', 0, 0, 1, 0, 1, 0, 0, 0, 9, 0, 4, 10, 0, 0, 2,
            ]],
        );
        let a = answer(&m);
        assert_eq!(a.name, "a.x");
        assert_eq!(a.ips, ips(&["10.0.0.2"]));
    }

    #[test]
    fn a_cname_to_a_name_we_cannot_read_ends_the_chain() {
        // a.x CNAME "%.x" (record at 21, target at 33), "%.x" A 10.0.0.1.
        let cname: &[u8] = &[0xc0, 12, 0, 5, 0, 1, 0, 0, 0, 9, 0, 4, 1, b'%', 0xc0, 14];
        let address: &[u8] = &[0xc0, 33, 0, 1, 0, 1, 0, 0, 0, 9, 0, 4, 10, 0, 0, 1];
        let outcome = parse_response(&response_to_a_x(2, &[cname, address]));
        assert!(
            !matches!(outcome, Ok(ResponseOutcome::Answer(_))),
            "got {outcome:?}"
        );
        // The same with a readable target is followed.
        let cname: &[u8] = &[0xc0, 12, 0, 5, 0, 1, 0, 0, 0, 9, 0, 4, 1, b'b', 0xc0, 14];
        let a = answer(&response_to_a_x(2, &[cname, address]));
        assert_eq!((a.name.as_str(), a.ips), ("a.x", ips(&["10.0.0.1"])));
    }

    #[test]
    fn odd_characters_in_the_question_are_refused() {
        let mut m = first_message(UDP4_A_SVC);
        m[13] = b'.'; // first label ".vc"
        assert!(matches!(
            parse_response(&m),
            Err(DnsParseError::InvalidName(_))
        ));
    }

    #[test]
    fn random_bytes_never_panic() {
        let base = first_message(UDP4_CNAME_CHAIN);
        let mut state = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..20_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let mut m = base.clone();
            let at = (state as usize) % m.len();
            m[at] = (state >> 32) as u8;
            let _ = parse_response(&m);
        }
    }
}
