//! Watches of what resolution needs — Pods, Services, EndpointSlices, Nodes, owner metadata
//! (metadata-only) and ObservedTraffic deletions — folded into slim [`ClusterEvent`]s stamped with
//! their arrival time. Full objects are never cached: each is converted as it arrives.
//!
//! After a re-list (the watch expired or the API server restarted) objects that are gone get a
//! delete event, since the watch itself never reports them.

use std::collections::{HashMap, HashSet};
use std::fmt::Debug;

use futures::{Stream, StreamExt};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::core::PartialObjectMeta;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event, watcher};
use kube::{Api, Client, Resource};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use trafficmap_api::ObservedTraffic;

use crate::engine::{ClusterEvent, Stamped};
use crate::now_ms;
use crate::resolve::{EndpointSliceInfo, NodeInfo, OwnerMeta, PodInfo, ServiceInfo};

/// How one kind of object becomes events: an apply event (or `None` to ignore the object; the
/// flag says the object is new since the initial list, i.e. created while watched), a key, and
/// the event that says it is gone.
struct Mapping<K> {
    kind: &'static str,
    apply: fn(&K, bool) -> Option<ClusterEvent>,
    key: fn(&K) -> Option<String>,
    delete: fn(&K) -> Option<ClusterEvent>,
}

/// Starts every watch; each runs until `shutdown`. Returns when all have ended.
pub async fn run_all(client: Client, tx: mpsc::Sender<Stamped>, shutdown: CancellationToken) {
    let cfg = watcher::Config::default;
    let pods = drive(
        watcher(Api::<Pod>::all(client.clone()), cfg()),
        Mapping {
            kind: "Pod",
            apply: |p, _| convert(PodInfo::try_from(p), "Pod").map(ClusterEvent::PodApplied),
            key: |p| p.metadata.uid.clone(),
            delete: |p| p.metadata.uid.clone().map(ClusterEvent::PodDeleted),
        },
        tx.clone(),
        shutdown.clone(),
    );
    let services = drive(
        watcher(Api::<Service>::all(client.clone()), cfg()),
        Mapping {
            kind: "Service",
            apply: |s, created_while_watched| {
                convert(ServiceInfo::try_from(s), "Service").map(|info| {
                    ClusterEvent::ServiceApplied(ServiceInfo {
                        created_while_watched,
                        ..info
                    })
                })
            },
            key: namespaced_key,
            delete: |s| {
                Some(ClusterEvent::ServiceDeleted {
                    namespace: s.metadata.namespace.clone()?,
                    name: s.metadata.name.clone()?,
                })
            },
        },
        tx.clone(),
        shutdown.clone(),
    );
    let slices = drive(
        watcher(Api::<EndpointSlice>::all(client.clone()), cfg()),
        Mapping {
            kind: "EndpointSlice",
            apply: |s, _| {
                convert(EndpointSliceInfo::try_from(s), "EndpointSlice")
                    .map(ClusterEvent::SliceApplied)
            },
            key: namespaced_key,
            delete: |s| {
                Some(ClusterEvent::SliceDeleted {
                    namespace: s.metadata.namespace.clone()?,
                    name: s.metadata.name.clone()?,
                })
            },
        },
        tx.clone(),
        shutdown.clone(),
    );
    let nodes = drive(
        watcher(Api::<Node>::all(client.clone()), cfg()),
        Mapping {
            kind: "Node",
            apply: |n, _| convert(NodeInfo::try_from(n), "Node").map(ClusterEvent::NodeApplied),
            key: |n| n.metadata.name.clone(),
            delete: |n| n.metadata.name.clone().map(ClusterEvent::NodeDeleted),
        },
        tx.clone(),
        shutdown.clone(),
    );
    let observed = drive(
        watcher(Api::<ObservedTraffic>::all(client.clone()), cfg()),
        Mapping {
            kind: "ObservedTraffic",
            apply: |_, _| None,
            key: |o| o.metadata.name.clone(),
            delete: |o| Some(ClusterEvent::ObservedTrafficDeleted(o.spec.client.clone())),
        },
        tx.clone(),
        shutdown.clone(),
    );
    futures::join!(
        pods,
        services,
        slices,
        nodes,
        observed,
        owners::<ReplicaSet>(&client, &tx, &shutdown),
        owners::<Deployment>(&client, &tx, &shutdown),
        owners::<StatefulSet>(&client, &tx, &shutdown),
        owners::<DaemonSet>(&client, &tx, &shutdown),
        owners::<Job>(&client, &tx, &shutdown),
        owners::<CronJob>(&client, &tx, &shutdown),
    );
}

/// A metadata-only watch of one owner kind.
async fn owners<K>(client: &Client, tx: &mpsc::Sender<Stamped>, shutdown: &CancellationToken)
where
    K: Resource<DynamicType = ()> + Clone + Debug + serde::de::DeserializeOwned + Send + 'static,
{
    drive(
        watcher(
            Api::<PartialObjectMeta<K>>::all(client.clone()),
            watcher::Config::default(),
        ),
        Mapping::<PartialObjectMeta<K>> {
            kind: "owner",
            apply: |o, _| {
                convert(OwnerMeta::from_resource(o), "owner").map(ClusterEvent::OwnerApplied)
            },
            key: |o| o.metadata.uid.clone(),
            delete: |o| o.metadata.uid.clone().map(ClusterEvent::OwnerDeleted),
        },
        tx.clone(),
        shutdown.clone(),
    )
    .await;
}

fn namespaced_key<K: Resource>(obj: &K) -> Option<String> {
    Some(format!(
        "{}/{}",
        obj.meta().namespace.as_deref()?,
        obj.meta().name.as_deref()?
    ))
}

fn convert<T, E: std::fmt::Display>(result: Result<T, E>, kind: &str) -> Option<T> {
    match result {
        Ok(value) => Some(value),
        Err(err) => {
            tracing::debug!(kind, %err, "object skipped");
            None
        }
    }
}

/// Folds one watch stream into events until `shutdown`; retries with backoff on errors.
async fn drive<K, S>(
    stream: S,
    mapping: Mapping<K>,
    tx: mpsc::Sender<Stamped>,
    shutdown: CancellationToken,
) where
    S: Stream<Item = Result<Event<K>, watcher::Error>> + Send,
    K: Send,
{
    let mut known: HashMap<String, ClusterEvent> = HashMap::new();
    let mut relisted: HashSet<String> = HashSet::new();
    let mut listed_once = false;
    let stream = stream.default_backoff();
    futures::pin_mut!(stream);
    let send = |event: ClusterEvent| {
        let tx = tx.clone();
        async move {
            tx.send(Stamped {
                event,
                at_ms: now_ms(),
            })
            .await
            .is_ok()
        }
    };
    loop {
        let next = tokio::select! {
            () = shutdown.cancelled() => return,
            next = stream.next() => next,
        };
        let event = match next {
            None => return,
            Some(Err(err)) => {
                tracing::warn!(kind = mapping.kind, %err, "watch error; retrying");
                continue;
            }
            Some(Ok(event)) => event,
        };
        let outgoing: Vec<ClusterEvent> = match event {
            Event::Init => {
                relisted.clear();
                Vec::new()
            }
            Event::InitApply(obj) => {
                if let Some(key) = (mapping.key)(&obj) {
                    relisted.insert(key.clone());
                    if let Some(delete) = (mapping.delete)(&obj) {
                        known.insert(key, delete);
                    }
                }
                (mapping.apply)(&obj, false).into_iter().collect()
            }
            Event::InitDone => {
                listed_once = true;
                let gone: Vec<String> = known
                    .keys()
                    .filter(|k| !relisted.contains(*k))
                    .cloned()
                    .collect();
                gone.into_iter().filter_map(|k| known.remove(&k)).collect()
            }
            Event::Apply(obj) => {
                let mut new = false;
                if let (Some(key), Some(delete)) = ((mapping.key)(&obj), (mapping.delete)(&obj)) {
                    new = known.insert(key, delete).is_none();
                }
                (mapping.apply)(&obj, new && listed_once)
                    .into_iter()
                    .collect()
            }
            Event::Delete(obj) => {
                if let Some(key) = (mapping.key)(&obj) {
                    known.remove(&key);
                }
                (mapping.delete)(&obj).into_iter().collect()
            }
        };
        for event in outgoing {
            if !send(event).await {
                return;
            }
        }
    }
}
