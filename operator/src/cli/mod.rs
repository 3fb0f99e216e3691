//! `kubectl-trafficmap`: list, export, diff, visualize and reset the observed traffic map.
//!
//! Pure logic, unit-tested without a cluster: [`filter`] (which clients and calls),
//! [`list`] (the text format), [`export`] (ClientIntents through the shared renderer),
//! [`policy_export`] (NetworkPolicy or CiliumNetworkPolicy files), [`diff`] (coverage of
//! observed calls), [`netpol`] (what `diff --networkpolicy` prints), [`visualize`] (graph and
//! DOT), [`image`] (SVG and PNG), [`reset`] (what to delete). I/O at the edges: [`cluster`]
//! (the API server), [`files`] (local files), [`run`] (wiring). [`args`] holds the clap
//! definitions.

pub mod args;
pub mod cluster;
pub mod diff;
pub mod error;
pub mod export;
pub mod files;
pub mod filter;
pub mod image;
pub mod list;
pub mod netpol;
pub mod policy_export;
pub mod reset;
pub mod run;
pub mod visualize;

#[cfg(test)]
pub(crate) mod fixtures;

pub use args::Cli;
pub use error::{CliError, EXIT_ERROR};
pub use run::run;
