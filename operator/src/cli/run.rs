//! Wiring: each command reads from the cluster, calls the pure functions, writes the result.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use clap::CommandFactory;

use crate::cli::args::{
    Cli, Command, CommonArgs, DiffArgs, ExportArgs, ExportFormat, GraphFormat, OutputType,
    VisualizeArgs,
};
use crate::cli::cluster::{Cluster, DraftDeletion};
use crate::cli::error::CliError;
use crate::cli::filter::{MapFilter, ServerRef};
use crate::cli::{diff, export, files, image, list, netpol, policy_export, reset, visualize};

/// Exit code of `diff` when a call is not covered.
pub const EXIT_UNCOVERED: u8 = 1;
/// The cluster DNS Service `diff --networkpolicy` assumes (its pods are not needed there).
const DEFAULT_CLUSTER_DNS: &str = "kube-system/kube-dns";
/// Exit code of `reset` without `--yes`.
pub const EXIT_NOT_CONFIRMED: u8 = 2;

/// Runs one command line.
pub async fn run(cli: Cli) -> Result<ExitCode, CliError> {
    let filter = map_filter(&cli.common)?;
    match cli.command {
        Command::Completions(args) => {
            let mut command = Cli::command();
            let mut out = Vec::new();
            clap_complete::generate(args.shell, &mut command, "kubectl-trafficmap", &mut out);
            emit(&out);
            Ok(ExitCode::SUCCESS)
        }
        Command::List => {
            let observed = fetch(&cli.common, &filter).await?;
            let filtered = filter != MapFilter::default();
            emit(list::format_list(&observed, filtered).as_bytes());
            Ok(ExitCode::SUCCESS)
        }
        Command::Export(args) => export_command(&cli.common, &filter, &args).await,
        Command::Diff(args) => diff_command(&cli.common, &filter, &args).await,
        Command::Visualize(args) => visualize_command(&cli.common, &filter, &args).await,
        Command::Reset(args) => {
            if filter.server.is_some() {
                return Err(CliError::Usage(
                    "reset forgets whole clients: --server does not apply (use -n/--exclude-namespace)".into(),
                ));
            }
            let cluster = Cluster::connect(&cli.common).await?;
            let observed = filter.apply(cluster.observed_traffic().await?);
            let namespaces: BTreeSet<String> = observed
                .iter()
                .map(|o| o.spec.client.namespace.clone())
                .collect();
            let intents = cluster.client_intents_if_installed(&namespaces).await?;
            let items = reset::plan(&observed, &intents);
            if items.is_empty() || !args.yes {
                emit(reset::format_plan(&items).as_bytes());
                return Ok(if items.is_empty() {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::from(EXIT_NOT_CONFIRMED)
                });
            }
            for item in &items {
                let deleted = cluster.delete_observed_traffic(&item.object).await?;
                let what = if deleted { "deleted" } else { "already gone" };
                emit(
                    format!("observedtraffic/{} {what} ({})\n", item.object, item.client)
                        .as_bytes(),
                );
                let Some(fate) = &item.intents else {
                    continue;
                };
                let line = if fate.delete {
                    let object = format!("clientintents/{} in {}", fate.name, fate.namespace);
                    match cluster.delete_draft(&fate.namespace, &fate.name).await? {
                        DraftDeletion::Deleted => format!("{object} deleted (draft)"),
                        DraftDeletion::Gone => format!("{object} already gone"),
                        DraftDeletion::Kept(writers) => reset::describe(&reset::IntentsFate {
                            delete: false,
                            writers,
                            ..fate.clone()
                        }),
                    }
                } else {
                    reset::describe(fate)
                };
                emit(format!("{line}\n").as_bytes());
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn map_filter(common: &CommonArgs) -> Result<MapFilter, CliError> {
    let server = common
        .server
        .as_deref()
        .map(ServerRef::parse)
        .transpose()
        .map_err(CliError::Usage)?;
    Ok(MapFilter {
        namespaces: common.namespaces.iter().cloned().collect(),
        excluded_namespaces: common.exclude_namespaces.iter().cloned().collect(),
        server,
    })
}

async fn fetch(
    common: &CommonArgs,
    filter: &MapFilter,
) -> Result<Vec<trafficmap_api::ObservedTraffic>, CliError> {
    let cluster = Cluster::connect(common).await?;
    Ok(filter.apply(cluster.observed_traffic().await?))
}

async fn export_command(
    common: &CommonArgs,
    filter: &MapFilter,
    args: &ExportArgs,
) -> Result<ExitCode, CliError> {
    let observed = fetch(common, filter).await?;
    if let Some(min) = args.min_observed {
        let brief =
            export::observed_too_briefly(&observed, min, k8s_openapi::jiff::Timestamp::now());
        if !brief.is_empty() {
            return Err(CliError::ObservedTooBriefly {
                min: humantime::format_duration(min).to_string(),
                workloads: brief,
            });
        }
    }
    let encoding = match args.format {
        ExportFormat::Yaml => export::Encoding::Yaml,
        ExportFormat::Json => export::Encoding::Json,
        ExportFormat::NetworkPolicy | ExportFormat::Cilium => {
            let cluster = Cluster::connect(common).await?;
            let inventory = cluster
                .inventory(&observed, &args.cluster_dns_service)
                .await?;
            return export_policies(&observed, &inventory, args);
        }
    };
    let intents = export::render_all(&observed);
    for line in export::unrenderable(&observed) {
        note(&line);
    }
    if intents.is_empty() {
        note(&format!("{} Nothing to export.", list::NOTHING_OBSERVED));
    }
    write_export(
        args,
        || export::serialize_per_client(&intents, encoding),
        || export::serialize_all(&intents, encoding),
    )
}

/// Writes an export: one file per workload into the `-o` directory with `--output-type dir`,
/// else one text to `-o` or stdout.
fn write_export(
    args: &ExportArgs,
    per_workload: impl FnOnce() -> Result<Vec<(String, String)>, CliError>,
    all: impl FnOnce() -> Result<String, CliError>,
) -> Result<ExitCode, CliError> {
    match args.output_type {
        OutputType::Dir => {
            let dir = args.output.as_deref().ok_or_else(|| {
                CliError::Usage("--output-type dir needs -o DIR, the directory to write".into())
            })?;
            std::fs::create_dir_all(dir).map_err(CliError::io(dir))?;
            let written = per_workload()?;
            for (name, content) in &written {
                files::write_file(&dir.join(name), content.as_bytes())?;
            }
            note(&format!(
                "wrote {} file(s) to {}",
                written.len(),
                dir.display()
            ));
        }
        OutputType::File => write_output(args.output.as_deref(), all()?.as_bytes())?,
    }
    Ok(ExitCode::SUCCESS)
}

/// Writes the NetworkPolicies or CiliumNetworkPolicies of `observed`, noting what could not be
/// expressed.
fn export_policies(
    observed: &[trafficmap_api::ObservedTraffic],
    inventory: &crate::policy::inventory::Inventory,
    args: &ExportArgs,
) -> Result<ExitCode, CliError> {
    if args.format == ExportFormat::Cilium {
        let rendered = crate::policy::cilium::render(observed, inventory);
        write_policies(&rendered, "cilium", "CiliumNetworkPolicy", args)
    } else {
        let rendered = crate::policy::networkpolicy::render(observed, inventory);
        write_policies(&rendered, "networkpolicy", "NetworkPolicy", args)
    }
}

/// Notes what `rendered` left out and writes its policies; files are named after `format`.
fn write_policies<P: serde::Serialize>(
    rendered: &crate::policy::Rendered<P>,
    format: &str,
    kind: &str,
    args: &ExportArgs,
) -> Result<ExitCode, CliError> {
    for line in &rendered.notes {
        note(line);
    }
    write_export(
        args,
        || policy_export::serialize_per_workload(rendered, format, kind),
        || policy_export::serialize_all(rendered, kind),
    )
}

async fn diff_command(
    common: &CommonArgs,
    filter: &MapFilter,
    args: &DiffArgs,
) -> Result<ExitCode, CliError> {
    let cluster = Cluster::connect(common).await?;
    let observed = filter.apply(cluster.observed_traffic().await?);
    if args.networkpolicy {
        let inventory = cluster.inventory(&observed, DEFAULT_CLUSTER_DNS).await?;
        let policies = match &args.filename {
            Some(path) => files::read_network_policies(path)?,
            None => {
                cluster
                    .network_policies(&inventory.namespace_labels)
                    .await?
            }
        };
        let (calls, notes) = crate::policy::calls::observed_calls(&observed, &inventory);
        for line in &notes {
            note(line);
        }
        let judged: Vec<_> = calls
            .into_iter()
            .map(|call| {
                let verdict = crate::policy::evaluate::evaluate(&policies, &call.connection);
                (call, verdict)
            })
            .collect();
        emit(netpol::format_verdicts(&judged).as_bytes());
        let blocked = judged
            .iter()
            .any(|(_, v)| *v != crate::policy::evaluate::Verdict::Allowed);
        return Ok(if blocked {
            ExitCode::from(EXIT_UNCOVERED)
        } else {
            ExitCode::SUCCESS
        });
    }
    let intents = match &args.filename {
        Some(path) => files::read_intents(path)?,
        None => {
            let namespaces: BTreeSet<String> = if filter.namespaces.is_empty() {
                observed
                    .iter()
                    .map(|o| o.spec.client.namespace.clone())
                    .collect()
            } else {
                filter.namespaces.clone()
            };
            cluster.client_intents(&namespaces).await?
        }
    };
    let report = diff::diff(&observed, &intents, filter);
    emit(diff::format_diff(&report).as_bytes());
    Ok(if report.has_uncovered() {
        ExitCode::from(EXIT_UNCOVERED)
    } else {
        ExitCode::SUCCESS
    })
}

async fn visualize_command(
    common: &CommonArgs,
    filter: &MapFilter,
    args: &VisualizeArgs,
) -> Result<ExitCode, CliError> {
    if args.format == GraphFormat::Png && args.output.is_none() {
        return Err(CliError::Usage(
            "--format png writes binary data: give a file with -o PATH".into(),
        ));
    }
    let observed = fetch(common, filter).await?;
    let graph = visualize::TrafficGraph::build(&observed);
    if graph.is_empty() {
        note(&format!("{} The graph is empty.", list::NOTHING_OBSERVED));
    }
    let bytes = match args.format {
        GraphFormat::Dot => visualize::to_dot(&graph).into_bytes(),
        GraphFormat::Svg => image::to_svg(&graph)?.into_bytes(),
        GraphFormat::Png => image::svg_to_png(&image::to_svg(&graph)?)?,
    };
    write_output(args.output.as_deref(), &bytes)?;
    Ok(ExitCode::SUCCESS)
}

/// Writes to `path`, or to stdout without one.
fn write_output(path: Option<&Path>, bytes: &[u8]) -> Result<(), CliError> {
    match path {
        Some(path) => files::write_file(path, bytes),
        None => {
            emit(bytes);
            Ok(())
        }
    }
}

/// Writes to stdout; a closed pipe (`| head`) is not an error.
fn emit(bytes: &[u8]) {
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(bytes).and_then(|()| stdout.flush());
}

/// A message for the person, on stderr so it never mixes with output.
fn note(message: &str) {
    let _ = writeln!(std::io::stderr(), "{message}");
}
