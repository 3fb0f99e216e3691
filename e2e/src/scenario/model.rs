//! The scenario file format.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::Deserialize;

use crate::sim::spec::{Call, CallTarget, Listen, TrafficSpec};

/// A scenario file.
#[derive(Deserialize, Clone, Debug)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Free text.
    pub name: String,
    /// How long traffic runs before the map is read.
    #[serde(with = "humantime_serde_compat")]
    pub duration: Duration,
    /// Workloads.
    pub workloads: Vec<Workload>,
    /// Actions at offsets from the start.
    #[serde(default)]
    pub actions: Vec<Action>,
    /// client -> exact target set.
    #[serde(default)]
    pub expect: BTreeMap<String, BTreeSet<String>>,
}

/// Workload kinds.
#[derive(Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// apps/v1 Deployment (owns a ReplicaSet).
    Deployment,
    /// apps/v1 StatefulSet.
    StatefulSet,
    /// apps/v1 DaemonSet.
    DaemonSet,
    /// batch/v1 Job.
    Job,
    /// batch/v1 CronJob (with one Job created at once).
    CronJob,
    /// A bare Pod.
    Pod,
}

/// One workload.
#[derive(Deserialize, Clone, Debug)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Workload {
    /// Root owner name.
    pub name: String,
    /// Namespace.
    pub namespace: String,
    /// Kind.
    pub kind: Kind,
    /// Replicas (Deployment, StatefulSet; parallelism of Jobs).
    #[serde(default = "one")]
    pub replicas: i32,
    /// Pod annotations.
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    /// Run in the node's network namespace.
    #[serde(default)]
    pub host_network: bool,
    /// Listening ports.
    #[serde(default)]
    pub listen: Vec<Listen>,
    /// Create a Service named like the workload.
    #[serde(default)]
    pub service: bool,
    /// Make that Service headless.
    #[serde(default)]
    pub headless: bool,
    /// Calls.
    #[serde(default)]
    pub calls: Vec<Call>,
}

fn one() -> i32 {
    1
}

impl Workload {
    /// `name.namespace`.
    pub fn id(&self) -> String {
        format!("{}.{}", self.name, self.namespace)
    }

    /// What its pods' process does.
    pub fn traffic(&self) -> TrafficSpec {
        TrafficSpec {
            listen: self.listen.clone(),
            calls: self.calls.clone(),
        }
    }
}

/// An action at an offset.
#[derive(Deserialize, Clone, Debug)]
#[serde(deny_unknown_fields)]
pub struct Action {
    /// Offset from the start.
    #[serde(with = "humantime_serde_compat")]
    pub at: Duration,
    /// Delete the pods of `name.namespace`.
    #[serde(default)]
    pub restart: Option<String>,
    /// Scale `name.namespace` to `replicas`.
    #[serde(default)]
    pub scale: Option<String>,
    /// Replicas for `scale`.
    #[serde(default)]
    pub replicas: Option<i32>,
}

impl Scenario {
    /// Parses and checks a scenario.
    pub fn parse(text: &str) -> Result<Self, String> {
        let scenario: Scenario = serde_yaml_ng::from_str(text).map_err(|e| e.to_string())?;
        scenario.validate()?;
        Ok(scenario)
    }

    /// Namespaces of the workloads, sorted.
    pub fn namespaces(&self) -> BTreeSet<String> {
        self.workloads.iter().map(|w| w.namespace.clone()).collect()
    }

    /// The workload `name.namespace`.
    pub fn workload(&self, id: &str) -> Option<&Workload> {
        self.workloads.iter().find(|w| w.id() == id)
    }

    /// External host names the calls use.
    pub fn external_hosts(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .workloads
            .iter()
            .flat_map(|w| &w.calls)
            .filter_map(|c| match c.target() {
                Ok(CallTarget::External { dns_name }) => Some(dns_name),
                _ => None,
            })
            .collect();
        names.sort();
        names.dedup();
        names
    }

    fn validate(&self) -> Result<(), String> {
        let mut ids = BTreeSet::new();
        for w in &self.workloads {
            if !ids.insert(w.id()) {
                return Err(format!("workload {} is listed twice", w.id()));
            }
            if w.replicas < 0 {
                return Err(format!("workload {}: negative replicas", w.id()));
            }
            if w.headless && !w.service {
                return Err(format!("workload {}: headless needs service: true", w.id()));
            }
            for call in &w.calls {
                let target = call
                    .target()
                    .map_err(|e| format!("workload {}: {e}", w.id()))?;
                if let CallTarget::InCluster { name, namespace } = target {
                    let id = format!("{name}.{namespace}");
                    let Some(t) = self.workload(&id) else {
                        return Err(format!("workload {}: calls unknown workload {id}", w.id()));
                    };
                    if call.via != crate::sim::spec::Via::Podip && !t.service {
                        return Err(format!(
                            "workload {}: calls {id} via {:?}, which needs service: true",
                            w.id(),
                            call.via
                        ));
                    }
                }
            }
        }
        for action in &self.actions {
            let target = match (&action.restart, &action.scale) {
                (Some(t), None) => t,
                (None, Some(t)) => {
                    if action.replicas.is_none() {
                        return Err(format!("scale {t}: replicas missing"));
                    }
                    t
                }
                _ => return Err("an action is either restart or scale".into()),
            };
            if self.workload(target).is_none() {
                return Err(format!("action on unknown workload {target}"));
            }
        }
        Ok(())
    }
}

/// Durations written as `30s`, `1m30s`, `500ms`.
mod humantime_serde_compat {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(text.trim()).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shared(name: &str) -> String {
        let path = crate::cluster::repo_root().join("e2e/scenarios").join(name);
        std::fs::read_to_string(path).expect("scenario file")
    }

    #[test]
    fn every_scenario_in_the_repository_parses() {
        let dir = crate::cluster::repo_root().join("e2e/scenarios");
        let mut count = 0;
        for entry in std::fs::read_dir(dir).expect("e2e/scenarios").flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|x| x == "yaml") {
                let text = std::fs::read_to_string(&path).expect("readable");
                if let Err(e) = Scenario::parse(&text) {
                    panic!("{}: {e}", path.display());
                }
                count += 1;
            }
        }
        assert!(count >= 2);
    }

    #[test]
    fn the_shared_scenarios_parse() {
        let tutorial = Scenario::parse(&shared("tutorial.yaml")).expect("tutorial");
        assert_eq!(tutorial.duration, Duration::from_secs(20));
        assert_eq!(tutorial.workloads.len(), 5);
        assert_eq!(tutorial.expect.len(), 3);
        let ecom = Scenario::parse(&shared("ecom-demo.yaml")).expect("ecom");
        assert_eq!(ecom.expect["frontend.otterize-ecom-demo"].len(), 7);
    }

    #[test]
    fn calls_to_unknown_workloads_are_rejected() {
        let text = "name: x\nduration: 1s\nworkloads:\n  - {name: a, namespace: n, kind: Pod, calls: [{to: b.n, port: 1, pattern: once}]}\n";
        assert!(
            Scenario::parse(text)
                .expect_err("rejected")
                .contains("unknown workload b.n")
        );
    }
}
