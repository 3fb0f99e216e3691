//! The CLI's only contact with the API server: connect through the kubeconfig, read
//! ObservedTraffic and ClientIntents, delete ObservedTraffic and draft ClientIntents. Failures
//! become advice ([`Request::error`]).

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use kube::api::{DeleteParams, ListParams, Preconditions, PropagationPolicy};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};
use trafficmap_api::observed::Protocol;
use trafficmap_api::ownership::{Ownership, ownership};
use trafficmap_api::{ClientIntents, ObservedTraffic};

use crate::policy::inventory::{Inventory, ServiceInfo, ServicePort, WorkloadKey, WorkloadPods};

use crate::cli::args::CommonArgs;
use crate::cli::error::{
    CLIENT_INTENTS, CliError, INSTALL_INTENTS_CRD, INSTALL_OUR_CRDS, OBSERVED_TRAFFIC, Request,
};

/// Objects per list page.
const LIST_PAGE_OBJECTS: u32 = 500;
/// How long `reset` waits for a deleted ObservedTraffic to be gone (the garbage collector
/// orphans its ClientIntents first).
const GONE_TIMEOUT: Duration = Duration::from_secs(30);
/// How often it looks.
const GONE_POLL: Duration = Duration::from_millis(200);
/// Tries at deleting a draft that keeps changing under us.
const DRAFT_DELETE_TRIES: usize = 3;

/// What became of a draft `reset` meant to delete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DraftDeletion {
    /// Deleted.
    Deleted,
    /// Already gone.
    Gone,
    /// Someone else wrote it since it was read: kept, with who.
    Kept(Vec<String>),
}

/// A connection to the cluster the kubeconfig names.
pub struct Cluster {
    client: Client,
    server: String,
}

impl Cluster {
    /// Loads `--kubeconfig` (else `$KUBECONFIG`, `~/.kube/config`, in-cluster) with `--context`.
    /// Nothing is sent until the first request.
    pub async fn connect(common: &CommonArgs) -> Result<Self, CliError> {
        let options = KubeConfigOptions {
            context: common.context.clone(),
            ..KubeConfigOptions::default()
        };
        let kubeconfig_error =
            |source: Box<dyn std::error::Error + Send + Sync>| CliError::Kubeconfig {
                path: common.kubeconfig.clone(),
                source,
            };
        let config = match &common.kubeconfig {
            Some(path) => {
                let kubeconfig =
                    Kubeconfig::read_from(path).map_err(|e| kubeconfig_error(Box::new(e)))?;
                Config::from_custom_kubeconfig(kubeconfig, &options)
                    .await
                    .map_err(|e| kubeconfig_error(Box::new(e)))?
            }
            None if common.context.is_some() => Config::from_kubeconfig(&options)
                .await
                .map_err(|e| kubeconfig_error(Box::new(e)))?,
            None => Config::infer()
                .await
                .map_err(|e| kubeconfig_error(Box::new(e)))?,
        };
        let server = config.cluster_url.to_string();
        let client = Client::try_from(config).map_err(|source| CliError::Connect {
            server: Some(server.clone()),
            source,
        })?;
        Ok(Cluster { client, server })
    }

    /// The cluster `client` talks to (the operator's own client: it audits with what the CLI
    /// reads).
    pub fn from_client(client: Client) -> Self {
        Cluster {
            client,
            server: "the operator's API server".to_string(),
        }
    }

    /// Every NetworkPolicy in the cluster.
    pub async fn all_network_policies(&self) -> Result<Vec<NetworkPolicy>, CliError> {
        let request = Request {
            verb: "list",
            resource: "networkpolicies.networking.k8s.io",
            namespace: None,
            missing_hint: "NetworkPolicy is built into every Kubernetes API server",
        };
        self.list_all(Api::<NetworkPolicy>::all(self.client.clone()), &request)
            .await
    }

    /// Every ClientIntents in the cluster, none when the CRD is not installed.
    pub async fn all_client_intents_if_installed(&self) -> Result<Vec<ClientIntents>, CliError> {
        let request = Request {
            verb: "list",
            resource: CLIENT_INTENTS,
            namespace: None,
            missing_hint: INSTALL_INTENTS_CRD,
        };
        match self
            .list_all(Api::<ClientIntents>::all(self.client.clone()), &request)
            .await
        {
            Err(CliError::CrdMissing { .. }) => Ok(Vec::new()),
            other => other,
        }
    }

    /// Every ObservedTraffic.
    pub async fn observed_traffic(&self) -> Result<Vec<ObservedTraffic>, CliError> {
        let request = Request {
            verb: "list",
            resource: OBSERVED_TRAFFIC,
            namespace: None,
            missing_hint: INSTALL_OUR_CRDS,
        };
        self.list_all(Api::<ObservedTraffic>::all(self.client.clone()), &request)
            .await
    }

    /// The ClientIntents in `namespaces`.
    pub async fn client_intents(
        &self,
        namespaces: &BTreeSet<String>,
    ) -> Result<Vec<ClientIntents>, CliError> {
        let mut all = Vec::new();
        for namespace in namespaces {
            let request = Request {
                verb: "list",
                resource: CLIENT_INTENTS,
                namespace: Some(namespace.clone()),
                missing_hint: INSTALL_INTENTS_CRD,
            };
            let api = Api::<ClientIntents>::namespaced(self.client.clone(), namespace);
            all.extend(self.list_all(api, &request).await?);
        }
        Ok(all)
    }

    /// The ClientIntents in `namespaces`, none when the CRD is not installed.
    pub async fn client_intents_if_installed(
        &self,
        namespaces: &BTreeSet<String>,
    ) -> Result<Vec<ClientIntents>, CliError> {
        match self.client_intents(namespaces).await {
            Err(CliError::CrdMissing { .. }) => Ok(Vec::new()),
            other => other,
        }
    }

    /// Deletes one ObservedTraffic, orphaning what it owns (so that the garbage collector never
    /// deletes a ClientIntents: `reset` deletes drafts itself, see [`Cluster::delete_draft`]),
    /// and waits until it is gone; `false` when it was already gone.
    pub async fn delete_observed_traffic(&self, name: &str) -> Result<bool, CliError> {
        let api = Api::<ObservedTraffic>::all(self.client.clone());
        let request = |verb| Request {
            verb,
            resource: OBSERVED_TRAFFIC,
            namespace: None,
            missing_hint: INSTALL_OUR_CRDS,
        };
        let params = DeleteParams {
            propagation_policy: Some(PropagationPolicy::Orphan),
            ..DeleteParams::default()
        };
        match api.delete(name, &params).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 404 => return Ok(false),
            Err(e) => return Err(request("delete").error(Some(self.server.clone()), e)),
        }
        let deadline = tokio::time::Instant::now() + GONE_TIMEOUT;
        while tokio::time::Instant::now() < deadline {
            let found = api
                .get_opt(name)
                .await
                .map_err(|e| request("get").error(Some(self.server.clone()), e))?;
            if found.is_none() {
                break;
            }
            tokio::time::sleep(GONE_POLL).await;
        }
        Ok(true)
    }

    /// Deletes the ClientIntents `namespace/name` if it is still a draft, on condition that it
    /// is the object just read (a reviewed copy applied in between makes it stay).
    pub async fn delete_draft(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<DraftDeletion, CliError> {
        let api = Api::<ClientIntents>::namespaced(self.client.clone(), namespace);
        let request = |verb| Request {
            verb,
            resource: CLIENT_INTENTS,
            namespace: Some(namespace.to_string()),
            missing_hint: INSTALL_INTENTS_CRD,
        };
        for _ in 0..DRAFT_DELETE_TRIES {
            let Some(ci) = api
                .get_opt(name)
                .await
                .map_err(|e| request("get").error(Some(self.server.clone()), e))?
            else {
                return Ok(DraftDeletion::Gone);
            };
            if let Ownership::User { writers } = ownership(&ci) {
                return Ok(DraftDeletion::Kept(writers));
            }
            let params = DeleteParams {
                preconditions: Some(Preconditions {
                    uid: ci.metadata.uid.clone(),
                    resource_version: ci.metadata.resource_version.clone(),
                }),
                ..DeleteParams::default()
            };
            match api.delete(name, &params).await {
                Ok(_) => return Ok(DraftDeletion::Deleted),
                Err(kube::Error::Api(status)) if status.code == 404 => {
                    return Ok(DraftDeletion::Gone);
                }
                Err(kube::Error::Api(status)) if status.code == 409 => continue,
                Err(e) => return Err(request("delete").error(Some(self.server.clone()), e)),
            }
        }
        Ok(DraftDeletion::Kept(vec![
            "(changing too fast to tell)".into(),
        ]))
    }

    async fn list_all<K>(&self, api: Api<K>, request: &Request) -> Result<Vec<K>, CliError>
    where
        K: Clone + std::fmt::Debug + serde::de::DeserializeOwned,
    {
        let mut items = Vec::new();
        let mut params = ListParams::default().limit(LIST_PAGE_OBJECTS);
        loop {
            let page = api
                .list(&params)
                .await
                .map_err(|e| request.error(Some(self.server.clone()), e))?;
            items.extend(page.items);
            match page.metadata.continue_ {
                Some(token) if !token.is_empty() => params = params.continue_token(&token),
                _ => return Ok(items),
            }
        }
    }
}

/// Reading what NetworkPolicy rendering needs ([`crate::policy::inventory`]).
impl Cluster {
    /// The inventory for the workloads `observed` names (clients and targets), the Services
    /// of their namespaces, `cluster_dns` (`namespace/name`), the nodes and the API server's
    /// endpoints. What cannot be read (not permitted, not there) is left out: the renderer then
    /// leaves out the policies that would need it, and says so.
    pub async fn inventory(
        &self,
        observed: &[ObservedTraffic],
        cluster_dns: &str,
    ) -> Result<Inventory, CliError> {
        let mut inventory = Inventory::default();
        let mut workloads: BTreeSet<(String, String, String)> = BTreeSet::new();
        for ot in observed {
            let c = &ot.spec.client;
            workloads.insert((c.namespace.clone(), c.name.clone(), c.kind.clone()));
            for t in ot.status.iter().flat_map(|s| &s.targets) {
                workloads.insert((t.namespace.clone(), t.name.clone(), t.kind.clone()));
            }
        }
        let mut namespaces = BTreeSet::new();
        for (namespace, name, kind) in &workloads {
            namespaces.insert(namespace.clone());
            if let Some(pods) = self.workload_pods(namespace, name, kind).await? {
                inventory
                    .workloads
                    .insert(WorkloadKey::new(namespace, name), pods);
            }
        }
        for namespace in &namespaces {
            let found = self
                .get_or_none(Api::<Namespace>::all(self.client.clone()), namespace)
                .await?;
            let labels = found.and_then(|n| n.metadata.labels).unwrap_or_default();
            inventory.namespace_labels.insert(namespace.clone(), labels);
            let api = Api::<Service>::namespaced(self.client.clone(), namespace);
            for svc in self.list_or_empty(api).await? {
                let Some(spec) = svc.spec else { continue };
                let name = svc.metadata.name.unwrap_or_default();
                let ports = spec
                    .ports
                    .unwrap_or_default()
                    .into_iter()
                    .filter_map(|p| {
                        Some(ServicePort {
                            port: u16::try_from(p.port).ok()?,
                            protocol: match p.protocol.as_deref() {
                                Some("UDP") => Protocol::Udp,
                                Some("TCP") | None => Protocol::Tcp,
                                Some(_) => return None,
                            },
                            target: p.target_port.unwrap_or(IntOrString::Int(p.port)),
                        })
                    })
                    .collect();
                let info = ServiceInfo {
                    headless: spec.cluster_ip.as_deref() == Some("None"),
                    ports,
                    selector: spec.selector.unwrap_or_default(),
                };
                inventory
                    .services
                    .insert(WorkloadKey::new(namespace, &name), info);
            }
        }
        if let Some((ns, name)) = cluster_dns.split_once('/') {
            let api = Api::<Service>::namespaced(self.client.clone(), ns);
            let dns = api.get_opt(name).await.ok().flatten();
            inventory.cluster_dns = dns
                .and_then(|s| s.spec?.selector)
                .filter(|sel| !sel.is_empty())
                .map(|sel| {
                    (
                        ns.to_string(),
                        LabelSelector {
                            match_labels: Some(sel),
                            match_expressions: None,
                        },
                    )
                });
        }
        let nodes = self
            .list_or_empty(Api::<Node>::all(self.client.clone()))
            .await?;
        inventory.node_ips = nodes
            .iter()
            .flat_map(|n| n.status.iter().flat_map(|s| s.addresses.iter().flatten()))
            .filter(|a| a.type_ == "InternalIP" || a.type_ == "ExternalIP")
            .filter_map(|a| a.address.parse().ok())
            .collect();
        let slices = Api::<EndpointSlice>::namespaced(self.client.clone(), "default");
        let params = ListParams::default().labels("kubernetes.io/service-name=kubernetes");
        for slice in slices
            .list(&params)
            .await
            .map(|l| l.items)
            .unwrap_or_default()
        {
            let ports: Vec<u16> = slice
                .ports
                .iter()
                .flatten()
                .filter_map(|p| p.port.and_then(|p| u16::try_from(p).ok()))
                .collect();
            for endpoint in slice.endpoints.iter().flatten() {
                for address in endpoint
                    .addresses
                    .iter()
                    .filter_map(|a| a.parse::<IpAddr>().ok())
                {
                    for port in &ports {
                        inventory.api_server.push((address, *port));
                    }
                }
            }
        }
        Ok(inventory)
    }

    /// The NetworkPolicies of the namespaces named by `namespaces`' keys.
    pub async fn network_policies<V>(
        &self,
        namespaces: &std::collections::BTreeMap<String, V>,
    ) -> Result<Vec<NetworkPolicy>, CliError> {
        let mut all = Vec::new();
        for namespace in namespaces.keys() {
            let request = Request {
                verb: "list",
                resource: "networkpolicies.networking.k8s.io",
                namespace: Some(namespace.clone()),
                missing_hint: "NetworkPolicy is built into every Kubernetes API server",
            };
            let api = Api::<NetworkPolicy>::namespaced(self.client.clone(), namespace);
            all.extend(self.list_all(api, &request).await?);
        }
        Ok(all)
    }

    /// How to select the pods of workload `name` of `kind` in `namespace`, when it can be done.
    async fn workload_pods(
        &self,
        namespace: &str,
        name: &str,
        kind: &str,
    ) -> Result<Option<WorkloadPods>, CliError> {
        let Some(resource) = workload_resource(kind) else {
            return Ok(None);
        };
        let api = Api::<DynamicObject>::namespaced_with(self.client.clone(), namespace, &resource);
        let Some(object) = self.get_or_none(api, name).await? else {
            return Ok(None);
        };
        let value = serde_json::to_value(&object).map_err(|e| CliError::Serialize {
            what: format!("{kind} {name}"),
            message: e.to_string(),
        })?;
        Ok(crate::policy::inventory::pods_of_object(kind, &value))
    }

    async fn get_or_none<K>(&self, api: Api<K>, name: &str) -> Result<Option<K>, CliError>
    where
        K: Clone + std::fmt::Debug + serde::de::DeserializeOwned,
    {
        match api.get_opt(name).await {
            Ok(found) => Ok(found),
            Err(kube::Error::Api(status)) if status.code == 403 || status.code == 404 => Ok(None),
            Err(source) => Err(CliError::Api {
                what: format!("get {name}"),
                source,
            }),
        }
    }

    async fn list_or_empty<K>(&self, api: Api<K>) -> Result<Vec<K>, CliError>
    where
        K: Clone + std::fmt::Debug + serde::de::DeserializeOwned,
    {
        match api.list(&ListParams::default()).await {
            Ok(list) => Ok(list.items),
            Err(kube::Error::Api(status)) if status.code == 403 || status.code == 404 => {
                Ok(Vec::new())
            }
            Err(source) => Err(CliError::Api {
                what: "list".into(),
                source,
            }),
        }
    }
}

/// The API resource of a workload kind whose pods can be selected.
fn workload_resource(kind: &str) -> Option<ApiResource> {
    let (group, version, plural) = match kind {
        "Deployment" => ("apps", "v1", "deployments"),
        "StatefulSet" => ("apps", "v1", "statefulsets"),
        "DaemonSet" => ("apps", "v1", "daemonsets"),
        "ReplicaSet" => ("apps", "v1", "replicasets"),
        "Job" => ("batch", "v1", "jobs"),
        "CronJob" => ("batch", "v1", "cronjobs"),
        "Pod" => ("", "v1", "pods"),
        _ => return None,
    };
    let gvk = GroupVersionKind::gvk(group, version, kind);
    Some(ApiResource::from_gvk_with_plural(&gvk, plural))
}
