//! The only code that writes to the API server's ObservedTraffic and ClientIntents: status
//! snapshots from the engine become server-side applies under one field manager ([`writer`]),
//! with the draft ClientIntents decided per client ([`intents`]), in the order of the
//! [`queue`]; [`intents_sync`] releases drafts that others have written and publishes
//! `status.resolvedIPs` on every ClientIntents that names internet domains; [`audit`] works out
//! which observed calls the cluster's policies would block.

pub mod audit;
pub mod intents;
pub mod intents_sync;
pub mod queue;
pub mod writer;

pub use audit::Audit;
pub use intents_sync::IntentsSync;
pub use writer::{Writer, WriterConfig};
