//! Loading the BPF socket iterator in a short-lived helper process.
//!
//! Loading parses the kernel's whole BTF: ~40 MiB at its peak, which glibc then keeps. The
//! sniffer runs itself with `--load-socket-iterator` and a Unix socket as stdin; the helper
//! loads the program ([`super::bpf::load_program`]), sends the fds of the program and its maps
//! back over the socket (SCM_RIGHTS) and exits, and its memory with it.

use std::io::{self, Read};
use std::mem::{size_of, zeroed};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use super::ScanError;
use super::bpf::{self, LoadedProgram, SocketIterator};

/// The hidden flag that makes `trafficmap-sniffer` the helper.
pub const HELPER_FLAG: &str = "--load-socket-iterator";
/// How long the helper may take to load and verify the program.
const HELPER_TIMEOUT: Duration = Duration::from_secs(60);
/// Control buffer for one fd: `CMSG_SPACE(sizeof(int))` is 24 bytes on 64-bit Linux; u64s
/// keep it aligned for `struct cmsghdr`.
type Control = [u64; 4];

fn helper_error(detail: String) -> ScanError {
    ScanError::Bpf {
        what: "load the socket iterator in a helper process",
        detail,
    }
}

/// Runs `executable` (the sniffer) as the helper and returns an iterator over the program it
/// loaded.
pub fn load_in_helper(executable: &Path) -> Result<SocketIterator, ScanError> {
    load_within(executable, HELPER_TIMEOUT)
}

/// [`load_in_helper`], giving up on (and killing) a helper that sends nothing in `timeout`.
fn load_within(executable: &Path, timeout: Duration) -> Result<SocketIterator, ScanError> {
    let (ours, theirs) = UnixStream::pair().map_err(|e| helper_error(e.to_string()))?;
    ours.set_read_timeout(Some(timeout))
        .map_err(|e| helper_error(e.to_string()))?;
    let mut child = Command::new(executable)
        .arg(HELPER_FLAG)
        .stdin(Stdio::from(OwnedFd::from(theirs)))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| helper_error(format!("cannot run {}: {e}", executable.display())))?;
    let received = receive_program(ours.as_fd());
    if received.is_err() {
        // It may hang (the read timed out): its stderr and exit status come only once it ends.
        let _ = child.kill();
    }
    let mut stderr = String::new();
    if let Some(mut pipe) = child.stderr.take() {
        let _ = pipe.read_to_string(&mut stderr);
    }
    let status = child.wait().map_err(|e| helper_error(e.to_string()))?;
    match received {
        Ok(program) if status.success() => SocketIterator::from_program(program),
        Ok(_) => Err(helper_error(format!(
            "the helper {status}: {}",
            stderr.trim()
        ))),
        Err(err) => Err(helper_error(format!(
            "no program from the helper ({err}; it {status}): {}",
            stderr.trim()
        ))),
    }
}

/// The helper's side: loads the program and sends its fd, then its maps', on stdin. Errors go
/// to stderr, where [`load_in_helper`] reads them.
pub fn serve() -> Result<(), ScanError> {
    let loaded = bpf::load_program()?;
    let stdin = io::stdin();
    for fd in [&loaded.program, &loaded.control, &loaded.records] {
        send_fd(stdin.as_fd(), fd.as_fd())
            .map_err(|e| helper_error(format!("cannot send the program back: {e}")))?;
    }
    Ok(())
}

/// The three fds [`serve`] sends, in its order.
fn receive_program(socket: BorrowedFd<'_>) -> io::Result<LoadedProgram> {
    Ok(LoadedProgram {
        program: receive_fd(socket)?,
        control: receive_fd(socket)?,
        records: receive_fd(socket)?,
    })
}

/// Calls `use_message` with a `msghdr` for one byte of data and up to `control_len` bytes
/// of control data, both in buffers that live through the call.
fn with_message<T>(control_len: usize, use_message: impl FnOnce(&mut libc::msghdr) -> T) -> T {
    let mut byte = [0u8; 1];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: byte.len(),
    };
    let mut control: Control = [0; 4];
    // SAFETY: msghdr is plain data, for which all zeroes is a valid (empty) value.
    let mut message: libc::msghdr = unsafe { zeroed() };
    message.msg_iov = &mut iov;
    message.msg_iovlen = 1;
    message.msg_control = control.as_mut_ptr().cast();
    // `as _`: size_t in glibc, socklen_t (u32) in musl.
    message.msg_controllen = control_len.min(size_of::<Control>()) as _;
    use_message(&mut message)
}

/// Sends `fd` with one byte of data over the Unix socket `socket`.
pub fn send_fd(socket: BorrowedFd<'_>, fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: CMSG_SPACE is arithmetic.
    let space = unsafe { libc::CMSG_SPACE(size_of::<RawFd>() as u32) } as usize;
    with_message(space, |message| {
        // SAFETY: the message's buffers live through this closure; CMSG_FIRSTHDR is checked
        // for null, and the control buffer holds CMSG_SPACE(sizeof(int)) bytes for it.
        unsafe {
            let header = libc::CMSG_FIRSTHDR(message);
            if header.is_null() {
                return Err(io::Error::other("no room for the control message"));
            }
            (*header).cmsg_level = libc::SOL_SOCKET;
            (*header).cmsg_type = libc::SCM_RIGHTS;
            (*header).cmsg_len = libc::CMSG_LEN(size_of::<RawFd>() as u32) as _;
            std::ptr::write_unaligned(libc::CMSG_DATA(header).cast::<RawFd>(), fd.as_raw_fd());
            if libc::sendmsg(socket.as_raw_fd(), message, 0) < 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(())
    })
}

/// Receives one fd sent by [`send_fd`] on `socket` (close-on-exec).
pub fn receive_fd(socket: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    with_message(size_of::<Control>(), |message| {
        // SAFETY: the kernel writes at most msg_controllen bytes into the message's control
        // buffer, and an fd is read only from a header it filled in for SCM_RIGHTS.
        unsafe {
            let read = libc::recvmsg(socket.as_raw_fd(), message, libc::MSG_CMSG_CLOEXEC);
            if read < 0 {
                return Err(io::Error::last_os_error());
            }
            if read == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the helper closed the socket",
                ));
            }
            let header = libc::CMSG_FIRSTHDR(message);
            if header.is_null()
                || (*header).cmsg_level != libc::SOL_SOCKET
                || (*header).cmsg_type != libc::SCM_RIGHTS
                || ((*header).cmsg_len as usize)
                    < libc::CMSG_LEN(size_of::<RawFd>() as u32) as usize
            {
                return Err(io::Error::other("the helper's message carries no fd"));
            }
            let fd = std::ptr::read_unaligned(libc::CMSG_DATA(header).cast::<RawFd>());
            Ok(OwnedFd::from_raw_fd(fd))
        }
    })
}

#[cfg(test)]
mod tests {
    use std::io::{Seek, SeekFrom, Write};

    use super::*;

    #[test]
    fn an_fd_crosses_a_unix_socket() {
        let (left, right) = UnixStream::pair().expect("pair");
        let mut file = std::fs::File::from(unnamed_file().expect("a temporary file to pass"));
        file.write_all(b"passed").expect("write");
        send_fd(left.as_fd(), file.as_fd()).expect("send");
        let mut received = std::fs::File::from(receive_fd(right.as_fd()).expect("receive"));
        // Another fd for the same open file: it shares the offset, so rewind through it.
        assert_ne!(received.as_raw_fd(), file.as_raw_fd());
        received.seek(SeekFrom::Start(0)).expect("seek");
        let mut text = String::new();
        received.read_to_string(&mut text).expect("read");
        assert_eq!(text, "passed");
    }

    #[test]
    fn a_message_without_an_fd_is_refused() {
        let (mut left, right) = UnixStream::pair().expect("pair");
        left.write_all(b"x").expect("write");
        let err = receive_fd(right.as_fd()).expect_err("no fd");
        assert!(err.to_string().contains("no fd"), "{err}");
        drop(left);
        let eof = receive_fd(right.as_fd()).expect_err("closed");
        assert_eq!(eof.kind(), io::ErrorKind::UnexpectedEof);
    }

    /// A shell script standing in for the sniffer run as the helper.
    fn fake_helper(name: &str, body: &str) -> std::path::PathBuf {
        let script =
            std::env::temp_dir().join(format!("tm-helper-{name}-{}.sh", std::process::id()));
        std::fs::write(&script, format!("#!/bin/sh\n{body}\n")).expect("write");
        let mut permissions = std::fs::metadata(&script).expect("meta").permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut permissions, 0o755);
        std::fs::set_permissions(&script, permissions).expect("chmod");
        script
    }

    #[test]
    fn a_helper_that_fails_is_reported_with_what_it_said() {
        let script = fake_helper("fails", "echo 'no BTF here' >&2\nexit 1");
        let err = load_in_helper(&script).expect_err("the helper fails");
        let _ = std::fs::remove_file(&script);
        let text = err.to_string();
        assert!(
            text.contains("no BTF here") && text.contains("exit status: 1"),
            "{text}"
        );
    }

    #[test]
    fn a_helper_that_hangs_is_killed_at_the_timeout() {
        let script = fake_helper("hangs", "echo 'loading' >&2\nexec sleep 600");
        let started = std::time::Instant::now();
        let err = load_within(&script, Duration::from_millis(300)).expect_err("no program");
        let _ = std::fs::remove_file(&script);
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{:?}",
            started.elapsed()
        );
        let text = err.to_string();
        assert!(
            text.contains("loading") && text.contains("signal: 9"),
            "{text}"
        );
    }

    /// An unnamed temporary file (O_TMPFILE).
    fn unnamed_file() -> io::Result<OwnedFd> {
        let dir = std::ffi::CString::new(std::env::temp_dir().as_os_str().as_encoded_bytes())
            .map_err(io::Error::other)?;
        // SAFETY: open(2) with a valid C string; the fd returned is ours alone.
        let fd = unsafe { libc::open(dir.as_ptr(), libc::O_TMPFILE | libc::O_RDWR, 0o600) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: just opened, owned by nobody else.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }
}
