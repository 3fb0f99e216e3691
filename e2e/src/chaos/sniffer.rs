//! The real sniffer against the real operator: a network namespace this case creates
//! (`tmh-*`, addresses 10.244.201.0/24 only inside it) holds connected UDP sockets, the calls
//! the sniffer's socket scan reports (connecting a UDP socket sends no packet). The sniffer
//! runs in report mode with `--no-capture` (no DNS capture on the host's interfaces).
//!
//! - `operator-down`: the operator is away for 2 minutes; calls made (and ended) meanwhile
//!   wait in the sniffer's bounded buffer and are delivered when it is back.
//! - `sniffer-restarted`: a sniffer restart re-reports live calls without duplicating edges,
//!   and a call that ended just before the restart is flushed, not lost.

use std::fs::File;
use std::net::{IpAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::harness::{Setup, WAIT};
use super::{Outcome, ensure, step};
use crate::cluster::{repo_root, unique_name, wait_for};
use crate::operator::{OperatorProcess, bin_path, free_port};
use crate::prom::sample;
use crate::{Error, Result, http};

/// Client address inside the case's namespace (a pod of Deployment `client` in the API).
const CLIENT_IP: &str = "10.244.201.2";
/// Server address the sockets connect to (a pod of Deployment `server`).
const SERVER_IP: &str = "10.244.201.3";
/// Report buffer bound the sniffer runs with in these cases, in bytes.
const BUFFER_BYTES: u64 = 256 * 1024;

/// A network namespace named `tmh-*` with [`CLIENT_IP`] on a veth inside it; deleted on drop.
pub struct CallerNetns {
    name: String,
}

fn run(program: &str, args: &[&str]) -> Result<()> {
    let status = Command::new(program)
        .args(args)
        .status()
        .map_err(|e| Error::Exited(format!("{program}: {e}")))?;
    if status.success() {
        Ok(())
    } else {
        Err(Error::Exited(format!("{program} {args:?}: {status}")))
    }
}

impl CallerNetns {
    /// Creates it (needs root).
    pub fn new() -> Result<Self> {
        let name = unique_name("tmh").replace('-', "");
        let name = format!("tmh-{}", &name[3..]);
        run("ip", &["netns", "add", &name])?;
        let netns = CallerNetns { name };
        let n = netns.name.as_str();
        run("ip", &["-n", n, "link", "set", "lo", "up"])?;
        run(
            "ip",
            &[
                "-n", n, "link", "add", "c0", "type", "veth", "peer", "name", "c1",
            ],
        )?;
        run(
            "ip",
            &[
                "-n",
                n,
                "addr",
                "add",
                &format!("{CLIENT_IP}/24"),
                "dev",
                "c0",
            ],
        )?;
        run("ip", &["-n", n, "link", "set", "c0", "up"])?;
        run("ip", &["-n", n, "link", "set", "c1", "up"])?;
        Ok(netns)
    }

    /// A UDP socket in the namespace connected to [`SERVER_IP`]:`port`.
    pub fn connected_udp(&self, port: u16) -> Result<UdpSocket> {
        let path = format!("/run/netns/{}", self.name);
        std::thread::spawn(move || -> Result<UdpSocket> {
            let file = File::open(&path).map_err(|e| Error::Exited(format!("{path}: {e}")))?;
            // SAFETY: setns on an nsfs descriptor; affects only this short-lived thread.
            let ret = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            if ret != 0 {
                return Err(Error::Exited(format!(
                    "setns {path}: {}",
                    std::io::Error::last_os_error()
                )));
            }
            let socket = UdpSocket::bind((CLIENT_IP, 0))
                .map_err(|e| Error::Exited(format!("bind UDP: {e}")))?;
            socket
                .connect((SERVER_IP, port))
                .map_err(|e| Error::Exited(format!("connect UDP to {port}: {e}")))?;
            Ok(socket)
        })
        .join()
        .map_err(|_| Error::Exited("socket thread panicked".into()))?
    }
}

impl Drop for CallerNetns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// The sniffer binary in report mode for the case's operator; killed on drop.
pub struct SnifferProcess {
    child: Child,
    admin_url: String,
    /// Where its output goes.
    pub log: PathBuf,
}

impl SnifferProcess {
    /// Starts it with the case's CA and sniffer token, reporting to `ingest_url`.
    pub fn start(setup: &Setup, ingest_url: &str) -> Result<Self> {
        let buffer = BUFFER_BYTES.to_string();
        Self::start_with(
            setup,
            ingest_url,
            &["--no-capture", "--buffer-bytes", &buffer],
        )
    }

    /// Like [`SnifferProcess::start`], with `extra` flags instead of `--no-capture` and the
    /// small buffer.
    pub fn start_with(setup: &Setup, ingest_url: &str, extra: &[&str]) -> Result<Self> {
        let dir = repo_root()
            .join("target/e2e-logs")
            .join(format!("{}-sniffer", setup.ns.name));
        std::fs::create_dir_all(&dir)
            .map_err(|e| Error::Exited(format!("{}: {e}", dir.display())))?;
        let (ca, token) = (dir.join("ca.crt"), dir.join("token"));
        std::fs::write(&ca, &setup.ca).map_err(|e| Error::Exited(format!("CA file: {e}")))?;
        std::fs::write(&token, &setup.token)
            .map_err(|e| Error::Exited(format!("token file: {e}")))?;
        let log = repo_root()
            .join("target/e2e-logs")
            .join(format!("{}-sniffer.log", setup.ns.name));
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .map_err(|e| Error::Exited(format!("{}: {e}", log.display())))?;
        let err = out
            .try_clone()
            .map_err(|e| Error::Exited(format!("log: {e}")))?;
        let admin = format!("127.0.0.1:{}", free_port()?);
        let base = ingest_url.trim_end_matches(trafficmap_api::report::INGEST_PATH);
        let mut command = Command::new(bin_path("trafficmap-sniffer")?);
        for (key, _) in std::env::vars() {
            if key.starts_with("TRAFFICMAP_") || key == "NODE_NAME" {
                command.env_remove(key);
            }
        }
        let child = command
            .env("RUST_LOG", "info,trafficmap_sniffer=debug")
            .args(["--output", "report"])
            .args(extra)
            .args(["--node-name", crate::fixtures::TEST_NODE])
            .args(["--operator-url", base])
            .arg("--ca-file")
            .arg(&ca)
            .arg("--token-file")
            .arg(&token)
            .args(["--metrics-addr", &admin, "--scan-interval", "300ms"])
            .args(["--report-interval", "300ms"])
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .spawn()
            .map_err(|e| Error::Exited(format!("start the sniffer: {e}")))?;
        let sniffer = SnifferProcess {
            child,
            admin_url: format!("http://{admin}"),
            log,
        };
        Ok(sniffer)
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its `/metrics` text ("" while it is not serving).
    pub async fn metrics(&self) -> String {
        http::get(&format!("{}/metrics", self.admin_url))
            .await
            .map(|(_, body)| body)
            .unwrap_or_default()
    }

    /// SIGTERM, and wait up to 20 s for it to exit (it flushes its buffer first).
    pub fn terminate(&mut self) -> bool {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        for _ in 0..200 {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }
}

impl Drop for SnifferProcess {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Ports of `server` targets in the client's ObservedTraffic, failing on duplicate targets.
async fn server_ports(setup: &Setup) -> std::result::Result<Vec<u16>, String> {
    let Some(ot) = step("read", setup.observed("client").await)? else {
        return Ok(Vec::new());
    };
    let targets = ot.status.map(|s| s.targets).unwrap_or_default();
    let servers: Vec<_> = targets.iter().filter(|t| t.name == "server").collect();
    ensure(servers.len() <= 1, || {
        format!("{} targets for one server", servers.len())
    })?;
    let mut ports: Vec<u16> = servers
        .iter()
        .flat_map(|t| t.ports.iter().map(|p| p.port))
        .collect();
    let count = ports.len();
    ports.sort_unstable();
    ports.dedup();
    ensure(ports.len() == count, || {
        format!("duplicate ports {ports:?}")
    })?;
    Ok(ports)
}

/// Waits until the client's `server` target lists every port in `want`.
async fn wait_for_ports(setup: &Setup, want: &[u16], within: Duration) -> Outcome {
    let result = wait_for(&format!("ports {want:?}"), within, || async {
        let ports = server_ports(setup).await.map_err(Error::Exited)?;
        Ok(want.iter().all(|p| ports.contains(p)).then_some(()))
    })
    .await;
    match result {
        Ok(()) => Ok(()),
        Err(e) => Err(format!("{e}; stored: {:?}", server_ports(setup).await)),
    }
}

async fn workloads(setup: &Setup) -> std::result::Result<(IpAddr, IpAddr), String> {
    let client: IpAddr = step("ip", super::harness::ip(CLIENT_IP))?;
    let server: IpAddr = step("ip", super::harness::ip(SERVER_IP))?;
    step("client", setup.workload("client", client).await)?;
    step("server", setup.workload("server", server).await)?;
    Ok((client, server))
}

/// See the module docs.
pub async fn operator_down() -> Outcome {
    let mut setup = step("start", Setup::new("down", &[]).await)?;
    let outcome = operator_down_in(&mut setup).await;
    setup.cleanup().await;
    outcome
}

async fn operator_down_in(setup: &mut Setup) -> Outcome {
    workloads(setup).await?;
    let netns = step("netns", CallerNetns::new())?;
    let url = setup.operator.ingest_url.clone();
    let port: u16 = url
        .trim_start_matches("https://127.0.0.1:")
        .split('/')
        .next()
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| format!("no port in {url}"))?;
    let sniffer = step("sniffer", SnifferProcess::start(setup, &url))?;
    let _live = step("socket", netns.connected_udp(7001))?;
    wait_for_ports(setup, &[7001], WAIT).await?;

    setup.operator.kill();
    let outage = tokio::time::Instant::now();
    // Calls made and ended while the operator is away: only the buffer remembers them.
    let during: Vec<u16> = (7002..7012).collect();
    for p in &during {
        let socket = step("socket", netns.connected_udp(*p))?;
        tokio::time::sleep(Duration::from_millis(1_000)).await;
        drop(socket);
    }
    let mut most_buffered = 0.0f64;
    while outage.elapsed() < Duration::from_secs(120) {
        let text = sniffer.metrics().await;
        most_buffered = most_buffered.max(sample(&text, "trafficmap_sniffer_buffer_bytes"));
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
    let text = sniffer.metrics().await;
    let failures: f64 = text
        .lines()
        .filter(|l| l.starts_with("trafficmap_sniffer_report_failures_total"))
        .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
        .sum();
    ensure(failures > 0.0, || {
        "the sniffer never noticed the operator was away".into()
    })?;
    ensure(most_buffered > 0.0, || {
        "nothing was buffered during the outage".into()
    })?;
    ensure(most_buffered <= BUFFER_BYTES as f64, || {
        format!("buffer grew to {most_buffered} bytes, bound {BUFFER_BYTES}")
    })?;

    setup.operator = step("restart", OperatorProcess::spawn_on(&setup.options, port))?;
    step(
        "ready",
        setup.operator.wait_ready(Duration::from_secs(60)).await,
    )?;
    let mut want = vec![7001];
    want.extend(&during);
    wait_for_ports(setup, &want, Duration::from_secs(60)).await?;
    let dropped = sample(
        &sniffer.metrics().await,
        "trafficmap_sniffer_buffer_dropped_observations_total",
    );
    ensure(dropped == 0.0, || {
        format!("{dropped} observations dropped within the bound")
    })
}

/// See the module docs.
pub async fn sniffer_restarted() -> Outcome {
    let setup = step("start", Setup::new("snrestart", &[]).await)?;
    let outcome = sniffer_restarted_in(&setup).await;
    setup.cleanup().await;
    outcome
}

async fn sniffer_restarted_in(setup: &Setup) -> Outcome {
    workloads(setup).await?;
    let netns = step("netns", CallerNetns::new())?;
    let url = setup.operator.ingest_url.clone();
    let mut sniffer = step("sniffer", SnifferProcess::start(setup, &url))?;
    let _live = step("socket", netns.connected_udp(7101))?;
    wait_for_ports(setup, &[7101], WAIT).await?;

    // A call that ends right before the sniffer stops: SIGTERM flushes it.
    let ended = step("socket", netns.connected_udp(7102))?;
    tokio::time::sleep(Duration::from_millis(900)).await;
    drop(ended);
    ensure(sniffer.terminate(), || {
        "the sniffer did not exit cleanly on SIGTERM".into()
    })?;
    let _second = step("sniffer again", SnifferProcess::start(setup, &url))?;
    let _another = step("socket", netns.connected_udp(7103))?;
    wait_for_ports(setup, &[7101, 7102, 7103], WAIT).await?;
    // Let the restarted sniffer re-report the live call a few times: still one target.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let ports = server_ports(setup).await?;
    ensure(ports == [7101, 7102, 7103], || {
        format!("server ports {ports:?}")
    })?;
    let objects = step("read", setup.all_observed().await)?;
    ensure(objects.len() == 1, || {
        format!("{} ObservedTraffic objects for one client", objects.len())
    })
}
