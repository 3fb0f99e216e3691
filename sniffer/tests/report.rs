//! Report mode against a real HTTPS server on loopback (as root): the sniffer scans a network
//! namespace this test creates, where it holds connected UDP sockets to an address inside that
//! namespace (no packet is sent), and must report them with the bearer token of the moment, ride out an
//! outage with a growing backoff, refuse a server its CA did not sign, flush on SIGTERM, and
//! serve /healthz, /readyz and /metrics.

mod operator;
mod support;

use std::fs;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use operator::{CallerNetns, IngestServer, Recorded, Sniffer, TestPki, temp_dir};
use trafficmap_api::report::{INGEST_PATH, REPORT_VERSION};
use trafficmap_sniffer::report::backoff::BACKOFF_MAX;

/// Longest wait for something the sniffer should do within a few report intervals.
const PATIENCE: Duration = Duration::from_secs(20);
/// How long the test operator answers 503.
const OUTAGE: Duration = Duration::from_secs(7);
/// Allowance for scheduling and request time on top of a backoff ceiling.
const GAP_SLACK: Duration = Duration::from_millis(500);

/// A directory with the CA of `pki` and a token file.
fn credentials(name: &str, pki: &TestPki, token: &str) -> PathBuf {
    let dir = temp_dir(name);
    fs::write(dir.join("ca.crt"), &pki.ca_pem).expect("write CA");
    fs::write(dir.join("token"), token).expect("write token");
    dir
}

fn delivered(port: u16) -> impl Fn(&Recorded) -> bool {
    move |r| r.status == 200 && r.has_port(port)
}

#[test]
fn reports_carry_the_current_token_and_survive_an_outage() {
    let net = CallerNetns::new();
    let pki = TestPki::new("main");
    let dir = credentials("main", &pki, "first-token");
    let server = IngestServer::start(&pki, 200);
    let _before_start = net.connected_udp(1111);
    let mut sniffer = Sniffer::start(&server.url(), &dir, &["--report-interval", "200ms"]);

    // Batches arrive as JSON reports with the bearer token.
    server.wait_for("port 1111 delivered", PATIENCE, delivered(1111));
    for request in server.requests() {
        assert_eq!(request.method, "POST");
        assert_eq!(request.path, INGEST_PATH);
        assert_eq!(request.authorization.as_deref(), Some("Bearer first-token"));
        assert_eq!(request.content_type.as_deref(), Some("application/json"));
        let report = request.report.as_ref().expect("a valid report body");
        assert_eq!(
            (report.version, report.node.as_str()),
            (REPORT_VERSION, "test-node")
        );
    }

    // A rotated token is used from then on.
    fs::write(dir.join("token"), "second-token-after-rotation").expect("rotate token");
    let _after_rotation = net.connected_udp(2222);
    server.wait_for("port 2222 delivered", PATIENCE, delivered(2222));
    let requests = server.requests();
    let first_with_2222 = requests
        .iter()
        .position(|r| r.has_port(2222))
        .expect("seen");
    for request in &requests[first_with_2222..] {
        assert_eq!(
            request.authorization.as_deref(),
            Some("Bearer second-token-after-rotation")
        );
    }

    // While the operator answers 503 the sniffer backs off, then delivers what it kept.
    server.set_status(503);
    let outage_start = Instant::now();
    let _during_outage = net.connected_udp(3333);
    std::thread::sleep(OUTAGE);
    server.set_status(200);
    // The last refused attempt may have set a wait of up to the backoff's cap (30 s).
    server.wait_for(
        "port 3333 delivered after the outage",
        BACKOFF_MAX + PATIENCE,
        delivered(3333),
    );
    let refused: Vec<Instant> = server
        .requests()
        .iter()
        .filter(|r| r.status == 503 && r.at >= outage_start)
        .map(|r| r.at)
        .collect();
    assert!(
        server
            .requests()
            .iter()
            .any(|r| r.status == 503 && r.has_port(3333)),
        "port 3333 was first offered during the outage"
    );
    assert!(refused.len() >= 4, "too few retries: {}", refused.len());
    let gaps: Vec<Duration> = refused.windows(2).map(|w| w[1] - w[0]).collect();
    for (i, gap) in gaps.iter().enumerate() {
        // Full jitter: the i-th wait is at most 200 ms * 2^i.
        let ceiling = Duration::from_millis(200 << i.min(8)) + GAP_SLACK;
        assert!(*gap <= ceiling, "gap {i} of {gaps:?} exceeds {ceiling:?}");
    }
    let longest = gaps.iter().max().copied().unwrap_or_default();
    assert!(
        longest >= Duration::from_millis(400),
        "the gaps do not grow past the report interval: {gaps:?}"
    );

    // Health and metrics.
    assert_eq!(sniffer.get("/healthz"), (200, "ok\n".to_owned()));
    assert_eq!(sniffer.get("/readyz").0, 200);
    let failures = sniffer
        .metric("trafficmap_sniffer_report_failures_total{reason=\"server_error\"}")
        .expect("failures by reason");
    assert!(failures >= refused.len() as f64, "{failures}");
    let sent = sniffer
        .metric("trafficmap_sniffer_reports_sent_total")
        .expect("reports sent");
    assert!(sent >= 3.0, "{sent}");
    for series in [
        "trafficmap_sniffer_packets_total",
        "trafficmap_sniffer_dns_answers_total",
        "trafficmap_sniffer_dns_parse_errors_total{kind=\"malformed\"}",
        "trafficmap_sniffer_kernel_drops_total",
        "trafficmap_sniffer_namespaces_scanned_total",
        "trafficmap_sniffer_sockets_scanned_total",
        "trafficmap_sniffer_scan_duration_seconds_total",
        "trafficmap_sniffer_last_scan_duration_seconds",
        "trafficmap_sniffer_buffer_bytes",
        "trafficmap_sniffer_buffer_dropped_observations_total",
        "trafficmap_sniffer_observations_emitted_total",
        "trafficmap_sniffer_observations_reported_total",
    ] {
        assert!(sniffer.metric(series).is_some(), "/metrics lacks {series}");
    }
    let scanned = sniffer
        .metric("trafficmap_sniffer_namespaces_scanned_total")
        .unwrap_or_default();
    assert!(scanned >= 1.0);

    let status = sniffer.terminate(Duration::from_secs(5));
    assert!(status.success(), "{status:?}\n{}", sniffer.stderr());
    let _ = fs::remove_dir_all(dir);
}

#[test]
fn a_server_certificate_from_another_ca_is_refused() {
    let net = CallerNetns::new();
    let server_pki = TestPki::new("server");
    let other_pki = TestPki::new("other");
    let dir = credentials("wrong-ca", &other_pki, "token");
    let server = IngestServer::start(&server_pki, 200);
    let _call = net.connected_udp(5555);
    let mut sniffer = Sniffer::start(&server.url(), &dir, &["--report-interval", "200ms"]);

    let deadline = Instant::now() + PATIENCE;
    let tls_failures = loop {
        let failures = sniffer
            .metric("trafficmap_sniffer_report_failures_total{reason=\"tls\"}")
            .unwrap_or_default();
        if failures >= 2.0 || Instant::now() > deadline {
            break failures;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        tls_failures >= 2.0,
        "TLS failures not counted: {tls_failures}\n{}",
        sniffer.stderr()
    );
    assert!(server.tls_failures() >= 1, "the sniffer never tried");
    assert!(
        server.requests().is_empty(),
        "a request went through: {:#?}",
        server.requests()
    );
    assert_eq!(
        sniffer.metric("trafficmap_sniffer_reports_sent_total"),
        Some(0.0)
    );
    // An unreachable operator does not make the node agent unhealthy.
    assert_eq!(sniffer.get("/healthz").0, 200);
    let status = sniffer.terminate(Duration::from_secs(5));
    assert!(status.success(), "{status:?}");
    let _ = fs::remove_dir_all(dir);
}

#[test]
fn sigterm_flushes_what_is_buffered_before_exiting() {
    let net = CallerNetns::new();
    let pki = TestPki::new("flush");
    let dir = credentials("flush", &pki, "token");
    let server = IngestServer::start(&pki, 200);
    let _call = net.connected_udp(4444);
    // Reports would only go out after an hour: only the final flush can deliver.
    let mut sniffer = Sniffer::start(&server.url(), &dir, &["--report-interval", "1h"]);
    let deadline = Instant::now() + PATIENCE;
    while sniffer
        .metric("trafficmap_sniffer_scans_total")
        .unwrap_or_default()
        < 2.0
    {
        assert!(Instant::now() < deadline, "no scans:\n{}", sniffer.stderr());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(server.requests().is_empty());
    let stopping = Instant::now();
    let status = sniffer.terminate(Duration::from_secs(5));
    assert!(status.success(), "{status:?}\n{}", sniffer.stderr());
    assert!(stopping.elapsed() < Duration::from_secs(4));
    let requests = server.requests();
    assert!(
        requests.iter().any(delivered(4444)),
        "the final flush did not deliver port 4444: {requests:#?}\n{}",
        sniffer.stderr()
    );
    let _ = fs::remove_dir_all(dir);
}
