//! Keeps every ClientIntents in the cluster in step with the map, whoever owns it:
//! - a draft somebody else has written (a reviewed copy applied over it) loses our owner
//!   reference and label at once, so that `reset` or a deleted ObservedTraffic can never take
//!   it with them, and the writer re-decides the client, recording the calls it does not cover;
//! - a ClientIntents that names internet domains gets `status.resolvedIPs` from the DNS
//!   answers its client was seen to get ([`trafficmap_api::resolved_ips`]), under a field
//!   manager of its own, conditional on the object read.
//!
//! Fed by watches of ClientIntents and ObservedTraffic; changes are gathered and handled every
//! [`SYNC_INTERVAL`]. Nothing here writes a spec.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt};
use kube::api::{Patch, PatchParams};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use serde_json::json;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use trafficmap_api::ownership::{Ownership, RESOLVED_IPS_MANAGER, ownership, release_patch};
use trafficmap_api::resolved_ips::{self, Answers};
use trafficmap_api::{ClientIntents, FIELD_MANAGER, ObservedTraffic};

use crate::metrics::Metrics;

/// How often gathered changes are handled.
const SYNC_INTERVAL: Duration = Duration::from_millis(500);
/// First and longest wait before a ClientIntents whose sync failed is tried again.
const RETRY_MIN: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(300);

/// A client workload as a ClientIntents names it: namespace and workload name.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ClientKey {
    /// Namespace of the workload (and of its ClientIntents).
    pub namespace: String,
    /// Workload name.
    pub name: String,
}

/// The task; see the module docs.
pub struct IntentsSync {
    client: Client,
    metrics: Arc<Metrics>,
    /// Clients whose ClientIntents changed hands or content: the writer re-decides them.
    redecide: mpsc::UnboundedSender<ClientKey>,
}

impl IntentsSync {
    /// A task that tells the writer through `redecide` which clients to decide again.
    pub fn new(
        client: Client,
        metrics: Arc<Metrics>,
        redecide: mpsc::UnboundedSender<ClientKey>,
    ) -> Self {
        IntentsSync {
            client,
            metrics,
            redecide,
        }
    }

    /// Runs until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        let (intents, intents_writer) = reflector::store::<ClientIntents>();
        let (observed, observed_writer) = reflector::store::<ObservedTraffic>();
        let intents_events = watched(
            Api::<ClientIntents>::all(self.client.clone()),
            intents_writer,
        );
        let observed_events = watched(
            Api::<ObservedTraffic>::all(self.client.clone()),
            observed_writer,
        );
        tokio::pin!(intents_events, observed_events);
        let mut state = SyncState::default();
        let mut tick = tokio::time::interval(SYNC_INTERVAL);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                Some(ci) = intents_events.next() => {
                    state.dirty_intents.insert(ObjectRef::from(&ci));
                }
                Some(ot) = observed_events.next() => {
                    let client = &ot.spec.client;
                    state.dirty_clients.insert(ClientKey {
                        namespace: client.namespace.clone(),
                        name: client.name.clone(),
                    });
                }
                _ = tick.tick() => self.sync(&mut state, &intents, &observed).await,
            }
        }
    }

    /// Handles every ClientIntents that changed, or whose client's answers did.
    async fn sync(
        &self,
        state: &mut SyncState,
        intents: &Store<ClientIntents>,
        observed: &Store<ObservedTraffic>,
    ) {
        let now = Instant::now();
        for (key, (_, at)) in &state.retries {
            if *at <= now {
                state.dirty_intents.insert(key.clone());
            }
        }
        if state.dirty_intents.is_empty() && state.dirty_clients.is_empty() {
            return;
        }
        let dirty_intents = std::mem::take(&mut state.dirty_intents);
        let dirty_clients = std::mem::take(&mut state.dirty_clients);
        let due: Vec<Arc<ClientIntents>> = intents
            .state()
            .into_iter()
            .filter(|ci| {
                dirty_intents.contains(&ObjectRef::from(ci.as_ref()))
                    || dirty_clients.contains(&client_of(ci))
            })
            .collect();
        let gone: Vec<_> = dirty_intents
            .iter()
            .filter(|r| intents.get(r).is_none())
            .cloned()
            .collect();
        for r in gone {
            state.generations.remove(&r);
            state.retries.remove(&r);
        }
        for ci in due {
            let key = ObjectRef::from(ci.as_ref());
            match self.sync_one(state, &ci, observed).await {
                Ok(()) => {
                    state.retries.remove(&key);
                }
                Err(err) => {
                    let failures = state.retries.get(&key).map_or(0, |(n, _)| *n) + 1;
                    let delay = (RETRY_MIN * 2u32.saturating_pow(failures - 1)).min(RETRY_MAX);
                    tracing::warn!(namespace = %ci.namespace().unwrap_or_default(), name = %ci.name_any(), %err, retry_in = ?delay, "ClientIntents not synced");
                    state
                        .retries
                        .insert(key, (failures, Instant::now() + delay));
                }
            }
        }
    }

    async fn sync_one(
        &self,
        state: &mut SyncState,
        ci: &ClientIntents,
        observed: &Store<ObservedTraffic>,
    ) -> Result<(), kube::Error> {
        let key = ObjectRef::from(ci);
        let client = client_of(ci);
        if let Ownership::User { writers } = ownership(ci) {
            self.release(ci, &writers).await?;
            let generation = ci.metadata.generation.unwrap_or_default();
            if state.generations.insert(key, generation) != Some(generation) {
                let _ = self.redecide.send(client.clone());
            }
        }
        self.publish_resolved_ips(ci, &client, observed).await
    }

    /// Drops our owner reference and label from a ClientIntents that is no longer ours.
    async fn release(&self, ci: &ClientIntents, writers: &[String]) -> Result<(), kube::Error> {
        let Some(patch) = release_patch(ci) else {
            return Ok(());
        };
        let namespace = ci.namespace().unwrap_or_default();
        let api = Api::<ClientIntents>::namespaced(self.client.clone(), &namespace);
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..PatchParams::default()
        };
        let done = api
            .patch(&ci.name_any(), &params, &Patch::Merge(&patch))
            .await;
        self.metrics
            .api_write("clientintents_release", done.is_ok());
        done?;
        tracing::info!(%namespace, name = %ci.name_any(), writers = %writers.join(","), "ClientIntents written by others is theirs now: dropped trafficmap's owner reference and label");
        Ok(())
    }

    /// Adds the IPs the client's DNS answers gave to `status.resolvedIPs`, when any are new.
    async fn publish_resolved_ips(
        &self,
        ci: &ClientIntents,
        client: &ClientKey,
        observed: &Store<ObservedTraffic>,
    ) -> Result<(), kube::Error> {
        if resolved_ips::domains(ci).is_empty() {
            return Ok(());
        }
        let answers = answers_of(observed, client, ci.spec.workload.kind.as_deref());
        let existing = ci
            .status
            .as_ref()
            .and_then(|s| s.resolved_ips.clone())
            .unwrap_or_default();
        let Some(merged) = resolved_ips::merge(&existing, ci, &answers) else {
            return Ok(());
        };
        let namespace = ci.namespace().unwrap_or_default();
        let api = Api::<ClientIntents>::namespaced(self.client.clone(), &namespace);
        // Conditional on the object read: another writer's entries are never lost.
        let status = json!({
            "apiVersion": "k8s.otterize.com/v2beta1",
            "kind": "ClientIntents",
            "metadata": {"name": ci.name_any(), "namespace": namespace, "resourceVersion": ci.resource_version()},
            "status": {"resolvedIPs": merged},
        });
        let done = api
            .patch_status(
                &ci.name_any(),
                &PatchParams::apply(RESOLVED_IPS_MANAGER).force(),
                &Patch::Apply(&status),
            )
            .await;
        self.metrics
            .api_write("clientintents_resolved_ips", done.is_ok());
        done?;
        tracing::debug!(%namespace, name = %ci.name_any(), "published resolvedIPs");
        Ok(())
    }
}

/// What the loop remembers between syncs.
#[derive(Default)]
struct SyncState {
    dirty_intents: HashSet<ObjectRef<ClientIntents>>,
    dirty_clients: HashSet<ClientKey>,
    /// Generation of each user-owned ClientIntents last handed to the writer.
    generations: HashMap<ObjectRef<ClientIntents>, i64>,
    /// ClientIntents whose sync failed: failures in a row, and when to try again.
    retries: HashMap<ObjectRef<ClientIntents>, (u32, Instant)>,
}

/// The client a ClientIntents is about.
fn client_of(ci: &ClientIntents) -> ClientKey {
    ClientKey {
        namespace: ci.namespace().unwrap_or_default(),
        name: ci.spec.workload.name.clone(),
    }
}

/// The DNS answers of every ObservedTraffic of `client` (of `kind`, when the ClientIntents says).
fn answers_of(
    observed: &Store<ObservedTraffic>,
    client: &ClientKey,
    kind: Option<&str>,
) -> Answers {
    let mut answers = Answers::new();
    for ot in observed.state() {
        let c = &ot.spec.client;
        let same_kind = kind.is_none_or(|k| k.eq_ignore_ascii_case(&c.kind));
        if c.namespace == client.namespace && c.name == client.name && same_kind {
            for (name, ips) in resolved_ips::answers(&ot) {
                answers.entry(name).or_default().extend(ips);
            }
        }
    }
    answers
}

/// Objects of `api` as they change, kept in `writer`'s store. A missing CRD or an API error
/// is retried with backoff (logged at debug: the writer already says when the CRD is absent).
fn watched<K>(api: Api<K>, writer: reflector::store::Writer<K>) -> impl Stream<Item = K>
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    watcher(api, watcher::Config::default())
        .default_backoff()
        .reflect(writer)
        .filter_map(|event| async move {
            match event {
                Ok(
                    watcher::Event::Apply(object)
                    | watcher::Event::InitApply(object)
                    | watcher::Event::Delete(object),
                ) => Some(object),
                Ok(_) => None,
                Err(err) => {
                    tracing::debug!(%err, "watch error; retrying");
                    None
                }
            }
        })
}
