//! Which process holds a socket: `/proc/*/fd/*` links read `socket:[INODE]`.
//!
//! Used only for client sockets of the host namespace (hostNetwork pods share it, so the
//! namespace alone does not tell the pod).

use std::collections::{HashMap, HashSet};
use std::fs;
use std::path::Path;

/// The inode in a `socket:[INODE]` link target.
pub fn socket_inode(link: &str) -> Option<u32> {
    link.strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

/// Finds a PID holding each of `wanted` (socket inodes), stopping once all are found.
pub fn socket_owners(proc_root: &Path, wanted: &HashSet<u32>) -> HashMap<u32, u32> {
    let mut owners = HashMap::new();
    if wanted.is_empty() {
        return owners;
    }
    let pids = fs::read_dir(proc_root)
        .into_iter()
        .flatten()
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok());
    for pid in pids {
        let Ok(fds) = fs::read_dir(proc_root.join(pid.to_string()).join("fd")) else {
            continue; // exited, or not ours to read
        };
        for fd in fds.flatten() {
            let Ok(target) = fs::read_link(fd.path()) else {
                continue;
            };
            if let Some(inode) = target.to_str().and_then(socket_inode)
                && wanted.contains(&inode)
            {
                owners.entry(inode).or_insert(pid);
            }
        }
        if owners.len() == wanted.len() {
            break;
        }
    }
    owners
}

#[cfg(test)]
mod tests {
    use std::net::UdpSocket;
    use std::os::unix::fs::MetadataExt;

    use super::*;

    #[test]
    fn socket_links_parse() {
        assert_eq!(socket_inode("socket:[12345]"), Some(12345));
        assert_eq!(socket_inode("pipe:[12345]"), None);
        assert_eq!(socket_inode("socket:[x]"), None);
    }

    #[test]
    fn our_socket_is_found_in_our_process() {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let link = std::os::fd::AsRawFd::as_raw_fd(&socket);
        let inode = fs::metadata(format!("/proc/self/fd/{link}"))
            .expect("fd")
            .ino() as u32;
        let owners = socket_owners(Path::new("/proc"), &HashSet::from([inode]));
        assert_eq!(owners.get(&inode), Some(&std::process::id()));
    }
}
