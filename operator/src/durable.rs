//! When a report may be acknowledged: only once every change it made to the map is written to
//! the API server. The ingest handler holds the request open on a [`Receipt`]; the engine and
//! the writer pass [`Hold`]s along with the statuses a report changed. When the last hold is
//! released the receipt resolves: written if every hold was released by a successful write,
//! not written if any was dropped without one (the writer gave up at shutdown, the engine
//! stopped). A report that changed nothing (only `lastSeen` moved, or nothing resolved yet)
//! resolves at once.
//!
//! The [`Ledger`], shared by the engine and the writer, numbers each client's statuses as they
//! are handed to the writer (generations) and remembers the highest one written. A report waits
//! for generation `g` of a client when the edge it brought (or saw again) first appears in that
//! generation: the next one if the change is not handed over yet, the last handed one if it is.
//! A report that sees an edge again while its first write is still in flight therefore waits for
//! that write too.
//!
//! This is what makes a 202 mean "in the API server": a sniffer keeps what was not
//! acknowledged and sends it again, so an operator killed before a write loses nothing.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::resolve::Workload;
use tokio::sync::oneshot;

use crate::fast_hash::FastMap;

/// The outcome a [`Receipt`] resolves to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Every change is in the API server.
    Written,
    /// Some change was not written; the sender must send it again.
    NotWritten,
}

struct Shared {
    tx: Option<oneshot::Sender<Outcome>>,
    failed: AtomicBool,
}

impl Drop for Shared {
    fn drop(&mut self) {
        let outcome = if self.failed.load(Ordering::Acquire) {
            Outcome::NotWritten
        } else {
            Outcome::Written
        };
        if let Some(tx) = self.tx.take() {
            // The handler may have timed out and gone; nothing to tell then.
            let _ = tx.send(outcome);
        }
    }
}

/// One outstanding piece of a report's changes (or the report itself while it is being
/// ingested). Release it with [`Hold::written`]; dropping it otherwise marks the report not
/// written.
pub struct Hold {
    shared: Arc<Shared>,
    written: bool,
}

impl Hold {
    /// A new report's first hold and the receipt its handler waits on.
    pub fn new() -> (Hold, Receipt) {
        let (tx, rx) = oneshot::channel();
        let shared = Arc::new(Shared {
            tx: Some(tx),
            failed: AtomicBool::new(false),
        });
        (
            Hold {
                shared,
                written: false,
            },
            Receipt(rx),
        )
    }

    /// Another hold on the same report.
    pub fn share(&self) -> Hold {
        Hold {
            shared: Arc::clone(&self.shared),
            written: false,
        }
    }

    /// This piece is in the API server (or needs no write).
    pub fn written(mut self) {
        self.written = true;
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        if !self.written {
            self.shared.failed.store(true, Ordering::Release);
        }
    }
}

impl std::fmt::Debug for Hold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Hold")
    }
}

/// Releases every hold in `holds` as written.
pub fn release(holds: impl IntoIterator<Item = Hold>) {
    for hold in holds {
        hold.written();
    }
}

/// What the ingest handler waits on.
#[derive(Debug)]
pub struct Receipt(oneshot::Receiver<Outcome>);

impl Receipt {
    /// The outcome, or [`Outcome::NotWritten`] if the holds vanished without one.
    pub async fn outcome(self) -> Outcome {
        self.0.await.unwrap_or(Outcome::NotWritten)
    }
}

/// Which status generation of each client is written, and the holds waiting for one.
#[derive(Debug, Default)]
pub struct Ledger {
    inner: Mutex<LedgerInner>,
}

#[derive(Debug, Default)]
struct LedgerInner {
    written: FastMap<Workload, u64>,
    waiting: FastMap<Workload, Vec<(u64, Hold)>>,
}

impl Ledger {
    fn lock(&self) -> MutexGuard<'_, LedgerInner> {
        // Every update leaves the maps consistent, so a panic elsewhere does not taint them.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Makes `hold`'s report wait until each client's given generation is written.
    pub fn wait_for(&self, generations: impl IntoIterator<Item = (Workload, u64)>, hold: &Hold) {
        let mut inner = self.lock();
        for (client, generation) in generations {
            if inner.written.get(&client).copied().unwrap_or(0) >= generation {
                continue;
            }
            inner
                .waiting
                .entry(client)
                .or_default()
                .push((generation, hold.share()));
        }
    }

    /// Generation `generation` of `client`'s status is written: release what waited for it.
    pub fn written(&self, client: &Workload, generation: u64) {
        let mut inner = self.lock();
        let written = inner.written.entry(client.clone()).or_insert(0);
        *written = (*written).max(generation);
        let Some(holds) = inner.waiting.get_mut(client) else {
            return;
        };
        let (done, left): (Vec<_>, Vec<_>) = holds.drain(..).partition(|(g, _)| *g <= generation);
        *holds = left;
        if holds.is_empty() {
            inner.waiting.remove(client);
        }
        drop(inner);
        release(done.into_iter().map(|(_, hold)| hold));
    }

    /// `client` was reset: nothing of it is to be written, so nothing waits for it.
    pub fn forget(&self, client: &Workload) {
        let holds = self.lock().waiting.remove(client).unwrap_or_default();
        release(holds.into_iter().map(|(_, hold)| hold));
    }

    /// Reports waiting on some client.
    pub fn waiting(&self) -> usize {
        self.lock().waiting.values().map(Vec::len).sum()
    }
}

#[cfg(test)]
mod tests {
    use trafficmap_api::WorkloadRef;

    use super::*;

    fn client(name: &str) -> Workload {
        Workload::new(WorkloadRef {
            kind: "Deployment".into(),
            namespace: "shop".into(),
            name: name.into(),
        })
    }

    fn now(receipt: Receipt) -> Option<Outcome> {
        let mut rx = receipt.0;
        rx.try_recv().ok()
    }

    #[test]
    fn a_report_that_changed_nothing_is_written_at_once() {
        let (hold, receipt) = Hold::new();
        hold.written();
        assert_eq!(now(receipt), Some(Outcome::Written));
    }

    #[test]
    fn waits_for_every_shared_hold() {
        let (hold, mut receipt) = Hold::new();
        let a = hold.share();
        let b = hold.share();
        hold.written();
        assert!(receipt.0.try_recv().is_err(), "resolved with holds left");
        a.written();
        assert!(receipt.0.try_recv().is_err(), "resolved with a hold left");
        b.written();
        assert_eq!(now(receipt), Some(Outcome::Written));
    }

    #[test]
    fn one_dropped_hold_makes_the_report_not_written() {
        let (hold, receipt) = Hold::new();
        let a = hold.share();
        let b = hold.share();
        hold.written();
        a.written();
        drop(b);
        assert_eq!(now(receipt), Some(Outcome::NotWritten));
    }

    #[test]
    fn a_report_waits_for_the_generation_that_holds_its_edge() {
        let ledger = Ledger::default();
        let (hold, mut receipt) = Hold::new();
        ledger.wait_for([(client("a"), 2), (client("b"), 1)], &hold);
        hold.written();
        ledger.written(&client("a"), 1);
        ledger.written(&client("b"), 1);
        assert!(
            receipt.0.try_recv().is_err(),
            "resolved before a's generation 2"
        );
        ledger.written(&client("a"), 2);
        assert_eq!(now(receipt), Some(Outcome::Written));
        assert_eq!(ledger.waiting(), 0);
    }

    #[test]
    fn a_generation_already_written_does_not_hold() {
        let ledger = Ledger::default();
        ledger.written(&client("a"), 3);
        let (hold, receipt) = Hold::new();
        ledger.wait_for([(client("a"), 3), (client("b"), 0)], &hold);
        hold.written();
        assert_eq!(now(receipt), Some(Outcome::Written));
    }

    #[test]
    fn a_reset_client_releases_its_reports_and_a_dropped_ledger_fails_them() {
        let ledger = Ledger::default();
        let (hold, receipt) = Hold::new();
        ledger.wait_for([(client("a"), 1)], &hold);
        hold.written();
        ledger.forget(&client("a"));
        assert_eq!(now(receipt), Some(Outcome::Written));

        let (hold, receipt) = Hold::new();
        ledger.wait_for([(client("a"), 1)], &hold);
        hold.written();
        drop(ledger);
        assert_eq!(now(receipt), Some(Outcome::NotWritten));
    }
}
