//! `trafficmap-bench` (issue 8): the figures of BENCHMARKS.md, each measured on the release
//! binaries next to the alternative a user would otherwise run, in the same run.
//!
//! - [`dns`]: DNS responses crafted by a generator in one network namespace, captured across a
//!   veth by the sniffer, then by `tcpdump -w /dev/null`, stepping the rate.
//! - [`scan`]: 100 namespaces holding 1000 loopback TCP connections each, scanned by the
//!   sniffer and by a /proc/<pid>/net/tcp{,6} reader written the way Otterize's sniffer reads.
//! - [`operator`] and [`cluster_load`]: the operator fed over its HTTPS ingest against a
//!   control plane holding 10k pods, 2k Services and 5k workloads.
//! - [`netns`]: the `tmb*` namespaces and links, removed even on failure or Ctrl-C.

pub mod cluster_load;
pub mod criterion;
pub mod dns;
pub mod dnsgen;
pub mod holder;
pub mod ingest_client;
pub mod latency;
pub mod netns;
pub mod node;
pub mod operator;
pub mod scan;

use std::fmt;
use std::io;
use std::path::Path;

use thiserror::Error;

/// Why a measurement could not be made.
#[derive(Debug, Error)]
pub enum BenchError {
    /// A local resource (file, socket, process) failed.
    #[error("{what}: {source}")]
    Io {
        /// What was attempted.
        what: String,
        /// The OS error.
        source: io::Error,
    },
    /// A command or process did not do what was expected.
    #[error("{0}")]
    Failed(String),
    /// The e2e harness (control plane, operator process) failed.
    #[error(transparent)]
    Harness(#[from] crate::Error),
}

/// Result of the bench.
pub type Result<T, E = BenchError> = std::result::Result<T, E>;

/// Wraps an I/O error with what was being done.
pub fn io_context(what: impl Into<String>) -> impl FnOnce(io::Error) -> BenchError {
    let what = what.into();
    move |source| BenchError::Io { what, source }
}

/// One line of `make bench`: `NAME: VALUE UNIT (baseline NAME: VALUE, ratio: X)`.
#[derive(Debug, Clone)]
pub struct Figure {
    /// Fixed name (issue 8).
    pub name: &'static str,
    /// The measured value.
    pub value: f64,
    /// Its unit.
    pub unit: &'static str,
    /// The alternative's name and value, measured in the same run.
    pub baseline: Option<(String, f64)>,
    /// ours / baseline or baseline / ours, as the figure's definition says.
    pub ratio: Option<f64>,
    /// What else a reader needs (conditions, bound), printed on a `#` line of its own.
    pub note: Option<String>,
}

impl Figure {
    /// A figure without a baseline.
    pub fn new(name: &'static str, value: f64, unit: &'static str) -> Self {
        Figure {
            name,
            value,
            unit,
            baseline: None,
            ratio: None,
            note: None,
        }
    }

    /// Adds the baseline and the ratio.
    pub fn with_baseline(mut self, name: impl Into<String>, value: f64, ratio: f64) -> Self {
        self.baseline = Some((name.into(), value));
        self.ratio = Some(ratio);
        self
    }

    /// Adds a note.
    pub fn with_note(mut self, note: impl Into<String>) -> Self {
        self.note = Some(note.into());
        self
    }
}

/// Shortest text for a figure: integers as integers, the rest with 3 significant decimals.
fn number(value: f64) -> String {
    if (value.fract() == 0.0 && value.abs() < 1e15) || value.abs() >= 100.0 {
        format!("{value:.0}")
    } else if value.abs() >= 1.0 {
        format!("{value:.2}")
    } else {
        format!("{value:.3}")
    }
}

impl fmt::Display for Figure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {} {}", self.name, number(self.value), self.unit)?;
        if let (Some((name, value)), Some(ratio)) = (&self.baseline, self.ratio) {
            write!(
                f,
                " (baseline {name}: {}, ratio: {})",
                number(*value),
                number(ratio)
            )?;
        }
        Ok(())
    }
}

/// Resident memory of a process, KiB: `(VmRSS, VmHWM)` from /proc/<pid>/status.
pub fn memory_kib(pid: u32) -> Result<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(io_context(format!("read /proc/{pid}/status")))?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .unwrap_or(0)
    };
    Ok((field("VmRSS:"), field("VmHWM:")))
}

/// CPU time (user and system, all threads) a process has used so far, in seconds.
pub fn cpu_seconds(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map_err(io_context(format!("read /proc/{pid}/stat")))?;
    // Fields after the command name (which may hold spaces): state is the first, utime the
    // 12th and stime the 13th (proc(5) numbers them 3, 14 and 15).
    let mut fields = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace())
        .into_iter()
        .flatten()
        .skip(11);
    let mut ticks = || fields.next().and_then(|f| f.parse::<u64>().ok());
    let (Some(user), Some(system)) = (ticks(), ticks()) else {
        return Err(BenchError::Failed(format!(
            "/proc/{pid}/stat has no CPU times"
        )));
    };
    // SAFETY: sysconf reads a constant of the running system.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    Ok((user + system) as f64 / per_second.max(1) as f64)
}

/// KiB to MiB.
pub fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// Path of a release binary of this workspace (`$TRAFFICMAP_BIN_DIR`, else target/release).
pub fn release_binary(name: &str) -> Result<std::path::PathBuf> {
    let dir = std::env::var_os("TRAFFICMAP_BIN_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| crate::cluster::repo_root().join("target/release"));
    let path = dir.join(name);
    if Path::new(&path).exists() {
        Ok(path)
    } else {
        Err(BenchError::Failed(format!(
            "{} is missing: run `cargo build --release --workspace --bins` (make bench does)",
            path.display()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figure_lines_have_the_fixed_form() {
        let line = Figure::new("socket_scan_100k", 41.5, "ms")
            .with_baseline("proc_net_tcp", 830.0, 20.0)
            .to_string();
        assert_eq!(
            line,
            "socket_scan_100k: 41.50 ms (baseline proc_net_tcp: 830, ratio: 20)"
        );
        assert_eq!(
            Figure::new("dns_parse", 212.0, "ns").to_string(),
            "dns_parse: 212 ns"
        );
    }
}
