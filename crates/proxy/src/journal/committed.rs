//! A stamped transaction that committed, as the commit log keeps it: the
//! client messages to apply it again on a server that lost it, where its
//! stamp is, and the digest of its replies to compare a re-apply with.

use std::ops::Range;

use bytes::{Bytes, BytesMut};

use super::reply::chain;
use super::session::Snapshot;
use super::Request;

/// A transaction that committed with a ledger stamp: what it takes to apply
/// it again on a server that lost it, and the digest of its replies.
#[derive(Debug, Clone)]
pub struct CommittedUnit {
    /// Its ledger token.
    pub token: i64,
    /// The client messages of the unit, the stamp included.
    pub frames: Bytes,
    /// Where the stamp is in `frames`.
    pub stamp: Option<Range<usize>>,
    /// The stamp is in an implicit transaction (an autocommit write): the
    /// unit's Sync commits it, not a COMMIT.
    pub stamp_implicit: bool,
    /// Digest of all its replies.
    pub digest: u64,
    /// The session state it started from: what a server applying it again
    /// must be given first (not the state it left, or a statement it
    /// prepared itself would already exist when its Parse runs again).
    pub session: Snapshot,
    /// It changed the session state (prepared a statement, changed a
    /// setting): a connection it was applied again on is no longer in
    /// `session`.
    pub changes_session: bool,
    /// The journal kept every message of it: `frames` is the whole
    /// transaction. Otherwise it must not be applied again at all.
    pub whole: bool,
    /// It ran in a transaction chained to the one before (`COMMIT AND
    /// CHAIN`): `frames` has no BEGIN, so one is sent before them.
    pub chained: bool,
    /// It ended with `COMMIT AND CHAIN`: the transaction that opens after
    /// it is rolled back once it has been applied again.
    pub chains: bool,
}

impl CommittedUnit {
    pub(super) fn of(
        token: i64,
        stamp_implicit: bool,
        finished: &[Request],
        arena: &[u8],
        session: Snapshot,
        changes_session: bool,
        (chained, chains): (bool, bool),
    ) -> Self {
        // One allocation for the whole unit: it is copied on every commit.
        let kept = finished
            .iter()
            .filter_map(|request| request.frame.as_ref().map(Range::len))
            .sum();
        let mut frames = BytesMut::with_capacity(kept);
        let mut stamp = None;
        let mut digest = 0;
        for request in finished {
            // Rows in another order are the same result.
            let reply_digest = request
                .reply
                .rows_digest()
                .unwrap_or_else(|| request.reply.digest());
            digest = chain(chain(digest, request.reply.bytes), reply_digest);
            if let Some(range) = &request.frame {
                if request.injected {
                    stamp = Some(frames.len()..frames.len() + range.len());
                }
                frames.extend_from_slice(&arena[range.clone()]);
            }
        }
        CommittedUnit {
            token,
            frames: frames.freeze(),
            stamp,
            stamp_implicit,
            digest,
            session,
            changes_session,
            whole: finished.iter().all(|request| request.frame.is_some()),
            chained,
            chains,
        }
    }
}
