//! Exponential backoff with full jitter: after the n-th failure in a row the next attempt waits
//! a uniformly random time in `[0, min(max, base * 2^(n-1))]`, so sniffers of many nodes that
//! lost the operator together do not come back in step.

use std::time::Duration;

/// First ceiling of the wait after a failure.
pub const BACKOFF_BASE: Duration = Duration::from_millis(200);
/// Largest ceiling of the wait.
pub const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// Failures in a row and the wait they call for.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    failures: u32,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::new(BACKOFF_BASE, BACKOFF_MAX)
    }
}

impl Backoff {
    /// A backoff starting at `base`, capped at `max`.
    pub fn new(base: Duration, max: Duration) -> Self {
        Backoff {
            base,
            max,
            failures: 0,
        }
    }

    /// Failures since the last success.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// Upper bound of the wait after the next failure.
    pub fn ceiling(&self) -> Duration {
        let factor = 1u32.checked_shl(self.failures.min(31)).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.max)
    }

    /// Records a failure and returns how long to wait: `unit_random` (in `[0, 1)`, from the
    /// caller so tests choose it) times the ceiling.
    pub fn fail(&mut self, unit_random: f64) -> Duration {
        let ceiling = self.ceiling();
        self.failures = self.failures.saturating_add(1);
        ceiling.mul_f64(unit_random.clamp(0.0, 1.0))
    }

    /// Records a success: the next failure starts from `base` again.
    pub fn reset(&mut self) {
        self.failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn the_ceiling_doubles_from_200ms_up_to_30s() {
        let mut backoff = Backoff::default();
        let ceilings: Vec<Duration> = (0..10).map(|_| backoff.fail(1.0)).collect();
        assert_eq!(
            ceilings,
            [
                ms(200),
                ms(400),
                ms(800),
                ms(1600),
                ms(3200),
                ms(6400),
                ms(12_800),
                ms(25_600),
                ms(30_000),
                ms(30_000)
            ]
        );
        for _ in 0..100 {
            backoff.fail(1.0);
        }
        assert_eq!(backoff.fail(1.0), ms(30_000));
    }

    #[test]
    fn full_jitter_scales_the_ceiling_by_the_random_draw() {
        let mut backoff = Backoff::default();
        assert_eq!(backoff.fail(0.0), Duration::ZERO);
        assert_eq!(backoff.fail(0.5), ms(200));
        assert_eq!(backoff.fail(0.25), ms(200));
        assert_eq!(backoff.failures(), 3);
    }

    #[test]
    fn out_of_range_draws_are_clamped() {
        let mut backoff = Backoff::default();
        assert_eq!(backoff.fail(7.0), ms(200));
        assert_eq!(backoff.fail(-1.0), Duration::ZERO);
    }

    #[test]
    fn success_starts_the_schedule_again() {
        let mut backoff = Backoff::default();
        backoff.fail(1.0);
        backoff.fail(1.0);
        assert_eq!(backoff.ceiling(), ms(800));
        backoff.reset();
        assert_eq!(backoff.failures(), 0);
        assert_eq!(backoff.fail(1.0), ms(200));
    }
}
