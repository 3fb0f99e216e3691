//! The observed calls as connections NetworkPolicy can be evaluated on ([`super::evaluate`]):
//! each end a pod (labels, namespace labels, named ports) or an address, and the destination
//! port the pod port a Service's DNAT leads to.

use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use trafficmap_api::ObservedTraffic;
use trafficmap_api::observed::{ObservedTarget, Protocol};
use trafficmap_api::render::{NODE_KIND, SERVICE_KIND};

use super::evaluate::{Connection, Endpoint, PodEnd};
use super::inventory::{Inventory, WorkloadKey, WorkloadPods};

/// One observed call, ready to evaluate.
#[derive(Clone, Debug, PartialEq)]
pub struct ObservedCall {
    /// The client workload.
    pub client: WorkloadKey,
    /// What it called, readable: `name.namespace`, `internet:<ip>`, `node:<name>`.
    pub target: String,
    /// The connection.
    pub connection: Connection,
}

/// Every observed call of `observed` that `inventory` lets us place, and one note per call
/// (or client) it does not.
pub fn observed_calls(
    observed: &[ObservedTraffic],
    inventory: &Inventory,
) -> (Vec<ObservedCall>, Vec<String>) {
    let mut calls = Vec::new();
    let mut notes = Vec::new();
    for ot in observed {
        let c = &ot.spec.client;
        let client = WorkloadKey::new(&c.namespace, &c.name);
        let Some(status) = &ot.status else { continue };
        if status.targets.is_empty() && status.internet_targets.is_empty() {
            continue;
        }
        let Some(from) = inventory
            .workloads
            .get(&client)
            .map(|pods| pod_endpoint(inventory, &client.namespace, pods))
        else {
            notes.push(format!(
                "calls of {}.{} not evaluated: its pods are not known",
                client.name, client.namespace
            ));
            continue;
        };
        for target in &status.targets {
            match destinations(inventory, target) {
                Ok(found) => {
                    for (to, port, protocol) in found {
                        calls.push(ObservedCall {
                            client: client.clone(),
                            target: format!("{}.{}", target.name, target.namespace),
                            connection: Connection {
                                from: from.clone(),
                                to,
                                port,
                                protocol,
                            },
                        });
                    }
                }
                Err(why) => notes.push(format!(
                    "call of {}.{} to {}.{} not evaluated: {why}",
                    client.name, client.namespace, target.name, target.namespace
                )),
            }
        }
        for target in &status.internet_targets {
            for ip in target.ips.iter().filter_map(|ip| ip.parse().ok()) {
                for p in &target.ports {
                    calls.push(ObservedCall {
                        client: client.clone(),
                        target: format!("internet:{ip}"),
                        connection: Connection {
                            from: from.clone(),
                            to: Endpoint {
                                ip: Some(ip),
                                pod: None,
                            },
                            port: p.port,
                            protocol: p.protocol,
                        },
                    });
                }
            }
        }
    }
    notes.sort();
    notes.dedup();
    (calls, notes)
}

/// A workload's pod in `namespace` as an endpoint (a host-network pod has the first node
/// address).
fn pod_endpoint(inventory: &Inventory, namespace: &str, pods: &WorkloadPods) -> Endpoint {
    Endpoint {
        ip: pods
            .host_network
            .then(|| inventory.node_ips.first().copied())
            .flatten(),
        pod: Some(pod_end(inventory, namespace, pods)),
    }
}

fn pod_end(inventory: &Inventory, namespace: &str, pods: &WorkloadPods) -> PodEnd {
    PodEnd {
        namespace: namespace.to_string(),
        namespace_labels: inventory
            .namespace_labels
            .get(namespace)
            .cloned()
            .unwrap_or_default(),
        labels: pods.labels.clone(),
        host_network: pods.host_network,
        named_ports: pods.named_ports.clone(),
    }
}

/// Where the calls to `target` arrive: endpoint, pod port and protocol, one per observed port.
fn destinations(
    inventory: &Inventory,
    target: &ObservedTarget,
) -> Result<Vec<(Endpoint, u16, Protocol)>, String> {
    let at_address = |ip| Endpoint {
        ip: Some(ip),
        pod: None,
    };
    if target.kind == NODE_KIND {
        let ip = *inventory
            .node_ips
            .first()
            .ok_or("the nodes' addresses are not known")?;
        return Ok(target
            .ports
            .iter()
            .map(|p| (at_address(ip), p.port, p.protocol))
            .collect());
    }
    if target.kind == SERVICE_KIND {
        if (target.namespace.as_str(), target.name.as_str()) == ("default", "kubernetes") {
            if inventory.api_server.is_empty() {
                return Err("the API server's endpoints are not known".into());
            }
            return Ok(inventory
                .api_server
                .iter()
                .map(|(ip, port)| (at_address(*ip), *port, Protocol::Tcp))
                .collect());
        }
        return Err("a Service whose backends span several workloads".into());
    }
    let key = WorkloadKey::new(&target.namespace, &target.name);
    let pods = inventory
        .workloads
        .get(&key)
        .ok_or("its pods are not known")?;
    let to = pod_endpoint(inventory, &target.namespace, pods);
    let service = target
        .service
        .as_deref()
        .and_then(|s| {
            inventory
                .services
                .get(&WorkloadKey::new(&target.namespace, s))
        })
        .filter(|s| !s.headless);
    let mut out = Vec::new();
    for p in &target.ports {
        let through = service
            .into_iter()
            .flat_map(|s| &s.ports)
            .find(|sp| sp.port == p.port && sp.protocol == p.protocol);
        let pod_port = match through.map(|sp| &sp.target) {
            None => p.port,
            Some(IntOrString::Int(n)) => u16::try_from(*n).map_err(|_| "a port out of range")?,
            Some(IntOrString::String(name)) => pods
                .named_ports
                .get(name)
                .map(|(port, _)| *port)
                .ok_or_else(|| format!("the named port {name} is not among its containers'"))?,
        };
        out.push((to.clone(), pod_port, p.protocol));
    }
    Ok(out)
}
