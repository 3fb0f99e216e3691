//! Scenarios (`e2e/scenarios/FORMAT.md`): a YAML file of workloads, the calls they make
//! and the map trafficmap must produce. [`model`] parses it, [`deploy`] creates its objects,
//! [`compare`] scores what ObservedTraffic and the draft ClientIntents say, [`progress`] shows it
//! while traffic flows, and [`runner`] runs the whole thing on the simulated node (with the
//! operator and sniffer as host processes, [`host`]) or on the real node (installed by helm).

pub mod compare;
pub mod deploy;
pub mod host;
pub mod model;
pub mod progress;
pub mod runner;
