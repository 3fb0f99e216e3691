//! A keep-alive HTTPS client for the operator's ingest, trusting only the operator's CA and
//! sending the sniffer's ServiceAccount token, as the sniffer does.

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use super::{BenchError, Result};

/// The client.
pub struct IngestClient {
    client: HyperClient<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>,
    url: String,
    authorization: String,
}

fn failed(what: &str, e: impl std::fmt::Display) -> BenchError {
    BenchError::Failed(format!("{what}: {e}"))
}

impl IngestClient {
    /// A client for `url` trusting `ca_pem`, authenticated with `token`.
    pub fn new(url: &str, ca_pem: &str, token: &str) -> Result<Self> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
            roots
                .add(cert.map_err(|e| failed("CA PEM", e))?)
                .map_err(|e| failed("CA certificate", e))?;
        }
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| failed("TLS versions", e))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_only()
            .enable_http1()
            .build();
        Ok(IngestClient {
            client: HyperClient::builder(TokioExecutor::new()).build(connector),
            url: url.to_string(),
            authorization: format!("Bearer {token}"),
        })
    }

    /// Posts one report body; returns the HTTP status.
    pub async fn post(&self, body: Vec<u8>) -> Result<u16> {
        let request = hyper::Request::builder()
            .method("POST")
            .uri(&self.url)
            .header("content-type", "application/json")
            .header("authorization", &self.authorization)
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| failed("request", e))?;
        let response = self
            .client
            .request(request)
            .await
            .map_err(|e| failed(&self.url, e))?;
        let status = response.status().as_u16();
        response
            .into_body()
            .collect()
            .await
            .map_err(|e| failed("response body", e))?;
        Ok(status)
    }
}
