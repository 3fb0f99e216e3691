//! [`Shared`]: a value shared rather than copied, with its hash computed once.
//!
//! Every observation names its client and usually a target workload and a Service, and the
//! engine looks them up in the index, the traffic map, its generations and the ledger. Held as
//! strings, each step cloned them and each lookup hashed and compared them, reading heap strings
//! from a cold cache. The index hands out one shared allocation per name ([`Interner`]), so a
//! clone is a reference count, a hash is a stored number and an equal name is usually the same
//! pointer.

use std::fmt;
use std::hash::{BuildHasher, Hash, Hasher};
use std::ops::Deref;
use std::sync::{Arc, LazyLock};

use crate::fast_hash::FastSet;

/// One hasher for every [`Shared`] value of the process, seeded at random once: equal values
/// must get equal stored hashes.
static HASHER: LazyLock<foldhash::fast::FixedState> = LazyLock::new(|| {
    let seed = std::collections::hash_map::RandomState::new().hash_one(0x7472_6166_6669_636d_u64);
    foldhash::fast::FixedState::with_seed(seed)
});

/// A shared `T`. Equality, order and the shown form are the value's; the hash is stored, so
/// maps keyed by it never read the value.
pub struct Shared<T>(Arc<Inner<T>>);

struct Inner<T> {
    hash: u64,
    value: T,
}

impl<T: Hash> Shared<T> {
    /// A value of its own (not shared with equal ones; see [`Interner`]).
    pub fn share(value: T) -> Self {
        let hash = HASHER.hash_one(&value);
        Shared(Arc::new(Inner { hash, value }))
    }
}

impl<T> Shared<T> {
    /// The value.
    pub fn get(&self) -> &T {
        &self.0.value
    }
}

impl<T: Hash> From<T> for Shared<T> {
    fn from(value: T) -> Self {
        Shared::share(value)
    }
}

impl<T> Clone for Shared<T> {
    fn clone(&self) -> Self {
        Shared(Arc::clone(&self.0))
    }
}

impl<T> Deref for Shared<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0.value
    }
}

impl<T: Eq> PartialEq for Shared<T> {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
            || (self.0.hash == other.0.hash && self.0.value == other.0.value)
    }
}

impl<T: Eq> Eq for Shared<T> {}

impl<T: Eq> PartialEq<T> for Shared<T> {
    fn eq(&self, other: &T) -> bool {
        self.0.value == *other
    }
}

impl<T> Hash for Shared<T> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.0.hash);
    }
}

impl<T: Ord> PartialOrd for Shared<T> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl<T: Ord> Ord for Shared<T> {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        if Arc::ptr_eq(&self.0, &other.0) {
            return std::cmp::Ordering::Equal;
        }
        self.0.value.cmp(&other.0.value)
    }
}

impl<T: fmt::Debug> fmt::Debug for Shared<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.value.fmt(f)
    }
}

impl<T: fmt::Display> fmt::Display for Shared<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.value.fmt(f)
    }
}

/// Hands out one [`Shared`] per distinct value, so that equal values compare by pointer.
#[derive(Clone, Debug)]
pub struct Interner<T> {
    known: FastSet<Shared<T>>,
}

impl<T> Default for Interner<T> {
    fn default() -> Self {
        Interner {
            known: FastSet::default(),
        }
    }
}

impl<T: Hash + Eq> Interner<T> {
    /// The shared `value`.
    pub fn intern(&mut self, value: T) -> Shared<T> {
        let candidate = Shared::share(value);
        match self.known.get(&candidate) {
            Some(shared) => shared.clone(),
            None => {
                self.known.insert(candidate.clone());
                candidate
            }
        }
    }

    /// Forgets the values no one else holds any more.
    pub fn forget_unused(&mut self) {
        self.known.retain(|shared| Arc::strong_count(&shared.0) > 1);
    }

    /// Number of values held.
    pub fn len(&self) -> usize {
        self.known.len()
    }

    /// Whether no value is held.
    pub fn is_empty(&self) -> bool {
        self.known.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use trafficmap_api::observed::WorkloadRef;

    use super::*;

    type Workload = Shared<WorkloadRef>;

    fn name(n: &str) -> WorkloadRef {
        WorkloadRef {
            name: n.into(),
            namespace: "shop".into(),
            kind: "Deployment".into(),
        }
    }

    #[test]
    fn equal_names_are_equal_workloads_shared_or_not() {
        let (a, b) = (Workload::share(name("cart")), Workload::share(name("cart")));
        assert!(!Arc::ptr_eq(&a.0, &b.0));
        assert_eq!(a, b);
        assert_eq!(HASHER.hash_one(&a), HASHER.hash_one(&b));
        assert_ne!(a, Workload::share(name("checkout")));
        assert!(a < Workload::share(name("checkout")));
        assert_eq!(a, name("cart"));
    }

    #[test]
    fn the_interner_shares_equal_names_and_forgets_unused_ones() {
        let mut interner: Interner<WorkloadRef> = Interner::default();
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
    fn a_map_finds_a_workload_by_an_equal_unshared_one() {
        let mut map: crate::fast_hash::FastMap<Workload, u32> = Default::default();
        map.insert(Workload::share(name("cart")), 1);
        assert_eq!(map.get(&Workload::share(name("cart"))), Some(&1));
        assert_eq!(map.get(&Workload::share(name("checkout"))), None);
    }
}
