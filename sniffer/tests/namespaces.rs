//! End to end, as root: a "dns" pod running dnsmasq and TCP/UDP servers and a "cli" pod in a
//! kubepods cgroup, both on a bridge in the host namespace like a real node. The sniffer runs in
//! the host namespace with `--output jsonl` and must report the client's DNS answers (A, AAAA,
//! CNAME chain, TCP) and its connections (opened before and after it started, TCP v4/v6 and
//! connected UDP) with the pod UID, and nothing from the servers' side. A hostNetwork "pod"
//! (a host-namespace process in a kubepods cgroup) is attributed through its socket. Sockets are
//! read with the BPF iterator, loaded by a helper run of the sniffer.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use support::*;
use trafficmap_api::observed::Protocol;
use trafficmap_api::report::Observation;

const DNS_V4: &str = "10.123.0.2";
const DNS_V6: &str = "fd00:123::2";
const CLI_V4: &str = "10.123.0.3";
const CLI_V6: &str = "fd00:123::3";
/// The host's address on the bridge, for the hostNetwork client only.
const HOST_V4: &str = "10.123.0.1";
/// Held by the "dup" pod only; the client sends one query from it.
const SPOOF_V4: &str = "10.123.0.77";
const A_QTYPE: u16 = 1;
const AAAA_QTYPE: u16 = 28;
const SNIFFER_RUN: &str = "8";

fn addr(ip: &str, port: u16) -> SocketAddr {
    SocketAddr::new(ip.parse().expect("ip"), port)
}

/// Accepts connections until stopped and keeps them open.
fn serve_tcp(listener: TcpListener, stop: Arc<AtomicBool>) {
    listener.set_nonblocking(true).expect("nonblocking");
    std::thread::spawn(move || {
        let mut held = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            match listener.accept() {
                Ok((stream, _)) => held.push(stream),
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    });
}

/// Waits until `pid` runs `program` (its shell connected and exec'd).
fn wait_for_exec(pid: u32, program: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        if comm.trim() == program {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("process {pid} did not become {program} (its connection failed?)");
}

/// Stops the server threads when the test ends, however it ends.
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Kills the sniffer if the test fails while it runs.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn dns_answers_and_connections_of_a_pod_are_reported_with_its_uid() {
    require_root();
    require_program("ip", "iproute2");
    require_program("dnsmasq", "dnsmasq-base");

    let mut node = Node::new(&[("dns", DNS_V4, DNS_V6), ("cli", CLI_V4, CLI_V6)]);
    let tag = node.tag.clone();
    let svc = format!("svc-{tag}.test.local");
    let app = format!("app-{tag}.test.local");
    let www = format!("www-{tag}.test.local");
    let web = format!("web-{tag}.test.local");
    let nope = format!("nope-{tag}.test.local");
    let spoof = format!("spoof-{tag}.test.local");

    // "Cluster DNS" in the dns pod.
    node.spawn_in(
        "dns",
        "dnsmasq",
        &[
            "--keep-in-foreground",
            "--conf-file=/dev/null",
            "--no-resolv",
            "--no-hosts",
            "--bind-interfaces",
            "--except-interface=lo",
            &format!("--listen-address={DNS_V4}"),
            &format!("--listen-address={DNS_V6}"),
            "--pid-file=",
            &format!("--address=/{svc}/10.123.0.50"),
            &format!("--address=/{svc}/fd00:123::50"),
            &format!("--address=/{spoof}/10.123.0.70"),
            &format!("--host-record={web},10.123.0.60,fd00:123::60"),
            &format!("--cname={www},{web}"),
            &format!("--cname={app},{www}"),
            "--local=/test.local/",
            "--local-ttl=300",
        ],
    );
    // The client pod: a process in the pod cgroup keeps the namespace's identity.
    let pod_uid = random_pod_uid();
    let pause = node.spawn_in("cli", "sleep", &["600"]);
    node.place_in_pod_cgroup(pause, Some("besteffort"), &pod_uid);
    let cli = node.pod("cli").netns.clone();
    let dns = node.pod("dns").netns.clone();

    // Another pod with the client's addresses, and one of its own, off the bridge.
    node.add_detached_pod("dup", &[CLI_V4, CLI_V6, SPOOF_V4]);
    let dup_uid = random_pod_uid();
    let dup_pause = node.spawn_in("dup", "sleep", &["600"]);
    node.place_in_pod_cgroup(dup_pause, Some("burstable"), &dup_uid);
    // The dns pod answers SPOOF_V4 at the client's MAC (it would get no ARP reply).
    let cli_mac = node.pod_mac("cli");
    run(
        "ip",
        &[
            "-n",
            &dns,
            "neigh",
            "replace",
            SPOOF_V4,
            "lladdr",
            &cli_mac,
            "dev",
            "eth0",
            "nud",
            "permanent",
        ],
    );

    // Wait for dnsmasq to answer.
    let svc_q = svc.clone();
    let ready = in_netns(&cli, move || {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if udp_query(addr(DNS_V4, 53), &svc_q, A_QTYPE).is_ok() {
                return true;
            }
        }
        false
    });
    assert!(ready, "dnsmasq did not answer in the dns namespace");

    // Servers in the dns pod.
    let stop = Arc::new(AtomicBool::new(false));
    let _stop_servers = StopOnDrop(Arc::clone(&stop));
    let (l8080, l8081, l8082, _udp9090) = in_netns(&dns, || {
        (
            TcpListener::bind(addr(DNS_V4, 8080)).expect("listen 8080"),
            TcpListener::bind(addr(DNS_V4, 8081)).expect("listen 8081"),
            TcpListener::bind(addr(DNS_V6, 8082)).expect("listen 8082"),
            UdpSocket::bind(addr(DNS_V4, 9090)).expect("bind 9090"),
        )
    });
    for listener in [l8080, l8081, l8082] {
        serve_tcp(listener, Arc::clone(&stop));
    }

    // A connection that exists before the sniffer starts.
    let mut before = in_netns(&cli, || {
        TcpStream::connect(addr(DNS_V4, 8080)).expect("connect 8080")
    });
    before.write_all(b"hello before").expect("send");

    // A hostNetwork "pod" (Guaranteed QoS cgroup layout) holding a connection from the host
    // namespace: attributed through the socket's owning process.
    let host_pod_uid = random_pod_uid();
    node.route_host_to(HOST_V4, DNS_V4);
    let host_client = node.spawn_on_host(
        "bash",
        &[
            "-c",
            &format!("exec 3<>/dev/tcp/{DNS_V4}/8080 && exec sleep 600"),
        ],
    );
    node.place_in_pod_cgroup(host_client, None, &host_pod_uid);
    wait_for_exec(host_client, "sleep");

    // The sniffer, in the host namespace.
    let mut child = Command::new(env!("CARGO_BIN_EXE_trafficmap-sniffer"))
        .args([
            "--output",
            "jsonl",
            "--duration",
            SNIFFER_RUN,
            "--scan-interval",
            "500ms",
            // Not `auto`: a sniffer that cannot load its BPF iterator (in the helper run of
            // itself) must fail this test rather than fall back to sock_diag.
            "--socket-source",
            "bpf",
        ])
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start sniffer");
    let stderr = child.stderr.take().expect("stderr");
    let mut stdout = child.stdout.take().expect("stdout");
    let sniffer = KillOnDrop(child);
    let (lines_tx, lines_rx) = mpsc::channel();
    let stderr_reader = std::thread::spawn(move || {
        let mut all = Vec::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = lines_tx.send(line.clone());
            all.push(line);
        }
        all
    });
    let stdout_reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stdout.read_to_string(&mut text);
        text
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let line = lines_rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("sniffer logged its first scan");
        if line.contains("first socket scan done") {
            break;
        }
    }

    // Traffic after the sniffer started.
    let (svc_a, app_a, nope_a) = (svc.clone(), app.clone(), nope.clone());
    let spoof_a = spoof.clone();
    let www_q = www.clone();
    let svc_aaaa = svc.clone();
    let clients = in_netns(&cli, move || {
        let new_tcp = TcpStream::connect(addr(DNS_V4, 8081)).expect("connect 8081");
        let new_tcp6 = TcpStream::connect(addr(DNS_V6, 8082)).expect("connect 8082");
        let udp = UdpSocket::bind("0.0.0.0:0").expect("udp");
        udp.connect(addr(DNS_V4, 9090)).expect("connect udp");
        udp.send(b"not dns").expect("udp send");
        let a = udp_query(addr(DNS_V4, 53), &svc_a, A_QTYPE).expect("A");
        assert_eq!(rcode_and_answers(&a), (0, 1));
        let aaaa = udp_query(addr(DNS_V6, 53), &svc_aaaa, AAAA_QTYPE).expect("AAAA over IPv6");
        assert_eq!(rcode_and_answers(&aaaa), (0, 1));
        let chain = udp_query(addr(DNS_V4, 53), &app_a, A_QTYPE).expect("CNAME chain");
        assert_eq!(rcode_and_answers(&chain), (0, 3));
        let tcp = tcp_query(addr(DNS_V4, 53), &www_q, AAAA_QTYPE).expect("AAAA over TCP");
        assert_eq!(rcode_and_answers(&tcp), (0, 2));
        let nx = udp_query(addr(DNS_V4, 53), &nope_a, A_QTYPE).expect("NXDOMAIN");
        assert_eq!(rcode_and_answers(&nx).0, 3);
        spoofed_udp_query(
            SPOOF_V4.parse().expect("ip"),
            addr(DNS_V4, 53),
            &spoof_a,
            A_QTYPE,
        );
        (new_tcp, new_tcp6, udp)
    });
    before.write_all(b"more non-DNS traffic").expect("send");
    clients
        .0
        .try_clone()
        .and_then(|mut s| s.write_all(b"payload"))
        .expect("send");

    let stdout = stdout_reader.join().expect("stdout reader");
    let stderr = stderr_reader.join().expect("stderr reader");
    drop(sniffer);
    drop(clients);
    let context = format!("stdout:\n{stdout}\nstderr:\n{}", stderr.join("\n"));
    if std::env::var_os("TRAFFICMAP_TEST_VERBOSE").is_some() {
        eprintln!("{context}");
    }

    assert!(
        stderr
            .iter()
            .any(|l| l.contains("scanning sockets with the BPF iterator")),
        "{context}"
    );
    let observations: Vec<Observation> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad line {l}: {e}\n{context}")))
        .collect();
    for observation in &observations {
        observation
            .validate()
            .unwrap_or_else(|e| panic!("{observation:?}: {e}"));
    }
    let dns_of = |client: &str, name: &str| -> Vec<(Vec<IpAddr>, Option<String>)> {
        observations
            .iter()
            .filter_map(|o| match o {
                Observation::Dns(d) if d.client.ip.to_string() == client && d.name == name => {
                    Some((d.ips.clone(), d.client.pod_uid.clone()))
                }
                _ => None,
            })
            .collect()
    };
    let ips = |list: &[&str]| {
        list.iter()
            .map(|s| s.parse().expect("ip"))
            .collect::<Vec<IpAddr>>()
    };
    let uid = Some(pod_uid.clone());

    // DNS: A over IPv4, AAAA over IPv6, CNAME chain, TCP; once each despite two veth copies.
    assert_eq!(
        dns_of(CLI_V4, &svc),
        vec![(ips(&["10.123.0.50"]), uid.clone())],
        "{context}"
    );
    assert_eq!(
        dns_of(CLI_V6, &svc),
        vec![(ips(&["fd00:123::50"]), uid.clone())],
        "{context}"
    );
    assert_eq!(
        dns_of(CLI_V4, &app),
        vec![(ips(&["10.123.0.60"]), uid.clone())],
        "{context}"
    );
    assert_eq!(
        dns_of(CLI_V4, &www),
        vec![(ips(&["fd00:123::60"]), uid.clone())],
        "{context}"
    );
    assert!(
        dns_of(CLI_V4, &web).is_empty(),
        "CNAME targets are not reported as names\n{context}"
    );
    assert!(
        dns_of(CLI_V4, &nope).is_empty(),
        "NXDOMAIN is not an answer\n{context}"
    );
    // Sent from an address of "dup" only, delivered on the client's veth: the client's.
    assert_eq!(
        dns_of(SPOOF_V4, &spoof),
        vec![(ips(&["10.123.0.70"]), uid.clone())],
        "the veth, not the address, names the client\n{context}"
    );
    assert!(
        !observations.iter().any(|o| matches!(o,
            Observation::Dns(d) if d.client.pod_uid.as_deref() == Some(dup_uid.as_str()))),
        "no DNS answer is the dup pod's\n{context}"
    );

    // Connections of the client pod, and none of the servers.
    let connections: Vec<(String, Option<String>, SocketAddr, Protocol)> = observations
        .iter()
        .filter_map(|o| match o {
            Observation::Connection(c) => Some((
                c.client.ip.to_string(),
                c.client.pod_uid.clone(),
                SocketAddr::new(c.server_ip, c.server_port),
                c.protocol,
            )),
            _ => None,
        })
        .collect();
    let host_uid = Some(host_pod_uid.clone());
    for (client, server, protocol, uid) in [
        (CLI_V4, addr(DNS_V4, 8080), Protocol::Tcp, &uid),
        (CLI_V4, addr(DNS_V4, 8081), Protocol::Tcp, &uid),
        (CLI_V6, addr(DNS_V6, 8082), Protocol::Tcp, &uid),
        (CLI_V4, addr(DNS_V4, 9090), Protocol::Udp, &uid),
        (HOST_V4, addr(DNS_V4, 8080), Protocol::Tcp, &host_uid),
    ] {
        let found: Vec<_> = connections
            .iter()
            .filter(|(c, _, s, p)| c == client && *s == server && *p == protocol)
            .collect();
        assert_eq!(
            found.len(),
            1,
            "connection {client} -> {server} {protocol:?} reported once\n{context}"
        );
        assert_eq!(
            &found[0].1, uid,
            "pod UID of {client} -> {server}\n{context}"
        );
    }
    assert!(
        !connections.iter().any(|(c, ..)| c == DNS_V4 || c == DNS_V6),
        "server-side sockets are not calls\n{context}"
    );

    // The kernel filter let no other traffic through, and copies were recognised.
    let counters: serde_json::Value = stderr
        .iter()
        .find_map(|l| {
            l.split_once("final counters ")
                .map(|(_, json)| json.to_owned())
        })
        .and_then(|json| serde_json::from_str(&json).ok())
        .unwrap_or_else(|| panic!("no final counters\n{context}"));
    assert_eq!(counters["parse_errors"]["not_dns"], 0, "{context}");
    assert!(counters["frames"].as_u64() > Some(0), "{context}");
    assert!(counters["dns_copies"].as_u64() >= Some(4), "{context}");
    assert_eq!(counters["kernel_drops"], 0, "{context}");
    // A, AAAA, CNAME chain, TCP and the spoofed one: each named by the client's veth.
    assert!(
        counters["dns_client_by_interface"].as_u64() >= Some(5),
        "{context}"
    );
    assert!(
        counters["dns_client_mismatch"].as_u64() >= Some(1),
        "{context}"
    );
}
