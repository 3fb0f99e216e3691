//! Applies status snapshots from the engine: the ObservedTraffic object (created once per
//! client), the draft ClientIntents when due, then the status with its condition. Failed writes
//! stay queued with their latest snapshot and are retried with backoff; nothing is lost while the
//! API server is away. Each written status is entered in the [`Ledger`], which acknowledges the
//! reports that waited for it.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client, Resource};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use trafficmap_api::intents::ClientIntentsSpec;
use trafficmap_api::observed::ObservedTrafficStatus;
use trafficmap_api::{ClientIntents, FIELD_MANAGER, ObservedTraffic, WorkloadRef};

use super::intents::{IntentsDecision, condition, decide};
use crate::durable::Ledger;
use crate::engine::StatusWrite;
use crate::metrics::Metrics;

/// How long the ClientIntents CRD's presence is trusted before asking again.
const CRD_CHECK_INTERVAL: Duration = Duration::from_secs(30);
/// First and longest wait before retrying failed writes.
const RETRY_MIN: Duration = Duration::from_millis(500);
const RETRY_MAX: Duration = Duration::from_secs(30);

/// Settings of the writer.
#[derive(Clone, Debug)]
pub struct WriterConfig {
    /// Whether draft ClientIntents are written.
    pub emit_client_intents: bool,
}

/// The writer; see the module docs.
pub struct Writer {
    client: Client,
    config: WriterConfig,
    metrics: Arc<Metrics>,
    ledger: Arc<Ledger>,
    /// Snapshots not yet written, with their generation.
    queue: BTreeMap<WorkloadRef, (ObservedTrafficStatus, u64)>,
    /// Latest snapshot of every client, to re-decide drafts when the CRD appears.
    latest: HashMap<WorkloadRef, (ObservedTrafficStatus, u64)>,
    /// UIDs of ObservedTraffic objects known to exist.
    uids: HashMap<WorkloadRef, String>,
    /// Draft specs last applied.
    drafts: HashMap<WorkloadRef, ClientIntentsSpec>,
    /// Conditions last written.
    conditions: HashMap<WorkloadRef, Condition>,
    crd: Option<(bool, Instant)>,
}

impl Writer {
    /// A writer with nothing queued, entering what it writes in `ledger`.
    pub fn new(
        client: Client,
        config: WriterConfig,
        metrics: Arc<Metrics>,
        ledger: Arc<Ledger>,
    ) -> Self {
        Writer {
            client,
            config,
            metrics,
            ledger,
            queue: BTreeMap::new(),
            latest: HashMap::new(),
            uids: HashMap::new(),
            drafts: HashMap::new(),
            conditions: HashMap::new(),
            crd: None,
        }
    }

    /// Writes what the engine hands over until the channel closes (after the engine's final
    /// flush) or, with writes failing, `shutdown` fires.
    pub async fn run(
        mut self,
        mut rx: mpsc::UnboundedReceiver<Vec<StatusWrite>>,
        shutdown: CancellationToken,
    ) {
        let mut backoff = RETRY_MIN;
        let mut closed = false;
        loop {
            if self.queue.is_empty() {
                if closed {
                    return;
                }
                match rx.recv().await {
                    Some(batch) => self.enqueue(batch),
                    None => return,
                }
            }
            while let Ok(batch) = rx.try_recv() {
                self.enqueue(batch);
            }
            self.refresh_crd_presence().await;
            let started = Instant::now();
            let failed = self.write_queue().await;
            self.metrics
                .reconcile_seconds
                .observe(started.elapsed().as_secs_f64());
            if failed == 0 {
                backoff = RETRY_MIN;
                continue;
            }
            tracing::warn!(failed, retry_in = ?backoff, "writes failed; will retry");
            tokio::select! {
                () = tokio::time::sleep(backoff) => {}
                batch = rx.recv(), if !closed => match batch {
                    Some(batch) => self.enqueue(batch),
                    None => closed = true,
                },
                () = shutdown.cancelled(), if closed => return,
            }
            backoff = (backoff * 2).min(RETRY_MAX);
        }
    }

    fn enqueue(&mut self, batch: Vec<StatusWrite>) {
        for write in batch {
            let snapshot = (write.status, write.generation);
            self.latest.insert(write.client.clone(), snapshot.clone());
            self.queue.insert(write.client, snapshot);
        }
    }

    /// Asks discovery whether `k8s.otterize.com/v2beta1` is served, every [`CRD_CHECK_INTERVAL`];
    /// when it appears, every client is queued again so drafts get written.
    async fn refresh_crd_presence(&mut self) {
        if !self.config.emit_client_intents {
            return;
        }
        if let Some((_, at)) = self.crd
            && at.elapsed() < CRD_CHECK_INTERVAL
        {
            return;
        }
        let gv = format!(
            "{}/{}",
            ClientIntents::group(&()),
            ClientIntents::version(&())
        );
        let present = match self.client.list_api_group_resources(&gv).await {
            Ok(list) => list.resources.iter().any(|r| r.name == "clientintents"),
            Err(kube::Error::Api(status)) if status.code == 404 => false,
            Err(err) => {
                tracing::warn!(%err, "cannot tell whether the ClientIntents CRD is installed");
                return;
            }
        };
        let was = self.crd.map(|(p, _)| p);
        self.crd = Some((present, Instant::now()));
        if was != Some(present) {
            tracing::info!(present, "ClientIntents CRD presence");
            if present {
                for (client, snapshot) in &self.latest {
                    self.queue.insert(client.clone(), snapshot.clone());
                }
            }
        }
    }

    /// Writes every queued snapshot; returns how many failed (they stay queued).
    async fn write_queue(&mut self) -> usize {
        let queued: Vec<(WorkloadRef, (ObservedTrafficStatus, u64))> =
            std::mem::take(&mut self.queue).into_iter().collect();
        let mut failed = 0;
        for (client, (status, generation)) in queued {
            match self.write_one(&client, status.clone()).await {
                Ok(()) => self.ledger.written(&client, generation),
                Err(err) => {
                    tracing::warn!(client = %client.name, namespace = %client.namespace, %err, "write failed");
                    failed += 1;
                    self.queue.entry(client).or_insert((status, generation));
                }
            }
        }
        failed
    }

    async fn write_one(
        &mut self,
        client: &WorkloadRef,
        mut status: ObservedTrafficStatus,
    ) -> Result<(), kube::Error> {
        let api = Api::<ObservedTraffic>::all(self.client.clone());
        let params = PatchParams::apply(FIELD_MANAGER).force();
        let mut object = ObservedTraffic::for_client(client.clone());
        let name = object.metadata.name.clone().unwrap_or_default();
        let uid = match self.uids.get(client) {
            Some(uid) => uid.clone(),
            None => {
                let applied = api.patch(&name, &params, &Patch::Apply(&object)).await;
                self.metrics.api_write("observedtraffic", applied.is_ok());
                let uid = applied?.metadata.uid.unwrap_or_default();
                self.uids.insert(client.clone(), uid.clone());
                uid
            }
        };
        object.metadata.uid = Some(uid);
        object.status = Some(status.clone());

        let (ok, reason, message, uncovered) = self.settle_intents(client, &object).await?;
        status.uncovered_targets = uncovered;
        let now = Time(Timestamp::now());
        let cond = condition(ok, reason, message, self.conditions.get(client), now);
        status.conditions = vec![cond.clone()];
        object.status = Some(status);
        object.metadata.uid = None;
        let written = api
            .patch_status(&name, &params, &Patch::Apply(&object))
            .await;
        self.metrics
            .api_write("observedtraffic_status", written.is_ok());
        if let Err(kube::Error::Api(s)) = &written
            && s.code == 404
        {
            self.uids.remove(client);
        }
        written?;
        tracing::debug!(client = %client.name, namespace = %client.namespace, "status written");
        self.conditions.insert(client.clone(), cond);
        Ok(())
    }

    /// Writes the draft if due and returns the condition and uncovered targets for the status.
    async fn settle_intents(
        &mut self,
        client: &WorkloadRef,
        object: &ObservedTraffic,
    ) -> Result<(bool, &'static str, String, Vec<String>), kube::Error> {
        if !self.config.emit_client_intents {
            return Ok((
                false,
                "Disabled",
                "draft ClientIntents are turned off (--emit-client-intents=false)".into(),
                Vec::new(),
            ));
        }
        if self.crd.map(|(p, _)| p) != Some(true) {
            return Ok((
                false,
                "CRDNotInstalled",
                "the ClientIntents CRD (k8s.otterize.com/v2beta1) is not installed; drafts are skipped".into(),
                Vec::new(),
            ));
        }
        let name = trafficmap_api::naming::client_intents_name(&client.name);
        let api = Api::<ClientIntents>::namespaced(self.client.clone(), &client.namespace);
        let existing = api.get_opt(&name).await?;
        match decide(object, existing.as_ref()) {
            IntentsDecision::Skip {
                reason,
                message,
                uncovered,
            } => {
                self.drafts.remove(client);
                Ok((false, reason, message, uncovered))
            }
            IntentsDecision::Apply(draft) => {
                let unchanged = existing.is_some() && self.drafts.get(client) == Some(&draft.spec);
                if !unchanged {
                    let applied = api
                        .patch(
                            &name,
                            &PatchParams::apply(FIELD_MANAGER).force(),
                            &Patch::Apply(&*draft),
                        )
                        .await;
                    self.metrics.api_write("clientintents", applied.is_ok());
                    applied?;
                    self.drafts.insert(client.clone(), draft.spec.clone());
                }
                Ok((
                    true,
                    "Emitted",
                    format!("draft ClientIntents {name} is up to date"),
                    Vec::new(),
                ))
            }
        }
    }
}
