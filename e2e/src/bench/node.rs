//! The sniffer's figures, in one sequence sharing the capture namespace: DNS rate steps
//! (sniffer, then tcpdump), idle memory, then the 100k-socket scan (sniffer, then the /proc
//! baseline) and the loaded memory with DNS traffic on top.

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

/// The sniffer's scans and the baseline over freshly started holders.
fn compare_scans(sniffer: &SnifferProcess, own_tables: bool) -> Result<scan::ScanComparison> {
    let holders = Holders::start(own_tables)?;
    let ours = scan::sniffer_scans(sniffer)?;
    let (baseline, baseline_clients) = scan::baseline(&holders.pids())?;
    Ok(scan::ScanComparison {
        ours,
        baseline,
        baseline_clients,
    })
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

    eprintln!(
        "socket_scan_100k: {} namespaces x {} connections",
        scan::NAMESPACES,
        scan::CONNECTIONS
    );
    let default = compare_scans(&sniffer, false)?;
    eprintln!("  again with a TCP hash table per namespace");
    let (own_tables, holders) = {
        let holders = Holders::start(true)?;
        let ours = scan::sniffer_scans(&sniffer)?;
        let (baseline, baseline_clients) = scan::baseline(&holders.pids())?;
        let comparison = scan::ScanComparison {
            ours,
            baseline,
            baseline_clients,
        };
        (comparison, holders)
    };
    figures.push(scan::figure(default, Some(own_tables)));

    netns::interrupted()?;
    let sent = dns::send(LOADED_DNS_RATE, LOADED_DNS_TIME)?;
    // One more scan after the load, so the high-water mark covers both.
    std::thread::sleep(Duration::from_millis(1500));
    let (_, loaded_hwm) = memory_kib(sniffer.pid())?;
    figures.push(
        Figure::new("sniffer_rss_loaded", mib(loaded_hwm), "MiB").with_note(format!(
            "VmHWM over the 100k-socket scans plus {:.0} DNS responses/s for {} s",
            sent.sent as f64 / sent.seconds.max(1e-9),
            LOADED_DNS_TIME.as_secs()
        )),
    );
    sniffer.stop();
    drop(holders);
    Ok(figures)
}
