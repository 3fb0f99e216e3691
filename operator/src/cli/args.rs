//! The command line: clap definitions only, no behaviour.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

const TOP_EXAMPLES: &str = "\
Examples:
  kubectl trafficmap list
  kubectl trafficmap list -n otterize-ecom-demo
  kubectl trafficmap export -o intents.yaml
  kubectl trafficmap export --output-type dir -o intents/
  kubectl trafficmap diff -f intents/
  kubectl trafficmap visualize --format svg -o map.svg
  kubectl trafficmap reset -n otterize-ecom-demo --yes
  kubectl-trafficmap completions bash > /etc/bash_completion.d/kubectl-trafficmap

Exit codes: 0 success; 1 `diff` found calls the intents do not cover; 2 usage error, or `reset`
without --yes; 3 any other error.";

const LIST_EXAMPLES: &str = "\
Examples:
  # Every client workload and the workloads it calls
  kubectl trafficmap list
  # Only clients in two namespaces, leaving out calls to anything but the cart service
  kubectl trafficmap list -n shop -n checkout --server cartservice.shop
  # Everything except kube-system
  kubectl trafficmap list --exclude-namespace kube-system";

const EXPORT_EXAMPLES: &str = "\
Examples:
  # All drafts as multi-document YAML on stdout
  kubectl trafficmap export
  # One namespace, as JSON (a v1 List of the objects), into a file
  kubectl trafficmap export -n shop --format json -o shop-intents.json
  # One file per client workload (<workload>.<namespace>.yaml), ready to commit to Git
  kubectl trafficmap export --output-type dir -o intents/
  # Check what the cluster would accept
  kubectl trafficmap export -o intents.yaml && kubectl apply --dry-run=server -f intents.yaml
  # Kubernetes NetworkPolicy instead: per client egress, per server ingress, one file per workload
  kubectl trafficmap export --format networkpolicy --output-type dir -o policies/
  # CiliumNetworkPolicy instead: the same policies, internet targets by DNS name as well
  kubectl trafficmap export --format cilium --output-type dir -o cilium-policies/
  # Refuse while a workload has been observed for less than a week
  kubectl trafficmap export --min-observed 7d -o intents.yaml";

const DIFF_EXAMPLES: &str = "\
Examples:
  # Observed calls against the ClientIntents in the client namespaces
  kubectl trafficmap diff
  # Against intents in Git (a file or a directory of YAML/JSON files)
  kubectl trafficmap diff -f intents/
  # In CI: fail when something would be blocked once intents are enforced
  kubectl trafficmap diff -n shop -f intents/ || echo 'uncovered calls'
  # Observed calls the cluster's NetworkPolicies (or those in files) would block
  kubectl trafficmap diff --networkpolicy
  kubectl trafficmap diff --networkpolicy -f policies/";

const VISUALIZE_EXAMPLES: &str = "\
Examples:
  # Graphviz DOT on stdout
  kubectl trafficmap visualize
  # SVG or PNG, laid out and drawn without graphviz
  kubectl trafficmap visualize --format svg -o map.svg
  kubectl trafficmap visualize --format png -o map.png -n shop";

const RESET_EXAMPLES: &str = "\
Examples:
  # Show what would be forgotten (exits 2)
  kubectl trafficmap reset
  # Forget the map of one namespace's clients
  kubectl trafficmap reset -n shop --yes
  # Forget everything
  kubectl trafficmap reset --yes";

const COMPLETIONS_EXAMPLES: &str = "\
Examples:
  kubectl-trafficmap completions bash > /etc/bash_completion.d/kubectl-trafficmap
  kubectl-trafficmap completions zsh > \"${fpath[1]}/_kubectl-trafficmap\"
  kubectl-trafficmap completions fish > ~/.config/fish/completions/kubectl-trafficmap.fish";

/// kubectl-trafficmap: the observed who-calls-whom map of a cluster, and the ClientIntents it
/// implies.
#[derive(Debug, Parser)]
#[command(
    name = "kubectl-trafficmap",
    version,
    about = "Lists, exports, diffs, visualizes and resets trafficmap's observed traffic map",
    after_help = TOP_EXAMPLES
)]
pub struct Cli {
    /// Options every command takes.
    #[command(flatten)]
    pub common: CommonArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Connection and filter flags, accepted before or after the command.
#[derive(Debug, Clone, Default, Args)]
pub struct CommonArgs {
    /// Only clients in this namespace (repeatable).
    #[arg(
        short = 'n',
        long = "namespace",
        global = true,
        value_name = "NAMESPACE"
    )]
    pub namespaces: Vec<String>,
    /// Leave out clients in this namespace (repeatable).
    #[arg(long = "exclude-namespace", global = true, value_name = "NAMESPACE")]
    pub exclude_namespaces: Vec<String>,
    /// Only calls to this server: `name.namespace` (a workload or Service), or `internet:<name or ip>`.
    #[arg(long, global = true, value_name = "NAME.NAMESPACE")]
    pub server: Option<String>,
    /// Path of the kubeconfig (default: $KUBECONFIG, then ~/.kube/config, then in-cluster).
    #[arg(long, global = true, value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,
    /// Kubeconfig context to use (default: the current context).
    #[arg(long, global = true, value_name = "NAME")]
    pub context: Option<String>,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print each client workload and what it calls.
    #[command(after_help = LIST_EXAMPLES)]
    List,
    /// Write the draft ClientIntents (k8s.otterize.com/v2beta1), NetworkPolicy or CiliumNetworkPolicy, for the observed calls.
    #[command(after_help = EXPORT_EXAMPLES)]
    Export(ExportArgs),
    /// Compare observed calls with ClientIntents in the cluster or in files.
    #[command(after_help = DIFF_EXAMPLES)]
    Diff(DiffArgs),
    /// Draw the map as a graph (DOT, SVG or PNG).
    #[command(after_help = VISUALIZE_EXAMPLES)]
    Visualize(VisualizeArgs),
    /// Delete ObservedTraffic objects so the operator forgets those clients.
    #[command(after_help = RESET_EXAMPLES)]
    Reset(ResetArgs),
    /// Print a shell completion script.
    #[command(after_help = COMPLETIONS_EXAMPLES)]
    Completions(CompletionsArgs),
}

/// `export` flags.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// What to write: ClientIntents as YAML or JSON, or network policy.
    #[arg(long, value_enum, default_value_t = ExportFormat::Yaml)]
    pub format: ExportFormat,
    /// Output file (default: stdout), or the directory with `--output-type dir`.
    #[arg(short = 'o', long = "output", value_name = "PATH")]
    pub output: Option<PathBuf>,
    /// One file holding every object, or a directory with one file per client workload.
    #[arg(long = "output-type", value_enum, default_value_t = OutputType::File)]
    pub output_type: OutputType,
    /// Refuse to export (exit 3, naming each) when a workload has been observed for less than
    /// this (e.g. `7d`): a workload that runs rarely, such as a nightly CronJob, would otherwise
    /// be locked out of the calls it has not made yet.
    #[arg(long = "min-observed", value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub min_observed: Option<std::time::Duration>,
    /// The cluster DNS Service, `namespace/name`, whose pods every policy lets clients query
    /// (with `--format networkpolicy` or `cilium`).
    #[arg(
        long,
        value_name = "NAMESPACE/NAME",
        default_value = "kube-system/kube-dns"
    )]
    pub cluster_dns_service: String,
}

/// What `export` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExportFormat {
    /// ClientIntents as multi-document YAML, `---` separated.
    Yaml,
    /// ClientIntents as JSON: a `v1` `List` whose `items` array holds the objects (what
    /// `kubectl apply -f` reads).
    Json,
    /// Kubernetes NetworkPolicy (YAML): per client workload egress to cluster DNS, its targets
    /// and the internet addresses seen; per server workload ingress from its clients.
    #[value(name = "networkpolicy")]
    NetworkPolicy,
    /// CiliumNetworkPolicy (cilium.io/v2, YAML): the same policies, with cluster DNS through
    /// Cilium's DNS proxy, internet targets by DNS name (toFQDNs) and the addresses seen, nodes
    /// and the API server as entities.
    Cilium,
}

/// Where an export goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputType {
    /// One file (or stdout).
    File,
    /// A directory, one file per workload: `<workload>.<namespace>.yaml` (or `.json`) for
    /// ClientIntents, `<workload>.<namespace>.<format>.yaml` for network policy.
    Dir,
}

/// `diff` flags.
#[derive(Debug, Args)]
pub struct DiffArgs {
    /// ClientIntents from this file or directory (YAML or JSON, multi-document) instead of the
    /// cluster.
    #[arg(short = 'f', long = "filename", value_name = "FILE|DIR")]
    pub filename: Option<PathBuf>,
    /// Compare with NetworkPolicies instead (from -f, else the cluster's in the namespaces
    /// involved), evaluated here over the observed calls, independent of any CNI.
    #[arg(long)]
    pub networkpolicy: bool,
}

/// `visualize` flags.
#[derive(Debug, Args)]
pub struct VisualizeArgs {
    /// Graph format.
    #[arg(long, value_enum, default_value_t = GraphFormat::Dot)]
    pub format: GraphFormat,
    /// Output file (default: stdout; required for png).
    #[arg(short = 'o', long = "output", value_name = "PATH")]
    pub output: Option<PathBuf>,
}

/// Graph formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum GraphFormat {
    /// Graphviz DOT text.
    Dot,
    /// SVG, laid out in-process.
    Svg,
    /// PNG, rasterised in-process from the SVG.
    Png,
}

/// `reset` flags.
#[derive(Debug, Args)]
pub struct ResetArgs {
    /// Really delete; without it, print what would be deleted and exit 2.
    #[arg(long)]
    pub yes: bool,
}

/// `completions` flags.
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// Shell to generate for.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}
