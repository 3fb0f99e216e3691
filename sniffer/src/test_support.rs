//! Helpers shared by the crate's unit tests that need the real kernel (run as root).

use std::io;
use std::net::UdpSocket;

/// Moves the calling thread into a new network namespace with `lo` up.
pub fn private_netns_with_loopback() {
    // SAFETY: unshare only affects the calling thread's network namespace.
    assert_eq!(
        unsafe { libc::unshare(libc::CLONE_NEWNET) },
        0,
        "unshare: {}",
        io::Error::last_os_error()
    );
    let socket = UdpSocket::bind("0.0.0.0:0").expect("socket for ioctl");
    // SAFETY: zeroed ifreq is valid; ioctls read the name and write/read the flags.
    unsafe {
        let mut request: libc::ifreq = std::mem::zeroed();
        for (dst, src) in request.ifr_name.iter_mut().zip(b"lo\0") {
            *dst = *src as libc::c_char;
        }
        let fd = std::os::fd::AsRawFd::as_raw_fd(&socket);
        // `as _`: ioctl's request is c_ulong in glibc, c_int in musl.
        assert_eq!(libc::ioctl(fd, libc::SIOCGIFFLAGS as _, &mut request), 0);
        request.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        assert_eq!(libc::ioctl(fd, libc::SIOCSIFFLAGS as _, &request), 0);
    }
}
