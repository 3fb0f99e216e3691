//! The writer's queue: the latest status snapshot of every client waiting to be written, handed
//! out urgent first (a new target, a new client), then oldest first, never for a client whose
//! previous write is still in flight, and not before a failed client's retry time. Pure: no
//! I/O, no clock of its own.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::Instant;

use trafficmap_api::observed::ObservedTrafficStatus;

use crate::resolve::Workload;

/// A snapshot waiting to be written.
#[derive(Clone, Debug)]
pub struct Queued {
    /// The status to write.
    pub status: ObservedTrafficStatus,
    /// Its generation (see [`crate::durable::Ledger`]).
    pub generation: u64,
    /// Carries something new (a target, a port, a name), not only moved `lastSeen` times.
    pub urgent: bool,
    /// When the oldest snapshot this one replaced was queued.
    pub since: Instant,
}

/// See the module docs.
#[derive(Debug, Default)]
pub struct WriteQueue {
    waiting: HashMap<Workload, Queued>,
    /// Order of urgent clients; a client may also be (stale) in `routine`.
    urgent: VecDeque<Workload>,
    /// Order of the others.
    routine: VecDeque<Workload>,
    /// Clients being written now.
    busy: HashSet<Workload>,
    /// Clients whose write failed, not to be handed out before then.
    delayed: HashMap<Workload, Instant>,
}

impl WriteQueue {
    /// Queues `snapshot` for `client`, replacing a waiting one (which keeps its place, and
    /// moves up when the new one is urgent).
    pub fn push(&mut self, client: Workload, snapshot: Queued) {
        match self.waiting.get_mut(&client) {
            Some(held) => {
                let upgrade = snapshot.urgent && !held.urgent;
                let since = held.since.min(snapshot.since);
                *held = Queued { since, ..snapshot };
                if upgrade {
                    self.urgent.push_back(client);
                }
            }
            None => {
                self.order(snapshot.urgent).push_back(client.clone());
                self.waiting.insert(client, snapshot);
            }
        }
    }

    /// The next client to write at `now` and its snapshot, marked busy until
    /// [`WriteQueue::done`] or [`WriteQueue::retry`].
    pub fn next(&mut self, now: Instant) -> Option<(Workload, Queued)> {
        self.release(now);
        for urgent in [true, false] {
            while let Some(client) = self.order(urgent).pop_front() {
                // Stale (already written, or queued in the other order too), busy or delayed:
                // such a client is put back in order when its write is done or its delay over.
                if self.busy.contains(&client) || self.delayed.contains_key(&client) {
                    continue;
                }
                let Some(snapshot) = self.waiting.remove(&client) else {
                    continue;
                };
                self.busy.insert(client.clone());
                return Some((client, snapshot));
            }
        }
        None
    }

    /// Ends the successful write of `client`.
    pub fn done(&mut self, client: &Workload) {
        self.busy.remove(client);
        self.requeue(client);
    }

    /// Ends the failed write of `client`: its snapshot is queued again (unless a newer one
    /// arrived meanwhile), at the front, and not handed out before `at`.
    pub fn retry(&mut self, client: &Workload, failed: Queued, at: Option<Instant>) {
        self.busy.remove(client);
        match self.waiting.get_mut(client) {
            Some(newer) => {
                newer.urgent |= failed.urgent;
                newer.since = newer.since.min(failed.since);
            }
            None => {
                self.waiting.insert(client.clone(), failed);
            }
        }
        match at {
            Some(at) => {
                self.delayed.insert(client.clone(), at);
            }
            None => self.requeue(client),
        }
    }

    /// The earliest time a delayed client may be written again.
    pub fn next_retry(&self) -> Option<Instant> {
        self.delayed.values().min().copied()
    }

    /// Puts the clients whose delay is over back at the front of their order.
    fn release(&mut self, now: Instant) {
        if self.delayed.is_empty() {
            return;
        }
        let due: Vec<Workload> = self
            .delayed
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(client, _)| client.clone())
            .collect();
        for client in due {
            self.delayed.remove(&client);
            self.requeue(&client);
        }
    }

    /// Puts a waiting `client` at the front of its order.
    fn requeue(&mut self, client: &Workload) {
        if let Some(waiting) = self.waiting.get(client) {
            let urgent = waiting.urgent;
            self.order(urgent).push_front(client.clone());
        }
    }

    /// Snapshots waiting (not counting those being written).
    pub fn len(&self) -> usize {
        self.waiting.len()
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }

    /// Clients being written now (the writer counts its own futures; tests check this).
    #[cfg(test)]
    pub fn in_flight(&self) -> usize {
        self.busy.len()
    }

    fn order(&mut self, urgent: bool) -> &mut VecDeque<Workload> {
        if urgent {
            &mut self.urgent
        } else {
            &mut self.routine
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use trafficmap_api::WorkloadRef;

    use super::*;

    fn client(name: &str) -> Workload {
        Workload::new(WorkloadRef {
            name: name.into(),
            namespace: "shop".into(),
            kind: "Deployment".into(),
        })
    }

    fn snapshot(generation: u64, urgent: bool, since: Instant) -> Queued {
        Queued {
            status: ObservedTrafficStatus::default(),
            generation,
            urgent,
            since,
        }
    }

    fn names(queue: &mut WriteQueue) -> Vec<(String, u64)> {
        let now = Instant::now();
        std::iter::from_fn(|| queue.next(now))
            .map(|(c, s)| (c.name.clone(), s.generation))
            .collect()
    }

    #[test]
    fn new_targets_go_before_moved_last_seen_times_then_oldest_first() {
        let t = Instant::now();
        let mut queue = WriteQueue::default();
        queue.push(client("a"), snapshot(1, false, t));
        queue.push(client("b"), snapshot(1, false, t));
        queue.push(client("c"), snapshot(1, true, t));
        queue.push(client("d"), snapshot(1, true, t));
        assert_eq!(
            names(&mut queue),
            [
                ("c".into(), 1),
                ("d".into(), 1),
                ("a".into(), 1),
                ("b".into(), 1)
            ]
        );
        assert!(queue.is_empty());
    }

    #[test]
    fn a_newer_snapshot_replaces_the_waiting_one_and_an_urgent_one_moves_it_up() {
        let t = Instant::now();
        let later = t + Duration::from_secs(3);
        let mut queue = WriteQueue::default();
        queue.push(client("a"), snapshot(1, false, t));
        queue.push(client("b"), snapshot(1, false, t));
        queue.push(client("b"), snapshot(2, true, later));
        assert_eq!(queue.len(), 2);
        let (first, taken) = queue.next(later).expect("b is urgent");
        assert_eq!((first.name.as_str(), taken.generation), ("b", 2));
        assert_eq!(taken.since, t, "keeps the oldest queue time");
        queue.done(&first);
        // b's stale routine place gives nothing.
        assert_eq!(names(&mut queue), [("a".into(), 1)]);
    }

    #[test]
    fn a_client_is_never_handed_out_while_its_write_is_in_flight() {
        let t = Instant::now();
        let mut queue = WriteQueue::default();
        queue.push(client("a"), snapshot(1, true, t));
        let (a, _) = queue.next(t).expect("a");
        queue.push(client("a"), snapshot(2, true, t));
        queue.push(client("b"), snapshot(1, false, t));
        assert_eq!(queue.in_flight(), 1);
        assert_eq!(names(&mut queue), [("b".into(), 1)]);
        queue.done(&a);
        assert_eq!(names(&mut queue), [("a".into(), 2)]);
    }

    #[test]
    fn a_failed_write_goes_back_to_the_front_unless_a_newer_snapshot_waits() {
        let t = Instant::now();
        let mut queue = WriteQueue::default();
        queue.push(client("a"), snapshot(1, false, t));
        queue.push(client("b"), snapshot(1, false, t));
        let (a, taken) = queue.next(t).expect("a");
        queue.retry(&a, taken, None);
        let again = queue.next(t).map(|(c, s)| (c.name.clone(), s.generation));
        assert_eq!(again, Some(("a".into(), 1)));
        queue.push(client("a"), snapshot(2, false, t));
        let (b, _) = queue.next(t).expect("b");
        queue.done(&b);
        queue.retry(&a, snapshot(1, true, t), None);
        let (again, newer) = queue.next(t).expect("a again");
        assert_eq!((again.name.as_str(), newer.generation), ("a", 2));
        assert!(
            newer.urgent,
            "the failed snapshot's news are still unwritten"
        );
        assert!(queue.next(t).is_none());
    }

    #[test]
    fn a_delayed_retry_waits_for_its_time_and_lets_others_pass() {
        let t = Instant::now();
        let at = t + Duration::from_secs(2);
        let mut queue = WriteQueue::default();
        queue.push(client("a"), snapshot(1, true, t));
        queue.push(client("b"), snapshot(1, false, t));
        let (a, taken) = queue.next(t).expect("a");
        queue.retry(&a, taken, Some(at));
        assert_eq!(queue.next_retry(), Some(at));
        assert_eq!(queue.len(), 2);
        let passed = queue.next(t).map(|(c, _)| c.name.clone());
        assert_eq!(passed, Some("b".into()));
        queue.push(client("a"), snapshot(2, true, t));
        assert!(
            queue.next(t).is_none(),
            "a is delayed, even with a newer snapshot"
        );
        let due = queue.next(at).map(|(c, s)| (c.name.clone(), s.generation));
        assert_eq!(due, Some(("a".into(), 2)));
        assert_eq!(queue.next_retry(), None);
    }
}
