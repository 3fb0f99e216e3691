//! Applies status snapshots from the engine: the ObservedTraffic object (created once per
//! client), the draft ClientIntents when due, then the status with its condition. Up to
//! [`WriterConfig::concurrency`] clients are written at once, taken from a [`WriteQueue`]:
//! statuses with something new first, moved `lastSeen` times after, oldest first. A failed
//! write goes back to the front of the queue and writing pauses with backoff; nothing is lost
//! while the API server is away. Each written status is entered in the [`Ledger`], which
//! acknowledges the reports that waited for it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client, Resource};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use trafficmap_api::intents::ClientIntentsSpec;
use trafficmap_api::observed::ObservedTrafficStatus;
use trafficmap_api::{ClientIntents, FIELD_MANAGER, ObservedTraffic, WorkloadRef};

use crate::resolve::Workload;

use super::intents::{CONDITION_TYPE, IntentsDecision, condition, decide};
use super::intents_sync::ClientKey;
use super::queue::{Queued, WriteQueue};
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
    /// Snapshots not yet written.
    queue: WriteQueue,
    /// Latest snapshot of every client, to re-decide drafts when the CRD appears.
    latest: HashMap<Workload, (ObservedTrafficStatus, u64)>,
    /// UIDs of ObservedTraffic objects known to exist.
    uids: HashMap<Workload, String>,
    /// Draft specs last applied.
    drafts: HashMap<Workload, ClientIntentsSpec>,
    /// Conditions last written.
    conditions: HashMap<Workload, Condition>,
    /// Refusals in a row, per client.
    failures: HashMap<Workload, u32>,
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
            queue: WriteQueue::default(),
            latest: HashMap::new(),
            uids: HashMap::new(),
            drafts: HashMap::new(),
            conditions: HashMap::new(),
            failures: HashMap::new(),
            crd: None,
        }
    }

    /// Writes what the engine hands over until the channel closes (after the engine's final
    /// flush) or, with writes failing, `shutdown` fires. A client named on `redecide` (its
    /// ClientIntents changed hands or content) is written again from its latest snapshot.
    pub async fn run(
        mut self,
        mut rx: mpsc::UnboundedReceiver<Vec<StatusWrite>>,
        mut redecide: mpsc::UnboundedReceiver<ClientKey>,
        shutdown: CancellationToken,
    ) {
        let context = Arc::new(Context {
            client: self.client.clone(),
            metrics: self.metrics.clone(),
            emit_client_intents: self.config.emit_client_intents,
        });
        let mut writes = FuturesUnordered::new();
        let mut backoff = RETRY_MIN;
        let mut paused_until: Option<tokio::time::Instant> = None;
        let mut closed = false;
        loop {
            if paused_until.is_some_and(|until| until <= tokio::time::Instant::now()) {
                paused_until = None;
            }
            if paused_until.is_none() && !self.queue.is_empty() {
                self.refresh_crd_presence().await;
                while writes.len() < self.config.concurrency.max(1) {
                    let Some((client, queued)) = self.queue.next(Instant::now()) else {
                        break;
                    };
                    let job = self.job(client, queued);
                    writes.push(Arc::clone(&context).write(job));
                }
            }
            self.metrics
                .writes_waiting
                .set(i64::try_from(self.queue.len() + writes.len()).unwrap_or(i64::MAX));
            if closed && writes.is_empty() && (self.queue.is_empty() || shutdown.is_cancelled()) {
                return;
            }
            tokio::select! {
                batch = rx.recv(), if !closed => match batch {
                    Some(batch) => self.enqueue(batch),
                    None => closed = true,
                },
                Some(key) = redecide.recv() => self.requeue(|c| c.namespace == key.namespace && c.name == key.name),
                Some(done) = writes.next(), if !writes.is_empty() => {
                    if self.finish(done) {
                        backoff = RETRY_MIN;
                    } else if paused_until.is_none() {
                        tracing::warn!(retry_in = ?backoff, waiting = self.queue.len(), "the API server failed a write; pausing writes");
                        paused_until = Some(tokio::time::Instant::now() + backoff);
                        backoff = (backoff * 2).min(RETRY_MAX);
                    }
                }
                () = sleep_until(paused_until), if paused_until.is_some() => {}
                () = sleep_until(self.queue.next_retry().map(tokio::time::Instant::from_std)),
                    if paused_until.is_none() && self.queue.next_retry().is_some() => {}
                // Shutting down: give up on writes that wait for a retry, not on those under way.
                () = shutdown.cancelled(), if closed && (paused_until.is_some() || writes.is_empty()) => return,
            }
        }
    }

    fn enqueue(&mut self, batch: Vec<StatusWrite>) {
        let now = Instant::now();
        for write in batch {
            self.latest.insert(
                write.client.clone(),
                (write.status.clone(), write.generation),
            );
            self.queue.push(
                write.client,
                Queued {
                    status: write.status,
                    generation: write.generation,
                    urgent: write.urgent,
                    since: now,
                },
            );
        }
    }

    /// Queues again, from its latest snapshot, every client that `which` picks.
    fn requeue(&mut self, which: impl Fn(&WorkloadRef) -> bool) {
        let now = Instant::now();
        for (client, (status, generation)) in &self.latest {
            if which(client.get()) {
                let queued = Queued {
                    status: status.clone(),
                    generation: *generation,
                    urgent: false,
                    since: now,
                };
                self.queue.push(client.clone(), queued);
            }
        }
    }

    /// A write of `client`, with what the writer remembers of it.
    fn job(&self, client: Workload, queued: Queued) -> Job {
        Job {
            uid: self.uids.get(&client).cloned(),
            draft: self.drafts.get(&client).cloned(),
            condition: self.conditions.get(&client).cloned(),
            crd_present: self.crd.map(|(present, _)| present) == Some(true),
            client,
            queued,
        }
    }

    /// Keeps what a finished write learned. Returns false when the API server failed it (not
    /// the object): writing then pauses. A write refused for its object alone is retried by
    /// itself after a backoff of its own.
    fn finish(&mut self, done: Done) -> bool {
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
                self.failures.remove(&job.client);
                self.ledger.written(&job.client, job.queued.generation);
                self.metrics
                    .reconcile_seconds
                    .observe(job.queued.since.elapsed().as_secs_f64());
                self.queue.done(&job.client);
                true
            }
            Err(err) if refused_for_the_object(&err) => {
                let failures = self.failures.entry(job.client.clone()).or_insert(0);
                *failures = failures.saturating_add(1);
                let delay = (RETRY_MIN * 2u32.saturating_pow(*failures - 1)).min(RETRY_MAX);
                tracing::warn!(client = %job.client.name, namespace = %job.client.namespace, %err, retry_in = ?delay, "write refused");
                let at = Instant::now() + delay;
                self.queue.retry(&job.client, job.queued, Some(at));
                true
            }
            Err(err) => {
                tracing::warn!(client = %job.client.name, namespace = %job.client.namespace, %err, "write failed");
                self.queue.retry(&job.client, job.queued, None);
                false
            }
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
                self.requeue(|_| true);
            }
        }
    }
}

/// One client's write, with what the writer remembered of it when the write started.
struct Job {
    client: Workload,
    queued: Queued,
    /// UID of the ObservedTraffic object, when known to exist.
    uid: Option<String>,
    /// Draft spec last applied.
    draft: Option<ClientIntentsSpec>,
    /// Condition last written.
    condition: Option<Condition>,
    /// Whether the ClientIntents CRD was installed when the write started.
    crd_present: bool,
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
struct Context {
    client: Client,
    metrics: Arc<Metrics>,
    emit_client_intents: bool,
}

/// An API answer about this object (400-499 but 429), not about the server's health.
fn refused_for_the_object(err: &kube::Error) -> bool {
    matches!(err, kube::Error::Api(status) if (400..500).contains(&status.code) && status.code != 429)
}

/// Sleeps until `until`, or forever without one.
async fn sleep_until(until: Option<tokio::time::Instant>) {
    match until {
        Some(until) => tokio::time::sleep_until(until).await,
        None => std::future::pending().await,
    }
}

impl Context {
    async fn write(self: Arc<Self>, job: Job) -> Done {
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
        let mut object = ObservedTraffic::for_client(client.get().clone());
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
        let mut status = job.queued.status.clone();
        object.status = Some(status.clone());

        let (settled, draft) = self
            .settle_intents(client, &object, job.draft.as_ref(), job.crd_present)
            .await?;
        let (ok, reason, message, uncovered) = settled;
        status.uncovered_targets = uncovered;
        let now = Time(Timestamp::now());
        let cond = condition(
            CONDITION_TYPE,
            ok,
            reason,
            message,
            job.condition.as_ref(),
            now,
        );
        // The snapshot's own conditions (the audit's WouldBeBlocked) follow ours.
        let mut conditions = vec![cond.clone()];
        conditions.extend(
            status
                .conditions
                .drain(..)
                .filter(|c| c.type_ != CONDITION_TYPE),
        );
        status.conditions = conditions;
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
        tracing::debug!(
            client = %client.name,
            namespace = %client.namespace,
            urgent = job.queued.urgent,
            queued_ms = job.queued.since.elapsed().as_millis(),
            "status written"
        );
        Ok(Written {
            draft,
            condition: cond,
        })
    }

    /// Writes the draft if due; returns the condition and uncovered targets for the status,
    /// and the draft spec applied now (`applied`, the one applied before, when unchanged).
    async fn settle_intents(
        &self,
        client: &Workload,
        object: &ObservedTraffic,
        applied: Option<&ClientIntentsSpec>,
        crd_present: bool,
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
        if !crd_present {
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
