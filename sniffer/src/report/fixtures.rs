//! Observations for the report module's tests.

use trafficmap_api::observed::Protocol;
use trafficmap_api::report::{ClientId, ConnectionObservation, Observation};

/// A TCP connection from 10.0.0.5 to 10.1.0.1:`port`, seen from `first` to `last` ms.
pub fn conn_seen(port: u16, first: u64, last: u64) -> Observation {
    Observation::Connection(ConnectionObservation {
        client: ClientId {
            ip: "10.0.0.5".parse().expect("ip"),
            pod_uid: None,
        },
        server_ip: "10.1.0.1".parse().expect("ip"),
        server_port: port,
        protocol: Protocol::Tcp,
        first_seen_ms: first,
        last_seen_ms: last,
    })
}

/// [`conn_seen`] at 1 ms.
pub fn conn(port: u16) -> Observation {
    conn_seen(port, 1, 1)
}
