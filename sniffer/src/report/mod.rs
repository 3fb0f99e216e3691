//! `--output report`: observations go to the operator in batches over HTTPS.
//!
//! - [`buffer`]: deduplicated observations waiting, bounded in bytes (pure).
//! - [`backoff`]: the wait after failures, exponential with full jitter (pure).
//! - [`deliver`]: one batch, what each answer means, splitting on 413 (pure, over a transport).
//! - [`token`], [`client`]: the ServiceAccount token and the HTTPS transport (I/O).
//!
//! The output thread pushes into a [`SharedBuffer`]; [`run`] empties it every report interval,
//! and after a failure waits out the backoff instead. The operator answers a report only once
//! its edges are written (seconds), so a backlog goes out as several reports at once, one per
//! transport of the pool.

pub mod backoff;
pub mod buffer;
pub mod client;
pub mod deliver;
#[cfg(test)]
mod fixtures;
pub mod token;

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use trafficmap_api::report::Observation;

use crate::counters::Counters;
use backoff::Backoff;
use buffer::{ReportBuffer, envelope_bytes};
use deliver::{FailureReason, Transport, deliver};

/// Longest the last flush on shutdown may take.
pub const FINAL_FLUSH_TIMEOUT: Duration = Duration::from_secs(2);

/// The report buffer, shared by the output thread (which fills it) and the reporter.
#[derive(Debug, Clone)]
pub struct SharedBuffer {
    buffer: Arc<Mutex<ReportBuffer>>,
    counters: Arc<Counters>,
}

impl SharedBuffer {
    /// An empty buffer of at most `max_bytes`; its size and drops are kept in `counters`.
    pub fn new(max_bytes: usize, counters: Arc<Counters>) -> Self {
        SharedBuffer {
            buffer: Arc::new(Mutex::new(ReportBuffer::new(max_bytes))),
            counters,
        }
    }

    fn lock(&self) -> MutexGuard<'_, ReportBuffer> {
        // The buffer stays consistent between calls, so a panic elsewhere does not taint it.
        self.buffer.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn publish(&self, buffer: &ReportBuffer) {
        Counters::set(&self.counters.buffer_bytes, buffer.bytes() as u64);
        Counters::set(&self.counters.buffered_observations, buffer.len() as u64);
    }

    /// Adds (merges) observations; the oldest are dropped and counted past the bound.
    pub fn push_all(&self, observations: impl IntoIterator<Item = Observation>) {
        let mut buffer = self.lock();
        let dropped = buffer.push_all(observations);
        Counters::add(&self.counters.buffer_dropped, dropped as u64);
        self.publish(&buffer);
    }

    /// Removes the oldest observations that fit in `max_bytes`.
    fn take_batch(&self, max_bytes: usize) -> Vec<Observation> {
        let mut buffer = self.lock();
        let batch = buffer.take_batch(max_bytes);
        self.publish(&buffer);
        batch
    }

    /// Observations waiting.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// True when nothing waits.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }
}

/// How the reporter sends.
#[derive(Debug, Clone)]
pub struct ReportSettings {
    /// Node name put in every report.
    pub node: String,
    /// Time between two flushes while the operator answers.
    pub interval: Duration,
    /// Largest request body; bigger batches are split.
    pub max_body_bytes: usize,
}

/// Sends everything buffered, up to one batch per transport at a time; stops after the first
/// round with a retryable failure (the undelivered observations go back into the buffer,
/// merging with newer ones).
async fn flush<T: Transport>(
    transports: &mut [T],
    buffer: &SharedBuffer,
    settings: &ReportSettings,
) -> Result<(), FailureReason> {
    let budget = settings
        .max_body_bytes
        .saturating_sub(envelope_bytes(&settings.node));
    loop {
        let mut round = Vec::with_capacity(transports.len());
        for transport in transports.iter_mut() {
            let batch = buffer.take_batch(budget);
            if batch.is_empty() {
                break;
            }
            round.push(deliver(transport, &settings.node, batch, &buffer.counters));
        }
        if round.is_empty() {
            return Ok(());
        }
        let mut failure = None;
        for result in futures::future::join_all(round).await {
            if let Err(undelivered) = result {
                buffer.push_all(undelivered.observations);
                failure.get_or_insert(undelivered.reason);
            }
        }
        if let Some(reason) = failure {
            return Err(reason);
        }
    }
}

/// Flushes `buffer` every interval (after a failure: when the backoff ends) through up to
/// one report per transport at once, until `shutdown` turns true, then flushes once more for
/// at most [`FINAL_FLUSH_TIMEOUT`].
pub async fn run<T: Transport>(
    mut transports: Vec<T>,
    buffer: SharedBuffer,
    settings: ReportSettings,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut backoff = Backoff::default();
    let mut next = Instant::now() + settings.interval;
    loop {
        tokio::select! {
            () = tokio::time::sleep_until(next) => {}
            _ = shutdown.wait_for(|stop| *stop) => break,
        }
        match flush(&mut transports, &buffer, &settings).await {
            Ok(()) => {
                if backoff.failures() > 0 {
                    tracing::info!(failures = backoff.failures(), "operator reachable again");
                }
                backoff.reset();
                next = Instant::now() + settings.interval;
            }
            Err(reason) => {
                let wait = backoff.fail(fastrand::f64());
                let failures = backoff.failures();
                let message = "cannot report to the operator; retrying after a backoff";
                if failures.is_power_of_two() {
                    tracing::warn!(
                        reason = reason.label(),
                        failures,
                        ?wait,
                        buffered = buffer.len(),
                        "{message}"
                    );
                } else {
                    tracing::debug!(reason = reason.label(), failures, ?wait, "{message}");
                }
                next = Instant::now() + wait;
            }
        }
    }
    let pending = buffer.len();
    if pending == 0 {
        return;
    }
    match tokio::time::timeout(
        FINAL_FLUSH_TIMEOUT,
        flush(&mut transports, &buffer, &settings),
    )
    .await
    {
        Ok(Ok(())) => tracing::info!(observations = pending, "final report sent"),
        Ok(Err(reason)) => tracing::warn!(
            reason = reason.label(),
            unsent = buffer.len(),
            "final report failed"
        ),
        Err(_) => tracing::warn!(unsent = buffer.len(), "final report did not finish in time"),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::future::pending;

    use trafficmap_api::report::Report;

    use super::deliver::Answer;
    use super::*;
    use crate::report::fixtures::conn;

    #[derive(Default)]
    struct Log {
        attempts: Vec<Instant>,
        delivered: Vec<Observation>,
    }

    /// Answers the scripted statuses in order, then 200; `None` never answers.
    struct ScriptedOperator {
        script: VecDeque<Option<u16>>,
        log: Arc<Mutex<Log>>,
    }

    impl Transport for ScriptedOperator {
        async fn send(&mut self, body: Vec<u8>) -> Result<Answer, FailureReason> {
            let report = Report::from_json(&body).expect("valid report");
            self.log.lock().expect("log").attempts.push(Instant::now());
            let Some(status) = self.script.pop_front().unwrap_or(Some(200)) else {
                return pending().await;
            };
            if status == 200 {
                let mut log = self.log.lock().expect("log");
                log.delivered.extend(report.observations);
            }
            Ok(Answer {
                status,
                body: Vec::new(),
            })
        }
    }

    fn setup(
        script: impl IntoIterator<Item = Option<u16>>,
        interval: Duration,
    ) -> (
        ScriptedOperator,
        SharedBuffer,
        ReportSettings,
        Arc<Mutex<Log>>,
    ) {
        let log = Arc::new(Mutex::new(Log::default()));
        let operator = ScriptedOperator {
            script: script.into_iter().collect(),
            log: Arc::clone(&log),
        };
        let buffer = SharedBuffer::new(1 << 20, Arc::new(Counters::default()));
        let settings = ReportSettings {
            node: "n1".into(),
            interval,
            max_body_bytes: 1 << 20,
        };
        (operator, buffer, settings, log)
    }

    fn paused_runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .expect("runtime")
    }

    #[test]
    fn the_reporter_backs_off_while_failing_and_delivers_everything_after() {
        let (operator, buffer, settings, log) = setup(
            [Some(503), Some(503), Some(429), Some(503)],
            Duration::from_secs(1),
        );
        buffer.push_all([conn(1), conn(2)]);
        let (stop, stopped) = watch::channel(false);
        paused_runtime().block_on(async {
            let started = Instant::now();
            let driver = async {
                // During the outage (after the first failed attempt; four fail), whatever the
                // jitter: an observation pushed after a successful delivery is rightly sent again.
                while log.lock().expect("log").attempts.is_empty() {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                buffer.push_all([conn(3), conn(1)]);
                tokio::time::sleep(Duration::from_secs(10)).await;
                let _ = stop.send(true);
            };
            tokio::join!(
                run(vec![operator], buffer.clone(), settings, stopped),
                driver
            );
            let log = log.lock().expect("log");
            assert_eq!(log.attempts[0] - started, Duration::from_secs(1));
            let gaps: Vec<Duration> = log.attempts.windows(2).map(|w| w[1] - w[0]).collect();
            for (i, ceiling_ms) in [200, 400, 800, 1600].into_iter().enumerate() {
                assert!(gaps[i] <= Duration::from_millis(ceiling_ms), "{gaps:?}");
            }
            let mut ports: Vec<u16> = log
                .delivered
                .iter()
                .filter_map(|o| match o {
                    Observation::Connection(c) => Some(c.server_port),
                    Observation::Dns(_) => None,
                })
                .collect();
            ports.sort_unstable();
            assert_eq!(ports, [1, 2, 3], "each delivered once, duplicates merged");
            assert!(buffer.is_empty());
        });
    }

    #[test]
    fn shutdown_flushes_what_is_buffered() {
        let (operator, buffer, settings, log) = setup([], Duration::from_secs(3600));
        buffer.push_all([conn(1)]);
        let (stop, stopped) = watch::channel(false);
        paused_runtime().block_on(async {
            let driver = async {
                tokio::time::sleep(Duration::from_millis(10)).await;
                let _ = stop.send(true);
            };
            tokio::join!(
                run(vec![operator], buffer.clone(), settings, stopped),
                driver
            );
        });
        assert_eq!(log.lock().expect("log").delivered, vec![conn(1)]);
    }

    #[test]
    fn the_final_flush_gives_up_after_its_timeout() {
        let (operator, buffer, settings, _log) = setup([None], Duration::from_secs(3600));
        buffer.push_all([conn(1)]);
        let (stop, stopped) = watch::channel(false);
        paused_runtime().block_on(async {
            let _ = stop.send(true);
            let started = Instant::now();
            run(vec![operator], buffer.clone(), settings, stopped).await;
            assert_eq!(started.elapsed(), FINAL_FLUSH_TIMEOUT);
        });
    }

    /// Answers 200 after `delay`, recording what it delivered.
    struct SlowOperator {
        delay: Duration,
        log: Arc<Mutex<Log>>,
    }

    impl Transport for SlowOperator {
        async fn send(&mut self, body: Vec<u8>) -> Result<Answer, FailureReason> {
            let report = Report::from_json(&body).expect("valid report");
            self.log.lock().expect("log").attempts.push(Instant::now());
            tokio::time::sleep(self.delay).await;
            self.log
                .lock()
                .expect("log")
                .delivered
                .extend(report.observations);
            Ok(Answer {
                status: 202,
                body: Vec::new(),
            })
        }
    }

    #[test]
    fn a_backlog_goes_out_one_report_per_transport_at_once() {
        let log = Arc::new(Mutex::new(Log::default()));
        let delay = Duration::from_secs(5);
        let transports: Vec<SlowOperator> = (0..3)
            .map(|_| SlowOperator {
                delay,
                log: Arc::clone(&log),
            })
            .collect();
        let buffer = SharedBuffer::new(1 << 20, Arc::new(Counters::default()));
        buffer.push_all([conn(1), conn(2), conn(3), conn(4)]);
        // One observation per report.
        let settings = ReportSettings {
            node: "n1".into(),
            interval: Duration::from_secs(3600),
            max_body_bytes: envelope_bytes("n1") + 1,
        };
        let mut transports = transports;
        paused_runtime().block_on(async {
            let started = Instant::now();
            flush(&mut transports, &buffer, &settings)
                .await
                .expect("delivered");
            // Three at once, then the fourth: two rounds, not four answers in a row.
            assert_eq!(started.elapsed(), 2 * delay);
        });
        let log = log.lock().expect("log");
        assert_eq!(log.delivered.len(), 4);
        assert!(buffer.is_empty());
    }
}
