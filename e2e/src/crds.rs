//! Installing the CRDs the tests need: ours (`crds/yaml`) and the upstream Otterize ClientIntents
//! CRD (`chart/files/crds/clientintents.k8s.otterize.com.yaml`, its one copy in the repository).

use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use serde::Deserialize;

use crate::cluster::{repo_root, wait_for};
use crate::{Error, Result, kube_context};

/// Field manager the harness applies with.
const HARNESS_MANAGER: &str = "trafficmap-e2e";
/// How long a CRD may take to become Established.
const ESTABLISHED_TIMEOUT: Duration = Duration::from_secs(30);

/// Path of the upstream ClientIntents CRD (origin and licence in `chart/files/crds/README.md`).
pub fn upstream_client_intents_crd() -> PathBuf {
    repo_root().join("chart/files/crds/clientintents.k8s.otterize.com.yaml")
}

/// Paths of trafficmap's own CRDs.
pub fn own_crds() -> Result<Vec<PathBuf>> {
    let dir = repo_root().join("crds/yaml");
    let entries = std::fs::read_dir(&dir).map_err(|e| Error::Manifest {
        path: dir.display().to_string(),
        source: Box::new(e),
    })?;
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    paths.sort();
    Ok(paths)
}

/// Reads every CustomResourceDefinition in a (possibly multi-document) YAML file.
pub fn read_crds(path: &Path) -> Result<Vec<CustomResourceDefinition>> {
    read_documents(path)
}

/// Reads every document of a (possibly multi-document) YAML file as a `T`, skipping empty ones.
pub fn read_documents<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Vec<T>> {
    let manifest = |e: Box<dyn std::error::Error + Send + Sync>| Error::Manifest {
        path: path.display().to_string(),
        source: e,
    };
    let text = std::fs::read_to_string(path).map_err(|e| manifest(Box::new(e)))?;
    let mut docs = Vec::new();
    for doc in serde_yaml_ng::Deserializer::from_str(&text) {
        let value = serde_yaml_ng::Value::deserialize(doc).map_err(|e| manifest(Box::new(e)))?;
        if value.is_null() {
            continue;
        }
        docs.push(serde_yaml_ng::from_value(value).map_err(|e| manifest(Box::new(e)))?);
    }
    Ok(docs)
}

/// Server-side applies the CRDs in `paths` and waits until each is Established.
pub async fn install(client: &Client, paths: &[PathBuf]) -> Result<Vec<String>> {
    let api = Api::<CustomResourceDefinition>::all(client.clone());
    let params = PatchParams::apply(HARNESS_MANAGER).force();
    let mut names = Vec::new();
    for path in paths {
        for mut crd in read_crds(path)? {
            crd.metadata.managed_fields = None;
            let name = crd.metadata.name.clone().unwrap_or_default();
            api.patch(&name, &params, &Patch::Apply(&crd))
                .await
                .map_err(kube_context(format!("apply CRD {name}")))?;
            names.push(name);
        }
    }
    for name in &names {
        wait_for(
            &format!("CRD {name} to be Established"),
            ESTABLISHED_TIMEOUT,
            || async {
                let crd = api
                    .get(name)
                    .await
                    .map_err(kube_context(format!("get CRD {name}")))?;
                Ok(is_established(&crd).then_some(()))
            },
        )
        .await?;
    }
    Ok(names)
}

/// Installs ours and the upstream ClientIntents CRD.
pub async fn install_all(client: &Client) -> Result<Vec<String>> {
    let mut paths = own_crds()?;
    paths.push(upstream_client_intents_crd());
    install(client, &paths).await
}

fn is_established(crd: &CustomResourceDefinition) -> bool {
    crd.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| c.type_ == "Established" && c.status == "True")
        })
}
