//! A DNS flood of one million unique names: real DNS response packets, each answering a name
//! never seen before, are sent from port 53 inside a network namespace this case creates
//! (`tmh-*`, 10.244.202.0/24) out of a veth whose host side (`tmh*`, no address) the real
//! sniffer captures on. Frames carry a made-up destination MAC, so the host drops them before
//! routing: nothing leaves the namespace and the host's interfaces. The client address is a
//! pod of Deployment `flooder`; the sniffer reports to the real operator.
//!
//! Pass: every response was parsed or counted as a kernel drop, more unique names reached
//! each bound than it holds, the sniffer's tables were evicted (and counted) instead
//! of growing, the operator's DNS answer cache stayed within its capacity (evictions
//! counted), the client's internet targets stopped at their limit (refusals counted), and
//! both processes stayed alive with their resident memory under [`RSS_BOUND_BYTES`].

use std::fs::File;
use std::net::UdpSocket;
use std::os::fd::AsRawFd;
use std::process::Command;
use std::time::Duration;

use super::harness::{Setup, ip};
use super::sniffer::SnifferProcess;
use super::{Outcome, ensure, step};
use crate::cluster::unique_name;
use crate::prom::sample;
use crate::{Error, Result};

/// Unique names sent.
const NAMES: u32 = 1_000_000;
/// Sender address inside the namespace.
const SERVER_IP: &str = "10.244.202.2";
/// The client the responses are addressed to (a pod in the API, not in any namespace).
const CLIENT_IP: &str = "10.244.202.9";
/// A locally administered MAC no interface has: the host drops the frames as not its own.
const NOBODY_MAC: &str = "02:00:00:00:02:09";
/// Resident memory either process may reach during the flood.
const RSS_BOUND_BYTES: u64 = 512 * 1024 * 1024;

fn ip_cmd(args: &[&str]) -> Result<()> {
    let status = Command::new("ip")
        .args(args)
        .status()
        .map_err(|e| Error::Exited(format!("ip: {e}")))?;
    if status.success() {
        Ok(())
    } else {
        Err(Error::Exited(format!("ip {args:?}: {status}")))
    }
}

/// The namespace and its veth pair; both removed on drop.
struct FloodNet {
    netns: String,
    host_veth: String,
}

impl FloodNet {
    fn new() -> Result<Self> {
        let tag: String = unique_name("x")
            .chars()
            .filter(char::is_ascii_hexdigit)
            .collect();
        let tag = &tag[tag.len().saturating_sub(8)..];
        let net = FloodNet {
            netns: format!("tmh-flood-{tag}"),
            host_veth: format!("tmh{tag}"),
        };
        ip_cmd(&["netns", "add", &net.netns])?;
        ip_cmd(&[
            "link",
            "add",
            &net.host_veth,
            "type",
            "veth",
            "peer",
            "name",
            "tmhfpeer",
        ])?;
        ip_cmd(&["link", "set", "tmhfpeer", "netns", &net.netns])?;
        ip_cmd(&["link", "set", &net.host_veth, "up"])?;
        let n = net.netns.as_str();
        ip_cmd(&["-n", n, "link", "set", "lo", "up"])?;
        ip_cmd(&[
            "-n",
            n,
            "addr",
            "add",
            &format!("{SERVER_IP}/24"),
            "dev",
            "tmhfpeer",
        ])?;
        ip_cmd(&["-n", n, "link", "set", "tmhfpeer", "up"])?;
        ip_cmd(&[
            "-n",
            n,
            "neigh",
            "replace",
            CLIENT_IP,
            "lladdr",
            NOBODY_MAC,
            "dev",
            "tmhfpeer",
            "nud",
            "permanent",
        ])?;
        Ok(net)
    }
}

impl Drop for FloodNet {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_veth])
            .status();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.netns])
            .status();
    }
}

/// A DNS response: `n<i>.flood.example.com` A 198.18.<i / 256 % 256>.<i % 256> (the
/// benchmarking range, 64 Ki addresses, never contacted: it is only data), TTL 30.
fn response(i: u32) -> Vec<u8> {
    let mut m = Vec::with_capacity(80);
    m.extend_from_slice(&(i as u16).to_be_bytes()); // id
    m.extend_from_slice(&[0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 0]); // response, NOERROR, 1 Q, 1 A
    let label = format!("n{i}");
    for part in [label.as_str(), "flood", "example", "com"] {
        m.push(part.len() as u8);
        m.extend_from_slice(part.as_bytes());
    }
    m.push(0);
    m.extend_from_slice(&[0, 1, 0, 1]); // A, IN
    m.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 30, 0, 4]); // ptr, A, IN, TTL, len
    m.extend_from_slice(&[198, 18, (i / 256 % 256) as u8, (i % 256) as u8]);
    m
}

/// Sends the flood from port 53 inside `netns`; returns how many were sent.
fn send_flood(netns: String) -> Result<u32> {
    std::thread::spawn(move || -> Result<u32> {
        let path = format!("/run/netns/{netns}");
        let file = File::open(&path).map_err(|e| Error::Exited(format!("{path}: {e}")))?;
        // SAFETY: setns on an nsfs descriptor; affects only this thread.
        if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(Error::Exited(format!(
                "setns: {}",
                std::io::Error::last_os_error()
            )));
        }
        let socket = UdpSocket::bind((SERVER_IP, 53))
            .map_err(|e| Error::Exited(format!("bind port 53: {e}")))?;
        let mut sent = 0;
        for i in 0..NAMES {
            if socket.send_to(&response(i), (CLIENT_IP, 40_000)).is_ok() {
                sent += 1;
            }
            // Bursts of 1 000 with a breath: a flood, not a kernel ring overflow test (the
            // sniffer's table must see more than its 200 000 entries even on a busy machine).
            if i % 1_000 == 999 {
                std::thread::sleep(Duration::from_millis(4));
            }
        }
        Ok(sent)
    })
    .join()
    .map_err(|_| Error::Exited("flood thread panicked".into()))?
}

/// Resident memory of process `pid`, in bytes (0 when gone).
fn rss_bytes(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// See the module docs.
pub async fn dns_flood() -> Outcome {
    let cap = OPERATOR_DNS_ANSWERS.to_string();
    let setup = step(
        "start",
        Setup::new("flood", &["--max-dns-answers", &cap]).await,
    )?;
    let outcome = dns_flood_in(&setup).await;
    setup.cleanup().await;
    outcome
}

/// The operator's DNS answer cap in this case. Smaller than the default (200 000): the
/// operator answers a report once its edges are written, so one sniffer delivers a few
/// thousand new observations a second, and the flood must overflow the cap within the case.
const OPERATOR_DNS_ANSWERS: usize = 20_000;

async fn dns_flood_in(setup: &Setup) -> Outcome {
    step(
        "flooder",
        setup.workload("flooder", step("ip", ip(CLIENT_IP))?).await,
    )?;
    let net = step("network", FloodNet::new())?;
    let url = setup.operator.ingest_url.clone();
    let sniffer = step("sniffer", SnifferProcess::start_with(setup, &url, &[]))?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (sniffer_pid, operator_pid) = (sniffer.pid(), setup.operator.pid());

    let flood = tokio::task::spawn_blocking({
        let netns = net.netns.clone();
        move || send_flood(netns)
    });
    let mut peaks = (0u64, 0u64);
    while !flood.is_finished() {
        peaks.0 = peaks.0.max(rss_bytes(sniffer_pid));
        peaks.1 = peaks.1.max(rss_bytes(operator_pid));
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let sent = flood.await.map_err(|e| format!("flood task: {e}"))?;
    let sent = step("flood", sent)?;
    // Let reports drain and the operator resolve what it got.
    for _ in 0..40 {
        peaks.0 = peaks.0.max(rss_bytes(sniffer_pid));
        peaks.1 = peaks.1.max(rss_bytes(operator_pid));
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let mib = |b: u64| b / (1024 * 1024);
    let summary = format!(
        "sent {sent}, peak RSS sniffer {} MiB, operator {} MiB",
        mib(peaks.0),
        mib(peaks.1)
    );

    let s = sniffer.metrics().await;
    ensure(!s.is_empty(), || {
        format!("the sniffer stopped serving metrics; {summary}")
    })?;
    let answers = sample(&s, "trafficmap_sniffer_dns_answers_total");
    let evicted = sample(&s, "trafficmap_sniffer_dedup_entries_evicted_total");
    let drops = sample(&s, "trafficmap_sniffer_kernel_drops_total");
    // Every response is parsed or counted as dropped by the kernel (the ring overflows when
    // the flood outruns the sniffer: counted, never unbounded).
    ensure(answers + drops >= f64::from(sent) * 0.99, || {
        format!("{answers} answers parsed and {drops} kernel drops for {sent} sent; {summary}")
    })?;
    ensure(answers > 200_000.0, || {
        format!("only {answers} answers parsed: the bounds were not reached; {summary}")
    })?;
    ensure(evicted > 0.0, || {
        format!("no sniffer table eviction counted; {summary}")
    })?;

    let o = step("operator metrics", setup.operator.metrics().await)?;
    let held = sample(&o, "trafficmap_operator_dns_answers");
    let op_evicted = sample(&o, "trafficmap_operator_dns_answers_evicted_total");
    let refused = sample(
        &o,
        "trafficmap_operator_edges_refused_total{reason=\"internet_target_limit\"}",
    );
    ensure(held <= OPERATOR_DNS_ANSWERS as f64, || {
        format!("operator holds {held} DNS answers; {summary}")
    })?;
    ensure(op_evicted > 0.0 && refused > 0.0, || {
        format!("operator evicted {op_evicted} answers, refused {refused} targets; {summary}")
    })?;
    ensure(setup.operator.is_ready().await, || {
        format!("operator not ready; {summary}")
    })?;
    ensure(
        peaks.0 > 0 && peaks.0 <= RSS_BOUND_BYTES && peaks.1 <= RSS_BOUND_BYTES,
        || format!("memory over {} MiB; {summary}", mib(RSS_BOUND_BYTES)),
    )?;
    let internet = step("read", setup.observed("flooder").await)?
        .and_then(|o| o.status)
        .map_or(0, |s| s.internet_targets.len());
    ensure(internet <= 512, || {
        format!("{internet} internet targets stored; {summary}")
    })?;
    println!(
        "chaos: dns-flood-1m: {summary}; sniffer answers {answers}, evicted {evicted}, kernel drops {drops}; operator holds {held} answers, evicted {op_evicted}, refused {refused} targets, stored {internet}"
    );
    drop(net);
    Ok(())
}
