//! A node in miniature: pod network namespaces on a bridge in the host namespace, a dnsmasq
//! "cluster DNS", a pod cgroup, and cleanup of all of it on drop (also when a test fails).

#![allow(dead_code)]

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Fails the test with a clear message unless it runs as root.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "this integration test needs root (network namespaces, veth, bridge, cgroups, AF_PACKET): \
         run `cargo test -p trafficmap-sniffer` as root"
    );
}

/// Fails the test with a clear message unless `program` is on PATH.
pub fn require_program(program: &str, package: &str) {
    let found = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
        .unwrap_or(false);
    assert!(found, "`{program}` is missing: apt-get install {package}");
}

/// Random hex, from the kernel.
pub fn random_hex(bytes: usize) -> String {
    let mut buffer = vec![0u8; bytes];
    File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buffer))
        .expect("read /dev/urandom");
    buffer.iter().map(|b| format!("{b:02x}")).collect()
}

/// A random pod UID in Kubernetes' shape.
pub fn random_pod_uid() -> String {
    let hex = random_hex(16);
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// Runs a command and fails the test with its output if it fails.
pub fn run(program: &str, args: &[&str]) {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs `work` on a fresh thread inside the named network namespace; sockets it creates stay
/// in that namespace.
pub fn in_netns<T: Send + 'static>(netns: &str, work: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/run/netns/{netns}");
    std::thread::spawn(move || {
        let file = File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
        // SAFETY: setns on an nsfs descriptor; affects only this short-lived thread.
        let ret = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(ret, 0, "setns {path}: {}", io::Error::last_os_error());
        work()
    })
    .join()
    .expect("thread in netns")
}

/// One pod namespace: name, host-side veth, addresses.
#[derive(Debug, Clone)]
pub struct PodNet {
    /// `ip netns` name.
    pub netns: String,
    /// Host-side veth name.
    pub host_veth: String,
    /// IPv4 address (no prefix).
    pub ipv4: &'static str,
    /// IPv6 address (no prefix).
    pub ipv6: &'static str,
}

/// Everything the test created; removed on drop.
#[derive(Debug)]
pub struct Node {
    pub tag: String,
    pub bridge: String,
    pub pods: Vec<PodNet>,
    pub children: Vec<Child>,
    created_cgroups: Vec<PathBuf>,
}

impl Node {
    /// A bridge in the host namespace (no address) with one veth per pod namespace.
    pub fn new(pods: &[(&str, &'static str, &'static str)]) -> Node {
        let tag = random_hex(3);
        let mut node = Node {
            bridge: format!("tm{tag}br"),
            tag,
            pods: Vec::new(),
            children: Vec::new(),
            created_cgroups: Vec::new(),
        };
        run("ip", &["link", "add", &node.bridge, "type", "bridge"]);
        disable_ipv6(&node.bridge);
        run("ip", &["link", "set", &node.bridge, "up"]);
        for (role, ipv4, ipv6) in pods {
            let pod = PodNet {
                netns: format!("tm-t-{}-{role}", node.tag),
                host_veth: format!("tm{}{}", node.tag, &role[..1]),
                ipv4,
                ipv6,
            };
            node.pods.push(pod.clone());
            run("ip", &["netns", "add", &pod.netns]);
            run(
                "ip",
                &[
                    "link",
                    "add",
                    &pod.host_veth,
                    "type",
                    "veth",
                    "peer",
                    "name",
                    "eth0",
                    "netns",
                    &pod.netns,
                ],
            );
            disable_ipv6(&pod.host_veth);
            run(
                "ip",
                &["link", "set", &pod.host_veth, "master", &node.bridge, "up"],
            );
            let n = pod.netns.as_str();
            run(
                "ip",
                &["-n", n, "addr", "add", &format!("{ipv4}/24"), "dev", "eth0"],
            );
            run(
                "ip",
                &[
                    "-n",
                    n,
                    "addr",
                    "add",
                    &format!("{ipv6}/64"),
                    "dev",
                    "eth0",
                    "nodad",
                ],
            );
            run("ip", &["-n", n, "link", "set", "eth0", "up"]);
            run("ip", &["-n", n, "link", "set", "lo", "up"]);
        }
        node
    }

    /// A pod namespace that is not on the bridge: its addresses sit on a veth whose peer is in
    /// the same namespace, so they may repeat those of a pod on the bridge (no host-side veth).
    pub fn add_detached_pod(&mut self, role: &str, addresses: &[&str]) {
        let pod = PodNet {
            netns: format!("tm-t-{}-{role}", self.tag),
            host_veth: String::new(),
            ipv4: "",
            ipv6: "",
        };
        self.pods.push(pod.clone());
        let n = pod.netns.as_str();
        run("ip", &["netns", "add", n]);
        run(
            "ip",
            &[
                "-n", n, "link", "add", "d0", "type", "veth", "peer", "name", "d1",
            ],
        );
        for address in addresses {
            let prefix = if address.contains(':') { "128" } else { "32" };
            run(
                "ip",
                &[
                    "-n",
                    n,
                    "addr",
                    "add",
                    &format!("{address}/{prefix}"),
                    "dev",
                    "d0",
                    "nodad",
                ],
            );
        }
        run("ip", &["-n", n, "link", "set", "d0", "up"]);
        run("ip", &["-n", n, "link", "set", "d1", "up"]);
        run("ip", &["-n", n, "link", "set", "lo", "up"]);
    }

    /// The MAC address of `eth0` in a pod namespace.
    pub fn pod_mac(&self, role: &str) -> String {
        let netns = self.pod(role).netns.clone();
        let out = Command::new("ip")
            .args(["-n", &netns, "-br", "link", "show", "eth0"])
            .output()
            .expect("ip link show");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.split_whitespace()
            .nth(2)
            .unwrap_or_else(|| panic!("no MAC in `{text}`"))
            .to_owned()
    }

    /// The pod namespace with this role.
    pub fn pod(&self, role: &str) -> &PodNet {
        let suffix = format!("-{role}");
        self.pods
            .iter()
            .find(|p| p.netns.ends_with(&suffix))
            .expect("pod role")
    }

    /// Starts a process inside a pod namespace; it is killed on drop.
    pub fn spawn_in(&mut self, role: &str, program: &str, args: &[&str]) -> u32 {
        let netns = self.pod(role).netns.clone();
        let child = Command::new("ip")
            .args(["netns", "exec", &netns, program])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {program}: {e}"));
        let pid = child.id();
        self.children.push(child);
        pid
    }

    /// Starts a process in the host namespace (a hostNetwork pod); it is killed on drop.
    pub fn spawn_on_host(&mut self, program: &str, args: &[&str]) -> u32 {
        let child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {program}: {e}"));
        let pid = child.id();
        self.children.push(child);
        pid
    }

    /// Gives the host `host_ip/32` on the bridge and a /32 route to `pod_ip` only, so a
    /// host-namespace process can reach that one pod (both go away with the bridge).
    pub fn route_host_to(&self, host_ip: &str, pod_ip: &str) {
        run(
            "ip",
            &["addr", "add", &format!("{host_ip}/32"), "dev", &self.bridge],
        );
        run(
            "ip",
            &[
                "route",
                "add",
                &format!("{pod_ip}/32"),
                "dev",
                &self.bridge,
                "src",
                host_ip,
            ],
        );
    }

    /// Creates `kubepods[/<qos>]/pod<uid>` in the cgroup v2 hierarchy and moves `pid` in
    /// (`qos` None is the Guaranteed layout).
    pub fn place_in_pod_cgroup(&mut self, pid: u32, qos: Option<&str>, pod_uid: &str) {
        let root = cgroup2_root();
        let mut dir = root.clone();
        let pod = format!("pod{pod_uid}");
        let parts: Vec<&str> = ["kubepods"]
            .into_iter()
            .chain(qos)
            .chain([pod.as_str()])
            .collect();
        for part in parts {
            dir.push(part);
            if !dir.exists() {
                fs::create_dir(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
                self.created_cgroups.push(dir.clone());
            }
        }
        fs::write(dir.join("cgroup.procs"), pid.to_string())
            .unwrap_or_else(|e| panic!("move {pid} into {}: {e}", dir.display()));
    }
}

/// Where cgroup v2 is mounted: `/sys/fs/cgroup` (unified) or `/sys/fs/cgroup/unified` (hybrid).
pub fn cgroup2_root() -> PathBuf {
    ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.join("cgroup.controllers").exists())
        .expect("no cgroup v2 hierarchy at /sys/fs/cgroup or /sys/fs/cgroup/unified")
}

fn disable_ipv6(interface: &str) {
    // Keeps the host side free of addresses, link-local included.
    let _ = fs::write(
        format!("/proc/sys/net/ipv6/conf/{interface}/disable_ipv6"),
        "1",
    );
}

impl Drop for Node {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        for dir in self.created_cgroups.iter().rev() {
            // A cgroup can be removed once its processes are gone; they were just reaped.
            let deadline = Instant::now() + Duration::from_secs(5);
            while fs::remove_dir(dir).is_err() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            if dir.exists() {
                eprintln!("cleanup: could not remove cgroup {}", dir.display());
            }
        }
        for pod in &self.pods {
            if !pod.host_veth.is_empty() {
                let _ = Command::new("ip")
                    .args(["link", "del", &pod.host_veth])
                    .output();
            }
            let _ = Command::new("ip")
                .args(["netns", "del", &pod.netns])
                .output();
        }
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge])
            .output();
    }
}

/// A DNS query for `name` of type `qtype` (1 = A, 28 = AAAA).
pub fn dns_query(id: u16, name: &str, qtype: u16) -> Vec<u8> {
    let mut message = id.to_be_bytes().to_vec();
    message.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.split('.') {
        message.push(label.len() as u8);
        message.extend_from_slice(label.as_bytes());
    }
    message.push(0);
    message.extend_from_slice(&qtype.to_be_bytes());
    message.extend_from_slice(&[0, 1]);
    message
}

/// The RCODE and answer count of a response.
pub fn rcode_and_answers(response: &[u8]) -> (u8, u16) {
    (
        response[3] & 0x0f,
        u16::from_be_bytes([response[6], response[7]]),
    )
}

/// Sends a query over UDP (from the calling thread's namespace) and returns the response.
pub fn udp_query(server: SocketAddr, name: &str, qtype: u16) -> io::Result<Vec<u8>> {
    let local = if server.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    };
    let socket = UdpSocket::bind(local)?;
    socket.set_read_timeout(Some(Duration::from_millis(500)))?;
    socket.send_to(&dns_query(0x4242, name, qtype), server)?;
    let mut buffer = [0u8; 1500];
    let (n, _) = socket.recv_from(&mut buffer)?;
    Ok(buffer[..n].to_vec())
}

/// Sends one UDP query from `source`, an address the calling thread's namespace need not
/// have (IP_TRANSPARENT), without waiting for a response.
pub fn spoofed_udp_query(source: std::net::Ipv4Addr, server: SocketAddr, name: &str, qtype: u16) {
    use std::os::fd::FromRawFd;
    // SAFETY: plain socket(2); the descriptor is owned by the UdpSocket below.
    let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    assert!(raw >= 0, "socket: {}", io::Error::last_os_error());
    // SAFETY: `raw` is a fresh descriptor nobody else owns.
    let socket = unsafe { UdpSocket::from_raw_fd(raw) };
    let one: libc::c_int = 1;
    // SAFETY: setsockopt with a valid int of the given size.
    let ret = unsafe {
        libc::setsockopt(
            raw,
            libc::SOL_IP,
            libc::IP_TRANSPARENT,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(ret, 0, "IP_TRANSPARENT: {}", io::Error::last_os_error());
    // SAFETY: zeroed sockaddr_in is valid; we fill family, port and address.
    let mut address: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    address.sin_family = libc::AF_INET as libc::sa_family_t;
    address.sin_addr.s_addr = u32::from(source).to_be();
    // SAFETY: `address` is a valid sockaddr_in of the given length.
    let ret = unsafe {
        libc::bind(
            raw,
            (&address as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    };
    assert_eq!(ret, 0, "bind {source}: {}", io::Error::last_os_error());
    socket
        .send_to(&dns_query(0x4444, name, qtype), server)
        .unwrap_or_else(|e| panic!("send from {source}: {e}"));
}

/// Sends a query over TCP (2-byte length prefix) and returns the response.
pub fn tcp_query(server: SocketAddr, name: &str, qtype: u16) -> io::Result<Vec<u8>> {
    let mut stream = TcpStream::connect_timeout(&server, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    let query = dns_query(0x4343, name, qtype);
    let mut framed = (query.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(&query);
    stream.write_all(&framed)?;
    let mut length = [0u8; 2];
    stream.read_exact(&mut length)?;
    let mut response = vec![0u8; usize::from(u16::from_be_bytes(length))];
    stream.read_exact(&mut response)?;
    Ok(response)
}

/// Whether a path exists (for readable asserts).
pub fn exists(path: &str) -> bool {
    Path::new(path).exists()
}
