//! kubectl-trafficmap: not built yet (issue #5); exits non-zero so nothing mistakes it for a
//! working CLI.

use std::process::ExitCode;

fn main() -> ExitCode {
    eprintln!("kubectl-trafficmap is not implemented yet (see issue #5)");
    ExitCode::from(2)
}
