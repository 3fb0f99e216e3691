//! The CLI's errors: each says what went wrong and what to do about it.

use std::path::PathBuf;

use thiserror::Error;

/// Exit code for errors other than usage errors (`diff` uses 1 for uncovered calls, clap and
/// `reset` without `--yes` use 2).
pub const EXIT_ERROR: u8 = 3;

/// Errors of `kubectl-trafficmap`.
#[derive(Debug, Error)]
pub enum CliError {
    /// No usable kubeconfig.
    #[error(
        "cannot load a kubeconfig{}: {source}\nIs KUBECONFIG set? Pass --kubeconfig PATH (and --context NAME) to choose one.",
        path.as_ref().map(|p| format!(" from {}", p.display())).unwrap_or_default()
    )]
    Kubeconfig {
        /// The file named by `--kubeconfig`, if any.
        path: Option<PathBuf>,
        /// Cause.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The API server could not be reached.
    #[error(
        "cannot connect to the Kubernetes API server{}: {source}\nIs KUBECONFIG set, and the cluster running? Check with `kubectl cluster-info`.",
        server.as_ref().map(|s| format!(" at {s}")).unwrap_or_default()
    )]
    Connect {
        /// The server URL, when known.
        server: Option<String>,
        /// Cause.
        source: kube::Error,
    },
    /// A resource type is not served: its CRD is not installed.
    #[error("the API server does not know {resource}: {hint}")]
    CrdMissing {
        /// The resource, e.g. `observedtraffics.trafficmap.io`.
        resource: String,
        /// What to do.
        hint: String,
    },
    /// RBAC refused a request.
    #[error(
        "permission denied: you need `{verb}` on {resource}{}. Ask a cluster admin for a Role/ClusterRole that grants it.\n({message})",
        namespace.as_ref().map(|n| format!(" in namespace {n}")).unwrap_or_else(|| " (cluster-wide)".to_string())
    )]
    Forbidden {
        /// The verb needed (list, delete, ...).
        verb: String,
        /// The resource, `plural.group`.
        resource: String,
        /// The namespace, for namespaced requests.
        namespace: Option<String>,
        /// The API server's message.
        message: String,
    },
    /// Any other API error.
    #[error("{what}: {source}")]
    Api {
        /// What was being done.
        what: String,
        /// Cause.
        source: kube::Error,
    },
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// A ClientIntents file could not be parsed.
    #[error("{}: not valid ClientIntents YAML/JSON: {message}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        message: String,
    },
    /// Serializing output failed.
    #[error("cannot serialize {what}: {message}")]
    Serialize {
        /// What was serialized.
        what: String,
        /// Cause.
        message: String,
    },
    /// Drawing the graph failed.
    #[error("cannot draw the graph: {0}")]
    Draw(String),
    /// Flags that do not go together.
    #[error("{0}")]
    Usage(String),
    /// `export --min-observed`: workloads not observed long enough.
    #[error(
        "not exporting: {} workload(s) observed for less than {min}, so calls they make rarely may be missing:\n  - {}\nMap for longer, or export them with a smaller --min-observed.",
        workloads.len(),
        workloads.join("\n  - ")
    )]
    ObservedTooBriefly {
        /// `--min-observed` as given.
        min: String,
        /// One line per workload.
        workloads: Vec<String>,
    },
}

impl CliError {
    /// Wraps an I/O error with its path.
    pub fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> CliError {
        let path = path.into();
        move |source| CliError::Io { path, source }
    }
}

/// One request to the API server, described well enough to turn its failure into advice.
#[derive(Debug, Clone)]
pub struct Request {
    /// The verb (list, delete, ...).
    pub verb: &'static str,
    /// `plural.group`.
    pub resource: &'static str,
    /// Namespace of a namespaced request.
    pub namespace: Option<String>,
    /// What to do when the resource is not served.
    pub missing_hint: &'static str,
}

/// Resource name of ObservedTraffic.
pub const OBSERVED_TRAFFIC: &str = "observedtraffics.trafficmap.io";
/// Resource name of ClientIntents.
pub const CLIENT_INTENTS: &str = "clientintents.k8s.otterize.com";
/// What to do when ObservedTraffic is not served.
pub const INSTALL_OUR_CRDS: &str =
    "install trafficmap's CRDs: kubectl apply -f crds/yaml (or install the Helm chart)";
/// What to do when ClientIntents is not served.
pub const INSTALL_INTENTS_CRD: &str = "install the Otterize intents-operator (which brings the ClientIntents CRD), or diff against files with -f FILE|DIR";

impl Request {
    /// Turns a failure of this request into the error that says what to do.
    pub fn error(&self, server: Option<String>, source: kube::Error) -> CliError {
        match &source {
            kube::Error::Api(status) if status.code == 404 && self.verb == "list" => {
                CliError::CrdMissing {
                    resource: self.resource.to_string(),
                    hint: self.missing_hint.to_string(),
                }
            }
            kube::Error::Api(status) if status.code == 403 => CliError::Forbidden {
                verb: self.verb.to_string(),
                resource: self.resource.to_string(),
                namespace: self.namespace.clone(),
                message: status.message.clone(),
            },
            kube::Error::Api(status) if status.code == 401 => CliError::Connect { server, source },
            kube::Error::Api(_) => CliError::Api {
                what: format!("{} {}", self.verb, self.resource),
                source,
            },
            _ => CliError::Connect { server, source },
        }
    }
}
