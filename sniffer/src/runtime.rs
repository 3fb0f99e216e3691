//! Process wiring: capture and scan threads feed the output loop, which dedups and hands
//! observations on (stdout lines, or the report buffer). An "io" thread runs the admin server
//! and the reporter on a single-threaded tokio runtime.

use std::io::{self, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use thiserror::Error;
use tokio::sync::watch;
use trafficmap_api::report::Observation;

use crate::admin::{self, AdminState};
use crate::aggregate::{Aggregator, ENTRY_RETENTION_MS};
use crate::capture::{self, CaptureError};
use crate::config::Args;
use crate::counters::Counters;
use crate::events::{self, DnsEvent, Event};
use crate::health::{Liveness, ThreadState};
use crate::output::JsonlWriter;
use crate::report::client::{self, ClientError, HttpsTransport};
use crate::report::{self, ReportSettings, SharedBuffer};
use crate::scan::{self, ScanError};
use crate::{metrics, now_ms};

/// Longest the output loop sleeps before checking deadline, signals and threads.
const WAKE_INTERVAL: Duration = Duration::from_millis(250);
/// DNS events held back until the first scan names the pods; past this they go out unnamed.
const MAX_PENDING_DNS_EVENTS: usize = 10_000;
/// Events handled in a row before the output loop checks for a stop and publishes liveness.
const EVENT_BURST: usize = 1024;
/// Shortest report interval accepted.
const MIN_REPORT_INTERVAL: Duration = Duration::from_millis(10);

/// Set by SIGTERM and SIGINT.
static STOP_REQUESTED: AtomicBool = AtomicBool::new(false);

/// Why the sniffer stopped with an error.
#[derive(Debug, Error)]
pub enum RuntimeError {
    /// Capture failed.
    #[error(transparent)]
    Capture(#[from] CaptureError),
    /// The scan failed.
    #[error(transparent)]
    Scan(#[from] ScanError),
    /// Observations could not be written.
    #[error("cannot write observations: {0}")]
    Output(#[from] io::Error),
    /// A worker thread panicked.
    #[error("the {0} thread panicked")]
    Panicked(&'static str),
    /// The report client could not be set up (operator URL, CA file).
    #[error(transparent)]
    Report(#[from] ClientError),
    /// The admin server could not listen.
    #[error("cannot serve health and metrics on {addr}: {source}")]
    Admin {
        /// The address asked for.
        addr: SocketAddr,
        /// The OS error.
        source: io::Error,
    },
    /// The io thread or its runtime could not start.
    #[error("cannot start the io thread: {0}")]
    IoThread(io::Error),
}

extern "C" fn request_stop(_signal: libc::c_int) {
    STOP_REQUESTED.store(true, Ordering::Relaxed);
}

/// Makes SIGTERM and SIGINT end the run cleanly (final flush, counters logged, threads joined).
fn install_signal_handlers() {
    let handler = request_stop as extern "C" fn(libc::c_int);
    for signal in [libc::SIGTERM, libc::SIGINT] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe {
            libc::signal(signal, handler as libc::sighandler_t);
        }
    }
}

/// The running capture and scan threads.
struct Workers {
    stop: Arc<AtomicBool>,
    capture: Option<JoinHandle<Result<(), CaptureError>>>,
    scan: Option<JoinHandle<Result<(), ScanError>>>,
}

impl Workers {
    /// Starts the threads the flags ask for.
    fn start(
        args: &Args,
        counters: &Arc<Counters>,
        sender: events::EventSender,
    ) -> Result<Self, RuntimeError> {
        let stop = Arc::new(AtomicBool::new(false));
        let mut workers = Workers {
            stop: Arc::clone(&stop),
            capture: None,
            scan: None,
        };
        if !args.no_capture {
            workers.capture = Some(capture::spawn(
                args.ring_geometry(),
                args.dns_memo_entries,
                Arc::clone(counters),
                sender.clone(),
                Arc::clone(&stop),
            )?);
        }
        if !args.no_scan {
            match scan::spawn(args.scan_config(), Arc::clone(counters), sender, stop) {
                Ok(handle) => workers.scan = Some(handle),
                Err(err) => {
                    let _ = workers.stop();
                    return Err(err.into());
                }
            }
        }
        Ok(workers)
    }

    fn any_finished(&self) -> bool {
        self.capture.as_ref().is_some_and(JoinHandle::is_finished)
            || self.scan.as_ref().is_some_and(JoinHandle::is_finished)
    }

    /// Records in `liveness` which threads run.
    fn publish(&self, liveness: &Liveness) {
        fn state<T>(handle: Option<&JoinHandle<T>>) -> ThreadState {
            match handle {
                None => ThreadState::Off,
                Some(h) if h.is_finished() => ThreadState::Ended,
                Some(_) => ThreadState::Running,
            }
        }
        liveness.set_capture(state(self.capture.as_ref()));
        liveness.set_scan(state(self.scan.as_ref()));
    }

    /// Stops both threads and returns the first error either ended with.
    fn stop(mut self) -> Result<(), RuntimeError> {
        self.stop.store(true, Ordering::Relaxed);
        let capture = match self.capture.take().map(JoinHandle::join) {
            Some(Ok(result)) => result.map_err(RuntimeError::from),
            Some(Err(_)) => Err(RuntimeError::Panicked("capture")),
            None => Ok(()),
        };
        let scan = match self.scan.take().map(JoinHandle::join) {
            Some(Ok(result)) => result.map_err(RuntimeError::from),
            Some(Err(_)) => Err(RuntimeError::Panicked("scan")),
            None => Ok(()),
        };
        capture.and(scan)
    }
}

/// The reporter's parts, before it starts.
struct Reporter {
    transports: Vec<HttpsTransport>,
    buffer: SharedBuffer,
    settings: ReportSettings,
}

/// The io thread: admin server and reporter, stopped together.
struct IoThread {
    shutdown: watch::Sender<bool>,
    handle: JoinHandle<()>,
}

impl IoThread {
    fn spawn(
        admin: Option<(std::net::TcpListener, Arc<AdminState>)>,
        reporter: Option<Reporter>,
    ) -> Result<Self, RuntimeError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(RuntimeError::IoThread)?;
        let (shutdown, stop) = watch::channel(false);
        let handle = std::thread::Builder::new()
            .name("io".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let admin_task = admin.map(|(listener, state)| {
                        let stop = stop.clone();
                        tokio::spawn(async move {
                            match tokio::net::TcpListener::from_std(listener) {
                                Ok(listener) => admin::serve(listener, state, stop).await,
                                Err(err) => tracing::error!(%err, "admin server cannot start"),
                            }
                        })
                    });
                    let mut stop = stop;
                    match reporter {
                        Some(r) => report::run(r.transports, r.buffer, r.settings, stop).await,
                        None => {
                            let _ = stop.wait_for(|stop| *stop).await;
                        }
                    }
                    if let Some(task) = admin_task {
                        let _ = task.await;
                    }
                });
            })
            .map_err(RuntimeError::IoThread)?;
        Ok(IoThread { shutdown, handle })
    }

    /// Stops the admin server and the reporter (after its final flush) and waits for them.
    fn stop(self) -> Result<(), RuntimeError> {
        let _ = self.shutdown.send(true);
        self.handle.join().map_err(|_| RuntimeError::Panicked("io"))
    }
}

/// Binds the admin server's socket now, so a bad address fails the start.
fn bind_admin(
    addr: SocketAddr,
    counters: &Arc<Counters>,
    liveness: &Arc<Liveness>,
) -> Result<(std::net::TcpListener, Arc<AdminState>), RuntimeError> {
    let admin_error = |source| RuntimeError::Admin { addr, source };
    let listener = std::net::TcpListener::bind(addr).map_err(admin_error)?;
    listener.set_nonblocking(true).map_err(admin_error)?;
    let bound = listener.local_addr().map_err(admin_error)?;
    tracing::info!(addr = %bound, "serving /healthz, /readyz and /metrics");
    let state = AdminState {
        registry: metrics::registry(Arc::clone(counters)),
        counters: Arc::clone(counters),
        liveness: Arc::clone(liveness),
    };
    Ok((listener, Arc::new(state)))
}

/// Runs capture, scan, the admin server and the reporter as configured, feeding `sink` until
/// `--duration` passes, a signal arrives, or a thread fails; then stops everything in order.
fn run_with(
    args: &Args,
    counters: Arc<Counters>,
    aggregator: Aggregator,
    reporter: Option<Reporter>,
    sink: &mut dyn FnMut(Vec<Observation>) -> io::Result<()>,
) -> Result<(), RuntimeError> {
    install_signal_handlers();
    let scan_interval_ms = u64::try_from(args.scan_interval.as_millis()).unwrap_or(u64::MAX);
    let liveness = Arc::new(Liveness::new(now_ms(), scan_interval_ms));
    let admin = match args.admin_addr() {
        Some(addr) => Some(bind_admin(addr, &counters, &liveness)?),
        None => None,
    };
    let io = match (admin, reporter) {
        (None, None) => None,
        (admin, reporter) => Some(IoThread::spawn(admin, reporter)?),
    };
    let (sender, receiver) = events::channel();
    let workers = match Workers::start(args, &counters, sender) {
        Ok(workers) => workers,
        Err(err) => {
            if let Some(io) = io {
                let _ = io.stop();
            }
            return Err(err);
        }
    };
    workers.publish(&liveness);
    tracing::info!(node = ?args.node_name, capture = !args.no_capture, scan = !args.no_scan, output = ?args.output, "sniffer started");

    let deadline = args.duration.map(|d| Instant::now() + d);
    let looped = output_loop(
        &receiver,
        &workers,
        &liveness,
        deadline,
        !args.no_scan,
        &counters,
        aggregator,
        sink,
    );
    // A scan thread blocked on a full queue sees the receiver gone and ends.
    drop(receiver);
    let stopped = workers.stop();
    let io_stopped = io.map_or(Ok(()), IoThread::stop);
    match serde_json::to_string(&counters.snapshot()) {
        Ok(json) => tracing::info!("final counters {json}"),
        Err(err) => tracing::warn!(%err, "cannot serialise counters"),
    }
    looped.and(stopped).and(io_stopped)
}

/// `--output jsonl`: prints observations to `out`.
pub fn run_jsonl(args: &Args, out: impl Write) -> Result<(), RuntimeError> {
    let counters = Arc::new(Counters::default());
    let mut writer = JsonlWriter::new(out);
    let mut sink = |observations: Vec<Observation>| -> io::Result<()> {
        observations.iter().try_for_each(|o| writer.write(o))
    };
    run_with(args, counters, Aggregator::default(), None, &mut sink)
}

/// `--output report`: sends observations to the operator.
pub fn run_report(args: &Args) -> Result<(), RuntimeError> {
    let uri = client::ingest_uri(&args.operator_url)?;
    let roots = client::load_ca(&args.ca_file)?;
    let transports = (0..args.report_concurrency.max(1))
        .map(|_| {
            HttpsTransport::new(
                uri.clone(),
                roots.clone(),
                args.token_file.clone(),
                args.request_timeout,
            )
        })
        .collect::<Result<Vec<_>, _>>()?;
    let node = node_name(args);
    tracing::info!(%uri, node, ca = %args.ca_file.display(), "reporting to the operator");
    let counters = Arc::new(Counters::default());
    let buffer = SharedBuffer::new(args.buffer_bytes, Arc::clone(&counters));
    let reporter = Reporter {
        transports,
        buffer: buffer.clone(),
        settings: ReportSettings {
            node,
            interval: args.report_interval.max(MIN_REPORT_INTERVAL),
            max_body_bytes: args.max_body_bytes,
        },
    };
    let mut sink = |observations: Vec<Observation>| -> io::Result<()> {
        buffer.push_all(observations);
        Ok(())
    };
    let aggregator = Aggregator::with_refresh(args.refresh_interval);
    run_with(args, counters, aggregator, Some(reporter), &mut sink)
}

/// `--node-name`, else the host name (a hostNetwork pod's host name is its node's).
fn node_name(args: &Args) -> String {
    if let Some(name) = args.node_name.as_deref().filter(|n| !n.is_empty()) {
        return name.to_owned();
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_default();
    tracing::warn!(
        host,
        "NODE_NAME is not set (use the downward API, spec.nodeName): using the host name"
    );
    host
}

#[allow(clippy::too_many_arguments)]
fn output_loop(
    receiver: &Receiver<Event>,
    workers: &Workers,
    liveness: &Liveness,
    deadline: Option<Instant>,
    scanning: bool,
    counters: &Counters,
    mut aggregator: Aggregator,
    sink: &mut dyn FnMut(Vec<Observation>) -> io::Result<()>,
) -> Result<(), RuntimeError> {
    let mut waiting_for_scan = scanning;
    let mut pending: Vec<DnsEvent> = Vec::new();
    let mut emit = |observations: Vec<Observation>| -> io::Result<()> {
        if observations.is_empty() {
            return Ok(());
        }
        Counters::add(&counters.observations_emitted, observations.len() as u64);
        sink(observations)
    };
    loop {
        let now = Instant::now();
        workers.publish(liveness);
        if deadline.is_some_and(|d| now >= d)
            || STOP_REQUESTED.load(Ordering::Relaxed)
            || workers.any_finished()
        {
            return Ok(());
        }
        let timeout = deadline.map_or(WAKE_INTERVAL, |d| {
            d.saturating_duration_since(now).min(WAKE_INTERVAL)
        });
        Counters::set(&counters.dedup_evicted, aggregator.evicted());
        let first = match receiver.recv_timeout(timeout) {
            Ok(event) => event,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => {
                if !workers.any_finished() {
                    tracing::warn!("nothing to do: both capture and scan are off");
                }
                return Ok(());
            }
        };
        // What queued meanwhile is taken without reading the clock per event; the checks
        // above run again after at most `EVENT_BURST` events.
        for event in std::iter::once(first).chain(receiver.try_iter().take(EVENT_BURST)) {
            match event {
                Event::Dns(event) => {
                    if waiting_for_scan && pending.len() < MAX_PENDING_DNS_EVENTS {
                        pending.push(event);
                    } else {
                        emit(aggregator.dns(&event, counters))?;
                    }
                }
                Event::Scan(report) => {
                    aggregator.set_pod_ips(report.pod_ips);
                    aggregator.set_pod_links(report.pod_links);
                    let seen: Vec<Observation> = report
                        .connections
                        .iter()
                        .filter_map(|c| aggregator.connection(c, report.seen_ms))
                        .collect();
                    emit(seen)?;
                    if waiting_for_scan {
                        waiting_for_scan = false;
                        tracing::info!(
                            connections = report.connections.len(),
                            "first socket scan done"
                        );
                        for event in pending.drain(..) {
                            emit(aggregator.dns(&event, counters))?;
                        }
                    }
                    aggregator.forget_older_than(report.seen_ms.saturating_sub(ENTRY_RETENTION_MS));
                }
            }
        }
    }
}
