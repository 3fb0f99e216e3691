//! "The internet" of the test cluster: one network namespace `tm-inet` reached from the host
//! through the veth `tm-inet0` (198.18.0.0/24, a benchmarking range), holding one address per
//! external host name, a dnsmasq answering those names (the upstream CoreDNS forwards to), and
//! a `traffic` process listening on the ports the scenario calls.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Command;

use super::addons::ManagedProcess;
use super::network::{link_exists, netns_exists};
use super::sys::{run, write_sysctl};
use super::traffic::ListenArg;
use crate::{Error, Result};

/// Namespace of the external hosts.
pub const INTERNET_NETNS: &str = "tm-inet";
/// Host-side veth.
pub const INTERNET_VETH: &str = "tm-inet0";
/// Host side of the link.
pub const HOST_SIDE: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 254);
/// The upstream DNS server (dnsmasq) inside the namespace.
pub const UPSTREAM_DNS: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 53);
/// The external hosts' range.
pub const INTERNET_CIDR: &str = "198.18.0.0/24";

/// The running external hosts; removed when dropped.
pub struct Internet {
    /// Name -> address.
    pub hosts: BTreeMap<String, Ipv4Addr>,
    processes: Vec<ManagedProcess>,
}

/// Addresses for external host names, in order: 198.18.0.1, .2, ...
pub fn assign_addresses(names: &[String]) -> BTreeMap<String, Ipv4Addr> {
    let mut sorted: Vec<&String> = names.iter().collect();
    sorted.sort();
    sorted.dedup();
    sorted
        .into_iter()
        .zip(1u8..)
        .map(|(name, host)| (name.clone(), Ipv4Addr::new(198, 18, 0, host)))
        .collect()
}

impl Internet {
    /// Creates the namespace with `names` (each its own address), dnsmasq and listeners on
    /// `ports`.
    pub fn start(
        names: &[String],
        ports: &[ListenArg],
        run_dir: &Path,
        self_exe: &Path,
    ) -> Result<Self> {
        remove();
        let hosts = assign_addresses(names);
        run("ip", &["netns", "add", INTERNET_NETNS])?;
        run(
            "ip",
            &[
                "link",
                "add",
                INTERNET_VETH,
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                INTERNET_NETNS,
            ],
        )?;
        let _ = write_sysctl(&format!("net/ipv6/conf/{INTERNET_VETH}/disable_ipv6"), "1");
        run(
            "ip",
            &[
                "addr",
                "add",
                &format!("{HOST_SIDE}/24"),
                "dev",
                INTERNET_VETH,
            ],
        )?;
        run("ip", &["link", "set", INTERNET_VETH, "up"])?;
        let n = INTERNET_NETNS;
        run("ip", &["-n", n, "link", "set", "lo", "up"])?;
        run(
            "ip",
            &[
                "-n",
                n,
                "addr",
                "add",
                &format!("{UPSTREAM_DNS}/24"),
                "dev",
                "eth0",
            ],
        )?;
        for ip in hosts.values() {
            run(
                "ip",
                &["-n", n, "addr", "add", &format!("{ip}/32"), "dev", "eth0"],
            )?;
        }
        run("ip", &["-n", n, "link", "set", "eth0", "up"])?;
        run(
            "ip",
            &[
                "-n",
                n,
                "route",
                "add",
                "default",
                "via",
                &HOST_SIDE.to_string(),
            ],
        )?;

        let mut processes = Vec::new();
        let mut dnsmasq = Command::new("ip");
        dnsmasq.args([
            "netns",
            "exec",
            n,
            "dnsmasq",
            "--keep-in-foreground",
            "--no-resolv",
            "--no-hosts",
            "--no-poll",
            "--bind-interfaces",
            "--log-queries",
            "--log-facility=-",
            "--user=root",
            "--pid-file",
        ]);
        dnsmasq.arg(format!("--listen-address={UPSTREAM_DNS}"));
        for (name, ip) in &hosts {
            dnsmasq.arg(format!("--host-record={name},{ip}"));
        }
        processes.push(ManagedProcess::spawn(
            "dnsmasq",
            dnsmasq,
            &run_dir.join("dnsmasq.log"),
        )?);
        if !ports.is_empty() {
            let mut listeners = Command::new("ip");
            listeners
                .args(["netns", "exec", n])
                .arg(self_exe)
                .arg("traffic");
            for port in ports {
                listeners.arg("--listen").arg(port.to_string());
            }
            processes.push(ManagedProcess::spawn(
                "internet-hosts",
                listeners,
                &run_dir.join("internet-hosts.log"),
            )?);
        }
        std::thread::sleep(std::time::Duration::from_millis(300));
        for process in &mut processes {
            process.check_alive()?;
        }
        if !netns_exists(INTERNET_NETNS) {
            return Err(Error::Exited("tm-inet vanished".into()));
        }
        Ok(Internet { hosts, processes })
    }
}

impl Drop for Internet {
    fn drop(&mut self) {
        self.processes.clear();
        remove();
    }
}

/// Removes the namespace and link.
pub fn remove() {
    if link_exists(INTERNET_VETH) {
        let _ = run("ip", &["link", "del", INTERNET_VETH]);
    }
    if netns_exists(INTERNET_NETNS) {
        let _ = run("ip", &["netns", "del", INTERNET_NETNS]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn external_names_get_stable_addresses() {
        let names = vec![
            "b.example.com".to_string(),
            "a.example.com".to_string(),
            "a.example.com".to_string(),
        ];
        let hosts = assign_addresses(&names);
        assert_eq!(hosts["a.example.com"], Ipv4Addr::new(198, 18, 0, 1));
        assert_eq!(hosts["b.example.com"], Ipv4Addr::new(198, 18, 0, 2));
        assert_eq!(hosts.len(), 2);
    }
}
