//! Draining for a planned switchover: sessions park at their next
//! transaction boundary, and the switchover waits until every relaying
//! session is parked (or a deadline passes: a session still inside a long
//! transaction is moved by replay instead).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use crate::metrics::ProxyMetrics;

/// How long a switchover waits for sessions to reach a boundary.
const DRAIN_DEADLINE: Duration = Duration::from_secs(5);

/// Counts parked sessions.
#[derive(Clone)]
pub struct Drain {
    parked: Arc<AtomicU64>,
    changed: Arc<Notify>,
    metrics: Arc<ProxyMetrics>,
}

/// A parked session; unparks when dropped.
pub struct ParkedGuard {
    drain: Drain,
}

impl Drain {
    /// No session parked.
    pub fn new(metrics: Arc<ProxyMetrics>) -> Self {
        Drain {
            parked: Arc::new(AtomicU64::new(0)),
            changed: Arc::new(Notify::new()),
            metrics,
        }
    }

    /// Marks the calling session parked until the guard is dropped.
    pub fn park(&self) -> ParkedGuard {
        self.parked.fetch_add(1, Ordering::AcqRel);
        self.changed.notify_waiters();
        ParkedGuard {
            drain: self.clone(),
        }
    }

    /// Resolves when every relaying session is parked, or after the drain
    /// deadline.
    pub async fn wait_parked(self) {
        let all_parked = async {
            loop {
                let notified = self.changed.notified();
                if self.parked.load(Ordering::Acquire) >= self.metrics.sessions_active() {
                    return;
                }
                // Sessions also end or start; look again now and then.
                let _ = tokio::time::timeout(Duration::from_millis(10), notified).await;
            }
        };
        if tokio::time::timeout(DRAIN_DEADLINE, all_parked)
            .await
            .is_err()
        {
            tracing::warn!("not every session reached a transaction boundary in time; the others will be moved by replay");
        }
    }
}

impl Drop for ParkedGuard {
    fn drop(&mut self) {
        self.drain.parked.fetch_sub(1, Ordering::AcqRel);
        self.drain.changed.notify_waiters();
    }
}
