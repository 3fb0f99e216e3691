//! trafficmap operator: resolves sniffer observations to workloads and keeps the map in
//! ObservedTraffic objects and draft ClientIntents.
//!
//! - [`resolve`]: pure, event-fed resolution (IP history, owner walk, naming, aggregation).
//! - [`ingest`]: the HTTPS endpoint sniffers post reports to.
//! - [`store`]: the watches that feed resolution, and the stored map read back on start.
//! - [`engine`]: the task that owns resolution state and decides what to write when.
//! - [`reconcile`]: the only writer of ObservedTraffic and ClientIntents.
//! - [`durable`]: a report is acknowledged only once what it changed is written.
//! - [`handover`]: the history a stopping operator leaves for the next one.
//! - [`leader`], [`admin`], [`metrics`], [`config`]: process wiring.

pub mod admin;
pub mod cli;
pub mod config;
pub mod durable;
pub mod engine;
pub mod fast_hash;
pub mod handover;
pub mod ingest;
pub mod leader;
pub mod metrics;
pub mod policy;
pub mod reconcile;
pub mod resolve;
pub mod store;

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
