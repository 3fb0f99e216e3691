//! `trafficmap-chaos [--fast] [CASE...]`: runs the chaos cases of issue 9 against the local
//! control plane (`make chaos` starts it) and prints one line per case,
//! `chaos: <case>: pass` or `chaos: <case>: fail <why>`; exits 1 if any failed.

use std::process::ExitCode;
use std::time::Instant;

use trafficmap_e2e::chaos::{cases, harness};

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let fast_only = args.iter().any(|a| a == "--fast");
    let wanted: Vec<&String> = args.iter().filter(|a| !a.starts_with("--")).collect();
    let all = cases();
    for name in &wanted {
        if !all.iter().any(|c| c.name == name.as_str()) {
            let names: Vec<&str> = all.iter().map(|c| c.name).collect();
            eprintln!(
                "trafficmap-chaos: no case {name}; cases: {}",
                names.join(", ")
            );
            return ExitCode::from(2);
        }
    }
    if let Err(err) = harness::reap_stale().await {
        println!("chaos: setup: fail {err}");
        return ExitCode::FAILURE;
    }
    let mut failed = 0;
    for case in all {
        if (fast_only && case.slow)
            || (!wanted.is_empty() && !wanted.iter().any(|w| *w == case.name))
        {
            continue;
        }
        let started = Instant::now();
        let outcome = (case.run)().await;
        let took = started.elapsed().as_secs();
        match outcome {
            Ok(()) => println!("chaos: {}: pass ({took} s)", case.name),
            Err(why) => {
                failed += 1;
                println!("chaos: {}: fail {why} ({took} s)", case.name);
            }
        }
    }
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
