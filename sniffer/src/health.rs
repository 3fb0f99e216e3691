//! Liveness and readiness: the capture and scan threads run and scans keep finishing.

use std::sync::atomic::{AtomicU8, Ordering};

use crate::counters::CountersSnapshot;

/// Scans may be this many intervals late before the sniffer is unhealthy.
pub const MISSED_SCANS_TOLERATED: u64 = 3;

/// The state of one worker thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ThreadState {
    /// Turned off by a flag.
    Off = 0,
    /// Running.
    Running = 1,
    /// Ended (failed, or stopping).
    Ended = 2,
}

/// Worker states, written by the output loop and read by the health endpoint.
#[derive(Debug)]
pub struct Liveness {
    capture: AtomicU8,
    scan: AtomicU8,
    started_ms: u64,
    scan_interval_ms: u64,
}

impl Liveness {
    /// Both threads off, the process started at `started_ms`.
    pub fn new(started_ms: u64, scan_interval_ms: u64) -> Self {
        Liveness {
            capture: AtomicU8::new(ThreadState::Off as u8),
            scan: AtomicU8::new(ThreadState::Off as u8),
            started_ms,
            scan_interval_ms,
        }
    }

    /// Records the capture thread's state.
    pub fn set_capture(&self, state: ThreadState) {
        self.capture.store(state as u8, Ordering::Relaxed);
    }

    /// Records the scan thread's state.
    pub fn set_scan(&self, state: ThreadState) {
        self.scan.store(state as u8, Ordering::Relaxed);
    }

    fn load(cell: &AtomicU8) -> ThreadState {
        match cell.load(Ordering::Relaxed) {
            0 => ThreadState::Off,
            1 => ThreadState::Running,
            _ => ThreadState::Ended,
        }
    }

    /// Healthy, or why not.
    pub fn health(&self, counters: &CountersSnapshot, now_ms: u64) -> Result<(), String> {
        check_health(&HealthInputs {
            capture: Self::load(&self.capture),
            scan: Self::load(&self.scan),
            started_ms: self.started_ms,
            scan_interval_ms: self.scan_interval_ms,
            last_scan_end_ms: counters.last_scan_end_ms,
            now_ms,
        })
    }

    /// Ready (healthy, and a first scan done when scanning), or why not.
    pub fn readiness(&self, counters: &CountersSnapshot, now_ms: u64) -> Result<(), String> {
        self.health(counters, now_ms)?;
        if Self::load(&self.scan) == ThreadState::Running && counters.scans == 0 {
            return Err("the first socket scan has not finished".into());
        }
        Ok(())
    }
}

/// What health is judged from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthInputs {
    /// Capture thread.
    pub capture: ThreadState,
    /// Scan thread.
    pub scan: ThreadState,
    /// Process start, milliseconds since the Unix epoch.
    pub started_ms: u64,
    /// Scan interval in milliseconds.
    pub scan_interval_ms: u64,
    /// End of the latest scan (0: none yet).
    pub last_scan_end_ms: u64,
    /// Now.
    pub now_ms: u64,
}

/// Healthy when every enabled thread runs and, when scanning, the latest scan (or the start,
/// before the first scan) is at most [`MISSED_SCANS_TOLERATED`] intervals ago.
pub fn check_health(inputs: &HealthInputs) -> Result<(), String> {
    if inputs.capture == ThreadState::Ended {
        return Err("the capture thread has stopped".into());
    }
    match inputs.scan {
        ThreadState::Ended => Err("the scan thread has stopped".into()),
        ThreadState::Off => Ok(()),
        ThreadState::Running => {
            let since = inputs.last_scan_end_ms.max(inputs.started_ms);
            let age_ms = inputs.now_ms.saturating_sub(since);
            let limit_ms = inputs
                .scan_interval_ms
                .saturating_mul(MISSED_SCANS_TOLERATED);
            if age_ms > limit_ms {
                Err(format!(
                    "no socket scan finished for {age_ms} ms (limit {limit_ms} ms)"
                ))
            } else {
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn running() -> HealthInputs {
        HealthInputs {
            capture: ThreadState::Running,
            scan: ThreadState::Running,
            started_ms: 1_000,
            scan_interval_ms: 1_000,
            last_scan_end_ms: 5_000,
            now_ms: 6_000,
        }
    }

    #[test]
    fn running_threads_with_a_recent_scan_are_healthy() {
        assert_eq!(check_health(&running()), Ok(()));
        let at_limit = HealthInputs {
            now_ms: 8_000,
            ..running()
        };
        assert_eq!(check_health(&at_limit), Ok(()));
    }

    #[test]
    fn a_scan_older_than_three_intervals_is_unhealthy() {
        let late = HealthInputs {
            now_ms: 8_001,
            ..running()
        };
        let reason = check_health(&late).expect_err("unhealthy");
        assert!(reason.contains("no socket scan finished"), "{reason}");
    }

    #[test]
    fn before_the_first_scan_the_start_time_counts() {
        let starting = HealthInputs {
            last_scan_end_ms: 0,
            now_ms: 3_500,
            ..running()
        };
        assert_eq!(check_health(&starting), Ok(()));
        let stuck = HealthInputs {
            now_ms: 4_500,
            ..starting
        };
        assert!(check_health(&stuck).is_err());
    }

    #[test]
    fn a_stopped_thread_is_unhealthy_and_a_disabled_one_is_not() {
        let capture_gone = HealthInputs {
            capture: ThreadState::Ended,
            ..running()
        };
        assert!(
            check_health(&capture_gone)
                .expect_err("unhealthy")
                .contains("capture")
        );
        let scan_gone = HealthInputs {
            scan: ThreadState::Ended,
            ..running()
        };
        assert!(
            check_health(&scan_gone)
                .expect_err("unhealthy")
                .contains("scan")
        );
        let nothing_enabled = HealthInputs {
            capture: ThreadState::Off,
            scan: ThreadState::Off,
            last_scan_end_ms: 0,
            now_ms: u64::MAX,
            ..running()
        };
        assert_eq!(check_health(&nothing_enabled), Ok(()));
    }

    #[test]
    fn readiness_waits_for_the_first_scan() {
        let liveness = Liveness::new(1_000, 1_000);
        liveness.set_scan(ThreadState::Running);
        let mut counters = CountersSnapshot::default();
        assert!(liveness.readiness(&counters, 1_500).is_err());
        counters.scans = 1;
        counters.last_scan_end_ms = 1_400;
        assert_eq!(liveness.readiness(&counters, 1_500), Ok(()));
        assert_eq!(liveness.health(&counters, 1_500), Ok(()));
    }
}
