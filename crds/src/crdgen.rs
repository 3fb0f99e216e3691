//! The CRD YAML files trafficmap owns, generated from the Rust types.

use kube::CustomResourceExt;

use crate::observed::ObservedTraffic;

/// Renders each CRD as `(file name, YAML)`.
pub fn render_all() -> Result<Vec<(String, String)>, serde_yaml_ng::Error> {
    let crd = ObservedTraffic::crd();
    let yaml = serde_yaml_ng::to_string(&crd)?;
    Ok(vec![(
        "observedtraffics.trafficmap.io.yaml".to_string(),
        yaml,
    )])
}
