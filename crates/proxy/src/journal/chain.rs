//! A transaction chained to one that committed (`COMMIT AND CHAIN`): the
//! unit ends at that commit, so the committed transaction goes to the
//! commit log like any other, and the chained transaction is a unit of its
//! own — one that runs in a transaction block it did not open. That unit
//! is not replayed on a new server (the chain keeps the isolation level and
//! access mode of the transaction before it, which a plain BEGIN would not
//! give), but once it commits it is kept like any other, and applied again
//! behind a BEGIN.

use understudy_protocol::frontend;

use super::{Journal, NotReplayable};
use crate::commit_sql;

impl Journal {
    /// At a ReadyForQuery that leaves a transaction open after request
    /// `i`, in whose reply a transaction committed: when that was a lone
    /// `COMMIT AND CHAIN` with nothing but Syncs and Flushes behind it, the
    /// unit ends there and the chained transaction starts a new one. False
    /// (nothing done) otherwise: another statement ran after the commit, in
    /// the same request or pipelined behind it, or an earlier transaction
    /// of the unit committed.
    pub(super) fn end_at_chained_commit(&mut self, i: usize) -> bool {
        let requests = &self.requests[..=i];
        let Some(commit) = requests.iter().rposition(|r| r.reply.committed) else {
            return false;
        };
        let alone = !self.committed_inside
            && !requests[..commit].iter().any(|r| r.reply.committed)
            && requests[commit + 1..]
                .iter()
                .all(|r| matches!(r.tag, frontend::tag::SYNC | frontend::tag::FLUSH));
        if !alone || !self.request_chains(commit) {
            return false;
        }
        self.end_unit(i + 1, true);
        self.in_chain = true;
        self.block_unit(NotReplayable::ChainedTransaction);
        true
    }

    /// True when the request at index `i` runs a `COMMIT AND CHAIN` (a
    /// Query, or an Execute of one).
    pub fn request_chains(&self, i: usize) -> bool {
        i < self.requests.len()
            && self
                .statement_text(i)
                .is_some_and(commit_sql::is_commit_and_chain)
    }
}
