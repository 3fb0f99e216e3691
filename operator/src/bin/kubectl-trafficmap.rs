//! kubectl-trafficmap: the trafficmap CLI, also usable as `kubectl trafficmap` (a kubectl plugin
//! is any `kubectl-<name>` binary on PATH). All behaviour lives in `trafficmap_operator::cli`.

use std::process::ExitCode;

use clap::Parser;
use trafficmap_operator::cli::{Cli, CliError, EXIT_ERROR, run};

/// Exit code of usage errors, as clap uses.
const EXIT_USAGE: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // kube links rustls with ring; name the provider so TLS never has to guess.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_ERROR);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e @ CliError::Usage(_)) => {
            eprintln!("error: {e}");
            ExitCode::from(EXIT_USAGE)
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(EXIT_ERROR)
        }
    }
}
