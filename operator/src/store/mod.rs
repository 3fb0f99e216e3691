//! What the operator reads from the API server: the watches that feed the engine ([`watch`]) and
//! the map stored in ObservedTraffic objects, read back on start ([`restore`]).

pub mod restore;
pub mod watch;
