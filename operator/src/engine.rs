//! The engine: the one task that owns the resolution index, the traffic map and the queue of
//! observations waiting for the watches. Watch events and reports flow in; status snapshots due
//! for writing flow out. Keeping all of it in one task needs no locks and keeps resolution in
//! event order.
//!
//! Write coalescing: a client's status is handed to the writer at most once per flush interval,
//! when something material changed (at the first retry tick once its last status is that old,
//! not only at the flush); when only `lastSeen` moved, at most once per
//! [`EngineConfig::last_seen_refresh_ms`].
//!
//! Settling: a fresh observation waits (in a bounded queue) until the watches have had time to
//! report the cluster as it was when it was seen. Under load, when the queue is half full, a
//! fresh observation that would only move `lastSeen` of edges already in the map waits in a
//! queue of its own, so a flood of repeats evicts repeats, never news.
//!
//! Acknowledgement: every status handed over gets the next generation number of its client; a
//! report waits in the [`Ledger`] for the generation of each client it touched that carries its
//! edges, so it is acknowledged only once those are written (see [`crate::durable`]). A report
//! that only moves `lastSeen` of written edges waits for the last status that brought news,
//! not for a later `lastSeen` refresh still queued behind thousands of others.

use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use trafficmap_api::ObservedTraffic;
use trafficmap_api::observed::ObservedTrafficStatus;
use trafficmap_api::report::Observation;

mod events;
pub use events::{ClusterEvent, Stamped};

use crate::durable::{Hold, Ledger};
use crate::fast_hash::{FastMap, FastSet};
use crate::ingest::ReceivedReport;
use crate::metrics::{Metrics, ReasonLabel};
use crate::now_ms;
use crate::reconcile::audit::AUDIT_CONDITION;
use crate::resolve::handover::Handover;
use crate::resolve::{
    Attempt, Change, Index, ObservationOutcome, PendingQueue, PendingReason, SkipReason, TimeMs,
    TrafficMap, Workload,
};

/// Default of [`EngineConfig::pending_hold_ms`]: the settle time, a retry and some slack for
/// the watches, well under the ingest's acknowledgement timeout.
pub const DEFAULT_PENDING_HOLD_MS: u64 = 10_000;

/// Default of [`EngineConfig::drain_ms`]: the settle time and two retries, well inside the
/// operator's shutdown grace.
pub const DEFAULT_DRAIN_MS: u64 = crate::resolve::DEFAULT_SETTLE_MS + 2 * RETRY_INTERVAL_MS;

/// Timing of the engine.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// How often statuses are handed to the writer.
    pub flush_interval_ms: u64,
    /// How often a status whose only change is `lastSeen` is written.
    pub last_seen_refresh_ms: u64,
    /// Most observations waiting for the watches.
    pub pending_capacity: usize,
    /// How long an observation may wait for the watches.
    pub pending_wait_ms: u64,
    /// How long a report's acknowledgement waits for one of its observations to resolve; past
    /// it the observation may still resolve, but unacknowledged by its report.
    pub pending_hold_ms: u64,
    /// Longest a graceful stop waits for observations still settling or waiting for the
    /// watches (see [`Stop::drain`]).
    pub drain_ms: u64,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            flush_interval_ms: 5_000,
            last_seen_refresh_ms: 60_000,
            pending_capacity: crate::resolve::pending::DEFAULT_PENDING_CAPACITY,
            pending_wait_ms: crate::resolve::pending::DEFAULT_PENDING_WAIT_MS,
            pending_hold_ms: DEFAULT_PENDING_HOLD_MS,
            drain_ms: DEFAULT_DRAIN_MS,
        }
    }
}

/// A status due for writing.
#[derive(Debug)]
pub struct StatusWrite {
    /// The client.
    pub client: Workload,
    /// Its full status (targets, counts, lastSeen).
    pub status: ObservedTrafficStatus,
    /// Its generation: the writer tells the [`Ledger`] when it is written.
    pub generation: u64,
    /// It carries something new (first status, a new target, port or name), not only moved
    /// `lastSeen` times: the writer writes these first.
    pub urgent: bool,
}

/// An observation waiting for the watches, with its report's hold.
#[derive(Debug)]
struct Waiting {
    obs: Observation,
    hold: Option<Hold>,
    /// After this the report no longer waits for it (it may still resolve later).
    hold_until_ms: TimeMs,
}

/// What folding an outcome did.
enum Folded {
    /// Still pending.
    Pending,
    /// Done; the client whose edges it recorded, if any.
    Done(Option<Workload>),
}

/// The engine's state; see the module docs.
pub struct Engine {
    index: Index,
    map: TrafficMap,
    pending: PendingQueue<Waiting>,
    /// Settling observations that would only move `lastSeen` (see the module docs).
    refreshing: PendingQueue<Waiting>,
    /// When each client's last status was handed to the writer (the map keeps what changed
    /// since).
    handed_at: FastMap<Workload, TimeMs>,
    /// Generation of the last status handed over, per client.
    generations: FastMap<Workload, u64>,
    /// Generation of the last status with news (urgent) handed over, per client.
    news_generations: FastMap<Workload, u64>,
    /// Clients with material changes not handed over yet.
    dirty: FastSet<Workload>,
    /// The audit's latest `WouldBeBlocked` condition per client, carried by every status.
    audits: FastMap<Workload, Condition>,
    ledger: Arc<Ledger>,
    config: EngineConfig,
    metrics: Arc<Metrics>,
}

impl Engine {
    /// An engine over `index`.
    pub fn new(index: Index, config: EngineConfig, metrics: Arc<Metrics>) -> Self {
        Engine {
            index,
            map: TrafficMap::new(),
            pending: PendingQueue::new(config.pending_capacity, config.pending_wait_ms),
            refreshing: PendingQueue::new(config.pending_capacity, config.pending_wait_ms),
            handed_at: FastMap::default(),
            generations: FastMap::default(),
            news_generations: FastMap::default(),
            dirty: FastSet::default(),
            audits: FastMap::default(),
            ledger: Arc::new(Ledger::default()),
            config,
            metrics,
        }
    }

    /// Rebuilds the map from stored objects; they count as already written. Objects whose
    /// status cannot be read are skipped with a warning (they will be rewritten when traffic
    /// is seen again).
    pub fn restore(&mut self, objects: &[ObservedTraffic], now: TimeMs) {
        for object in objects {
            let index = &self.index;
            if let Err(err) = self
                .map
                .restore(std::iter::once(object), |name| index.intern(name))
            {
                tracing::warn!(name = ?object.metadata.name, %err, "cannot restore ObservedTraffic");
            }
        }
        for (client, _, _) in self.map.clients() {
            self.handed_at.insert(client.clone(), now);
        }
        for object in objects {
            let written = object.status.iter().flat_map(|s| &s.conditions);
            if let Some(audit) = written.into_iter().find(|c| c.type_ == AUDIT_CONDITION) {
                let client = self.index.intern(object.spec.client.clone());
                self.audits.insert(client, audit.clone());
            }
        }
        self.update_gauges();
    }

    /// Applies a cluster event to the index (or the map, for a deleted ObservedTraffic).
    pub fn apply(&mut self, stamped: Stamped) {
        let at = stamped.at_ms;
        match stamped.event {
            ClusterEvent::PodApplied(pod) => self.index.apply_pod(pod, at),
            ClusterEvent::PodDeleted(uid) => self.index.delete_pod(&uid, at),
            ClusterEvent::OwnerApplied(owner) => self.index.apply_owner(owner),
            ClusterEvent::OwnerDeleted(uid) => self.index.delete_owner(&uid, at),
            ClusterEvent::ServiceApplied(svc) => self.index.apply_service(svc, at),
            ClusterEvent::ServiceDeleted { namespace, name } => {
                self.index.delete_service(&namespace, &name, at)
            }
            ClusterEvent::SliceApplied(slice) => self.index.apply_endpoint_slice(slice, at),
            ClusterEvent::SliceDeleted { namespace, name } => {
                self.index.delete_endpoint_slice(&namespace, &name, at)
            }
            ClusterEvent::NodeApplied(node) => self.index.apply_node(node, at),
            ClusterEvent::NodeDeleted(name) => self.index.delete_node(&name, at),
            ClusterEvent::Audited { client, condition } => {
                let client = self.index.intern(client);
                if self.map.get(&client).is_some() {
                    self.audits.insert(client.clone(), condition);
                    self.dirty.insert(client);
                }
            }
            ClusterEvent::ObservedTrafficDeleted(client) => {
                let client = self.index.intern(client);
                self.audits.remove(&client);
                if self.map.remove(&client).is_some() {
                    tracing::info!(client = %client.name, namespace = %client.namespace, "map entry reset");
                }
                self.handed_at.remove(&client);
                self.news_generations.remove(&client);
                self.dirty.remove(&client);
                self.ledger.forget(&client);
                self.update_gauges();
            }
        }
    }

    /// Resolves a report's observations; what cannot be resolved yet waits. The report's hold
    /// waits for the statuses that carry its edges (see the module docs).
    pub fn ingest(&mut self, received: ReceivedReport, now: TimeMs) {
        let hold = received.hold;
        // Clients whose edges the report brought: it waits for their statuses once, at the end,
        // rather than once per observation.
        let mut clients: FastSet<Workload> = FastSet::default();
        for obs in received.report.observations {
            if let Observation::Dns(dns) = &obs {
                self.index.record_dns_answers(dns);
            }
            let outcome = self
                .index
                .resolve_observation(&obs, Attempt::retryable(now));
            let refresh = matches!(
                outcome,
                ObservationOutcome::Pending(PendingReason::Settling)
            ) && self.pending.len().saturating_mul(2) >= self.config.pending_capacity
                && self.only_refreshes(&obs, now);
            match self.fold(outcome, false) {
                Folded::Done(Some(client)) if hold.is_some() => {
                    clients.insert(client);
                }
                Folded::Done(_) => {}
                Folded::Pending => {
                    let waiting = Waiting {
                        obs,
                        hold: hold.as_ref().map(Hold::share),
                        hold_until_ms: now.saturating_add(self.config.pending_hold_ms),
                    };
                    let queue = if refresh {
                        &mut self.refreshing
                    } else {
                        &mut self.pending
                    };
                    // An evicted observation is lost and counted; its report no longer waits
                    // for it (failing the report would make one larger than the queue
                    // unacknowledgeable forever).
                    if let Some(evicted) = queue.push(waiting, now) {
                        if let Some(hold) = evicted.hold {
                            hold.written();
                        }
                        self.unresolved("queue_full");
                    }
                }
            }
        }
        if let Some(hold) = hold {
            // No status is handed over during one report, so the generation each client needs
            // now is the latest any of its observations needed.
            let needed: Vec<_> = clients
                .into_iter()
                .map(|client| {
                    let generation = self.needed_generation(&client);
                    (client, generation)
                })
                .collect();
            self.ledger.wait_for(needed, &hold);
            hold.written();
        }
        self.set_pending_gauge();
        self.update_gauges();
    }

    /// Whether `obs`, resolved as the cluster looks now, gives edges that are all in the map
    /// already, so that settling could only move their `lastSeen`.
    fn only_refreshes(&self, obs: &Observation, now: TimeMs) -> bool {
        match self.index.resolve_observation(obs, Attempt::last(now)) {
            ObservationOutcome::Edges { client, edges } => {
                !edges.is_empty() && edges.iter().all(|edge| !self.map.is_news(&client, edge))
            }
            _ => false,
        }
    }

    /// Observations waiting to be resolved.
    pub fn waiting(&self) -> usize {
        self.pending.len() + self.refreshing.len()
    }

    fn set_pending_gauge(&self) {
        let waiting = self.waiting();
        self.metrics
            .observations_pending
            .set(i64::try_from(waiting).unwrap_or(i64::MAX));
    }

    /// Retries waiting observations; those past their deadline get a last attempt.
    pub fn retry_pending(&mut self, now: TimeMs) {
        for refreshing in [false, true] {
            self.retry_queue(refreshing, now);
        }
        self.set_pending_gauge();
        self.update_gauges();
    }

    /// Gives every waiting observation its last attempt now, as its deadline would: the end of
    /// a graceful stop's drain. Whatever a replacement would make of them is worse: it started
    /// watching after they were seen, so it lacks the history they need.
    pub fn last_attempts(&mut self, now: TimeMs) {
        let mut waiting = self.pending.take_all();
        waiting.extend(self.refreshing.take_all());
        let (mut resolved, mut left) = (0, Vec::new());
        for waiting in waiting {
            if let ObservationOutcome::Pending(reason) = self
                .index
                .resolve_observation(&waiting.obs, Attempt::retryable(now))
            {
                left.push(format!("{reason:?}"));
            }
            let outcome = self
                .index
                .resolve_observation(&waiting.obs, Attempt::last(now));
            if let Folded::Done(client) = self.fold(outcome, true) {
                resolved += usize::from(client.is_some());
                self.acknowledge(client, waiting.hold);
            }
        }
        tracing::info!(resolved, waited_for = ?left, "last attempts at what still waited");
        self.set_pending_gauge();
        self.update_gauges();
    }

    /// [`Engine::retry_pending`] for one of the two queues.
    fn retry_queue(&mut self, refreshing: bool, now: TimeMs) {
        let index = &self.index;
        let queue = if refreshing {
            &mut self.refreshing
        } else {
            &mut self.pending
        };
        let drained = queue.drain(now, |waiting| {
            match index.resolve_observation(&waiting.obs, Attempt::retryable(now)) {
                ObservationOutcome::Pending(_) => {
                    if now >= waiting.hold_until_ms
                        && let Some(hold) = waiting.hold.take()
                    {
                        hold.written();
                    }
                    None
                }
                outcome => Some((outcome, waiting.hold.take())),
            }
        });
        for (outcome, hold) in drained.resolved {
            if let Folded::Done(client) = self.fold(outcome, true) {
                self.acknowledge(client, hold);
            }
        }
        for waiting in drained.expired {
            let outcome = self
                .index
                .resolve_observation(&waiting.obs, Attempt::last(now));
            if let Folded::Done(client) = self.fold(outcome, true) {
                self.acknowledge(client, waiting.hold);
            }
        }
    }

    /// Makes `hold` wait for the status of `client` that carries the edge just folded in (see
    /// [`Engine::needed_generation`]).
    fn acknowledge(&self, client: Option<Workload>, hold: Option<Hold>) {
        let Some(hold) = hold else {
            return;
        };
        if let Some(client) = client {
            let generation = self.needed_generation(&client);
            self.ledger.wait_for([(client, generation)], &hold);
        }
        hold.written();
    }

    /// The generation of `client`'s status that carries the edges folded in so far: the next
    /// one while the client has changes not handed over, else the last one handed over with
    /// news (later ones only move `lastSeen`).
    fn needed_generation(&self, client: &Workload) -> u64 {
        if self.dirty.contains(client) {
            self.generations.get(client).copied().unwrap_or(0) + 1
        } else {
            self.news_generations.get(client).copied().unwrap_or(0)
        }
    }

    /// Folds an outcome into the map, marking its client dirty when its entry changed
    /// materially.
    fn fold(&mut self, outcome: ObservationOutcome, final_attempt: bool) -> Folded {
        match outcome {
            ObservationOutcome::Edges { client, edges } => {
                tracing::debug!(client = %client.name, namespace = %client.namespace, edges = edges.len(), "observation resolved");
                let mut material = false;
                for edge in edges {
                    match self.map.record(&client, edge) {
                        None => {
                            self.metrics
                                .edges_refused
                                .get_or_create(&ReasonLabel::new("internet_target_limit"))
                                .inc();
                        }
                        Some(Change::Material) => material = true,
                        Some(_) => {}
                    }
                }
                if material && !self.dirty.contains(&client) {
                    self.dirty.insert(client.clone());
                }
                self.metrics.observations_resolved.inc();
                Folded::Done(Some(client))
            }
            ObservationOutcome::Skipped(reason) => {
                tracing::debug!(?reason, "observation adds nothing");
                let label = match reason {
                    SkipReason::ClientIsNode(_) => "client_is_node",
                    SkipReason::ClusterDnsUpstream => "cluster_dns_upstream",
                    SkipReason::Dropped(_) => "dropped",
                    SkipReason::ClientNamespaceExcluded(_) => "client_namespace_excluded",
                };
                self.metrics
                    .observations_skipped
                    .get_or_create(&ReasonLabel::new(label))
                    .inc();
                Folded::Done(None)
            }
            ObservationOutcome::Pending(reason) => {
                if final_attempt {
                    tracing::debug!(?reason, "observation still pending on its last attempt");
                    self.unresolved("still_pending");
                    return Folded::Done(None);
                }
                Folded::Pending
            }
        }
    }

    fn unresolved(&self, reason: &str) {
        self.metrics
            .observations_unresolved
            .get_or_create(&ReasonLabel::new(reason))
            .inc();
    }

    /// Statuses due for writing at `now` (the flush), marking them handed over.
    pub fn due_writes(&mut self, now: TimeMs) -> Vec<StatusWrite> {
        self.collect_writes(now, self.config.flush_interval_ms)
    }

    /// Every status with a change, whenever its last one was handed over: the flush on
    /// shutdown.
    pub fn final_writes(&mut self, now: TimeMs) -> Vec<StatusWrite> {
        self.collect_writes(now, 0)
    }

    /// Statuses with news whose client's last status was handed over at least a flush
    /// interval ago: handed over now (between flushes) rather than at the next flush.
    pub fn due_news(&mut self, now: TimeMs) -> Vec<StatusWrite> {
        let interval = self.config.flush_interval_ms;
        let ready: Vec<Workload> = self
            .dirty
            .iter()
            .filter(|client| {
                self.handed_at
                    .get(*client)
                    .is_none_or(|at_ms| now.saturating_sub(*at_ms) >= interval)
            })
            .cloned()
            .collect();
        let mut due = Vec::new();
        for client in ready {
            match self.map.get(&client) {
                Some(edges) => due.push(StatusWrite {
                    status: edges.to_status(),
                    client,
                    generation: 0,
                    urgent: true,
                }),
                None => {
                    self.dirty.remove(&client);
                }
            }
        }
        self.hand_over(&mut due, now);
        due
    }

    /// Statuses with a change: news once the client's last status is `min_age_ms` old, moved
    /// `lastSeen` times once it is [`EngineConfig::last_seen_refresh_ms`] old.
    fn collect_writes(&mut self, now: TimeMs, min_age_ms: u64) -> Vec<StatusWrite> {
        let mut due = Vec::new();
        for (client, edges, change) in self.map.clients() {
            let (write, urgent) = match self.handed_at.get(client) {
                None => (true, true),
                Some(at_ms) => {
                    let age = now.saturating_sub(*at_ms);
                    match change {
                        Change::Unchanged => (false, false),
                        Change::LastSeenOnly => (age >= self.config.last_seen_refresh_ms, false),
                        Change::Material => (age >= min_age_ms, true),
                    }
                }
            };
            if write {
                due.push(StatusWrite {
                    client: client.clone(),
                    status: edges.to_status(),
                    generation: 0,
                    urgent,
                });
            }
        }
        self.hand_over(&mut due, now);
        due
    }

    /// Gives each write its client's next generation and marks it handed over at `now`.
    fn hand_over(&mut self, due: &mut [StatusWrite], now: TimeMs) {
        if !due.is_empty() {
            let urgent = due.iter().filter(|write| write.urgent).count();
            tracing::debug!(
                urgent,
                routine = due.len() - urgent,
                "statuses handed to the writer"
            );
        }
        for write in due {
            if let Some(audit) = self.audits.get(&write.client) {
                write.status.conditions.push(audit.clone());
            }
            let generation = self.generations.entry(write.client.clone()).or_insert(0);
            *generation += 1;
            write.generation = *generation;
            if write.urgent {
                self.news_generations
                    .insert(write.client.clone(), write.generation);
            }
            self.dirty.remove(&write.client);
            self.map.mark_handed(&write.client);
            self.handed_at.insert(write.client.clone(), now);
        }
    }

    /// Forgets history older than the retention.
    pub fn gc(&mut self, now: TimeMs) {
        self.index.gc(now);
    }

    fn update_gauges(&self) {
        let (held, evicted) = self.index.dns_answers_held_and_evicted();
        self.metrics.dns_answers.set(held as i64);
        let counted = self.metrics.dns_answers_evicted.get();
        if evicted > counted {
            self.metrics.dns_answers_evicted.inc_by(evicted - counted);
        }
        let clients = self.map.client_count();
        let edges = self.map.target_count();
        self.metrics.clients.set(clients as i64);
        self.metrics.edges.set(edges as i64);
    }

    /// The ledger of written generations, for the writer.
    pub fn ledger(&self) -> Arc<Ledger> {
        Arc::clone(&self.ledger)
    }

    /// The flush interval.
    pub fn flush_interval_ms(&self) -> u64 {
        self.config.flush_interval_ms
    }
}

/// How often waiting observations are retried.
const RETRY_INTERVAL_MS: u64 = 1_000;
/// How often old history is collected.
const GC_INTERVAL_MS: u64 = 60_000;

/// How the engine is told to stop.
#[derive(Clone, Debug, Default)]
pub struct Stop {
    /// A graceful stop: ingest takes no new reports; the engine goes on applying watch events
    /// and resolving what waits until nothing does, or for [`EngineConfig::drain_ms`], gives
    /// what still waits its last attempt ([`Engine::last_attempts`]), then hands over a final
    /// flush. A rolling update or a deleted pod loses no observation that was still settling.
    pub drain: CancellationToken,
    /// Stop at once (leadership lost: another replica may be writing), after a final flush of
    /// what is already resolved.
    pub now: CancellationToken,
}

/// Runs the engine until `stop`, then hands over a final flush; returns the history for the
/// next operator ([`crate::resolve::handover`]).
pub async fn run(
    mut engine: Engine,
    mut cluster: mpsc::Receiver<Stamped>,
    mut reports: mpsc::Receiver<ReceivedReport>,
    writes: mpsc::UnboundedSender<Vec<StatusWrite>>,
    stop: Stop,
) -> Handover {
    let mut retry = tokio::time::interval(std::time::Duration::from_millis(RETRY_INTERVAL_MS));
    retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_flush = now_ms();
    let mut last_gc = now_ms();
    let mut drain_until: Option<TimeMs> = None;
    loop {
        tokio::select! {
            biased;
            () = stop.now.cancelled() => break,
            () = stop.drain.cancelled(), if drain_until.is_none() => {
                let waiting = engine.waiting();
                tracing::info!(waiting, "draining: resolving what waits before stopping");
                drain_until = Some(now_ms().saturating_add(engine.config.drain_ms));
            }
            Some(event) = cluster.recv() => engine.apply(event),
            Some(report) = reports.recv() => engine.ingest(report, now_ms()),
            _ = retry.tick() => {
                let now = now_ms();
                engine.retry_pending(now);
                let due = if now.saturating_sub(last_flush) >= engine.flush_interval_ms() {
                    last_flush = now;
                    engine.due_writes(now)
                } else {
                    engine.due_news(now)
                };
                if !due.is_empty() && writes.send(due).is_err() {
                    tracing::error!("the writer stopped; the engine stops too");
                    break;
                }
                if now.saturating_sub(last_gc) >= GC_INTERVAL_MS {
                    last_gc = now;
                    engine.gc(now);
                }
                if let Some(until) = drain_until {
                    let waiting = engine.waiting();
                    if waiting == 0 || now >= until {
                        if waiting > 0 {
                            engine.last_attempts(now);
                        }
                        tracing::info!(waiting, "drained");
                        break;
                    }
                }
            }
        }
    }
    let due = engine.final_writes(now_ms());
    if !due.is_empty() {
        let _ = writes.send(due);
    }
    engine.index.handover(now_ms())
}

#[cfg(test)]
mod tests;
