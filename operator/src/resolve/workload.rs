//! [`Workload`]: a workload name shared rather than copied, with its hash computed once.
//!
//! Every observation names its client and usually a target workload, and the engine looks the
//! client up in the traffic map, its generations and the ledger. With [`WorkloadRef`]'s three
//! strings each step cloned them and each lookup hashed and compared them, reading three heap
//! strings per step from a cold cache. The index hands out one shared allocation per workload
//! ([`Interner`]), so a clone is a reference count, a hash is a stored number and an equal
//! workload is usually the same pointer.

use std::fmt;
use std::hash::{BuildHasher, Hash, Hasher};
use std::ops::Deref;
use std::sync::{Arc, LazyLock};

use trafficmap_api::observed::WorkloadRef;

use crate::fast_hash::FastSet;

/// One hasher for every [`Workload`] of the process, seeded at random once: equal workloads
/// must get equal stored hashes.
static HASHER: LazyLock<foldhash::fast::FixedState> = LazyLock::new(|| {
    let seed = std::collections::hash_map::RandomState::new().hash_one(0x7472_6166_6669_636d_u64);
    foldhash::fast::FixedState::with_seed(seed)
});

/// A shared [`WorkloadRef`]. Equality, order and the shown form are the workload's; the hash
/// is stored, so maps keyed by it never read the names.
#[derive(Clone)]
pub struct Workload(Arc<Shared>);

struct Shared {
    hash: u64,
    name: WorkloadRef,
}

impl Workload {
    /// A workload of its own (not shared with equal ones; see [`Interner`]).
    pub fn new(name: WorkloadRef) -> Self {
        let hash = HASHER.hash_one(&name);
        Workload(Arc::new(Shared { hash, name }))
    }

    /// The workload's name.
    pub fn name(&self) -> &WorkloadRef {
        &self.0.name
    }
}

impl Deref for Workload {
    type Target = WorkloadRef;

    fn deref(&self) -> &WorkloadRef {
        &self.0.name
    }
}

impl From<WorkloadRef> for Workload {
    fn from(name: WorkloadRef) -> Self {
        Workload::new(name)
    }
}

impl From<&Workload> for WorkloadRef {
    fn from(workload: &Workload) -> Self {
        workload.0.name.clone()
    }
}

impl PartialEq for Workload {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
            || (self.0.hash == other.0.hash && self.0.name == other.0.name)
    }
}

impl Eq for Workload {}

impl PartialEq<WorkloadRef> for Workload {
    fn eq(&self, other: &WorkloadRef) -> bool {
        self.0.name == *other
    }
}

impl Hash for Workload {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.0.hash);
    }
}

impl PartialOrd for Workload {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Workload {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        if Arc::ptr_eq(&self.0, &other.0) {
            return std::cmp::Ordering::Equal;
        }
        self.0.name.cmp(&other.0.name)
    }
}

impl fmt::Debug for Workload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.name.fmt(f)
    }
}

/// Hands out one shared [`Workload`] per distinct name, so that equal workloads compare by
/// pointer.
#[derive(Clone, Debug, Default)]
pub struct Interner {
    known: FastSet<Workload>,
}

impl Interner {
    /// The shared workload named `name`.
    pub fn intern(&mut self, name: WorkloadRef) -> Workload {
        let candidate = Workload::new(name);
        match self.known.get(&candidate) {
            Some(shared) => shared.clone(),
            None => {
                self.known.insert(candidate.clone());
                candidate
            }
        }
    }

    /// Forgets the workloads no one else holds any more.
    pub fn forget_unused(&mut self) {
        self.known
            .retain(|workload| Arc::strong_count(&workload.0) > 1);
    }

    /// Number of workloads held.
    pub fn len(&self) -> usize {
        self.known.len()
    }

    /// Whether no workload is held.
    pub fn is_empty(&self) -> bool {
        self.known.is_empty()
    }
}

/// A pod UID held inline, as the key of the index's memo of pods' workloads: finding it reads
/// no heap string. Kubernetes UIDs are 36-byte UUIDs; longer ones get no key (and no memo).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PodKey {
    len: u8,
    bytes: [u8; PodKey::MAX],
}

impl PodKey {
    /// Longest UID with a key.
    pub const MAX: usize = 39;

    /// The key of `uid`, if it fits.
    pub fn new(uid: &str) -> Option<Self> {
        let len = uid.len();
        if len > Self::MAX {
            return None;
        }
        let mut bytes = [0; Self::MAX];
        bytes[..len].copy_from_slice(uid.as_bytes());
        Some(PodKey {
            len: len as u8,
            bytes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(n: &str) -> WorkloadRef {
        WorkloadRef {
            name: n.into(),
            namespace: "shop".into(),
            kind: "Deployment".into(),
        }
    }

    #[test]
    fn equal_names_are_equal_workloads_shared_or_not() {
        let (a, b) = (Workload::new(name("cart")), Workload::new(name("cart")));
        assert!(!Arc::ptr_eq(&a.0, &b.0));
        assert_eq!(a, b);
        assert_eq!(HASHER.hash_one(&a), HASHER.hash_one(&b));
        assert_ne!(a, Workload::new(name("checkout")));
        assert!(a < Workload::new(name("checkout")));
        assert_eq!(a, name("cart"));
    }

    #[test]
    fn the_interner_shares_equal_names_and_forgets_unused_ones() {
        let mut interner = Interner::default();
        let a = interner.intern(name("cart"));
        let b = interner.intern(name("cart"));
        assert!(Arc::ptr_eq(&a.0, &b.0));
        let c = interner.intern(name("checkout"));
        assert!(!Arc::ptr_eq(&a.0, &c.0));
        drop(c);
        interner.forget_unused();
        assert_eq!(interner.len(), 1);
        drop((a, b));
        interner.forget_unused();
        assert!(interner.is_empty());
    }

    #[test]
    fn pod_keys_tell_uids_apart_and_long_ones_get_none() {
        let uid = "0b4cbd6e-3f2a-4c8e-9a55-0e5f7f0c1d2a";
        assert_eq!(PodKey::new(uid), PodKey::new(uid));
        assert_ne!(PodKey::new(uid), PodKey::new(&uid[..35]));
        assert_ne!(PodKey::new("a"), PodKey::new("a\0"));
        assert!(PodKey::new(&"a".repeat(PodKey::MAX)).is_some());
        assert_eq!(PodKey::new(&"a".repeat(PodKey::MAX + 1)), None);
    }

    #[test]
    fn a_map_finds_a_workload_by_an_equal_unshared_one() {
        let mut map: crate::fast_hash::FastMap<Workload, u32> = Default::default();
        map.insert(Workload::new(name("cart")), 1);
        assert_eq!(map.get(&Workload::new(name("cart"))), Some(&1));
        assert_eq!(map.get(&Workload::new(name("checkout"))), None);
    }
}
