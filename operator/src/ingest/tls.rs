//! The ingest endpoint's TLS material.
//!
//! Either the user supplies a certificate and key as files (a mounted Secret of their own,
//! `--tls-cert-file`/`--tls-key-file`), or the operator manages them: it generates a CA and a
//! serving certificate for its Service's DNS names, keeps them in the Secret `--tls-secret` in
//! its namespace (so every restart and replica serves the same certificate), and publishes the
//! CA certificate in the ConfigMap `--ca-configmap` (key `ca.crt`) for sniffers to mount. Both
//! are regenerated when the serving certificate is within [`RENEW_BEFORE`] of expiry.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use thiserror::Error;
use trafficmap_api::{FIELD_MANAGER, MANAGED_BY_LABEL, MANAGED_BY_VALUE};

/// Validity of a generated serving certificate (and its CA).
pub const CERT_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);
/// Renew when less than this is left.
pub const RENEW_BEFORE: Duration = Duration::from_secs(30 * 24 * 3600);
/// Annotation on the Secret with the serving certificate's expiry (RFC 3339).
pub const NOT_AFTER_ANNOTATION: &str = "trafficmap.io/not-after";
/// Key of the CA certificate in the Secret and in the ConfigMap.
pub const CA_KEY: &str = "ca.crt";

/// Errors of TLS set-up.
#[derive(Debug, Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// File.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// PEM data did not hold what was expected.
    #[error("{what}: {reason}")]
    Pem {
        /// Which material.
        what: String,
        /// What is wrong.
        reason: String,
    },
    /// Certificate generation failed.
    #[error("generating certificates: {0}")]
    Generate(#[from] rcgen::Error),
    /// rustls refused the material.
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    /// The API server refused a read or write.
    #[error("{context}: {source}")]
    Kube {
        /// What was done.
        context: String,
        /// Cause.
        source: kube::Error,
    },
}

/// A certificate chain and key in PEM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PemPair {
    /// Certificate chain.
    pub cert: String,
    /// Private key.
    pub key: String,
}

/// Generated material: CA certificate and the serving pair it signed.
#[derive(Clone, Debug)]
pub struct Generated {
    /// CA certificate (PEM).
    pub ca_cert: String,
    /// Serving certificate and key.
    pub serving: PemPair,
    /// Expiry of the serving certificate.
    pub not_after: Timestamp,
}

/// Generates a CA and a serving certificate for `dns_names` (IP literals become IP SANs).
pub fn generate(dns_names: &[String], now: Timestamp) -> Result<Generated, TlsError> {
    let not_before = now - SignedDuration::from_secs(300);
    let not_after = now + SignedDuration::from_secs(CERT_VALIDITY.as_secs() as i64);
    let to_offset = |t: Timestamp| {
        time::OffsetDateTime::from_unix_timestamp(t.as_second()).map_err(|e| TlsError::Pem {
            what: "certificate validity".into(),
            reason: e.to_string(),
        })
    };

    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.distinguished_name
        .push(DnType::CommonName, "trafficmap ingest CA");
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca.not_before = to_offset(not_before)?;
    ca.not_after = to_offset(not_after)?;
    let ca_cert = ca.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca, ca_key);

    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(dns_names.to_vec())?;
    params
        .distinguished_name
        .push(DnType::CommonName, "trafficmap-operator");
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.not_before = to_offset(not_before)?;
    params.not_after = to_offset(not_after)?;
    let cert = params.signed_by(&key, &issuer)?;
    Ok(Generated {
        ca_cert: ca_cert.pem(),
        serving: PemPair {
            cert: cert.pem(),
            key: key.serialize_pem(),
        },
        not_after,
    })
}

/// A rustls server configuration from a PEM pair.
pub fn server_config(pair: &PemPair) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pair.cert.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Pem {
            what: "serving certificate".into(),
            reason: e.to_string(),
        })?;
    if chain.is_empty() {
        return Err(TlsError::Pem {
            what: "serving certificate".into(),
            reason: "no certificate in PEM".into(),
        });
    }
    let key = PrivateKeyDer::from_pem_slice(pair.key.as_bytes()).map_err(|e| TlsError::Pem {
        what: "serving key".into(),
        reason: e.to_string(),
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Reads a user-supplied pair from files.
pub fn from_files(cert: &Path, key: &Path) -> Result<PemPair, TlsError> {
    let read = |p: &Path| {
        std::fs::read_to_string(p).map_err(|source| TlsError::Read {
            path: p.display().to_string(),
            source,
        })
    };
    Ok(PemPair {
        cert: read(cert)?,
        key: read(key)?,
    })
}

/// Where the operator keeps its generated material.
#[derive(Clone, Debug)]
pub struct ManagedTls {
    /// The operator's namespace.
    pub namespace: String,
    /// Secret with `tls.crt`, `tls.key` and `ca.crt`.
    pub secret: String,
    /// ConfigMap with `ca.crt`, for sniffers.
    pub ca_configmap: String,
    /// Names the serving certificate is for.
    pub dns_names: Vec<String>,
}

/// Loads the serving pair from the Secret, generating (and storing) it when absent or due for
/// renewal, and publishes the CA in the ConfigMap.
pub async fn ensure_managed(client: &Client, managed: &ManagedTls) -> Result<PemPair, TlsError> {
    let secrets = Api::<Secret>::namespaced(client.clone(), &managed.namespace);
    let kube_err = |context: String| move |source| TlsError::Kube { context, source };
    let existing = secrets
        .get_opt(&managed.secret)
        .await
        .map_err(kube_err(format!("read Secret {}", managed.secret)))?;
    let now = Timestamp::now();
    let (pair, ca) = match existing.as_ref().and_then(|s| usable(s, now)) {
        Some(found) => found,
        None => {
            let generated = generate(&managed.dns_names, now)?;
            let secret = secret_for(managed, &generated);
            let stored = match existing {
                None => secrets.create(&PostParams::default(), &secret).await,
                Some(old) => {
                    let mut secret = secret;
                    secret.metadata.resource_version = old.metadata.resource_version;
                    secrets
                        .replace(&managed.secret, &PostParams::default(), &secret)
                        .await
                }
            };
            match stored {
                Ok(_) => {
                    tracing::info!(secret = %managed.secret, not_after = %generated.not_after, "generated ingest certificate");
                    (generated.serving, generated.ca_cert)
                }
                Err(kube::Error::Api(status)) if status.code == 409 => {
                    let raced = secrets
                        .get(&managed.secret)
                        .await
                        .map_err(kube_err(format!("re-read Secret {}", managed.secret)))?;
                    usable(&raced, now).ok_or_else(|| TlsError::Pem {
                        what: format!("Secret {}", managed.secret),
                        reason: "written concurrently with unusable content".into(),
                    })?
                }
                Err(source) => {
                    return Err(TlsError::Kube {
                        context: format!("store Secret {}", managed.secret),
                        source,
                    });
                }
            }
        }
    };
    publish_ca(client, managed, &ca).await?;
    Ok(pair)
}

fn usable(secret: &Secret, now: Timestamp) -> Option<(PemPair, String)> {
    let data = secret.data.as_ref()?;
    let text = |k: &str| {
        data.get(k)
            .and_then(|b| String::from_utf8(b.0.clone()).ok())
    };
    let not_after: Timestamp = secret
        .metadata
        .annotations
        .as_ref()?
        .get(NOT_AFTER_ANNOTATION)?
        .parse()
        .ok()?;
    let renew_at = not_after - SignedDuration::from_secs(RENEW_BEFORE.as_secs() as i64);
    if now >= renew_at {
        return None;
    }
    Some((
        PemPair {
            cert: text("tls.crt")?,
            key: text("tls.key")?,
        },
        text(CA_KEY)?,
    ))
}

fn secret_for(managed: &ManagedTls, generated: &Generated) -> Secret {
    let bytes = |s: &str| ByteString(s.as_bytes().to_vec());
    Secret {
        metadata: ObjectMeta {
            name: Some(managed.secret.clone()),
            namespace: Some(managed.namespace.clone()),
            labels: Some(BTreeMap::from([(
                MANAGED_BY_LABEL.to_string(),
                MANAGED_BY_VALUE.to_string(),
            )])),
            annotations: Some(BTreeMap::from([(
                NOT_AFTER_ANNOTATION.to_string(),
                generated.not_after.to_string(),
            )])),
            ..ObjectMeta::default()
        },
        type_: Some("kubernetes.io/tls".into()),
        data: Some(BTreeMap::from([
            ("tls.crt".to_string(), bytes(&generated.serving.cert)),
            ("tls.key".to_string(), bytes(&generated.serving.key)),
            (CA_KEY.to_string(), bytes(&generated.ca_cert)),
        ])),
        ..Secret::default()
    }
}

async fn publish_ca(client: &Client, managed: &ManagedTls, ca: &str) -> Result<(), TlsError> {
    let configmap = ConfigMap {
        metadata: ObjectMeta {
            name: Some(managed.ca_configmap.clone()),
            namespace: Some(managed.namespace.clone()),
            labels: Some(BTreeMap::from([(
                MANAGED_BY_LABEL.to_string(),
                MANAGED_BY_VALUE.to_string(),
            )])),
            ..ObjectMeta::default()
        },
        data: Some(BTreeMap::from([(CA_KEY.to_string(), ca.to_string())])),
        ..ConfigMap::default()
    };
    Api::<ConfigMap>::namespaced(client.clone(), &managed.namespace)
        .patch(
            &managed.ca_configmap,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&configmap),
        )
        .await
        .map_err(|source| TlsError::Kube {
            context: format!("publish CA in ConfigMap {}", managed.ca_configmap),
            source,
        })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_material_makes_a_rustls_server_config() {
        let names = vec![
            "trafficmap-operator.trafficmap.svc".to_string(),
            "127.0.0.1".to_string(),
        ];
        let generated = generate(&names, Timestamp::now()).expect("generates");
        assert!(generated.ca_cert.starts_with("-----BEGIN CERTIFICATE-----"));
        server_config(&generated.serving).expect("rustls accepts it");
    }

    #[test]
    fn garbage_pem_is_a_clear_error() {
        let err = server_config(&PemPair {
            cert: "nope".into(),
            key: "nope".into(),
        })
        .expect_err("refused");
        assert!(err.to_string().contains("serving certificate"), "{err}");
    }

    #[test]
    fn a_secret_close_to_expiry_is_not_used() {
        let now = Timestamp::now();
        let generated = generate(&["a.b.svc".to_string()], now).expect("generates");
        let managed = ManagedTls {
            namespace: "trafficmap".into(),
            secret: "tls".into(),
            ca_configmap: "ca".into(),
            dns_names: vec![],
        };
        let secret = secret_for(&managed, &generated);
        assert!(usable(&secret, now).is_some());
        let late = generated.not_after - SignedDuration::from_secs(3600);
        assert!(usable(&secret, late).is_none());
    }
}
