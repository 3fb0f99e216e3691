//! The sniffer's figures, in one sequence sharing the capture namespace: DNS rate steps
//! (sniffer, then tcpdump), idle memory, then the 100k-socket scan and the loaded memory with
//! DNS traffic on top, then the same scan with sock_diag and the /proc baseline.

use std::time::Duration;

use super::dns::{self, SnifferProcess};
use super::netns::{self, VethPair};
use super::scan::{self, Holders};
use super::{Figure, Result, memory_kib, mib};

/// How long the sniffer runs before its idle memory is read.
const IDLE_SETTLE: Duration = Duration::from_secs(5);
/// DNS rate during the loaded measurement, responses per second (the target rate).
const LOADED_DNS_RATE: u64 = 250_000;
/// How long the DNS load lasts during the loaded measurement.
const LOADED_DNS_TIME: Duration = Duration::from_secs(5);

/// Completes `ours` (the default sniffer's scans of `holders`) with a sniffer scanning them
/// with sock_diag, and the /proc baseline. The default sniffer must have stopped: both serve
/// metrics on the same port.
fn compare_scans(holders: &Holders, ours: scan::SnifferScans) -> Result<scan::ScanComparison> {
    eprintln!("  again with --socket-source sock-diag, then the /proc baseline");
    let sniffer = SnifferProcess::start(
        &[
            "--scan-interval",
            "1s",
            "--no-capture",
            "--socket-source",
            "sock-diag",
        ],
        "scan-sock-diag.log",
    )?;
    let sock_diag = scan::sniffer_scans(&sniffer)?;
    sniffer.stop();
    let (baseline, baseline_clients) = scan::baseline(&holders.pids())?;
    Ok(scan::ScanComparison {
        ours,
        sock_diag,
        baseline,
        baseline_clients,
    })
}

fn announce_scan() {
    eprintln!(
        "socket_scan_100k: {} namespaces x {} connections",
        scan::NAMESPACES,
        scan::CONNECTIONS
    );
}

/// `socket_scan_100k` alone (`trafficmap-bench scan`).
pub fn scan_figure() -> Result<Figure> {
    let _pair = VethPair::create()?;
    announce_scan();
    let holders = Holders::start()?;
    let sniffer = SnifferProcess::start(
        &["--scan-interval", "1s", "--no-capture"],
        "scan-sniffer.log",
    )?;
    let ours = scan::sniffer_scans(&sniffer)?;
    sniffer.stop();
    Ok(scan::figure(compare_scans(&holders, ours)?))
}

/// `dns_capture_max_rate`: the rate steps with the sniffer, then with tcpdump. Needs the veth
/// pair between the generator and capture namespaces.
fn capture_steps() -> Result<Figure> {
    eprintln!(
        "dns_capture_max_rate: stepping {:?} responses/s",
        dns::RATES
    );
    let ours = dns::sniffer_steps("sniffer", &[])?;
    let memo_off = dns::sniffer_steps("no memo", &["--dns-memo-entries", "0"])?;
    let theirs = dns::tcpdump_steps()?;
    Ok(dns::figure(&ours, &memo_off, &theirs))
}

/// `dns_capture_max_rate` alone (`trafficmap-bench capture`).
pub fn capture_figure() -> Result<Figure> {
    let _pair = VethPair::create()?;
    capture_steps()
}

/// Runs the sniffer's measurements and returns their figures.
pub fn sniffer_figures() -> Result<Vec<Figure>> {
    let _pair = VethPair::create()?;
    let mut figures = vec![capture_steps()?];

    netns::interrupted()?;
    let sniffer = SnifferProcess::start(&["--scan-interval", "1s"], "scan-sniffer.log")?;
    std::thread::sleep(IDLE_SETTLE);
    let (idle_rss, _) = memory_kib(sniffer.pid())?;
    figures.push(
        Figure::new("sniffer_rss_idle", mib(idle_rss), "MiB").with_note(
            "VmRSS after 5 s with capture and scan on, no traffic, the machine's own namespaces",
        ),
    );

    announce_scan();
    let holders = Holders::start()?;
    let ours = scan::sniffer_scans(&sniffer)?;

    netns::interrupted()?;
    let sent = dns::send(LOADED_DNS_RATE, LOADED_DNS_TIME)?;
    // One more scan after the load, so the high-water mark covers both.
    std::thread::sleep(Duration::from_millis(1500));
    let (_, loaded_hwm) = memory_kib(sniffer.pid())?;
    let loaded = Figure::new("sniffer_rss_loaded", mib(loaded_hwm), "MiB").with_note(format!(
        "VmHWM over the 100k-socket scans plus {:.0} DNS responses/s for {} s",
        sent.sent as f64 / sent.seconds.max(1e-9),
        LOADED_DNS_TIME.as_secs()
    ));
    sniffer.stop();
    figures.push(scan::figure(compare_scans(&holders, ours)?));
    figures.push(loaded);
    Ok(figures)
}
