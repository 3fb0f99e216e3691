//! trafficmap's API: the `ObservedTraffic` custom resource, the Otterize `ClientIntents`
//! (`k8s.otterize.com/v2beta1`) types that trafficmap drafts, the versioned report that sniffers
//! send to the operator, and the one renderer from observed traffic to ClientIntents that both the
//! operator and `kubectl-trafficmap export` use.

pub mod coverage;
pub mod crdgen;
pub mod intents;
pub mod naming;
pub mod observed;
pub mod ownership;
pub mod render;
pub mod report;
pub mod resolved_ips;

pub use intents::{ClientIntents, ClientIntentsSpec};
pub use observed::{ObservedTraffic, ObservedTrafficSpec, ObservedTrafficStatus, WorkloadRef};
pub use render::render_client_intents;
pub use report::{Observation, Report};

/// Label on objects trafficmap created. On a ClientIntents it is a mark, not a claim: whether a
/// draft is still ours is decided by who wrote it ([`ownership`]).
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// Value of [`MANAGED_BY_LABEL`] on trafficmap's objects.
pub const MANAGED_BY_VALUE: &str = "trafficmap";
/// Server-side apply field manager used for every write trafficmap makes.
pub const FIELD_MANAGER: &str = "trafficmap";
