//! Committed transactions the standby may not have yet (guarantee 3: no
//! lost commits with asynchronous replication).
//!
//! When a stamped transaction commits, its session hands it to this log.
//! It stays there until the standby has flushed WAL past its commit record:
//! [`lsn`] samples the primary's WAL insert position and the standbys'
//! flush positions every 20 milliseconds, and a commit acknowledged before
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
use crate::journal::CommittedUnit;

/// One committed transaction.
pub struct Entry {
    /// Commit order across the proxy.
    pub seq: u64,
    /// Sampler round completed when the commit was acknowledged.
    pub round: u64,
    /// Who ran it.
    pub identity: Arc<Identity>,
    /// The transaction, with the session state it started from.
    pub unit: CommittedUnit,
}

/// The log of one proxy.
pub struct CommitLog {
    /// Entries kept at most; past this the oldest are dropped (and
    /// counted): a standby that falls this far behind is not one to fail
    /// over to without loss anyway.
    max_entries: usize,
    entries: Mutex<VecDeque<Entry>>,
    seq: AtomicU64,
    /// WAL positions of the primary and its standbys.
    pub lsn: lsn::LsnTracker,
    /// Entries dropped because the log was full.
    pub dropped: AtomicU64,
    /// Committed transactions never kept: the journal did not keep all of
    /// their messages (past `journal.max_transaction_bytes` or
    /// `journal.max_total_bytes`), and part of a transaction must never be
    /// applied again.
    pub too_large: AtomicU64,
    /// Committed transactions too large for the journal whose COMMIT was
    /// acknowledged before the standbys confirmed them
    /// (`journal.large_commit_wait_ms` passed).
    pub large_unconfirmed: AtomicU64,
    /// Entries re-applied on a new primary.
    pub reapplied: AtomicU64,
    /// Re-applied entries whose results differed from the original.
    pub reapplied_mismatches: AtomicU64,
    /// The primary the log was last re-applied to.
    pub(crate) reapply_gate: tokio::sync::Mutex<Option<(String, u16)>>,
}

impl CommitLog {
    /// An empty log that keeps at most `max_entries` entries.
    pub fn new(max_entries: usize) -> Self {
        CommitLog {
            max_entries,
            entries: Mutex::default(),
            seq: AtomicU64::default(),
            lsn: lsn::LsnTracker::default(),
            dropped: AtomicU64::default(),
            too_large: AtomicU64::default(),
            large_unconfirmed: AtomicU64::default(),
            reapplied: AtomicU64::default(),
            reapplied_mismatches: AtomicU64::default(),
            reapply_gate: tokio::sync::Mutex::default(),
        }
    }

    /// Adds a transaction that just committed.
    pub fn push(&self, identity: &Arc<Identity>, unit: CommittedUnit) {
        if !unit.whole {
            self.too_large.fetch_add(1, Ordering::Relaxed);
            tracing::info!(
                token = unit.token,
                "a committed transaction larger than the journal keeps cannot be applied again \
                 after a failover: its COMMIT waits for the standbys \
                 (journal.max_transaction_bytes, journal.max_total_bytes, \
                 journal.large_commit_wait_ms)"
            );
            return;
        }
        let entry = Entry {
            seq: self.seq.fetch_add(1, Ordering::Relaxed),
            round: self.lsn.round(),
            identity: Arc::clone(identity),
            unit,
        };
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        if entries.len() >= self.max_entries {
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

    /// Appends the log's metrics in the Prometheus text format.
    pub fn render_prometheus(&self, out: &mut String) {
        use std::fmt::Write;
        let rows = [
            (
                "understudy_commit_log_entries",
                "gauge",
                "Committed transactions not yet flushed by the standbys.",
                self.len() as u64,
            ),
            (
                "understudy_commit_log_dropped_total",
                "counter",
                "Commit log entries dropped because the log was full.",
                self.dropped.load(Ordering::Relaxed),
            ),
            (
                "understudy_commit_log_too_large_total",
                "counter",
                "Committed transactions not kept in the commit log because the journal did not keep all their messages; their COMMIT waits for the standbys (journal.large_commit_wait_ms).",
                self.too_large.load(Ordering::Relaxed),
            ),
            (
                "understudy_large_commits_unconfirmed_total",
                "counter",
                "Committed transactions too large for the commit log acknowledged before the standbys confirmed them (journal.large_commit_wait_ms passed); lost if the primary dies before the standby receives them.",
                self.large_unconfirmed.load(Ordering::Relaxed),
            ),
            (
                "understudy_reapplied_total",
                "counter",
                "Committed transactions re-applied on a new primary.",
                self.reapplied.load(Ordering::Relaxed),
            ),
            (
                "understudy_reapplied_mismatches_total",
                "counter",
                "Re-applied transactions whose results differed or that failed.",
                self.reapplied_mismatches.load(Ordering::Relaxed),
            ),
        ];
        for (name, kind, help, value) in rows {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            let _ = writeln!(out, "{name} {value}");
        }
    }

    /// Takes every entry, in commit order.
    pub(crate) fn drain(&self) -> Vec<Entry> {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        let mut all: Vec<Entry> = entries.drain(..).collect();
        all.sort_by_key(|e| e.seq);
        all
    }
}
