//! Every namespace's sockets in one pass, from a BPF `task_file` iterator
//! (`sniffer/bpf/sockets.bpf.c`).
//!
//! sock_diag answers for the namespace of the socket that asks, and with the kernel's defaults
//! every namespace shares one TCP hash table, so each namespace's dump walks every TCP socket
//! of the node: a scan costs namespaces x sockets. The iterator instead visits each open file
//! of each process once and writes a record for each TCP or UDP socket, with the inode of the
//! socket's namespace. Sockets that no process holds (a listener's queue of connections not
//! yet accepted, TIME_WAIT) are not seen; none of them is the client side of an open call.
//! Nor are those held only by processes outside the sniffer's PID namespace: it runs with
//! hostPID.
//!
//! Loading needs the kernel's BTF (`/sys/kernel/btf/vmlinux`), `bpf_sock_from_file` (Linux
//! 5.11) and CAP_BPF with CAP_PERFMON (or CAP_SYS_ADMIN). The loader parses the whole kernel
//! BTF (~40 MiB at its peak), so the sniffer does it in a helper process ([`super::loader`])
//! and keeps only the loaded program's fd; each scan then creates an iterator from it with two
//! `bpf(2)` calls.

use std::fs::File;
use std::io::{self, ErrorKind, Read};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use aya::programs::Iter;
use aya::{Btf, Ebpf, EbpfLoader};
use trafficmap_api::observed::Protocol;

use super::ScanError;
use super::classify::{SocketRecord, unmap};

/// The compiled iterator (`make bpf` rebuilds it; `make lint` checks it is current).
static OBJECT: &[u8] = aya::include_bytes_aligned!("../../bpf/sockets.bpf.o");
/// The program's name in the object.
const PROGRAM: &str = "dump_sockets";
/// `struct record` in sockets.bpf.c.
pub const RECORD_LEN: usize = 52;
/// Bytes asked of the kernel per read; it hands out at most its 32 KiB buffer at a time.
const READ_BYTES: usize = 64 * 1024;
/// Reads the kernel may refuse with EAGAIN in a row (it does so after visiting a million
/// files without writing anything) before the scan gives up.
const MAX_RETRIES: usize = 64;
const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;
const PROTOCOL_TCP: u8 = 6;
const PROTOCOL_UDP: u8 = 17;
/// `enum bpf_cmd` and `enum bpf_attach_type` (include/uapi/linux/bpf.h).
const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_ITER_CREATE: libc::c_long = 33;
const BPF_TRACE_ITER: u32 = 28;

/// `union bpf_attr` for `BPF_LINK_CREATE` of an iterator without parameters.
#[repr(C)]
struct LinkCreateAttr {
    prog_fd: u32,
    target_fd: u32,
    attach_type: u32,
    flags: u32,
    iter_info: u64,
    iter_info_len: u32,
    reserved: u32,
}

/// `union bpf_attr` for `BPF_ITER_CREATE`.
#[repr(C)]
struct IterCreateAttr {
    link_fd: u32,
    flags: u32,
}

/// `bpf(command, attr)`, for the two commands that return a new fd.
fn bpf_new_fd<T>(command: libc::c_long, attr: &T) -> io::Result<OwnedFd> {
    let size = std::mem::size_of::<T>() as libc::c_long;
    // SAFETY: `attr` is a live, fully initialised `union bpf_attr` prefix of `size` bytes for
    // `command`; the kernel reads it and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_bpf, command, attr as *const T, size) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = i32::try_from(fd).map_err(|_| io::Error::other("bpf(2) returned no fd"))?;
    // SAFETY: the kernel just returned this fd to us and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn bpf_error(what: &'static str) -> impl FnOnce(String) -> ScanError {
    move |detail| ScanError::Bpf { what, detail }
}

/// Loads the program into the kernel from this process (it is verified here, once) and
/// returns its fd.
pub fn load_program() -> Result<OwnedFd, ScanError> {
    let btf = Btf::from_sys_fs()
        .map_err(|e| bpf_error("read the kernel's BTF (/sys/kernel/btf/vmlinux)")(e.to_string()))?;
    let mut ebpf = EbpfLoader::new()
        .btf(Some(&btf))
        .load(OBJECT)
        .map_err(|e| bpf_error("load the socket iterator object")(e.to_string()))?;
    let program = program(&mut ebpf)?;
    program
        .load("task_file", &btf)
        .map_err(|e| bpf_error("load the socket iterator into the kernel")(e.to_string()))?;
    // aya closes its own fd when `ebpf` drops; the kernel keeps the program for this copy.
    program
        .fd()
        .map_err(|e| bpf_error("find the loaded socket iterator")(e.to_string()))?
        .as_fd()
        .try_clone_to_owned()
        .map_err(|e| bpf_error("keep the loaded socket iterator")(e.to_string()))
}

/// A loaded iterator program, run once per scan.
#[derive(Debug)]
pub struct SocketIterator {
    program: OwnedFd,
    buffer: Vec<u8>,
}

impl SocketIterator {
    /// Loads the program from this process ([`load_program`]).
    pub fn load() -> Result<Self, ScanError> {
        Ok(Self::from_program(load_program()?))
    }

    /// Runs the program behind `program`, an fd [`load_program`] returned (here or in a
    /// helper process).
    pub fn from_program(program: OwnedFd) -> Self {
        SocketIterator {
            program,
            buffer: vec![0; READ_BYTES],
        }
    }

    /// Runs the iterator once and hands each socket, with the inode of its network namespace,
    /// to `sink`.
    pub fn dump(&mut self, mut sink: impl FnMut(u32, SocketRecord)) -> Result<(), ScanError> {
        let link = bpf_new_fd(
            BPF_LINK_CREATE,
            &LinkCreateAttr {
                prog_fd: fd_number(self.program.as_fd()),
                target_fd: 0,
                attach_type: BPF_TRACE_ITER,
                flags: 0,
                iter_info: 0,
                iter_info_len: 0,
                reserved: 0,
            },
        )
        .map_err(|e| bpf_error("attach the socket iterator")(e.to_string()))?;
        let iterator = bpf_new_fd(
            BPF_ITER_CREATE,
            &IterCreateAttr {
                link_fd: fd_number(link.as_fd()),
                flags: 0,
            },
        )
        .map_err(|e| bpf_error("open the socket iterator")(e.to_string()))?;
        // The iterator holds the link; this fd is not needed any more.
        drop(link);
        let mut file = File::from(iterator);
        let buffer = &mut self.buffer;
        let (mut filled, mut retries) = (0, 0);
        loop {
            let read = match file.read(&mut buffer[filled..]) {
                Ok(0) => break,
                Ok(read) => read,
                Err(e)
                    if matches!(e.kind(), ErrorKind::Interrupted | ErrorKind::WouldBlock)
                        && retries < MAX_RETRIES =>
                {
                    retries += 1;
                    continue;
                }
                Err(e) => return Err(bpf_error("read the socket iterator")(e.to_string())),
            };
            retries = 0;
            filled += read;
            let whole = filled - filled % RECORD_LEN;
            for chunk in buffer[..whole].chunks_exact(RECORD_LEN) {
                if let Some((netns, record)) = parse_record(chunk) {
                    sink(netns, record);
                }
            }
            buffer.copy_within(whole..filled, 0);
            filled -= whole;
        }
        if filled != 0 {
            return Err(bpf_error("read the socket iterator")(format!(
                "{filled} bytes left over, not a whole record"
            )));
        }
        Ok(())
    }
}

fn fd_number(fd: BorrowedFd<'_>) -> u32 {
    // A valid fd is never negative.
    fd.as_raw_fd().unsigned_abs()
}

fn program(ebpf: &mut Ebpf) -> Result<&mut Iter, ScanError> {
    ebpf.program_mut(PROGRAM)
        .ok_or_else(|| bpf_error("find the socket iterator")(format!("no program {PROGRAM}")))?
        .try_into()
        .map_err(|e: aya::programs::ProgramError| {
            bpf_error("find the socket iterator")(e.to_string())
        })
}

/// One record: the inode of the socket's namespace and the socket. `None` for a family or
/// protocol the program does not write (a newer program's, say).
pub fn parse_record(bytes: &[u8]) -> Option<(u32, SocketRecord)> {
    let bytes: &[u8; RECORD_LEN] = bytes.try_into().ok()?;
    let u32_at =
        |at: usize| u32::from_ne_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
    let u16_at = |at: usize| u16::from_ne_bytes([bytes[at], bytes[at + 1]]);
    let protocol = match bytes[13] {
        PROTOCOL_TCP => Protocol::Tcp,
        PROTOCOL_UDP => Protocol::Udp,
        _ => return None,
    };
    let address = |at: usize| -> Option<IpAddr> {
        let raw: [u8; 16] = bytes[at..at + 16].try_into().ok()?;
        match bytes[12] {
            AF_INET => Some(IpAddr::V4(Ipv4Addr::new(raw[0], raw[1], raw[2], raw[3]))),
            AF_INET6 => Some(IpAddr::V6(Ipv6Addr::from(raw))),
            _ => None,
        }
    };
    let pid = u32_at(4);
    let record = SocketRecord {
        protocol,
        state: bytes[14],
        local: unmap(SocketAddr::new(address(20)?, u16_at(16))),
        remote: unmap(SocketAddr::new(address(36)?, u16_at(18))),
        inode: u32_at(8),
        pid: (pid != 0).then_some(pid),
    };
    Some((u32_at(0), record))
}

#[cfg(test)]
mod tests {
    use std::net::{TcpListener, TcpStream, UdpSocket};

    use super::super::classify::tcp_state;
    use super::super::sockdiag;
    use super::*;
    use crate::test_support::private_netns_with_loopback;

    /// A record as sockets.bpf.c lays it out.
    fn raw(
        netns: u32,
        family: u8,
        protocol: u8,
        state: u8,
        local: (&[u8], u16),
        remote: (&[u8], u16),
    ) -> Vec<u8> {
        let mut bytes = vec![0u8; RECORD_LEN];
        bytes[0..4].copy_from_slice(&netns.to_ne_bytes());
        bytes[4..8].copy_from_slice(&77u32.to_ne_bytes());
        bytes[8..12].copy_from_slice(&4242u32.to_ne_bytes());
        bytes[12] = family;
        bytes[13] = protocol;
        bytes[14] = state;
        bytes[16..18].copy_from_slice(&local.1.to_ne_bytes());
        bytes[18..20].copy_from_slice(&remote.1.to_ne_bytes());
        bytes[20..20 + local.0.len()].copy_from_slice(local.0);
        bytes[36..36 + remote.0.len()].copy_from_slice(remote.0);
        bytes
    }

    #[test]
    fn records_are_read_field_by_field() {
        let bytes = raw(
            4026531840,
            AF_INET,
            PROTOCOL_TCP,
            tcp_state::SYN_SENT,
            (&[10, 0, 0, 5], 43210),
            (&[10, 0, 1, 7], 5432),
        );
        let (netns, record) = parse_record(&bytes).expect("a TCP record");
        assert_eq!(netns, 4026531840);
        assert_eq!(
            record,
            SocketRecord {
                protocol: Protocol::Tcp,
                state: tcp_state::SYN_SENT,
                local: "10.0.0.5:43210".parse().expect("addr"),
                remote: "10.0.1.7:5432".parse().expect("addr"),
                inode: 4242,
                pid: Some(77),
            }
        );
    }

    #[test]
    fn ipv6_records_keep_their_address_and_mapped_ones_become_ipv4() {
        let v6: Ipv6Addr = "fd00::5".parse().expect("ip");
        let mapped: Ipv6Addr = "::ffff:10.0.1.7".parse().expect("ip");
        let bytes = raw(
            1,
            AF_INET6,
            PROTOCOL_UDP,
            tcp_state::ESTABLISHED,
            (&v6.octets(), 5353),
            (&mapped.octets(), 53),
        );
        let (_, record) = parse_record(&bytes).expect("a UDP record");
        assert_eq!(record.protocol, Protocol::Udp);
        assert_eq!(record.local, "[fd00::5]:5353".parse().expect("addr"));
        assert_eq!(record.remote, "10.0.1.7:53".parse().expect("addr"));
    }

    #[test]
    fn unknown_families_protocols_and_short_records_are_skipped() {
        let ok = raw(
            1,
            AF_INET,
            PROTOCOL_TCP,
            1,
            (&[1, 2, 3, 4], 1),
            (&[5, 6, 7, 8], 2),
        );
        assert!(parse_record(&ok).is_some());
        let mut family = ok.clone();
        family[12] = 1;
        assert!(parse_record(&family).is_none());
        let mut protocol = ok.clone();
        protocol[13] = 132;
        assert!(parse_record(&protocol).is_none());
        assert!(parse_record(&ok[..RECORD_LEN - 1]).is_none());
    }

    /// Sockets whose local or remote port is one of `ports`, as comparable tuples.
    fn ours(
        records: &[SocketRecord],
        ports: &[u16],
    ) -> std::collections::BTreeSet<(u8, u8, SocketAddr, SocketAddr, u32)> {
        records
            .iter()
            .filter(|r| ports.contains(&r.local.port()) || ports.contains(&r.remote.port()))
            .map(|r| {
                let protocol = match r.protocol {
                    Protocol::Tcp => PROTOCOL_TCP,
                    Protocol::Udp => PROTOCOL_UDP,
                };
                (protocol, r.state, r.local, r.remote, r.inode)
            })
            .collect()
    }

    /// As root: a thread in a network namespace of its own opens TCP (IPv4 and IPv6) and UDP
    /// sockets there; the iterator, run from this namespace, must find exactly what sock_diag
    /// finds from inside that one, under that namespace's inode, and with our process.
    #[test]
    fn the_iterator_finds_what_sock_diag_finds_in_another_namespace() {
        let (sender, receiver) = std::sync::mpsc::channel();
        let (done_sender, done) = std::sync::mpsc::channel::<()>();
        let holder = std::thread::spawn(move || {
            private_netns_with_loopback();
            let netns = std::fs::metadata("/proc/thread-self/ns/net").map(|m| {
                use std::os::unix::fs::MetadataExt;
                m.ino()
            });
            let listener = TcpListener::bind("127.0.0.1:0").expect("listen");
            let client = TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
            let (accepted, _) = listener.accept().expect("accept");
            let v6 = TcpListener::bind("[::1]:0").ok().and_then(|l| {
                let c = TcpStream::connect(l.local_addr().ok()?).ok()?;
                let (a, _) = l.accept().ok()?;
                Some((l, c, a))
            });
            let udp = UdpSocket::bind("127.0.0.1:0").expect("udp");
            udp.connect(listener.local_addr().expect("addr"))
                .expect("udp connect");
            let mut ports = vec![listener.local_addr().expect("addr").port()];
            if let Some((l, _, _)) = &v6 {
                ports.push(l.local_addr().expect("addr").port());
            }
            ports.push(udp.local_addr().expect("addr").port());
            let seen = sockdiag::dump_sockets().expect("sock_diag in the namespace");
            sender
                .send((
                    netns.expect("netns inode"),
                    ports.clone(),
                    ours(&seen, &ports),
                ))
                .expect("send");
            done.recv().ok();
            drop((listener, client, accepted, v6, udp));
        });
        let (netns, ports, expected) = receiver.recv().expect("the holder's sockets");
        let mut iterator = SocketIterator::load().expect("load the iterator (root, BTF)");
        let mut found = Vec::new();
        let mut pids = Vec::new();
        iterator
            .dump(|ns, record| {
                if u64::from(ns) == netns {
                    pids.push(record.pid);
                    found.push(record);
                }
            })
            .expect("dump");
        done_sender.send(()).expect("release the holder");
        holder.join().expect("holder");
        assert!(expected.len() >= 5, "{expected:?}");
        assert_eq!(ours(&found, &ports), expected);
        assert!(pids.iter().all(|pid| *pid == Some(std::process::id())));
    }
}
