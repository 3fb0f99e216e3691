//! A bounded queue of observations waiting for the watches to catch up.
//!
//! Each item gets a deadline when pushed (default 30 s later). [`PendingQueue::drain`] offers
//! every item to a resolver: resolved items leave with their result, unresolved ones stay until
//! their deadline and then leave as expired (for a last attempt or a drop counter). When full,
//! the oldest item (closest to giving up) is evicted to make room.

use std::collections::VecDeque;

use super::TimeMs;

/// How long an observation may wait for the watches.
pub const DEFAULT_PENDING_WAIT_MS: u64 = 30_000;
/// Default number of waiting observations.
pub const DEFAULT_PENDING_CAPACITY: usize = 10_000;

#[derive(Clone, Debug)]
struct Entry<T> {
    item: T,
    deadline_ms: TimeMs,
}

/// What a drain produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Drained<T, R> {
    /// Results of the items that resolved, in queue order.
    pub resolved: Vec<R>,
    /// Items whose deadline passed unresolved, in queue order.
    pub expired: Vec<T>,
}

/// Items waiting to be resolved, oldest first.
#[derive(Clone, Debug)]
pub struct PendingQueue<T> {
    entries: VecDeque<Entry<T>>,
    capacity: usize,
    wait_ms: u64,
    evicted: u64,
}

impl<T> PendingQueue<T> {
    /// An empty queue holding at most `capacity` items for up to `wait_ms` each.
    pub fn new(capacity: usize, wait_ms: u64) -> Self {
        PendingQueue {
            entries: VecDeque::new(),
            capacity,
            wait_ms,
            evicted: 0,
        }
    }

    /// Adds an item at `now_ms`; returns the oldest item if it had to make room.
    pub fn push(&mut self, item: T, now_ms: TimeMs) -> Option<T> {
        if self.capacity == 0 {
            self.evicted += 1;
            return Some(item);
        }
        let evicted = if self.entries.len() >= self.capacity {
            self.evicted += 1;
            self.entries.pop_front().map(|e| e.item)
        } else {
            None
        };
        self.entries.push_back(Entry {
            item,
            deadline_ms: now_ms.saturating_add(self.wait_ms),
        });
        evicted
    }

    /// Offers every item to `try_resolve` at `now_ms`: `Some` resolves it, `None` keeps it
    /// waiting until its deadline, after which it is returned as expired. `try_resolve` may
    /// update an item it keeps.
    pub fn drain<R>(
        &mut self,
        now_ms: TimeMs,
        mut try_resolve: impl FnMut(&mut T) -> Option<R>,
    ) -> Drained<T, R> {
        let mut drained = Drained {
            resolved: Vec::new(),
            expired: Vec::new(),
        };
        let mut kept = VecDeque::with_capacity(self.entries.len());
        for mut entry in self.entries.drain(..) {
            if let Some(result) = try_resolve(&mut entry.item) {
                drained.resolved.push(result);
            } else if now_ms >= entry.deadline_ms {
                drained.expired.push(entry.item);
            } else {
                kept.push_back(entry);
            }
        }
        self.entries = kept;
        drained
    }

    /// Every waiting item, oldest first, leaving the queue empty.
    pub fn take_all(&mut self) -> Vec<T> {
        self.entries.drain(..).map(|e| e.item).collect()
    }

    /// Number of waiting items.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Items evicted because the queue was full, since it was created.
    pub fn evicted_total(&self) -> u64 {
        self.evicted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolvable_items_leave_with_their_result_and_others_wait() {
        let mut q = PendingQueue::new(10, 30_000);
        q.push(1, 0);
        q.push(2, 0);
        q.push(3, 0);
        let out = q.drain(1_000, |n| (*n % 2 == 1).then_some(*n * 10));
        assert_eq!(out.resolved, vec![10, 30]);
        assert!(out.expired.is_empty());
        assert_eq!(q.len(), 1);
    }

    #[test]
    fn items_expire_at_their_deadline() {
        let mut q = PendingQueue::new(10, 30_000);
        q.push("early", 0);
        q.push("late", 10_000);
        let out = q.drain(29_999, |_| None::<()>);
        assert!(out.expired.is_empty());
        let out = q.drain(30_000, |_| None::<()>);
        assert_eq!(out.expired, vec!["early"]);
        assert_eq!(q.len(), 1);
    }

    #[test]
    fn a_full_queue_evicts_the_oldest_item() {
        let mut q = PendingQueue::new(2, 30_000);
        assert_eq!(q.push('a', 0), None);
        assert_eq!(q.push('b', 1), None);
        assert_eq!(q.push('c', 2), Some('a'));
        assert_eq!(q.evicted_total(), 1);
        let out = q.drain(3, |c| Some(*c));
        assert_eq!(out.resolved, vec!['b', 'c']);
        assert!(q.is_empty());
    }
}
