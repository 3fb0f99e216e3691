//! The CLI's only contact with the API server: connect through the kubeconfig, read
//! ObservedTraffic and ClientIntents, delete ObservedTraffic. Failures become advice
//! ([`Request::error`]).

use std::collections::BTreeSet;

use kube::api::{DeleteParams, ListParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};
use trafficmap_api::{ClientIntents, ObservedTraffic};

use crate::cli::args::CommonArgs;
use crate::cli::error::{
    CLIENT_INTENTS, CliError, INSTALL_INTENTS_CRD, INSTALL_OUR_CRDS, OBSERVED_TRAFFIC, Request,
};

/// Objects per list page.
const LIST_PAGE_OBJECTS: u32 = 500;

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

    /// Deletes one ObservedTraffic; `false` when it was already gone.
    pub async fn delete_observed_traffic(&self, name: &str) -> Result<bool, CliError> {
        let api = Api::<ObservedTraffic>::all(self.client.clone());
        match api.delete(name, &DeleteParams::default()).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(status)) if status.code == 404 => Ok(false),
            Err(e) => Err(Request {
                verb: "delete",
                resource: OBSERVED_TRAFFIC,
                namespace: None,
                missing_hint: INSTALL_OUR_CRDS,
            }
            .error(Some(self.server.clone()), e)),
        }
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
