//! `trafficmap-bench`: the figures of issue 8 (`make bench`), one line each:
//! `NAME: VALUE UNIT (baseline NAME: VALUE, ratio: X)`, notes on `#` lines below them.
//!
//! - `all` (default): the sniffer's figures, then the operator's (needs the control plane:
//!   `make bench` starts one).
//! - `sniffer` (with `dns_parse` from criterion's estimates), `operator`: one half.
//! - `capture`, `scan`: one of the sniffer's figures, for work on that path.
//! - `gen-dns`, `hold-sockets`: the bench's own helper processes.

use std::net::Ipv4Addr;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use trafficmap_e2e::bench::{self, Figure, dnsgen, holder, netns, node};

#[derive(Parser)]
#[command(
    version,
    about = "trafficmap's benchmarks (issue 8): one line per figure"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Commands>,
}

#[derive(Subcommand)]
enum Commands {
    /// Every figure (the default).
    All,
    /// DNS capture rate, socket scan and sniffer memory.
    Sniffer,
    /// Operator ingest, memory, latency and API writes (needs the control plane).
    Operator,
    /// DNS capture rate only (the sniffer, then tcpdump), for work on the capture path.
    Capture,
    /// Socket scan only (the sniffer's BPF iterator, its sock_diag scan, the /proc baseline).
    Scan,
    /// Helper: send DNS responses at a rate (run inside the generator namespace).
    #[command(hide = true)]
    GenDns {
        #[arg(long)]
        interface: String,
        #[arg(long)]
        source: Ipv4Addr,
        #[arg(long)]
        client: Ipv4Addr,
        #[arg(long)]
        rate: u64,
        #[arg(long)]
        seconds: f64,
    },
    /// Helper: hold loopback TCP connections in a namespace of its own until stdin closes.
    #[command(hide = true)]
    HoldSockets {
        #[arg(long)]
        connections: usize,
    },
}

fn print(figures: &[Figure]) {
    for figure in figures {
        println!("{figure}");
    }
    for figure in figures {
        if let Some(note) = &figure.note {
            println!("# {}: {note}", figure.name);
        }
    }
}

fn run(command: Commands) -> bench::Result<()> {
    match command {
        Commands::GenDns {
            interface,
            source,
            client,
            rate,
            seconds,
        } => {
            let sent = dnsgen::generate(
                &interface,
                source,
                client,
                rate,
                Duration::from_secs_f64(seconds),
            )?;
            let json = serde_json::to_string(&sent)
                .map_err(|e| bench::BenchError::Failed(e.to_string()))?;
            println!("{json}");
            Ok(())
        }
        Commands::HoldSockets { connections } => holder::hold(connections),
        Commands::Sniffer => {
            netns::install_interrupt_cleanup();
            let mut figures = dns_parse();
            figures.extend(node::sniffer_figures()?);
            print(&figures);
            Ok(())
        }
        Commands::Capture => {
            netns::install_interrupt_cleanup();
            print(&[node::capture_figure()?]);
            Ok(())
        }
        Commands::Scan => {
            netns::install_interrupt_cleanup();
            print(&[node::scan_figure()?]);
            Ok(())
        }
        Commands::Operator => {
            netns::install_interrupt_cleanup();
            print(&operator_figures()?);
            Ok(())
        }
        Commands::All => {
            netns::install_interrupt_cleanup();
            let mut figures = dns_parse();
            figures.extend(node::sniffer_figures()?);
            figures.extend(operator_figures()?);
            print(&figures);
            Ok(())
        }
    }
}

/// `dns_parse` from criterion's estimates, when the criterion bench ran.
fn dns_parse() -> Vec<Figure> {
    match bench::criterion::dns_parse_figure() {
        Ok(figure) => vec![figure],
        Err(err) => {
            eprintln!("dns_parse: not measured: {err}");
            Vec::new()
        }
    }
}

fn operator_figures() -> bench::Result<Vec<Figure>> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(bench::io_context("tokio runtime"))?;
    runtime.block_on(bench::operator::figures())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli.command.unwrap_or(Commands::All)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("trafficmap-bench: {err}");
            ExitCode::FAILURE
        }
    }
}
