//! The few `bpf(2)` commands the sniffer issues itself on the fds its loader handed over:
//! attach and open an iterator, read and write one array element, and ask a map its value size.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

/// `enum bpf_cmd` and `enum bpf_attach_type` (include/uapi/linux/bpf.h).
const BPF_MAP_LOOKUP_ELEM: libc::c_long = 1;
const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
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

/// `union bpf_attr` for the map element commands.
#[repr(C)]
struct ElementAttr {
    map_fd: u32,
    pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

/// `union bpf_attr` for `BPF_OBJ_GET_INFO_BY_FD`.
#[repr(C)]
struct InfoAttr {
    bpf_fd: u32,
    info_len: u32,
    info: u64,
}

/// The head of `struct bpf_map_info`: the kernel fills as much as we ask for.
#[repr(C)]
#[derive(Debug, Default)]
struct MapInfo {
    map_type: u32,
    id: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
}

/// `bpf(command, attr)`, returning what the kernel returned.
fn bpf<T>(command: libc::c_long, attr: &mut T) -> io::Result<libc::c_long> {
    let size = std::mem::size_of::<T>() as libc::c_long;
    // SAFETY: `attr` is a live, fully initialised `union bpf_attr` prefix of `size` bytes for
    // `command`; any pointers in it point to buffers that outlive the call, of the sizes the
    // command implies (checked by the callers below).
    let result = unsafe { libc::syscall(libc::SYS_bpf, command, attr as *mut T, size) };
    if result < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(result)
}

/// `bpf(command, attr)` for a command that returns a new fd.
fn bpf_new_fd<T>(command: libc::c_long, attr: &mut T) -> io::Result<OwnedFd> {
    let fd = bpf(command, attr)?;
    let fd = i32::try_from(fd).map_err(|_| io::Error::other("bpf(2) returned no fd"))?;
    // SAFETY: the kernel just returned this fd to us and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn fd_number(fd: BorrowedFd<'_>) -> u32 {
    // A valid fd is never negative.
    fd.as_raw_fd().unsigned_abs()
}

/// Attaches the iterator program `program` (`BPF_LINK_CREATE`).
pub fn attach_iterator(program: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    bpf_new_fd(
        BPF_LINK_CREATE,
        &mut LinkCreateAttr {
            prog_fd: fd_number(program),
            target_fd: 0,
            attach_type: BPF_TRACE_ITER,
            flags: 0,
            iter_info: 0,
            iter_info_len: 0,
            reserved: 0,
        },
    )
}

/// Opens a new run of the iterator behind `link` (`BPF_ITER_CREATE`): reading the fd runs it.
pub fn open_iterator(link: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    bpf_new_fd(
        BPF_ITER_CREATE,
        &mut IterCreateAttr {
            link_fd: fd_number(link),
            flags: 0,
        },
    )
}

/// The value size of the map `map`.
pub fn value_size(map: BorrowedFd<'_>) -> io::Result<usize> {
    let mut info = MapInfo::default();
    bpf(
        BPF_OBJ_GET_INFO_BY_FD,
        &mut InfoAttr {
            bpf_fd: fd_number(map),
            info_len: std::mem::size_of::<MapInfo>() as u32,
            info: &mut info as *mut MapInfo as u64,
        },
    )?;
    Ok(info.value_size as usize)
}

/// Copies element `key` of the array `map` into `value`, which must be exactly the map's
/// value size (see [`value_size`]): the kernel writes that many bytes.
pub fn lookup(
    map: BorrowedFd<'_>,
    key: u32,
    value: &mut [u8],
    value_size: usize,
) -> io::Result<()> {
    let address = value.as_mut_ptr() as u64;
    element(
        BPF_MAP_LOOKUP_ELEM,
        map,
        key,
        (address, value.len()),
        value_size,
    )
}

/// Writes `value` (the map's value size, see [`value_size`]) as element `key` of the array
/// `map`.
pub fn update(map: BorrowedFd<'_>, key: u32, value: &[u8], value_size: usize) -> io::Result<()> {
    let address = value.as_ptr() as u64;
    element(
        BPF_MAP_UPDATE_ELEM,
        map,
        key,
        (address, value.len()),
        value_size,
    )
}

/// A map element command on a buffer `(address, len)` that must hold exactly `value_size`
/// bytes, the map's value size, for the kernel reads or writes that many.
fn element(
    command: libc::c_long,
    map: BorrowedFd<'_>,
    key: u32,
    (address, len): (u64, usize),
    value_size: usize,
) -> io::Result<()> {
    if len != value_size {
        return Err(io::Error::other(format!(
            "a buffer of {len} bytes for a map of {value_size}-byte values"
        )));
    }
    bpf(
        command,
        &mut ElementAttr {
            map_fd: fd_number(map),
            pad: 0,
            key: &key as *const u32 as u64,
            value: address,
            flags: 0,
        },
    )
    .map(drop)
}
