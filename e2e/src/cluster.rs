//! Connecting to the local control plane.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{DeleteParams, ObjectMeta, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};

use crate::{Error, Result, kube_context};

/// Environment variable naming the kubeconfig of the control plane under test.
pub const KUBECONFIG_ENV: &str = "TRAFFICMAP_KUBECONFIG";

/// The repository root (the parent of this crate's folder).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Kubeconfig of the control plane: `$TRAFFICMAP_KUBECONFIG`, else `<repo>/.run/kubeconfig`
/// (written by `make control-plane-up`).
pub fn kubeconfig_path() -> PathBuf {
    std::env::var_os(KUBECONFIG_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(".run/kubeconfig"))
}

/// An admin client for the control plane.
pub async fn admin_client() -> Result<Client> {
    let path = kubeconfig_path();
    let shown = path.display().to_string();
    if !path.exists() {
        return Err(Error::NoControlPlane { path: shown });
    }
    let kubeconfig = Kubeconfig::read_from(&path).map_err(|e| Error::Kubeconfig {
        path: shown.clone(),
        source: Box::new(e),
    })?;
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .map_err(|e| Error::Kubeconfig {
            path: shown.clone(),
            source: Box::new(e),
        })?;
    Client::try_from(config).map_err(kube_context(format!("client from {shown}")))
}

/// A name unique to this process and moment, for test namespaces: `<prefix>-<suffix>`.
pub fn unique_name(prefix: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    format!(
        "{prefix}-{:x}{:05x}",
        std::process::id() & 0xfff,
        nanos >> 12
    )
}

/// A namespace created for one test and deleted when dropped (deletion is asynchronous: the
/// namespace controller finishes it).
pub struct TestNamespace {
    client: Client,
    /// Namespace name.
    pub name: String,
}

impl TestNamespace {
    /// Creates a fresh namespace named `<prefix>-<unique>`.
    pub async fn create(client: &Client, prefix: &str) -> Result<Self> {
        let name = unique_name(prefix);
        let ns = Namespace {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        };
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .map_err(kube_context(format!("create namespace {name}")))?;
        Ok(TestNamespace {
            client: client.clone(),
            name,
        })
    }

    /// Deletes the namespace.
    pub async fn delete(self) -> Result<()> {
        Api::<Namespace>::all(self.client.clone())
            .delete(&self.name, &DeleteParams::default())
            .await
            .map_err(kube_context(format!("delete namespace {}", self.name)))?;
        Ok(())
    }
}

/// Polls `check` every 200 ms until it returns `Some`, or fails after `timeout`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Option<T>>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = check().await? {
            return Ok(value);
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(Error::Timeout {
                what: what.to_string(),
                seconds: timeout.as_secs(),
            });
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
