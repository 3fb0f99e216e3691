//! `dns_capture_max_rate`: the highest rate of DNS responses the sniffer parses with under 0.1%
//! loss, stepping the generator's rate, next to `tcpdump -w /dev/null` with the same filter on
//! the same traffic.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::Duration;

use super::dnsgen::Sent;
use super::netns::{self, CAPTURE_IP, CAPTURE_NS, GENERATOR_IP, GENERATOR_NS};
use super::{BenchError, Figure, Result, cpu_seconds, io_context, release_binary};
use crate::prom::{family_sum, sample};

/// Highest loss at which a rate still counts as captured.
pub const MAX_LOSS: f64 = 0.001;
/// Rates tried, responses per second, in order; stepping stops at the first lossy one.
pub const RATES: [u64; 10] = [
    50_000, 100_000, 150_000, 200_000, 250_000, 300_000, 400_000, 500_000, 650_000, 800_000,
];
/// How long each rate is held.
pub const STEP: Duration = Duration::from_secs(3);
/// Pause after a step so the capture drains before counting.
const DRAIN: Duration = Duration::from_millis(700);
/// The sniffer's metrics port, inside the capture namespace.
pub const SNIFFER_METRICS_PORT: u16 = 9390;
/// tcpdump's buffer, KiB: the sniffer's default ring (4 blocks of 1 MiB).
const TCPDUMP_BUFFER_KIB: &str = "4096";
/// The sniffer's kernel filter, in tcpdump's words: UDP and TCP from port 53, IPv4 and IPv6.
pub const TCPDUMP_FILTER: &str = "(udp or tcp) and src port 53";

/// One rate step: what was sent and what the capture got.
#[derive(Debug, Clone, Copy)]
pub struct Step {
    /// Rate asked of the generator.
    pub target: u64,
    /// What the generator did.
    pub sent: Sent,
    /// Responses the capture tool accounted for.
    pub captured: u64,
    /// CPU time the capture tool used over the step, seconds.
    pub cpu_seconds: f64,
}

impl Step {
    /// Rate really sent, per second.
    pub fn achieved(&self) -> f64 {
        self.sent.sent as f64 / self.sent.seconds.max(1e-9)
    }

    /// CPU time per captured response, nanoseconds (user and system time of the capturing
    /// process; the kernel's work in softirq is not in it, for either tool).
    pub fn cpu_per_response(&self) -> f64 {
        self.cpu_seconds * 1e9 / self.captured.max(1) as f64
    }

    /// Fraction of the sent responses not accounted for.
    pub fn loss(&self) -> f64 {
        if self.sent.sent == 0 {
            return 1.0;
        }
        1.0 - (self.captured.min(self.sent.sent) as f64 / self.sent.sent as f64)
    }
}

/// Runs the generator for one step in its namespace.
pub fn send(rate: u64, duration: Duration) -> Result<Sent> {
    let me = std::env::current_exe().map_err(io_context("own executable"))?;
    let out = netns::command_in(GENERATOR_NS, &me)
        .args([
            "gen-dns",
            "--interface",
            netns::GENERATOR_LINK,
            "--source",
            GENERATOR_IP,
            "--client",
            CAPTURE_IP,
            "--rate",
            &rate.to_string(),
            "--seconds",
            &duration.as_secs_f64().to_string(),
        ])
        .stdin(Stdio::null())
        .output()
        .map_err(io_context("run the DNS generator"))?;
    if !out.status.success() {
        return Err(BenchError::Failed(format!(
            "DNS generator: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    serde_json::from_slice(&out.stdout)
        .map_err(|e| BenchError::Failed(format!("DNS generator output: {e}")))
}

/// A sniffer process in the capture namespace; stopped (SIGTERM) when dropped.
pub struct SnifferProcess {
    child: Child,
    /// Its log.
    pub log: PathBuf,
}

impl SnifferProcess {
    /// Starts `trafficmap-sniffer --output jsonl` in the capture namespace with `extra` flags,
    /// its observations to /dev/null, and waits until it serves metrics.
    pub fn start(extra: &[&str], log_name: &str) -> Result<Self> {
        let binary = release_binary("trafficmap-sniffer")?;
        let log = log_path(log_name)?;
        let err = std::fs::File::create(&log).map_err(io_context("sniffer log"))?;
        let child = netns::command_in(CAPTURE_NS, &binary)
            .args([
                "--output",
                "jsonl",
                "--metrics-addr",
                &format!("127.0.0.1:{SNIFFER_METRICS_PORT}"),
            ])
            .args(extra)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(err))
            .spawn()
            .map_err(io_context("start the sniffer"))?;
        let mut sniffer = SnifferProcess { child, log };
        for _ in 0..100 {
            if sniffer.metrics().is_ok() {
                return Ok(sniffer);
            }
            if let Ok(Some(status)) = sniffer.child.try_wait() {
                return Err(BenchError::Failed(format!(
                    "sniffer exited with {status}; see {}",
                    sniffer.log.display()
                )));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(BenchError::Failed(format!(
            "sniffer serves no metrics; see {}",
            sniffer.log.display()
        )))
    }

    /// Its pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its `/metrics` text.
    pub fn metrics(&self) -> Result<String> {
        netns::http_get_in(
            CAPTURE_NS,
            &format!("http://127.0.0.1:{SNIFFER_METRICS_PORT}/metrics"),
        )
    }

    /// Stops it with SIGTERM and waits.
    pub fn stop(mut self) {
        self.terminate();
    }

    fn terminate(&mut self) {
        signal(self.child.id(), libc::SIGTERM);
        for _ in 0..100 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for SnifferProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.terminate();
        }
    }
}

fn signal(pid: u32, signal: libc::c_int) {
    if let Ok(pid) = libc::pid_t::try_from(pid) {
        // SAFETY: plain kill(2) on a child we started and have not reaped.
        unsafe {
            libc::kill(pid, signal);
        }
    }
}

/// `target/bench-logs/<name>`.
pub fn log_path(name: &str) -> Result<PathBuf> {
    let dir = crate::cluster::repo_root().join("target/bench-logs");
    std::fs::create_dir_all(&dir).map_err(io_context("bench log dir"))?;
    Ok(dir.join(name))
}

/// Responses the sniffer delivered to its output: answers parsed, less those dropped between
/// the capture and output threads.
fn sniffer_delivered(metrics: &str) -> u64 {
    let answers = sample(metrics, "trafficmap_sniffer_dns_answers_total");
    let dropped = sample(metrics, "trafficmap_sniffer_events_dropped_total");
    (answers - dropped).max(0.0) as u64
}

/// Steps the rate with the sniffer capturing (capture only, no scan), started with `flags`;
/// `label` names it in the step lines and its log.
pub fn sniffer_steps(label: &str, flags: &[&str]) -> Result<Vec<Step>> {
    let args: Vec<&str> = ["--no-scan"].iter().chain(flags).copied().collect();
    let log = format!("dns-{}.log", label.replace(' ', "-"));
    let sniffer = SnifferProcess::start(&args, &log)?;
    let mut steps = Vec::new();
    for rate in RATES {
        netns::interrupted()?;
        let before = sniffer.metrics()?;
        let cpu_before = cpu_seconds(sniffer.pid())?;
        let sent = send(rate, STEP)?;
        std::thread::sleep(DRAIN);
        let cpu = cpu_seconds(sniffer.pid())? - cpu_before;
        let after = sniffer.metrics()?;
        let captured = sniffer_delivered(&after).saturating_sub(sniffer_delivered(&before));
        let step = Step {
            target: rate,
            sent,
            captured,
            cpu_seconds: cpu,
        };
        let kernel_drops = sample(&after, "trafficmap_sniffer_kernel_drops_total")
            - sample(&before, "trafficmap_sniffer_kernel_drops_total");
        let errors = family_sum(&after, "trafficmap_sniffer_dns_parse_errors_total")
            - family_sum(&before, "trafficmap_sniffer_dns_parse_errors_total");
        eprintln!(
            "  {label:<8} target {rate:>7}/s sent {:>9.0}/s captured {captured:>9} loss {:.4}% (kernel drops {kernel_drops}, parse errors {errors}) cpu {:.0} ns/response",
            step.achieved(),
            step.loss() * 100.0,
            step.cpu_per_response(),
        );
        let lossy = step.loss() >= MAX_LOSS;
        steps.push(step);
        if lossy {
            break;
        }
    }
    sniffer.stop();
    Ok(steps)
}

/// Steps the rate with `tcpdump -w /dev/null` capturing, one tcpdump per step.
pub fn tcpdump_steps() -> Result<Vec<Step>> {
    let tcpdump = which("tcpdump")?;
    let mut steps = Vec::new();
    for rate in RATES {
        netns::interrupted()?;
        let mut child = netns::command_in(CAPTURE_NS, &tcpdump)
            .args([
                "-i",
                "any",
                "-n",
                "-B",
                TCPDUMP_BUFFER_KIB,
                "-w",
                "/dev/null",
                TCPDUMP_FILTER,
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(io_context("start tcpdump"))?;
        let mut stderr = BufReader::new(
            child
                .stderr
                .take()
                .ok_or_else(|| BenchError::Failed("tcpdump stderr".into()))?,
        );
        let mut line = String::new();
        for _ in 0..5 {
            line.clear();
            stderr
                .read_line(&mut line)
                .map_err(io_context("read tcpdump"))?;
            if line.contains("listening on") || line.is_empty() {
                break;
            }
        }
        if !line.contains("listening on") {
            let _ = child.kill();
            return Err(BenchError::Failed(format!("tcpdump: {line}")));
        }
        let cpu_before = cpu_seconds(child.id())?;
        let sent = send(rate, STEP)?;
        std::thread::sleep(DRAIN);
        let cpu = cpu_seconds(child.id())? - cpu_before;
        signal(child.id(), libc::SIGINT);
        let mut rest = String::new();
        stderr
            .read_to_string(&mut rest)
            .map_err(io_context("read tcpdump"))?;
        let _ = child.wait();
        // What the kernel handed to tcpdump's ring: matched by the filter, less dropped.
        let received = tcpdump_count(&rest, "packets received by filter")
            .ok_or_else(|| BenchError::Failed(format!("tcpdump printed no statistics: {rest}")))?;
        let dropped = tcpdump_count(&rest, "packets dropped by kernel").unwrap_or(0);
        let captured = received.saturating_sub(dropped);
        let step = Step {
            target: rate,
            sent,
            captured,
            cpu_seconds: cpu,
        };
        eprintln!(
            "  tcpdump  target {rate:>7}/s sent {:>9.0}/s captured {captured:>9} loss {:.4}% (dropped by kernel {dropped}) cpu {:.0} ns/response",
            step.achieved(),
            step.loss() * 100.0,
            step.cpu_per_response(),
        );
        let lossy = step.loss() >= MAX_LOSS;
        steps.push(step);
        if lossy {
            break;
        }
    }
    Ok(steps)
}

/// `N <what>` in tcpdump's closing statistics.
fn tcpdump_count(text: &str, what: &str) -> Option<u64> {
    text.lines()
        .find(|l| l.trim_end().ends_with(what))
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
}

fn which(program: &str) -> Result<PathBuf> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|dir| dir.join(program))
        .find(|p| Path::new(p).exists())
        .ok_or_else(|| {
            BenchError::Failed(format!(
                "{program} is not installed (apt-get install {program})"
            ))
        })
}

/// Highest rate really sent whose loss stayed under [`MAX_LOSS`]; 0 when none.
pub fn max_rate(steps: &[Step]) -> f64 {
    fastest_passing(steps).map_or(0.0, Step::achieved)
}

/// The step with the highest rate really sent whose loss stayed under [`MAX_LOSS`].
fn fastest_passing(steps: &[Step]) -> Option<&Step> {
    steps
        .iter()
        .filter(|s| s.loss() < MAX_LOSS)
        .max_by(|a, b| a.achieved().total_cmp(&b.achieved()))
}

/// Whether the generator, not the capture, ended the stepping: every step passed, or the last
/// one sent clearly less than asked.
fn generator_bound(steps: &[Step]) -> bool {
    steps
        .last()
        .is_some_and(|s| s.loss() < MAX_LOSS || s.achieved() < 0.9 * s.target as f64)
}

/// The figure from the step series: the sniffer as deployed, the sniffer without its DNS memo
/// (every response parsed), and tcpdump.
pub fn figure(ours: &[Step], memo_off: &[Step], tcpdump: &[Step]) -> Figure {
    let (ours_max, tcpdump_max) = (max_rate(ours), max_rate(tcpdump));
    let ratio = if tcpdump_max > 0.0 {
        ours_max / tcpdump_max
    } else {
        0.0
    };
    let mut note = format!(
        "filter `{TCPDUMP_FILTER}`; {}s per step; loss < {}%; the generator cycles {} distinct responses",
        STEP.as_secs(),
        MAX_LOSS * 100.0,
        super::dnsgen::DISTINCT_RESPONSES
    );
    if generator_bound(ours) {
        note.push_str("; sniffer: the generator, not the capture, set the limit");
    }
    if generator_bound(tcpdump) {
        note.push_str("; tcpdump: the generator, not the capture, set the limit");
    }
    note.push_str(&format!(
        "; without the DNS memo (--dns-memo-entries 0, every response parsed): {:.0} responses/s",
        max_rate(memo_off)
    ));
    let cpu = |steps: &[Step]| {
        fastest_passing(steps).map_or("-".into(), |s| format!("{:.0}", s.cpu_per_response()))
    };
    note.push_str(&format!(
        "; CPU ns per response at each one's highest rate: sniffer {}, without the memo {}, tcpdump {}",
        cpu(ours),
        cpu(memo_off),
        cpu(tcpdump)
    ));
    Figure::new("dns_capture_max_rate", ours_max.round(), "responses/s")
        .with_baseline("tcpdump", tcpdump_max.round(), ratio)
        .with_note(note)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tcpdump_statistics_are_read() {
        let text =
            "\n12 packets captured\n13 packets received by filter\n1 packets dropped by kernel\n";
        assert_eq!(tcpdump_count(text, "packets captured"), Some(12));
        assert_eq!(tcpdump_count(text, "packets dropped by kernel"), Some(1));
    }

    #[test]
    fn the_max_rate_is_the_fastest_step_under_the_loss_limit() {
        let step = |target, sent, captured| Step {
            target,
            sent: Sent { sent, seconds: 1.0 },
            captured,
            cpu_seconds: 0.0,
        };
        let steps = [
            step(100, 100, 100),
            step(200, 200, 199),
            step(300, 300, 250),
        ];
        assert_eq!(max_rate(&steps), 100.0);
    }
}
