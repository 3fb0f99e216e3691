//! `trafficmap-bench hold-sockets`: a process in a network namespace of its own holding
//! established loopback TCP connections, until its stdin closes. The namespace has no name:
//! it exists while the process does, so a killed bench leaves nothing behind.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream};
use std::process::Command;

use super::{BenchError, Result, io_context};

/// Port the holder listens on.
pub const LISTEN_PORT: u16 = 8080;

/// Enters a new network namespace, opens `connections` loopback connections to itself, says
/// `ready` on stdout and waits for stdin to close.
pub fn hold(connections: usize) -> Result<()> {
    // SAFETY: unshare(2) with CLONE_NEWNET only changes this (single-threaded) process's
    // namespace.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        return Err(BenchError::Io {
            what: "unshare(CLONE_NEWNET)".into(),
            source: std::io::Error::last_os_error(),
        });
    }
    let status = Command::new("ip")
        .args(["link", "set", "lo", "up"])
        .status()
        .map_err(io_context("ip link set lo up"))?;
    if !status.success() {
        return Err(BenchError::Failed("ip link set lo up failed".into()));
    }
    raise_nofile(2 * connections as u64 + 64)?;
    let listener = TcpListener::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, LISTEN_PORT))
        .map_err(io_context("listen"))?;
    let mut held = Vec::with_capacity(2 * connections);
    for _ in 0..connections {
        let client = TcpStream::connect(SocketAddrV4::new(Ipv4Addr::LOCALHOST, LISTEN_PORT))
            .map_err(io_context("connect"))?;
        let (server, _) = listener.accept().map_err(io_context("accept"))?;
        held.push(client);
        held.push(server);
    }
    let mut out = std::io::stdout().lock();
    writeln!(out, "ready").map_err(io_context("stdout"))?;
    out.flush().map_err(io_context("stdout"))?;
    let mut sink = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut sink);
    drop(held);
    Ok(())
}

/// Raises RLIMIT_NOFILE (soft and, if needed, hard) to at least `wanted`.
pub fn raise_nofile(wanted: u64) -> Result<()> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit write and read the struct we own.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return Err(BenchError::Io {
                what: "getrlimit".into(),
                source: std::io::Error::last_os_error(),
            });
        }
        if limit.rlim_cur >= wanted {
            return Ok(());
        }
        limit.rlim_cur = wanted;
        limit.rlim_max = limit.rlim_max.max(wanted);
        if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
            return Err(BenchError::Io {
                what: format!("raise RLIMIT_NOFILE to {wanted}"),
                source: std::io::Error::last_os_error(),
            });
        }
    }
    Ok(())
}
