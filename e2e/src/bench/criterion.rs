//! `dns_parse`: read from criterion's own estimate of `cargo bench -p trafficmap-sniffer
//! --bench dns_parse` (run just before by `make bench`), so the figure line has the common form.

use std::path::PathBuf;

use super::{BenchError, Figure, Result, io_context};

/// Where criterion writes the estimates of the `dns_parse` bench.
pub fn estimates_path() -> PathBuf {
    crate::cluster::repo_root().join("target/criterion/dns_parse/new/estimates.json")
}

/// The figure: criterion's median time per iteration, ns.
pub fn dns_parse_figure() -> Result<Figure> {
    let path = estimates_path();
    let text = std::fs::read_to_string(&path).map_err(io_context(format!(
        "{} (run `cargo bench -p trafficmap-sniffer --bench dns_parse` first)",
        path.display()
    )))?;
    let estimates: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| BenchError::Failed(format!("{}: {e}", path.display())))?;
    let median = estimates["median"]["point_estimate"]
        .as_f64()
        .ok_or_else(|| BenchError::Failed(format!("{}: no median", path.display())))?;
    let mean = estimates["mean"]["point_estimate"]
        .as_f64()
        .unwrap_or(median);
    Ok(Figure::new("dns_parse", median.round(), "ns").with_note(format!(
        "criterion median (mean {mean:.0} ns): Ethernet frame of one A response -> DnsDecoder -> Aggregator -> Observation"
    )))
}
