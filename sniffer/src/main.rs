//! `trafficmap-sniffer`: parses options, sets up logging, and runs the chosen output mode.

use std::ffi::OsStr;
use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;
use trafficmap_sniffer::config::{Args, OutputMode};
use trafficmap_sniffer::runtime;
use trafficmap_sniffer::scan::loader;

fn main() -> ExitCode {
    // Run by the scan thread to load the BPF socket iterator (scan::loader): not an option a
    // user gives, so it is not among Args.
    if std::env::args_os().nth(1).as_deref() == Some(OsStr::new(loader::HELPER_FLAG)) {
        return match loader::serve() {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("{err}");
                ExitCode::FAILURE
            }
        };
    }
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    let result = match args.output {
        OutputMode::Report => runtime::run_report(&args),
        OutputMode::Jsonl => runtime::run_jsonl(&args, std::io::stdout().lock()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(%err, "sniffer stopped");
            ExitCode::FAILURE
        }
    }
}
