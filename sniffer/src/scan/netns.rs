//! Finding network namespaces, and entering them from the scan thread.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io;
use std::marker::PhantomData;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::ScanError;

/// Processes remembered per namespace (lowest PIDs first), to find one in a pod cgroup.
pub const MAX_PIDS_PER_NAMESPACE: usize = 16;

/// Identity of a network namespace: the nsfs device and inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NetnsId {
    /// st_dev of the nsfs file.
    pub dev: u64,
    /// st_ino of the nsfs file.
    pub inode: u64,
}

impl NetnsId {
    /// The namespace a `/proc/PID/ns/net`-like path refers to.
    pub fn of_path(path: &Path) -> io::Result<Self> {
        let meta = fs::metadata(path)?;
        Ok(NetnsId {
            dev: meta.dev(),
            inode: meta.ino(),
        })
    }

    fn of_file(file: &File) -> io::Result<Self> {
        let meta = file.metadata()?;
        Ok(NetnsId {
            dev: meta.dev(),
            inode: meta.ino(),
        })
    }
}

/// A network namespace found on the node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Namespace {
    /// Its identity.
    pub id: NetnsId,
    /// A path that opens it (`/proc/PID/ns/net` or a bind mount in `/run/netns`).
    pub path: PathBuf,
    /// Some processes in it, lowest PID first (empty for a pinned namespace with no process).
    pub pids: Vec<u32>,
}

/// Every distinct network namespace of the processes in `proc_root`, plus those pinned in
/// `pinned_dirs` (`ip netns`, CNI plugins) even with no process in them.
pub fn discover(proc_root: &Path, pinned_dirs: &[PathBuf]) -> Vec<Namespace> {
    let mut pids: Vec<u32> = fs::read_dir(proc_root)
        .into_iter()
        .flatten()
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    pids.sort_unstable();
    let mut by_id: HashMap<NetnsId, Namespace> = HashMap::new();
    for pid in pids {
        let path = proc_root.join(pid.to_string()).join("ns/net");
        let Ok(id) = NetnsId::of_path(&path) else {
            continue;
        }; // gone, or a kernel thread
        let ns = by_id.entry(id).or_insert_with(|| Namespace {
            id,
            path,
            pids: Vec::new(),
        });
        if ns.pids.len() < MAX_PIDS_PER_NAMESPACE {
            ns.pids.push(pid);
        }
    }
    for dir in pinned_dirs {
        for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if let Ok(id) = NetnsId::of_path(&path) {
                by_id.entry(id).or_insert_with(|| Namespace {
                    id,
                    path,
                    pids: Vec::new(),
                });
            }
        }
    }
    let mut namespaces: Vec<Namespace> = by_id.into_values().collect();
    namespaces.sort_by_key(|ns| ns.id);
    namespaces
}

/// Moves the calling thread between network namespaces and always back home.
///
/// Not `Send`: it is created on, and only used by, the one long-lived scan thread, so no
/// other code ever runs in a borrowed namespace.
#[derive(Debug)]
pub struct NetnsSwitcher {
    home: File,
    home_id: NetnsId,
    _not_send: PhantomData<*const ()>,
}

impl NetnsSwitcher {
    /// Remembers the calling thread's namespace as home.
    pub fn new() -> Result<Self, ScanError> {
        let path = Path::new("/proc/thread-self/ns/net");
        let home = File::open(path).map_err(|source| ScanError::Enter {
            path: path.to_owned(),
            source,
        })?;
        let home_id = NetnsId::of_file(&home).map_err(|source| ScanError::Enter {
            path: path.to_owned(),
            source,
        })?;
        Ok(NetnsSwitcher {
            home,
            home_id,
            _not_send: PhantomData,
        })
    }

    /// The namespace the thread returns to (the sniffer's, i.e. the host's).
    pub fn home_id(&self) -> NetnsId {
        self.home_id
    }

    /// A descriptor of the home namespace, valid while the switcher lives.
    pub fn home_fd(&self) -> std::os::fd::RawFd {
        self.home.as_raw_fd()
    }

    /// Runs `work` inside `namespace`, then returns home. Failing to return home is
    /// [`ScanError::ReturnHome`], which must stop the scan thread.
    pub fn run_in<T>(
        &self,
        namespace: &Namespace,
        work: impl FnOnce() -> T,
    ) -> Result<T, ScanError> {
        if namespace.id == self.home_id {
            return Ok(work());
        }
        let enter_error = |source| ScanError::Enter {
            path: namespace.path.clone(),
            source,
        };
        let target = File::open(&namespace.path).map_err(enter_error)?;
        // The PID may have exited and been reused since discovery.
        if NetnsId::of_file(&target).map_err(enter_error)? != namespace.id {
            return Err(enter_error(io::Error::other(
                "namespace changed since discovery",
            )));
        }
        setns(&target).map_err(enter_error)?;
        let result = work();
        setns(&self.home).map_err(ScanError::ReturnHome)?;
        Ok(result)
    }
}

/// Moves the calling thread into the network namespace `file` refers to.
pub(crate) fn setns(file: &File) -> io::Result<()> {
    // SAFETY: setns(2) on an open nsfs descriptor; affects only the calling thread.
    let ret = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Addresses of every interface in the calling thread's namespace (getifaddrs asks the
/// namespace's netlink).
pub fn interface_addresses() -> io::Result<Vec<IpAddr>> {
    let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs allocates a list we free below.
    if unsafe { libc::getifaddrs(&mut list) } < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut addresses = Vec::new();
    let mut cursor = list;
    while !cursor.is_null() {
        // SAFETY: `cursor` is a node of the list getifaddrs returned, not yet freed.
        let entry = unsafe { &*cursor };
        if !entry.ifa_addr.is_null() {
            // SAFETY: ifa_addr points to a sockaddr whose family says its real type.
            let family = i32::from(unsafe { (*entry.ifa_addr).sa_family });
            if family == libc::AF_INET {
                // SAFETY: family AF_INET means sockaddr_in.
                let sin = unsafe { &*entry.ifa_addr.cast::<libc::sockaddr_in>() };
                addresses.push(IpAddr::V4(Ipv4Addr::from(u32::from_be(
                    sin.sin_addr.s_addr,
                ))));
            } else if family == libc::AF_INET6 {
                // SAFETY: family AF_INET6 means sockaddr_in6.
                let sin6 = unsafe { &*entry.ifa_addr.cast::<libc::sockaddr_in6>() };
                addresses.push(IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr)));
            }
        }
        cursor = entry.ifa_next;
    }
    // SAFETY: frees the list returned above, once.
    unsafe { libc::freeifaddrs(list) };
    Ok(addresses)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_own_namespace_is_discovered_with_our_pid() {
        let namespaces = discover(Path::new("/proc"), &[]);
        let ours = NetnsId::of_path(Path::new("/proc/self/ns/net")).expect("own netns");
        let found = namespaces
            .iter()
            .find(|ns| ns.id == ours)
            .expect("own netns found");
        assert!(!found.pids.is_empty() && found.pids.len() <= MAX_PIDS_PER_NAMESPACE);
        let mut ids: Vec<_> = namespaces.iter().map(|ns| ns.id).collect();
        ids.dedup();
        assert_eq!(ids.len(), namespaces.len());
    }

    #[test]
    fn the_home_namespace_runs_in_place() {
        let switcher = NetnsSwitcher::new().expect("home");
        let home = Namespace {
            id: switcher.home_id(),
            path: "/nonexistent".into(),
            pids: vec![],
        };
        assert_eq!(switcher.run_in(&home, || 7).expect("runs"), 7);
        assert!(
            interface_addresses()
                .expect("getifaddrs")
                .iter()
                .any(IpAddr::is_loopback)
        );
    }
}
