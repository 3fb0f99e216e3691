//! Socket scan: every interval, the TCP and UDP sockets of every network namespace on the node
//! are read from one dedicated thread, all at once with the BPF iterator ([`bpf`]) or one
//! namespace at a time with sock_diag ([`sockdiag`]), each namespace entered; client-side sockets
//! become connections, attributed to a pod through the cgroup of a process in the namespace
//! (or, in the host namespace, of the process holding the socket). Each scan also maps the
//! host-side end of every veth whose peer is in a scanned namespace to that namespace
//! ([`links`]), and the namespaces' addresses to their pods, to name DNS clients.

pub mod bpf;
mod bpf_syscalls;
pub mod cgroup;
pub mod classify;
pub mod links;
pub mod loader;
pub mod netns;
pub mod owners;
pub mod sockdiag;

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use thiserror::Error;
use trafficmap_api::observed::Protocol;
use trafficmap_api::report::ClientId;

use crate::counters::Counters;
use crate::events::EventSender;
use crate::now_ms;
use classify::{ClientFilter, SocketRecord};
use netns::{Namespace, NetnsId, NetnsSwitcher};

/// How often a sleeping scan thread checks for a stop request.
const STOP_CHECK_INTERVAL: Duration = Duration::from_millis(50);

/// Why a namespace, or the whole scan, failed.
#[derive(Debug, Error)]
pub enum ScanError {
    /// A namespace could not be opened or entered (its processes may have exited).
    #[error("cannot enter network namespace {path}: {source}")]
    Enter {
        /// The nsfs path.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// The scan thread could not go back to its own namespace: it must stop.
    #[error("cannot return to the host network namespace: {0}")]
    ReturnHome(io::Error),
    /// A netlink call failed.
    #[error("cannot {what}: {source}")]
    Netlink {
        /// What we were doing.
        what: &'static str,
        /// The OS error.
        source: io::Error,
    },
    /// The kernel answered a sock_diag dump request with an error.
    #[error("the kernel refused a sock_diag dump: {0}")]
    DumpRefused(io::Error),
    /// The kernel's answer could not be decoded.
    #[error("cannot decode sock_diag answer: {0}")]
    Decode(String),
    /// The BPF socket iterator could not be loaded or read.
    #[error("BPF socket iterator: cannot {what}: {detail}")]
    Bpf {
        /// What we were doing.
        what: &'static str,
        /// The loader's or the kernel's answer.
        detail: String,
    },
    /// The scan thread could not start.
    #[error("cannot start the scan thread: {0}")]
    Spawn(io::Error),
}

/// Where a scan reads sockets from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SocketSource {
    /// The BPF iterator when it loads, sock_diag otherwise.
    Auto,
    /// The BPF iterator: every namespace's sockets from one walk of the processes' fd
    /// tables ([`bpf`]); fail if it cannot load.
    Bpf,
    /// sock_diag, one dump per namespace ([`sockdiag`]).
    SockDiag,
}

/// Where the scan looks.
#[derive(Debug, Clone)]
pub struct ScanConfig {
    /// Mean time between the starts of two scans (each pause is jittered by ±25%).
    pub interval: Duration,
    /// procfs mount (`/proc`; with hostPID it shows every process of the node).
    pub proc_root: PathBuf,
    /// Directories of pinned namespaces (`/run/netns`, `/var/run/netns`).
    pub pinned_dirs: Vec<PathBuf>,
    /// Where sockets are read from.
    pub socket_source: SocketSource,
    /// The executable that loads the BPF iterator for us ([`loader`]: the sniffer itself);
    /// `None` loads it in this process.
    pub bpf_helper: Option<PathBuf>,
}

impl Default for ScanConfig {
    fn default() -> Self {
        ScanConfig {
            interval: Duration::from_secs(1),
            proc_root: PathBuf::from("/proc"),
            pinned_dirs: vec![PathBuf::from("/run/netns"), PathBuf::from("/var/run/netns")],
            socket_source: SocketSource::Auto,
            bpf_helper: None,
        }
    }
}

/// A client-side socket seen in a scan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionSeen {
    /// Local address, and the pod when known.
    pub client: ClientId,
    /// Remote address and port.
    pub server: SocketAddr,
    /// TCP or UDP.
    pub protocol: Protocol,
}

/// The namespace at the far end of a host-side veth.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodLink {
    /// The namespace's nsfs inode.
    pub netns_inode: u64,
    /// The pod UID of that namespace, when a process in it is in a pod cgroup.
    pub pod_uid: Option<String>,
}

/// What one scan found.
#[derive(Debug, Clone, Default)]
pub struct ScanReport {
    /// Client-side sockets of every namespace.
    pub connections: Vec<ConnectionSeen>,
    /// Addresses of pod namespaces, to the pod UID (for DNS clients). An address found in
    /// the namespaces of two different pods names neither and is left out.
    pub pod_ips: HashMap<IpAddr, String>,
    /// Host-namespace interface index -> the namespace of its veth peer (for DNS clients: a
    /// response sent on that interface goes to that namespace).
    pub pod_links: HashMap<i32, PodLink>,
    /// When the scan started, milliseconds since the Unix epoch.
    pub seen_ms: u64,
}

/// A pod identity resolved for a namespace, with the process it was read from.
#[derive(Debug, Clone)]
struct PodOfNamespace {
    pid: u32,
    uid: String,
}

/// One namespace's sockets: how many, and the client-side ones among them.
#[derive(Debug, Default)]
struct NamespaceSockets {
    seen: u64,
    clients: ClientFilter,
}

impl NamespaceSockets {
    fn add(&mut self, socket: &SocketRecord) {
        self.seen += 1;
        self.clients.add(socket);
    }

    fn classify(sockets: &[SocketRecord]) -> Self {
        let mut found = NamespaceSockets::default();
        for socket in sockets {
            found.add(socket);
        }
        found
    }
}

/// State kept between scans.
#[derive(Debug)]
pub struct Scanner {
    config: ScanConfig,
    iterator: Option<bpf::SocketIterator>,
    /// Whether the latest BPF pass failed (its failures are logged when they start and end,
    /// not on every scan).
    bpf_failing: bool,
    switcher: NetnsSwitcher,
    pods: HashMap<NetnsId, PodOfNamespace>,
    host_socket_pods: HashMap<u32, Option<String>>,
}

impl Scanner {
    /// A scanner whose home (host) namespace is the calling thread's.
    pub fn new(config: ScanConfig) -> Result<Self, ScanError> {
        let load = || match &config.bpf_helper {
            Some(executable) => loader::load_in_helper(executable),
            None => bpf::SocketIterator::load(),
        };
        let iterator = match config.socket_source {
            SocketSource::SockDiag => None,
            SocketSource::Bpf => Some(load()?),
            SocketSource::Auto => match load() {
                Ok(iterator) => Some(iterator),
                Err(err) => {
                    tracing::warn!(
                        %err,
                        "scanning sockets with sock_diag, one dump per namespace \
                         (each walks every TCP socket of the node)"
                    );
                    None
                }
            },
        };
        if iterator.is_some() {
            tracing::info!("scanning sockets with the BPF iterator, one pass for all namespaces");
        }
        Ok(Scanner {
            config,
            iterator,
            bpf_failing: false,
            switcher: NetnsSwitcher::new()?,
            pods: HashMap::new(),
            host_socket_pods: HashMap::new(),
        })
    }

    /// Scans every namespace once. Only [`ScanError::ReturnHome`] is returned; other
    /// failures skip the namespace and are counted.
    pub fn scan_once(&mut self, counters: &Counters) -> Result<ScanReport, ScanError> {
        let started = Instant::now();
        let mut report = ScanReport {
            seen_ms: now_ms(),
            ..ScanReport::default()
        };
        let namespaces = netns::discover(&self.config.proc_root, &self.config.pinned_dirs);
        self.pods
            .retain(|id, _| namespaces.iter().any(|ns| ns.id == *id));
        let host_veths = match links::dump_links() {
            Ok(host_links) => links::host_veths(&host_links),
            Err(err) => {
                Counters::inc(&counters.scan_errors);
                tracing::debug!(%err, "cannot list host interfaces: no veth is mapped");
                HashMap::new()
            }
        };
        let mut from_bpf = self.bpf_pass(counters);
        let home_fd = self.switcher.home_fd();
        let mut ambiguous: HashSet<IpAddr> = HashSet::new();
        for namespace in &namespaces {
            let is_home = namespace.id == self.switcher.home_id();
            let passed = from_bpf.as_mut().map(|found| {
                u32::try_from(namespace.id.inode)
                    .ok()
                    .and_then(|inode| found.remove(&inode))
                    .unwrap_or_default()
            });
            let dumped = self.switcher.run_in(namespace, || -> Result<_, ScanError> {
                let sockets = match passed {
                    Some(found) => found,
                    None => NamespaceSockets::classify(&sockdiag::dump_sockets()?),
                };
                let addresses =
                    netns::interface_addresses().map_err(|source| ScanError::Netlink {
                        what: "list interface addresses",
                        source,
                    })?;
                let pairs = if is_home {
                    Vec::new()
                } else {
                    links::veth_peers_in(home_fd).unwrap_or_else(|err| {
                        tracing::debug!(%err, "cannot list veth peers");
                        Vec::new()
                    })
                };
                Ok((sockets, addresses, pairs))
            });
            let (sockets, addresses, pairs) = match dumped {
                Ok(Ok(found)) => found,
                Err(fatal @ ScanError::ReturnHome(_)) => return Err(fatal),
                Err(err) | Ok(Err(err)) => {
                    Counters::inc(&counters.scan_errors);
                    tracing::debug!(%err, "namespace skipped");
                    continue;
                }
            };
            Counters::inc(&counters.namespaces_scanned);
            Counters::add(&counters.sockets_scanned, sockets.seen);
            let clients = sockets.clients.finish();
            if namespace.id == self.switcher.home_id() {
                self.add_host_connections(&clients, &mut report);
            } else {
                let pod_uid = self.pod_of(namespace);
                if let Some(uid) = &pod_uid {
                    for ip in addresses.iter().filter(|ip| is_pod_address(ip)) {
                        add_pod_ip(&mut report.pod_ips, &mut ambiguous, *ip, uid);
                    }
                }
                for pair in confirmed_pairs(&pairs, &host_veths) {
                    report.pod_links.insert(
                        pair.host_index,
                        PodLink {
                            netns_inode: namespace.id.inode,
                            pod_uid: pod_uid.clone(),
                        },
                    );
                }
                report
                    .connections
                    .extend(clients.iter().map(|s| connection(s, pod_uid.clone())));
            }
        }
        let elapsed = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        Counters::inc(&counters.scans);
        counters
            .last_scan_duration_us
            .store(elapsed, Ordering::Relaxed);
        Counters::add(&counters.scan_duration_us_total, elapsed);
        Counters::set(&counters.last_scan_end_ms, now_ms());
        Ok(report)
    }

    /// Every namespace's sockets from one pass of the BPF iterator, by namespace inode; `None`
    /// when this scan must use sock_diag (no iterator, or this pass failed).
    fn bpf_pass(&mut self, counters: &Counters) -> Option<HashMap<u32, NamespaceSockets>> {
        let iterator = self.iterator.as_mut()?;
        let mut found: HashMap<u32, NamespaceSockets> = HashMap::new();
        match iterator.dump(|netns, record| found.entry(netns).or_default().add(&record)) {
            Ok(()) => {
                Counters::inc(&counters.bpf_scans);
                if std::mem::replace(&mut self.bpf_failing, false) {
                    tracing::info!("BPF socket passes work again");
                }
                Some(found)
            }
            Err(err) => {
                Counters::inc(&counters.scan_errors);
                if std::mem::replace(&mut self.bpf_failing, true) {
                    tracing::debug!(%err, "BPF socket pass failed again: this scan uses sock_diag");
                } else {
                    tracing::warn!(
                        %err,
                        "BPF socket pass failed: scans use sock_diag until a pass works \
                         (scan_errors counts each failure)"
                    );
                }
                None
            }
        }
    }

    /// The pod UID of a namespace, from the cgroup of one of its processes (cached while that
    /// process stays in the namespace).
    fn pod_of(&mut self, namespace: &Namespace) -> Option<String> {
        if let Some(known) = self.pods.get(&namespace.id)
            && namespace.pids.contains(&known.pid)
        {
            return Some(known.uid.clone());
        }
        let found = namespace.pids.iter().find_map(|pid| {
            cgroup::read_pod_uid(&self.config.proc_root, *pid)
                .map(|uid| PodOfNamespace { pid: *pid, uid })
        })?;
        let uid = found.uid.clone();
        self.pods.insert(namespace.id, found);
        Some(uid)
    }

    /// Host-namespace client sockets, each attributed through the process holding it.
    fn add_host_connections(&mut self, clients: &[SocketRecord], report: &mut ScanReport) {
        let current: HashSet<u32> = clients
            .iter()
            .map(|s| s.inode)
            .filter(|i| *i != 0)
            .collect();
        self.host_socket_pods
            .retain(|inode, _| current.contains(inode));
        let unknown: HashSet<u32> = current
            .iter()
            .filter(|inode| !self.host_socket_pods.contains_key(inode))
            .copied()
            .collect();
        // The BPF iterator names a process holding each socket; only the others are looked
        // for through every process's open files.
        let mut owners: HashMap<u32, u32> = clients
            .iter()
            .filter(|s| unknown.contains(&s.inode))
            .filter_map(|s| Some((s.inode, s.pid?)))
            .collect();
        let unowned: HashSet<u32> = unknown
            .iter()
            .filter(|inode| !owners.contains_key(inode))
            .copied()
            .collect();
        if !unowned.is_empty() {
            owners.extend(owners::socket_owners(&self.config.proc_root, &unowned));
        }
        for inode in unknown {
            let uid = owners
                .get(&inode)
                .and_then(|pid| cgroup::read_pod_uid(&self.config.proc_root, *pid));
            self.host_socket_pods.insert(inode, uid);
        }
        report.connections.extend(clients.iter().map(|s| {
            let uid = self.host_socket_pods.get(&s.inode).cloned().flatten();
            connection(s, uid)
        }));
    }
}

/// Adds `ip` -> `uid` unless another pod already claimed the address; then the address
/// names neither pod (a DNS response to it is attributed by its interface only).
fn add_pod_ip(
    pod_ips: &mut HashMap<IpAddr, String>,
    ambiguous: &mut HashSet<IpAddr>,
    ip: IpAddr,
    uid: &str,
) {
    if ambiguous.contains(&ip) {
        return;
    }
    match pod_ips.entry(ip) {
        Entry::Vacant(entry) => {
            entry.insert(uid.to_owned());
        }
        Entry::Occupied(entry) if entry.get() != uid => {
            tracing::debug!(
                %ip,
                first = entry.get(),
                second = uid,
                "address held by two pods: left out of the address map"
            );
            entry.remove();
            ambiguous.insert(ip);
        }
        Entry::Occupied(_) => {}
    }
}

/// The pairs seen from a pod namespace that the host side confirms: the host interface of that
/// index is a veth whose peer index is the pod-side one.
fn confirmed_pairs<'a>(
    pairs: &'a [links::VethPair],
    host_veths: &'a HashMap<i32, links::HostVeth>,
) -> impl Iterator<Item = &'a links::VethPair> {
    pairs.iter().filter(|pair| {
        host_veths
            .get(&pair.host_index)
            .is_some_and(|host| host.peer_index == pair.pod_index)
    })
}

fn connection(socket: &SocketRecord, pod_uid: Option<String>) -> ConnectionSeen {
    ConnectionSeen {
        client: ClientId {
            ip: socket.local.ip(),
            pod_uid,
        },
        server: socket.remote,
        protocol: socket.protocol,
    }
}

/// Addresses that identify a pod: not loopback, link-local or unspecified.
fn is_pod_address(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => !v4.is_loopback() && !v4.is_link_local() && !v4.is_unspecified(),
        IpAddr::V6(v6) => !v6.is_loopback() && !v6.is_unicast_link_local() && !v6.is_unspecified(),
    }
}

/// The pause before the next scan: `interval` scaled into `[0.75, 1.25)` by `unit_random` (in
/// `[0, 1)`), so the mean stays `interval`.
///
/// A fixed period locks in step with workloads that call on a fixed period too: a connection
/// held 750 ms of every second can then close just before each scan, for ever. The socket scan is
/// the only witness of calls from hostNetwork pods (their DNS answers go to the node's address),
/// so it must not be blind to a whole phase of the second.
pub fn jittered(interval: Duration, unit_random: f64) -> Duration {
    interval.mul_f64(0.75 + 0.5 * unit_random.clamp(0.0, 1.0))
}

/// Starts the scan thread: it scans, sends the report, and sleeps out the interval until
/// `stop` is set or the output thread is gone.
pub fn spawn(
    config: ScanConfig,
    counters: Arc<Counters>,
    events: EventSender,
    stop: Arc<AtomicBool>,
) -> Result<std::thread::JoinHandle<Result<(), ScanError>>, ScanError> {
    std::thread::Builder::new()
        .name("scan".into())
        .spawn(move || {
            let mut scanner = Scanner::new(config.clone())?;
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                let interval = jittered(config.interval, fastrand::f64());
                let report = scanner.scan_once(&counters)?;
                tracing::debug!(connections = report.connections.len(), "scan done");
                if !events.send_scan(report) {
                    break;
                }
                while started.elapsed() < interval && !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(
                        STOP_CHECK_INTERVAL.min(interval.saturating_sub(started.elapsed())),
                    );
                }
            }
            Ok(())
        })
        .map_err(ScanError::Spawn)
}

#[cfg(test)]
mod tests {
    use std::net::{TcpListener, TcpStream};

    use super::*;

    #[test]
    fn scan_pauses_vary_around_the_interval() {
        let second = Duration::from_secs(1);
        assert_eq!(jittered(second, 0.0), Duration::from_millis(750));
        assert_eq!(jittered(second, 0.5), second);
        assert!(jittered(second, 0.999_999) < Duration::from_millis(1250));
        assert_eq!(jittered(second, 7.0), Duration::from_millis(1250));
    }

    #[test]
    fn pod_addresses_exclude_loopback_and_link_local() {
        for ip in ["127.0.0.1", "::1", "fe80::1", "169.254.1.1", "0.0.0.0"] {
            assert!(!is_pod_address(&ip.parse().expect("ip")), "{ip}");
        }
        assert!(is_pod_address(&"10.244.0.5".parse().expect("ip")));
    }

    #[test]
    fn an_address_of_two_pods_names_neither() {
        let mut ips = HashMap::new();
        let mut ambiguous = HashSet::new();
        let ip: IpAddr = "10.244.0.5".parse().expect("ip");
        add_pod_ip(&mut ips, &mut ambiguous, ip, "a");
        add_pod_ip(&mut ips, &mut ambiguous, ip, "a");
        assert_eq!(ips.get(&ip).map(String::as_str), Some("a"));
        add_pod_ip(&mut ips, &mut ambiguous, ip, "b");
        assert!(!ips.contains_key(&ip));
        add_pod_ip(&mut ips, &mut ambiguous, ip, "c");
        assert!(!ips.contains_key(&ip));
    }

    #[test]
    fn a_pair_counts_only_when_the_host_side_points_back() {
        let pairs = [
            links::VethPair {
                pod_index: 2,
                host_index: 17,
            },
            links::VethPair {
                pod_index: 2,
                host_index: 18,
            },
            links::VethPair {
                pod_index: 3,
                host_index: 19,
            },
        ];
        let host = HashMap::from([
            (17, links::HostVeth { peer_index: 2 }),
            // Index 18 now belongs to another pair (reused since the pod-side dump).
            (18, links::HostVeth { peer_index: 4 }),
        ]);
        let confirmed: Vec<i32> = confirmed_pairs(&pairs, &host)
            .map(|p| p.host_index)
            .collect();
        assert_eq!(confirmed, vec![17]);
    }

    /// A namespace pinned in /run/netns, deleted when dropped.
    struct PinnedNamespace(String);

    impl PinnedNamespace {
        fn create(address: &str) -> Self {
            let name = format!("tm-scan-{}", std::process::id());
            let ip = |args: &[&str]| {
                let status = std::process::Command::new("ip")
                    .args(args)
                    .status()
                    .expect("run ip");
                assert!(status.success(), "ip {args:?} (root?)");
            };
            ip(&["netns", "add", &name]);
            let pinned = PinnedNamespace(name);
            ip(&["-n", &pinned.0, "link", "set", "lo", "up"]);
            ip(&["-n", &pinned.0, "addr", "add", address, "dev", "lo"]);
            pinned
        }

        fn path(&self) -> PathBuf {
            PathBuf::from("/run/netns").join(&self.0)
        }
    }

    impl Drop for PinnedNamespace {
        fn drop(&mut self) {
            let _ = std::process::Command::new("ip")
                .args(["netns", "delete", &self.0])
                .status();
        }
    }

    /// As root: a thread in a pinned namespace holds a call to 10.200.0.1 (its own
    /// non-loopback address) and the server's side of it. Both sources must report the call,
    /// once, from the client's side only.
    #[test]
    fn both_socket_sources_report_a_call_in_another_namespace() {
        let pinned = PinnedNamespace::create("10.200.0.1/32");
        let path = pinned.path();
        let (sender, receiver) = std::sync::mpsc::channel();
        let (done_sender, done) = std::sync::mpsc::channel::<()>();
        let holder = std::thread::spawn(move || {
            let file = std::fs::File::open(&path).expect("open the namespace");
            netns::setns(&file).expect("setns");
            let listener = TcpListener::bind("10.200.0.1:0").expect("listen");
            let server = listener.local_addr().expect("addr");
            let client = TcpStream::connect(server).expect("connect");
            let (accepted, _) = listener.accept().expect("accept");
            sender
                .send((server, client.local_addr().expect("addr")))
                .expect("send");
            done.recv().ok();
            drop((listener, client, accepted));
        });
        let (server, client) = receiver.recv().expect("the holder's call");
        let mut found = Vec::new();
        for source in [SocketSource::Bpf, SocketSource::SockDiag] {
            let counters = Counters::default();
            let mut scanner = Scanner::new(ScanConfig {
                socket_source: source,
                ..ScanConfig::default()
            })
            .expect("scanner");
            let report = scanner.scan_once(&counters).expect("scan");
            let calls: Vec<&ConnectionSeen> = report
                .connections
                .iter()
                .filter(|c| c.server == server || c.server == client)
                .collect();
            assert_eq!(
                calls,
                vec![&ConnectionSeen {
                    client: ClientId {
                        ip: client.ip(),
                        pod_uid: None,
                    },
                    server,
                    protocol: Protocol::Tcp,
                }],
                "{source:?}"
            );
            found.push(counters.snapshot().bpf_scans);
        }
        done_sender.send(()).expect("release the holder");
        holder.join().expect("holder");
        assert_eq!(found, vec![1, 0]);
    }

    #[test]
    fn a_scan_of_this_host_sees_namespaces_and_sockets() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("listen");
        let _client = TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
        let counters = Counters::default();
        let mut scanner = Scanner::new(ScanConfig::default()).expect("scanner");
        scanner.scan_once(&counters).expect("scan");
        let snapshot = counters.snapshot();
        assert_eq!(snapshot.scans, 1);
        assert!(snapshot.namespaces_scanned >= 1);
        assert!(snapshot.sockets_scanned >= 2);
    }
}
