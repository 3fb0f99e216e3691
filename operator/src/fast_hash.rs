//! Hash maps for the per-observation path. Their keys are names, UIDs and IPs of cluster
//! objects, which the API server vouches for; foldhash (randomly seeded per process) hashes
//! them several times faster than the standard library's SipHash, which is built to withstand
//! keys chosen by an attacker. Maps keyed by what reports alone say keep SipHash.

/// A `HashMap` hashed with foldhash.
pub type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
/// A `HashSet` hashed with foldhash.
pub type FastSet<K> = std::collections::HashSet<K, foldhash::fast::RandomState>;
