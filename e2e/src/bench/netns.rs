//! The bench's network namespaces: `tmbgen` (the DNS generator) and `tmbsnf` (where the
//! sniffer and tcpdump capture), joined by the veth pair `tmbg0`/`tmbs0`, addresses from
//! 10.200.0.0/24 inside them only. Removed when dropped, when the bench is interrupted (see
//! [`install_interrupt_cleanup`]), and before a run starts (what a killed run left).

use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};

use super::{BenchError, Result, io_context};

/// Namespace of the DNS generator.
pub const GENERATOR_NS: &str = "tmbgen";
/// Namespace where the sniffer and tcpdump capture.
pub const CAPTURE_NS: &str = "tmbsnf";
/// Generator address (the DNS server's).
pub const GENERATOR_IP: &str = "10.200.0.1";
/// Capture-side address (the DNS client's).
pub const CAPTURE_IP: &str = "10.200.0.2";
/// The generator's end of the veth.
pub const GENERATOR_LINK: &str = "tmbg0";
const CAPTURE_LINK: &str = "tmbs0";

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

fn ip(args: &[&str]) -> Result<Output> {
    Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(io_context(format!("ip {}", args.join(" "))))
}

fn ip_ok(args: &[&str]) -> Result<()> {
    let out = ip(args)?;
    if out.status.success() {
        Ok(())
    } else {
        Err(BenchError::Failed(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// Deletes the bench's namespaces (their veth ends go with them); silent when absent.
pub fn remove_all() {
    for ns in [GENERATOR_NS, CAPTURE_NS] {
        let _ = ip(&["netns", "del", ns]);
    }
}

/// The two namespaces and their veth, up and addressed; removed on drop.
#[derive(Debug)]
pub struct VethPair;

impl VethPair {
    /// Creates them (after removing what an earlier, killed run left).
    pub fn create() -> Result<Self> {
        remove_all();
        let pair = VethPair;
        ip_ok(&["netns", "add", GENERATOR_NS])?;
        ip_ok(&["netns", "add", CAPTURE_NS])?;
        ip_ok(&[
            "link",
            "add",
            GENERATOR_LINK,
            "netns",
            GENERATOR_NS,
            "type",
            "veth",
            "peer",
            "name",
            CAPTURE_LINK,
            "netns",
            CAPTURE_NS,
        ])?;
        for (ns, link, addr) in [
            (GENERATOR_NS, GENERATOR_LINK, GENERATOR_IP),
            (CAPTURE_NS, CAPTURE_LINK, CAPTURE_IP),
        ] {
            let cidr = format!("{addr}/24");
            ip_ok(&["-n", ns, "addr", "add", &cidr, "dev", link])?;
            ip_ok(&["-n", ns, "link", "set", link, "up"])?;
            ip_ok(&["-n", ns, "link", "set", "lo", "up"])?;
        }
        Ok(pair)
    }
}

impl Drop for VethPair {
    fn drop(&mut self) {
        remove_all();
    }
}

/// A command run inside namespace `ns` (`ip netns exec`, which execs: the child's pid is the
/// program's).
pub fn command_in(ns: &str, program: &std::path::Path) -> Command {
    let mut command = Command::new("ip");
    command.args(["netns", "exec", ns]).arg(program);
    command
}

/// GET `url` from inside namespace `ns` (the sniffer's metrics listen there).
pub fn http_get_in(ns: &str, url: &str) -> Result<String> {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "curl", "-sS", "--max-time", "10", url])
        .stdin(Stdio::null())
        .output()
        .map_err(io_context(format!("curl {url} in {ns}")))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(BenchError::Failed(format!(
            "curl {url} in {ns}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

extern "C" fn on_interrupt(_signal: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Makes SIGINT and SIGTERM set a flag the bench polls ([`interrupted`]), so that it stops
/// between steps and its guards remove the namespaces and processes.
pub fn install_interrupt_cleanup() {
    let handler = on_interrupt as extern "C" fn(libc::c_int);
    for signal in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe {
            libc::signal(signal, handler as libc::sighandler_t);
        }
    }
}

/// Fails once Ctrl-C (or SIGTERM) was received.
pub fn interrupted() -> Result<()> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        Err(BenchError::Failed("interrupted".into()))
    } else {
        Ok(())
    }
}
