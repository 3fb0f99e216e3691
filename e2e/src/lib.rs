//! trafficmap's end-to-end harness: access to the local control plane that `e2e/controlplane`
//! builds from the Kubernetes Go modules, installation of the CRDs the tests need, the
//! simulated node ([`sim`]) and the scenario runner ([`scenario`]).

pub mod bench;
pub mod chaos;
pub mod chart;
pub mod cluster;
pub mod crds;
pub mod fixtures;
pub mod http;
pub mod operator;
pub mod prom;
pub mod real;
pub mod scenario;
pub mod sim;

use std::fs::{File, OpenOptions};
use std::path::Path;

use thiserror::Error;

/// A log file opened for appending, twice: for a child's stdout and its stderr.
pub fn log_files(path: &Path) -> Result<(File, File)> {
    let context = |e: std::io::Error| Error::Http {
        what: format!("open log {}", path.display()),
        source: Box::new(e),
    };
    let out = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(context)?;
    let err = out.try_clone().map_err(context)?;
    Ok((out, err))
}

/// Errors of the e2e harness.
#[derive(Debug, Error)]
pub enum Error {
    /// No kubeconfig for the local control plane.
    #[error(
        "no control plane: {path} does not exist; run `make control-plane-up` (or `make test`, which starts it)"
    )]
    NoControlPlane {
        /// Kubeconfig path that was looked for.
        path: String,
    },
    /// The kubeconfig could not be read or used.
    #[error("kubeconfig {path}: {source}")]
    Kubeconfig {
        /// Kubeconfig path.
        path: String,
        /// Cause.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A call to the API server failed.
    #[error("{context}: {source}")]
    Kube {
        /// What was being done.
        context: String,
        /// Cause.
        source: kube::Error,
    },
    /// A manifest could not be parsed.
    #[error("manifest {path}: {source}")]
    Manifest {
        /// File the manifest came from.
        path: String,
        /// Cause.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// An HTTP exchange or local resource failed.
    #[error("{what}: {source}")]
    Http {
        /// What was attempted.
        what: String,
        /// Cause.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A project binary is not built.
    #[error(
        "{0} is missing: build it first (`cargo build --workspace --bins`, which `make test` does)"
    )]
    MissingBinary(String),
    /// A process under test exited or misbehaved.
    #[error("{0}")]
    Exited(String),
    /// Something did not happen in time.
    #[error("timed out after {seconds} s waiting for {what}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// How long.
        seconds: u64,
    },
}

/// Result of the harness.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Wraps a kube error with what was being done.
pub fn kube_context(context: impl Into<String>) -> impl FnOnce(kube::Error) -> Error {
    let context = context.into();
    move |source| Error::Kube { context, source }
}
