//! Every namespace's sockets from one walk of the processes' fd tables, by a BPF task iterator
//! (`sniffer/bpf/sockets.bpf.c`).
//!
//! sock_diag answers for the namespace of the socket that asks, and with the kernel's defaults
//! every namespace shares one TCP hash table, so each namespace's dump walks every TCP socket
//! of the node: a scan costs namespaces x sockets. The iterator instead walks each process's
//! table of open files once and writes a record for each TCP or UDP socket, with the inode of
//! the socket's namespace. Sockets that no process holds (a listener's queue of connections
//! not yet accepted, TIME_WAIT) are not seen; none of them is the client side of an open call.
//! Nor are those held only by processes outside the sniffer's PID namespace: it runs with
//! hostPID.
//!
//! The program writes records into a map (16,384 of them); when that fills, it notes where it
//! stopped and [`SocketIterator::dump`] runs it again from there.
//!
//! Loading needs the kernel's BTF (`/sys/kernel/btf/vmlinux`), the kfunc `bpf_rdonly_cast`
//! (Linux 6.2) and CAP_BPF with CAP_PERFMON (or CAP_SYS_ADMIN). The loader parses the whole
//! kernel BTF (~40 MiB at its peak), so the sniffer does it in a helper process
//! ([`super::loader`]) and keeps only the fds of the program and its two maps.

use std::fs::File;
use std::io::{ErrorKind, Read};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsFd, OwnedFd};

use aya::maps::Map;
use aya::programs::Iter;
use aya::{Btf, Ebpf, EbpfLoader};
use aya_obj::btf::BtfKind;
use netlink_packet_sock_diag::constants::{
    AF_INET, AF_INET6, IPPROTO_TCP as PROTOCOL_TCP, IPPROTO_UDP as PROTOCOL_UDP,
};
use trafficmap_api::observed::Protocol;

use super::ScanError;
use super::bpf_syscalls as sys;
use super::classify::{SocketRecord, unmap};

/// The compiled iterator (`make bpf` rebuilds it; `make lint` checks it is current).
static OBJECT: &[u8] = aya::include_bytes_aligned!("../../bpf/sockets.bpf.o");
/// The program's name in the object.
const PROGRAM: &str = "dump_sockets";
/// The maps' names in the object: the pass's control block and its records.
const CONTROL_MAP: &str = "pass_control";
const RECORDS_MAP: &str = "pass_records";
/// The kfunc the program calls, and the instruction that stands for the call in the object:
/// `call` with src_reg 2 (a kfunc, BPF_PSEUDO_KFUNC_CALL) and the placeholder id 0x7ffffff0
/// (kernel.h: RDONLY_CAST_CALL).
const KFUNC: &str = "bpf_rdonly_cast";
const KFUNC_CALL: [u8; 8] = [0x85, 0x20, 0x00, 0x00, 0xf0, 0xff, 0xff, 0x7f];
/// `struct record` in sockets.bpf.c.
pub const RECORD_LEN: usize = 52;
/// `struct control` in sockets.bpf.c: four u32s.
const CONTROL_LEN: usize = 16;
/// Passes one scan may take before it gives up: far more sockets than a node can hold.
const MAX_PASSES: usize = 4096;
/// Reads the kernel may refuse with EAGAIN in a row (it does so after visiting a million
/// tasks without writing anything) before the scan gives up.
const MAX_RETRIES: usize = 64;

fn bpf_error(what: &'static str) -> impl FnOnce(String) -> ScanError {
    move |detail| ScanError::Bpf { what, detail }
}

/// The loaded program and its maps, as fds that can cross to another process.
#[derive(Debug)]
pub struct LoadedProgram {
    /// The iterator program.
    pub program: OwnedFd,
    /// Its control block (`struct control`).
    pub control: OwnedFd,
    /// Its records (`struct batch`).
    pub records: OwnedFd,
}

/// The object with each kfunc call's placeholder replaced by `kfunc_id`, in u64s so that it
/// keeps the alignment the ELF parser wants. Fails when the object has no such call (it is
/// not the object this code was written for).
fn object_calling(kfunc_id: u32) -> Result<Vec<u64>, ScanError> {
    let mut words = vec![0u64; OBJECT.len().div_ceil(8)];
    let bytes: &mut [u8] = as_bytes_mut(&mut words);
    bytes[..OBJECT.len()].copy_from_slice(OBJECT);
    let mut calls = 0;
    for instruction in bytes.chunks_exact_mut(8) {
        if instruction == KFUNC_CALL {
            instruction[4..].copy_from_slice(&kfunc_id.to_le_bytes());
            calls += 1;
        }
    }
    if calls == 0 {
        return Err(bpf_error("prepare the socket iterator")(format!(
            "the object calls no {KFUNC}"
        )));
    }
    Ok(words)
}

/// The bytes of `words`.
fn as_bytes_mut(words: &mut [u64]) -> &mut [u8] {
    let len = std::mem::size_of_val(words);
    // SAFETY: u64 has no padding and every byte pattern is a valid u8; the slice covers
    // exactly the words' memory and borrows them mutably for its lifetime.
    unsafe { std::slice::from_raw_parts_mut(words.as_mut_ptr().cast::<u8>(), len) }
}

/// Loads the program into the kernel from this process (it is verified here, once) and
/// returns its fd and its maps'.
pub fn load_program() -> Result<LoadedProgram, ScanError> {
    let btf = Btf::from_sys_fs()
        .map_err(|e| bpf_error("read the kernel's BTF (/sys/kernel/btf/vmlinux)")(e.to_string()))?;
    let kfunc = btf
        .id_by_type_name_kind(KFUNC, BtfKind::Func)
        .map_err(|e| bpf_error("find the kfunc bpf_rdonly_cast (Linux 6.2)")(e.to_string()))?;
    let mut words = object_calling(kfunc)?;
    let object = &as_bytes_mut(&mut words)[..OBJECT.len()];
    let mut ebpf = EbpfLoader::new()
        .btf(Some(&btf))
        .load(object)
        .map_err(|e| bpf_error("load the socket iterator object")(e.to_string()))?;
    let program = program(&mut ebpf)?;
    program
        .load("task", &btf)
        .map_err(|e| bpf_error("load the socket iterator into the kernel")(e.to_string()))?;
    // aya closes its own fds when `ebpf` drops; the kernel keeps the program and its maps for
    // these copies.
    let program = program
        .fd()
        .map_err(|e| bpf_error("find the loaded socket iterator")(e.to_string()))?
        .as_fd()
        .try_clone_to_owned()
        .map_err(|e| bpf_error("keep the loaded socket iterator")(e.to_string()))?;
    Ok(LoadedProgram {
        program,
        control: map_fd(&ebpf, CONTROL_MAP)?,
        records: map_fd(&ebpf, RECORDS_MAP)?,
    })
}

fn map_fd(ebpf: &Ebpf, name: &str) -> Result<OwnedFd, ScanError> {
    match ebpf.map(name) {
        Some(Map::Array(data)) => data
            .fd()
            .as_fd()
            .try_clone_to_owned()
            .map_err(|e| bpf_error("keep the socket iterator's maps")(e.to_string())),
        _ => Err(bpf_error("find the socket iterator's maps")(format!(
            "no array {name}"
        ))),
    }
}

/// `struct control` in sockets.bpf.c.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Control {
    resume_tid: u32,
    resume_fd: u32,
    count: u32,
    full: u32,
}

impl Control {
    fn to_bytes(self) -> [u8; CONTROL_LEN] {
        let mut bytes = [0u8; CONTROL_LEN];
        let fields = [self.resume_tid, self.resume_fd, self.count, self.full];
        for (chunk, field) in bytes.chunks_exact_mut(4).zip(fields) {
            chunk.copy_from_slice(&field.to_ne_bytes());
        }
        bytes
    }

    fn from_bytes(bytes: &[u8; CONTROL_LEN]) -> Self {
        let at = |i: usize| {
            u32::from_ne_bytes([
                bytes[i * 4],
                bytes[i * 4 + 1],
                bytes[i * 4 + 2],
                bytes[i * 4 + 3],
            ])
        };
        Control {
            resume_tid: at(0),
            resume_fd: at(1),
            count: at(2),
            full: at(3),
        }
    }
}

/// A loaded iterator, run once per scan in as many passes as its records map needs.
#[derive(Debug)]
pub struct SocketIterator {
    link: OwnedFd,
    control: OwnedFd,
    records: OwnedFd,
    /// The records map's value: the records of one pass.
    buffer: Vec<u8>,
}

impl SocketIterator {
    /// Loads the program from this process ([`load_program`]).
    pub fn load() -> Result<Self, ScanError> {
        Self::from_program(load_program()?)
    }

    /// Attaches the program [`load_program`] returned (here or in a helper process) and checks
    /// that its maps are the sizes this code reads.
    pub fn from_program(loaded: LoadedProgram) -> Result<Self, ScanError> {
        let link = sys::attach_iterator(loaded.program.as_fd())
            .map_err(|e| bpf_error("attach the socket iterator")(e.to_string()))?;
        let size = |map: &OwnedFd| {
            sys::value_size(map.as_fd())
                .map_err(|e| bpf_error("read the socket iterator's maps")(e.to_string()))
        };
        let (control_len, records_len) = (size(&loaded.control)?, size(&loaded.records)?);
        if control_len != CONTROL_LEN || records_len == 0 || records_len % RECORD_LEN != 0 {
            return Err(bpf_error("read the socket iterator's maps")(format!(
                "control of {control_len} bytes and records of {records_len}: not this sniffer's"
            )));
        }
        Ok(SocketIterator {
            link,
            control: loaded.control,
            records: loaded.records,
            buffer: vec![0; records_len],
        })
    }

    /// Runs the iterator over every process and hands each socket, with the inode of its
    /// network namespace, to `sink`.
    pub fn dump(&mut self, mut sink: impl FnMut(u32, SocketRecord)) -> Result<(), ScanError> {
        let mut control = Control::default();
        for _ in 0..MAX_PASSES {
            control = self.pass(control)?;
            let count = (control.count as usize).min(self.buffer.len() / RECORD_LEN);
            for chunk in self.buffer[..count * RECORD_LEN].chunks_exact(RECORD_LEN) {
                if let Some((netns, record)) = parse_record(chunk) {
                    sink(netns, record);
                }
            }
            if control.full == 0 {
                return Ok(());
            }
            control.count = 0;
            control.full = 0;
        }
        Err(bpf_error("read the socket iterator")(format!(
            "still more sockets after {MAX_PASSES} passes"
        )))
    }

    /// One run of the iterator from `control`'s resume point: the control block it leaves,
    /// with its records in the buffer.
    fn pass(&mut self, control: Control) -> Result<Control, ScanError> {
        let failed = |e: std::io::Error| bpf_error("run the socket iterator")(e.to_string());
        sys::update(self.control.as_fd(), 0, &control.to_bytes(), CONTROL_LEN).map_err(failed)?;
        let mut file = File::from(sys::open_iterator(self.link.as_fd()).map_err(failed)?);
        // The program writes into the maps, not to the file: reading runs it to the end.
        let mut scratch = [0u8; 64];
        let mut retries = 0;
        loop {
            match file.read(&mut scratch) {
                Ok(0) => break,
                Ok(_) => retries = 0,
                Err(e)
                    if matches!(e.kind(), ErrorKind::Interrupted | ErrorKind::WouldBlock)
                        && retries < MAX_RETRIES =>
                {
                    retries += 1;
                }
                Err(e) => return Err(failed(e)),
            }
        }
        let mut bytes = [0u8; CONTROL_LEN];
        sys::lookup(self.control.as_fd(), 0, &mut bytes, CONTROL_LEN).map_err(failed)?;
        let len = self.buffer.len();
        sys::lookup(self.records.as_fd(), 0, &mut self.buffer, len).map_err(failed)?;
        Ok(Control::from_bytes(&bytes))
    }
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
    use std::mem::size_of;
    use std::net::{TcpListener, TcpStream, UdpSocket};
    use std::os::fd::{AsRawFd, FromRawFd};
    use std::os::unix::fs::MetadataExt;

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
    fn every_kfunc_placeholder_in_the_object_gets_the_kernels_id() {
        let calls = |bytes: &[u8], call: &[u8]| {
            bytes
                .chunks_exact(8)
                .filter(|instruction| *instruction == call)
                .count()
        };
        let placeholders = calls(OBJECT, &KFUNC_CALL);
        assert!(placeholders >= 2, "the file and the socket casts");
        let mut words = object_calling(0x1234).expect("patched");
        let patched = &as_bytes_mut(&mut words)[..OBJECT.len()];
        let mut call = KFUNC_CALL;
        call[4..].copy_from_slice(&0x1234u32.to_le_bytes());
        assert_eq!(calls(patched, &KFUNC_CALL), 0);
        assert_eq!(calls(patched, &call), placeholders);
        let changed = OBJECT.iter().zip(patched).filter(|(a, b)| a != b).count();
        assert!(changed <= placeholders * 4, "only the immediates change");
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

    /// A forked child holding `sockets` UDP sockets (bound to ports of 0.0.0.0) until it is
    /// dropped, in a network namespace of its own or in `join`'s. The child makes raw system
    /// calls only: it is forked from a process with threads.
    struct SocketHolder {
        pid: libc::pid_t,
        release: OwnedFd,
    }

    impl SocketHolder {
        fn start(sockets: usize, join: Option<&File>) -> Self {
            let join = join.map(|namespace| namespace.as_raw_fd());
            let mut ready = [0; 2];
            let mut release = [0; 2];
            // SAFETY: pipe(2) into arrays of two ints.
            unsafe {
                assert_eq!(libc::pipe2(ready.as_mut_ptr(), libc::O_CLOEXEC), 0);
                assert_eq!(libc::pipe2(release.as_mut_ptr(), libc::O_CLOEXEC), 0);
            }
            let any = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: 0,
                sin_addr: libc::in_addr { s_addr: 0 },
                sin_zero: [0; 8],
            };
            // SAFETY: the child runs only async-signal-safe system calls on memory prepared
            // before the fork, then _exit(2)s; the parent owns the pipe ends it keeps.
            unsafe {
                let pid = libc::fork();
                assert!(pid >= 0, "fork");
                if pid == 0 {
                    let mut status = 1u8;
                    let entered = match join {
                        Some(namespace) => libc::setns(namespace, libc::CLONE_NEWNET),
                        None => libc::unshare(libc::CLONE_NEWNET),
                    };
                    // Drop the copies of the test process's other fds: another test's
                    // sockets held here too would be reported with this child's pid.
                    let keep = [ready[1].unsigned_abs(), release[0].unsigned_abs()];
                    let (low, high) = (keep[0].min(keep[1]), keep[0].max(keep[1]));
                    for (first, last) in [(3, low - 1), (low + 1, high - 1), (high + 1, u32::MAX)] {
                        if first <= last {
                            libc::syscall(libc::SYS_close_range, first, last, 0);
                        }
                    }
                    if entered == 0 {
                        status = 0;
                        for _ in 0..sockets {
                            let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0);
                            let bound = fd >= 0
                                && libc::bind(
                                    fd,
                                    (&any as *const libc::sockaddr_in).cast(),
                                    size_of::<libc::sockaddr_in>() as libc::socklen_t,
                                ) == 0;
                            if !bound {
                                status = 2;
                                break;
                            }
                        }
                    }
                    libc::write(ready[1], (&status as *const u8).cast(), 1);
                    let mut byte = 0u8;
                    libc::read(release[0], (&mut byte as *mut u8).cast(), 1);
                    libc::_exit(0);
                }
                libc::close(ready[1]);
                libc::close(release[0]);
                let mut status = 9u8;
                let read = libc::read(ready[0], (&mut status as *mut u8).cast(), 1);
                libc::close(ready[0]);
                let holder = SocketHolder {
                    pid,
                    release: OwnedFd::from_raw_fd(release[1]),
                };
                assert_eq!(
                    (read, status),
                    (1, 0),
                    "the holder's sockets (1: unshare, 2: socket)"
                );
                holder
            }
        }

        /// The inode of the holder's network namespace, and sock_diag's inodes of its sockets
        /// (read from a thread that enters the namespace).
        fn sock_diag_view(&self) -> (u64, Vec<u32>) {
            let path = format!("/proc/{}/ns/net", self.pid);
            let netns = std::fs::metadata(&path).expect("netns").ino();
            let namespace = File::open(&path).expect("open the holder's netns");
            let mut inodes = std::thread::spawn(move || {
                super::super::netns::setns(&namespace).expect("setns");
                sockdiag::dump_sockets().expect("sock_diag in the holder's namespace")
            })
            .join()
            .expect("sock_diag thread")
            .iter()
            .map(|record| record.inode)
            .collect::<Vec<_>>();
            inodes.sort_unstable();
            (netns, inodes)
        }
    }

    impl Drop for SocketHolder {
        fn drop(&mut self) {
            // SAFETY: write one byte to our pipe end, then reap our own child.
            unsafe {
                libc::write(self.release.as_raw_fd(), [0u8].as_ptr().cast(), 1);
                libc::waitpid(self.pid, std::ptr::null_mut(), 0);
            }
        }
    }

    /// As root: more sockets than one pass holds (the records map has 16,384), held by two
    /// processes in one namespace. The scan must resume where each pass stopped, by process
    /// and fd: every socket once, none missed, none repeated (a pass that resumed at the right
    /// fd of the wrong process would read the first holder's again).
    #[test]
    fn a_scan_of_several_passes_reads_every_socket_once() {
        const SOCKETS: usize = 9_000;
        let first = SocketHolder::start(SOCKETS, None);
        let namespace =
            File::open(format!("/proc/{}/ns/net", first.pid)).expect("the holder's netns");
        let second = SocketHolder::start(SOCKETS, Some(&namespace));
        let (netns, expected) = first.sock_diag_view();
        let mut iterator = SocketIterator::load().expect("load the iterator (root, BTF)");
        let mut found = Vec::new();
        let mut pids = std::collections::BTreeSet::new();
        iterator
            .dump(|ns, record| {
                if u64::from(ns) == netns {
                    found.push(record.inode);
                    pids.insert(record.pid);
                }
            })
            .expect("dump");
        let holders = [first.pid, second.pid].map(|pid| Some(pid.unsigned_abs()));
        drop((first, second));
        assert_eq!(expected.len(), 2 * SOCKETS);
        assert_eq!(pids, holders.into_iter().collect());
        found.sort_unstable();
        assert_eq!(
            found.len(),
            expected.len(),
            "sockets read more than once or missed"
        );
        assert_eq!(found, expected);
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
        iterator
            .dump(|ns, record| {
                if u64::from(ns) == netns {
                    found.push(record);
                }
            })
            .expect("dump");
        done_sender.send(()).expect("release the holder");
        holder.join().expect("holder");
        assert!(expected.len() >= 5, "{expected:?}");
        assert_eq!(ours(&found, &ports), expected);
        // Each socket with our pid; a process forked by another test may hold copies too.
        let ours_pid = Some(std::process::id());
        let inodes: std::collections::BTreeSet<u32> = found.iter().map(|r| r.inode).collect();
        for inode in inodes {
            assert!(
                found.iter().any(|r| r.inode == inode && r.pid == ours_pid),
                "socket {inode} without our pid: {found:?}"
            );
        }
    }
}
