//! Lease-based leader election (`coordination.k8s.io/v1`): only the leader ingests and writes.
//! A replica that cannot renew its lease before it runs out stops leading, and the process
//! exits so it restarts as a follower; a leader shutting down releases the lease so another
//! replica takes over at once.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};
use tokio_util::sync::CancellationToken;

/// Settings of the election.
#[derive(Clone, Debug)]
pub struct LeaseConfig {
    /// Namespace of the Lease.
    pub namespace: String,
    /// Name of the Lease.
    pub name: String,
    /// This replica's identity (its pod name).
    pub identity: String,
    /// How long a lease is valid without renewal.
    pub duration: Duration,
    /// How often the leader renews, and followers try.
    pub retry: Duration,
}

/// What this replica may do with a lease it just read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeaseVerdict {
    /// Another replica holds it until the given time.
    HeldByOther(String),
    /// Ours to take (absent holder or expired) or to renew.
    Take,
}

/// Decides from a lease's holder and renew time (pure).
pub fn judge(spec: Option<&LeaseSpec>, identity: &str, now: Timestamp) -> LeaseVerdict {
    let Some(spec) = spec else {
        return LeaseVerdict::Take;
    };
    let holder = spec.holder_identity.as_deref().unwrap_or_default();
    if holder.is_empty() || holder == identity {
        return LeaseVerdict::Take;
    }
    let duration = i64::from(spec.lease_duration_seconds.unwrap_or(15));
    let renewed = spec
        .renew_time
        .as_ref()
        .or(spec.acquire_time.as_ref())
        .map(|t| t.0);
    match renewed {
        Some(renewed) if renewed + SignedDuration::from_secs(duration) > now => {
            LeaseVerdict::HeldByOther(holder.to_string())
        }
        _ => LeaseVerdict::Take,
    }
}

/// Tries once to take or renew the lease; `Ok(true)` when this replica holds it afterwards.
async fn try_hold(api: &Api<Lease>, config: &LeaseConfig) -> Result<bool, kube::Error> {
    let now = Timestamp::now();
    let existing = api.get_opt(&config.name).await?;
    let spec = existing.as_ref().and_then(|l| l.spec.as_ref());
    if let LeaseVerdict::HeldByOther(holder) = judge(spec, &config.identity, now) {
        tracing::debug!(%holder, "lease held by another replica");
        return Ok(false);
    }
    let ours = spec.and_then(|s| s.holder_identity.as_deref()) == Some(config.identity.as_str());
    let transitions = spec.and_then(|s| s.lease_transitions).unwrap_or(0);
    let lease = Lease {
        metadata: ObjectMeta {
            name: Some(config.name.clone()),
            namespace: Some(config.namespace.clone()),
            resource_version: existing
                .as_ref()
                .and_then(|l| l.metadata.resource_version.clone()),
            ..ObjectMeta::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(config.identity.clone()),
            lease_duration_seconds: Some(config.duration.as_secs() as i32),
            acquire_time: if ours {
                spec.and_then(|s| s.acquire_time.clone())
            } else {
                Some(MicroTime(now))
            },
            renew_time: Some(MicroTime(now)),
            lease_transitions: Some(if ours { transitions } else { transitions + 1 }),
            ..LeaseSpec::default()
        }),
    };
    let result = match existing {
        None => api.create(&PostParams::default(), &lease).await,
        Some(_) => {
            api.replace(&config.name, &PostParams::default(), &lease)
                .await
        }
    };
    match result {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
        Err(err) => Err(err),
    }
}

/// Waits until this replica leads (or `shutdown`): returns whether it leads.
pub async fn acquire(client: &Client, config: &LeaseConfig, shutdown: &CancellationToken) -> bool {
    let api = Api::<Lease>::namespaced(client.clone(), &config.namespace);
    loop {
        match try_hold(&api, config).await {
            Ok(true) => {
                tracing::info!(identity = %config.identity, "became leader");
                return true;
            }
            Ok(false) => {}
            Err(err) => tracing::warn!(%err, "leader election failed; retrying"),
        }
        tokio::select! {
            () = shutdown.cancelled() => return false,
            () = tokio::time::sleep(config.retry) => {}
        }
    }
}

/// Renews the lease until `shutdown` (then releases it) or until it cannot be renewed before it
/// expires (then cancels `lost`).
pub async fn hold(
    client: Client,
    config: LeaseConfig,
    shutdown: CancellationToken,
    lost: CancellationToken,
) {
    let api = Api::<Lease>::namespaced(client, &config.namespace);
    let mut last_renewed = tokio::time::Instant::now();
    loop {
        tokio::select! {
            () = shutdown.cancelled() => {
                release(&api, &config).await;
                return;
            }
            () = tokio::time::sleep(config.retry) => {}
        }
        match try_hold(&api, &config).await {
            Ok(true) => last_renewed = tokio::time::Instant::now(),
            Ok(false) => {
                tracing::error!("another replica took the lease");
                lost.cancel();
                return;
            }
            Err(err) => tracing::warn!(%err, "lease renewal failed"),
        }
        if last_renewed.elapsed() >= config.duration {
            tracing::error!("lease not renewed in time; stepping down");
            lost.cancel();
            return;
        }
    }
}

async fn release(api: &Api<Lease>, config: &LeaseConfig) {
    let Ok(Some(mut lease)) = api.get_opt(&config.name).await else {
        return;
    };
    let Some(spec) = lease.spec.as_mut() else {
        return;
    };
    if spec.holder_identity.as_deref() != Some(config.identity.as_str()) {
        return;
    }
    spec.holder_identity = None;
    spec.renew_time = None;
    if let Err(err) = api
        .replace(&config.name, &PostParams::default(), &lease)
        .await
    {
        tracing::warn!(%err, "could not release the lease");
    } else {
        tracing::info!("lease released");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(holder: &str, renewed: i64) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(holder.into()),
            lease_duration_seconds: Some(15),
            renew_time: Some(MicroTime(Timestamp::from_second(renewed).expect("valid"))),
            ..LeaseSpec::default()
        }
    }

    #[test]
    fn a_live_lease_of_another_replica_is_respected_and_an_expired_one_taken() {
        let now = Timestamp::from_second(1_000).expect("valid");
        assert_eq!(
            judge(Some(&spec("b", 990)), "a", now),
            LeaseVerdict::HeldByOther("b".into())
        );
        assert_eq!(judge(Some(&spec("b", 980)), "a", now), LeaseVerdict::Take);
        assert_eq!(judge(Some(&spec("a", 999)), "a", now), LeaseVerdict::Take);
        assert_eq!(judge(None, "a", now), LeaseVerdict::Take);
        let released = LeaseSpec::default();
        assert_eq!(judge(Some(&released), "a", now), LeaseVerdict::Take);
    }
}
