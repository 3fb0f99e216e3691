//! Removes whatever a killed run left: processes recorded under the state dir, the pod cgroups
//! it recorded (and their processes), pod network namespaces (`tm-pod-*`) and veths (`tmv*`),
//! the bridge, `tm-inet`, /etc/netns entries, the nftables tables of the simulator and
//! kube-proxy. Names other tests on this machine use (e.g. the sniffer's `tm<hex>...`) are
//! left alone.

use std::path::Path;

use super::internet::{INTERNET_NETNS, INTERNET_VETH};
use super::sys::{output, run, signal};
use super::{
    BRIDGE, NFT_TABLE, POD_NETNS_PREFIX, POD_VETH_PREFIX, SERVICE_CIDR, cgroup, state_dir,
};

/// Everything removed, one line per item.
pub fn cleanup() -> Vec<String> {
    let mut done = Vec::new();
    let procs = state_dir().join("procs");
    if let Ok(entries) = std::fs::read_dir(&procs) {
        for entry in entries.flatten() {
            let pid = std::fs::read_to_string(entry.path())
                .ok()
                .and_then(|s| s.trim().parse::<u32>().ok());
            if let Some(pid) = pid
                && signal(pid, libc::SIGKILL)
            {
                done.push(format!(
                    "killed {} (pid {pid})",
                    entry.file_name().to_string_lossy()
                ));
            }
            let _ = std::fs::remove_file(entry.path());
        }
    }
    if let Ok(entries) = std::fs::read_dir(cgroup::records_dir()) {
        for entry in entries.flatten() {
            let uid = entry.file_name().to_string_lossy().into_owned();
            cgroup::remove_pod_cgroup(&uid);
            done.push(format!(
                "removed cgroup {}",
                cgroup::pod_dir(&uid).display()
            ));
        }
    }
    if let Ok(list) = output("ip", &["-o", "link", "show"]) {
        for line in list.lines() {
            let Some(name) = line
                .split(':')
                .nth(1)
                .map(|n| n.trim().split('@').next().unwrap_or(""))
            else {
                continue;
            };
            if (name.starts_with(POD_VETH_PREFIX) || name == INTERNET_VETH)
                && name != BRIDGE
                && run("ip", &["link", "del", name]).is_ok()
            {
                done.push(format!("removed link {name}"));
            }
        }
    }
    if super::network::link_exists(BRIDGE) {
        let _ = run("ip", &["route", "del", SERVICE_CIDR, "dev", BRIDGE]);
        if run("ip", &["link", "del", BRIDGE]).is_ok() {
            done.push(format!("removed bridge {BRIDGE}"));
        }
    }
    if let Ok(entries) = std::fs::read_dir("/run/netns") {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let ours = name.starts_with(POD_NETNS_PREFIX) || name == INTERNET_NETNS;
            if ours && run("ip", &["netns", "del", &name]).is_ok() {
                done.push(format!("removed netns {name}"));
            }
        }
    }
    if let Ok(entries) = std::fs::read_dir("/etc/netns") {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with(POD_NETNS_PREFIX) || name == INTERNET_NETNS {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
    if super::sys::have_program("nft") {
        for table in [
            format!("inet {NFT_TABLE}"),
            "ip kube-proxy".into(),
            "ip6 kube-proxy".into(),
        ] {
            let mut args = vec!["delete", "table"];
            args.extend(table.split(' '));
            if run("nft", &args).is_ok() {
                done.push(format!("removed nftables table {table}"));
            }
        }
    }
    if let Some(original) = super::network::restore_ip_forward() {
        done.push(format!("restored net.ipv4.ip_forward={original}"));
    }
    let _ = std::fs::remove_dir_all(Path::new(&state_dir()).join("pods"));
    done
}
