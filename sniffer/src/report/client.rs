//! The HTTPS [`Transport`] to the operator: rustls (ring) trusting only the mounted CA,
//! a kept-alive HTTP/1.1 connection, and the ServiceAccount token as a bearer token.
//!
//! An operator pod that vanishes (deleted, its node gone) sends no reset: the kept-alive
//! connection then points at an address nobody answers, and a request on it would wait for the
//! whole request timeout. TCP keepalive probes (when the request is sent and the answer awaited)
//! and TCP_USER_TIMEOUT (when what was sent is never acknowledged) drop such a connection within
//! [`DEAD_PEER_AFTER`], and the next attempt reconnects through the Service.

use std::error::Error as StdError;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Uri};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use rustls::{ClientConfig, RootCertStore};
use thiserror::Error;
use trafficmap_api::report::INGEST_PATH;

use super::deliver::{Answer, FailureReason, Transport};
use super::token::TokenFile;

/// Most bytes of an answer's body that are read (it is only logged).
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// Why the transport could not be set up.
#[derive(Debug, Error)]
pub enum ClientError {
    /// The CA file could not be read or holds no certificate.
    #[error("cannot load the operator CA from {path}: {reason}")]
    Ca {
        /// The CA file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// The operator URL is not an `https://host[:port][/prefix]` URL.
    #[error("operator URL `{url}` is not usable: {reason}")]
    Url {
        /// The URL given.
        url: String,
        /// What is wrong.
        reason: String,
    },
    /// rustls refused the configuration.
    #[error("cannot configure TLS: {0}")]
    Tls(#[from] rustls::Error),
}

/// The ingest URL for an operator base URL: `<base>/v1/reports`.
pub fn ingest_uri(operator_url: &str) -> Result<Uri, ClientError> {
    let bad = |reason: &str| ClientError::Url {
        url: operator_url.to_owned(),
        reason: reason.to_owned(),
    };
    let url = format!("{}{INGEST_PATH}", operator_url.trim_end_matches('/'));
    let uri: Uri = url.parse().map_err(|_| bad("not a URL"))?;
    if uri.scheme_str() != Some("https") {
        return Err(bad("the scheme must be https"));
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(bad("no host"));
    }
    if uri.query().is_some() {
        return Err(bad("a query is not allowed"));
    }
    Ok(uri)
}

/// Trust roots holding only the certificates of the PEM file at `path`.
pub fn load_ca(path: &Path) -> Result<RootCertStore, ClientError> {
    let bad = |reason: String| ClientError::Ca {
        path: path.to_owned(),
        reason,
    };
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(path).map_err(|e| bad(e.to_string()))? {
        let cert = cert.map_err(|e| bad(e.to_string()))?;
        roots.add(cert).map_err(|e| bad(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(bad("no certificate in the file".into()));
    }
    Ok(roots)
}

/// POSTs reports to the operator.
#[derive(Debug)]
pub struct HttpsTransport {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    uri: Uri,
    token: TokenFile,
    timeout: Duration,
    /// The last transport error logged at warn level; repeats go to debug.
    last_error: Option<String>,
}

/// How long a silent peer keeps a connection: unacknowledged data (TCP_USER_TIMEOUT), or
/// keepalive probes unanswered (idle time + interval × probes).
pub const DEAD_PEER_AFTER: Duration = Duration::from_secs(10);
const KEEPALIVE_IDLE: Duration = Duration::from_secs(4);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(2);
const KEEPALIVE_PROBES: u32 = 3;
/// A new connection to the operator's Service must be made within this.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

impl HttpsTransport {
    /// A transport to `uri` trusting `roots` only, authenticating with the token in
    /// `token_file`, giving up on a request after `timeout`.
    pub fn new(
        uri: Uri,
        roots: RootCertStore,
        token_file: PathBuf,
        timeout: Duration,
    ) -> Result<Self, ClientError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let mut tcp = HttpConnector::new();
        tcp.enforce_http(false);
        tcp.set_connect_timeout(Some(CONNECT_TIMEOUT));
        tcp.set_keepalive(Some(KEEPALIVE_IDLE));
        tcp.set_keepalive_interval(Some(KEEPALIVE_INTERVAL));
        tcp.set_keepalive_retries(Some(KEEPALIVE_PROBES));
        tcp.set_tcp_user_timeout(Some(DEAD_PEER_AFTER));
        let connector = HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_only()
            .enable_http1()
            .wrap_connector(tcp);
        let client = Client::builder(TokioExecutor::new()).build(connector);
        Ok(HttpsTransport {
            client,
            uri,
            token: TokenFile::new(token_file),
            timeout,
            last_error: None,
        })
    }

    async fn exchange(&mut self, body: Vec<u8>) -> Result<Answer, FailureReason> {
        let token = match self.token.current() {
            Ok(token) => token,
            Err(err) => {
                tracing::warn!(%err, "no token for the report");
                return Err(FailureReason::Token);
            }
        };
        let bearer = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
            tracing::warn!(path = %self.token.path().display(), "token is not a valid header value");
            FailureReason::Token
        })?;
        let request = Request::builder()
            .method(Method::POST)
            .uri(self.uri.clone())
            .header(AUTHORIZATION, bearer)
            .header(CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)))
            .map_err(|err| {
                tracing::warn!(%err, "cannot build the report request");
                FailureReason::Connect
            })?;
        let response = match self.client.request(request).await {
            Ok(response) => response,
            Err(err) => {
                let reason = transport_failure(&err);
                let error = error_chain(&err);
                if self.last_error.as_deref() == Some(error.as_str()) {
                    tracing::debug!(error, reason = reason.label(), "report not sent");
                } else {
                    tracing::warn!(error, reason = reason.label(), "report not sent");
                    self.last_error = Some(error);
                }
                return Err(reason);
            }
        };
        self.last_error = None;
        let status = response.status().as_u16();
        // The body is only logged: a truncated or broken one is not a failure.
        let body = Limited::new(response.into_body(), MAX_ANSWER_BYTES)
            .collect()
            .await
            .map(|collected| collected.to_bytes().to_vec())
            .unwrap_or_default();
        if status == 401 {
            self.token.invalidate();
        }
        Ok(Answer { status, body })
    }
}

impl Transport for HttpsTransport {
    async fn send(&mut self, body: Vec<u8>) -> Result<Answer, FailureReason> {
        match tokio::time::timeout(self.timeout, self.exchange(body)).await {
            Ok(result) => result,
            Err(_) => Err(FailureReason::Timeout),
        }
    }
}

/// Why a request got no answer: a TLS error anywhere in the chain, else a connection error.
fn transport_failure(err: &(dyn StdError + 'static)) -> FailureReason {
    let mut next = Some(err);
    while let Some(current) = next {
        if current.is::<rustls::Error>() {
            return FailureReason::Tls;
        }
        // io::Error::source skips the error it wraps, so step into it directly.
        next = match current.downcast_ref::<io::Error>() {
            Some(io_error) => io_error
                .get_ref()
                .map(|inner| inner as &(dyn StdError + 'static)),
            None => current.source(),
        };
    }
    FailureReason::Connect
}

/// `outer: inner: innermost`, for logs.
fn error_chain(err: &(dyn StdError + 'static)) -> String {
    let mut text = err.to_string();
    let mut next = err.source();
    while let Some(current) = next {
        text.push_str(": ");
        text.push_str(&current.to_string());
        next = current.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ingest_path_is_appended_to_the_operator_url() {
        let uri = ingest_uri("https://trafficmap-operator.trafficmap.svc:8443/").expect("valid");
        assert_eq!(
            uri.to_string(),
            "https://trafficmap-operator.trafficmap.svc:8443/v1/reports"
        );
        let uri = ingest_uri("https://127.0.0.1:9443/prefix").expect("valid");
        assert_eq!(uri.path(), "/prefix/v1/reports");
    }

    #[test]
    fn only_https_urls_are_accepted() {
        for url in [
            "http://op:8443",
            "op:8443",
            "https://",
            "https://op/?q=1",
            "",
        ] {
            assert!(ingest_uri(url).is_err(), "{url}");
        }
    }

    #[test]
    fn tls_errors_are_found_inside_io_errors() {
        let tls = io::Error::new(
            io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer),
        );
        let wrapped = io::Error::other(tls);
        assert_eq!(transport_failure(&wrapped), FailureReason::Tls);
        let refused = io::Error::from(io::ErrorKind::ConnectionRefused);
        assert_eq!(transport_failure(&refused), FailureReason::Connect);
    }

    #[test]
    fn a_ca_file_without_certificates_is_refused() {
        let path = std::env::temp_dir().join(format!("trafficmap-ca-{}", std::process::id()));
        std::fs::write(&path, "not a certificate\n").expect("write");
        assert!(matches!(load_ca(&path), Err(ClientError::Ca { .. })));
        assert!(matches!(
            load_ca(Path::new("/nonexistent/ca.crt")),
            Err(ClientError::Ca { .. })
        ));
        let _ = std::fs::remove_file(path);
    }
}
