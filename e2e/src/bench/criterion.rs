//! `dns_parse`: read from criterion's own estimate of `cargo bench -p trafficmap-sniffer
//! --bench dns_parse` (run just before by `make bench`), so the figure line has the common form.

use std::path::PathBuf;

use super::{BenchError, Figure, Result, io_context};

/// Where criterion writes the estimates of one function of the `dns_parse` bench.
pub fn estimates_path(function: &str) -> PathBuf {
    crate::cluster::repo_root().join(format!("target/criterion/{function}/new/estimates.json"))
}

/// Criterion's median and mean time per iteration of `function`, ns.
fn estimates(function: &str) -> Result<(f64, f64)> {
    let path = estimates_path(function);
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
    Ok((median, mean))
}

/// The figure: criterion's median time per iteration, ns, next to `simple_dns::Packet::parse`
/// of the same message alone (ratio: ours / the library's part).
pub fn dns_parse_figure() -> Result<Figure> {
    let (median, mean) = estimates("dns_parse")?;
    let (library, _) = estimates("simple_dns_parse")?;
    let (new_name, _) = estimates("dns_parse_new_name")?;
    Ok(Figure::new("dns_parse", median.round(), "ns")
        .with_baseline("simple_dns_parse", library.round(), median / library)
        .with_note(format!(
            "criterion median (mean {mean:.0} ns): Ethernet frame of one A response -> DnsDecoder -> Aggregator -> Observation, on a node of 110 pods; the response repeats a recent one but for its ID and port, and is answered from the decoder's memo; for a name not seen recently (parsed): {new_name:.0} ns; baseline: simple_dns::Packet::parse of the message alone"
        )))
}
