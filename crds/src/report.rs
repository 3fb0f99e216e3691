//! The report a sniffer sends to the operator, and the observation lines of `--output jsonl`.
//!
//! Versioned: [`Report::version`] must be [`REPORT_VERSION`]; the operator rejects other versions
//! with a clear error instead of guessing.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::observed::Protocol;

/// Version of the report schema this crate reads and writes.
pub const REPORT_VERSION: u32 = 1;
/// HTTP path of the operator's ingest endpoint.
pub const INGEST_PATH: &str = "/v1/reports";
/// Token audience sniffers request and the operator requires.
pub const TOKEN_AUDIENCE: &str = "trafficmap";
/// Longest DNS name (RFC 1035, textual form without the final dot).
pub const MAX_DNS_NAME_BYTES: usize = 253;

/// A batch of aggregated observations from one node.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// Schema version, [`REPORT_VERSION`].
    pub version: u32,
    /// Node the sniffer runs on.
    pub node: String,
    /// Observations, deduplicated by client, server, port and name.
    pub observations: Vec<Observation>,
}

/// One thing a sniffer saw: `{"type": "dns", ...}` or `{"type": "connection", ...}`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(tag = "type", rename_all = "camelCase", try_from = "WireObservation")]
pub enum Observation {
    /// A DNS response delivered to a client.
    Dns(DnsObservation),
    /// A client-side TCP connection or connected UDP socket.
    Connection(ConnectionObservation),
}

/// Who made a call, as the sniffer saw it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[serde(rename_all = "camelCase")]
pub struct ClientId {
    /// Source address of the client (the DNS response's destination address).
    pub ip: IpAddr,
    /// UID of the client's pod, when the sniffer could tell it from a cgroup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_uid: Option<String>,
}

/// A DNS answer: `name` (the queried name, CNAME chains followed back to it) resolved to `ips`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct DnsObservation {
    /// The client that received the response.
    pub client: ClientId,
    /// Queried name, lowercase, without the final dot.
    pub name: String,
    /// A and AAAA answers, sorted.
    pub ips: Vec<IpAddr>,
    /// Smallest TTL along the answer chain, in seconds.
    pub ttl_seconds: u32,
    /// First time seen, milliseconds since the Unix epoch.
    pub first_seen_ms: u64,
    /// Latest time seen, milliseconds since the Unix epoch.
    pub last_seen_ms: u64,
}

/// A client-side socket to `server_ip:server_port`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ConnectionObservation {
    /// The client that holds the socket.
    pub client: ClientId,
    /// Remote address.
    pub server_ip: IpAddr,
    /// Remote port.
    pub server_port: u16,
    /// TCP or UDP.
    pub protocol: Protocol,
    /// First time seen, milliseconds since the Unix epoch.
    pub first_seen_ms: u64,
    /// Latest time seen, milliseconds since the Unix epoch.
    pub last_seen_ms: u64,
}

/// Kinds of [`Observation`], as the `type` field names them.
#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "camelCase")]
enum Kind {
    Dns,
    Connection,
}

/// An [`Observation`] as it is read: the fields of both kinds side by side, then checked
/// against its `type`. Reading the tagged enum directly buffers every field of every
/// observation (serde's internally tagged enums look for the tag first), which was half the
/// cost of decoding a report.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireObservation {
    #[serde(rename = "type")]
    kind: Kind,
    client: ClientId,
    name: Option<String>,
    ips: Option<Vec<IpAddr>>,
    ttl_seconds: Option<u32>,
    server_ip: Option<IpAddr>,
    server_port: Option<u16>,
    protocol: Option<Protocol>,
    first_seen_ms: u64,
    last_seen_ms: u64,
}

impl TryFrom<WireObservation> for Observation {
    type Error = String;

    fn try_from(wire: WireObservation) -> Result<Self, String> {
        fn required<T>(field: Option<T>, name: &str, kind: &str) -> Result<T, String> {
            field.ok_or_else(|| format!("missing field `{name}` of a {kind} observation"))
        }
        let WireObservation {
            kind,
            client,
            name,
            ips,
            ttl_seconds,
            server_ip,
            server_port,
            protocol,
            first_seen_ms,
            last_seen_ms,
        } = wire;
        Ok(match kind {
            Kind::Dns => Observation::Dns(DnsObservation {
                client,
                name: required(name, "name", "dns")?,
                ips: required(ips, "ips", "dns")?,
                ttl_seconds: required(ttl_seconds, "ttlSeconds", "dns")?,
                first_seen_ms,
                last_seen_ms,
            }),
            Kind::Connection => Observation::Connection(ConnectionObservation {
                client,
                server_ip: required(server_ip, "serverIp", "connection")?,
                server_port: required(server_port, "serverPort", "connection")?,
                protocol: required(protocol, "protocol", "connection")?,
                first_seen_ms,
                last_seen_ms,
            }),
        })
    }
}

/// Why a report was refused.
#[derive(Debug, Error)]
pub enum ReportError {
    /// The body is not a JSON report.
    #[error("report is not valid JSON for schema version {REPORT_VERSION}: {0}")]
    Malformed(#[from] serde_json::Error),
    /// The report names a schema version this build does not read.
    #[error(
        "report schema version {found} is not supported (this operator reads version {REPORT_VERSION})"
    )]
    UnsupportedVersion {
        /// Version in the report.
        found: u32,
    },
    /// A field holds a value no real observation can have.
    #[error("observation {index} is invalid: {reason}")]
    InvalidObservation {
        /// Position in `observations`.
        index: usize,
        /// What is wrong.
        reason: String,
    },
}

impl Report {
    /// Parses and validates a report body.
    pub fn from_json(body: &[u8]) -> Result<Self, ReportError> {
        let report: Report = serde_json::from_slice(body)?;
        if report.version != REPORT_VERSION {
            return Err(ReportError::UnsupportedVersion {
                found: report.version,
            });
        }
        for (index, obs) in report.observations.iter().enumerate() {
            obs.validate()
                .map_err(|reason| ReportError::InvalidObservation { index, reason })?;
        }
        Ok(report)
    }
}

impl Observation {
    /// The client of the observation.
    pub fn client(&self) -> &ClientId {
        match self {
            Observation::Dns(d) => &d.client,
            Observation::Connection(c) => &c.client,
        }
    }

    /// Checks what the type system cannot: name syntax, time order, pod UID shape.
    pub fn validate(&self) -> Result<(), String> {
        let (first, last) = match self {
            Observation::Dns(d) => {
                validate_dns_name(&d.name)?;
                (d.first_seen_ms, d.last_seen_ms)
            }
            Observation::Connection(c) => {
                if c.server_port == 0 {
                    return Err("server port 0".into());
                }
                (c.first_seen_ms, c.last_seen_ms)
            }
        };
        if first > last {
            return Err(format!("firstSeenMs {first} is after lastSeenMs {last}"));
        }
        if let Some(uid) = &self.client().pod_uid {
            validate_pod_uid(uid)?;
        }
        Ok(())
    }
}

/// A DNS name as the sniffer reports it: 1..=253 bytes of lowercase letters, digits, `-`, `_`
/// and `.`, with labels of 1..=63 bytes.
pub fn validate_dns_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_DNS_NAME_BYTES {
        return Err(format!("DNS name length {} is outside 1..=253", name.len()));
    }
    let allowed = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_';
    for label in name.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err(format!(
                "DNS label length {} is outside 1..=63",
                label.len()
            ));
        }
        if !label.bytes().all(allowed) {
            return Err("DNS name holds characters outside [a-z0-9-_.]".into());
        }
    }
    Ok(())
}

/// A pod UID: 36 characters of hex digits and dashes (the form Kubernetes generates).
fn validate_pod_uid(uid: &str) -> Result<(), String> {
    let ok = uid.len() == 36 && uid.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err("pod UID is not a 36-character UID".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn_json(version: u32) -> String {
        format!(
            r#"{{"version":{version},"node":"n1","observations":[
            {{"type":"connection","client":{{"ip":"10.244.0.5","podUid":"0b4cbd6e-3f2a-4c8e-9a55-0e5f7f0c1d2a"}},
              "serverIp":"10.96.0.10","serverPort":80,"protocol":"TCP","firstSeenMs":1,"lastSeenMs":2}},
            {{"type":"dns","client":{{"ip":"fd00::5"}},"name":"cartservice.shop.svc.cluster.local",
              "ips":["10.96.0.11"],"ttlSeconds":30,"firstSeenMs":1,"lastSeenMs":1}}]}}"#
        )
    }

    #[test]
    fn a_valid_report_round_trips() {
        let report = Report::from_json(conn_json(1).as_bytes()).expect("valid");
        assert_eq!(report.observations.len(), 2);
        let again = serde_json::to_vec(&report).expect("serializes");
        assert_eq!(Report::from_json(&again).expect("valid"), report);
    }

    #[test]
    fn each_kind_needs_its_own_fields_and_ignores_the_others() {
        let client = r#""client":{"ip":"10.244.0.5"},"firstSeenMs":1,"lastSeenMs":2"#;
        let read = |body: String| -> Result<Observation, String> {
            serde_json::from_str(&body).map_err(|e| e.to_string())
        };
        let dns = read(format!(
            r#"{{"type":"dns",{client},"name":"a.b","ips":["10.0.0.1"],"ttlSeconds":5,"serverPort":80}}"#
        ))
        .expect("a dns observation");
        assert!(matches!(dns, Observation::Dns(ref d) if d.name == "a.b" && d.ttl_seconds == 5));
        let err = read(format!(
            r#"{{"type":"dns",{client},"name":"a.b","ips":[]}}"#
        ))
        .expect_err("no TTL");
        assert!(err.contains("`ttlSeconds` of a dns observation"), "{err}");
        let err = read(format!(
            r#"{{"type":"connection",{client},"name":"a.b","serverIp":"10.0.0.1","protocol":"TCP"}}"#
        ))
        .expect_err("no port");
        assert!(
            err.contains("`serverPort` of a connection observation"),
            "{err}"
        );
        let err = read(format!(r#"{{"type":"udp",{client}}}"#)).expect_err("no such type");
        assert!(err.contains("unknown variant `udp`"), "{err}");
        let err = read(format!(r#"{{{client},"name":"a.b"}}"#)).expect_err("no type");
        assert!(err.contains("missing field `type`"), "{err}");
    }

    #[test]
    fn other_schema_versions_are_refused() {
        let err = Report::from_json(conn_json(2).as_bytes()).expect_err("v2 refused");
        assert!(matches!(err, ReportError::UnsupportedVersion { found: 2 }));
    }

    #[test]
    fn garbage_is_malformed() {
        assert!(matches!(
            Report::from_json(b"\xff\xfe{"),
            Err(ReportError::Malformed(_))
        ));
    }

    #[test]
    fn bad_names_and_times_are_invalid() {
        let bad_name = conn_json(1).replace("cartservice.shop", "Cart\\u0000.shop");
        assert!(matches!(
            Report::from_json(bad_name.as_bytes()),
            Err(ReportError::InvalidObservation { index: 1, .. })
        ));
        let bad_time = conn_json(1).replace(r#""lastSeenMs":2"#, r#""lastSeenMs":0"#);
        assert!(matches!(
            Report::from_json(bad_time.as_bytes()),
            Err(ReportError::InvalidObservation { index: 0, .. })
        ));
        let long = format!("{}.com", "a".repeat(64));
        assert!(validate_dns_name(&long).is_err());
    }
}
