//! What every chaos case needs: a namespace with a sniffer ServiceAccount and a real operator
//! process for it, a client Deployment calling a server Deployment behind a Service, and
//! helpers to post reports and read back what the operator wrote.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, ListParams};
use kube::{Api, Client};
use trafficmap_api::observed::Protocol;
use trafficmap_api::report::{ClientId, ConnectionObservation, DnsObservation, REPORT_VERSION};
use trafficmap_api::{Observation, ObservedTraffic, Report};

use crate::cluster::{TestNamespace, admin_client, wait_for};
use crate::crds::install_all;
use crate::fixtures::{
    delete_pod_now, deployment, ensure_node, reap_stale_namespaces, service, start_pod,
    wait_for_endpoint,
};
use crate::operator::{OperatorOptions, OperatorProcess, published_ca, service_account_token};
use crate::{Error, Result, http};

/// Prefix of the namespaces chaos cases create (stale ones are reaped on the next run).
pub const NAMESPACE_PREFIX: &str = "tm-chaos-";
/// How long a case waits for the operator to write what it was told.
pub const WAIT: Duration = Duration::from_secs(45);

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Parses an address the case itself wrote.
pub fn ip(s: &str) -> Result<IpAddr> {
    s.parse().map_err(|e| Error::Http {
        what: format!("address {s}"),
        source: Box::new(e),
    })
}

/// A TCP connection observation from `client` to `server:port`, seen now.
pub fn connection(client: IpAddr, server: IpAddr, port: u16) -> Observation {
    let at = now_ms();
    Observation::Connection(ConnectionObservation {
        client: ClientId {
            ip: client,
            pod_uid: None,
        },
        server_ip: server,
        server_port: port,
        protocol: Protocol::Tcp,
        first_seen_ms: at,
        last_seen_ms: at,
    })
}

/// A DNS observation: `client` got `answer` for `name`, now.
pub fn dns(client: IpAddr, name: &str, answer: IpAddr) -> Observation {
    let at = now_ms();
    Observation::Dns(DnsObservation {
        client: ClientId {
            ip: client,
            pod_uid: None,
        },
        name: name.into(),
        ips: vec![answer],
        ttl_seconds: 30,
        first_seen_ms: at,
        last_seen_ms: at,
    })
}

/// A version-1 report body from the test node.
pub fn report(observations: Vec<Observation>) -> Result<Vec<u8>> {
    serde_json::to_vec(&Report {
        version: REPORT_VERSION,
        node: crate::fixtures::TEST_NODE.into(),
        observations,
    })
    .map_err(|e| Error::Http {
        what: "report JSON".into(),
        source: Box::new(e),
    })
}

/// A client and a server workload of a case.
pub struct Pair {
    /// The client pod's address.
    pub client: IpAddr,
    /// The server pod's address.
    pub server: IpAddr,
    /// The server Service's ClusterIP (the server's address when there is no Service).
    pub cluster_ip: IpAddr,
}

/// A case's namespace, sniffer token and operator.
pub struct Setup {
    /// Admin client.
    pub client: Client,
    /// The case's namespace.
    pub ns: TestNamespace,
    /// A token of the sniffer ServiceAccount, audience `trafficmap`.
    pub token: String,
    /// The CA the operator published.
    pub ca: String,
    /// The running operator.
    pub operator: OperatorProcess,
    /// How it was started (to start it again, or a second replica).
    pub options: OperatorOptions,
}

impl Setup {
    /// Installs the CRDs, creates `<NAMESPACE_PREFIX><case>-*` with a sniffer account, and
    /// starts an operator for it with `extra_args`.
    pub async fn new(case: &str, extra_args: &[&str]) -> Result<Setup> {
        let client = admin_client().await?;
        install_all(&client).await?;
        ensure_node(&client).await?;
        let ns = TestNamespace::create(&client, &format!("{NAMESPACE_PREFIX}{case}")).await?;
        let token = service_account_token(&client, &ns.name, "sniffer", "trafficmap").await?;
        let options = OperatorOptions {
            namespace: ns.name.clone(),
            sniffer_account: format!("{}/sniffer", ns.name),
            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
            label: ns.name.clone(),
        };
        let operator = OperatorProcess::start(&options).await?;
        let ca = published_ca(&client, &ns.name).await?;
        Ok(Setup {
            client,
            ns,
            token,
            ca,
            operator,
            options,
        })
    }

    /// Posts `body` to the operator with `token`; returns the HTTP status.
    pub async fn post(&self, token: Option<&str>, body: Vec<u8>) -> Result<u16> {
        Ok(http::request(
            "POST",
            &self.operator.ingest_url,
            Some(&self.ca),
            token,
            body,
        )
        .await?
        .0)
    }

    /// Starts Deployment `name` with one pod at `pod_ip`.
    pub async fn workload(&self, name: &str, pod_ip: IpAddr) -> Result<()> {
        let pods = deployment(&self.client, &self.ns.name, name, 1, BTreeMap::new()).await?;
        let pod = pods
            .first()
            .ok_or_else(|| Error::Exited(format!("deployment {name} has no pod")))?;
        start_pod(&self.client, pod, pod_ip).await
    }

    /// Deployments `client` at `<subnet>.2` and `server` at `<subnet>.3` (`subnet` like
    /// `10.244.43`), and with `with_service` a Service `server` in front of the server.
    pub async fn client_and_server(&self, subnet: &str, with_service: bool) -> Result<Pair> {
        let client = ip(&format!("{subnet}.2"))?;
        let server = ip(&format!("{subnet}.3"))?;
        self.workload("client", client).await?;
        self.workload("server", server).await?;
        let cluster_ip = if with_service {
            self.service("server", server).await?
        } else {
            server
        };
        Ok(Pair {
            client,
            server,
            cluster_ip,
        })
    }

    /// [`Setup::client_and_server`] with the Service, and a report of the client calling its
    /// ClusterIP on port 80; returns once the map has client -> server.
    pub async fn mapped_client_and_server(&self, subnet: &str) -> Result<Pair> {
        let pair = self.client_and_server(subnet, true).await?;
        let body = report(vec![connection(pair.client, pair.cluster_ip, 80)])?;
        let status = self.post(Some(&self.token), body).await?;
        if status != 202 {
            return Err(Error::Exited(format!(
                "the operator answered the report with HTTP {status}"
            )));
        }
        self.wait_for_targets("client", &["server"]).await?;
        Ok(pair)
    }

    /// A Service `name` in front of Deployment `name`, whose pod is at `pod_ip`; its ClusterIP.
    pub async fn service(&self, name: &str, pod_ip: IpAddr) -> Result<IpAddr> {
        let cluster_ip = service(&self.client, &self.ns.name, name, name, 80, 8080).await?;
        wait_for_endpoint(&self.client, &self.ns.name, name, pod_ip).await?;
        Ok(cluster_ip)
    }

    /// The ObservedTraffic of Deployment `workload` in the case's namespace.
    pub async fn observed(&self, workload: &str) -> Result<Option<ObservedTraffic>> {
        let name = format!("{workload}.deployment.{}", self.ns.name);
        Api::<ObservedTraffic>::all(self.client.clone())
            .get_opt(&name)
            .await
            .map_err(crate::kube_context(format!("get ObservedTraffic {name}")))
    }

    /// Every ObservedTraffic of a client in the case's namespace.
    pub async fn all_observed(&self) -> Result<Vec<ObservedTraffic>> {
        let list = Api::<ObservedTraffic>::all(self.client.clone())
            .list(&ListParams::default())
            .await
            .map_err(crate::kube_context("list ObservedTraffic"))?;
        Ok(list
            .items
            .into_iter()
            .filter(|o| o.spec.client.namespace == self.ns.name)
            .collect())
    }

    /// Target names (sorted, deduplicated) of `workload`'s ObservedTraffic, empty if none.
    pub async fn target_names(&self, workload: &str) -> Result<Vec<String>> {
        let mut names: Vec<String> = self
            .observed(workload)
            .await?
            .and_then(|o| o.status)
            .map(|s| s.targets.into_iter().map(|t| t.name).collect())
            .unwrap_or_default();
        names.sort();
        names.dedup();
        Ok(names)
    }

    /// Waits until `workload`'s ObservedTraffic lists exactly `targets`.
    pub async fn wait_for_targets(&self, workload: &str, targets: &[&str]) -> Result<()> {
        let want: Vec<String> = targets.iter().map(|s| s.to_string()).collect();
        wait_for(&format!("{workload} -> {want:?}"), WAIT, || async {
            Ok((self.target_names(workload).await? == want).then_some(()))
        })
        .await
    }

    /// The value of metric line `series` (exact series text, e.g. `name{label="x"}`), 0 if
    /// absent.
    pub async fn metric(&self, series: &str) -> Result<f64> {
        let text = self.operator.metrics().await?;
        Ok(crate::prom::sample(&text, series))
    }

    /// Deletes what the case created; failures are ignored (the next run reaps leftovers).
    pub async fn cleanup(self) {
        if let Ok(objects) = self.all_observed().await {
            for ot in objects {
                let name = ot.metadata.name.clone().unwrap_or_default();
                let _ = Api::<ObservedTraffic>::all(self.client.clone())
                    .delete(&name, &DeleteParams::default())
                    .await;
            }
        }
        let pods = Api::<Pod>::namespaced(self.client.clone(), &self.ns.name);
        for pod in pods
            .list(&ListParams::default())
            .await
            .map(|l| l.items)
            .unwrap_or_default()
        {
            let _ = delete_pod_now(&self.client, &pod).await;
        }
        drop(self.operator);
        let _ = self.ns.delete().await;
    }
}

/// Removes the namespaces an earlier run of `case` left (its pods would hold the addresses this
/// run gives its own).
pub async fn reap_case(case: &str) -> Result<()> {
    let client = admin_client().await?;
    reap_stale_namespaces(&client, &format!("{NAMESPACE_PREFIX}{case}-")).await
}

/// Removes namespaces earlier interrupted chaos runs left.
pub async fn reap_stale() -> Result<()> {
    let client = admin_client().await?;
    reap_stale_namespaces(&client, NAMESPACE_PREFIX).await
}
