//! Keeps the history an operator hands to its successor ([`Handover`]) in a ConfigMap of its
//! namespace (`--handover-configmap`, key `handover.json`): written when it stops gracefully,
//! after its last statuses, and read by the next one before it starts resolving. A replacement
//! pod starts while the one it replaces still drains, so it first waits for its predecessors
//! ([`wait_for_predecessors`]). Failing either way costs only the precision
//! [`crate::resolve::handover`] describes, so errors are logged, never fatal.

use std::collections::BTreeMap;

use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{ListParams, Patch, PatchParams};
use kube::{Api, Client};
use thiserror::Error;
use trafficmap_api::FIELD_MANAGER;

use crate::resolve::handover::Handover;

/// The ConfigMap key that holds the JSON.
pub const HANDOVER_KEY: &str = "handover.json";

/// Why the handover could not be read or written.
#[derive(Debug, Error)]
pub enum HandoverError {
    /// The API server refused or failed.
    #[error("{context}: {source}")]
    Kube {
        /// What was being done.
        context: String,
        /// The error.
        #[source]
        source: kube::Error,
    },
    /// The stored text is not a handover.
    #[error("ConfigMap {name} key {HANDOVER_KEY}: {source}")]
    Json {
        /// The ConfigMap.
        name: String,
        /// The error.
        #[source]
        source: serde_json::Error,
    },
}

/// The handover in ConfigMap `name` of `namespace`, if there is one.
pub async fn read(
    client: &Client,
    namespace: &str,
    name: &str,
) -> Result<Option<Handover>, HandoverError> {
    let found = Api::<ConfigMap>::namespaced(client.clone(), namespace)
        .get_opt(name)
        .await
        .map_err(|source| HandoverError::Kube {
            context: format!("read ConfigMap {namespace}/{name}"),
            source,
        })?;
    let Some(text) = found.and_then(|cm| cm.data?.remove(HANDOVER_KEY)) else {
        return Ok(None);
    };
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|source| HandoverError::Json {
            name: name.to_string(),
            source,
        })
}

/// Writes `handover` to ConfigMap `name` of `namespace` (server-side apply, created if absent).
pub async fn write(
    client: &Client,
    namespace: &str,
    name: &str,
    handover: &Handover,
) -> Result<(), HandoverError> {
    let text = serde_json::to_string(handover).map_err(|source| HandoverError::Json {
        name: name.to_string(),
        source,
    })?;
    let configmap = ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some(namespace.to_string()),
            ..ObjectMeta::default()
        },
        data: Some(BTreeMap::from([(HANDOVER_KEY.to_string(), text)])),
        ..ConfigMap::default()
    };
    Api::<ConfigMap>::namespaced(client.clone(), namespace)
        .patch(
            name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&configmap),
        )
        .await
        .map_err(|source| HandoverError::Kube {
            context: format!("write ConfigMap {namespace}/{name}"),
            source,
        })?;
    Ok(())
}

/// How often the pods are looked at while waiting for predecessors.
const PREDECESSOR_POLL: Duration = Duration::from_millis(500);

/// Waits, at most `limit`, until no other pod of this operator (the pods that carry this pod's
/// `app.kubernetes.io/*` labels) is terminating: one that is may still be writing its handover.
/// Returns the time waited (zero when none was).
pub async fn wait_for_predecessors(
    client: &Client,
    namespace: &str,
    pod_name: &str,
    limit: Duration,
) -> Result<Duration, HandoverError> {
    let pods = Api::<Pod>::namespaced(client.clone(), namespace);
    let kube_error = |context: String| move |source| HandoverError::Kube { context, source };
    let Some(me) = pods
        .get_opt(pod_name)
        .await
        .map_err(kube_error(format!("read pod {namespace}/{pod_name}")))?
    else {
        return Ok(Duration::ZERO);
    };
    let selector: Vec<String> = me
        .metadata
        .labels
        .unwrap_or_default()
        .into_iter()
        .filter(|(key, _)| key.starts_with("app.kubernetes.io/"))
        .map(|(key, value)| format!("{key}={value}"))
        .collect();
    if selector.is_empty() {
        return Ok(Duration::ZERO);
    }
    let params = ListParams::default().labels(&selector.join(","));
    let started = tokio::time::Instant::now();
    let mut waited = Duration::ZERO;
    loop {
        let list = pods
            .list(&params)
            .await
            .map_err(kube_error(format!("list pods {selector:?} in {namespace}")))?;
        let stopping = list.items.iter().any(|pod| {
            pod.metadata.name.as_deref() != Some(pod_name)
                && pod.metadata.deletion_timestamp.is_some()
        });
        if !stopping || waited >= limit {
            return Ok(waited);
        }
        tokio::time::sleep(PREDECESSOR_POLL).await;
        waited = started.elapsed();
    }
}
