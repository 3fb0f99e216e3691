//! Arbitrary ObservedTraffic (as JSON, the way the operator and `kubectl trafficmap export`
//! read it from the API server) -> draft ClientIntents.
//!
//! Property: `try_render_client_intents` either returns a clear error, or an object that
//! - the upstream CRD accepts: validated against the `v2beta1` OpenAPI v3 schema of
//!   `chart/files/crds/clientintents.k8s.otterize.com.yaml` (the otterize/intents-operator file), and
//! - the API server accepts as an object: name a DNS-1123 subdomain, namespace a DNS-1123
//!   label, labels valid;
//!
//! and rendering is deterministic (rendering twice gives the same bytes).

#![no_main]

use std::sync::OnceLock;

use jsonschema::Validator;
use libfuzzer_sys::fuzz_target;
use trafficmap_api::ObservedTraffic;
use trafficmap_api::render::try_render_client_intents;

/// The upstream CRD, the repository's one copy (origin and licence in `chart/files/crds/README.md`).
const UPSTREAM_CRD: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../chart/files/crds/clientintents.k8s.otterize.com.yaml"
));
const VERSION: &str = "v2beta1";

fn validator() -> &'static Validator {
    static VALIDATOR: OnceLock<Validator> = OnceLock::new();
    VALIDATOR.get_or_init(|| {
        let crd: serde_json::Value =
            serde_yaml_ng::from_str(UPSTREAM_CRD).expect("the upstream CRD is YAML");
        let versions = crd["spec"]["versions"].as_array().expect("spec.versions");
        let schema = versions
            .iter()
            .find(|v| v["name"] == VERSION)
            .map(|v| v["schema"]["openAPIV3Schema"].clone())
            .expect("the upstream CRD serves v2beta1");
        // OpenAPI v3 schemas are JSON Schema draft 4 plus `x-kubernetes-*` keywords, which a
        // draft-4 validator ignores.
        jsonschema::draft4::new(&schema).expect("the upstream schema compiles")
    })
}

fn is_dns1123_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
}

/// Kubernetes' DNS-1123 subdomain (`IsDNS1123Subdomain`): at most 253 characters, dot-separated
/// parts of `[a-z0-9-]` starting and ending alphanumeric. Unlike DNS, no 63-byte limit per part
/// (checked against the API server: a 100-character single-part ClientIntents name is created).
fn is_dns1123_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|part| {
            let b = part.as_bytes();
            !b.is_empty()
                && b.iter()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
                && b[0].is_ascii_alphanumeric()
                && b[b.len() - 1].is_ascii_alphanumeric()
        })
}

fuzz_target!(|data: &[u8]| {
    let Ok(observed) = serde_json::from_slice::<ObservedTraffic>(data) else {
        return;
    };
    let draft = match try_render_client_intents(&observed) {
        Ok(draft) => draft,
        Err(err) => {
            assert!(!err.to_string().is_empty(), "an error that says nothing");
            return;
        }
    };
    let name = draft.metadata.name.as_deref().unwrap_or_default();
    assert!(is_dns1123_subdomain(name), "invalid object name {name:?}");
    let namespace = draft.metadata.namespace.as_deref().unwrap_or_default();
    assert!(
        is_dns1123_label(namespace),
        "invalid namespace {namespace:?}"
    );
    for (key, value) in draft.metadata.labels.iter().flatten() {
        assert!(
            key.len() <= 317 && value.len() <= 63,
            "invalid label {key}={value}"
        );
    }
    let json = serde_json::to_value(&draft).expect("a ClientIntents serialises");
    let errors: Vec<String> = validator()
        .iter_errors(&json)
        .map(|e| format!("{} at {}", e, e.instance_path))
        .collect();
    assert!(
        errors.is_empty(),
        "the upstream CRD schema rejects the draft: {errors:?}\n{json}"
    );
    let again = try_render_client_intents(&observed).expect("rendering is deterministic");
    assert_eq!(
        serde_json::to_vec(&again).ok(),
        serde_json::to_vec(&draft).ok(),
        "rendering twice differs"
    );
});
