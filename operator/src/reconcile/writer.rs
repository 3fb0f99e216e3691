//! Applies status snapshots from the engine: the ObservedTraffic object (created once per
//! client), the draft ClientIntents when due, then the status with its condition, for up to
//! [`WriterConfig::concurrency`] clients at once. Failed writes stay queued with their latest
//! snapshot and are retried with backoff; nothing is lost while the API server is away. Each
//! written status is entered in the [`Ledger`], which acknowledges the reports that waited for
//! it.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
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
    /// Most clients written at once (each write is one to three API requests in a row).
    pub concurrency: usize,
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

    /// Writes every queued snapshot, up to [`WriterConfig::concurrency`] clients at once;
    /// returns how many failed (they stay queued).
    async fn write_queue(&mut self) -> usize {
        let queued = std::mem::take(&mut self.queue);
        let crd_present = self.crd.map(|(present, _)| present) == Some(true);
        let jobs: Vec<Job> = queued
            .into_iter()
            .map(|(client, (status, generation))| Job {
                uid: self.uids.get(&client).cloned(),
                draft: self.drafts.get(&client).cloned(),
                condition: self.conditions.get(&client).cloned(),
                client,
                status,
                generation,
            })
            .collect();
        let context = Context {
            client: &self.client,
            metrics: &self.metrics,
            emit_client_intents: self.config.emit_client_intents,
            crd_present,
        };
        let mut done = futures::stream::iter(jobs)
            .map(|job| context.write(job))
            .buffer_unordered(self.config.concurrency.max(1));
        let mut failed = 0;
        while let Some(done) = done.next().await {
            let Done { job, uid, outcome } = done;
            match uid {
                Some(uid) => self.uids.insert(job.client.clone(), uid),
                None => self.uids.remove(&job.client),
            };
            match outcome {
                Ok(written) => {
                    match written.draft {
                        Some(spec) => self.drafts.insert(job.client.clone(), spec),
                        None => self.drafts.remove(&job.client),
                    };
                    self.conditions
                        .insert(job.client.clone(), written.condition);
                    self.ledger.written(&job.client, job.generation);
                }
                Err(err) => {
                    tracing::warn!(client = %job.client.name, namespace = %job.client.namespace, %err, "write failed");
                    failed += 1;
                    self.queue
                        .entry(job.client)
                        .or_insert((job.status, job.generation));
                }
            }
        }
        failed
    }
}

/// One client's write, with what the writer remembered of it when the write started.
struct Job {
    client: WorkloadRef,
    status: ObservedTrafficStatus,
    generation: u64,
    /// UID of the ObservedTraffic object, when known to exist.
    uid: Option<String>,
    /// Draft spec last applied.
    draft: Option<ClientIntentsSpec>,
    /// Condition last written.
    condition: Option<Condition>,
}

/// A finished [`Job`]: the UID now known (none when the object is gone or was never created),
/// and what was written.
struct Done {
    job: Job,
    uid: Option<String>,
    outcome: Result<Written, kube::Error>,
}

/// What a successful write leaves to remember.
struct Written {
    /// The draft spec now applied (none: no draft of ours is kept for this client).
    draft: Option<ClientIntentsSpec>,
    condition: Condition,
}

/// What every write shares; writes run at once against it.
struct Context<'a> {
    client: &'a Client,
    metrics: &'a Metrics,
    emit_client_intents: bool,
    crd_present: bool,
}

impl Context<'_> {
    async fn write(&self, job: Job) -> Done {
        let mut uid = job.uid.clone();
        let outcome = self.write_status(&job, &mut uid).await;
        Done { job, uid, outcome }
    }

    /// Creates the ObservedTraffic object when `uid` is unknown, settles the draft, then
    /// applies the status. `uid` is left as what is known afterwards.
    async fn write_status(
        &self,
        job: &Job,
        uid: &mut Option<String>,
    ) -> Result<Written, kube::Error> {
        let client = &job.client;
        let api = Api::<ObservedTraffic>::all(self.client.clone());
        let params = PatchParams::apply(FIELD_MANAGER).force();
        let mut object = ObservedTraffic::for_client(client.clone());
        let name = object.metadata.name.clone().unwrap_or_default();
        let known = match uid {
            Some(known) => known.clone(),
            None => {
                let applied = api.patch(&name, &params, &Patch::Apply(&object)).await;
                self.metrics.api_write("observedtraffic", applied.is_ok());
                let created = applied?.metadata.uid.unwrap_or_default();
                *uid = Some(created.clone());
                created
            }
        };
        object.metadata.uid = Some(known);
        let mut status = job.status.clone();
        object.status = Some(status.clone());

        let (settled, draft) = self
            .settle_intents(client, &object, job.draft.as_ref())
            .await?;
        let (ok, reason, message, uncovered) = settled;
        status.uncovered_targets = uncovered;
        let now = Time(Timestamp::now());
        let cond = condition(ok, reason, message, job.condition.as_ref(), now);
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
            *uid = None;
        }
        written?;
        tracing::debug!(client = %client.name, namespace = %client.namespace, "status written");
        Ok(Written {
            draft,
            condition: cond,
        })
    }

    /// Writes the draft if due; returns the condition and uncovered targets for the status,
    /// and the draft spec applied now (`applied`, the one applied before, when unchanged).
    async fn settle_intents(
        &self,
        client: &WorkloadRef,
        object: &ObservedTraffic,
        applied: Option<&ClientIntentsSpec>,
    ) -> Result<(Settled, Option<ClientIntentsSpec>), kube::Error> {
        if !self.emit_client_intents {
            let settled = (
                false,
                "Disabled",
                "draft ClientIntents are turned off (--emit-client-intents=false)".into(),
                Vec::new(),
            );
            return Ok((settled, None));
        }
        if !self.crd_present {
            let settled = (
                false,
                "CRDNotInstalled",
                "the ClientIntents CRD (k8s.otterize.com/v2beta1) is not installed; drafts are skipped".into(),
                Vec::new(),
            );
            return Ok((settled, None));
        }
        let name = trafficmap_api::naming::client_intents_name(&client.name);
        let api = Api::<ClientIntents>::namespaced(self.client.clone(), &client.namespace);
        let existing = api.get_opt(&name).await?;
        match decide(object, existing.as_ref()) {
            IntentsDecision::Skip {
                reason,
                message,
                uncovered,
            } => Ok(((false, reason, message, uncovered), None)),
            IntentsDecision::Apply(draft) => {
                let unchanged = existing.is_some() && applied == Some(&draft.spec);
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
                }
                let settled = (
                    true,
                    "Emitted",
                    format!("draft ClientIntents {name} is up to date"),
                    Vec::new(),
                );
                Ok((settled, Some(draft.spec)))
            }
        }
    }
}

/// Whether the draft is in place, the condition's reason and message, and the observed
/// targets that someone else's intents do not cover.
type Settled = (bool, &'static str, String, Vec<String>);
