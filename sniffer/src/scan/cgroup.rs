//! Pod UID from a process's cgroup path, as kubelet lays cgroups out.
//!
//! - cgroupfs driver: `/kubepods/<qos>/pod<uid>/<container>` or `/kubepods/pod<uid>/...`
//!   (Guaranteed QoS).
//! - systemd driver: `/kubepods.slice/kubepods-<qos>.slice/kubepods-<qos>-pod<uid with _>.slice/...`
//!   or `kubepods-pod<uid>.slice`; nested kubelets (kind) prefix slices with `kubelet-`.
//!
//! Paths may start with `/..` when read from inside a cgroup namespace; components are matched
//! wherever they are.

use std::fs;
use std::path::Path;

const UID_LEN: usize = 36;
const UID_DASHES: [usize; 4] = [8, 13, 18, 23];

/// The pod UID named by the contents of a `/proc/PID/cgroup` file, lowercase with dashes.
pub fn pod_uid_from_cgroup(contents: &str) -> Option<String> {
    contents.lines().find_map(|line| {
        let path = line.splitn(3, ':').nth(2)?;
        pod_uid_from_path(path)
    })
}

/// The pod UID in one cgroup path, if it is under a `kubepods` cgroup.
pub fn pod_uid_from_path(path: &str) -> Option<String> {
    let mut under_kubepods = false;
    for component in path.split('/') {
        if component.contains("kubepods") {
            under_kubepods = true;
            if let Some(slice) = component.strip_suffix(".slice")
                && let Some((_, uid)) = slice.rsplit_once("-pod")
                && let Some(uid) = normalise_uid(&uid.replace('_', "-"))
            {
                return Some(uid);
            }
        } else if under_kubepods
            && let Some(uid) = component.strip_prefix("pod")
            && let Some(uid) = normalise_uid(uid)
        {
            return Some(uid);
        }
    }
    None
}

fn normalise_uid(candidate: &str) -> Option<String> {
    let bytes = candidate.as_bytes();
    let shaped = bytes.len() == UID_LEN
        && bytes.iter().enumerate().all(|(i, b)| {
            if UID_DASHES.contains(&i) {
                *b == b'-'
            } else {
                b.is_ascii_hexdigit()
            }
        });
    shaped.then(|| candidate.to_ascii_lowercase())
}

/// Reads `/proc/PID/cgroup` and returns the pod UID it names, if any.
pub fn read_pod_uid(proc_root: &Path, pid: u32) -> Option<String> {
    let contents = fs::read_to_string(proc_root.join(pid.to_string()).join("cgroup")).ok()?;
    pod_uid_from_cgroup(&contents)
}

#[cfg(test)]
mod tests {
    use super::*;

    const UID: &str = "0b4cbd6e-3f2a-4c8e-9a55-0e5f7f0c1d2a";

    #[test]
    fn cgroupfs_layouts_name_the_pod() {
        for path in [
            format!("/kubepods/besteffort/pod{UID}/8f1c2d"),
            format!("/kubepods/burstable/pod{UID}"),
            format!("/kubepods/pod{UID}/8f1c2d"),
            format!("/../../kubepods/besteffort/pod{UID}/abc"),
        ] {
            assert_eq!(pod_uid_from_path(&path).as_deref(), Some(UID), "{path}");
        }
    }

    #[test]
    fn systemd_layouts_name_the_pod() {
        let underscored = UID.replace('-', "_");
        for path in [
            format!(
                "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{underscored}.slice/cri-containerd-1.scope"
            ),
            format!("/kubepods.slice/kubepods-pod{underscored}.slice/crio-2.scope"),
            format!(
                "/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-burstable.slice/kubelet-kubepods-burstable-pod{underscored}.slice"
            ),
        ] {
            assert_eq!(pod_uid_from_path(&path).as_deref(), Some(UID), "{path}");
        }
    }

    #[test]
    fn other_cgroups_name_no_pod() {
        for path in [
            "/",
            "/system.slice/containerd.service",
            "/user.slice/user-0.slice/session-1.scope",
            &format!("/docker/pod{UID}"),
            "/kubepods/besteffort/podnot-a-uid",
            "/kubepods.slice/kubepods-besteffort.slice",
            &format!("/kubepods/besteffort/pod{}", &UID[..35]),
        ] {
            assert_eq!(pod_uid_from_path(path), None, "{path}");
        }
    }

    #[test]
    fn any_hierarchy_line_of_a_proc_file_counts() {
        let hybrid = format!(
            "12:pids:/\n4:memory:/process_api/d30f\n1:name=systemd:/\n0::/kubepods/besteffort/pod{}/c1\n",
            UID.to_uppercase()
        );
        assert_eq!(pod_uid_from_cgroup(&hybrid).as_deref(), Some(UID));
        assert_eq!(pod_uid_from_cgroup("0::/\n"), None);
        assert_eq!(pod_uid_from_cgroup("garbage"), None);
    }
}
