//! Builders for ObservedTraffic in unit tests.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use trafficmap_api::observed::{
    InternetTarget, ObservedTarget, ObservedTrafficStatus, PortProtocol, Protocol, SeenBy,
    WorkloadRef,
};
use trafficmap_api::{ObservedTraffic, observed};

fn at(secs: i64) -> Time {
    Time(Timestamp::from_second(secs).expect("valid timestamp"))
}

/// A Deployment `name` in `namespace` called on TCP `port`.
pub fn target(name: &str, namespace: &str, port: u16) -> ObservedTarget {
    ObservedTarget {
        name: name.into(),
        namespace: namespace.into(),
        kind: "Deployment".into(),
        service: Some(name.into()),
        ports: vec![PortProtocol {
            port,
            protocol: Protocol::Tcp,
        }],
        dns_names: vec![],
        seen_by: vec![SeenBy::Tcp],
        first_seen: at(1),
        last_seen: at(2),
    }
}

/// An internet target called on TCP `port`.
pub fn internet(name: Option<&str>, ips: &[&str], port: u16) -> InternetTarget {
    InternetTarget {
        dns_name: name.map(str::to_string),
        ips: ips.iter().map(|s| s.to_string()).collect(),
        ports: vec![PortProtocol {
            port,
            protocol: Protocol::Tcp,
        }],
        seen_by: vec![SeenBy::Dns, SeenBy::Tcp],
        first_seen: at(1),
        last_seen: at(2),
    }
}

/// The ObservedTraffic of Deployment `name` in `namespace`.
pub fn client(
    name: &str,
    namespace: &str,
    targets: Vec<ObservedTarget>,
    internet_targets: Vec<InternetTarget>,
) -> ObservedTraffic {
    let mut o = observed::ObservedTraffic::for_client(WorkloadRef {
        name: name.into(),
        namespace: namespace.into(),
        kind: "Deployment".into(),
    });
    o.status = Some(ObservedTrafficStatus {
        target_count: (targets.len() + internet_targets.len()) as u32,
        targets,
        internet_targets,
        ..ObservedTrafficStatus::default()
    });
    o
}
