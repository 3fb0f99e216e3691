//! `socket_scan_100k`: 100 network namespaces with 1000 established TCP connections each,
//! scanned by the sniffer (its BPF iterator, and sock_diag for comparison), next to reading
//! `/proc/<pid>/net/tcp` and `tcp6` for one process per namespace and parsing them, as
//! Otterize's sniffer does.

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::dns::SnifferProcess;
use super::{BenchError, Figure, Result, io_context};
use crate::prom::sample;

/// Namespaces in the scan.
pub const NAMESPACES: usize = 100;
/// Established connections per namespace.
pub const CONNECTIONS: usize = 1000;
/// Baseline passes averaged.
const BASELINE_PASSES: usize = 2;
/// Sniffer scans averaged.
pub const SCANS: u64 = 3;
/// The holder processes; told to exit (stdin closed) and reaped when dropped.
pub struct Holders {
    children: Vec<Child>,
}

impl Holders {
    /// Starts [`NAMESPACES`] holders and waits until each holds its connections. Their
    /// namespaces keep the kernel's defaults: they share the host's TCP hash table.
    pub fn start() -> Result<Self> {
        let me = std::env::current_exe().map_err(io_context("own executable"))?;
        let mut holders = Holders {
            children: Vec::with_capacity(NAMESPACES),
        };
        for _ in 0..NAMESPACES {
            let child = Command::new(&me)
                .args(["hold-sockets", "--connections", &CONNECTIONS.to_string()])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .map_err(io_context("start a socket holder"))?;
            holders.children.push(child);
        }
        for child in &mut holders.children {
            let stdout = child
                .stdout
                .take()
                .ok_or_else(|| BenchError::Failed("holder stdout".into()))?;
            let mut line = String::new();
            BufReader::new(stdout)
                .read_line(&mut line)
                .map_err(io_context("read a holder"))?;
            if line.trim() != "ready" {
                return Err(BenchError::Failed(
                    "a socket holder failed (see above)".into(),
                ));
            }
        }
        Ok(holders)
    }

    /// Their pids: one process per namespace.
    pub fn pids(&self) -> Vec<u32> {
        self.children.iter().map(Child::id).collect()
    }
}

impl Drop for Holders {
    fn drop(&mut self) {
        for child in &mut self.children {
            drop(child.stdin.take());
        }
        for child in &mut self.children {
            let _ = child.wait();
        }
    }
}

/// A TCP socket line of /proc/net/tcp{,6}.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcSocket {
    /// Local address.
    pub local: SocketAddr,
    /// Remote address.
    pub remote: SocketAddr,
    /// Kernel state (`01` established, `0A` listen).
    pub state: u8,
}

/// Parses `0100007F:1F90` (IPv4) or the 32-hex-digit IPv6 form, as the kernel prints them
/// (each 32-bit word in host byte order).
fn parse_proc_addr(text: &str) -> Option<SocketAddr> {
    let (addr, port) = text.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let ip = match addr.len() {
        8 => IpAddr::V4(Ipv4Addr::from(
            u32::from_str_radix(addr, 16).ok()?.to_ne_bytes(),
        )),
        32 => {
            let mut bytes = [0u8; 16];
            for (i, chunk) in bytes.chunks_mut(4).enumerate() {
                let word = u32::from_str_radix(addr.get(i * 8..i * 8 + 8)?, 16).ok()?;
                chunk.copy_from_slice(&word.to_ne_bytes());
            }
            IpAddr::V6(Ipv6Addr::from(bytes))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// The sockets of one /proc/net/tcp{,6} text.
pub fn parse_proc_net_tcp(text: &str) -> Vec<ProcSocket> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let mut fields = line.split_whitespace().skip(1);
            let local = parse_proc_addr(fields.next()?)?;
            let remote = parse_proc_addr(fields.next()?)?;
            let state = u8::from_str_radix(fields.next()?, 16).ok()?;
            Some(ProcSocket {
                local,
                remote,
                state,
            })
        })
        .collect()
}

const TCP_ESTABLISHED: u8 = 0x01;
const TCP_LISTEN: u8 = 0x0a;

/// The baseline's pass: per process, read and parse tcp and tcp6, and keep the established
/// sockets whose local port is not listening (the client side). Returns how many.
pub fn proc_scan(pids: &[u32]) -> Result<usize> {
    let mut clients = 0;
    for pid in pids {
        let mut sockets = Vec::new();
        for file in ["tcp", "tcp6"] {
            let path = format!("/proc/{pid}/net/{file}");
            let text = std::fs::read_to_string(&path).map_err(io_context(path))?;
            sockets.extend(parse_proc_net_tcp(&text));
        }
        let listening: HashSet<u16> = sockets
            .iter()
            .filter(|s| s.state == TCP_LISTEN)
            .map(|s| s.local.port())
            .collect();
        clients += sockets
            .iter()
            .filter(|s| s.state == TCP_ESTABLISHED && !listening.contains(&s.local.port()))
            .count();
    }
    Ok(clients)
}

/// Mean time of the baseline's pass over `pids`, and the client sockets it found.
pub fn baseline(pids: &[u32]) -> Result<(Duration, usize)> {
    let mut total = Duration::ZERO;
    let mut found = 0;
    for _ in 0..BASELINE_PASSES {
        let started = Instant::now();
        found = proc_scan(pids)?;
        total += started.elapsed();
    }
    Ok((total / BASELINE_PASSES as u32, found))
}

/// What the sniffer's scans took, from its metrics.
#[derive(Debug, Clone, Copy)]
pub struct SnifferScans {
    /// Mean duration of one full scan.
    pub mean: Duration,
    /// Namespaces per scan.
    pub namespaces: f64,
    /// Sockets per scan.
    pub sockets: f64,
    /// Share of the scans that read sockets with the BPF iterator.
    pub bpf_share: f64,
}

/// Waits for [`SCANS`] complete scans after the holders are ready and averages them.
pub fn sniffer_scans(sniffer: &SnifferProcess) -> Result<SnifferScans> {
    let scans = |m: &str| sample(m, "trafficmap_sniffer_scans_total");
    // The scan that was running when the holders became ready may have missed some.
    let mut before = sniffer.metrics()?;
    let first = scans(&before);
    while scans(&before) < first + 1.0 {
        super::netns::interrupted()?;
        std::thread::sleep(Duration::from_millis(100));
        before = sniffer.metrics()?;
    }
    let mut after = before.clone();
    while scans(&after) < scans(&before) + SCANS as f64 {
        super::netns::interrupted()?;
        std::thread::sleep(Duration::from_millis(200));
        after = sniffer.metrics()?;
    }
    let delta = |name: &str| sample(&after, name) - sample(&before, name);
    let count = delta("trafficmap_sniffer_scans_total");
    Ok(SnifferScans {
        mean: Duration::from_secs_f64(
            delta("trafficmap_sniffer_scan_duration_seconds_total") / count,
        ),
        namespaces: delta("trafficmap_sniffer_namespaces_scanned_total") / count,
        sockets: delta("trafficmap_sniffer_sockets_scanned_total") / count,
        bpf_share: delta("trafficmap_sniffer_bpf_scans_total") / count,
    })
}

/// The scans of one set of holders.
#[derive(Debug, Clone, Copy)]
pub struct ScanComparison {
    /// The sniffer's scans with its default source (the BPF iterator).
    pub ours: SnifferScans,
    /// The sniffer's scans with `--socket-source sock-diag`.
    pub sock_diag: SnifferScans,
    /// The baseline's mean pass.
    pub baseline: Duration,
    /// Client sockets the baseline found.
    pub baseline_clients: usize,
}

/// The figure: the sniffer's default scans against the baseline, sock_diag in the note.
pub fn figure(scans: ScanComparison) -> Figure {
    let millis = |d: Duration| d.as_secs_f64() * 1e3;
    let (ours_ms, baseline_ms) = (millis(scans.ours.mean), millis(scans.baseline));
    let sock_diag_ms = millis(scans.sock_diag.mean);
    let note = format!(
        "kernel defaults (one TCP hash table for all namespaces); sniffer: mean of {SCANS} scans, {:.0} namespaces and {:.0} sockets per scan (every namespace on the machine), {:.0}% of them by the BPF iterator; with --socket-source sock-diag: {sock_diag_ms:.1} ms ({:.1}x the BPF scan); baseline: {NAMESPACES} processes, {} client sockets found",
        scans.ours.namespaces,
        scans.ours.sockets,
        scans.ours.bpf_share * 100.0,
        sock_diag_ms / ours_ms.max(1e-9),
        scans.baseline_clients
    );
    Figure::new("socket_scan_100k", ours_ms, "ms")
        .with_baseline("proc_net_tcp", baseline_ms, baseline_ms / ours_ms.max(1e-9))
        .with_note(note)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_net_tcp_lines_are_parsed() {
        let text = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0\n   1: 0100007F:9C40 0100007F:1F90 01 00000000:00000000 00:00000000 00000000     0        0 2 1 0 20 4 30 10 -1\n";
        let sockets = parse_proc_net_tcp(text);
        assert_eq!(sockets.len(), 2);
        assert_eq!(sockets[0].local, "127.0.0.1:8080".parse().expect("address"));
        assert_eq!(sockets[0].state, TCP_LISTEN);
        assert_eq!(
            sockets[1].remote,
            "127.0.0.1:8080".parse().expect("address")
        );
        let v6 = parse_proc_addr("00000000000000000000000001000000:0050");
        assert_eq!(v6, Some("[::1]:80".parse().expect("address")));
    }
}
