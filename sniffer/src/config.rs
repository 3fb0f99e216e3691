//! Command line and environment: every option has a `TRAFFICMAP_*` variable.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};

use crate::capture::RingGeometry;
use crate::scan::{ScanConfig, SocketSource};

/// Operator address inside the cluster.
pub const DEFAULT_OPERATOR_URL: &str = "https://trafficmap-operator.trafficmap.svc:8443";
/// Admin (health and metrics) address in report mode.
pub const DEFAULT_METRICS_ADDR: &str = "0.0.0.0:9090";

/// Where observations go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputMode {
    /// Send batches of observations to the operator over HTTPS.
    Report,
    /// Print one JSON observation per line on stdout; needs no operator, cluster or config.
    Jsonl,
}

/// trafficmap node agent: watches DNS responses and client sockets on this node.
#[derive(Debug, Clone, Parser)]
#[command(name = "trafficmap-sniffer", version, about, long_about = None)]
pub struct Args {
    /// Where observations go.
    #[arg(long, env = "TRAFFICMAP_OUTPUT", value_enum, default_value_t = OutputMode::Report)]
    pub output: OutputMode,

    /// Time between socket scans (`1s`, `500ms`, or plain seconds).
    #[arg(long, env = "TRAFFICMAP_SCAN_INTERVAL", default_value = "1s", value_parser = parse_duration)]
    pub scan_interval: Duration,

    /// Do not capture DNS responses.
    #[arg(long, env = "TRAFFICMAP_NO_CAPTURE")]
    pub no_capture: bool,

    /// Do not scan sockets.
    #[arg(long, env = "TRAFFICMAP_NO_SCAN")]
    pub no_scan: bool,

    /// Where socket scans read sockets: `bpf` (one pass over every process's open files, for
    /// all namespaces; needs the kernel's BTF and CAP_SYS_ADMIN, or CAP_BPF with CAP_PERFMON),
    /// `sock-diag` (one netlink dump per namespace), or `auto` (bpf when it loads).
    #[arg(long, env = "TRAFFICMAP_SOCKET_SOURCE", value_enum, default_value_t = SocketSource::Auto)]
    pub socket_source: SocketSource,

    /// Exit after this long (`30s`, `2m`, or plain seconds); by default run until stopped.
    #[arg(long, env = "TRAFFICMAP_DURATION", value_parser = parse_duration)]
    pub duration: Option<Duration>,

    /// Name of this node (set it from the downward API, `spec.nodeName`).
    #[arg(long, env = "NODE_NAME")]
    pub node_name: Option<String>,

    /// Bytes per capture ring block (a multiple of the page size; 4 blocks of 1 MiB by default).
    #[arg(long, env = "TRAFFICMAP_RING_BLOCK_BYTES", default_value_t = RingGeometry::default().block_bytes)]
    pub ring_block_bytes: u32,

    /// Number of capture ring blocks.
    #[arg(long, env = "TRAFFICMAP_RING_BLOCKS", default_value_t = RingGeometry::default().block_count)]
    pub ring_blocks: u32,

    /// DNS messages whose answer is remembered, so a repeat (differing only in its ID) is not
    /// parsed again; 0 parses every response.
    #[arg(long, env = "TRAFFICMAP_DNS_MEMO_ENTRIES", default_value_t = crate::dns::memo::DEFAULT_ENTRIES)]
    pub dns_memo_entries: usize,

    /// procfs showing the node's processes (the pod needs hostPID).
    #[arg(long, env = "TRAFFICMAP_PROC", default_value = "/proc")]
    pub proc_root: PathBuf,

    /// Base URL of the operator; reports are POSTed to `<url>/v1/reports`.
    #[arg(long, env = "TRAFFICMAP_OPERATOR_URL", default_value = DEFAULT_OPERATOR_URL)]
    pub operator_url: String,

    /// PEM file of the CA that signed the operator's certificate: the only CA trusted.
    #[arg(
        long,
        env = "TRAFFICMAP_CA_FILE",
        default_value = "/var/run/trafficmap/ca/ca.crt"
    )]
    pub ca_file: PathBuf,

    /// Projected ServiceAccount token (audience `trafficmap`), read again when it changes.
    #[arg(
        long,
        env = "TRAFFICMAP_TOKEN_FILE",
        default_value = "/var/run/secrets/trafficmap/token"
    )]
    pub token_file: PathBuf,

    /// Time between reports.
    #[arg(long, env = "TRAFFICMAP_REPORT_INTERVAL", default_value = "1s", value_parser = parse_duration)]
    pub report_interval: Duration,

    /// Most reports in flight at once. The operator answers a report once its edges are
    /// written (a flush interval or so), so a backlog goes out this many reports at a time.
    #[arg(long, env = "TRAFFICMAP_REPORT_CONCURRENCY", default_value_t = 4)]
    pub report_concurrency: usize,

    /// Report mode: observations still seen are sent again this often, so lastSeen moves.
    #[arg(long, env = "TRAFFICMAP_REFRESH_INTERVAL", default_value = "60s", value_parser = parse_duration)]
    pub refresh_interval: Duration,

    /// Most observations kept while the operator is away, in bytes of JSON (`16Mi`, `512Ki`
    /// or a number); past it the least recently seen are dropped.
    #[arg(long, env = "TRAFFICMAP_BUFFER_BYTES", default_value = "16Mi", value_parser = parse_bytes)]
    pub buffer_bytes: usize,

    /// Largest report body in bytes (`4Mi`, ...); bigger batches are split.
    #[arg(long, env = "TRAFFICMAP_MAX_BODY_BYTES", default_value = "4Mi", value_parser = parse_bytes)]
    pub max_body_bytes: usize,

    /// Give up on a report request after this long (the operator answers once what a report
    /// changed is written, within its `--ack-timeout`, 20 s by default).
    #[arg(long, env = "TRAFFICMAP_REQUEST_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub request_timeout: Duration,

    /// Address of the plain-HTTP /healthz, /readyz and /metrics server [default in report
    /// mode: 0.0.0.0:9090; jsonl mode serves only when this is set].
    #[arg(long, env = "TRAFFICMAP_METRICS_ADDR")]
    pub metrics_addr: Option<SocketAddr>,
}

impl Args {
    /// Capture ring size.
    pub fn ring_geometry(&self) -> RingGeometry {
        RingGeometry {
            block_bytes: self.ring_block_bytes,
            block_count: self.ring_blocks,
        }
    }

    /// Where the admin server listens, if anywhere.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        match self.output {
            OutputMode::Report => self
                .metrics_addr
                .or_else(|| DEFAULT_METRICS_ADDR.parse().ok()),
            OutputMode::Jsonl => self.metrics_addr,
        }
    }

    /// Socket scan settings.
    pub fn scan_config(&self) -> ScanConfig {
        ScanConfig {
            interval: self.scan_interval,
            proc_root: self.proc_root.clone(),
            socket_source: self.socket_source,
            // The sniffer loads its BPF iterator in a helper run of itself: /proc/self/exe
            // still runs when the binary was replaced or deleted since it started.
            bpf_helper: Some(PathBuf::from("/proc/self/exe")),
            ..ScanConfig::default()
        }
    }
}

/// Parses `250ms`, `1s`, `2m`, `1h` or a plain number of seconds (`1.5`).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit_seconds) = if let Some(n) = text.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = text.strip_suffix('m') {
        (n, 60.0)
    } else if let Some(n) = text.strip_suffix('h') {
        (n, 3600.0)
    } else {
        (text, 1.0)
    };
    let value: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("`{text}` is not a duration like 500ms, 1s, 2m or 1.5"))?;
    Duration::try_from_secs_f64(value * unit_seconds).map_err(|e| format!("`{text}`: {e}"))
}

/// Parses a size in bytes: `4096`, `512Ki`, `16Mi`, `1Gi` (also `KiB`, `MiB`, `GiB`).
pub fn parse_bytes(text: &str) -> Result<usize, String> {
    let text = text.trim();
    let number_end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(number_end);
    let multiplier: usize = match unit.trim() {
        "" | "B" => 1,
        "Ki" | "KiB" => 1 << 10,
        "Mi" | "MiB" => 1 << 20,
        "Gi" | "GiB" => 1 << 30,
        _ => return Err(format!("`{text}` is not a size like 4096, 512Ki or 16Mi")),
    };
    number
        .parse::<usize>()
        .ok()
        .and_then(|n| n.checked_mul(multiplier))
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("`{text}` is not a positive size like 4096, 512Ki or 16Mi"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_and_without_units() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1s"), Ok(Duration::from_secs(1)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("-1").is_err());
    }

    #[test]
    fn defaults_need_no_configuration() {
        let args =
            Args::try_parse_from(["trafficmap-sniffer", "--output", "jsonl"]).expect("parses");
        assert_eq!(args.scan_interval, Duration::from_secs(1));
        assert_eq!(args.ring_geometry(), RingGeometry::default());
        assert!(!args.no_capture && !args.no_scan && args.duration.is_none());
        assert_eq!(args.admin_addr(), None);
        assert_eq!(args.scan_config().socket_source, SocketSource::Auto);
    }

    #[test]
    fn the_socket_source_is_chosen_by_name() {
        for (name, source) in [
            ("bpf", SocketSource::Bpf),
            ("sock-diag", SocketSource::SockDiag),
            ("auto", SocketSource::Auto),
        ] {
            let args = Args::try_parse_from(["trafficmap-sniffer", "--socket-source", name])
                .expect("parses");
            assert_eq!(args.scan_config().socket_source, source, "{name}");
        }
        assert!(Args::try_parse_from(["trafficmap-sniffer", "--socket-source", "proc"]).is_err());
    }

    #[test]
    fn report_mode_defaults_match_the_deployment() {
        let args = Args::try_parse_from(["trafficmap-sniffer"]).expect("parses");
        assert_eq!(args.output, OutputMode::Report);
        assert_eq!(args.operator_url, DEFAULT_OPERATOR_URL);
        assert_eq!(args.report_interval, Duration::from_secs(1));
        assert_eq!(args.buffer_bytes, 16 << 20);
        assert_eq!(args.max_body_bytes, 4 << 20);
        assert_eq!(args.admin_addr(), DEFAULT_METRICS_ADDR.parse().ok());
        assert_eq!(
            args.token_file,
            PathBuf::from("/var/run/secrets/trafficmap/token")
        );
    }

    #[test]
    fn sizes_parse_with_binary_units() {
        assert_eq!(parse_bytes("4096"), Ok(4096));
        assert_eq!(parse_bytes("512Ki"), Ok(512 * 1024));
        assert_eq!(parse_bytes("16Mi"), Ok(16 << 20));
        assert_eq!(parse_bytes("1GiB"), Ok(1 << 30));
        for bad in ["", "0", "-1", "16MB", "Mi", "1.5Mi"] {
            assert!(parse_bytes(bad).is_err(), "{bad}");
        }
    }
}
