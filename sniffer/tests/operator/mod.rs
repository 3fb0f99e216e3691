//! A stand-in for the operator's ingest endpoint: a real HTTPS server on 127.0.0.1 with a
//! certificate from a test CA, recording every request and answering with a status the test
//! sets. Also the sniffer process, started in report mode and read through its admin server.

#![allow(dead_code)]

use std::convert::Infallible;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};
use rustls::ServerConfig;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::TlsAcceptor;
use trafficmap_api::report::{Observation, Report};

/// A test CA and a server certificate for 127.0.0.1 that it signed.
pub struct TestPki {
    /// The CA certificate, PEM.
    pub ca_pem: String,
    server_cert: CertificateDer<'static>,
    server_key: Vec<u8>,
}

impl TestPki {
    pub fn new(name: &str) -> Self {
        let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, format!("trafficmap test CA {name}"));
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().expect("CA key"))
            .expect("CA certificate");
        let server_key = KeyPair::generate().expect("server key");
        let server = CertificateParams::new(vec!["127.0.0.1".to_owned()])
            .expect("server params")
            .signed_by(&server_key, &ca)
            .expect("server certificate");
        TestPki {
            ca_pem: ca.pem(),
            server_cert: server.der().clone(),
            server_key: server_key.serialize_der(),
        }
    }

    fn server_config(&self) -> ServerConfig {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_no_client_auth()
            .with_single_cert(
                vec![self.server_cert.clone()],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.server_key.clone())),
            )
            .expect("server TLS config")
    }
}

/// One request as the ingest server saw it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub at: Instant,
    pub method: String,
    pub path: String,
    pub authorization: Option<String>,
    pub content_type: Option<String>,
    /// The body, when it parsed as a valid report.
    pub report: Option<Report>,
    /// The status it was answered with.
    pub status: u16,
}

impl Recorded {
    /// True when the report holds a connection to `port`.
    pub fn has_port(&self, port: u16) -> bool {
        self.report.as_ref().is_some_and(|r| {
            r.observations
                .iter()
                .any(|o| matches!(o, Observation::Connection(c) if c.server_port == port))
        })
    }
}

#[derive(Default)]
struct Shared {
    requests: Mutex<Vec<Recorded>>,
    status: AtomicU16,
    tls_failures: AtomicU64,
}

/// The HTTPS ingest server.
pub struct IngestServer {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    _runtime: tokio::runtime::Runtime,
}

impl IngestServer {
    /// Listens on 127.0.0.1:0 with `pki`'s server certificate, answering `status`.
    pub fn start(pki: &TestPki, status: u16) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let shared = Arc::new(Shared::default());
        shared.status.store(status, Ordering::SeqCst);
        let acceptor = TlsAcceptor::from(Arc::new(pki.server_config()));
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let accept_shared = Arc::clone(&shared);
        runtime.spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                let shared = Arc::clone(&accept_shared);
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(stream).await else {
                        shared.tls_failures.fetch_add(1, Ordering::SeqCst);
                        return;
                    };
                    let service = service_fn(move |request: Request<Incoming>| {
                        let shared = Arc::clone(&shared);
                        async move { Ok::<_, Infallible>(record(&shared, request).await) }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        IngestServer {
            addr,
            shared,
            _runtime: runtime,
        }
    }

    /// `https://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// Answer every later request with `status`.
    pub fn set_status(&self, status: u16) {
        self.shared.status.store(status, Ordering::SeqCst);
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.requests.lock().expect("requests lock").clone()
    }

    /// TLS handshakes that failed.
    pub fn tls_failures(&self) -> u64 {
        self.shared.tls_failures.load(Ordering::SeqCst)
    }

    /// Waits until some request satisfies `found`; fails the test with `what` after `limit`.
    pub fn wait_for(&self, what: &str, limit: Duration, found: impl Fn(&Recorded) -> bool) {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if self.requests().iter().any(&found) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "no request with {what} within {limit:?}; requests: {:#?}",
            self.requests()
        );
    }
}

async fn record(shared: &Shared, request: Request<Incoming>) -> Response<Full<Bytes>> {
    let header = |name: &str| {
        request
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let (authorization, content_type) = (header("authorization"), header("content-type"));
    let method = request.method().to_string();
    let path = request.uri().path().to_owned();
    let body = request
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let status = shared.status.load(Ordering::SeqCst);
    shared
        .requests
        .lock()
        .expect("requests lock")
        .push(Recorded {
            at: Instant::now(),
            method,
            path,
            authorization,
            content_type,
            report: Report::from_json(&body).ok(),
            status,
        });
    let mut response = Response::new(Full::new(Bytes::from_static(b"recorded\n")));
    *response.status_mut() =
        hyper::StatusCode::from_u16(status).expect("the test sets a valid status");
    response
}

/// A fresh directory for one test's files.
pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "trafficmap-report-{name}-{}-{:08x}",
        std::process::id(),
        rand_u32()
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

fn rand_u32() -> u32 {
    let mut bytes = [0u8; 4];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .expect("urandom");
    u32::from_ne_bytes(bytes)
}

/// A network namespace this test creates, with a veth pair (both ends inside) holding
/// 10.125.0.1/24: its
/// sockets are calls the scan sees, to an address inside that namespace. Removed on drop.
pub struct CallerNetns {
    name: String,
}

impl CallerNetns {
    /// Creates the namespace (needs root).
    pub fn new() -> Self {
        crate::support::require_root();
        let name = format!("tm-r-{}", crate::support::random_hex(4));
        crate::support::run("ip", &["netns", "add", &name]);
        let netns = CallerNetns { name };
        let ip = |args: &[&str]| {
            let mut all = vec!["-n", netns.name.as_str()];
            all.extend_from_slice(args);
            crate::support::run("ip", &all);
        };
        ip(&["link", "set", "lo", "up"]);
        ip(&["link", "add", "a0", "type", "veth", "peer", "name", "a1"]);
        ip(&["addr", "add", "10.125.0.1/24", "dev", "a0"]);
        ip(&["link", "set", "a0", "up"]);
        ip(&["link", "set", "a1", "up"]);
        netns
    }

    /// A UDP socket in the namespace connected to 10.125.0.2:`port`: the client side of a
    /// call as the scan sees it (connecting a UDP socket sends no packet).
    pub fn connected_udp(&self, port: u16) -> UdpSocket {
        crate::support::in_netns(&self.name, move || {
            let socket = UdpSocket::bind("10.125.0.1:0").expect("bind udp");
            socket
                .connect(("10.125.0.2", port))
                .unwrap_or_else(|e| panic!("connect a UDP socket to 10.125.0.2:{port}: {e}"));
            socket
        })
    }
}

impl Drop for CallerNetns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// The sniffer binary in report mode, with its stderr collected.
pub struct Sniffer {
    child: Child,
    stderr: Arc<Mutex<Vec<String>>>,
    /// Its admin server.
    pub admin: SocketAddr,
}

impl Sniffer {
    /// Starts the sniffer with report-mode flags for `server` plus `extra`, and waits until
    /// its admin server listens.
    pub fn start(server_url: &str, dir: &Path, extra: &[&str]) -> Self {
        let mut command = Command::new(env!("CARGO_BIN_EXE_trafficmap-sniffer"));
        for (key, _) in std::env::vars() {
            if key.starts_with("TRAFFICMAP_") || key == "NODE_NAME" {
                command.env_remove(key);
            }
        }
        let ca = dir.join("ca.crt");
        let token = dir.join("token");
        command
            .env("RUST_LOG", "info,trafficmap_sniffer=debug")
            .args([
                "--output",
                "report",
                "--no-capture",
                "--node-name",
                "test-node",
            ])
            .args(["--operator-url", server_url])
            .arg("--ca-file")
            .arg(&ca)
            .arg("--token-file")
            .arg(&token)
            .args(["--metrics-addr", "127.0.0.1:0", "--scan-interval", "200ms"])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = command.spawn().expect("start the sniffer");
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let pipe = child.stderr.take().expect("stderr");
        let lines = Arc::clone(&stderr);
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                if line.contains("serving /healthz")
                    && let Some(addr) = line.split("addr=").nth(1)
                {
                    let _ = addr_tx.send(addr.split_whitespace().next().unwrap_or("").to_owned());
                }
                lines.lock().expect("stderr lock").push(line);
            }
        });
        let admin = match addr_rx.recv_timeout(Duration::from_secs(20)) {
            Ok(addr) => addr.parse().expect("admin address"),
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "the sniffer did not start its admin server: {:#?}",
                    stderr.lock().expect("stderr lock")
                );
            }
        };
        Sniffer {
            child,
            stderr,
            admin,
        }
    }

    /// What it logged so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().expect("stderr lock").join("\n")
    }

    /// GETs `path` from the admin server: status and body.
    pub fn get(&self, path: &str) -> (u16, String) {
        let mut stream = TcpStream::connect(self.admin).expect("connect to the admin server");
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: sniffer\r\nConnection: close\r\n\r\n"
        )
        .expect("send");
        let mut response = String::new();
        stream.read_to_string(&mut response).expect("read");
        let status = response
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("not an HTTP response: {response}"));
        let body = response
            .split_once("\r\n\r\n")
            .map(|(_, body)| body.to_owned())
            .unwrap_or_default();
        (status, body)
    }

    /// The value of the sample `series` (name with labels) in /metrics.
    pub fn metric(&self, series: &str) -> Option<f64> {
        let (_, body) = self.get("/metrics");
        body.lines()
            .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
            .and_then(|value| value.trim().parse().ok())
    }

    /// Sends SIGTERM and waits (at most `limit`) for it to exit.
    pub fn terminate(&mut self, limit: Duration) -> ExitStatus {
        let pid = libc::pid_t::try_from(self.child.id()).expect("pid");
        // SAFETY: kill(2) on our own child.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the sniffer did not exit within {limit:?} of SIGTERM:\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Sniffer {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
