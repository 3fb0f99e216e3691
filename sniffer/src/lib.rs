//! trafficmap node agent: sees which pod calls whom on one node.
//!
//! - [`capture`]: DNS responses from an AF_PACKET ring (I/O), decoded by [`dns`] (pure).
//! - [`scan`]: client-side TCP/UDP sockets of every network namespace, with pod identity.
//! - [`aggregate`]: dedup into the API's [`trafficmap_api::report::Observation`]s (pure).
//! - [`output`]: JSON Lines on stdout; [`report`]: batches to the operator over HTTPS.
//! - [`admin`]: `/healthz`, `/readyz` and `/metrics` ([`health`], [`metrics`]).
//! - [`runtime`] wires the threads together.

pub mod admin;
pub mod aggregate;
pub mod capture;
pub mod config;
pub mod counters;
pub mod dns;
pub mod events;
pub mod health;
pub mod metrics;
pub mod output;
pub mod report;
pub mod runtime;
pub mod scan;
#[cfg(test)]
mod test_support;

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}
