//! The node's network: the bridge `tm-br0` (pods' gateway and the node IP), one netns + veth pair
//! per pod, kubelet-style resolv.conf, and an nftables forward filter that lets routed traffic
//! only between interfaces the simulator created (the traffic rule: nothing leaves the machine).

use std::net::Ipv4Addr;
use std::path::PathBuf;

use super::sys::{run, run_with_input, write_sysctl};
use super::{BRIDGE, GATEWAY, NFT_TABLE, NODE_IP, SERVICE_CIDR, pod_netns, pod_veth};
use crate::Result;

/// The DNS settings a kubelet writes into a pod's resolv.conf.
#[derive(Clone, Debug)]
pub struct PodDns {
    /// Cluster DNS ClusterIP.
    pub nameserver: Ipv4Addr,
    /// Cluster domain.
    pub cluster_domain: String,
}

impl PodDns {
    /// resolv.conf of a pod in `namespace` (dnsPolicy ClusterFirst).
    pub fn resolv_conf(&self, namespace: &str) -> String {
        let d = &self.cluster_domain;
        format!(
            "nameserver {}\nsearch {namespace}.svc.{d} svc.{d} {d}\noptions ndots:5\n",
            self.nameserver
        )
    }
}

/// Creates the bridge with the gateway and node addresses, turns on forwarding and installs
/// the forward filter. Idempotent.
pub fn ensure_bridge() -> Result<()> {
    if !link_exists(BRIDGE) {
        run("ip", &["link", "add", BRIDGE, "type", "bridge"])?;
        let _ = write_sysctl(&format!("net/ipv6/conf/{BRIDGE}/disable_ipv6"), "1");
        run(
            "ip",
            &["addr", "add", &format!("{GATEWAY}/24"), "dev", BRIDGE],
        )?;
        run(
            "ip",
            &["addr", "add", &format!("{NODE_IP}/32"), "dev", BRIDGE],
        )?;
        run("ip", &["link", "set", BRIDGE, "up"])?;
        // Host-originated Service traffic leaves with the node IP, and a ClusterIP without
        // endpoints goes nowhere instead of to the host's default route.
        run(
            "ip",
            &[
                "route",
                "replace",
                SERVICE_CIDR,
                "dev",
                BRIDGE,
                "src",
                &NODE_IP.to_string(),
            ],
        )?;
    }
    install_forward_filter()?;
    let saved = ip_forward_record();
    if !saved.exists()
        && let Some(original) = super::sys::read_sysctl("net/ipv4/ip_forward")
    {
        let _ = std::fs::create_dir_all(super::state_dir());
        let _ = std::fs::write(&saved, original);
    }
    write_sysctl("net/ipv4/ip_forward", "1")?;
    Ok(())
}

/// Where the host's ip_forward setting from before the first run is kept (restored by cleanup).
pub fn ip_forward_record() -> PathBuf {
    super::state_dir().join("ip_forward.orig")
}

/// Puts ip_forward back as it was before the simulator turned it on.
pub fn restore_ip_forward() -> Option<String> {
    let saved = ip_forward_record();
    let original = std::fs::read_to_string(&saved).ok()?;
    let _ = write_sysctl("net/ipv4/ip_forward", original.trim());
    let _ = std::fs::remove_file(saved);
    Some(original.trim().to_string())
}

/// The nftables table that drops forwarded packets from or to anything but `tm-*` interfaces.
pub fn install_forward_filter() -> Result<()> {
    let rules = format!(
        "table inet {NFT_TABLE} {{}}\n\
         delete table inet {NFT_TABLE}\n\
         table inet {NFT_TABLE} {{\n\
           chain forward {{\n\
             type filter hook forward priority -10; policy accept;\n\
             iifname \"tm-*\" oifname != \"tm-*\" counter drop\n\
             oifname \"tm-*\" iifname != \"tm-*\" counter drop\n\
           }}\n\
         }}\n"
    );
    run_with_input("nft", &["-f", "-"], &rules)
}

/// Whether a link exists in the host namespace.
pub fn link_exists(name: &str) -> bool {
    std::path::Path::new("/sys/class/net").join(name).exists()
}

/// Whether a named network namespace exists.
pub fn netns_exists(name: &str) -> bool {
    std::path::Path::new("/run/netns").join(name).exists()
}

/// `/etc/netns/<netns>`, whose files `ip netns exec` mounts over /etc.
pub fn etc_dir(netns: &str) -> PathBuf {
    PathBuf::from("/etc/netns").join(netns)
}

/// Writes `/etc/netns/<netns>/resolv.conf`.
pub fn write_resolv_conf(netns: &str, content: &str) -> Result<()> {
    let dir = etc_dir(netns);
    std::fs::create_dir_all(&dir)
        .and_then(|_| std::fs::write(dir.join("resolv.conf"), content))
        .map_err(|e| crate::Error::Http {
            what: format!("write {}/resolv.conf", dir.display()),
            source: Box::new(e),
        })
}

/// A pod's own network namespace on the bridge with `ip`/24, default route via the gateway.
pub fn create_pod_network(uid: &str, ip: Ipv4Addr) -> Result<String> {
    let netns = pod_netns(uid);
    let veth = pod_veth(uid);
    remove_pod_network(uid);
    run("ip", &["netns", "add", &netns])?;
    run(
        "ip",
        &[
            "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &netns,
        ],
    )?;
    let _ = write_sysctl(&format!("net/ipv6/conf/{veth}/disable_ipv6"), "1");
    run("ip", &["link", "set", &veth, "master", BRIDGE, "up"])?;
    // Hairpin, as the CNI bridge plugin sets it for kubelets: a pod calling its own Service
    // is DNATed back to itself, and br_netfilter bridges that frame out of the port it came in.
    run(
        "ip",
        &[
            "link",
            "set",
            &veth,
            "type",
            "bridge_slave",
            "hairpin",
            "on",
        ],
    )?;
    run(
        "ip",
        &[
            "-n",
            &netns,
            "addr",
            "add",
            &format!("{ip}/24"),
            "dev",
            "eth0",
        ],
    )?;
    run("ip", &["-n", &netns, "link", "set", "lo", "up"])?;
    run("ip", &["-n", &netns, "link", "set", "eth0", "up"])?;
    run(
        "ip",
        &[
            "-n",
            &netns,
            "route",
            "add",
            "default",
            "via",
            &GATEWAY.to_string(),
        ],
    )?;
    Ok(netns)
}

/// A name for the host's network namespace (hostNetwork pods), so `ip netns exec` can mount
/// the pod's resolv.conf while the process stays in the host namespace.
pub fn attach_host_network(uid: &str) -> Result<String> {
    let netns = pod_netns(uid);
    remove_pod_network(uid);
    run(
        "ip",
        &["netns", "attach", &netns, &std::process::id().to_string()],
    )?;
    Ok(netns)
}

/// Removes the pod's namespace (or name for the host's), veth and /etc/netns entry.
pub fn remove_pod_network(uid: &str) {
    let netns = pod_netns(uid);
    let veth = pod_veth(uid);
    if link_exists(&veth) {
        let _ = run("ip", &["link", "del", &veth]);
    }
    if netns_exists(&netns) {
        let _ = run("ip", &["netns", "del", &netns]);
    }
    let _ = std::fs::remove_dir_all(etc_dir(&netns));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_is_what_a_kubelet_writes() {
        let dns = PodDns {
            nameserver: Ipv4Addr::new(10, 96, 0, 10),
            cluster_domain: "cluster.local".into(),
        };
        assert_eq!(
            dns.resolv_conf("shop"),
            "nameserver 10.96.0.10\nsearch shop.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:5\n"
        );
    }
}
