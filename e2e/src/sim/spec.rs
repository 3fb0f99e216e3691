//! What a pod's process does, in the scenario's terms: ports it listens on and calls it makes.
//! The scenario runner puts a [`TrafficSpec`] on the pod template (annotation
//! [`super::TRAFFIC_ANNOTATION`]); the simulated kubelet turns it into the arguments of
//! `trafficmap-node traffic` ([`super::traffic`]).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Transport protocol.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// TCP.
    #[default]
    TCP,
    /// UDP.
    UDP,
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::TCP => "TCP",
            Protocol::UDP => "UDP",
        })
    }
}

impl FromStr for Protocol {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_uppercase().as_str() {
            "TCP" => Ok(Protocol::TCP),
            "UDP" => Ok(Protocol::UDP),
            other => Err(format!("protocol {other:?}: expected TCP or UDP")),
        }
    }
}

/// How the caller finds the target's address.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Via {
    /// Resolve `<svc>.<ns>.svc.cluster.local` (or the external name) through cluster DNS.
    #[default]
    Dns,
    /// Connect to the Service's ClusterIP, no DNS.
    Clusterip,
    /// Connect to a pod IP of the target, no DNS.
    Podip,
}

/// When calls are made.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(try_from = "String", into = "String")]
pub enum Pattern {
    /// One call.
    Once,
    /// A new call every interval.
    Every(Duration),
    /// One connection held open (re-opened if it breaks).
    Persistent,
}

impl FromStr for Pattern {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        match s {
            "once" => Ok(Pattern::Once),
            "persistent" => Ok(Pattern::Persistent),
            _ => {
                let rest = s
                    .strip_prefix("every")
                    .map(|r| r.trim_start_matches(['=', ' ']))
                    .ok_or_else(|| {
                        format!("pattern {s:?}: expected once, every <duration> or persistent")
                    })?;
                let every = humantime::parse_duration(rest.trim())
                    .map_err(|e| format!("pattern {s:?}: {e}"))?;
                if every.is_zero() {
                    return Err(format!("pattern {s:?}: the interval must be positive"));
                }
                Ok(Pattern::Every(every))
            }
        }
    }
}

impl TryFrom<String> for Pattern {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl From<Pattern> for String {
    fn from(p: Pattern) -> String {
        p.to_string()
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Pattern::Once => f.write_str("once"),
            Pattern::Persistent => f.write_str("persistent"),
            Pattern::Every(d) => write!(f, "every {}", humantime::format_duration(*d)),
        }
    }
}

/// A port the pod listens on.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Listen {
    /// Container port.
    pub port: u16,
    /// Service port (defaults to `port`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_port: Option<u16>,
    /// Protocol.
    #[serde(default)]
    pub protocol: Protocol,
}

/// A call the pod makes.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Call {
    /// `name.namespace` (a Service / workload) or `external:<dns name>`.
    pub to: String,
    /// Service port (dns, clusterip) or pod port (podip).
    pub port: u16,
    /// Protocol.
    #[serde(default)]
    pub protocol: Protocol,
    /// How the address is found.
    #[serde(default)]
    pub via: Via,
    /// When.
    pub pattern: Pattern,
}

/// Where a call goes, parsed from [`Call::to`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CallTarget {
    /// A Service (and the workload behind it).
    InCluster {
        /// Service / workload name.
        name: String,
        /// Namespace.
        namespace: String,
    },
    /// A host outside the cluster.
    External {
        /// Its DNS name.
        dns_name: String,
    },
}

impl Call {
    /// The parsed target.
    pub fn target(&self) -> Result<CallTarget, String> {
        if let Some(name) = self.to.strip_prefix("external:") {
            if name.is_empty() {
                return Err(format!("call to {:?}: empty external name", self.to));
            }
            return Ok(CallTarget::External {
                dns_name: name.trim_end_matches('.').to_string(),
            });
        }
        match self.to.split_once('.') {
            Some((name, namespace)) if !name.is_empty() && !namespace.is_empty() => {
                Ok(CallTarget::InCluster {
                    name: name.to_string(),
                    namespace: namespace.to_string(),
                })
            }
            _ => Err(format!(
                "call to {:?}: expected name.namespace or external:<dns name>",
                self.to
            )),
        }
    }
}

/// Everything one pod's process does.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TrafficSpec {
    /// Listening ports.
    #[serde(default)]
    pub listen: Vec<Listen>,
    /// Calls.
    #[serde(default)]
    pub calls: Vec<Call>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_parse_as_the_scenario_format_writes_them() {
        assert_eq!("once".parse::<Pattern>(), Ok(Pattern::Once));
        assert_eq!("persistent".parse::<Pattern>(), Ok(Pattern::Persistent));
        assert_eq!(
            "every 1s".parse::<Pattern>(),
            Ok(Pattern::Every(Duration::from_secs(1)))
        );
        assert_eq!(
            "every=500ms".parse::<Pattern>(),
            Ok(Pattern::Every(Duration::from_millis(500)))
        );
        assert!("every 0s".parse::<Pattern>().is_err());
        assert!("sometimes".parse::<Pattern>().is_err());
    }

    #[test]
    fn call_targets_are_name_dot_namespace_or_external() {
        let call = |to: &str| Call {
            to: to.into(),
            port: 80,
            protocol: Protocol::TCP,
            via: Via::Dns,
            pattern: Pattern::Once,
        };
        assert_eq!(
            call("server.otterize-tutorial-mapper").target(),
            Ok(CallTarget::InCluster {
                name: "server".into(),
                namespace: "otterize-tutorial-mapper".into()
            })
        );
        assert_eq!(
            call("external:api.example.com").target(),
            Ok(CallTarget::External {
                dns_name: "api.example.com".into()
            })
        );
        assert!(call("server").target().is_err());
    }
}
