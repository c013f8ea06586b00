//! What the journal may hold ([`Limits`]) and why a session cannot be
//! moved when it holds more, or cannot follow the conversation
//! ([`NotReplayable`]).

use std::sync::Arc;

use super::JournalBudget;

/// Why a session cannot be moved to another server right now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotReplayable {
    /// The open unit holds more than the per-session journal limit.
    UnitTooLarge,
    /// All sessions' journals together hold `journal.max_total_bytes`.
    TotalTooLarge,
    /// A client message was larger than the journal keeps.
    MessageTooLarge,
    /// The session state holds more than the per-session journal limit.
    SessionStateTooLarge,
    /// A statement mixed session-state changes with other work.
    MixedSessionStatement,
    /// The server sent a reply that matches no request.
    Desynchronised,
    /// The session made a temporary table (view, sequence, function) that
    /// only its backend has.
    TemporaryObject(String),
    /// The session has an open `WITH HOLD` cursor.
    HoldCursor(String),
    /// The session may hold a session-level advisory lock.
    AdvisoryLock,
    /// Settings were changed in a transaction that rolled back to a
    /// savepoint: which of them PostgreSQL undid is not followed.
    SettingBesideSavepointRollback,
    /// A transaction committed and the next began without the session
    /// becoming idle (`COMMIT; BEGIN` in one Query, or requests pipelined
    /// behind a `COMMIT AND CHAIN`).
    CommitInsideUnit,
    /// The open transaction was chained to one that committed (`COMMIT AND
    /// CHAIN`): it keeps that one's isolation level and access mode, which
    /// a new server would not be given.
    ChainedTransaction,
}

impl std::fmt::Display for NotReplayable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            NotReplayable::UnitTooLarge => "the open transaction is larger than the journal limit",
            NotReplayable::TotalTooLarge => {
                "the journals of all sessions together are at their limit"
            }
            NotReplayable::MessageTooLarge => "a message was larger than the journal keeps",
            NotReplayable::SessionStateTooLarge => {
                "the session state is larger than the journal limit"
            }
            NotReplayable::MixedSessionStatement => {
                "one statement both changed session settings and did other work"
            }
            NotReplayable::Desynchronised => "the server's replies did not match the requests",
            NotReplayable::TemporaryObject(name) => {
                return write!(
                    f,
                    "the session's temporary object {name} existed only on the lost server \
                     (DISCARD TEMP, or dropping it, lets a session be moved again)"
                )
            }
            NotReplayable::HoldCursor(name) => {
                return write!(
                    f,
                    "the session's WITH HOLD cursor {name} existed only on the lost server \
                     (CLOSE it to let a session be moved again)"
                )
            }
            NotReplayable::CommitInsideUnit => {
                "a transaction committed and the next one began at once (COMMIT and BEGIN in one \
                 query, or requests pipelined behind a COMMIT AND CHAIN); the open one cannot be \
                 replayed without running the committed one again"
            }
            NotReplayable::ChainedTransaction => {
                "the open transaction was chained to the one before (COMMIT AND CHAIN) and keeps \
                 its isolation level and access mode, which were not set by a BEGIN alone in its \
                 request or were changed since (SET TRANSACTION, default_transaction_*), so a new \
                 server would not have them"
            }
            NotReplayable::SettingBesideSavepointRollback => {
                "settings were changed in a transaction that rolled back to a savepoint, and \
                 which of them it undid is not followed"
            }
            NotReplayable::AdvisoryLock => {
                "the session may hold a session-level advisory lock, which was held by the lost \
                 server and may be taken by another session now (pg_advisory_unlock_all() lets \
                 a session be moved again)"
            }
        })
    }
}

/// Per-session journal limits, and the budget shared by all sessions.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Bytes of client messages kept for the open unit.
    pub max_unit_bytes: usize,
    /// Bytes of session state (settings, prepared statements).
    pub max_session_bytes: usize,
    /// Bytes of open units kept by all sessions together.
    pub budget: Arc<JournalBudget>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_unit_bytes: 16 << 20,
            max_session_bytes: 4 << 20,
            budget: Arc::default(),
        }
    }
}
