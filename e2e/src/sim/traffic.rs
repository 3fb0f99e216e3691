//! A pod's process: `trafficmap-node traffic --listen 8080/TCP --call host:80/TCP/every=1s`.
//! It listens on its ports (TCP and UDP echo) and makes its calls. Host names are resolved
//! with the C library's resolver, so inside a pod (run through `ip netns exec`, which mounts the
//! pod's resolv.conf) they are real DNS queries to cluster DNS, with the pod's search list.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream, ToSocketAddrs, UdpSocket};
use std::str::FromStr;
use std::thread;
use std::time::Duration;

use super::spec::{Pattern, Protocol};

/// How long one call may take to connect or to get its answer.
const CALL_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest time a repeated call keeps its connection open (so socket scans see it).
const MAX_HOLD: Duration = Duration::from_secs(2);
/// How long a `once` call keeps its connection open.
const ONCE_HOLD: Duration = Duration::from_secs(3);
/// Pause before retrying a failed `once` or `persistent` call.
const RETRY_PAUSE: Duration = Duration::from_secs(1);
/// How often a persistent connection sends a ping.
const PERSISTENT_PING: Duration = Duration::from_secs(1);

/// A pod process's flags, as `trafficmap-node traffic` and `trafficmap-play` take them.
#[derive(clap::Args, Clone, Debug)]
pub struct TrafficArgs {
    /// `PORT/PROTO` to listen on (repeatable).
    #[arg(long = "listen")]
    pub listen: Vec<ListenArg>,
    /// `HOST:PORT/PROTO/once|every=<d>|persistent` (repeatable).
    #[arg(long = "call")]
    pub calls: Vec<CallArg>,
    /// Exit once every call is made, if nothing listens and no call repeats (Job pods).
    #[arg(long)]
    pub exit_when_done: bool,
}

impl TrafficArgs {
    /// Listens and makes the calls; see [`run`].
    pub fn run(self) {
        run(self.listen, self.calls, self.exit_when_done);
    }
}

/// A listening port: `8080/TCP`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ListenArg {
    /// Port.
    pub port: u16,
    /// Protocol.
    pub protocol: Protocol,
}

impl FromStr for ListenArg {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (port, protocol) = s.split_once('/').unwrap_or((s, "TCP"));
        Ok(ListenArg {
            port: port.parse().map_err(|e| format!("listen {s:?}: {e}"))?,
            protocol: protocol.parse()?,
        })
    }
}

impl std::fmt::Display for ListenArg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.port, self.protocol)
    }
}

/// A call: `host:port/PROTO/once|every=<d>|persistent`; host is a DNS name or an IPv4 address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallArg {
    /// DNS name or IP.
    pub host: String,
    /// Port.
    pub port: u16,
    /// Protocol.
    pub protocol: Protocol,
    /// When.
    pub pattern: Pattern,
}

impl FromStr for CallArg {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let mut parts = s.splitn(3, '/');
        let address = parts.next().unwrap_or_default();
        let protocol = parts.next().unwrap_or("TCP").parse()?;
        let pattern = parts.next().unwrap_or("once").parse()?;
        let (host, port) = address
            .rsplit_once(':')
            .ok_or_else(|| format!("call {s:?}: expected host:port/PROTO/pattern"))?;
        Ok(CallArg {
            host: host.to_string(),
            port: port.parse().map_err(|e| format!("call {s:?}: {e}"))?,
            protocol,
            pattern,
        })
    }
}

impl std::fmt::Display for CallArg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let pattern = match self.pattern {
            Pattern::Once => "once".to_string(),
            Pattern::Persistent => "persistent".to_string(),
            Pattern::Every(d) => format!("every={}ms", d.as_millis()),
        };
        write!(
            f,
            "{}:{}/{}/{}",
            self.host, self.port, self.protocol, pattern
        )
    }
}

/// Runs the listeners and calls. With `exit_when_done` (pods that are not restarted: Jobs), it
/// returns once every call is made if nothing listens and no call repeats; otherwise it runs
/// until killed (a pod with nothing to do sleeps, like a pause container).
pub fn run(listen: Vec<ListenArg>, calls: Vec<CallArg>, exit_when_done: bool) {
    let mut workers = Vec::new();
    let serving = !listen.is_empty();
    for arg in listen {
        workers.push(thread::spawn(move || serve(arg)));
    }
    let endless = calls.iter().any(|c| !matches!(c.pattern, Pattern::Once));
    for call in calls {
        workers.push(thread::spawn(move || make_calls(&call)));
    }
    if exit_when_done && !serving && !endless {
        for worker in workers {
            let _ = worker.join();
        }
        eprintln!("traffic: all calls made");
        return;
    }
    loop {
        thread::park();
    }
}

fn serve(arg: ListenArg) {
    let address = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), arg.port);
    match arg.protocol {
        Protocol::TCP => {
            let listener = loop {
                match TcpListener::bind(address) {
                    Ok(l) => break l,
                    Err(e) => {
                        eprintln!("traffic: listen {arg}: {e}; retrying");
                        thread::sleep(RETRY_PAUSE);
                    }
                }
            };
            eprintln!("traffic: listening on {arg}");
            for stream in listener.incoming().flatten() {
                thread::spawn(move || echo_tcp(stream));
            }
        }
        Protocol::UDP => {
            let socket = loop {
                match UdpSocket::bind(address) {
                    Ok(s) => break s,
                    Err(e) => {
                        eprintln!("traffic: listen {arg}: {e}; retrying");
                        thread::sleep(RETRY_PAUSE);
                    }
                }
            };
            eprintln!("traffic: listening on {arg}");
            let mut buffer = [0u8; 1500];
            loop {
                if let Ok((n, peer)) = socket.recv_from(&mut buffer) {
                    let _ = socket.send_to(&buffer[..n], peer);
                }
            }
        }
    }
}

fn echo_tcp(mut stream: TcpStream) {
    let mut buffer = [0u8; 1024];
    loop {
        match stream.read(&mut buffer) {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if stream.write_all(&buffer[..n]).is_err() {
                    return;
                }
            }
        }
    }
}

fn make_calls(call: &CallArg) {
    match call.pattern {
        Pattern::Once => loop {
            match call_once(call, ONCE_HOLD) {
                Ok(peer) => {
                    eprintln!("traffic: {call}: answered by {peer}");
                    return;
                }
                Err(e) => {
                    eprintln!("traffic: {call}: {e}; retrying");
                    thread::sleep(RETRY_PAUSE);
                }
            }
        },
        Pattern::Every(every) => {
            let hold = (every * 3 / 4).min(MAX_HOLD);
            loop {
                let started = std::time::Instant::now();
                match call_once(call, hold) {
                    Ok(peer) => eprintln!("traffic: {call}: answered by {peer}"),
                    Err(e) => eprintln!("traffic: {call}: {e}"),
                }
                thread::sleep(every.saturating_sub(started.elapsed()));
            }
        }
        Pattern::Persistent => loop {
            if let Err(e) = hold_open(call) {
                eprintln!("traffic: {call}: {e}; reconnecting");
            }
            thread::sleep(RETRY_PAUSE);
        },
    }
}

/// Resolves the call's host (a real DNS query for names) to its first IPv4 address.
fn resolve(call: &CallArg) -> Result<SocketAddr, String> {
    if let Ok(ip) = call.host.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, call.port));
    }
    let addresses = (call.host.as_str(), call.port)
        .to_socket_addrs()
        .map_err(|e| format!("resolve {}: {e}", call.host))?;
    let addresses: Vec<SocketAddr> = addresses.collect();
    addresses
        .iter()
        .find(|a| a.is_ipv4())
        .or(addresses.first())
        .copied()
        .ok_or_else(|| format!("resolve {}: no address", call.host))
}

/// One call: connect, send a ping, read the echo, keep the connection for `hold`.
fn call_once(call: &CallArg, hold: Duration) -> Result<SocketAddr, String> {
    let address = resolve(call)?;
    match call.protocol {
        Protocol::TCP => {
            let mut stream = TcpStream::connect_timeout(&address, CALL_TIMEOUT)
                .map_err(|e| format!("connect {address}: {e}"))?;
            ping_tcp(&mut stream)?;
            thread::sleep(hold);
            Ok(address)
        }
        Protocol::UDP => {
            let socket = udp_connected(address)?;
            ping_udp(&socket)?;
            thread::sleep(hold);
            Ok(address)
        }
    }
}

/// A persistent call: one connection, pinged every second until it breaks.
fn hold_open(call: &CallArg) -> Result<(), String> {
    let address = resolve(call)?;
    match call.protocol {
        Protocol::TCP => {
            let mut stream = TcpStream::connect_timeout(&address, CALL_TIMEOUT)
                .map_err(|e| format!("connect {address}: {e}"))?;
            eprintln!("traffic: {call}: connected to {address}, holding the connection");
            loop {
                ping_tcp(&mut stream)?;
                thread::sleep(PERSISTENT_PING);
            }
        }
        Protocol::UDP => {
            let socket = udp_connected(address)?;
            eprintln!("traffic: {call}: connected to {address}, holding the socket");
            loop {
                // A lost datagram is no reason to drop the association.
                if let Err(e) = ping_udp(&socket) {
                    eprintln!("traffic: {call}: {e}");
                }
                thread::sleep(PERSISTENT_PING);
            }
        }
    }
}

fn ping_tcp(stream: &mut TcpStream) -> Result<(), String> {
    stream
        .set_read_timeout(Some(CALL_TIMEOUT))
        .map_err(|e| e.to_string())?;
    stream
        .write_all(b"ping\n")
        .map_err(|e| format!("send: {e}"))?;
    let mut buffer = [0u8; 5];
    stream
        .read_exact(&mut buffer)
        .map_err(|e| format!("no answer: {e}"))
}

fn udp_connected(address: SocketAddr) -> Result<UdpSocket, String> {
    let local = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0);
    let socket = UdpSocket::bind(local).map_err(|e| format!("bind: {e}"))?;
    socket
        .connect(address)
        .map_err(|e| format!("connect {address}: {e}"))?;
    socket
        .set_read_timeout(Some(CALL_TIMEOUT))
        .map_err(|e| e.to_string())?;
    Ok(socket)
}

fn ping_udp(socket: &UdpSocket) -> Result<(), String> {
    socket.send(b"ping\n").map_err(|e| format!("send: {e}"))?;
    let mut buffer = [0u8; 16];
    socket
        .recv(&mut buffer)
        .map(|_| ())
        .map_err(|e| format!("no answer: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn call_arguments_round_trip() {
        let arg: CallArg = "server.ns.svc.cluster.local:80/TCP/every=1s"
            .parse()
            .expect("parses");
        assert_eq!(arg.host, "server.ns.svc.cluster.local");
        assert_eq!(arg.port, 80);
        assert_eq!(arg.pattern, Pattern::Every(Duration::from_secs(1)));
        assert_eq!(arg.to_string().parse::<CallArg>(), Ok(arg));
        let udp: CallArg = "10.96.0.20:53/UDP/persistent".parse().expect("parses");
        assert_eq!(udp.protocol, Protocol::UDP);
        assert_eq!("8080/UDP".parse::<ListenArg>().map(|l| l.port), Ok(8080));
    }

    #[test]
    fn tcp_call_reaches_a_local_listener() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                thread::spawn(move || echo_tcp(stream));
            }
        });
        let call: CallArg = format!("127.0.0.1:{port}/TCP/once")
            .parse()
            .expect("parses");
        assert!(call_once(&call, Duration::ZERO).is_ok());
    }
}
