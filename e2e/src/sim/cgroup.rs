//! Kubelet-style pod cgroups (`kubepods/besteffort/pod<uid>`, cgroupfs driver), in the cgroup v2
//! hierarchy (`/sys/fs/cgroup/unified` on hybrid hosts, `/sys/fs/cgroup` on unified ones) or,
//! without v2, the v1 `pids` hierarchy. The sniffer finds the pod UID in /proc/PID/cgroup.

use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// Root of the hierarchy pod cgroups are created in.
pub fn hierarchy_root() -> PathBuf {
    for candidate in ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"] {
        if Path::new(candidate).join("cgroup.controllers").exists() {
            return PathBuf::from(candidate);
        }
    }
    PathBuf::from("/sys/fs/cgroup/pids")
}

/// `kubepods` under the hierarchy root.
pub fn kubepods_dir() -> PathBuf {
    hierarchy_root().join("kubepods")
}

/// The cgroup directory of pod `uid`.
pub fn pod_dir(uid: &str) -> PathBuf {
    kubepods_dir().join("besteffort").join(format!("pod{uid}"))
}

/// Where the UIDs of pod cgroups the simulator created are recorded (for cleanup after a crash;
/// other `kubepods` cgroups on the machine are not ours to remove).
pub fn records_dir() -> PathBuf {
    super::state_dir().join("cgroups")
}

/// Creates the pod's cgroup (and its parents) and records it.
pub fn create_pod_cgroup(uid: &str) -> Result<PathBuf> {
    let records = records_dir();
    std::fs::create_dir_all(&records)
        .and_then(|_| std::fs::write(records.join(uid), ""))
        .map_err(|e| Error::Http {
            what: format!("record cgroup in {}", records.display()),
            source: Box::new(e),
        })?;
    let dir = pod_dir(uid);
    std::fs::create_dir_all(&dir).map_err(|e| Error::Http {
        what: format!("create cgroup {}", dir.display()),
        source: Box::new(e),
    })?;
    Ok(dir)
}

/// Removes the pod's cgroup (killing what runs in it) and its record.
pub fn remove_pod_cgroup(uid: &str) {
    remove_cgroup(&pod_dir(uid));
    let _ = std::fs::remove_file(records_dir().join(uid));
}

/// Kills every process in the cgroup (SIGKILL) and removes it; child cgroups first.
pub fn remove_cgroup(dir: &Path) {
    if !dir.exists() {
        return;
    }
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                remove_cgroup(&entry.path());
            }
        }
    }
    for _ in 0..50 {
        let pids = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
        let pids: Vec<u32> = pids.lines().filter_map(|l| l.trim().parse().ok()).collect();
        if pids.is_empty() {
            break;
        }
        for pid in pids {
            super::sys::signal(pid, libc::SIGKILL);
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let _ = std::fs::remove_dir(dir);
}
