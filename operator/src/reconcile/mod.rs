//! The only code that writes to the API server's ObservedTraffic and ClientIntents: status
//! snapshots from the engine become server-side applies under one field manager ([`writer`]),
//! with the draft ClientIntents decided per client ([`intents`]), in the order of the
//! [`queue`].

pub mod intents;
pub mod queue;
pub mod writer;

pub use writer::{Writer, WriterConfig};
