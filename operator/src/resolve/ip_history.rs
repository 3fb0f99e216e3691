//! Which holder (a pod, a Service, a node) had each IP over time, so that an observation is
//! attributed to whoever held the address *when it was seen*, never to a later holder.
//!
//! # The attribution rule
//!
//! Each holding is an interval `[from, until)` in milliseconds. Clocks disagree a little (the
//! sniffer uses its node's clock, Kubernetes timestamps have one-second resolution, watch events
//! arrive late), so every boundary is treated as fuzzy by `guard_ms` on either side. An
//! observation seen over `[first, last]` (the sniffer's `firstSeenMs..lastSeenMs`) is attributed
//! to holder `K` only when
//!
//! 1. `K` is the only holder whose fuzzy interval touches `[first, last]`, and
//! 2. one of `K`'s intervals (fuzzily) covers all of `[first, last]`.
//!
//! So a range that straddles a handover is [`Lookup::Ambiguous`] (never split, never guessed),
//! and a moment close to a handover is ambiguous too. Intervals may overlap (a pod's deletion
//! event can arrive after its IP was reused): overlap is ambiguity, not an error.
//!
//! Before `complete_since` (when the operator started watching) earlier holders may be unknown,
//! so an observation from before then also needs `K`'s interval to have begun at least
//! `guard_ms` before `first`, unless a predecessor handed its history over
//! ([`IpHistory::inherit`]): it knew every release since its own start, up to its last word
//! (the checkpoint), so a holding that began a guard before the checkpoint, seen after the
//! predecessor's start, needs no more than any other. Releases it handed over have no holder
//! here; a range they touch is ambiguous.
//!
//! Closed intervals are kept for `retention_ms` after they end; lookups that start before the
//! retention horizon are [`Lookup::Expired`] instead of trusting a history that was cut.

use std::net::IpAddr;

use super::{SeenRange, TimeMs};
use crate::fast_hash::FastMap;

/// One holder's claim on an IP; no holder for a release a predecessor handed over.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Holding<K> {
    holder: Option<K>,
    from_ms: TimeMs,
    until_ms: Option<TimeMs>,
}

/// Who held an IP over an observation's time range.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Lookup<K> {
    /// Exactly this holder, for the whole range.
    Held(K),
    /// Nobody is known to have held it then.
    Free,
    /// More than one holder may have had it, or the range straddles a handover.
    Ambiguous,
    /// The range starts before the retained history.
    Expired,
}

/// Holdings of IPs over time, keyed by the holder type `K`.
#[derive(Clone, Debug)]
pub struct IpHistory<K> {
    by_ip: FastMap<IpAddr, Vec<Holding<K>>>,
    retention_ms: u64,
    guard_ms: u64,
    complete_since_ms: TimeMs,
    horizon_ms: TimeMs,
    inherited: Option<Inherited>,
}

/// What a predecessor's handover vouches for: every release from `complete_since_ms` to
/// `checkpoint_ms`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Inherited {
    complete_since_ms: TimeMs,
    checkpoint_ms: TimeMs,
}

/// One history as an operator hands it to its successor.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HistoryHandover {
    /// Every release since then is in `released`.
    pub complete_since_ms: TimeMs,
    /// The latest release of each IP: `[ip, at_ms]`, oldest first.
    pub released: Vec<(IpAddr, TimeMs)>,
}

impl<K: Clone + Eq> IpHistory<K> {
    /// An empty history that keeps released holdings for `retention_ms` and treats interval
    /// boundaries as uncertain by `guard_ms`; holders before `complete_since_ms` may be unknown.
    pub fn new(retention_ms: u64, guard_ms: u64, complete_since_ms: TimeMs) -> Self {
        IpHistory {
            by_ip: FastMap::default(),
            retention_ms,
            guard_ms,
            complete_since_ms,
            horizon_ms: 0,
            inherited: None,
        }
    }

    /// What a successor needs (see the module docs): the latest release of each IP, at most
    /// `limit` of them (the newest; then completeness starts after the newest one left out).
    pub fn handover(&self, limit: usize) -> HistoryHandover {
        let mut released: Vec<(IpAddr, TimeMs)> = self
            .by_ip
            .iter()
            .filter_map(|(ip, hs)| hs.iter().filter_map(|h| h.until_ms).max().map(|u| (*ip, u)))
            .collect();
        released.sort_by_key(|(ip, at)| (*at, *ip));
        let mut complete_since_ms = self.complete_since_ms.max(self.horizon_ms);
        if released.len() > limit {
            let dropped = released.len() - limit;
            complete_since_ms = complete_since_ms.max(released[dropped - 1].1.saturating_add(1));
            released.drain(..dropped);
        }
        HistoryHandover {
            complete_since_ms,
            released,
        }
    }

    /// Takes over a predecessor's `handover`, which it gave at `checkpoint_ms` (see the module
    /// docs). Ignored when it vouches for nothing before this history's own start.
    pub fn inherit(&mut self, handover: &HistoryHandover, checkpoint_ms: TimeMs) {
        let checkpoint_ms = checkpoint_ms.min(self.complete_since_ms);
        if handover.complete_since_ms >= checkpoint_ms {
            return;
        }
        for (ip, until) in &handover.released {
            self.by_ip.entry(*ip).or_default().push(Holding {
                holder: None,
                from_ms: 0,
                until_ms: Some(*until),
            });
        }
        self.inherited = Some(Inherited {
            complete_since_ms: handover.complete_since_ms,
            checkpoint_ms,
        });
    }

    /// Records that `holder` holds `ip` since `from_ms`; no-op while it already holds it.
    pub fn claim(&mut self, ip: IpAddr, holder: &K, from_ms: TimeMs) {
        let holdings = self.by_ip.entry(ip).or_default();
        let open = holdings
            .iter()
            .any(|h| h.holder.as_ref() == Some(holder) && h.until_ms.is_none());
        if !open {
            holdings.push(Holding {
                holder: Some(holder.clone()),
                from_ms,
                until_ms: None,
            });
        }
    }

    /// Records that `holder` let go of `ip` at `at_ms` (no-op when it did not hold it).
    pub fn release(&mut self, ip: IpAddr, holder: &K, at_ms: TimeMs) {
        if let Some(holdings) = self.by_ip.get_mut(&ip) {
            for h in holdings
                .iter_mut()
                .filter(|h| h.holder.as_ref() == Some(holder) && h.until_ms.is_none())
            {
                h.until_ms = Some(at_ms.max(h.from_ms));
            }
        }
    }

    /// IPs that `holder` holds now (open intervals).
    pub fn held_by(&self, holder: &K) -> Vec<IpAddr> {
        let mut ips: Vec<IpAddr> = self
            .by_ip
            .iter()
            .filter(|(_, hs)| {
                hs.iter()
                    .any(|h| h.holder.as_ref() == Some(holder) && h.until_ms.is_none())
            })
            .map(|(ip, _)| *ip)
            .collect();
        ips.sort();
        ips
    }

    /// Who held `ip` over `range`, by the rule in the module documentation.
    pub fn lookup(&self, ip: IpAddr, range: SeenRange) -> Lookup<K> {
        if range.first_ms < self.horizon_ms {
            return Lookup::Expired;
        }
        let Some(holdings) = self.by_ip.get(&ip) else {
            return Lookup::Free;
        };
        let g = self.guard_ms;
        // Run per observation: filtered twice rather than collected.
        let touching = || {
            holdings.iter().filter(|h| {
                h.from_ms.saturating_sub(g) <= range.last_ms
                    && h.until_ms
                        .is_none_or(|u| range.first_ms < u.saturating_add(g))
            })
        };
        let mut others = touching();
        let Some(first) = others.next() else {
            return Lookup::Free;
        };
        if others.any(|h| h.holder != first.holder) {
            return Lookup::Ambiguous;
        }
        let Some(holder) = &first.holder else {
            return Lookup::Ambiguous;
        };
        let covers = touching().any(|h| {
            let starts_in_time = if self.start_needs_margin(h, range) {
                h.from_ms.saturating_add(g) <= range.first_ms
            } else {
                h.from_ms.saturating_sub(g) <= range.first_ms
            };
            starts_in_time
                && h.until_ms
                    .is_none_or(|u| range.last_ms < u.saturating_add(g))
        });
        if covers {
            Lookup::Held(holder.clone())
        } else {
            Lookup::Ambiguous
        }
    }

    /// Whether `h` must have begun a guard before `range` for `range` to be its: when earlier
    /// holders may be unknown (see the module docs).
    fn start_needs_margin(&self, h: &Holding<K>, range: SeenRange) -> bool {
        if range.first_ms >= self.complete_since_ms {
            return false;
        }
        !self.inherited.is_some_and(|i| {
            range.first_ms >= i.complete_since_ms
                && h.from_ms.saturating_add(self.guard_ms) <= i.checkpoint_ms
        })
    }

    /// Forgets holdings that ended more than the retention before `now_ms`, and moves the
    /// horizon before which lookups are [`Lookup::Expired`].
    pub fn gc(&mut self, now_ms: TimeMs) {
        let horizon = now_ms.saturating_sub(self.retention_ms);
        self.horizon_ms = self.horizon_ms.max(horizon);
        self.by_ip.retain(|_, holdings| {
            holdings.retain(|h| {
                h.until_ms
                    .is_none_or(|u| u.saturating_add(self.retention_ms) > now_ms)
            });
            !holdings.is_empty()
        });
    }

    /// Number of IPs with retained holdings.
    pub fn len(&self) -> usize {
        self.by_ip.len()
    }

    /// Whether no IP has retained holdings.
    pub fn is_empty(&self) -> bool {
        self.by_ip.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GUARD: u64 = 2_000;
    const RETENTION: u64 = 600_000;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("valid IP")
    }

    fn history() -> IpHistory<&'static str> {
        IpHistory::new(RETENTION, GUARD, 0)
    }

    fn at(t: TimeMs) -> SeenRange {
        SeenRange::at(t)
    }

    #[test]
    fn reused_ip_is_attributed_to_the_pod_that_held_it_then() {
        let mut h = history();
        let x = ip("10.244.0.5");
        h.claim(x, &"old", 10_000);
        h.release(x, &"old", 50_000);
        h.claim(x, &"new", 60_000);
        assert_eq!(h.lookup(x, at(30_000)), Lookup::Held("old"));
        assert_eq!(h.lookup(x, at(70_000)), Lookup::Held("new"));
        assert_eq!(h.lookup(x, at(55_000)), Lookup::Free);
    }

    #[test]
    fn a_range_straddling_two_holders_is_ambiguous() {
        let mut h = history();
        let x = ip("10.244.0.5");
        h.claim(x, &"old", 10_000);
        h.release(x, &"old", 50_000);
        h.claim(x, &"new", 50_000);
        let straddling = SeenRange::new(40_000, 70_000).expect("ordered");
        assert_eq!(h.lookup(x, straddling), Lookup::Ambiguous);
    }

    #[test]
    fn a_range_held_throughout_by_the_last_holder_is_attributed_to_it() {
        let mut h = history();
        let x = ip("10.244.0.5");
        h.claim(x, &"old", 10_000);
        h.release(x, &"old", 50_000);
        h.claim(x, &"new", 50_000);
        let inside = SeenRange::new(60_000, 90_000).expect("ordered");
        assert_eq!(h.lookup(x, inside), Lookup::Held("new"));
    }

    #[test]
    fn moments_within_the_clock_guard_of_a_handover_are_ambiguous() {
        let mut h = history();
        let x = ip("10.244.0.5");
        h.claim(x, &"old", 10_000);
        h.release(x, &"old", 50_000);
        h.claim(x, &"new", 50_500);
        assert_eq!(h.lookup(x, at(49_000)), Lookup::Ambiguous);
        assert_eq!(h.lookup(x, at(51_500)), Lookup::Ambiguous);
        assert_eq!(h.lookup(x, at(53_000)), Lookup::Held("new"));
    }

    #[test]
    fn overlapping_claims_from_late_deletions_are_ambiguous() {
        let mut h = history();
        let x = ip("10.244.0.5");
        h.claim(x, &"old", 10_000);
        h.claim(x, &"new", 40_000);
        assert_eq!(h.lookup(x, at(45_000)), Lookup::Ambiguous);
        h.release(x, &"old", 48_000);
        assert_eq!(h.lookup(x, at(45_000)), Lookup::Ambiguous);
        assert_eq!(h.lookup(x, at(60_000)), Lookup::Held("new"));
    }

    #[test]
    fn observations_before_the_watch_started_need_a_holder_that_clearly_predates_them() {
        let mut h: IpHistory<&str> = IpHistory::new(RETENTION, GUARD, 100_000);
        let x = ip("10.244.0.5");
        h.claim(x, &"pod", 90_000);
        assert_eq!(h.lookup(x, at(89_000)), Lookup::Ambiguous);
        assert_eq!(h.lookup(x, at(91_000)), Lookup::Ambiguous);
        assert_eq!(h.lookup(x, at(93_000)), Lookup::Held("pod"));
        assert_eq!(h.lookup(x, at(101_000)), Lookup::Held("pod"));
    }

    #[test]
    fn released_holdings_are_kept_for_the_retention_then_forgotten() {
        let mut h = history();
        let x = ip("10.244.0.5");
        h.claim(x, &"old", 10_000);
        h.release(x, &"old", 50_000);
        h.gc(50_000 + RETENTION - 1);
        assert_eq!(h.lookup(x, at(49_999)), Lookup::Held("old"));
        h.gc(50_000 + RETENTION);
        assert!(h.is_empty());
        assert_eq!(h.lookup(x, at(40_000)), Lookup::Expired);
    }

    #[test]
    fn lookups_older_than_the_retention_are_expired_not_guessed() {
        let mut h = history();
        let x = ip("10.244.0.5");
        h.claim(x, &"current", 0);
        h.gc(1_000_000);
        assert_eq!(h.lookup(x, at(1_000_000 - RETENTION - 1)), Lookup::Expired);
        assert_eq!(h.lookup(x, at(999_000)), Lookup::Held("current"));
        assert_eq!(h.len(), 1);
    }

    #[test]
    fn claims_are_idempotent_and_releases_are_per_holder() {
        let mut h = history();
        let x = ip("fd00::5");
        h.claim(x, &"a", 10_000);
        h.claim(x, &"a", 20_000);
        h.release(x, &"b", 30_000);
        assert_eq!(h.held_by(&"a"), vec![x]);
        assert_eq!(h.lookup(x, at(15_000)), Lookup::Held("a"));
        h.release(x, &"a", 30_000);
        assert!(h.held_by(&"a").is_empty());
    }

    /// A replacement that started watching at 10 s; `n` holds 10.0.0.9 since `from`.
    fn replacement(from: TimeMs) -> IpHistory<&'static str> {
        let mut h = IpHistory::new(RETENTION, GUARD, 10_000);
        h.claim(ip("10.0.0.9"), &"n", from);
        h
    }

    #[test]
    fn before_its_start_a_replacement_needs_a_guard_after_the_claim_unless_handed_over() {
        let x = ip("10.0.0.9");
        let alone = replacement(5_000);
        assert_eq!(alone.lookup(x, at(6_000)), Lookup::Ambiguous);
        assert_eq!(alone.lookup(x, at(7_000)), Lookup::Held("n"));

        // The predecessor watched from 0 and saw no release of x up to its last word at 9 s.
        let mut handed = replacement(5_000);
        let nothing = HistoryHandover::default();
        handed.inherit(&nothing, 9_000);
        assert_eq!(handed.lookup(x, at(6_000)), Lookup::Held("n"));
        // Seen before the predecessor itself watched: still unknown.
        let mut late = replacement(5_000);
        late.inherit(
            &HistoryHandover {
                complete_since_ms: 5_500,
                released: vec![],
            },
            9_000,
        );
        assert_eq!(late.lookup(x, at(5_200)), Lookup::Ambiguous);
    }

    #[test]
    fn a_handed_over_release_makes_the_ranges_it_touches_ambiguous() {
        let x = ip("10.0.0.9");
        let mut h = replacement(5_000);
        let handover = HistoryHandover {
            complete_since_ms: 0,
            released: vec![(x, 4_500)],
        };
        h.inherit(&handover, 9_000);
        assert_eq!(h.lookup(x, at(6_000)), Lookup::Ambiguous);
        assert_eq!(h.lookup(x, at(7_000)), Lookup::Held("n"));
        assert_eq!(h.lookup(x, at(3_000)), Lookup::Ambiguous);
    }

    #[test]
    fn a_claim_after_the_predecessors_last_word_may_follow_a_release_it_never_saw() {
        let x = ip("10.0.0.9");
        let mut h = replacement(8_500);
        h.inherit(&HistoryHandover::default(), 9_000);
        assert_eq!(h.lookup(x, at(9_500)), Lookup::Ambiguous);
        assert_eq!(h.lookup(x, at(10_600)), Lookup::Held("n"));
    }

    #[test]
    fn a_handover_keeps_the_newest_releases_and_vouches_only_for_what_it_keeps() {
        let mut h = history();
        for (i, at_ms) in [(1, 1_000), (2, 2_000), (3, 3_000)] {
            let addr = ip(&format!("10.0.0.{i}"));
            h.claim(addr, &"p", 0);
            h.release(addr, &"p", at_ms);
        }
        h.claim(ip("10.0.0.4"), &"q", 500);
        let all = h.handover(10);
        assert_eq!(all.complete_since_ms, 0);
        assert_eq!(all.released.len(), 3, "open holdings are not releases");
        let cut = h.handover(2);
        assert_eq!(
            cut.released,
            [(ip("10.0.0.2"), 2_000), (ip("10.0.0.3"), 3_000)]
        );
        assert_eq!(cut.complete_since_ms, 1_001);
    }
}
