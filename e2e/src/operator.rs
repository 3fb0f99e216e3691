//! Runs the real `trafficmap-operator` binary against the control plane, as a process.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{ConfigMap, ServiceAccount};
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};

use crate::cluster::{kubeconfig_path, repo_root};
use crate::{Error, Result, kube_context};

/// Directory of the project's binaries: `$TRAFFICMAP_BIN_DIR`, else `<repo>/target/debug`.
pub fn bin_path(name: &str) -> Result<PathBuf> {
    let dir = std::env::var_os("TRAFFICMAP_BIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target/debug"));
    let path = dir.join(name);
    if path.exists() {
        Ok(path)
    } else {
        Err(Error::MissingBinary(path.display().to_string()))
    }
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| Error::Http {
        what: "free port".into(),
        source: Box::new(e),
    })?;
    let port = listener
        .local_addr()
        .map_err(|e| Error::Http {
            what: "free port".into(),
            source: Box::new(e),
        })?
        .port();
    Ok(port)
}

/// How long the operator may take to become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// How to run the operator.
#[derive(Clone, Debug)]
pub struct OperatorOptions {
    /// Its namespace (Secret, ConfigMap, Lease live there).
    pub namespace: String,
    /// The sniffer ServiceAccount, `namespace/name`.
    pub sniffer_account: String,
    /// Extra flags.
    pub extra_args: Vec<String>,
    /// Label for the log file.
    pub label: String,
}

/// A running operator; killed when dropped.
pub struct OperatorProcess {
    child: Child,
    /// `https://127.0.0.1:<port>/v1/reports`.
    pub ingest_url: String,
    /// `http://127.0.0.1:<port>`.
    pub admin_url: String,
    /// Where its output goes.
    pub log: PathBuf,
}

impl OperatorProcess {
    /// Starts it and waits until it is ready (leading and ingesting).
    pub async fn start(options: &OperatorOptions) -> Result<Self> {
        let mut process = Self::spawn(options)?;
        process.wait_ready(READY_TIMEOUT).await?;
        Ok(process)
    }

    /// Starts it without waiting (a leader-election follower never becomes ready).
    pub fn spawn(options: &OperatorOptions) -> Result<Self> {
        Self::spawn_on(options, free_port()?)
    }

    /// Like [`OperatorProcess::spawn`], serving reports on `ingest` (a restarted operator
    /// that sniffers must find again at the same address).
    pub fn spawn_on(options: &OperatorOptions, ingest: u16) -> Result<Self> {
        let mut args: Vec<String> = [
            "--namespace",
            &options.namespace,
            "--pod-name",
            &options.label,
            "--sniffer-service-account",
            &options.sniffer_account,
            "--tls-san",
            "127.0.0.1",
            "--pod-cidr",
            "10.244.0.0/16",
            "--service-cidr",
            "10.96.0.0/16",
            "--flush-interval",
            "1s",
            // The tests check drafts; users opt in (chart value emitClientIntents).
            "--emit-client-intents=true",
        ]
        .map(String::from)
        .into();
        args.extend(options.extra_args.iter().cloned());
        Self::launch(&options.label, &kubeconfig_path(), &args, ingest)
    }

    /// Starts it with exactly `args` plus loopback `--ingest-addr` and `--admin-addr`, as the
    /// user of `kubeconfig`, without waiting.
    pub fn spawn_with(label: &str, kubeconfig: &Path, args: &[String]) -> Result<Self> {
        Self::launch(label, kubeconfig, args, free_port()?)
    }

    fn launch(label: &str, kubeconfig: &Path, args: &[String], ingest: u16) -> Result<Self> {
        let binary = bin_path("trafficmap-operator")?;
        let admin = free_port()?;
        let log_dir = repo_root().join("target/e2e-logs");
        std::fs::create_dir_all(&log_dir).map_err(|e| Error::Http {
            what: "log dir".into(),
            source: Box::new(e),
        })?;
        let log = log_dir.join(format!("{label}-operator.log"));
        let (out, err) = crate::log_files(&log)?;
        let child = Command::new(&binary)
            .env("KUBECONFIG", kubeconfig)
            .env("RUST_LOG", "info,trafficmap_operator=debug")
            .args([
                "--ingest-addr",
                &format!("127.0.0.1:{ingest}"),
                "--admin-addr",
                &format!("127.0.0.1:{admin}"),
            ])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .spawn()
            .map_err(|e| Error::Http {
                what: binary.display().to_string(),
                source: Box::new(e),
            })?;
        let process = OperatorProcess {
            child,
            ingest_url: format!("https://127.0.0.1:{ingest}/v1/reports"),
            admin_url: format!("http://127.0.0.1:{admin}"),
            log,
        };
        Ok(process)
    }

    /// Whether `/readyz` answers 200 now.
    pub async fn is_ready(&self) -> bool {
        matches!(
            crate::http::get(&format!("{}/readyz", self.admin_url)).await,
            Ok((200, _))
        )
    }

    /// Waits until `/readyz` answers 200; fails with the log's tail if it exits or times out.
    pub async fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                let tail = self.log_tail();
                return Err(Error::Exited(format!(
                    "operator exited with {status}\n--- operator log ---\n{tail}"
                )));
            }
            if self.is_ready().await {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                let tail = self.log_tail();
                return Err(Error::Exited(format!(
                    "operator not ready after {timeout:?}\n--- operator log ---\n{tail}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The last lines of its log.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// Its `/metrics` text.
    pub async fn metrics(&self) -> Result<String> {
        Ok(crate::http::get(&format!("{}/metrics", self.admin_url))
            .await?
            .1)
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills it at once (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Asks it to stop (SIGTERM) and waits up to 30 s.
    pub fn terminate(&mut self) -> Option<std::process::ExitStatus> {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        for _ in 0..300 {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        self.kill();
        None
    }
}

impl Drop for OperatorProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The CA the operator published for sniffers.
pub async fn published_ca(client: &Client, namespace: &str) -> Result<String> {
    let cm = Api::<ConfigMap>::namespaced(client.clone(), namespace)
        .get("trafficmap-ca")
        .await
        .map_err(kube_context("read ConfigMap trafficmap-ca"))?;
    cm.data
        .and_then(|d| d.get("ca.crt").cloned())
        .ok_or_else(|| Error::Exited("ConfigMap trafficmap-ca has no ca.crt".into()))
}

/// Creates ServiceAccount `name` (if needed) and returns a token for `audience`.
pub async fn service_account_token(
    client: &Client,
    namespace: &str,
    name: &str,
    audience: &str,
) -> Result<String> {
    let accounts = Api::<ServiceAccount>::namespaced(client.clone(), namespace);
    let account = ServiceAccount {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..ObjectMeta::default()
        },
        ..ServiceAccount::default()
    };
    match accounts.create(&PostParams::default(), &account).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 409 => {}
        Err(e) => return Err(kube_context(format!("create service account {name}"))(e)),
    }
    request_token(client, namespace, name, Some(audience)).await
}

/// A token (1 h) of ServiceAccount `namespace/name` from the TokenRequest API, for `audience`
/// (`None`: the API server's own).
pub async fn request_token(
    client: &Client,
    namespace: &str,
    name: &str,
    audience: Option<&str>,
) -> Result<String> {
    let request = TokenRequest {
        spec: Some(TokenRequestSpec {
            audiences: audience.map(|a| vec![a.to_string()]),
            expiration_seconds: Some(3600),
            ..TokenRequestSpec::default()
        }),
        ..TokenRequest::default()
    };
    let issued: TokenRequest = Api::<ServiceAccount>::namespaced(client.clone(), namespace)
        .create_subresource("token", name, &PostParams::default(), &request)
        .await
        .map_err(kube_context(format!("token for {namespace}/{name}")))?;
    issued
        .status
        .and_then(|s| s.token)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            Error::Exited(format!(
                "TokenRequest for {namespace}/{name} returned no token"
            ))
        })
}
