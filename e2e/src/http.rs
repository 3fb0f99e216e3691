//! A small HTTP(S) client for tests: posts reports to the operator trusting only its CA, and
//! reads admin endpoints.

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::rt::TokioExecutor;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use crate::{Error, Result};

fn boxed<E: std::error::Error + Send + Sync + 'static>(what: &str, e: E) -> Error {
    Error::Http {
        what: what.to_string(),
        source: Box::new(e),
    }
}

/// Sends `method` to `url` with an optional bearer token and body; returns status and body.
/// HTTPS URLs trust only `ca_pem` (or nothing, when absent).
pub async fn request(
    method: &str,
    url: &str,
    ca_pem: Option<&str>,
    token: Option<&str>,
    body: Vec<u8>,
) -> Result<(u16, String)> {
    let connector = connector(ca_pem)?;
    let client: HyperClient<_, Full<Bytes>> =
        HyperClient::builder(TokioExecutor::new()).build(connector);
    let request = builder(method, url, token)
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| boxed("request", e))?;
    read_response(client.request(request).await.map_err(|e| boxed(url, e))?).await
}

/// GETs a plain-HTTP URL.
pub async fn get(url: &str) -> Result<(u16, String)> {
    request("GET", url, None, None, Vec::new()).await
}

type Connector = hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>;

/// HTTPS (trusting only `ca_pem`) or plain HTTP.
fn connector(ca_pem: Option<&str>) -> Result<Connector> {
    let mut roots = rustls::RootCertStore::empty();
    if let Some(pem) = ca_pem {
        for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
            roots
                .add(cert.map_err(|e| boxed("CA PEM", e))?)
                .map_err(|e| boxed("CA certificate", e))?;
        }
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| boxed("TLS versions", e))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .build();
    Ok(connector)
}

/// POSTs a body that arrives in `chunks`, `gap` apart (a slow-drip client), with the full
/// Content-Length announced up front; returns status and body if the server answers.
pub async fn slow_post(
    url: &str,
    ca_pem: Option<&str>,
    token: Option<&str>,
    chunks: Vec<Vec<u8>>,
    gap: std::time::Duration,
) -> Result<(u16, String)> {
    use futures::StreamExt;
    use http_body_util::StreamBody;
    use hyper::body::Frame;
    let length: usize = chunks.iter().map(Vec::len).sum();
    let frames = futures::stream::iter(chunks).then(move |chunk| async move {
        tokio::time::sleep(gap).await;
        Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from(chunk)))
    });
    let client: HyperClient<_, StreamBody<_>> =
        HyperClient::builder(TokioExecutor::new()).build(connector(ca_pem)?);
    let request = builder("POST", url, token)
        .header("content-length", length.to_string())
        .body(StreamBody::new(Box::pin(frames)))
        .map_err(|e| boxed("request", e))?;
    read_response(client.request(request).await.map_err(|e| boxed(url, e))?).await
}

/// A JSON request to `url`, with the bearer token when there is one.
fn builder(method: &str, url: &str, token: Option<&str>) -> hyper::http::request::Builder {
    let builder = hyper::Request::builder()
        .method(method)
        .uri(url)
        .header("content-type", "application/json");
    match token {
        Some(token) => builder.header("authorization", format!("Bearer {token}")),
        None => builder,
    }
}

/// Status and body (lossy UTF-8) of a response.
async fn read_response(response: hyper::Response<hyper::body::Incoming>) -> Result<(u16, String)> {
    let status = response.status().as_u16();
    let bytes = response
        .into_body()
        .collect()
        .await
        .map_err(|e| boxed("response body", e))?
        .to_bytes();
    Ok((status, String::from_utf8_lossy(&bytes).into_owned()))
}
