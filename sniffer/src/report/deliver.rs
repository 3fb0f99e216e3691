//! Sending one batch: what each answer means, and splitting a batch the operator finds too
//! large. The HTTP exchange is behind [`Transport`], so this logic is tested without I/O.

use std::future::Future;

use trafficmap_api::report::{Observation, REPORT_VERSION};

use crate::counters::Counters;

/// Longest piece of a refusal's body that is logged.
const MAX_LOGGED_BODY_BYTES: usize = 1024;

/// Why a report request failed; the label of `report_failures_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureReason {
    /// No TCP connection (refused, unreachable, DNS).
    Connect,
    /// The TLS handshake failed (for example, a certificate the CA did not sign).
    Tls,
    /// No answer within the request timeout.
    Timeout,
    /// The token file could not be read.
    Token,
    /// 401: the token was refused; it is read again before the retry.
    Unauthorized,
    /// 408 or 429: the operator asked us to come back later.
    Throttled,
    /// 5xx.
    ServerError,
    /// 413: the body was too large; the batch is split.
    TooLarge,
    /// Another 4xx: the batch is dropped.
    Rejected,
}

impl FailureReason {
    /// Every reason, in counter order.
    pub const ALL: [FailureReason; 9] = [
        FailureReason::Connect,
        FailureReason::Tls,
        FailureReason::Timeout,
        FailureReason::Token,
        FailureReason::Unauthorized,
        FailureReason::Throttled,
        FailureReason::ServerError,
        FailureReason::TooLarge,
        FailureReason::Rejected,
    ];

    /// Metric label value.
    pub fn label(self) -> &'static str {
        match self {
            FailureReason::Connect => "connect",
            FailureReason::Tls => "tls",
            FailureReason::Timeout => "timeout",
            FailureReason::Token => "token",
            FailureReason::Unauthorized => "unauthorized",
            FailureReason::Throttled => "throttled",
            FailureReason::ServerError => "server_error",
            FailureReason::TooLarge => "too_large",
            FailureReason::Rejected => "rejected",
        }
    }

    /// Position in [`FailureReason::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

/// What to do with a batch after an HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// 2xx: delivered.
    Delivered,
    /// Try the same observations again later, after a backoff.
    Retry(FailureReason),
    /// 413: split the batch.
    TooLarge,
    /// Any other status: the operator will never take this batch; drop it.
    Drop,
}

/// The verdict for an HTTP status.
pub fn classify(status: u16) -> Verdict {
    match status {
        200..=299 => Verdict::Delivered,
        401 => Verdict::Retry(FailureReason::Unauthorized),
        408 | 429 => Verdict::Retry(FailureReason::Throttled),
        413 => Verdict::TooLarge,
        500..=599 => Verdict::Retry(FailureReason::ServerError),
        _ => Verdict::Drop,
    }
}

/// The operator's answer to one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// Start of the body, for logs.
    pub body: Vec<u8>,
}

/// Sends one report body; an error says why no answer came.
pub trait Transport {
    /// POSTs `body` (a JSON report) to the ingest endpoint.
    fn send(&mut self, body: Vec<u8>) -> impl Future<Output = Result<Answer, FailureReason>>;
}

/// A batch that must wait for a retry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Undelivered {
    /// Why the last attempt failed.
    pub reason: FailureReason,
    /// Observations not delivered (put them back in the buffer).
    pub observations: Vec<Observation>,
}

/// The JSON body of a report of `observations` from `node`.
pub fn report_body(node: &str, observations: &[Observation]) -> Vec<u8> {
    #[derive(serde::Serialize)]
    struct ReportRef<'a> {
        version: u32,
        node: &'a str,
        observations: &'a [Observation],
    }
    // The shape of `Report`, without cloning the observations.
    serde_json::to_vec(&ReportRef {
        version: REPORT_VERSION,
        node,
        observations,
    })
    .unwrap_or_default()
}

/// Splits a batch into two halves (the first gets the smaller half).
pub fn split_in_half(mut batch: Vec<Observation>) -> (Vec<Observation>, Vec<Observation>) {
    let second = batch.split_off(batch.len() / 2);
    (batch, second)
}

/// Sends `batch` from `node`. On 413 the batch is split in halves, each sent once, down to
/// single observations (a single one refused as too large is dropped). Other refusals drop
/// the part that was refused. The first retryable failure stops the delivery and returns
/// every observation not yet delivered.
pub async fn deliver<T: Transport>(
    transport: &mut T,
    node: &str,
    batch: Vec<Observation>,
    counters: &Counters,
) -> Result<(), Undelivered> {
    let mut parts = vec![batch];
    while let Some(part) = parts.pop() {
        if part.is_empty() {
            continue;
        }
        let verdict = match transport.send(report_body(node, &part)).await {
            Ok(answer) => {
                let verdict = classify(answer.status);
                if matches!(verdict, Verdict::Drop | Verdict::TooLarge) {
                    let end = answer.body.len().min(MAX_LOGGED_BODY_BYTES);
                    tracing::warn!(
                        status = answer.status,
                        observations = part.len(),
                        body = %String::from_utf8_lossy(&answer.body[..end]),
                        "operator refused a report"
                    );
                }
                verdict
            }
            Err(reason) => Verdict::Retry(reason),
        };
        match verdict {
            Verdict::Delivered => {
                Counters::inc(&counters.reports_sent);
                Counters::add(&counters.observations_reported, part.len() as u64);
            }
            Verdict::TooLarge if part.len() > 1 => {
                counters.report_failure(FailureReason::TooLarge);
                let (first, second) = split_in_half(part);
                parts.push(second);
                parts.push(first);
            }
            Verdict::TooLarge | Verdict::Drop => {
                let reason = if verdict == Verdict::TooLarge {
                    FailureReason::TooLarge
                } else {
                    FailureReason::Rejected
                };
                counters.report_failure(reason);
                Counters::inc(&counters.reports_dropped);
                Counters::add(&counters.observations_rejected, part.len() as u64);
            }
            Verdict::Retry(reason) => {
                counters.report_failure(reason);
                let mut observations = part;
                observations.extend(parts.into_iter().rev().flatten());
                return Err(Undelivered {
                    reason,
                    observations,
                });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use trafficmap_api::report::Report;

    use super::*;
    use crate::report::fixtures::conn;

    fn batch(ports: std::ops::Range<u16>) -> Vec<Observation> {
        ports.map(conn).collect()
    }

    fn ports(observations: &[Observation]) -> Vec<u16> {
        observations
            .iter()
            .filter_map(|o| match o {
                Observation::Connection(c) => Some(c.server_port),
                Observation::Dns(_) => None,
            })
            .collect()
    }

    /// Answers with the scripted results in order (200 when the script runs out), or by a
    /// rule, and records the ports of every report sent.
    struct ScriptedOperator {
        script: VecDeque<Result<u16, FailureReason>>,
        rule: Option<fn(&Report) -> u16>,
        sent: Vec<Vec<u16>>,
    }

    impl ScriptedOperator {
        fn new(script: impl IntoIterator<Item = Result<u16, FailureReason>>) -> Self {
            ScriptedOperator {
                script: script.into_iter().collect(),
                rule: None,
                sent: Vec::new(),
            }
        }
    }

    impl Transport for ScriptedOperator {
        async fn send(&mut self, body: Vec<u8>) -> Result<Answer, FailureReason> {
            let report = Report::from_json(&body).expect("a valid report");
            assert_eq!(report.node, "n1");
            self.sent.push(ports(&report.observations));
            let status = match self.rule {
                Some(rule) => rule(&report),
                None => self.script.pop_front().unwrap_or(Ok(200))?,
            };
            Ok(Answer {
                status,
                body: b"why".to_vec(),
            })
        }
    }

    fn run<T: Transport>(
        transport: &mut T,
        batch: Vec<Observation>,
        counters: &Counters,
    ) -> Result<(), Undelivered> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        runtime.block_on(deliver(transport, "n1", batch, counters))
    }

    #[test]
    fn statuses_are_classified_as_the_protocol_says() {
        assert_eq!(classify(200), Verdict::Delivered);
        assert_eq!(classify(202), Verdict::Delivered);
        assert_eq!(classify(401), Verdict::Retry(FailureReason::Unauthorized));
        assert_eq!(classify(408), Verdict::Retry(FailureReason::Throttled));
        assert_eq!(classify(429), Verdict::Retry(FailureReason::Throttled));
        assert_eq!(classify(503), Verdict::Retry(FailureReason::ServerError));
        assert_eq!(classify(413), Verdict::TooLarge);
        assert_eq!(classify(400), Verdict::Drop);
        assert_eq!(classify(403), Verdict::Drop);
        assert_eq!(classify(302), Verdict::Drop);
    }

    #[test]
    fn failure_reasons_index_their_own_slot() {
        for (i, reason) in FailureReason::ALL.iter().enumerate() {
            assert_eq!(reason.index(), i, "{reason:?}");
        }
    }

    #[test]
    fn the_body_is_a_report_of_the_api_schema() {
        let body = report_body("n1", &batch(80..82));
        let report = Report::from_json(&body).expect("valid");
        assert_eq!(report.version, REPORT_VERSION);
        assert_eq!(report.observations, batch(80..82));
    }

    #[test]
    fn halves_split_a_batch_without_losing_any() {
        let (a, b) = split_in_half(batch(0..5));
        assert_eq!((ports(&a), ports(&b)), (vec![0, 1], vec![2, 3, 4]));
        let (a, b) = split_in_half(batch(0..1));
        assert_eq!((a.len(), b.len()), (0, 1));
    }

    #[test]
    fn a_delivered_batch_is_counted() {
        let counters = Counters::default();
        let mut operator = ScriptedOperator::new([Ok(200)]);
        run(&mut operator, batch(1..4), &counters).expect("delivered");
        let snapshot = counters.snapshot();
        assert_eq!(
            (snapshot.reports_sent, snapshot.observations_reported),
            (1, 3)
        );
    }

    #[test]
    fn a_server_error_returns_the_whole_batch_for_a_retry() {
        let counters = Counters::default();
        let mut operator = ScriptedOperator::new([Ok(503)]);
        let undelivered = run(&mut operator, batch(1..4), &counters).expect_err("retry");
        assert_eq!(undelivered.reason, FailureReason::ServerError);
        assert_eq!(ports(&undelivered.observations), [1, 2, 3]);
        assert_eq!(counters.snapshot().report_failures["server_error"], 1);
    }

    #[test]
    fn a_transport_failure_is_retried_with_its_reason() {
        let counters = Counters::default();
        let mut operator = ScriptedOperator::new([Err(FailureReason::Tls)]);
        let undelivered = run(&mut operator, batch(1..2), &counters).expect_err("retry");
        assert_eq!(undelivered.reason, FailureReason::Tls);
        assert_eq!(counters.snapshot().report_failures["tls"], 1);
    }

    #[test]
    fn unauthorized_and_throttled_are_retried_not_dropped() {
        for (status, label) in [
            (401, "unauthorized"),
            (429, "throttled"),
            (408, "throttled"),
        ] {
            let counters = Counters::default();
            let mut operator = ScriptedOperator::new([Ok(status)]);
            let undelivered = run(&mut operator, batch(1..3), &counters).expect_err("retry");
            assert_eq!(undelivered.observations.len(), 2, "{status}");
            assert_eq!(counters.snapshot().report_failures[label], 1, "{status}");
            assert_eq!(counters.snapshot().observations_rejected, 0, "{status}");
        }
    }

    #[test]
    fn a_bad_request_drops_the_batch_and_counts_it() {
        let counters = Counters::default();
        let mut operator = ScriptedOperator::new([Ok(400)]);
        run(&mut operator, batch(1..4), &counters).expect("nothing to retry");
        let snapshot = counters.snapshot();
        assert_eq!(snapshot.reports_dropped, 1);
        assert_eq!(snapshot.observations_rejected, 3);
        assert_eq!(snapshot.report_failures["rejected"], 1);
        assert_eq!(operator.sent.len(), 1, "not retried");
    }

    #[test]
    fn a_too_large_batch_is_split_in_halves_down_to_single_observations() {
        let counters = Counters::default();
        let mut operator = ScriptedOperator::new([]);
        // The operator takes at most two observations per report, and never port 7.
        operator.rule = Some(|report| {
            let sent = ports(&report.observations);
            if sent.len() > 2 || sent.contains(&7) {
                413
            } else {
                200
            }
        });
        run(&mut operator, batch(1..9), &counters).expect("nothing to retry");
        let expected: Vec<Vec<u16>> = vec![
            vec![1, 2, 3, 4, 5, 6, 7, 8],
            vec![1, 2, 3, 4],
            vec![1, 2],
            vec![3, 4],
            vec![5, 6, 7, 8],
            vec![5, 6],
            vec![7, 8],
            vec![7],
            vec![8],
        ];
        assert_eq!(operator.sent, expected);
        let snapshot = counters.snapshot();
        assert_eq!(snapshot.observations_reported, 7);
        assert_eq!(snapshot.observations_rejected, 1);
        assert_eq!(snapshot.report_failures["too_large"], 5);
    }

    #[test]
    fn a_retry_after_a_split_keeps_every_undelivered_half() {
        let counters = Counters::default();
        let mut operator = ScriptedOperator::new([Ok(413), Ok(200), Ok(503)]);
        let undelivered = run(&mut operator, batch(1..5), &counters).expect_err("retry");
        assert_eq!(
            operator.sent,
            vec![vec![1, 2, 3, 4], vec![1, 2], vec![3, 4]]
        );
        assert_eq!(ports(&undelivered.observations), [3, 4]);
        assert_eq!(counters.snapshot().observations_reported, 2);
    }
}
