//! Committed transactions the standby may not have yet (guarantee 3: no
//! lost commits with asynchronous replication).
//!
//! When a stamped transaction commits, its session hands it to this log.
//! It stays there until the standby has flushed WAL past its commit record:
//! [`lsn`] samples the primary's WAL insert position and the standbys'
//! flush positions every few milliseconds, and a commit acknowledged before
//! a sample started ends at or below that sample's insert position. If the
//! primary dies first, the first session to move re-applies every entry
//! still here on the new primary, in commit order, each guarded by its
//! ledger token ([`reapply`]), before any session continues.
//!
//! # Layout
//! - [`lsn`]: the WAL position sampler and purge rule.
//! - [`reapply`]: applying lost commits on a new primary.
//! - this module: the log itself and its limits.

pub mod lsn;
pub mod reapply;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use crate::failover::Identity;
use crate::journal::session::Snapshot;
use crate::journal::CommittedUnit;

/// Entries kept at most; past this the oldest are dropped (and counted):
/// a standby that falls this far behind is not a standby to fail over to.
const MAX_ENTRIES: usize = 50_000;

/// One committed transaction.
pub struct Entry {
    /// Commit order across the proxy.
    pub seq: u64,
    /// Sampler round completed when the commit was acknowledged.
    pub round: u64,
    /// Who ran it.
    pub identity: Arc<Identity>,
    /// The session state it ran with.
    pub session: Snapshot,
    /// The transaction.
    pub unit: CommittedUnit,
}

/// The log of one proxy.
#[derive(Default)]
pub struct CommitLog {
    entries: Mutex<VecDeque<Entry>>,
    seq: AtomicU64,
    /// WAL positions of the primary and its standbys.
    pub lsn: lsn::LsnTracker,
    /// Entries dropped because the log was full.
    pub dropped: AtomicU64,
    /// Entries re-applied on a new primary.
    pub reapplied: AtomicU64,
    /// Re-applied entries whose results differed from the original.
    pub reapplied_mismatches: AtomicU64,
    /// The primary the log was last re-applied to.
    pub(crate) reapply_gate: tokio::sync::Mutex<Option<(String, u16)>>,
}

impl CommitLog {
    /// Adds a transaction that just committed.
    pub fn push(&self, identity: &Arc<Identity>, session: Snapshot, unit: CommittedUnit) {
        let entry = Entry {
            seq: self.seq.fetch_add(1, Ordering::Relaxed),
            round: self.lsn.round(),
            identity: Arc::clone(identity),
            session,
            unit,
        };
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        if entries.len() >= MAX_ENTRIES {
            entries.pop_front();
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
        entries.push_back(entry);
    }

    /// Drops the entries the standby has flushed.
    pub fn purge(&self) {
        let Some(safe_round) = self.lsn.safe_round() else {
            return;
        };
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        while entries.front().is_some_and(|e| e.round < safe_round) {
            entries.pop_front();
        }
    }

    /// Entries waiting for the standby.
    pub fn len(&self) -> usize {
        self.entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// True when every commit is on the standby.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Takes every entry, in commit order.
    pub(crate) fn drain(&self) -> Vec<Entry> {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        let mut all: Vec<Entry> = entries.drain(..).collect();
        all.sort_by_key(|e| e.seq);
        all
    }
}
