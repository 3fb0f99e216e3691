//! Chaos cases (issue 9): each runs against the real control plane with real operator
//! processes and real ServiceAccount tokens, and ends in a pass or a reason it failed.
//! `trafficmap-chaos` runs them and prints `chaos: <case>: pass|fail <why>`; the fast ones also
//! run as tests in `e2e/tests/chaos.rs` (so in `make test`).

pub mod apiserver;
pub mod flood;
pub mod harness;
pub mod ingest;
pub mod logs;
pub mod sniffer;
pub mod tokens;
pub mod writes;

use std::future::Future;
use std::pin::Pin;

/// What a case found wrong.
pub type Outcome = std::result::Result<(), String>;

/// A case's future.
pub type CaseFuture = Pin<Box<dyn Future<Output = Outcome> + Send>>;

/// One chaos case.
pub struct Case {
    /// Name printed in `chaos: <name>: ...`.
    pub name: &'static str,
    /// Too slow for `make test`: only in `make chaos`.
    pub slow: bool,
    /// Runs it.
    pub run: fn() -> CaseFuture,
}

/// Every case, in the order they run (the log scan last, so it sees every other case's logs).
pub fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "dns-flood-1m",
            slow: true,
            run: || Box::pin(flood::dns_flood()),
        },
        Case {
            name: "ingest-limits",
            slow: false,
            run: || Box::pin(ingest::ingest_limits()),
        },
        Case {
            name: "forged-reports",
            slow: false,
            run: || Box::pin(ingest::forged_reports()),
        },
        Case {
            name: "hand-edits-settle",
            slow: false,
            run: || Box::pin(writes::hand_edits_settle()),
        },
        Case {
            name: "operator-killed-mid-write",
            slow: true,
            run: || Box::pin(writes::operator_killed_mid_write()),
        },
        Case {
            name: "two-replicas",
            slow: true,
            run: || Box::pin(writes::two_replicas()),
        },
        Case {
            name: "apiserver-restart",
            slow: true,
            run: || Box::pin(apiserver::apiserver_restart()),
        },
        Case {
            name: "sniffer-restarted",
            slow: false,
            run: || Box::pin(sniffer::sniffer_restarted()),
        },
        Case {
            name: "operator-down-2min",
            slow: true,
            run: || Box::pin(sniffer::operator_down()),
        },
        Case {
            name: "no-secrets-in-logs",
            slow: false,
            run: || Box::pin(logs::no_secrets_in_logs()),
        },
    ]
}

/// `Err(why)` unless `holds`.
pub fn ensure(holds: bool, why: impl FnOnce() -> String) -> Outcome {
    if holds { Ok(()) } else { Err(why()) }
}

/// Turns a harness error into a case failure saying what was being done.
pub fn step<T>(what: &str, result: crate::Result<T>) -> std::result::Result<T, String> {
    result.map_err(|e| format!("{what}: {e}"))
}
