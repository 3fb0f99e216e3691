//! `visualize`: the map as a graph. Nodes are workloads grouped by namespace (internet targets
//! grouped as `internet`), edges go from client to target labelled with the ports. This module
//! builds the graph and writes DOT; [`crate::cli::image`] lays it out as SVG and PNG.

use std::collections::{BTreeMap, BTreeSet};

use trafficmap_api::ObservedTraffic;
use trafficmap_api::observed::PortProtocol;
use trafficmap_api::render::NODE_KIND;

/// The group a node is drawn in.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Group {
    /// A Kubernetes namespace.
    Namespace(String),
    /// Cluster nodes (targets reached at a node IP).
    Nodes,
    /// Everything outside the cluster.
    Internet,
}

impl Group {
    /// The group's caption.
    pub fn label(&self) -> &str {
        match self {
            Group::Namespace(ns) => ns,
            Group::Nodes => "nodes",
            Group::Internet => "internet",
        }
    }

    /// DOT subgraph name: `cluster_<namespace>`; the other groups use a double underscore, which
    /// no namespace name can hold.
    pub fn cluster_name(&self) -> String {
        match self {
            Group::Namespace(ns) => format!("cluster_{ns}"),
            Group::Nodes => "cluster__nodes".into(),
            Group::Internet => "cluster__internet".into(),
        }
    }
}

/// A node: a workload in a namespace, a cluster node, or an internet destination.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GraphNode {
    /// Its group.
    pub group: Group,
    /// Workload name, node name, or DNS name / IPs.
    pub name: String,
}

impl GraphNode {
    /// A DOT node id unique across groups: `<group>/<name>`.
    pub fn id(&self) -> String {
        let prefix = match &self.group {
            Group::Namespace(ns) => ns.as_str(),
            Group::Nodes => "_nodes",
            Group::Internet => "_internet",
        };
        format!("{prefix}/{}", self.name)
    }
}

/// Who calls whom, on which ports.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrafficGraph {
    /// Every node, by group; sorted.
    pub groups: BTreeMap<Group, BTreeSet<GraphNode>>,
    /// Edges client -> target, with the ports called; sorted.
    pub edges: BTreeMap<(GraphNode, GraphNode), BTreeSet<PortProtocol>>,
}

impl TrafficGraph {
    /// Builds the graph of `observed` (already filtered).
    pub fn build(observed: &[ObservedTraffic]) -> Self {
        let mut graph = TrafficGraph::default();
        for o in observed {
            let Some(status) = &o.status else { continue };
            if status.targets.is_empty() && status.internet_targets.is_empty() {
                continue;
            }
            let client = GraphNode {
                group: Group::Namespace(o.spec.client.namespace.clone()),
                name: o.spec.client.name.clone(),
            };
            graph.add_node(&client);
            for t in &status.targets {
                let group = if t.kind == NODE_KIND {
                    Group::Nodes
                } else {
                    Group::Namespace(t.namespace.clone())
                };
                let target = GraphNode {
                    group,
                    name: t.name.clone(),
                };
                graph.add_edge(&client, target, &t.ports);
            }
            for t in &status.internet_targets {
                let name = t.dns_name.clone().unwrap_or_else(|| t.ips.join(", "));
                let target = GraphNode {
                    group: Group::Internet,
                    name,
                };
                graph.add_edge(&client, target, &t.ports);
            }
        }
        graph
    }

    fn add_node(&mut self, node: &GraphNode) {
        self.groups
            .entry(node.group.clone())
            .or_default()
            .insert(node.clone());
    }

    fn add_edge(&mut self, from: &GraphNode, to: GraphNode, ports: &[PortProtocol]) {
        self.add_node(&to);
        self.edges
            .entry((from.clone(), to))
            .or_default()
            .extend(ports.iter().copied());
    }

    /// Whether there is nothing to draw.
    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }
}

/// An edge label: `80/TCP, 53/UDP`.
pub fn ports_label(ports: &BTreeSet<PortProtocol>) -> String {
    ports
        .iter()
        .map(|p| format!("{}/{}", p.port, p.protocol.as_str()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The graph as Graphviz DOT: one `subgraph cluster_<namespace>` per namespace, one for the
/// internet, edges labelled with ports. Deterministic.
pub fn to_dot(graph: &TrafficGraph) -> String {
    let mut out = String::from(
        "digraph trafficmap {\n  rankdir=LR;\n  node [shape=box, style=rounded, fontname=\"Helvetica\"];\n  edge [fontname=\"Helvetica\", fontsize=10];\n",
    );
    for (group, nodes) in &graph.groups {
        out.push_str(&format!(
            "  subgraph {} {{\n    label={};\n",
            quote(&group.cluster_name()),
            quote(group.label())
        ));
        if *group == Group::Internet {
            out.push_str("    style=dashed;\n");
        }
        for node in nodes {
            out.push_str(&format!(
                "    {} [label={}];\n",
                quote(&node.id()),
                quote(&node.name)
            ));
        }
        out.push_str("  }\n");
    }
    for ((from, to), ports) in &graph.edges {
        out.push_str(&format!(
            "  {} -> {} [label={}];\n",
            quote(&from.id()),
            quote(&to.id()),
            quote(&ports_label(ports))
        ));
    }
    out.push_str("}\n");
    out
}

/// A DOT double-quoted string.
fn quote(text: &str) -> String {
    format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::fixtures::{client, internet, target};

    fn map() -> Vec<ObservedTraffic> {
        let mut dns = target("kube-dns", "kube-system", 53);
        dns.ports.push(PortProtocol {
            port: 53,
            protocol: trafficmap_api::observed::Protocol::Udp,
        });
        vec![
            client(
                "checkout",
                "shop",
                vec![
                    target("cart", "shop", 7070),
                    target("ledger", "pay", 9090),
                    dns,
                ],
                vec![internet(Some("api.stripe.com"), &["192.0.2.1"], 443)],
            ),
            client(
                "web",
                "shop",
                vec![target("checkout", "shop", 5050)],
                vec![],
            ),
            client("idle", "shop", vec![], vec![]),
        ]
    }

    #[test]
    fn groups_nodes_by_namespace_and_internet_and_merges_ports() {
        let graph = TrafficGraph::build(&map());
        let groups: Vec<&str> = graph.groups.keys().map(Group::label).collect();
        assert_eq!(groups, ["kube-system", "pay", "shop", "internet"]);
        let shop: Vec<&str> = graph.groups[&Group::Namespace("shop".into())]
            .iter()
            .map(|n| n.name.as_str())
            .collect();
        assert_eq!(
            shop,
            ["cart", "checkout", "web"],
            "idle clients are left out"
        );
        assert_eq!(graph.edges.len(), 5);
    }

    #[test]
    fn dot_has_a_cluster_per_namespace_and_port_labels() {
        let dot = to_dot(&TrafficGraph::build(&map()));
        assert!(dot.starts_with("digraph trafficmap {\n"), "{dot}");
        assert!(
            dot.contains("  subgraph \"cluster_shop\" {\n    label=\"shop\";\n"),
            "{dot}"
        );
        assert!(dot.contains("  subgraph \"cluster__internet\" {\n    label=\"internet\";\n"));
        assert!(dot.contains("    \"shop/cart\" [label=\"cart\"];\n"));
        assert!(dot.contains(
            "  \"shop/checkout\" -> \"kube-system/kube-dns\" [label=\"53/TCP, 53/UDP\"];\n"
        ));
        assert!(dot.contains(
            "  \"shop/checkout\" -> \"_internet/api.stripe.com\" [label=\"443/TCP\"];\n"
        ));
        assert!(dot.ends_with("}\n"));
    }

    #[test]
    fn dot_strings_are_escaped() {
        assert_eq!(quote(r#"a"b\c"#), r#""a\"b\\c""#);
    }

    #[test]
    fn an_empty_map_is_an_empty_graph() {
        let graph = TrafficGraph::build(&[]);
        assert!(graph.is_empty());
        assert_eq!(to_dot(&graph).lines().last(), Some("}"));
    }
}
