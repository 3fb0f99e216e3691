//! ServiceAccount tokens signed with the local control plane's own signing key
//! (`.run/controlplane/sa.key`), with the claims the API server puts in a TokenRequest token
//! but any expiry: the API server issues none shorter than 10 minutes, so an expired token
//! can only be made this way. A token minted to expire in the future must be accepted, which
//! shows that an expired one is refused for its expiry alone.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::{Api, Client};
use ring::rand::SystemRandom;
use ring::signature::{RSA_PKCS1_SHA256, RsaKeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{PrivateKeyDer, SubjectPublicKeyInfoDer};

use crate::cluster::repo_root;

/// The issuer the local control plane signs with (`e2e/controlplane/components.go`).
const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

/// A token for `namespace/name` and `audience`, valid from two hours ago until `expires`
/// (seconds since the epoch).
pub async fn mint(
    client: &Client,
    namespace: &str,
    name: &str,
    audience: &str,
    expires: i64,
) -> Result<String, String> {
    let account = Api::<ServiceAccount>::namespaced(client.clone(), namespace)
        .get(name)
        .await
        .map_err(|e| format!("ServiceAccount {namespace}/{name}: {e}"))?;
    let uid = account.metadata.uid.unwrap_or_default();
    let dir = repo_root().join(".run/controlplane");
    let key =
        PrivateKeyDer::from_pem_file(dir.join("sa.key")).map_err(|e| format!("sa.key: {e}"))?;
    let public = SubjectPublicKeyInfoDer::from_pem_file(dir.join("sa.pub"))
        .map_err(|e| format!("sa.pub: {e}"))?;
    let pair = match &key {
        PrivateKeyDer::Pkcs1(der) => RsaKeyPair::from_der(der.secret_pkcs1_der()),
        PrivateKeyDer::Pkcs8(der) => RsaKeyPair::from_pkcs8(der.secret_pkcs8_der()),
        _ => return Err("sa.key is not an RSA key".into()),
    }
    .map_err(|e| format!("sa.key: {e}"))?;
    // The API server names its key by the SHA-256 of the public key's DER.
    let kid = URL_SAFE_NO_PAD.encode(ring::digest::digest(&ring::digest::SHA256, &public));
    let now = now_seconds();
    let header = serde_json::json!({ "alg": "RS256", "kid": kid });
    let claims = serde_json::json!({
        "aud": [audience],
        "exp": expires,
        "iat": now - 7200,
        "nbf": now - 7200,
        "iss": ISSUER,
        "sub": format!("system:serviceaccount:{namespace}:{name}"),
        "kubernetes.io": {
            "namespace": namespace,
            "serviceaccount": { "name": name, "uid": uid },
        },
    });
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let mut signature = vec![0; pair.public().modulus_len()];
    pair.sign(
        &RSA_PKCS1_SHA256,
        &SystemRandom::new(),
        signing_input.as_bytes(),
        &mut signature,
    )
    .map_err(|e| format!("sign: {e}"))?;
    Ok(format!(
        "{signing_input}.{}",
        URL_SAFE_NO_PAD.encode(signature)
    ))
}

/// Seconds since the epoch, now.
pub fn now_seconds() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}
